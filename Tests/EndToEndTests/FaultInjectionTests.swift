import Foundation
import Testing

/// Each injected fault kind, end to end through `herald run --fault`: the exit status, the
/// reason naming the device, the safe state in the file's log, and the tags recorded
/// before the fault still in the file (checked by h5py).
@Suite struct FaultInjectionTests {
    /// A short tomography-style run: pump on, 6 settings × 100 ms, interlock on the pump lock.
    static let script = """
        herald: 1
        name: faults
        simulation: {pair_rate: 400 kHz, efficiency: 0.25, dark_rate: 200 Hz}
        devices:
          pump: {driver: mock.laser, timeout: 300 ms}
          shutter: {driver: mock.shutter, timeout: 300 ms}
          hwp_a: {driver: mock.rotator, settings: {arm: a, plate: hwp}, timeout: 300 ms}
          tagger: {driver: mock.timetagger, settings: {buffer: 20000}, timeout: 300 ms}
        interlocks:
          - {name: lock, require: pump.locked == true, timeout: 1 s}
        steps:
          - set: {pump.power: 10 mW, pump.enabled: true, shutter.open: true}
          - sweep:
              name: fringe
              set: hwp_a.angle
              range: {from: 0 deg, to: 56.25 deg, step: 11.25 deg}
              steps:
                - acquire: {device: tagger, duration: 100 ms}
        """

    struct Outcome {
        var exitCode: Int32
        var report: [String: Any]
        var stderr: String
        /// From the file, read by h5py.
        var fileStatus: String
        var fileTags: Int
        var log: [String]
        var lost: Int
    }

    func run(faults: [String]) async throws -> Outcome {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let scriptPath = dir.appendingPathComponent("faults.yaml").path
        try Self.script.write(toFile: scriptPath, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("run.h5").path
        let r = try await runProcess(
            Paths.herald.path, ["run", scriptPath, "--seed", "4", "--out", out, "--json"] + faults.flatMap { ["--fault", $0] })
        let report = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
        let probe = """
            import h5py, json, sys
            f = h5py.File(sys.argv[1], "r")
            h = f["user/herald"]
            print(json.dumps({
                "status": str(h["run"].attrs["exit_status"]),
                "tags": int(len(f["photon_data/timestamps"])),
                "log": [s.decode() if isinstance(s, bytes) else str(s) for s in h["log"][()]],
                "lost": int(len(h["lost/start_ps"])) if "lost" in h else 0,
            }))
            """
        let p = try await runProcess(Paths.python, ["-c", probe, out])
        #expect(p.status == 0, "h5py could not read the file: \(p.stderr)")
        let file = (try? JSONSerialization.jsonObject(with: Data(p.stdout.utf8)) as? [String: Any]) ?? [:]
        return Outcome(
            exitCode: r.status, report: report, stderr: r.stderr, fileStatus: file["status"] as? String ?? "?",
            fileTags: file["tags"] as? Int ?? -1, log: file["log"] as? [String] ?? [], lost: file["lost"] as? Int ?? -1)
    }

    func expectFailedSafely(_ o: Outcome, reasonContains: [String], keptTags: Bool = true) {
        #expect(o.exitCode == 1, "\(o.stderr)")
        #expect(o.report["status"] as? String == "failed")
        let reason = o.report["reason"] as? String ?? ""
        for part in reasonContains { #expect(reason.contains(part), "reason: \(reason)") }
        #expect(o.fileStatus == "failed")
        #expect(o.fileTags == o.report["tags"] as? Int, "the file holds every tag the run counted")
        if keptTags { #expect(o.fileTags > 0, "tags recorded before the fault are kept") }
        #expect(o.log.contains { $0.contains("safe state: pump (emission off)") }, "log: \(o.log)")
        #expect(o.log.contains { $0.contains("safe state: shutter") }, "log: \(o.log)")
    }

    @Test("disconnect: the run fails within the acquisition, naming the device; data kept; laser off")
    func disconnect() async throws {
        let o = try await run(faults: ["tagger disconnect at 250 ms"])
        expectFailedSafely(o, reasonContains: ["gone at 0.25 s"])
        let failure = o.report["failure"] as? [String: Any]
        #expect(failure?["kind"] as? String == "device" && failure?["device"] as? String == "tagger"
            && failure?["error"] as? String == "disconnected", "\(String(describing: failure))")
    }

    @Test("a laser that vanishes cannot be switched off by software: the log says so")
    func laserDisconnect() async throws {
        let o = try await run(faults: ["pump disconnect at 250 ms"])
        #expect(o.exitCode == 1)
        let failure = o.report["failure"] as? [String: Any]
        #expect(failure?["device"] as? String == "pump" && failure?["error"] as? String == "disconnected", "\(String(describing: failure))")
        #expect(o.log.contains { $0.contains("safe state FAILED: pump") }, "log: \(o.log)")
        #expect(o.log.contains { $0.contains("safe state: shutter") }, "the shutter still closes: \(o.log)")
        #expect(o.fileTags == o.report["tags"] as? Int)
    }

    @Test("timeout: a device that stops answering fails the run after its timeout and retries")
    func timeout() async throws {
        let o = try await run(faults: ["hwp_a timeout at 150 ms"])
        expectFailedSafely(o, reasonContains: ["'hwp_a'", "timed out", "set angle"])
        // The retry is logged before the run fails (no wall-clock bound: a simulated
        // instrument's timeout elapses on the lab's clock).
        #expect(o.stderr.contains("retry 1 of 1"), "\(o.stderr)")
    }

    @Test("garbage: a wrong-typed reply is retried, then fails the run as garbage")
    func garbageReply() async throws {
        let o = try await run(faults: ["pump garbage at 250 ms"])
        expectFailedSafely(o, reasonContains: ["'pump'", "answered garbage", "get locked"])
    }

    @Test("garbage tags: a tagger's out-of-order data fails the run before it is counted")
    func garbageTags() async throws {
        let o = try await run(faults: ["tagger garbage at 250 ms"])
        expectFailedSafely(o, reasonContains: ["'tagger'", "out of time order"])
    }

    @Test("stall: a tagger that stops delivering fails after its timeout; tags before are kept")
    func stall() async throws {
        let o = try await run(faults: ["tagger stall at 250 ms"])
        expectFailedSafely(o, reasonContains: ["'tagger'", "timed out", "delivered nothing"])
    }

    @Test("overflow: the run completes; the lost intervals are in the file")
    func overflow() async throws {
        let o = try await run(faults: ["tagger overflow at 100 ms"])
        #expect(o.exitCode == 0, "\(o.stderr)")
        #expect(o.fileStatus == "success")
        #expect(o.lost > 0, "the overflow intervals are recorded")
        #expect(o.fileTags == o.report["tags"] as? Int)
    }

    @Test("a fault naming an unknown device or kind is refused before the run")
    func badFaults() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bad.yaml").path
        let script = Self.script.replacingOccurrences(
            of: "simulation: {pair_rate: 400 kHz, efficiency: 0.25, dark_rate: 200 Hz}",
            with: "simulation: {faults: [laser disconnect at 1 s, tagger explode]}")
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try await runProcess(Paths.herald.path, ["validate", path])
        #expect(r.status == 65)
        #expect(r.stderr.contains("\(path):3:"), "\(r.stderr)")
        #expect(r.stderr.contains("unknown device 'laser'"))
        #expect(r.stderr.contains("unknown fault kind 'explode'"))
        let cli = try await runProcess(Paths.herald.path, ["run", path, "--fault", "tagger melt"])
        #expect(cli.status != 0 && cli.stderr.contains("melt"))
    }
}
