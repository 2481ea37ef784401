import ComplexModule
@testable import HeraldAnalysis
import HeraldCore
import Testing

@Suite struct MLETests {
    /// The analytic gradient must match finite differences of the likelihood, crosstalk included.
    @Test func gradientMatchesFiniteDifferences() {
        var rng = SeededGenerator(seed: 3)
        let projections = expectedProjections(States.werner(0.7), .standard16, intensity: 500, crosstalk: (0.03, 0.08)).map { p -> Projection in
            var q = p
            q.counts = Double(rng.poisson(p.counts))
            q.accidentals = 2
            return q
        }
        for hedging in [0.0, 0.5] {
            let mle = MaximumLikelihood(projections, hedging: hedging)
            let x = (0..<16).map { _ in rng.gaussian() * 3 + 1 }
            var g = [Double](repeating: 0, count: 16), scratch = g
            let counts = projections.map(\.counts)
            _ = mle.objective(x, counts: counts, gradient: &g)
            for i in 0..<16 {
                var up = x, down = x
                up[i] += 1e-6
                down[i] -= 1e-6
                let numeric = (mle.objective(up, counts: counts, gradient: &scratch) - mle.objective(down, counts: counts, gradient: &scratch)) / 2e-6
                #expect(abs(numeric - g[i]) < 1e-5 * max(1, abs(g[i])), "β=\(hedging) parameter \(i): \(numeric) vs \(g[i])")
            }
        }
    }

    @Test(arguments: [TomographyBasisSet.standard16, .full36])
    func exactCountsRecoverTheTruth(set: TomographyBasisSet) throws {
        // Full-rank states: the MLE of exact expected counts is the state itself.
        for rho in [States.werner(0.9), States.werner(0.3), 0.8 * States.partial(0.4) + 0.05 * ComplexMatrix.identity(4)] {
            let r = try Tomography.reconstruct(expectedProjections(rho, set), options: .init(estimator: .mle))
            #expect(r.state.maxDifference(rho) < 1e-5, "\(r.state.maxDifference(rho)) after \(r.iterations) iterations")
            #expect(abs(r.intensity - 10_000) < 1e-2)
        }
    }

    @Test func pureStatesConvergeToTheBoundary() throws {
        let r = try Tomography.reconstruct(expectedProjections(States.phiPlus, .full36), options: .init(estimator: .mle))
        #expect(abs(r.figures["fidelity_phi+"]! - 1) < 1e-4)
        #expect(abs(r.figures["concurrence"]! - 1) < 1e-2)
        // Hedging keeps the estimate away from the boundary: full rank, slightly lower fidelity.
        let h = try Tomography.reconstruct(expectedProjections(States.phiPlus, .full36), options: .init(estimator: .hedged))
        #expect(h.state.hermitianEigen().values.last! > 1e-6)
        #expect(h.figures["fidelity_phi+"]! < r.figures["fidelity_phi+"]! && h.figures["fidelity_phi+"]! > 0.99)
    }

    @Test func accidentalsAreAddedToThePredictionNotSubtracted() throws {
        // Data generated as N·tr(ρP) + a: the MLE recovers ρ (not the diluted state).
        let a = 150.0
        let projections = expectedProjections(States.werner(0.8), .full36).map { p -> Projection in
            var q = p
            q.counts += a
            q.accidentals = a
            return q
        }
        let mle = try Tomography.reconstruct(projections, options: .init(estimator: .mle))
        #expect(mle.state.maxDifference(States.werner(0.8)) < 1e-5)
        let kept = try Tomography.reconstruct(projections, options: .init(estimator: .linear, accidentals: .keep))
        #expect(kept.figures["fidelity_phi+"]! < 0.85 - 0.01)  // the heralded state is diluted
    }

    @Test func fullyEntangledFractionAndHorodeckiS() {
        let bell = FiguresOfMerit.all(States.psiMinus)
        #expect(abs(bell["fidelity_max"]! - 1) < 1e-9)  // Ψ− is maximally entangled
        #expect(abs(bell["chsh_max"]! - 2 * 2.0.squareRoot()) < 1e-9)
        let product = FiguresOfMerit.all(States.product)
        #expect(abs(product["fidelity_max"]! - 0.5) < 1e-9)
        #expect(abs(product["chsh_max"]! - 2) < 1e-9)
        let werner = FiguresOfMerit.all(States.werner(0.6))
        #expect(abs(werner["fidelity_max"]! - (1 + 3 * 0.6) / 4) < 1e-9)
        #expect(abs(werner["chsh_max"]! - 2 * 2.0.squareRoot() * 0.6) < 1e-9)
    }

    /// Monte-Carlo error bars must cover the truth at the nominal rate over many data sets.
    @Test func monteCarloErrorsCoverTheTruth() throws {
        let truth = States.werner(0.85)
        let trueFidelity = (1 + 3 * 0.85) / 4
        var rng = SeededGenerator(seed: 99)
        var covered = 0
        let trials = 40
        for trial in 0..<trials {
            let sampled = expectedProjections(truth, .standard16, intensity: 3000).map { p -> Projection in
                var q = p
                q.counts = Double(rng.poisson(p.counts))
                return q
            }
            let r = try Tomography.reconstruct(sampled, options: .init(estimator: .mle, monteCarlo: 40, seed: UInt64(trial)))
            let f = r.figures["fidelity_phi+"]!, s = r.uncertainties["fidelity_phi+"]!
            if abs(f - trueFidelity) <= 2 * s { covered += 1 }
        }
        // 2σ covers 95.4%; with 40 trials the binomial σ is 3.3%, so demand ≥ 95.4% − 3·3.3% ≈ 85%.
        #expect(Double(covered) / Double(trials) >= 0.85, "covered \(covered) of \(trials)")
    }
}
