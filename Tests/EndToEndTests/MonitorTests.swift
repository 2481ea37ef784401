import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HeraldLive
import HeraldMonitor
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

    /// A SWMR reader sees each analysis in the file while the run is still going.
    @Test func analysesReachTheFileWhileTheRunGoes() async throws {
        let out = try Self.artifacts("live-file")
        let script = Paths.root.appendingPathComponent("Tests/Fixtures/monitor/live-results.yaml").path
        let r = try await runProcess(
            Paths.python, [Paths.root.appendingPathComponent("Tests/python/monitor_checks.py").path, "live-file", Paths.herald.path, script, out.path])
        #expect(r.status == 0, "\(r.stderr)")
        struct Live: Decodable { var problems: [String]; var live: [String] }
        let summary = try JSONDecoder().decode(Live.self, from: Data(r.stdout.utf8))
        #expect(summary.problems.isEmpty, "\(summary.problems)")
        #expect(summary.live == ["tomography"])
    }

    /// Bound beyond loopback, with a token: every route refuses a request without it.
    @Test func anExposedMonitorRefusesRequestsWithoutTheToken() async throws {
        let token = "exposed-monitor-token-42"
        let server = MonitorServer(live: LiveRun(), configuration: MonitorConfiguration(host: "0.0.0.0", port: 0, token: token))
        let port = try await server.start()
        @Sendable func status(_ path: String, bearer: String? = nil) async throws -> Int {
            var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)\(path)")))
            if let bearer { request.setValue("Bearer \(bearer)", forHTTPHeaderField: "Authorization") }
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse)?.statusCode ?? 0
        }
        for path in ["/", "/state.json", "/metrics", "/ws"] {
            #expect(try await status(path) == 401, "\(path)")
            #expect(try await status(path + "?token=not-the-token") == 401, "\(path)")
        }
        #expect(try await status("/?token=\(token)") == 200)
        #expect(try await status("/metrics", bearer: token) == 200)
        // Read-only: nothing but GET is routed.
        var post = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/state.json?token=\(token)")))
        post.httpMethod = "POST"
        let (_, response) = try await URLSession.shared.data(for: post)
        #expect([404, 405].contains((response as? HTTPURLResponse)?.statusCode ?? 0))
        await server.stop()
    }

    /// On loopback without a token, another site's page in the user's browser cannot read it:
    /// a foreign Origin, or a Host that is not a loopback address (DNS rebinding), gets 403.
    @Test func aLoopbackMonitorRefusesOtherSitesPages() async throws {
        let server = MonitorServer(live: LiveRun(), configuration: MonitorConfiguration(host: "127.0.0.1", port: 0))
        let port = try await server.start()
        @Sendable func status(headers: [String: String]) async throws -> Int {
            var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/state.json")))
            for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
            let (_, response) = try await URLSession.shared.data(for: request)
            return (response as? HTTPURLResponse)?.statusCode ?? 0
        }
        #expect(try await status(headers: [:]) == 200)
        #expect(try await status(headers: ["Origin": "http://127.0.0.1:\(port)"]) == 200)
        #expect(try await status(headers: ["Origin": "http://evil.example"]) == 403)
        #expect(try await status(headers: ["Host": "evil.example:\(port)"]) == 403)
        #expect(MonitorConfiguration(host: "127.evil.example", port: 0).isLoopback == false)
        await server.stop()
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
