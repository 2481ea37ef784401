import Foundation
import Testing

/// What a run records about itself: the operator, sample and tags from the script and
/// `--meta`, the script's git revision with a dirty flag, in Photon-HDF5's own fields where
/// they exist; phconvert validates the file without a single warning.
@Suite struct RunMetadataTests {
    static let script = """
        herald: 1
        name: meta-run
        description: a short run with its metadata
        meta:
          operator: Ada Lovelace
          affiliation: Analytical Engine Lab
          tags: [calibration, bench-2]
          excitation_wavelength: 405 nm
          detection_wavelength: 810 nm
        devices:
          pump: {driver: mock.laser}
          tagger: {driver: mock.timetagger}
        steps:
          - set: {pump.power: 10 mW, pump.enabled: true}
          - acquire: {device: tagger, duration: 20 ms, name: one}
          - rates: {sweep: one, pairs: [[1, 3]], window: 1 ns}
        """

    func git(_ args: [String], in dir: URL) async throws {
        let r = try await runProcess("git", ["-C", dir.path, "-c", "user.name=t", "-c", "user.email=t@example.org"] + args)
        #expect(r.status == 0, "git \(args): \(r.stderr)")
    }

    @Test func metadataFromTheScriptTheCommandLineAndGitIsRecordedAndPhconvertHasNoWarnings() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("meta.yaml")
        try Self.script.write(to: path, atomically: true, encoding: .utf8)
        try await git(["init", "-q"], in: dir)
        try await git(["add", "meta.yaml"], in: dir)
        try await git(["commit", "-qm", "script"], in: dir)
        let head = try await runProcess("git", ["-C", dir.path, "rev-parse", "HEAD"])
        let revision = head.stdout.trimmingCharacters(in: .whitespacesAndNewlines)

        func run(_ out: String) async throws -> ProcessResult {
            try await runProcess(Paths.herald.path, ["run", path.path, "--out", out, "--meta", "sample=PPKTP crystal #3", "--meta", "run_by=ci"])
        }
        let clean = dir.appendingPathComponent("clean.h5").path
        let r1 = try await run(clean)
        #expect(r1.status == 0, "\(r1.stderr)")
        // An edit not committed: the next run says the script is dirty.
        try (Self.script + "\n# edited\n").write(to: path, atomically: true, encoding: .utf8)
        let dirty = dir.appendingPathComponent("dirty.h5").path
        let r2 = try await run(dirty)
        #expect(r2.status == 0, "\(r2.stderr)")

        let probe = """
            import h5py, json, sys, warnings
            import phconvert as phc
            out = {}
            for path in sys.argv[1:]:
                with warnings.catch_warnings(record=True) as w:
                    warnings.simplefilter("always")
                    phc.hdf5.load_photon_hdf5(path, require_setup=True)
                    phc_warnings = [str(x.message) for x in w if "Photon-HDF5" in str(x.message)]
                with h5py.File(path, "r") as f:
                    m = dict(f["user/herald/metadata"].attrs)
                    out[path] = {
                        "warnings": phc_warnings,
                        "author": f["identity/author"][()].decode(),
                        "affiliation": f["identity/author_affiliation"][()].decode(),
                        "sample": f["sample/sample_name"][()].decode(),
                        "excitation": float(f["setup/excitation_wavelengths"][0]),
                        "detection": float(f["setup/detection_wavelengths"][0]),
                        "type": f["photon_data/measurement_specs/measurement_type"][()].decode(),
                        "meta": {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in m.items()},
                    }
            print(json.dumps(out))
            """
        let p = try await runProcess(Paths.python, ["-c", probe, clean, dirty])
        #expect(p.status == 0, "\(p.stderr)")
        let files = try #require(try JSONSerialization.jsonObject(with: Data(p.stdout.utf8)) as? [String: [String: Any]])
        let a = try #require(files[clean]), b = try #require(files[dirty])
        #expect((a["warnings"] as? [String]) == [], "phconvert: \(a["warnings"] ?? "")")
        #expect(a["author"] as? String == "Ada Lovelace" && a["affiliation"] as? String == "Analytical Engine Lab")
        #expect(a["sample"] as? String == "PPKTP crystal #3")
        #expect(abs((a["excitation"] as? Double ?? 0) - 405e-9) < 1e-15 && abs((a["detection"] as? Double ?? 0) - 810e-9) < 1e-15)
        #expect(a["type"] as? String == "generic")
        let ma = a["meta"] as? [String: String] ?? [:], mb = b["meta"] as? [String: String] ?? [:]
        #expect(ma["tags"] == "calibration,bench-2" && ma["extra_run_by"] == "ci" && ma["description"] == "a short run with its metadata", "\(ma)")
        #expect(ma["script_revision"] == revision && ma["script_dirty"] == "false", "\(ma)")
        #expect(mb["script_revision"] == revision && mb["script_dirty"] == "true", "\(mb)")
        #expect(!(ma["host"] ?? "").isEmpty && !(ma["herald_version"] ?? "").isEmpty)
    }

    @Test func aBadMetaValueIsRefused() async throws {
        let r = try await runProcess(Paths.herald.path, ["run", "x.yaml", "--meta", "excitation_wavelength=5 mW"])
        #expect(r.status != 0 && r.stderr.contains("excitation_wavelength is a wavelength"), "\(r.stderr)")
    }
}

/// A `record` step stores each property it reads, per point: the crystal scan's oven
/// temperature is each setpoint, and the meter reads 10 mW with its 1% noise.
@Suite struct RecordStepTests {
    @Test func theCrystalScanRecordsTheOvenAndTheMeterAtEveryPoint() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("scan.h5").path
        let run = try await runProcess(
            Paths.herald.path, ["run", Paths.root.appendingPathComponent("Experiments/crystal-temperature-scan.yaml").path, "--mock", "--seed", "3", "--out", out, "--set", "integration=20ms"])
        #expect(run.status == 0, "\(run.stderr)")
        // σ of one reading 1% of 10 mW = 0.1 mW; of the mean of 41, 0.1 mW/√41.
        let probe = """
            import h5py, sys, numpy as np
            f = h5py.File(sys.argv[1], "r")
            r = f["user/herald/records"]
            t, p = r["oven.temperature/value"][:], r["meter.power/value"][:]
            assert r["oven.temperature/value"].attrs["units"] in ("K", b"K"), r["oven.temperature/value"].attrs["units"]
            idx = r["meter.power/point_index"][:]
            sweeps = set(s.decode() for s in r["meter.power/sweep"][:])
            expected = 304 + 0.2 * np.arange(41)
            assert len(t) == 41 and np.allclose(t, expected, atol=1e-9), t
            assert list(idx) == list(range(41)) and sweeps == {"temperature"}, (idx, sweeps)
            sigma_mean = 1e-4 / np.sqrt(41)
            assert abs(p.mean() - 0.01) < 5 * sigma_mean, p.mean()
            assert 0.5e-4 < p.std(ddof=1) < 1.5e-4, p.std(ddof=1)
            print("ok", p.mean(), p.std(ddof=1))
            """
        let p = try await runProcess(Paths.python, ["-c", probe, out])
        #expect(p.status == 0 && p.stdout.hasPrefix("ok"), "\(p.stdout)\(p.stderr)")
    }
}
