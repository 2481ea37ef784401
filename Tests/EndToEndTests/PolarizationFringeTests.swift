import Foundation
import HeraldCore
import HeraldRunner
import Testing

/// The polarisation-visibility experiment: both bases give the source's visibility within
/// errors, and without the lockstep (the HWP turned alone, the QWP left at 0°) the D/A fringe
/// collapses while the H/V one does not — the physics of the lockstep is really there.
@Suite struct PolarizationFringeTests {
    static let script = Paths.root.appendingPathComponent("Experiments/polarization-visibility.yaml")

    struct Fit {
        var values: [String: Double]
        var uncertainties: [String: Double]
    }

    /// Runs the script as `herald run --json` in a process of its own (two runs of 38
    /// acquisitions would otherwise load this process's task pool for seconds).
    func run(_ text: String? = nil, seed: UInt64) async throws -> (hv: Fit, da: Fit) {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var path = Self.script.path
        if let text {
            path = dir.appendingPathComponent("s.yaml").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
        }
        let r = try await runProcess(
            Paths.herald.path, ["run", path, "--mock", "--seed", "\(seed)", "--out", dir.appendingPathComponent("r.h5").path, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        let fits = (report["analyses"] as? [[String: Any]] ?? []).filter { $0["name"] as? String == "rates" }.map {
            Fit(values: $0["values"] as? [String: Double] ?? [:], uncertainties: $0["uncertainties"] as? [String: Double] ?? [:])
        }
        try #require(fits.count == 2)
        return (fits[0], fits[1])
    }

    /// V = 0.9 in both bases; the phases 0° and 45° (the angles of A's analyser). Tolerance:
    /// 4σ of each fit's profile-likelihood error (σ_V ≈ 0.008 from ≈ 24 000 coincidences a fringe).
    @Test func bothBasesGiveTheSourcesVisibility() async throws {
        let (hv, da) = try await run(seed: 21)
        for (fit, phase) in [(hv, 0.0), (da, 45.0)] {
            let v = try #require(fit.values["fringe_visibility_1_3"]), sv = try #require(fit.uncertainties["fringe_visibility_1_3"])
            #expect(abs(v - 0.9) < 4 * sv && sv < 0.02, "V = \(v) ± \(sv)")
            let p = try #require(fit.values["fringe_phase_1_3"]), sp = try #require(fit.uncertainties["fringe_phase_1_3"])
            // The phase is defined modulo 180°.
            let d = abs((p - phase + 90).truncatingRemainder(dividingBy: 180) - 90)
            #expect(d < 4 * sp, "phase \(p) ± \(sp), expected \(phase)")
            #expect((fit.values["deviance_per_dof_1_3"] ?? 99) < 2, "the sinusoid fits: \(fit.values)")
        }
    }

    /// Only the HWP moves (α/2) and the QWP stays at 0°: for H/V the QWP is neutral, so that
    /// fringe keeps V; for D/A it turns the analysed state elliptical, and the fringe loses
    /// nearly all its visibility (|⟨D|ψ⟩|² no longer swings between 0 and 1).
    @Test func withoutTheLockstepTheDAFringeCollapses() async throws {
        let text = try String(contentsOf: Self.script, encoding: .utf8)
            .replacingOccurrences(of: "set: {qwp_b.angle: $alpha, hwp_b.angle: $alpha / 2}", with: "set: {hwp_b.angle: $alpha / 2}")
        #expect(text.components(separatedBy: "set: {hwp_b.angle: $alpha / 2}").count == 3)
        let (hv, da) = try await run(text, seed: 22)
        let vhv = try #require(hv.values["fringe_visibility_1_3"]), vda = try #require(da.values["fringe_visibility_1_3"])
        #expect(vhv > 0.85, "H/V keeps its visibility: \(vhv)")
        #expect(vda < 0.2, "D/A collapses: \(vda)")
    }
}
