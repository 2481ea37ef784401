import ComplexModule
import HeraldCore
import Testing

@testable import HeraldAnalysis

/// Conventions that a self-consistent test cannot catch: the expected counts here come from
/// Jones vectors written out in the test (docs/tomography.md), not from the library's own.
@Suite struct ConventionTests {
    typealias C = Complex<Double>
    static let r = 1 / 2.0.squareRoot()
    /// R = (H − iV)/√2 and L = (H + iV)/√2, as docs/tomography.md defines them.
    static let vectors: [PolarizationLabel: (C, C)] = [
        .H: (C(1), C(0)), .V: (C(0), C(1)), .D: (C(r), C(r)), .A: (C(r), C(-r)), .R: (C(r), C(0, -r)), .L: (C(r), C(0, r)),
    ]

    /// (|HH⟩ + i|VV⟩)/√2: its only complex entry is ρ_{HH,VV} = −i/2 (ρ = ψψ†, ψ_VV = i/√2).
    /// With R and L swapped anywhere in the analysis, the sign of that entry flips.
    @Test(arguments: [Estimator.linear, .mle])
    func circularBasisSignIsAsDocumented(estimator: Estimator) throws {
        let psi: [C] = [C(Self.r), .zero, .zero, C(0, Self.r)]
        var projections: [Projection] = []
        for (a, b) in TomographyBasisSet.full36.settings {
            let (ah, av) = Self.vectors[a]!, (bh, bv) = Self.vectors[b]!
            // ⟨a b|ψ⟩ with ⟨a| = conj(a).
            let amplitude = ah.conjugate * bh.conjugate * psi[0] + ah.conjugate * bv.conjugate * psi[1]
                + av.conjugate * bh.conjugate * psi[2] + av.conjugate * bv.conjugate * psi[3]
            projections.append(Projection(a, b, counts: 10_000 * amplitude.lengthSquared))
        }
        let result = try Tomography.reconstruct(projections, options: TomographyOptions(estimator: estimator))
        let rho03 = result.state[0, 3]
        #expect(abs(rho03.real) < 0.01)
        #expect(abs(rho03.imaginary - (-0.5)) < 0.01, "ρ[HH,VV] = \(rho03); expected −0.5i")
        // Not Φ+: the fidelity to Φ+ of this state is 1/2, the same as to Φ−.
        #expect(abs((result.figures["fidelity_phi+"] ?? 0) - 0.5) < 0.01)
    }

    /// |Δ| = window/2 exactly is a coincidence (inclusive), one picosecond more is not:
    /// the boundary of the streaming counter, hit on purpose rather than by chance.
    @Test func streamingCounterWindowBoundaryIsInclusive() throws {
        let config = CoincidenceConfiguration(windowPs: 1000, delaysPs: [:], pairs: [ChannelPair(1, 2)])
        func count(_ delta: Int64) throws -> Int {
            let block =
                delta >= 0
                ? TagBlock(timestamps: [1_000_000, 1_000_000 + delta], channels: [1, 2])
                : TagBlock(timestamps: [1_000_000 + delta, 1_000_000], channels: [2, 1])
            return try CoincidenceStream.count(block, config).coincidences[ChannelPair(1, 2)] ?? 0
        }
        #expect(try count(500) == 1)
        #expect(try count(-500) == 1)
        #expect(try count(501) == 0)
        #expect(try count(-501) == 0)
        #expect(try count(0) == 1)
    }

    /// A delay is added to its channel's timestamps: channel 2 arriving 5 ns late is brought
    /// back by a delay of −5 ns, and pushed further away by +5 ns.
    @Test func delaysAreAddedToTheirChannel() throws {
        let late: Int64 = 5000
        let block = TagBlock(timestamps: (0..<100).flatMap { [Int64($0) * 100_000, Int64($0) * 100_000 + late] }, channels: Array(repeating: [1, 2], count: 100).flatMap { $0 })
        func count(_ delay: Int64) throws -> Int {
            let config = CoincidenceConfiguration(windowPs: 1000, delaysPs: [2: delay], pairs: [ChannelPair(1, 2)])
            return try CoincidenceStream.count(block, config).coincidences[ChannelPair(1, 2)] ?? 0
        }
        #expect(try count(-late) == 100)
        #expect(try count(late) == 0)
        #expect(try count(0) == 0)
    }
}
