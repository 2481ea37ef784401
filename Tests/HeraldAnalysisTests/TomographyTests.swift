import ComplexModule
import HeraldAnalysis
import HeraldCore
import Testing

/// States with closed-form figures of merit.
enum States {
    static let s = 1 / 2.0.squareRoot()
    static func pure(_ psi: [Complex<Double>]) -> ComplexMatrix { .projector(psi) }
    static let phiPlus = pure([Complex(s), .zero, .zero, Complex(s)])
    static let psiMinus = pure([.zero, Complex(s), Complex(-s), .zero])
    static func werner(_ v: Double) -> ComplexMatrix { v * phiPlus + ((1 - v) / 4) * .identity(4) }
    /// cos θ|HH⟩ + sin θ|VV⟩: concurrence sin 2θ.
    static func partial(_ theta: Double) -> ComplexMatrix {
        pure([Complex(Double.cos(theta)), .zero, .zero, Complex(Double.sin(theta))])
    }
    /// |H⟩ ⊗ |D⟩
    static let product = pure([Complex(s), Complex(s), .zero, .zero])
}

/// Exact expected counts N·tr(ρ P) for a set of settings, pass ports (and reflect ports if asked).
func expectedProjections(
    _ rho: ComplexMatrix, _ set: TomographyBasisSet, intensity: Double = 10_000, bothPorts: Bool = false,
    crosstalk: (a: Double, b: Double) = (0, 0)
) -> [Projection] {
    var out: [Projection] = []
    for (a, b) in set.settings {
        let aPorts = bothPorts ? [a, a.orthogonal] : [a]
        let bPorts = bothPorts ? [b, b.orthogonal] : [b]
        for x in aPorts { for y in bPorts {
            var p = Projection(x, y, counts: 0)
            (p.crosstalkA, p.crosstalkB) = crosstalk
            p.counts = intensity * ComplexMatrix.realTraceOfProduct(rho, p.projector)
            out.append(p)
        } }
    }
    return out
}

@Suite struct LinearAlgebraTests {
    @Test func hermitianEigenReconstructsTheMatrix() {
        // A Hermitian matrix with complex off-diagonals and a degenerate pair.
        let rho = 0.5 * States.werner(0.7) + 0.5 * States.partial(0.3) + 0.2 * States.psiMinus
        let (values, vectors) = rho.hermitianEigen()
        #expect(ComplexMatrix.fromEigen(values: values, vectors: vectors).maxDifference(rho) < 1e-12)
        #expect((vectors.adjoint * vectors).maxDifference(.identity(4)) < 1e-12)
        #expect(values == values.sorted(by: >))
    }

    @Test func simplexProjectionClipsNegativeEigenvalues() {
        // An unphysical "state" with eigenvalues (0.6, 0.5, 0, -0.1).
        let u = States.werner(1).hermitianEigen().vectors
        let bad = ComplexMatrix.fromEigen(values: [0.6, 0.5, 0, -0.1], vectors: u)
        let fixed = Tomography.closestPhysical(bad)
        let values = fixed.hermitianEigen().values
        #expect(values.allSatisfy { $0 >= -1e-12 })
        #expect(abs(fixed.trace.real - 1) < 1e-12)
        // Projection of (0.6, 0.5, 0, -0.1) onto the simplex is (0.55, 0.45, 0, 0).
        #expect(abs(values[0] - 0.55) < 1e-12 && abs(values[1] - 0.45) < 1e-12)
    }
}

@Suite struct TomographyTests {
    static let cases: [(String, ComplexMatrix, Double, Double)] = [
        // name, state, fidelity to Φ+, concurrence
        ("phi+", States.phiPlus, 1, 1),
        ("psi-", States.psiMinus, 0, 1),
        ("werner 0.9", States.werner(0.9), (1 + 3 * 0.9) / 4, (3 * 0.9 - 1) / 2),
        ("werner 0.2", States.werner(0.2), (1 + 3 * 0.2) / 4, 0),
        ("partial 0.3", States.partial(0.3), (1 + Double.sin(0.6)) / 2, Double.sin(0.6)),
        ("product HD", States.product, 0.25, 0),
    ]

    @Test(arguments: [TomographyBasisSet.standard16, .full36])
    func exactCountsRecoverTheTruth(set: TomographyBasisSet) throws {
        for (name, rho, fidelity, concurrence) in Self.cases {
            let result = try Tomography.reconstruct(expectedProjections(rho, set))
            #expect(result.linear.maxDifference(rho) < 1e-9, "\(name)")
            #expect(abs((result.figures["fidelity_phi+"] ?? -1) - fidelity) < 1e-9, "\(name)")
            #expect(abs((result.figures["concurrence"] ?? -1) - concurrence) < 1e-6, "\(name)")
            #expect(abs(result.intensity - 10_000) < 1e-6, "\(name)")
        }
    }

    @Test func nineBasesWithBothDetectorsRecoverTheTruth() throws {
        let rho = States.partial(0.4)
        let projections = expectedProjections(rho, .bases9, bothPorts: true)
        #expect(projections.count == 36)
        let result = try Tomography.reconstruct(projections)
        #expect(result.linear.maxDifference(rho) < 1e-9)
    }

    @Test func bellStateFiguresFollowTheStandardConventions() {
        let f = FiguresOfMerit.all(States.phiPlus)
        #expect(abs(f["negativity"]! - 0.5) < 1e-9)  // Vidal–Werner: (‖ρ^T_B‖₁ − 1)/2
        #expect(abs(f["log_negativity"]! - 1) < 1e-9)
        #expect(abs(f["purity"]! - 1) < 1e-12)
        #expect(abs(f["entropy"]!) < 1e-9)
        let mixed = FiguresOfMerit.all(0.25 * ComplexMatrix.identity(4))
        #expect(abs(mixed["entropy"]! - 2) < 1e-9)  // bits
        #expect(abs(mixed["linear_entropy"]! - 1) < 1e-12)
    }

    @Test func incompleteSettingsAreRejected() {
        let onlyHV = expectedProjections(States.phiPlus, .full36).filter { ["HH", "HV", "VH", "VV"].contains($0.label) }
        #expect(throws: TomographyError.self) { try Tomography.reconstruct(onlyHV) }
    }

    /// Delta-method errors must match the spread of estimates over Poisson resamples.
    @Test func reportedErrorsMatchTheSpreadOverResamples() throws {
        let truth = expectedProjections(States.werner(0.8), .standard16, intensity: 2000)
        var rng = SeededGenerator(seed: 42)
        var fidelities: [Double] = []
        var reported: [Double] = []
        for _ in 0..<200 {
            let sampled = truth.map { p -> Projection in
                var q = p
                q.counts = Double(rng.poisson(p.counts))
                return q
            }
            let r = try Tomography.reconstruct(sampled)
            fidelities.append(r.figures["fidelity_phi+_linear"]!)
            reported.append(r.uncertainties["fidelity_phi+_linear"]!)
        }
        let mean = fidelities.reduce(0, +) / Double(fidelities.count)
        let sd = (fidelities.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Double(fidelities.count - 1)).squareRoot()
        let typical = reported.reduce(0, +) / Double(reported.count)
        // With 200 resamples the sample SD is known to about 1/√(2·199) ≈ 5%; allow 4 of those.
        #expect(abs(sd / typical - 1) < 4 * (1 / (2.0 * 199).squareRoot()))
        // The linear estimator is unbiased: the mean is within 4 standard errors of the truth.
        #expect(abs(mean - 0.85) < 4 * sd / Double(fidelities.count).squareRoot())
    }
}
