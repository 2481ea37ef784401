import ComplexModule
import Foundation
import HeraldAnalysis
import HeraldCore
import Testing

/// Herald's MLE and hedged MLE against an independent numpy/scipy implementation on the same counts.
@Suite struct ReferenceMLETests {
    @Test(arguments: [Estimator.mle, .hedged])
    func agreesWithTheScipyReference(estimator: Estimator) async throws {
        // A noisy, partially entangled state with accidentals, 16 settings.
        var rng = SeededGenerator(seed: 17)
        var projections: [Projection] = []
        for (la, lb) in TomographyBasisSet.standard16.settings {
            let a = la.jones, b = lb.jones
            let amp = [a.h * b.h, a.h * b.v, a.v * b.h, a.v * b.v]
            // |⟨ab|ψ⟩|² for ψ = 0.8|HH⟩ + 0.6|VV⟩, mixed with 10% white noise.
            let overlap = amp[0].conjugate * Complex(0.8) + amp[3].conjugate * Complex(0.6)
            let p = 0.9 * overlap.lengthSquared + 0.1 / 4
            let mean = 2000 * p + 30
            projections.append(Projection(la, lb, counts: Double(rng.poisson(mean)), accidentals: 30))
        }
        let herald = try Tomography.reconstruct(projections, options: .init(estimator: estimator))

        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("mle-\(UUID().uuidString).json")
        defer { try? FileManager.default.removeItem(at: dir) }
        let input: [String: Any] = [
            "hedging": estimator == .hedged ? 0.5 : 0.0,
            "projections": projections.map { p in
                [
                    "a": [[p.a.h.real, p.a.h.imaginary], [p.a.v.real, p.a.v.imaginary]],
                    "b": [[p.b.h.real, p.b.h.imaginary], [p.b.v.real, p.b.v.imaginary]],
                    "counts": p.counts, "accidentals": p.accidentals,
                ] as [String: Any]
            },
        ]
        try JSONSerialization.data(withJSONObject: input).write(to: dir)
        let r = try await runProcess(Paths.python, [Paths.root.appendingPathComponent("Tests/python/mle_reference.py").path, dir.path])
        try #require(r.status == 0, "\(r.stderr)")
        let reference = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let re = try #require(reference["rho_real"] as? [Double]), im = try #require(reference["rho_imag"] as? [Double])
        let diff = zip(herald.state.elements, zip(re, im)).map { (z, ref) in ((z.real - ref.0) * (z.real - ref.0) + (z.imaginary - ref.1) * (z.imaginary - ref.1)).squareRoot() }.max() ?? 1
        // Both optimise the same likelihood; they differ only by optimiser tolerance.
        #expect(diff < 2e-4, "max |Δρ| = \(diff)")
        let f = try #require(reference["fidelity_phi+"] as? Double)
        #expect(abs(herald.figures["fidelity_phi+"]! - f) < 1e-4)
        let intensity = try #require(reference["intensity"] as? Double)
        #expect(abs(herald.intensity - intensity) / intensity < 1e-4)
    }
}
