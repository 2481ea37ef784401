import Foundation
import HeraldCore
import HeraldRunner
import HeraldRunReader
import HeraldStore
import Testing

/// A long single acquisition at a modest rate: flushes inside it come only from the
/// recorder's clock, not from finished points.
let longPointScript = """
    herald: 1
    name: long-point
    simulation: {pair_rate: 50 kHz, dark_rate: 100 Hz}
    devices:
      pump: {driver: mock.laser}
      tagger: {driver: mock.timetagger}
    steps:
      - set: {pump.power: 10 mW, pump.enabled: true}
      - wait: 500 ms
      - acquire: {device: tagger, duration: 3 s, name: long}
    """

/// Pump power outside, a waveplate angle inside, counted per inner point.
let nestedSweepScript = """
    herald: 1
    name: nested
    simulation: {pair_rate: 100 kHz, dark_rate: 100 Hz}
    devices:
      pump: {driver: mock.laser}
      hwp_a: {driver: mock.rotator, settings: {arm: a, plate: hwp}}
      tagger: {driver: mock.timetagger}
    steps:
      - set: {pump.power: 5 mW, pump.enabled: true}
      - sweep:
          name: power
          set: pump.power
          values: [5 mW, 10 mW, 15 mW]
          steps:
            - sweep:
                name: angle
                set: hwp_a.angle
                values: [0 deg, 22.5 deg, 45 deg]
                steps:
                  - acquire: {device: tagger, duration: 60 ms}
      - rates: {sweep: angle, pairs: [[1, 3]], window: 1 ns}
    """

/// Starts `herald run … --realtime` on a script and waits until its file exists.
func startRealtimeRun(_ script: String, out: String, _ extra: [String] = []) async throws -> Process {
    let p = Process()
    p.executableURL = Paths.herald
    p.arguments = ["run", script, "--mock", "--realtime", "--seed", "1", "--out", out] + extra
    p.standardOutput = FileHandle.nullDevice
    p.standardError = FileHandle.nullDevice
    try p.run()
    // Event-driven: the file appears when the run starts; the bound only stops a broken build hanging.
    for _ in 0..<3000 where !FileManager.default.fileExists(atPath: out) && p.isRunning {
        try await Task.sleep(for: .milliseconds(10))
    }
    return p
}

/// Reads `pipe` to its end and waits for `p`, on a thread of its own: a child that takes its
/// time to exit must not hold one of the test process's two pool threads meanwhile (that
/// starves every other suite's virtual clock and polling loop).
func readToEndAndWait(_ p: Process, _ pipe: Pipe) async -> String {
    await withCheckedContinuation { (c: CheckedContinuation<String, Never>) in
        Thread {
            let data = pipe.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            c.resume(returning: String(decoding: data, as: UTF8.self))
        }.start()
    }
}

func waitForExit(_ p: Process) async {
    await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
        Thread {
            p.waitUntilExit()
            c.resume()
        }.start()
    }
}

/// Tests that mount a filesystem need root (CI runs as root).
let isRoot = geteuid() == 0

/// A small tmpfs mounted for one test and unmounted after it.
struct ScratchMount {
    let dir: URL

    init(megabytes: Int, readOnly: Bool = false) throws {
        dir = try Paths.temporaryDirectory()
        let r = try runProcessBlocking("mount", ["-t", "tmpfs", "-o", "size=\(megabytes)m\(readOnly ? ",ro" : "")", "tmpfs", dir.path])
        guard r.status == 0 else { throw StoreError(path: dir.path, "mount failed: \(r.stderr)") }
    }

    func unmount() {
        _ = try? runProcessBlocking("umount", ["-l", dir.path])
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite(.serialized) struct DurabilityTests {
    func python(_ args: [String]) async throws -> ProcessResult {
        try await runProcessOffPool(Paths.python, [Paths.root.appendingPathComponent("Tests/python/store_checks.py").path] + args)
    }

    /// 20 kills of raw-tag realtime runs (10 in a long single acquisition, where only the
    /// recorder's clock flushes, 10 across a tomography sweep) and 20 of `--no-raw-tags` runs:
    /// each recovered file is a prefix of an uninterrupted run with the same seed (tags bit
    /// for bit, counts row for row), and its own flush log shows the kill came at most 1 s
    /// after the last flush.
    @Test(arguments: [
        ("long", 10, [String]()), ("tomography", 10, ["--set", "integration=40ms"]),
        ("tomography", 20, ["--set", "integration=40ms", "--no-raw-tags"]),
        // An inner sweep repeats its (sweep, point) for every outer point: its counts must
        // still come back row for row.
        ("nested", 6, ["--no-raw-tags"]),
    ])
    func killedRunsRecoverAPrefixOfTheUninterruptedRun(script: String, kills: Int, options: [String]) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var path = demoScript
        if script == "long" || script == "nested" {
            path = dir.appendingPathComponent(script + ".yaml").path
            try (script == "long" ? longPointScript : nestedSweepScript).write(toFile: path, atomically: true, encoding: .utf8)
        }
        let r = try await python(["kill-trials", Paths.herald.path, path, dir.path, "\(kills)"] + options)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.hasPrefix("ok:"), "\(r.stdout)")
    }

    /// A disk that fills mid-run: the run stops, says "disk full" with the free space, puts
    /// the pump in its safe state and closes a file that h5py and phconvert read, with every
    /// tag recorded before the stop (the file's tag_count equals its timestamps).
    @Test(.enabled(if: isRoot, "mounts a tmpfs"))
    func diskFullStopsTheRunAndKeepsTheFile() async throws {
        let mount = try ScratchMount(megabytes: 3)
        defer { mount.unmount() }
        let out = mount.dir.appendingPathComponent("full.h5").path
        let r = try await runProcessOffPool(Paths.herald.path, ["run", demoScript, "--mock", "--seed", "7", "--out", out])
        #expect(r.status == 1, "\(r.stderr)")
        #expect(r.stdout.contains("disk full") && r.stdout.contains("free on its filesystem"), "\(r.stdout)")
        #expect(!r.stderr.contains("crashed"))
        let file = try await probe(
            out,
            """
            r = f['user/herald/run'].attrs
            print(json.dumps({'status': r['exit_status'], 'tags': len(f['photon_data/timestamps']), 'tag_count': int(r['tag_count']),
                              'log': list(f['user/herald/log'].asstr()[:]), 'points': len(f['user/herald/sweeps/tomography/index'])}))
            """)
        #expect(file["status"] as? String == "failed")
        #expect((file["tags"] as? Int ?? 0) > 100_000)
        #expect(file["tags"] as? Int == file["tag_count"] as? Int)
        #expect((file["points"] as? Int ?? 0) >= 1)
        #expect((file["log"] as? [String])?.contains { $0.hasPrefix("safe state: pump (power=0.0 W, emission off)") } == true)
        #expect(!FileManager.default.fileExists(atPath: out + ".lock"))
    }

    /// With no margin HDF5's own write fails on the full disk: the recorder releases the
    /// space its lock file reserved and still closes the file, or abandons it for recover;
    /// either way the process does not crash and the tags flushed before are readable.
    @Test(.enabled(if: isRoot, "mounts a tmpfs"))
    func aWriteThatFailsOnAFullDiskNeverCrashesAndLosesNoFlushedTag() async throws {
        let mount = try ScratchMount(megabytes: 3)
        defer { mount.unmount() }
        let out = mount.dir.appendingPathComponent("full.h5").path
        var request = Herald.RunRequest(scriptPath: demoScript, mock: true, outPath: out, seed: 7)
        request.diskMargin = -1  // no early stop: HDF5's write itself hits ENOSPC
        let report = try await Herald.run(request)
        #expect(report.status == .failed)
        #expect(report.failure == .store(.diskFull), "\(report.reason ?? "")")
        let check = try await runProcessOffPool(Paths.python, ["-c", "import h5py, sys; h5py.File(sys.argv[1], 'r')", out])
        if check.status != 0 {
            // Abandoned: recover makes it readable, as after a crash.
            let rec = try await runProcessOffPool(Paths.herald.path, ["recover", out])
            #expect(rec.status == 0, "\(rec.stderr)")
        }
        let file = try await probe(out, "print(json.dumps({'tags': len(f['photon_data/timestamps'])}))")
        #expect((file["tags"] as? Int ?? 0) > 0)
    }

    /// A second run with `--overwrite`, `herald recover` and a recount refuse a file a live run is
    /// writing, naming the process; the live run then ends with a sound file.
    @Test func aLiveRunsFileIsLockedAgainstOverwriteAndRecover() async throws {
        let (dir, script, out) = try scriptFixture(longPointScript)
        defer { try? FileManager.default.removeItem(at: dir) }
        let live = try await startRealtimeRun(script, out: out)
        let second = try await runProcessOffPool(Paths.herald.path, ["run", script, "--mock", "--out", out, "--overwrite"])
        #expect(second.status == 1)
        #expect(second.stderr.contains("is in use by process \(live.processIdentifier) (herald run)"), "\(second.stderr)")
        let recover = try await runProcessOffPool(Paths.herald.path, ["recover", out])
        #expect(recover.status != 0)
        #expect(recover.stderr.contains("is in use by process \(live.processIdentifier)"), "\(recover.stderr)")
        let recount = try await runProcessOffPool(Paths.herald.path, ["analyze", out, "--window", "2ns"])
        #expect(recount.status != 0)
        #expect(recount.stderr.contains("is in use by process \(live.processIdentifier)"), "\(recount.stderr)")
        await waitForExit(live)
        #expect(live.terminationStatus == 0)
        let file = try await probe(out, "print(json.dumps({'status': f['user/herald/run'].attrs['exit_status']}))")
        #expect(file["status"] as? String == "success")
        #expect(!FileManager.default.fileExists(atPath: out + ".lock"))
        // Once the writer is gone the lock is free: an overwrite goes ahead.
        let third = try await runProcessOffPool(Paths.herald.path, ["run", script, "--mock", "--out", out, "--overwrite"])
        #expect(third.status == 0, "\(third.stderr)")
    }

    /// Every reason a new file cannot be made is named, with what to do.
    @Test func creationErrorsSayWhy() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let existing = dir.appendingPathComponent("exists.h5").path
        try Data().write(to: URL(fileURLWithPath: existing))
        let exists = try await runProcessOffPool(Paths.herald.path, ["run", demoScript, "--mock", "--out", existing])
        #expect(exists.status == 1 && exists.stderr.contains("already exists; pass --overwrite"), "\(exists.stderr)")
        let isDir = try await runProcessOffPool(Paths.herald.path, ["run", demoScript, "--mock", "--out", dir.path])
        #expect(isDir.status == 1 && isDir.stderr.contains("is a directory"), "\(isDir.stderr)")
        let underFile = try await runProcessOffPool(Paths.herald.path, ["run", demoScript, "--mock", "--out", existing + "/x.h5"])
        #expect(underFile.status == 1 && underFile.stderr.contains("not a directory"), "\(underFile.stderr)")
        #expect(!exists.stderr.contains("H5Fcreate"))
        // Callers branch on the kind, which the message is written from.
        func kind(_ path: String) -> StoreError.Kind? {
            do { try OutputPath.checkCreatable(path, overwrite: false) } catch { return error.kind }
            return nil
        }
        #expect(kind(existing) == .exists)
        #expect(kind(dir.path) == .notAFile)
        #expect(kind(existing + "/x.h5") == .notAFile)
        #expect(kind(dir.appendingPathComponent("new.h5").path) == nil)
    }

    @Test(.enabled(if: isRoot, "mounts a tmpfs"))
    func aReadOnlyFilesystemIsNamed() async throws {
        let mount = try ScratchMount(megabytes: 1, readOnly: true)
        defer { mount.unmount() }
        let r = try await runProcessOffPool(
            Paths.herald.path, ["run", demoScript, "--mock", "--out", mount.dir.appendingPathComponent("x.h5").path])
        #expect(r.status == 1 && r.stderr.contains("read-only filesystem"), "\(r.stderr)")
        #expect(throws: StoreError.self) { try OutputPath.checkCreatable(mount.dir.appendingPathComponent("x.h5").path, overwrite: false) }
        do { try OutputPath.checkCreatable(mount.dir.appendingPathComponent("x.h5").path, overwrite: false) } catch {
            #expect(error.kind == .readOnly)
        }
    }

    /// `name: ../x` must not steer the default output out of `out/`.
    @Test func scriptNamesMakeSafeFileNames() {
        #expect(Herald.safeFileName("../../etc/x") == "_._.._etc_x")
        #expect(Herald.safeFileName("bell tomography/2") == "bell_tomography_2")
        #expect(Herald.safeFileName("..") == "_.")
        #expect(Herald.safeFileName("") == "run")
        #expect(!Herald.safeFileName("a/../../b").contains("/"))
    }
}

/// One minute of acquisition: a stop signal always arrives mid-run.
let minuteScript = """
    herald: 1
    name: minute
    simulation: {pair_rate: 20 kHz, dark_rate: 100 Hz}
    devices:
      pump: {driver: mock.laser}
      tagger: {driver: mock.timetagger}
    steps:
      - set: {pump.power: 10 mW, pump.enabled: true}
      - acquire: {device: tagger, duration: 60 s}
    """

@Suite struct StopSignalTests {
    /// Each signal that would otherwise kill the process (a hang-up from a dropped SSH
    /// session, Ctrl-\) gets the same safe stop as SIGTERM: exit 130, the pump off, the
    /// file closed as "aborted" with the signal named, no crash report.
    @Test(arguments: [SIGTERM, SIGINT, SIGHUP, SIGQUIT])
    func stopSignalsRunTheSafeStateAndCloseTheFile(signal: Int32) async throws {
        let (dir, script, out) = try scriptFixture(minuteScript)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = Process()
        p.executableURL = Paths.herald
        p.arguments = ["run", script, "--mock", "--realtime", "--seed", "1", "--out", out]
        let err = Pipe()
        p.standardOutput = FileHandle.nullDevice
        p.standardError = err
        try p.run()
        // Signal once tags are flowing: the flush log has grown past the run's first entry.
        for _ in 0..<3000 {
            try await Task.sleep(for: .milliseconds(20))
            if FileManager.default.fileExists(atPath: out),
                let f = try? await runProcessOffPool(
                    Paths.python,
                    ["-c", "import h5py,sys; f=h5py.File(sys.argv[1],'r',libver='latest',swmr=True); print(len(f['photon_data/timestamps']))", out]),
                Int(f.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0 > 0
            {
                break
            }
        }
        kill(p.processIdentifier, signal)
        let text = await readToEndAndWait(p, err)
        #expect(p.terminationReason == .exit && p.terminationStatus == 130, "\(text)")
        #expect(!text.contains("Program crashed"))
        let file = try await probe(
            out,
            "r = f['user/herald/run'].attrs\nprint(json.dumps({'status': r['exit_status'], 'reason': r['reason'], 'tags': len(f['photon_data/timestamps']), 'log': list(f['user/herald/log'].asstr()[:])}))")
        #expect(file["status"] as? String == "aborted")
        let name = SignalName.of(signal)
        #expect((file["reason"] as? String)?.contains("stopped by \(name)") == true, "\(file["reason"] ?? "")")
        #expect((file["tags"] as? Int ?? 0) > 0)
        #expect((file["log"] as? [String])?.contains { $0.hasPrefix("safe state: pump") } == true)
        // The minute-long acquisition was cut, not waited out: exit 130 above (a run that
        // completed would exit 0), and the file's last tag is far short of the minute, by
        // its own clock rather than a wall-clock deadline that a loaded machine could miss.
        let last = try await probe(out, "t = f['photon_data/timestamps']\nprint(json.dumps({'last': int(t[-1]) if len(t) else 0}))")
        #expect((last["last"] as? Int ?? Int.max) < 50_000_000_000_000, "last tag at \(last["last"] ?? "?") ps")
    }
}

extension StopSignalTests {
    /// SIGPIPE (the reader of the output went away) neither kills the run nor stops it:
    /// it carries on to a normal end with everything recorded.
    @Test func sigpipeDoesNotKillTheRun() async throws {
        let (dir, script, out) = try scriptFixture(longPointScript)
        defer { try? FileManager.default.removeItem(at: dir) }
        let p = try await startRealtimeRun(script, out: out)
        try await Task.sleep(for: .milliseconds(300))
        kill(p.processIdentifier, SIGPIPE)
        await waitForExit(p)
        #expect(p.terminationReason == .exit && p.terminationStatus == 0)
        let file = try await probe(out, "print(json.dumps({'status': f['user/herald/run'].attrs['exit_status']}))")
        #expect(file["status"] as? String == "success")
    }
}

enum SignalName {
    static func of(_ s: Int32) -> String {
        [SIGTERM: "SIGTERM", SIGINT: "SIGINT", SIGHUP: "SIGHUP", SIGPIPE: "SIGPIPE", SIGQUIT: "SIGQUIT"][s] ?? "\(s)"
    }
}
