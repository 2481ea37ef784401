import Foundation
import HeraldCore
import HeraldRunner
import HeraldSequencer
import HeraldRunReader
import HeraldStore
import SimulatedLab
import Testing

/// Behaviours that script validation would otherwise hide: each test builds the plan itself
/// or drives the engine directly, and checks the simulated lab's state, not a log line.
@Suite struct EngineGuardTests {
    /// Compiles `script`, opens its devices on a fresh lab and returns what a run needs.
    func setUp(_ script: String, seed: UInt64 = 1) throws -> (Plan, [String: any Device], SimulatedLab) {
        let compiled = try Herald.compiler(registry: Herald.descriptorRegistry).compile(text: script, file: "guard.yaml")
        let lab = SimulatedLab(parameters: try LabParameters(compiled.simulation), seed: seed)
        let registry = Herald.registry(lab: lab)
        var devices: [String: any Device] = [:]
        for config in compiled.plan.devices {
            guard let entry = registry.entry(config.driver) else { throw DeviceError(device: config.name, .notFound, "no driver") }
            devices[config.name] = try entry.make(config)
        }
        return (compiled.plan, devices, lab)
    }

    func start(_ plan: Plan) -> RunStart {
        RunStart(runID: UUID(), plan: plan, devices: [], seed: 1, mock: true, startedAt: Date(), heraldVersion: Herald.version)
    }

    static let limited = """
        herald: 1
        devices:
          pump: {driver: mock.laser, limits: {power: {max: 20 mW}}}
          tagger: {driver: mock.timetagger}
        steps:
          - set: {pump.power: 10 mW}
          - acquire: {device: tagger, duration: 10 ms}
        """

    /// A value past the script's own limit that reaches the engine without validation (a plan
    /// built by code, a future step kind) is refused before the device call: the laser
    /// itself would take 30 mW (its driver allows 50 mW), so only the engine's re-check
    /// keeps it at 0.
    @Test func theEngineRechecksLimitsBeforeEveryDeviceCall() async throws {
        var (plan, devices, lab) = try setUp(Self.limited)
        guard case .set(var assignments) = plan.steps[0] else { Issue.record("unexpected plan"); return }
        assignments[0].value = .quantity(Quantity(0.030, .power))
        plan.steps[0] = .set(assignments)
        let engine = RunEngine(plan: plan, devices: devices, clock: lab.clock, sinks: [])
        let stop = await engine.run(start: start(plan))
        #expect(stop.status == .failed)
        guard case .step(.refusedByLimits, _) = stop.failure else {
            Issue.record("expected a refusal by limits, got \(String(describing: stop.failure)): \(stop.reason ?? "")")
            return
        }
        #expect(stop.reason?.contains("device 'pump'") == true, "\(stop.reason ?? "")")
        #expect(await lab.pump.power == 0, "the out-of-limit power reached the laser")
    }

    /// An interlock that never clears fails the run after its timeout, on the lab's virtual
    /// clock (no real waiting), with the laser left off.
    @Test(.timeLimit(.minutes(1)))  // a backstop: broken, the run would wait forever
    func anInterlockThatNeverClearsFailsTheRunAfterItsTimeout() async throws {
        let script = """
            herald: 1
            simulation: {lock_time: 1000 s}
            devices:
              pump: {driver: mock.laser}
              tagger: {driver: mock.timetagger}
            interlocks:
              - {name: lock, require: pump.locked == true, timeout: 300 ms}
            steps:
              - set: {pump.power: 10 mW, pump.enabled: true}
              - acquire: {device: tagger, duration: 100 ms}
            """
        let (plan, devices, lab) = try setUp(script)
        let engine = RunEngine(plan: plan, devices: devices, clock: lab.clock, sinks: [])
        let stop = await engine.run(start: start(plan))
        #expect(stop.status == .failed)
        guard case .step(.interlockTimedOut, let location) = stop.failure else {
            Issue.record("expected an interlock timeout, got \(String(describing: stop.failure)): \(stop.reason ?? "")")
            return
        }
        #expect(location?.line == 7, "the interlock's line: \(String(describing: location))")
        #expect(await lab.pump.enabled == false, "the pump must be left off")
        // It waited the 300 ms on the lab's clock, not the 1000 s lock time. (Short on purpose:
        // every poll is a clock sleep, and the test clock's sleep yields through background-
        // priority tasks, which a loaded 2-core pool starves.)
        let waited = Double(lab.nowPs) * 1e-12
        #expect(waited >= 0.3 && waited < 10, "lab time at the stop: \(waited) s")
    }

    /// A run cancelled mid-acquisition (what SIGINT does) leaves the laser off: checked on the
    /// laser's state in the lab, not on a log line.
    @Test func anAbortedRunLeavesTheLaserOff() async throws {
        let script = """
            herald: 1
            devices:
              pump: {driver: mock.laser}
              tagger: {driver: mock.timetagger}
            steps:
              - set: {pump.power: 10 mW, pump.enabled: true}
              - acquire: {device: tagger, duration: 1000 s}
            """
        let (plan, devices, lab) = try setUp(script)
        let engine = RunEngine(plan: plan, devices: devices, clock: lab.clock, sinks: [])
        let run = Task { await engine.run(start: start(plan)) }
        // Cancel once the laser is on and the acquisition has begun (lab time moves).
        while !(await lab.pump.enabled) || lab.nowPs == 0 { await Task.yield() }
        run.cancel()
        let stop = await run.value
        #expect(stop.status == .aborted)
        #expect(await lab.pump.enabled == false, "the aborted run left the laser on")
    }
}

@Suite struct DelaySignEndToEndTests {
    /// Detectors 3 and 4 cabled 20 ns late (the tagger's input delay), compensated in the
    /// script by `delays: {3: -20 ns, 4: -20 ns}`: the counts come back to those of a
    /// tagger without the delay. With the sign wrong anywhere between script and counter,
    /// the pairs sit 40 ns apart and no coincidence is counted.
    @Test func scriptDelaysCompensateCableDelaysEndToEnd() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try String(contentsOf: Paths.root.appendingPathComponent("Experiments/bell-tomography-16.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "duration: 1 s", with: "duration: 50 ms")
        let delayed = demo
            .replacingOccurrences(of: "  - set: {pump.power: 10 mW, pump.enabled: true}", with: "  - set: {pump.power: 10 mW, pump.enabled: true, tagger.delay_3: 20 ns, tagger.delay_4: 20 ns}")
            .replacingOccurrences(of: "      window: 1 ns\n", with: "      window: 1 ns\n      delays: {3: -20 ns, 4: -20 ns}\n")
        #expect(delayed.contains("tagger.delay_3") && delayed.contains("delays: {3:"))
        func fidelity(_ text: String, _ name: String) async throws -> Double? {
            let path = dir.appendingPathComponent(name + ".yaml").path
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            let report = try await Herald.run(.init(scriptPath: path, outPath: dir.appendingPathComponent(name + ".h5").path, seed: 3))
            #expect(report.status == .success, "\(name): \(report.reason ?? "")")
            return report.analyses.first?.values["fidelity"]
        }
        let plain = try #require(try await fidelity(demo, "plain"))
        let compensated = try #require(try await fidelity(delayed, "compensated"))
        // Same seed, same photons, same pairs found: the figures agree closely (the tagger's
        // delay moves tags across chunk edges, so not bit for bit).
        #expect(abs(plain - compensated) < 0.02, "without the delay \(plain), compensated \(compensated)")
        #expect(compensated > 0.85)
    }
}
