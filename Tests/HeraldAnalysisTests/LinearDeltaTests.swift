import ComplexModule
import HeraldCore
import Testing

@testable import HeraldAnalysis

/// Large tables take the linearised delta method (linear time); small ones refit for every
/// count moved (quadratic). On the same table both must give the same uncertainties.
@Suite struct LinearDeltaTests {
    /// A noisy 36-setting Werner table, both ports, with accidentals.
    static func table() -> [Projection] {
        var rng = SeededGenerator(seed: 77)
        return expectedProjections(States.werner(0.9), .full36, intensity: 20_000, bothPorts: true).map { p in
            var q = p
            q.counts = Double(rng.poisson(p.counts))
            q.accidentals = 3
            return q
        }
    }

    @Test(arguments: [Estimator.linear, .mle, .hedged])
    func linearisedEqualsRefitted(estimator: Estimator) throws {
        let projections = Self.table()
        #expect(projections.count > Tomography.refitDeltaLimit, "the table must take the linearised path")
        let options = TomographyOptions(estimator: estimator)
        let linearised = try Tomography.reconstruct(projections, options: options)
        // The refit path, forced: the same loop the small tables run.
        let refitted = try Tomography.reconstruct(Array(projections), options: options, forceRefitDelta: true)
        for key in ["fidelity_phi+", "concurrence", "purity", "tangle", "negativity"] {
            let a = try #require(linearised.uncertainties[key]), b = try #require(refitted.uncertainties[key])
            // One Newton step against a converged refit: equal to well under a percent.
            #expect(abs(a - b) <= 0.01 * b + 1e-9, "\(key): linearised \(a), refitted \(b)")
        }
    }
}
