import Foundation
import Testing

@Suite struct CLITests {
    @Test func validateNamesFileLineAndColumn() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try String(contentsOf: Paths.root.appendingPathComponent("Experiments/bell-tomography-16.yaml"), encoding: .utf8)
        let broken = demo.replacingOccurrences(of: "pump.enabled: true", with: "pump.enabeld: true")
        let path = dir.appendingPathComponent("broken.yaml").path
        try broken.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try await runProcessOffPool(Paths.herald.path, ["validate", path])
        #expect(r.status == 65)
        let line = broken.components(separatedBy: "\n").firstIndex { $0.contains("pump.enabeld") }.map { $0 + 1 }
        #expect(r.stderr.contains("\(path):\(line ?? -1):"), "\(r.stderr)")
        #expect(r.stderr.contains("unknown property 'enabeld'"))
    }

    @Test func demoRunsFromTheCommandLine() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("demo.h5").path
        let r = try await runProcessOffPool(
            Paths.herald.path,
            ["run", Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path, "--mock", "--seed", "3", "--out", out, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(json?["status"] as? String == "success")
        #expect(json?["output"] as? String == out)
        #expect(FileManager.default.fileExists(atPath: out))
    }

    /// `herald run --no-raw-tags` reaches the recorder: the file holds no tags and says why,
    /// while the report still counts every tag. (`validate` and `drivers` do not take it.)
    @Test func noRawTagsFlagStoresNoTags() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("counts.h5").path
        let script = Paths.root.appendingPathComponent("bench/long-acquisition.yaml").path
        let r = try await runProcessOffPool(
            Paths.herald.path, ["run", script, "--mock", "--seed", "3", "--set", "duration=10 ms", "--no-raw-tags", "--out", out, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect((json?["tags"] as? Int ?? 0) > 10_000)
        let code = """
            import h5py, sys
            f = h5py.File(sys.argv[1], "r")
            a = f["user/herald/run"].attrs["raw_tags"]
            print(len(f["photon_data/timestamps"]), (a.decode() if isinstance(a, bytes) else a).split(":")[0])
            """
        let h = try await runProcessOffPool(Paths.python, ["-c", code, out])
        #expect(h.stdout == "0 not recorded\n", "\(h.stdout) \(h.stderr)")
        for command in ["validate", "drivers"] {
            let v = try await runProcessOffPool(Paths.herald.path, command == "validate" ? [command, script, "--no-raw-tags"] : [command, "--no-raw-tags"])
            #expect(v.status != 0, "herald \(command) accepted --no-raw-tags")
        }
    }

    @Test func driversListsTheMocks() async throws {
        let r = try await runProcessOffPool(Paths.herald.path, ["drivers"])
        #expect(r.status == 0)
        for id in ["mock.laser", "mock.rotator", "mock.timetagger"] { #expect(r.stdout.contains(id)) }
    }
}

@Suite struct TomographyCLITests {
    static let fixture = Paths.root.appendingPathComponent("Tests/Fixtures/tomography/werner-0.9-16.csv").path

    @Test func jsonHasTheDocumentedShape() async throws {
        let r = try await runProcess(Paths.herald.path, ["tomography", Self.fixture, "--estimator", "mle", "--errors", "30", "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
        #expect(json["estimator"] as? String == "mle")
        let rho = try #require(json["rho"] as? [String: [[Double]]])
        #expect(rho["real"]?.count == 4 && rho["imag"]?.first?.count == 4)
        for key in ["concurrence", "tangle", "purity", "entropy", "linear_entropy", "negativity", "log_negativity", "chsh_max"] {
            #expect(json[key] is Double, "\(key)")
        }
        let fidelity = try #require(json["fidelity"] as? [String: Double])
        #expect(Set(fidelity.keys) == ["phi+", "phi-", "psi+", "psi-", "max"])
        // The fixture is V = 0.9 Werner data with accidentals 20 per setting on 5000 pairs.
        let errors = try #require(json["errors"] as? [String: Any])
        let sigma = try #require((errors["fidelity"] as? [String: Double])?["phi+"])
        #expect(abs(fidelity["phi+"]! - 0.925) < 4 * sigma, "F = \(fidelity["phi+"]!) ± \(sigma)")
    }

    @Test(arguments: ["linear", "hedged"])
    func otherEstimatorsRun(estimator: String) async throws {
        let r = try await runProcess(Paths.herald.path, ["tomography", Self.fixture, "--estimator", estimator, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("\"estimator\" : \"\(estimator)\""))
    }

    @Test func badCSVIsReportedAtItsPlace() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("bad.csv").path
        try "setting,counts\nHH,100\nHX,20\n".write(toFile: path, atomically: true, encoding: .utf8)
        let r = try await runProcess(Paths.herald.path, ["tomography", path])
        #expect(r.status == 65)
        #expect(r.stderr.contains("\(path):3:1: error: setting must be two letters"), "\(r.stderr)")
        try "setting,counts\nHH,-4\n".write(toFile: path, atomically: true, encoding: .utf8)
        let n = try await runProcess(Paths.herald.path, ["tomography", path])
        #expect(n.stderr.contains("\(path):2:4: error: counts must be a non-negative number"), "\(n.stderr)")
    }
}
