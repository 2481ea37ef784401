import Foundation
import HeraldCore
import HeraldRunner
import Testing

/// Two taggers on their own clocks, merged by the run: known answers from the simulated lab.
///
/// One hour of lab time: three analyzer settings (HH, HV and the 50:50 split of a heralded
/// g2), each acquired 1 s in every minute for 20 minutes, on the same photons (same seed) by
///  - one tagger seeing all four detectors (the truth a merged stream must give);
///  - two taggers, photon B's on a clock 3.3 µs late, 1 ppm fast and wandering 20 ps/√s,
///    followed by its White Rabbit marks (`track: marks`);
///  - the same two, corrected by the true line only (`track: model`): the wander is not
///    followed; and by the offset only, as if the drift were unknown.
@Suite struct ClockTrackingTests {
    static let remoteClock = "clock_offset: 3.3 us, clock_drift: 1 ppm, clock_wander: 20 ps"
    /// A clock that only drifts: its truth is a line.
    static let steadyClock = "clock_offset: 3.3 us, clock_drift: 1 ppm"

    enum Variant {
        case oneTagger
        case twoTaggers(clocks: String)

        var b: (pass: Int, reflect: Int) {
            switch self {
            case .oneTagger: return (3, 4)
            case .twoTaggers: return (11, 12)
            }
        }
    }

    /// `calibrateEveryMinute`: a `calibrate_clocks` of 1 s before each minute's acquisition
    /// (correlation tracking); otherwise one at the start, or the marks' lock-in.
    static func script(_ v: Variant, remote: String = remoteClock, minutes: Int = 20, calibrateEveryMinute: Bool = false) -> String {
        let taggers: String, acquire: String, clocks: String
        switch v {
        case .oneTagger:
            taggers = "  tagger: {driver: mock.timetagger}"
            acquire = "device: tagger"
            clocks = ""
        case .twoTaggers(let c):
            taggers = """
                  analyser: {driver: mock.timetagger, settings: {inputs: "1,2", sync: white_rabbit, sync_channel: 5}}
                  remote: {driver: mock.timetagger, settings: {inputs: "3,4", \(remote), sync: white_rabbit, sync_channel: 5}}
                """
            acquire = "devices: [analyser, remote]"
            clocks = "clocks:\n  reference: analyser\n  taggers:\n    remote: {channel_offset: 8, \(c)}"
        }
        // 20 minutes per setting: 1 s acquired at the start of every minute.
        let correlation: Bool
        if case .twoTaggers(let c) = v, c.contains("correlation") { correlation = true } else { correlation = false }
        // One tagger acquires where the others calibrate: the same photons, drawn in the same order.
        let calibrate = correlation ? "calibrate_clocks: 1 s" : "acquire: {\(acquire), duration: 1 s}"
        let minute = calibrateEveryMinute
            ? "        - \(calibrate)\n        - acquire: {\(acquire), duration: 1 s}\n        - wait: 58 s\n"
            : "        - acquire: {\(acquire), duration: 1 s}\n        - wait: 59 s\n"
        let lockIn = correlation ? "- calibrate_clocks: {duration: 2 s}" : "- acquire: {\(acquire), duration: 2 s}"
        return """
            herald: 1
            name: clock-tracking
            simulation: {pair_rate: 100 kHz, nominal_power: 10 mW, visibility: 0.95, efficiency: 0.5, dark_rate: 50 Hz, jitter: 50 ps}
            devices:
              pump: {driver: mock.laser}
              qwp_a: {driver: mock.rotator, settings: {arm: a, plate: qwp}}
              hwp_a: {driver: mock.rotator, settings: {arm: a, plate: hwp}}
              qwp_b: {driver: mock.rotator, settings: {arm: b, plate: qwp}}
              hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
            \(taggers)
            \(clocks)
            steps:
              - set: {qwp_a.angle: 0 deg, hwp_a.angle: 0 deg, qwp_b.angle: 0 deg, pump.power: 10 mW, pump.enabled: true}
              # Acquisitions from the middle of a second: each sees one mark, well inside it.
              - wait: 500 ms
              \(lockIn)
              - sweep:
                  name: setting
                  set: hwp_b.angle
                  values: [0 deg, 45 deg]
                  steps:
            \(String(repeating: minute, count: minutes))
              - sweep:
                  name: split
                  set: hwp_b.angle
                  values: [22.5 deg]
                  steps:
            \(String(repeating: minute, count: minutes))
              - set: {pump.enabled: false}
              - rates: {sweep: setting, pairs: [[1, \(v.b.pass)], [1, \(v.b.reflect)]], window: 1 ns}
              - g2: {sweep: split, herald: 1, signals: [\(v.b.pass), \(v.b.reflect)], window: 10 ns}
            """
    }

    struct Outcome {
        var hh: Int, hv: Int, g2: Double, g2Error: Double
        var visibility: Double { Double(hh - hv) / Double(hh + hv) }
        /// Binomial error of the visibility: V = 2p − 1 with p = HH/(HH+HV).
        var visibilityError: Double { 2 * (Double(hh) * Double(hv) / Double(hh + hv)).squareRoot() / Double(hh + hv) }
    }

    func run(
        _ v: Variant, in dir: URL, name: String, remote: String = remoteClock, minutes: Int = 20, calibrateEveryMinute: Bool = false
    ) async throws -> (Outcome, String) {
        let path = dir.appendingPathComponent("\(name).yaml").path
        try Self.script(v, remote: remote, minutes: minutes, calibrateEveryMinute: calibrateEveryMinute).write(toFile: path, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("\(name).h5").path
        let live = LiveResults()
        let report = try await Herald.run(.init(scriptPath: path, mock: true, outPath: out, seed: 21), extraSinks: [live])
        #expect(report.status == .success, "\(name): \(report.reason ?? "")")
        let counts = await live.counts.filter { $0.sweep == "setting" }
        func pair(_ index: Int, _ b: Int) -> Int {
            counts.first { $0.index == index }?.pairs.first { $0.channelA == 1 && $0.channelB == b }?.coincidences ?? 0
        }
        let g2 = try #require(report.analyses.first { $0.name == "g2" })
        return (
            Outcome(
                hh: pair(0, v.b.pass), hv: pair(0, v.b.reflect), g2: g2.values["g2_0"] ?? .nan, g2Error: g2.uncertainties["g2_0"] ?? .nan),
            out
        )
    }

    @Test("an hour at 1 ppm: the merged stream gives one tagger's visibility and g2; a clock not followed smears")
    func mergedStreamEqualsOneTagger() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (truth, _) = try await run(.oneTagger, in: dir, name: "one")
        let (tracked, trackedFile) = try await run(
            .twoTaggers(clocks: "track: marks, sync_channel: 5, reference_sync_channel: 5"), in: dir, name: "tracked")
        // The true line of the remote clock as a function of its local time (drift d/(1 + d)),
        // at its epoch: everything but the wander.
        let line = dir.appendingPathComponent("line-clock.yaml")
        try """
            clocks:
              remote: {reference: analyser, offset_ps: 3300000, drift: \(1e-6 / (1 + 1e-6)), epoch_ps: 3300000}
            """.write(to: line, atomically: true, encoding: .utf8)
        let (lineOnly, _) = try await run(.twoTaggers(clocks: "track: model, model: line-clock.yaml"), in: dir, name: "line")
        let offsetFile = dir.appendingPathComponent("offset-clock.yaml")
        try "clocks:\n  remote: {reference: analyser, offset_ps: 3300000, drift: 0, epoch_ps: 0}\n"
            .write(to: offsetFile, atomically: true, encoding: .utf8)
        let (offsetOnly, _) = try await run(.twoTaggers(clocks: "track: model, model: offset-clock.yaml"), in: dir, name: "offset")

        // Plenty counted: HH ≈ R·η²·(1+V)/4 per second over 20 s.
        #expect(truth.hh > 200_000)
        // The same photons: the tracked merge must agree within counting error (3σ, binomial
        // for V, the g2's own error for g2) — and in fact nearly exactly.
        #expect(abs(tracked.visibility - truth.visibility) < 3 * truth.visibilityError, "\(tracked) vs \(truth)")
        #expect(abs(Double(tracked.hh - truth.hh)) < 3 * Double(truth.hh).squareRoot())
        #expect(abs(tracked.g2 - truth.g2) < 3 * truth.g2Error, "g2 \(tracked.g2) vs \(truth.g2) ± \(truth.g2Error)")
        #expect(truth.g2 > 0 && truth.g2Error < truth.g2)
        // Not followed, the wander (20 ps/√s: ~1 ns after the hour) moves photon B out of the
        // 1 ns window: many σ fewer coincidences. Offset only: 1 ppm is 1 µs a second, and
        // nothing but accidentals is left.
        #expect(Double(truth.hh - lineOnly.hh) > 10 * Double(truth.hh).squareRoot(), "line only: \(lineOnly.hh) of \(truth.hh)")
        #expect(Double(offsetOnly.hh) < 0.01 * Double(truth.hh), "offset only: \(offsetOnly.hh) of \(truth.hh)")
        print("clock tracking over an hour: HH \(truth.hh) one tagger, \(tracked.hh) tracked, \(lineOnly.hh) line only, \(offsetOnly.hh) offset only; "
            + "V \(truth.visibility) / \(tracked.visibility) / \(lineOnly.visibility); g2 \(truth.g2) / \(tracked.g2) ± \(truth.g2Error)")

        // The record: the other tagger's raw tags in its own clock, and the clock it followed
        // with a knot per paired mark: 2 s + 60 one-second acquisitions.
        let r = try await runProcess(
            Paths.python,
            ["-c", """
            import h5py, sys
            f = h5py.File(sys.argv[1])
            g = f['user/herald/clocks/remote']
            print(g.attrs['source'], len(g['knot_local_ps']), g['drift'][()], g['drift_error'][()], len(f['user/herald/taggers/remote/timestamps']))
            """, trackedFile])
        #expect(r.status == 0, "\(r.stderr)")
        let h5 = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let words = h5.split(separator: " ")
        #expect(words.first == "pps")
        #expect(words.count == 5 && (Int(words[1]) ?? 0) >= 60, "\(h5)")
        // The line through the knots: 1 ppm (as d/(1 + d)) within a few of its errors and the wander's pull.
        if words.count == 5, let drift = Double(words[2]), let error = Double(words[3]) {
            #expect(abs(drift - 1e-6) < max(5 * error, 2e-9), "drift \(drift) ± \(error)")
        }
    }

    @Test("herald calibrate-clocks on a run with two taggers finds the clock a later run then uses")
    func calibrateFromARunThenUseTheModel() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let (truth, _) = try await run(.oneTagger, in: dir, name: "one", minutes: 2)
        let (_, tracked) = try await run(
            .twoTaggers(clocks: "track: marks, sync_channel: 5"), in: dir, name: "tracked", remote: Self.steadyClock, minutes: 2)
        let clocks = dir.appendingPathComponent("remote-clock.yaml").path
        let r = try await runProcess(
            Paths.herald.path, ["calibrate-clocks", tracked, "--reference-channels", "1", "2", "--channels", "3", "4", "--out", clocks, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let model = try JSONDecoder().decode(ClockModel.self, from: Data(r.stdout.utf8))
        #expect(model.tagger == "remote" && model.reference == "analyser" && model.source == "correlation")
        // The truth as a function of local time: offset 3.3 µs at local 3.3 µs, slope d/(1 + d).
        let slope = 1e-6 / (1 + 1e-6)
        let trueOffset = 3.3e6 + slope * (Double(model.epochPs) - 3.3e6)
        // 4σ of the fit, plus the picosecond the tagger rounds each stamp to.
        #expect(abs(model.offsetPs - trueOffset) < 4 * model.offsetErrorPs + 1, "offset \(model.offsetPs) ± \(model.offsetErrorPs), truth \(trueOffset)")
        #expect(abs(model.drift - slope) < 4 * model.driftError, "drift \(model.drift) ± \(model.driftError)")
        // The same photons again, the remote clock corrected by the file: one tagger's counts.
        let (fixed, _) = try await run(
            .twoTaggers(clocks: "track: model, model: remote-clock.yaml"), in: dir, name: "fixed", remote: Self.steadyClock, minutes: 2)
        #expect(abs(Double(fixed.hh - truth.hh)) < 3 * Double(truth.hh).squareRoot(), "\(fixed.hh) vs \(truth.hh)")
        #expect(abs(fixed.visibility - truth.visibility) < 3 * truth.visibilityError)
    }

    @Test("calibrate_clocks: the run calibrates a clock from its own photons, and recalibrating each minute follows the wander")
    func correlationTracking() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let correlation = "track: correlation, reference_channels: [1, 2], channels: [3, 4]"
        // A clock that only drifts: one calibration at the start holds for the run.
        let (steadyTruth, _) = try await run(.oneTagger, in: dir, name: "one", minutes: 2)
        let (steady, _) = try await run(.twoTaggers(clocks: correlation), in: dir, name: "steady", remote: Self.steadyClock, minutes: 2)
        #expect(abs(Double(steady.hh - steadyTruth.hh)) < 3 * Double(steadyTruth.hh).squareRoot(), "\(steady.hh) vs \(steadyTruth.hh)")
        // The wandering clock of the hour: calibrated each minute from 1 s of photons (61
        // calibrations: the start's and one a minute), the coincidences stay one tagger's (the
        // line alone lost 55 %; see above).
        let (truth, _) = try await run(.oneTagger, in: dir, name: "one-minutely", calibrateEveryMinute: true)
        let (followed, file) = try await run(.twoTaggers(clocks: correlation), in: dir, name: "minutely", calibrateEveryMinute: true)
        #expect(truth.hh > 200_000)
        #expect(abs(Double(followed.hh - truth.hh)) < 3 * Double(truth.hh).squareRoot(), "\(followed.hh) vs \(truth.hh)")
        #expect(abs(followed.visibility - truth.visibility) < 3 * truth.visibilityError)
        #expect(abs(followed.g2 - truth.g2) < 3 * truth.g2Error)
        let r = try await runProcess(
            Paths.python,
            ["-c", "import h5py, sys; g = h5py.File(sys.argv[1])['user/herald/clocks/remote']; print(g.attrs['source'], g.attrs['method'][:40])", file])
        #expect(r.stdout.hasPrefix("correlation calibrated by the run (calibration 61)"), "\(r.stdout)\(r.stderr)")
    }

    /// A GPS-disciplined PPS (1 ns jitter) on both taggers, 60 s of continuous acquisition.
    static func gpsScript(twoTaggers: Bool, smoothing: Int) -> String {
        let taggers = twoTaggers
            ? """
              analyser: {driver: mock.timetagger, settings: {inputs: "1,2", sync: gps, sync_channel: 5}}
              remote: {driver: mock.timetagger, settings: {inputs: "3,4", clock_offset: 1 us, clock_drift: 1 ppm, sync: gps, sync_channel: 5}}
            clocks:
              reference: analyser
              taggers:
                remote: {channel_offset: 8, track: marks, sync_channel: 5, smoothing: \(smoothing)}
            """
            : "  tagger: {driver: mock.timetagger}"
        let acquire = twoTaggers ? "devices: [analyser, remote]" : "device: tagger"
        let b = twoTaggers ? 11 : 3
        return """
            herald: 1
            name: gps
            simulation: {pair_rate: 20 kHz, nominal_power: 10 mW, visibility: 0.95, efficiency: 0.5, dark_rate: 50 Hz, jitter: 50 ps}
            devices:
              pump: {driver: mock.laser}
            \(taggers)
            steps:
              - set: {pump.power: 10 mW, pump.enabled: true}
              - wait: 500 ms
              - acquire: {\(acquire), duration: 60 s, name: pairs}
              - rates: {sweep: pairs, pairs: [[1, \(b)]], window: 2 ns}
            """
    }

    @Test("a GPS PPS's nanosecond jitter: smoothing the knots over 21 marks keeps the coincidences one knot a mark loses")
    func gpsMarksAreSmoothed() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        func coincidences(_ name: String, _ text: String, b: Int) async throws -> Int {
            let path = dir.appendingPathComponent("\(name).yaml").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let live = LiveResults()
            let report = try await Herald.run(
                .init(scriptPath: path, mock: true, outPath: dir.appendingPathComponent("\(name).h5").path, seed: 4), extraSinks: [live])
            #expect(report.status == .success, "\(name): \(report.reason ?? "")")
            return await live.counts.first?.pairs.first { $0.channelB == b }?.coincidences ?? 0
        }
        let truth = try await coincidences("one", Self.gpsScript(twoTaggers: false, smoothing: 0), b: 3)
        let raw = try await coincidences("raw", Self.gpsScript(twoTaggers: true, smoothing: 0), b: 11)
        let smoothed = try await coincidences("smoothed", Self.gpsScript(twoTaggers: true, smoothing: 10), b: 11)
        #expect(truth > 100_000)
        // Each knot 1 ns off (σ), interpolated: about a third fall outside ±1 ns. The line through
        // 21 marks is good to ~0.25 ns: within 1 % of one tagger (far beyond its 0.3 % counting error).
        #expect(Double(raw) < 0.85 * Double(truth), "raw knots: \(raw) of \(truth)")
        #expect(Double(smoothed) > 0.99 * Double(truth), "smoothed: \(smoothed) of \(truth)")
        print("GPS PPS, 60 s: \(truth) one tagger, \(raw) knot a mark, \(smoothed) smoothed over 21 marks")
    }
}
