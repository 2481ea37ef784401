import Foundation
import Testing

@Suite struct CLITests {
    @Test func validateNamesFileLineAndColumn() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let demo = try String(contentsOf: Paths.root.appendingPathComponent("Experiments/bell-tomography-16.yaml"), encoding: .utf8)
        let broken = demo.replacingOccurrences(of: "pump.enabled: true", with: "pump.enabeld: true")
        let path = dir.appendingPathComponent("broken.yaml").path
        try broken.write(toFile: path, atomically: true, encoding: .utf8)
        let r = try runProcess(Paths.herald.path, ["validate", path])
        #expect(r.status == 65)
        let line = broken.components(separatedBy: "\n").firstIndex { $0.contains("pump.enabeld") }.map { $0 + 1 }
        #expect(r.stderr.contains("\(path):\(line ?? -1):"), "\(r.stderr)")
        #expect(r.stderr.contains("unknown property 'enabeld'"))
    }

    @Test func demoRunsFromTheCommandLine() throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("demo.h5").path
        let r = try runProcess(
            Paths.herald.path,
            ["run", Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path, "--mock", "--seed", "3", "--out", out, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let json = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        #expect(json?["status"] as? String == "success")
        #expect(json?["output"] as? String == out)
        #expect(FileManager.default.fileExists(atPath: out))
    }

    @Test func driversListsTheMocks() throws {
        let r = try runProcess(Paths.herald.path, ["drivers"])
        #expect(r.status == 0)
        for id in ["mock.laser", "mock.rotator", "mock.timetagger"] { #expect(r.stdout.contains(id)) }
    }
}
