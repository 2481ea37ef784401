import Foundation
import Testing

/// Nodes on real hosts: Tests/python/node_checks.py makes five network namespaces (the
/// coordinator, the simulated world, nodes alice and bob, the analyser station), issues
/// certificates, runs one `herald node serve` per host, and checks the heralded-entanglement
/// experiment across them against the single-process run, a node killed and a link cut
/// mid-run, a link that drops and comes back under a reconnection policy, the coordinator killed (nodes safe within the lease + 1 s), refused clients,
/// garbage at a node's port, and two taggers on two hosts on their own clocks, merged by the coordinator. Where namespaces cannot be made (not root) it says so and skips.
@Suite(.serialized) struct NodeNetworkTests {
    @Test func theTwoNodeExperimentAcrossHostsAndItsFailures() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try await runProcess(
            "timeout", ["600", Paths.python, Paths.root.appendingPathComponent("Tests/python/node_checks.py").path, Paths.herald.path, dir.path])
        if r.status == 77 {
            print("NodeNetworkTests skipped: \(r.stdout)")
            return
        }
        #expect(r.status == 0, "\(r.stdout.suffix(2000))\(r.stderr.suffix(3000))")
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        let measured = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
        print("node checks: \(line)")
        #expect(measured["same_result"] as? String == "identical figures and tags")
        #expect((measured["two_taggers_across_hosts"] as? String)?.hasPrefix("identical to one process") == true)
        // A link down for 2.5 s under `reconnect_within: 20 s`: the run succeeded (checked by the
        // script), with the outage as one pause, and alice restored soon after its link came back
        // (the reconnection's backoff is at most 2 s between attempts).
        #expect(measured["link_flap_outage_pauses"] as? Int == 1)
        let restored = try #require(measured["link_flap_restored_after_up_s"] as? Double)
        #expect(restored <= 3.0, "alice restored \(restored) s after its link came back")
        for host in ["alice", "bob", "bsa"] {
            let after = try #require(measured["coord_killed_\(host)_safe_after_s"] as? Double)
            #expect(after <= 2.0, "\(host) safe \(after) s after the coordinator died (lease 1 s)")
        }
    }
}
