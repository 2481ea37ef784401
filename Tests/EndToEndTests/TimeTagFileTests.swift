import Foundation
import Testing

/// Real PicoQuant recordings (../shared/data/picoquant) decoded by `herald inspect` and
/// `herald import`, checked against tttrlib and phconvert run on the same files.
@Suite struct TimeTagFileTests {
    /// $HERALD_SHARED_DATA, else ../shared/data beside the repository, else /work/shared/data.
    static let samples: URL = {
        let candidates = [
            ProcessInfo.processInfo.environment["HERALD_SHARED_DATA"].map { URL(fileURLWithPath: $0) },
            Paths.root.deletingLastPathComponent().appendingPathComponent("shared/data"),
            URL(fileURLWithPath: "/work/shared/data"),
        ].compactMap { $0 }.map { $0.appendingPathComponent("picoquant") }
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) } ?? candidates[0]
    }()
    static let checks = Paths.root.appendingPathComponent("Tests/python/tttr_checks.py").path

    /// `herald inspect --json` and `herald import` of one file: the JSON's URL and the import's path.
    static func inspectAndImport(_ source: String, into dir: URL) async throws -> (json: URL, h5: String) {
        let inspect = try await runProcess(Paths.herald.path, ["inspect", "--json", source])
        #expect(inspect.status == 0, "\(inspect.stderr)")
        let json = dir.appendingPathComponent("inspect.json")
        try Data(inspect.stdout.utf8).write(to: json)
        let h5 = dir.appendingPathComponent("imported.h5").path
        let imported = try await runProcess(Paths.herald.path, ["import", source, "--out", h5])
        #expect(imported.status == 0, "\(imported.stderr)")
        return (json, h5)
    }

    @Test(arguments: ["hydraharp/v20_t2.ptu", "hydraharp/v20_t3.ptu", "hydraharp/v10_t3.ptu", "picoharp/v30_t2.ptu"])
    func decodesLikeTheIndependentReaders(sample: String) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = Self.samples.appendingPathComponent(sample).path
        let (json, h5) = try await Self.inspectAndImport(source, into: dir)

        let tttrlib = try await runProcess(Paths.python, [Self.checks, "compare", source, json.path, h5])
        #expect(tttrlib.status == 0, "\(tttrlib.stdout)\(tttrlib.stderr)")
        #expect(tttrlib.stdout.hasPrefix("ok:"))
        // phconvert's own PTU decoder as a second oracle (it fails on PicoHarp T2 under numpy 2).
        if sample != "picoharp/v30_t2.ptu" {
            let phconvert = try await runProcess(Paths.python, [Self.checks, "phconvert", source, h5])
            #expect(phconvert.status == 0, "\(phconvert.stdout)\(phconvert.stderr)")
        }
    }

    /// `--meta` fills Photon-HDF5's identity and sample groups, as `herald run --meta` does;
    /// a key an import does not record is refused by name.
    @Test func importRecordsTheOperatorAffiliationAndSample() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("x.h5").path
        let source = Self.samples.appendingPathComponent("picoharp/v30_t2.ptu").path
        let r = try await runProcess(
            Paths.herald.path, ["import", source, "--out", out, "--meta", "operator=Ada Lovelace", "--meta", "affiliation=Lab 3", "--meta", "sample=NV-7"])
        #expect(r.status == 0, "\(r.stderr)")
        let read = try await runProcess(
            Paths.python,
            ["-c", "import h5py,sys; f=h5py.File(sys.argv[1]); print('|'.join(f[k][()].decode() for k in ['identity/author','identity/author_affiliation','sample/sample_name']))", out])
        #expect(read.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "Ada Lovelace|Lab 3|NV-7", "\(read.stdout)\(read.stderr)")
        let bad = try await runProcess(Paths.herald.path, ["import", source, "--out", dir.appendingPathComponent("y.h5").path, "--meta", "tags=a"])
        #expect(bad.status != 0 && bad.stderr.contains("--meta tags: an import records operator, affiliation and sample"), "\(bad.stderr)")
    }

    @Test func importRefusesToOverwrite() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("x.h5").path
        let source = Self.samples.appendingPathComponent("hydraharp/v20_t3.ptu").path
        #expect(try await runProcess(Paths.herald.path, ["import", source, "--out", out]).status == 0)
        let again = try await runProcess(Paths.herald.path, ["import", source, "--out", out])
        #expect(again.status != 0 && again.stderr.contains("--overwrite"))
    }

    /// Legacy PicoHarp .pt3 (format 2.0), built by tttr_checks.py from PicoQuant's layout
    /// with photons, overflows and markers: every header field and photon as phconvert reads
    /// them, and an import phconvert accepts.
    @Test func legacyPicoHarpPT3DecodesLikePhconvert() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("made.pt3").path
        let made = try await runProcess(Paths.python, [Self.checks, "make-pt3", source])
        #expect(made.status == 0, "\(made.stdout)\(made.stderr)")
        let (json, h5) = try await Self.inspectAndImport(source, into: dir)
        let check = try await runProcess(Paths.python, [Self.checks, "legacy", source, json.path, h5])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("ok: "), "\(check.stdout)")
        // A truncated header fails naming the file and the offset, not a crash.
        let truncated = dir.appendingPathComponent("cut.pt3")
        try Data(try Data(contentsOf: URL(fileURLWithPath: source)).prefix(600)).write(to: truncated)
        let r = try await runProcess(Paths.herald.path, ["inspect", truncated.path])
        #expect(r.status != 0 && r.stderr.contains("truncated"), "\(r.stderr)")
    }

    /// Legacy T2 containers (PicoHarp .pt2, HydraHarp .ht2 of format 1.0 and 2.0), built by
    /// tttr_checks.py from PicoQuant's record layouts with photons, markers, syncs and
    /// overflows (V2 records counting several at once), events drawn first and then encoded:
    /// the import holds exactly the drawn photons' times and channels, and phconvert accepts it.
    @Test(arguments: [("pt2", "pt2"), ("ht2v1", "ht2"), ("ht2v2", "ht2")])
    func legacyT2ContainersHoldTheirPhotons(kind: String, ext: String) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("made.\(ext)").path, expected = dir.appendingPathComponent("expected.npz").path
        let made = try await runProcess(Paths.python, [Self.checks, "make-t2", kind, source, expected])
        #expect(made.status == 0, "\(made.stdout)\(made.stderr)")
        let (json, h5) = try await Self.inspectAndImport(source, into: dir)
        let header = try JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any] ?? [:]
        #expect(header["mode"] as? String == "T2")
        // Whole picoseconds: 4 for the PicoHarp, 1 for the HydraHarp (the import then multiplies, never rounds).
        #expect(header["timeUnitPs"] as? Double == (kind == "pt2" ? 4 : 1), "\(header["timeUnitPs"] ?? "none")")
        let check = try await runProcess(Paths.python, [Self.checks, "check-t2", expected, h5])
        #expect(check.status == 0 && check.stdout.contains("phconvert accepts"), "\(check.stdout)\(check.stderr)")
    }

    /// A TimeHarp 200 .t3r of software 6.0 (its own header layout), built from PicoQuant's
    /// layout, decodes as pqreader (the MIT-licensed PyPI reader of 6.0 files) reads it.
    @Test func timeHarp200Version6DecodesLikePqreader() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = dir.appendingPathComponent("made.t3r").path
        let made = try await runProcess(Paths.python, [Self.checks, "make-t3r6", source])
        #expect(made.status == 0, "\(made.stdout)\(made.stderr)")
        let (json, h5) = try await Self.inspectAndImport(source, into: dir)
        let check = try await runProcess(Paths.python, [Self.checks, "legacy", source, json.path, h5])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("equal to pqreader"), "\(check.stdout)")
    }

    /// Legacy .ht3 (checked against tttrlib) and .t3r (against phconvert): header fields,
    /// photons, and a Photon-HDF5 import that phconvert accepts.
    @Test(arguments: ["hydraharp/v20.ht3", "timeharp/v50.t3r"])
    func legacyContainersDecodeLikeTheIndependentReaders(sample: String) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let source = Self.samples.appendingPathComponent(sample).path
        let (json, h5) = try await Self.inspectAndImport(source, into: dir)
        let check = try await runProcess(Paths.python, [Self.checks, "legacy", source, json.path, h5])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        #expect(check.stdout.contains("\nok:") || check.stdout.hasPrefix("ok:"), "\(check.stdout)")
    }
}
