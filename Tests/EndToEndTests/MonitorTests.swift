import Foundation
import Testing

/// `herald run --monitor`, seen from outside: a real headless Chromium reading the page while
/// the run pauses on an interlock, and a real Prometheus server scraping `/metrics`
/// (Tests/python/monitor_checks.py drives both and compares with the HDF5 file).
@Suite(.serialized) struct MonitorTests {
    static let script = Paths.root.appendingPathComponent("Tests/Fixtures/monitor/paused-tomography.yaml").path

    /// Kept after the test (under .build, ignored by git): the screenshots of the page.
    static func artifacts(_ name: String) throws -> URL {
        let dir = Paths.root.appendingPathComponent(".build/test-artifacts/\(name)")
        try? FileManager.default.removeItem(at: dir)
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    struct Summary: Decodable {
        var problems: [String]
    }

    @Test func thePageShowsTheRunLiveAndItsPauseAsTheFileRecordsThem() async throws {
        let out = try Self.artifacts("monitor")
        let r = try await runProcess(
            Paths.python, [Paths.root.appendingPathComponent("Tests/python/monitor_checks.py").path, "page", Paths.herald.path, Self.script, out.path])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try JSONDecoder().decode(Summary.self, from: Data(r.stdout.utf8))
        #expect(summary.problems.isEmpty, "\(summary.problems)\n\(r.stdout)")
        #expect(FileManager.default.fileExists(atPath: out.appendingPathComponent("monitor-paused.png").path))
        // The browser compared every plotted point it saw against the file: more than a handful.
        struct Compared: Decodable { var compared: Int; var points_seen: [Int] }
        let c = try JSONDecoder().decode(Compared.self, from: Data(r.stdout.utf8))
        #expect(c.compared >= 16)
        #expect(c.points_seen.count >= 4, "the page saw the point counter move: \(c.points_seen)")
    }

    @Test func prometheusScrapesTheRunsMetricsWithTheToken() async throws {
        let out = try Self.artifacts("prometheus")
        let r = try await runProcess(
            Paths.python,
            [Paths.root.appendingPathComponent("Tests/python/monitor_checks.py").path, "prometheus", Paths.herald.path, Self.script, out.path])
        #expect(r.status == 0, "\(r.stderr)")
        let summary = try JSONDecoder().decode(Summary.self, from: Data(r.stdout.utf8))
        #expect(summary.problems.isEmpty, "\(summary.problems)\n\(r.stdout)")
    }

    @Test func aMonitorBeyondLoopbackNeedsAToken() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try await runProcess(
            Paths.herald.path,
            ["run", Self.script, "--mock", "--out", dir.appendingPathComponent("x.h5").path, "--monitor", "0.0.0.0:0"])
        #expect(r.status == 64, "\(r.stderr)")
        #expect(r.stderr.contains("--monitor-token"))
        #expect(!FileManager.default.fileExists(atPath: dir.appendingPathComponent("x.h5").path), "nothing ran")
        let short = try await runProcess(
            Paths.herald.path, ["run", Self.script, "--mock", "--monitor", "0.0.0.0:0", "--monitor-token", "short"])
        #expect(short.status == 64 && short.stderr.contains("at least 16"), "\(short.stderr)")
        let bad = try await runProcess(Paths.herald.path, ["run", Self.script, "--mock", "--monitor", "localhost:http"])
        #expect(bad.status == 64 && bad.stderr.contains("HOST:PORT"), "\(bad.stderr)")
    }
}
