import Foundation
import Synchronization
import HeraldCore
import HeraldRunner
import HeraldScript
import HeraldSequencer
import Testing

/// Writes `text` as a script in a fresh directory; returns (dir, script path, output path).
func scriptFixture(_ text: String) throws -> (URL, String, String) {
    let dir = try Paths.temporaryDirectory()
    let script = dir.appendingPathComponent("script.yaml").path
    try text.write(toFile: script, atomically: true, encoding: .utf8)
    return (dir, script, dir.appendingPathComponent("run.h5").path)
}

/// Runs Python with h5py on `file` and decodes the JSON the snippet prints.
func probe(_ file: String, _ snippet: String) async throws -> [String: Any] {
    let code = "import h5py, json, sys, numpy as np\nf = h5py.File(sys.argv[1], 'r')\n" + snippet
    let r = try await runProcess(Paths.python, ["-c", code, file])
    guard r.status == 0, let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] else {
        Issue.record("probe failed: \(r.stderr)")
        return [:]
    }
    return obj
}

let demoScript = Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path

func lockScript(lockTime: String, timeout: String) -> String {
    """
    herald: 1
    simulation: {lock_time: \(lockTime)}
    devices:
      pump: {driver: mock.laser}
      tagger: {driver: mock.timetagger}
    steps:
      - set: {pump.power: 10 mW, pump.enabled: true}
      - wait: {until: pump.locked == true, timeout: \(timeout), poll: 100 ms}
      - acquire: {device: tagger, duration: 100 ms}
    """
}

@Suite struct ParameterTests {
    @Test func aLimitExceededThroughSetIsRejectedBeforeAnyDeviceCall() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("never.h5").path
        do {
            _ = try await Herald.run(.init(scriptPath: demoScript, outPath: out, overrides: ["pump_power": "80 mW"]))
            Issue.record("the run started")
        } catch let e as ScriptErrors {
            let d = try #require(e.diagnostics.first)
            #expect(d.message.contains("outside the allowed range"), "\(d)")
            #expect(d.message.contains("parameter 'pump_power' = '80 mW' from --set"), "\(d)")
            // Reported where the value is used: the included sequence file.
            #expect(d.location.file.hasSuffix("Experiments/lib/common.yaml"), "\(d)")
            #expect(d.location.line == 5)
        }
        // No file means no run: validation failed before any device was opened.
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    @Test func setChecksDimensionsAndNames() throws {
        #expect(throws: ScriptErrors.self) { try Herald.validate(path: demoScript, overrides: ["integration": "2 mA"]) }
        do {
            _ = try Herald.validate(path: demoScript, overrides: ["integration": "2 mA", "nonsense": "1"])
        } catch let e as ScriptErrors {
            let all = e.diagnostics.map(\.message).joined(separator: "\n")
            #expect(all.contains("expected a time like the script's default '500 ms', got a current"))
            #expect(all.contains("the script has no parameter 'nonsense'"))
        }
        let longer = try Herald.validate(path: demoScript, overrides: ["integration": "2s"])
        #expect(longer.plan.acquisitionSeconds == 72)
        #expect(longer.plan.parameters["integration"]?.text == "2s")
        #expect(longer.plan.parameters["integration"]?.value == .quantity(.seconds(2)))
    }

    @Test func scriptLimitsNarrowTheDriversRange() {
        let text = (try? String(contentsOfFile: demoScript, encoding: .utf8)) ?? ""
        let tooHigh = text.replacingOccurrences(of: "pump_power: 10 mW", with: "pump_power: 60 mW")
        // 60 mW is within the laser's own 500 mW range but over the script's 50 mW limit.
        do {
            _ = try Herald.compiler(registry: Herald.descriptorRegistry).compile(text: tooHigh, file: demoScript)
            Issue.record("accepted")
        } catch let e as ScriptErrors {
            #expect(e.diagnostics.first?.message.contains("outside the allowed range 0.0...0.05") == true, "\(e)")
        } catch { Issue.record("\(error)") }
    }
}

@Suite struct WaitAndSafetyTests {
    @Test func waitUntilSucceedsWhenTheConditionComesTrue() async throws {
        let (dir, script, out) = try scriptFixture(lockScript(lockTime: "500 ms", timeout: "2 s"))
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try await Herald.run(.init(scriptPath: script, outPath: out, seed: 1))
        #expect(report.status == .success, "\(report.reason ?? "")")
    }

    @Test func waitUntilThatTimesOutFailsTheRunAndLeavesTheLaserOff() async throws {
        let (dir, script, out) = try scriptFixture(lockScript(lockTime: "10 s", timeout: "1 s"))
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try await Herald.run(.init(scriptPath: script, outPath: out, seed: 1))
        #expect(report.status == .failed)
        #expect(report.failure == .step(.waitTimedOut, SourceLocation(file: script, line: 8, column: 5)), "\(report.reason ?? "")")
        let file = try await probe(out, "print(json.dumps({'status': f['user/herald/run'].attrs['exit_status'], 'log': list(f['user/herald/log'].asstr()[:])}))")
        #expect(file["status"] as? String == "failed")
        #expect((file["log"] as? [String])?.contains { $0.hasPrefix("safe state: pump (") && $0.contains("emission off") } == true)
    }
}

@Suite struct InterlockTests {
    /// 200 kHz pairs, η = 0.25, V = 0.9: the HH setting counts R·η²·(1+V)/4 = 2968.75 per 0.5 s.
    static func script(interlock: Bool) -> String {
        """
        herald: 1
        simulation: {pair_rate: 200 kHz, nominal_power: 10 mW, visibility: 0.9, efficiency: 0.25, dark_rate: 0 Hz,
                     unlock_at: 200 ms, unlock_duration: 200 ms}
        \(bellSetupDevices)
        \(interlock ? "interlocks: [{name: lock, require: pump.locked == true, timeout: 5 s}]" : "")
        steps:
          - set: {pump.power: 10 mW, pump.enabled: true}
          - sweep:
              name: tomography
              basis: tomography-16
              analyzers: {a: {qwp: qwp_a, hwp: hwp_a}, b: {qwp: qwp_b, hwp: hwp_b}}
              steps:
                - acquire: {device: tagger, duration: 500 ms}
          - tomography: {sweep: tomography, arms: {a: {pass: 1}, b: {pass: 3}}, window: 1 ns}
        """
    }

    static let readBack = """
        p = f['user/herald/paused']; c = f['user/herald/counts/tomography']
        print(json.dumps({'paused': [[int(a), int(b), int(r)] for a, b, r in zip(p['start_ps'][:], p['stop_ps'][:], p['resumed'][:])],
                          'durations': [float(x) for x in c['duration_s'][:]],
                          'hh': int(c['coincidences'][0]), 'label': c['projection'].asstr()[0],
                          'tags_in_pause': int(sum(((f['photon_data/timestamps'][:] >= a) & (f['photon_data/timestamps'][:] < b)).sum() for a, b in zip(p['start_ps'][:], p['stop_ps'][:])))}))
        """

    static let expectedHH = 200e3 * 0.25 * 0.25 * (1 + 0.9) / 4 * 0.5

    @Test func anInterlockPausesResumesAndTheGapIsExcluded() async throws {
        let (dir, script, out) = try scriptFixture(Self.script(interlock: true))
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try await Herald.run(.init(scriptPath: script, outPath: out, seed: 4))
        #expect(report.status == .success, "\(report.reason ?? "")")
        let file = try await probe(out, Self.readBack)
        let paused = try #require(file["paused"] as? [[Int]])
        try #require(paused.count == 1)
        // Paused from the slice that overlapped the unlock (≤ 200 ms) until lock returned (≥ 400 ms).
        #expect(paused[0][0] <= 200_000_000_000 && paused[0][1] >= 400_000_000_000 && paused[0][2] == 1, "\(paused)")
        // Every setting still got its full 0.5 s of live time…
        #expect((file["durations"] as? [Double])?.allSatisfy { abs($0 - 0.5) < 1e-9 } == true)
        // …so the affected HH setting counts what the physics says, within 4 Poisson σ.
        #expect(file["label"] as? String == "HH")
        let hh = Double(try #require(file["hh"] as? Int))
        #expect(abs(hh - Self.expectedHH) < 4 * Self.expectedHH.squareRoot(), "HH = \(hh), expected \(Self.expectedHH)")
    }

    @Test func withoutTheInterlockTheFaultCorruptsTheSetting() async throws {
        let (dir, script, out) = try scriptFixture(Self.script(interlock: false))
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try await Herald.run(.init(scriptPath: script, outPath: out, seed: 4))
        #expect(report.status == .success)
        let file = try await probe(out, Self.readBack)
        let hh = Double(try #require(file["hh"] as? Int))
        // 0.2 s of 0.5 s without pairs: the fault is real, and the interlock test above is not vacuous.
        #expect(hh < Self.expectedHH - 4 * Self.expectedHH.squareRoot(), "HH = \(hh)")
    }
}

/// The parts of a test tagger that do nothing: only `acquire` differs between them.
protocol InertTestTagger: TimeTagger {}
extension InertTestTagger {
    var name: String { "tagger" }
    var channelCount: Int { 4 }
    func connect() async throws {}
    func set(_ property: String, to value: Value) async throws {}
    func get(_ property: String) async throws -> Value { .bool(true) }
    func enterSafeState() async throws {}
    func disconnect() async {}
}

/// A tagger that streams a block every `interval` of wall time, `blocks` times, then optionally
/// stalls: a stand-in for a simulation slower than real time, and for a hung device.
final class PacedTagger: InertTestTagger {
    var descriptor: DriverDescriptor { DriverDescriptor(id: "test.paced", version: "0", summary: "", kind: .timeTagger, properties: []) }
    let blocks: Int, interval: Duration, stallAfter: Int?
    init(blocks: Int, interval: Duration, stallAfter: Int? = nil) {
        self.blocks = blocks
        self.interval = interval
        self.stallAfter = stallAfter
    }
    func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        for b in 0..<blocks {
            if b == stallAfter { try await Task.sleep(for: .seconds(30)) }
            try await Task.sleep(for: interval)
            try await deliver(TagBlock(timestamps: [Int64(b) * 1000], channels: [1]))
        }
        return AcquisitionInterval(startPs: 0, stopPs: picoseconds(duration), tags: blocks)
    }
}

@Suite struct AcquisitionDeadlineTests {
    func run(_ tagger: PacedTagger) async throws -> RunStop {
        let text = """
            herald: 1
            name: paced
            devices:
              tagger: {driver: mock.timetagger, timeout: 200 ms}
            steps:
              - acquire: {device: tagger, duration: 100 ms}
            """
        let compiled = try Herald.compiler(registry: Herald.descriptorRegistry).compile(text: text, file: "paced.yaml")
        let engine = RunEngine(plan: compiled.plan, devices: ["tagger": tagger], clock: ContinuousClock(), sinks: [])
        return await engine.run(
            start: RunStart(
                runID: UUID(), plan: compiled.plan, devices: [], seed: 1, mock: true, startedAt: Date(), heraldVersion: Herald.version))
    }

    /// A tagger that keeps delivering is alive, however long it takes (here 10 × 60 ms
    /// against a 100 ms acquisition and a 200 ms timeout).
    @Test func aTaggerThatKeepsDeliveringIsNotTimedOut() async throws {
        let stop = try await run(PacedTagger(blocks: 10, interval: .milliseconds(60)))
        #expect(stop.status == .success, "\(stop.reason ?? "")")
        #expect(stop.tagCount == 10)
    }

    /// One that stops delivering fails with a timeout that says so, keeping what it delivered.
    @Test func aTaggerThatStopsDeliveringTimesOut() async throws {
        let stop = try await run(PacedTagger(blocks: 10, interval: .milliseconds(60), stallAfter: 3))
        #expect(stop.status == .failed)
        #expect(stop.failure == .device("tagger", .timeout), "\(stop.reason ?? "")")
        #expect(stop.reason?.contains("delivered nothing for 0.2 seconds") == true, "says it stalled: \(stop.reason ?? "")")
        #expect(stop.tagCount == 3)
    }
}

/// Delivers `blocks` blocks of `size` tags as fast as the engine takes them, noting after
/// each how many tags it has handed on.
final class FloodTagger: InertTestTagger, @unchecked Sendable {
    var descriptor: DriverDescriptor { DriverDescriptor(id: "test.flood", version: "0", summary: "", kind: .timeTagger, properties: []) }
    let blocks: Int, size: Int
    let delivered = Mutex(0)
    init(blocks: Int, size: Int) {
        self.blocks = blocks
        self.size = size
    }
    func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        let channels = [UInt8](repeating: 1, count: size)
        for b in 0..<blocks {
            let t0 = Int64(b * size)
            try await deliver(TagBlock(timestamps: (0..<Int64(size)).map { t0 + $0 }, channels: channels))
            delivered.withLock { $0 += size }
        }
        return AcquisitionInterval(startPs: 0, stopPs: picoseconds(duration), tags: blocks * size)
    }
}

/// A sink slower than the tagger (a slow disk): it records how far the tagger got ahead.
final class SlowSink: RunEventSink {
    let tagger: FloodTagger
    let handled = Mutex(0), maxAhead = Mutex(0)
    init(_ tagger: FloodTagger) { self.tagger = tagger }
    func handle(_ event: RunEvent) async throws {
        guard case .tags(_, let block) = event else { return }
        try await Task.sleep(for: .milliseconds(5))
        let done = handled.withLock { $0 += block.count; return $0 }
        let ahead = tagger.delivered.withLock { $0 } - done
        maxAhead.withLock { $0 = max($0, ahead) }
    }
}

@Suite struct RecorderBackpressureTests {
    /// 48 blocks offered faster than a 5 ms-per-block sink takes them: the tagger waits once
    /// the backlog limit (here 8 blocks' worth) is on its way, so memory stays bounded, and
    /// every tag arrives.
    @Test func aTaggerFasterThanTheSinkIsHeldAtTheBudget() async throws {
        let text = """
            herald: 1
            name: flood
            devices:
              tagger: {driver: mock.timetagger}
            steps:
              - acquire: {device: tagger, duration: 100 ms}
            """
        let compiled = try Herald.compiler(registry: Herald.descriptorRegistry).compile(text: text, file: "flood.yaml")
        let tagger = FloodTagger(blocks: 48, size: 1000)
        let sink = SlowSink(tagger)
        let engine = RunEngine(
            plan: compiled.plan, devices: ["tagger": tagger], clock: ContinuousClock(), sinks: [sink], sinkBacklogTags: 8000)
        let stop = await engine.run(
            start: RunStart(
                runID: UUID(), plan: compiled.plan, devices: [], seed: 1, mock: true, startedAt: Date(), heraldVersion: Herald.version))
        #expect(stop.status == .success, "\(stop.reason ?? "")")
        #expect(sink.handled.withLock { $0 } == 48_000)
        // At most the limit plus the block in hand; unbounded, the tagger would get ~45 blocks ahead.
        let ahead = sink.maxAhead.withLock { $0 }
        #expect(ahead <= 9000, "tagger got \(ahead) tags ahead of the sink")
        #expect(ahead >= 4000, "the sink was not slower than the tagger (\(ahead) ahead): the test tests nothing")
    }
}
