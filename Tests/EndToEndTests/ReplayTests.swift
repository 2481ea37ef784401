import Foundation
import HeraldRunner
import HeraldCore
import Testing

/// The replay time tagger: recordings played back through a script, checked against the
/// original run (Herald HDF5 round trip) and against tttrlib (PicoQuant files).
@Suite struct ReplayTests {
    /// A script with one replay tagger (its file from `--set recording=…`) and the given steps.
    static func script(in dir: URL, steps: [String], realtime: Bool = false) throws -> URL {
        let url = dir.appendingPathComponent("replay.yaml")
        let settings = realtime ? "{file: $recording, realtime: true}" : "{file: $recording}"
        try """
            herald: 1
            name: replay-file
            parameters: {recording: none}
            devices:
              tagger: {driver: replay.timetagger, settings: \(settings)}
            steps:
            \(steps.map { "  - " + $0 }.joined(separator: "\n"))
            """.write(to: url, atomically: true, encoding: .utf8)
        return url
    }

    static func h5Arrays(_ path: String) async throws -> String {
        // h5py's view of the tag arrays, summarised so two files can be compared exactly.
        let code = """
            import h5py, hashlib, sys
            f = h5py.File(sys.argv[1], "r")
            t = f["photon_data/timestamps"][:]; d = f["photon_data/detectors"][:]
            print(len(t), hashlib.sha256(t.tobytes()).hexdigest(), hashlib.sha256(d.tobytes()).hexdigest())
            """
        let r = try await runProcess(Paths.python, ["-c", code, path])
        #expect(r.status == 0, "\(r.stderr)")
        return r.stdout
    }

    /// Herald HDF5 → replay → Herald HDF5 gives the same tags, the same counts and the same
    /// state, and the replay skips the gaps in which the original run moved its waveplates.
    @Test func heraldRunRoundTripsThroughReplay() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let original = dir.appendingPathComponent("original.h5").path
        let replayed = dir.appendingPathComponent("replayed.h5").path
        let experiments = Paths.root.appendingPathComponent("Experiments")
        let a = try await Herald.run(
            .init(
                scriptPath: experiments.appendingPathComponent("bell-tomography.yaml").path, mock: true, outPath: original,
                seed: 11, overrides: ["integration": "100 ms"]))
        #expect(a.status == .success, "\(a.reason ?? "")")
        let b = try await Herald.run(
            .init(
                scriptPath: experiments.appendingPathComponent("replay-tomography.yaml").path, mock: false, outPath: replayed,
                seed: 99, overrides: ["integration": "100 ms", "recording": original]))
        #expect(b.status == .success, "\(b.reason ?? "")")
        #expect(a.tags > 100_000 && a.tags == b.tags)
        #expect(try await Self.h5Arrays(original) == Self.h5Arrays(replayed))
        let fa = a.analyses.first?.values["fidelity"], fb = b.analyses.first?.values["fidelity"]
        #expect(fa != nil && fa == fb)

        // A script asking for more than the recording holds fails clearly, keeping what it read.
        let longer = dir.appendingPathComponent("longer.h5").path
        let c = try await Herald.run(
            .init(
                scriptPath: experiments.appendingPathComponent("replay-tomography.yaml").path, mock: false, outPath: longer,
                overrides: ["integration": "150 ms", "recording": original]))
        #expect(c.status == .failed)
        #expect(c.failure == .device("tagger", .rejected), "\(c.reason ?? "")")
        #expect(c.reason?.contains("lasted 0.1 s") == true, "says what the recording holds: \(c.reason ?? "")")
    }

    /// A script that takes a PicoQuant file in three acquisitions gets tttrlib's photons, in
    /// order, on channel + 1; asking past the end delivers the rest and fails with endOfData.
    @Test(arguments: [
        ("hydraharp/v20_t2.ptu", ["2 s", "2 s", "999 ms"], 4_999_000_000_000 as Int64, true),
        ("hydraharp/v20_t3.ptu", ["3 s", "6.5 s"], 9_500_000_000_000, true),
        ("picoharp/v30_t2.ptu", ["5 s", "5 s"], 10_000_000_000_000, false),
    ])
    func picoQuantFileReplaysLikeTttrlib(sample: String, acquisitions: [String], stopPs: Int64, completes: Bool) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = try Self.script(in: dir, steps: acquisitions.map { "acquire: {device: tagger, duration: \($0)}" })
        let source = TimeTagFileTests.samples.appendingPathComponent(sample).path
        let out = dir.appendingPathComponent("run.h5").path
        let report = try await Herald.run(
            .init(scriptPath: script.path, mock: false, outPath: out, overrides: ["recording": source]))
        if completes {
            #expect(report.status == .success, "\(report.reason ?? "")")
        } else {
            // v30_t2's clock (its overflow records) ran to 7.65 s, though the header asked for 60 s.
            #expect(report.status == .failed)
            #expect(report.failure == .device("tagger", .endOfData), "\(report.reason ?? "")")
        }
        let check = try await runProcess(Paths.python, [TimeTagFileTests.checks, "replay", source, out, "\(stopPs)"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.hasPrefix("ok:"))
    }

    @Test func missingOrUnknownRecordingsAreNamed() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = try Self.script(in: dir, steps: ["acquire: {device: tagger, duration: 1 s}"])
        let out = dir.appendingPathComponent("run.h5").path
        await #expect(throws: DeviceError.self) {
            _ = try await Herald.run(.init(scriptPath: script.path, mock: false, outPath: out, overrides: ["recording": "nope.ptu"]))
        }
        let text = dir.appendingPathComponent("notes.txt")
        try "not a recording".write(to: text, atomically: true, encoding: .utf8)
        do {
            _ = try await Herald.run(.init(scriptPath: script.path, mock: false, outPath: out, overrides: ["recording": text.path]))
            Issue.record("a .txt recording was accepted")
        } catch let e as DeviceError {
            #expect(e.description.contains("set format: ptu, swabian or herald"), "\(e)")
        }
        // `validate` finds all of it first, at the device's line, without running anything.
        let lines = try String(contentsOf: script, encoding: .utf8).components(separatedBy: "\n")
        let line = (lines.firstIndex { $0.contains("replay.timetagger") } ?? -2) + 1
        let garbage = dir.appendingPathComponent("garbage.ptu")
        try Data("PQTTTR\0\0 not really".utf8).write(to: garbage)
        for (recording, message) in [("nope.ptu", "not found"), (text.path, "set format"), (garbage.path, "cannot replay")] {
            let r = try await runProcess(Paths.herald.path, ["validate", script.path, "--set", "recording=\(recording)"])
            #expect(r.status == 65, "\(recording): \(r.stderr)")
            #expect(r.stderr.contains("\(script.path):\(line):") && r.stderr.contains(message), "\(recording): \(r.stderr)")
        }
    }
}

extension ReplayTests {
    /// A Swabian dump with an overflow: `herald import` holds its tags (checked against numpy
    /// and phconvert); the replayed run holds them too and records the lost interval, and
    /// replaying that run gives the interval back.
    @Test func swabianDumpOverflowIsKeptThroughReplay() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var bytes: [UInt8] = []
        func record(_ type: UInt8, channel: Int32, ps: Int64) {
            bytes += [type, 0, 0, 0]
            withUnsafeBytes(of: channel.littleEndian) { bytes += $0 }
            withUnsafeBytes(of: ps.littleEndian) { bytes += $0 }
        }
        // 1000 tags every 1 µs on channels 1/2, with an overflow from 300.5 µs to 400.5 µs.
        for i in 0..<1000 {
            let t = Int64(i) * 1_000_000
            if i == 301 { record(2, channel: 0, ps: 300_500_000) }
            if i == 401 { record(3, channel: 0, ps: 400_500_000) }
            record(0, channel: Int32(1 + i % 2), ps: t)
        }
        record(0, channel: 3, ps: 1_000_000_000)  // a dump ends with its last tag: this one, at 1 ms
        let dump = dir.appendingPathComponent("run.dump")
        try Data(bytes).write(to: dump)
        // The same dump through `herald import`, read back against numpy and phconvert.
        let imported = dir.appendingPathComponent("imported.h5").path
        let converted = try await runProcess(Paths.herald.path, ["import", dump.path, "--out", imported])
        #expect(converted.status == 0, "\(converted.stderr)")
        let numpy = try await runProcess(Paths.python, [TimeTagFileTests.checks, "swabian", dump.path, imported])
        #expect(numpy.status == 0 && numpy.stdout.contains("ok: 1001 tags"), "\(numpy.stdout)\(numpy.stderr)")
        let script = try Self.script(in: dir, steps: ["acquire: {device: tagger, duration: 1 ms, name: all}"])
        let first = dir.appendingPathComponent("first.h5").path
        let a = try await Herald.run(.init(scriptPath: script.path, mock: false, outPath: first, overrides: ["recording": dump.path]))
        #expect(a.status == .success, "\(a.reason ?? "")")
        #expect(a.tags == 1000)
        let second = dir.appendingPathComponent("second.h5").path
        let b = try await Herald.run(.init(scriptPath: script.path, mock: false, outPath: second, overrides: ["recording": first]))
        #expect(b.status == .success, "\(b.reason ?? "")")
        #expect(try await Self.h5Arrays(first) == Self.h5Arrays(second))
        let code = """
            import h5py, sys
            for p in sys.argv[1:]:
                g = h5py.File(p, "r")["user/herald/lost"]
                print(list(g["start_ps"][:]), list(g["stop_ps"][:]), [r.decode() if isinstance(r, bytes) else r for r in g["reason"][:]])
            """
        let r = try await runProcess(Paths.python, ["-c", code, first, second])
        #expect(r.status == 0, "\(r.stderr)")
        let line = "[np.int64(300500000)] [np.int64(400500000)] ['overflow']"
        let plain = "[300500000] [400500000] ['overflow']"
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.count == 2 && lines.allSatisfy { $0 == line || $0 == plain }, "\(r.stdout)")
    }
}

extension ReplayTests {
    /// `realtime: true` delivers no faster than the recording ran (a lower bound, which a busy
    /// machine cannot break), and makes the run use the wall clock.
    @Test func realtimeReplayKeepsTheRecordingsPace() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = try Self.script(
            in: dir, steps: ["acquire: {device: tagger, duration: 250 ms}", "wait: 50 ms"], realtime: true)
        let source = TimeTagFileTests.samples.appendingPathComponent("hydraharp/v20_t2.ptu").path
        let started = ContinuousClock.now
        let report = try await Herald.run(
            .init(scriptPath: script.path, mock: false, outPath: dir.appendingPathComponent("run.h5").path, overrides: ["recording": source]))
        #expect(report.status == .success, "\(report.reason ?? "")")
        #expect(ContinuousClock.now - started >= .milliseconds(300))
    }
}

extension ReplayTests {
    /// `loop: true` plays a one-acquisition run again and again, each pass shifted by the
    /// acquisition's length: the replayed tags are the original ones three times over, each
    /// copy offset by exactly one length (checked by numpy from the files).
    @Test func loopingReplayRepeatsTheRecordingShiftedByItsLength() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let original = dir.appendingPathComponent("original.h5").path
        let replayed = dir.appendingPathComponent("replayed.h5").path
        let a = try await Herald.run(
            .init(
                scriptPath: Paths.root.appendingPathComponent("bench/long-acquisition.yaml").path, mock: true, outPath: original,
                seed: 3, overrides: ["duration": "20 ms"]))
        #expect(a.status == .success, "\(a.reason ?? "")")
        let url = dir.appendingPathComponent("loop.yaml")
        try """
            herald: 1
            name: replay-loop
            devices:
              tagger: {driver: replay.timetagger, settings: {file: original.h5, loop: true}}
            steps:
              - acquire: {device: tagger, duration: 25 ms}
              - acquire: {device: tagger, duration: 35 ms}
            """.write(to: url, atomically: true, encoding: .utf8)
        let b = try await Herald.run(.init(scriptPath: url.path, mock: false, outPath: replayed))
        #expect(b.status == .success, "\(b.reason ?? "")")
        #expect(a.tags > 10_000 && b.tags == 3 * a.tags)
        let code = """
            import h5py, numpy as np, sys
            a = h5py.File(sys.argv[1], "r"); b = h5py.File(sys.argv[2], "r")
            ta, da = a["photon_data/timestamps"][:], a["photon_data/detectors"][:]
            tb, db = b["photon_data/timestamps"][:], b["photon_data/detectors"][:]
            period = 20_000_000_000
            ok = len(tb) == 3 * len(ta) and all(
                np.array_equal(tb[k * len(ta):(k + 1) * len(ta)], ta + k * period) and
                np.array_equal(db[k * len(ta):(k + 1) * len(ta)], da) for k in range(3))
            print("same" if ok else f"differ: {len(ta)} {len(tb)} {tb[:3]} {ta[:3]}")
            """
        let r = try await runProcess(Paths.python, ["-c", code, original, replayed])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "same", "\(r.stdout) \(r.stderr)")
    }

    /// `--no-raw-tags`: the run counts every tag but stores none, the file says so, and a
    /// replay of it fails naming the reason instead of playing an empty recording.
    @Test func runWithoutRawTagsSaysSoAndCannotBeReplayed() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("counts-only.h5").path
        var request = Herald.RunRequest(
            scriptPath: Paths.root.appendingPathComponent("bench/long-acquisition.yaml").path, mock: true, outPath: out,
            seed: 3, overrides: ["duration": "20 ms"])
        request.rawTags = false
        let a = try await Herald.run(request)
        #expect(a.status == .success && a.tags > 10_000, "\(a.reason ?? "")")
        let code = """
            import h5py, sys
            f = h5py.File(sys.argv[1], "r")
            run = f["user/herald/run"].attrs
            print(len(f["photon_data/timestamps"]), run["raw_tags"].decode() if isinstance(run["raw_tags"], bytes) else run["raw_tags"], int(run["tag_count"]))
            """
        let r = try await runProcess(Paths.python, ["-c", code, out])
        #expect(r.stdout.hasPrefix("0 not recorded") && r.stdout.hasSuffix(" \(a.tags)\n"), "\(r.stdout) \(r.stderr)")

        let script = try Self.script(in: dir, steps: ["acquire: {device: tagger, duration: 10 ms}"])
        let b = try await Herald.run(.init(scriptPath: script.path, mock: false, outPath: dir.appendingPathComponent("b.h5").path, overrides: ["recording": out]))
        #expect(b.status == .failed)
        #expect(b.failure == .device("tagger", .unsupported), "\(b.reason ?? "")")
        #expect(b.reason?.contains("stored no raw tags") == true, "says why: \(b.reason ?? "")")
    }
}
