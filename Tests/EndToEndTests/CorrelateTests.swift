import Foundation
import HeraldCore
import HeraldRunner
import Testing

/// `herald correlate` and `herald calibrate-delays` against an independent numpy recount from
/// the raw tags, bin for bin: on a shipped run's file and on a real PicoQuant recording.
@Suite(.serialized) struct CorrelateTests {
    /// Found where TimeTagFileTests finds the shared recordings ($HERALD_SHARED_DATA, beside the repository, /work/shared/data).
    static let picoharp = TimeTagFileTests.samples.appendingPathComponent("picoharp/v30_t2.ptu").path

    func correlate(_ file: String, _ a: Int, _ b: Int, rangePs: Int, binPs: Int, extra: [String] = []) async throws -> [String: Any] {
        let r = try await runProcess(
            Paths.herald.path, ["correlate", file, "--pair", "\(a),\(b)", "--range", "\(rangePs)ps", "--bin", "\(binPs)ps", "--json"] + extra)
        #expect(r.status == 0, "\(r.stderr)")
        return try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    }

    func numpyAgrees(_ file: String, _ a: Int, _ b: Int, rangePs: Int, binPs: Int, report: [String: Any], in dir: URL) async throws {
        let json = dir.appendingPathComponent("h-\(a)-\(b).json")
        try JSONSerialization.data(withJSONObject: report).write(to: json)
        let check = try await runProcess(
            Paths.python, [Paths.root.appendingPathComponent("Tests/python/correlate_check.py").path, file, "\(a)", "\(b)", "\(rangePs)", "\(binPs)", json.path])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    }

    /// A shipped g2 run: the herald–signal cross-correlation (a peak at zero delay, the pairs)
    /// and a signal's autocorrelation, both equal to numpy's recount in every bin.
    @Test func onAShippedRunEveryBinIsNumpys() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("run.h5").path
        let run = try await runProcess(
            Paths.herald.path, ["run", Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path, "--mock", "--seed", "3", "--out", out, "--set", "integration=100ms"])
        #expect(run.status == 0, "\(run.stderr)")
        for (a, b, range, bin) in [(1, 3, 5_000, 100), (3, 3, 20_000, 1_000)] {
            let report = try await correlate(out, a, b, rangePs: range, binPs: bin)
            try await numpyAgrees(out, a, b, rangePs: range, binPs: bin, report: report, in: dir)
        }
        // The pair peak sits at zero delay in the simulated lab: within one bin.
        let report = try await correlate(out, 1, 3, rangePs: 5_000, binPs: 100)
        let peak = try #require(report["peak"] as? [String: Any])
        #expect(abs(peak["positionPs"] as? Double ?? 1e9) < 100, "\(peak)")
    }

    /// A real PicoHarp 300 T2 recording (two channels): numpy reads it through tttrlib, an
    /// independent decoder, and finds the same histogram; calibrate-delays' delay, applied,
    /// moves the peak to zero.
    @Test func onARealPicoQuantFileEveryBinIsNumpysAndTheDelayCentresThePeak() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let range = 100_000, bin = 500
        let report = try await correlate(Self.picoharp, 1, 2, rangePs: range, binPs: bin)
        try await numpyAgrees(Self.picoharp, 1, 2, rangePs: range, binPs: bin, report: report, in: dir)

        let delays = dir.appendingPathComponent("delays.yaml").path
        let cal = try await runProcess(
            Paths.herald.path, ["calibrate-delays", Self.picoharp, "--reference", "1", "--range", "\(range)ps", "--bin", "\(bin)ps", "--out", delays, "--json"])
        #expect(cal.status == 0, "\(cal.stderr)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(cal.stdout.utf8)) as? [String: Any])
        // This recording's two channels share a peak (8σ, about −450 ps): its delay is found.
        let d = try #require((result["delaysPs"] as? [String: Any])?["2"] as? Int, "\(result)")
        let centred = try await correlate(Self.picoharp, 1, 2, rangePs: range, binPs: bin, extra: ["--delay", "2=\(d)ps"])
        let p = try #require(centred["peak"] as? [String: Any])
        #expect(abs(p["positionPs"] as? Double ?? 1e9) <= Double(bin), "after the delay: \(p)")
        let text = try String(contentsOfFile: delays, encoding: .utf8)
        #expect(text.contains("delays:\n  1: 0 ps\n  2: \(d) ps\n"), "\(text)")
    }

    /// The shipped delay-calibration example: calibrate-delays finds channel 3's 2.5 ns cable
    /// (within 5 of the peak's standard errors, and the pairs' other ports have no peak with 1),
    /// and recounting with it brings the pairs back into the window.
    @Test func theDelayCalibrationExampleFindsItsCable() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("raw.h5").path
        let run = try await runProcess(
            Paths.herald.path, ["run", Paths.root.appendingPathComponent("Experiments/delay-calibration.yaml").path, "--mock", "--seed", "4", "--out", out, "--set", "integration=200ms"])
        #expect(run.status == 0, "\(run.stderr)")
        let delays = dir.appendingPathComponent("delays.yaml").path
        let cal = try await runProcess(Paths.herald.path, ["calibrate-delays", out, "--reference", "1", "--range", "10ns", "--bin", "50ps", "--out", delays, "--json"])
        #expect(cal.status == 0, "\(cal.stderr)")
        let result = try #require(try JSONSerialization.jsonObject(with: Data(cal.stdout.utf8)) as? [String: Any])
        let d3 = try #require((result["delaysPs"] as? [String: Any])?["3"] as? Int)
        let peak = try #require((result["peaks"] as? [String: Any])?["3"] as? [String: Any])
        let error = try #require(peak["positionErrorPs"] as? Double)
        #expect(abs(Double(d3) + 2500) <= max(5 * error, 1), "channel 3: \(d3) ps ± \(error)")
        // Recounted with the delay, the pairs are coincidences again: R·η²·(1 + V)/4 = 11 875 s⁻¹,
        // within 5σ of its counting error (it was accidentals only, ≈ 2.5 s⁻¹, before).
        let recount = try await runProcess(Paths.herald.path, ["analyze", out, "--delay", "3=\(d3)ps", "--json"])
        #expect(recount.status == 0, "\(recount.stderr)")
        let entries = try #require(try JSONSerialization.jsonObject(with: Data(recount.stdout.utf8)) as? [[String: Any]])
        let series = try #require(entries.first?["series"] as? [String: [Double]])
        let rate = try #require(series["coincidence_rate_1_3"]?.first), err = try #require(series["coincidence_rate_1_3_error"]?.first)
        #expect(abs(rate - 11_875) < 5 * err, "\(rate) ± \(err)")
        let text = try String(contentsOfFile: delays, encoding: .utf8)
        #expect(text.contains("  3: \(d3) ps"), "\(text)")
    }

    /// The example's `correlation` step: the histogram it stores in the run is numpy's recount
    /// of the stored tags in every bin, its peak is the 2.5 ns cable, and its uncorrelated level
    /// is the singles' N₁·N₃·bin/T.
    @Test func theCorrelationStepStoresTheHistogramNumpyRecounts() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("raw.h5").path
        let run = try await runProcess(
            Paths.herald.path, ["run", Paths.root.appendingPathComponent("Experiments/delay-calibration.yaml").path, "--mock", "--seed", "5", "--out", out, "--set", "integration=200ms", "--json"])
        #expect(run.status == 0, "\(run.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        let analyses = try #require(report["analyses"] as? [[String: Any]])
        let correlation = try #require(analyses.first { $0["name"] as? String == "correlation" }, "\(analyses.map { $0["name"] ?? "" })")
        let values = try #require(correlation["values"] as? [String: Double]), errors = try #require(correlation["uncertainties"] as? [String: Double])
        let position = try #require(values["peak_position"]), sigma = try #require(errors["peak_position"])
        #expect(abs(position - 2.5e-9) <= max(5 * sigma, 1e-12), "peak at \(position) ± \(sigma) s")
        // The delay calibrate-delays would write: minus the peak, to the picosecond.
        #expect(abs(try #require(values["delay_correction"]) + (position * 1e12).rounded() * 1e-12) < 1e-16)
        // Uncorrelated level per bin: N₁·N₃·bin/T from the rates step's singles of the same point.
        let rates = try #require(analyses.first { $0["name"] as? String == "rates" })
        let rv = try #require(rates["values"] as? [String: Double])
        let t = try #require(values["duration"])
        let expected = try #require(rv["rate_1"]) * t * (try #require(rv["rate_3"])) * t * 50e-12 / t
        #expect(abs(try #require(values["accidentals_per_bin"]) - expected) <= 1e-9 * expected, "\(values)")
        let check = try await runProcess(
            Paths.python, [Paths.root.appendingPathComponent("Tests/python/correlate_check.py").path, out, "1", "3", "10000", "50", "--stored"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    }

    /// The delays file is what a script includes: its analyses count with those delays.
    @Test func aScriptIncludesTheDelaysFile() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        try "delays:\n  1: 0 ps\n  3: 250 ps\n".write(to: dir.appendingPathComponent("delays.yaml"), atomically: true, encoding: .utf8)
        let script = dir.appendingPathComponent("s.yaml")
        try """
            herald: 1
            include: delays.yaml
            devices:
              pump: {driver: mock.laser}
              tagger: {driver: mock.timetagger}
            steps:
              - set: {pump.power: 10 mW, pump.enabled: true}
              - acquire: {device: tagger, duration: 10 ms, name: one}
              - rates: {sweep: one, pairs: [[1, 3]], window: 1 ns}
            """.write(to: script, atomically: true, encoding: .utf8)
        let plan = try Herald.validate(path: script.path, mock: true).plan
        let counted = plan.steps.compactMap { step -> [Int: Int64]? in
            if case .analysis(let a, _) = step { return a.counting?.delaysPs } else { return nil }
        }
        #expect(counted == [[1: 0, 3: 250]], "\(counted)")
    }
}
