import ComplexModule
@testable import HeraldAnalysis
import HeraldCore
import Testing

@Suite struct CrosstalkTests {
    /// Sampled counts with accidentals and crosstalk, so every part of the model is exercised.
    static func noisyProjections(seed: UInt64) -> [Projection] {
        var rng = SeededGenerator(seed: seed)
        return expectedProjections(States.werner(0.7), .standard16, intensity: 500, crosstalk: (0.03, 0.08)).map { p in
            var q = p
            q.counts = Double(rng.poisson(p.counts))
            q.accidentals = 2
            return q
        }
    }

    /// Newton steps rely on the exact Hessian; it must be the derivative of the gradient.
    @Test(arguments: [0.0, 0.5])
    func hessianMatchesFiniteDifferencesOfTheGradient(hedging: Double) {
        let projections = Self.noisyProjections(seed: 5)
        let mle = MaximumLikelihood(projections, hedging: hedging)
        var rng = SeededGenerator(seed: 6)
        let x = (0..<16).map { _ in rng.gaussian() * 3 + 1 }
        let counts = projections.map(\.counts)
        var h = [Double](repeating: 0, count: 256)
        mle.hessian(x, counts: counts, into: &h)
        var gUp = [Double](repeating: 0, count: 16), gDown = gUp
        for j in 0..<16 {
            var up = x, down = x
            up[j] += 1e-5
            down[j] -= 1e-5
            _ = mle.objective(up, counts: counts, gradient: &gUp)
            _ = mle.objective(down, counts: counts, gradient: &gDown)
            for i in 0..<16 {
                let numeric = (gUp[i] - gDown[i]) / 2e-5
                #expect(abs(numeric - h[i * 16 + j]) < 1e-4 * max(1, abs(numeric)), "H[\(i),\(j)]: \(numeric) vs \(h[i * 16 + j])")
            }
        }
    }

    /// Crosstalk ε per arm shrinks every two-photon correlation by (1−2ε_A)(1−2ε_B): a Werner
    /// state of visibility v looks like one of visibility v·(1−2ε_A)(1−2ε_B) unless corrected.
    @Test(arguments: [Estimator.linear, .mle])
    func crosstalkCorrectionRecoversTheTruth(estimator: Estimator) throws {
        let (ea, eb, v) = (0.03, 0.08, 0.9)
        let measured = expectedProjections(States.werner(v), .standard16, crosstalk: (ea, eb))
        let corrected = try Tomography.reconstruct(measured, options: .init(estimator: estimator))
        #expect(corrected.state.maxDifference(States.werner(v)) < 1e-5)

        let ignored = measured.map { p in
            var q = p
            (q.crosstalkA, q.crosstalkB) = (0, 0)
            return q
        }
        let naive = try Tomography.reconstruct(ignored, options: .init(estimator: estimator))
        let apparent = v * (1 - 2 * ea) * (1 - 2 * eb)
        #expect(abs(naive.figures["fidelity_phi+"]! - (1 + 3 * apparent) / 4) < 1e-5)
    }

    @Test func countsTableReadsCrosstalkColumnsAndRejectsImpossibleValues() throws {
        let table = try CountsTable.parse("setting,counts,crosstalk_a,crosstalk_b\nHH,10,0.02,0.1\nHV,3,,\n", file: "c.csv")
        #expect(table.projections[0].crosstalkA == 0.02 && table.projections[0].crosstalkB == 0.1)
        #expect(table.projections[1].crosstalkA == 0 && table.projections[1].crosstalkB == 0)
        #expect(table.projections[0].components.count == 4 && table.projections[1].components.count == 1)
        #expect {
            try CountsTable.parse("setting,counts,crosstalk_a\nHH,10,0.6\n", file: "c.csv")
        } throws: { error in
            "\(error)".hasPrefix("c.csv:2:3: error: crosstalk_a must be below 0.5")
        }
    }
}

@Suite struct CoverageTests {
    /// Over many independent experiments the truth must fall inside the reported ±1σ and ±2σ
    /// intervals at the Gaussian rates (68.3 %, 95.4 %). The allowed deviation is 3 binomial
    /// standard deviations of the observed fraction, √(p(1−p)/trials).
    @Test(arguments: [Estimator.linear, .mle])
    func errorBarsCoverTheTruthAtTheGaussianRate(estimator: Estimator) throws {
        let v = 0.8
        let truth: [String: Double] = ["fidelity_phi+": (1 + 3 * v) / 4, "purity": (1 + 3 * v * v) / 4]
        let trials = 600
        var rng = SeededGenerator(seed: 2026)
        var inside = [String: (one: Int, two: Int)]()
        for _ in 0..<trials {
            // 36 settings at ~5000 pairs per basis: the estimate is far from the boundary, where
            // the delta method's Gaussian approximation is meant to hold.
            let sampled = expectedProjections(States.werner(v), .full36, intensity: 5000).map { p in
                var q = p
                q.counts = Double(rng.poisson(p.counts))
                return q
            }
            let r = try Tomography.reconstruct(sampled, options: .init(estimator: estimator))
            for (name, value) in truth {
                let estimate = try #require(r.figures[name]), sigma = try #require(r.uncertainties[name])
                let z = abs(estimate - value) / sigma
                let (one, two) = inside[name] ?? (0, 0)
                inside[name] = (one + (z <= 1 ? 1 : 0), two + (z <= 2 ? 1 : 0))
            }
        }
        for (name, (one, two)) in inside {
            for (observed, p) in [(one, 0.6827), (two, 0.9545)] {
                let fraction = Double(observed) / Double(trials)
                let allowed = 3 * (p * (1 - p) / Double(trials)).squareRoot()
                #expect(abs(fraction - p) <= allowed, "\(estimator) \(name): \(fraction) inside, expected \(p) ± \(allowed)")
            }
        }
    }
}
