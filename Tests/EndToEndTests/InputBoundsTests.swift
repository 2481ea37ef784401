import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import Testing

/// Inputs that crashed, leaked or misled before: each now gets a clear refusal at its place.
@Suite struct InputBoundsTests {
    func validate(_ script: String, in dir: URL, name: String = "s.yaml", _ extra: [String] = []) async throws -> ProcessResult {
        let path = dir.appendingPathComponent(name).path
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        return try await runProcess(Paths.herald.path, ["validate", path] + extra)
    }

    static let small = """
        herald: 1
        simulation: {faults: [FAULT]}
        devices:
          pump: {driver: mock.laser}
          tagger: {driver: mock.timetagger}
        steps:
          - set: {pump.power: 10 mW, pump.enabled: true}
          - acquire: {device: tagger, duration: 10 ms}
        """

    /// A fault time past what lab picoseconds can hold, and a tagger-only fault on a laser,
    /// are refused by validate, at the fault's line, and by --fault on run.
    @Test func faultsOutOfRangeOrOnTheWrongDeviceAreRefused() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let late = try await validate(Self.small.replacingOccurrences(of: "FAULT", with: "tagger stall at 1e7 s"), in: dir)
        #expect(late.status == 65 && late.stderr.contains("s.yaml:2:") && late.stderr.contains("beyond 10⁶ s"), "\(late.stderr)")
        let pump = try await validate(Self.small.replacingOccurrences(of: "FAULT", with: "pump overflow"), in: dir)
        #expect(pump.status == 65 && pump.stderr.contains("a overflow fault is a time tagger's"), "\(pump.stderr)")
        let script = dir.appendingPathComponent("ok.yaml").path
        try Self.small.replacingOccurrences(of: "simulation: {faults: [FAULT]}\n", with: "").write(toFile: script, atomically: true, encoding: .utf8)
        let run = try await runProcess(Paths.herald.path, ["run", script, "--mock", "--fault", "tagger stall at 1e7 s", "--out", dir.appendingPathComponent("x.h5").path])
        #expect(run.status != 0 && run.stderr.contains("beyond 10⁶ s"), "\(run.stderr)")
        #expect(!run.stderr.contains("crashed"))
    }

    /// include: reads only below the script's folder (or an --include-dir), refusing before
    /// anything is read, so no line of the other file appears; what it did include is stored.
    @Test func includesAreConfinedAndRecorded() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let secret = dir.appendingPathComponent("secret.yaml")
        try "sequences: {}\nTOP-SECRET-LINE: 1\n".write(to: secret, atomically: true, encoding: .utf8)
        let inner = dir.appendingPathComponent("lab")
        try FileManager.default.createDirectory(at: inner, withIntermediateDirectories: true)
        let body = Self.small.replacingOccurrences(of: "simulation: {faults: [FAULT]}\n", with: "")
        for target in ["../secret.yaml", secret.path, "/etc/passwd"] {
            let r = try await validate(body.replacingOccurrences(of: "herald: 1\n", with: "herald: 1\ninclude: \(target)\n"), in: inner)
            #expect(r.status == 65 && r.stderr.contains("is outside the script's folder"), "\(target): \(r.stderr)")
            #expect(!r.stderr.contains("TOP-SECRET-LINE") && !r.stderr.contains("root:"), "\(r.stderr)")
        }
        // Allowed with --include-dir; a sequence file inside the folder is included and recorded.
        let allowed = try await validate(
            body.replacingOccurrences(of: "herald: 1\n", with: "herald: 1\ninclude: ../secret.yaml\n"), in: inner, ["--include-dir", dir.path])
        #expect(!allowed.stderr.contains("outside the script's folder"), "\(allowed.stderr)")
        let sequences = inner.appendingPathComponent("seq.yaml")
        try "sequences:\n  on: [{set: {pump.enabled: true}}]\n".write(to: sequences, atomically: true, encoding: .utf8)
        let script = inner.appendingPathComponent("main.yaml").path
        try body.replacingOccurrences(of: "herald: 1\n", with: "herald: 1\ninclude: seq.yaml\n").write(toFile: script, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("run.h5").path
        let run = try await runProcess(Paths.herald.path, ["run", script, "--mock", "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        let file = try await probe(out, "g = f['user/herald/includes']\nprint(json.dumps({'path': list(g['path'].asstr()[:]), 'text': list(g['text'].asstr()[:])}))")
        #expect((file["path"] as? [String]) == [inner.path + "/seq.yaml"] || (file["path"] as? [String])?.first?.hasSuffix("seq.yaml") == true, "\(file)")
        #expect((file["text"] as? [String])?.first?.contains("pump.enabled: true") == true)
    }

    /// Accidentals that reach the counts leave no signal: an error, not intensity 0.
    @Test func accidentalsAboveTheCountsAreAnError() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var csv = "setting,counts,duration_s,singles_a,singles_b,window_ns\n"
        for a in ["H", "V", "D", "R"] { for b in ["H", "V", "D", "R"] { csv += "\(a)\(b),10,1,1000000,1000000,100\n" } }
        let path = dir.appendingPathComponent("bg.csv").path
        try csv.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try await runProcess(Paths.herald.path, ["tomography", path])
        #expect(r.status == 65 && r.stderr.contains("accidental coincidences") && r.stderr.contains("no signal is left"), "\(r.stdout)\(r.stderr)")
    }

    /// An overflow fault shows with the tagger's default buffer (it did nothing before: the
    /// tags were bit-identical to a run without it).
    @Test func anOverflowFaultShowsWithTheDefaultBuffer() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = dir.appendingPathComponent("o.yaml").path
        // 300 ms: the tagger simulates 100 ms chunks and a fault applies from the next chunk on.
        try Self.small.replacingOccurrences(of: "simulation: {faults: [FAULT]}", with: "simulation: {pair_rate: 2 MHz}")
            .replacingOccurrences(of: "duration: 10 ms", with: "duration: 300 ms")
            .write(toFile: script, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("o.h5").path
        let r = try await runProcess(Paths.herald.path, ["run", script, "--mock", "--seed", "2", "--fault", "tagger overflow at 1 ms", "--out", out])
        #expect(r.status == 0, "\(r.stderr)")
        let file = try await probe(out, "print(json.dumps({'lost': len(f['user/herald/lost/start_ps'])}))")
        #expect((file["lost"] as? Int ?? 0) > 0, "no overflow interval recorded: \(file)")
    }

    /// A failed import (here: the disk fills) leaves neither the output nor a partial file.
    @Test(.enabled(if: isRoot, "mounts a tmpfs"))
    func aFailedImportLeavesNothing() async throws {
        let mount = try ScratchMount(megabytes: 1)
        defer { mount.unmount() }
        let out = mount.dir.appendingPathComponent("big.h5").path
        let source = TimeTagFileTests.samples.appendingPathComponent("picoharp/v30_t2.ptu").path
        let r = try await runProcess(Paths.herald.path, ["import", source, "--out", out])
        #expect(r.status != 0)
        let left = try FileManager.default.contentsOfDirectory(atPath: mount.dir.path)
        #expect(left.isEmpty, "left behind: \(left)")
    }
}

@Suite struct DamagedRunFileTests {
    /// Half the timestamps negated (a damaged or hand-edited file): the recount refuses it,
    /// naming the element, instead of printing a tomography of the wrong stretches.
    @Test func aRecountRefusesTagsOutOfTimeOrder() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("run.h5").path
        let run = try await runProcess(
            Paths.herald.path,
            ["run", Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path, "--mock", "--seed", "2",
             "--set", "integration=20ms", "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        let negate = try await runProcess(
            Paths.python,
            ["-c", "import h5py, sys\nf = h5py.File(sys.argv[1], 'r+')\nt = f['photon_data/timestamps']\nn = len(t)\nt[n//2:] = -t[n//2:]\n", out])
        #expect(negate.status == 0, "\(negate.stderr)")
        let r = try await runProcess(Paths.herald.path, ["analyze", out, "--window", "2ns"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("out of time order") && r.stderr.contains("photon_data/timestamps"), "\(r.stdout)\(r.stderr)")
    }
}

extension DamagedRunFileTests {
    /// A read that libhdf5 never returns from (1.10 loops on some damaged object headers; a
    /// pipe where a file should be never answers) ends the command with an error naming the
    /// call and the file, exit 74, after HERALD_READ_LIMIT_S seconds: not a hang.
    @Test(arguments: ["analyze", "recover", "calibrate-clocks"])
    func aReadThatNeverReturnsIsAnErrorNamingTheFile(command: String) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let fifo = dir.appendingPathComponent("never.h5").path
        #expect(mkfifo(fifo, 0o600) == 0)
        // The watchdog's limit is a second; `timeout` only guards the suite if it fails.
        let r = try await runProcess("timeout", ["60", "env", "HERALD_READ_LIMIT_S=1", Paths.herald.path, command, fifo])
        // Read-only opens wait on the pipe forever: the watchdog ends them. `recover` opens it
        // for writing too, which a pipe answers at once, and HDF5 then refuses it.
        if command == "recover" {
            #expect(r.status == 1 && r.stderr.contains(fifo) && r.stderr.contains("cannot open this file"), "\(r.stderr)")
        } else {
            #expect(r.status == 74, "\(command): exit \(r.status): \(r.stderr)")
            #expect(r.stderr.contains("H5Fopen") && r.stderr.contains(fifo) && r.stderr.contains("has not returned"), "\(r.stderr)")
        }
    }

    /// A header tag with an empty name (seen only in damaged files) no longer fails the import
    /// with "H5Dcreate2 failed for '/user/picoquant/header/'": its value is kept under a name
    /// that gives its byte offset.
    @Test func anEmptyTagNameIsKeptUnderItsOffset() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes = [UInt8](try Data(contentsOf: TimeTagFileTests.samples.appendingPathComponent("hydraharp/v20_t3.ptu")))
        // The first tag starts after the 16-byte preamble; its name is the next 32 bytes.
        for i in 16..<48 { bytes[i] = 0 }
        let damaged = dir.appendingPathComponent("empty-name.ptu")
        try Data(bytes).write(to: damaged)
        let out = dir.appendingPathComponent("imported.h5").path
        let r = try await runProcess(Paths.herald.path, ["import", damaged.path, "--out", out])
        #expect(r.status == 0, "\(r.stderr)")
        let file = try await probe(out, "print(json.dumps({'kept': 'unnamed_tag_at_byte_16' in f['user/picoquant/header']}))")
        #expect(file["kept"] as? Bool == true)
    }
}
