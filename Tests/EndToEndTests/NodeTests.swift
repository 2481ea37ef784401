import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldCore
@testable import HeraldNode
import HeraldNodeProtocol
import HeraldRunner
import SimulatedLab
import Synchronization
import Testing

/// The node agent over real gRPC with mutual TLS on loopback: remote devices behave like local
/// ones (the same tags bit for bit), roles and the lab CA are enforced, retried commands are
/// not applied twice, and a coordinator that vanishes leaves the node's devices safe.
@Suite(.serialized) struct NodeTests {
    struct Lab: Sendable {
        let dir: URL
        let ca: LabCA
        let node: (certificate: String, key: String)
        let controller: (certificate: String, key: String)
        let observer: (certificate: String, key: String)
        let stranger: (certificate: String, key: String, ca: String)

        init() throws {
            dir = try Paths.temporaryDirectory()
            ca = try LabCA.create(directory: dir.appendingPathComponent("ca").path)
            let certs = dir.appendingPathComponent("certs").path
            node = try ca.issue(name: "alice", role: "node", hosts: ["127.0.0.1", "localhost"], out: certs)
            controller = try ca.issue(name: "coordinator", role: "controller", out: certs)
            observer = try ca.issue(name: "monitor", role: "observer", out: certs)
            // A client from another lab's CA.
            let other = try LabCA.create(directory: dir.appendingPathComponent("other-ca").path, name: "Another lab")
            let s = try other.issue(name: "intruder", role: "controller", out: dir.appendingPathComponent("other").path)
            stranger = (s.certificate, s.key, other.certificatePath)
        }

        func security(_ who: (certificate: String, key: String)) -> NodeSecurity {
            .mutualTLS(certificate: who.certificate, key: who.key, ca: ca.certificatePath)
        }
    }

    /// Devices of a simulated lab, made by the same registry a run uses.
    static func devices(lab: SimulatedLab) throws -> [any Device] {
        let registry = Herald.registry(lab: lab)
        return try [("pump", "mock.laser"), ("tagger", "mock.timetagger")].map { name, driver in
            guard let entry = registry.entry(driver) else { throw NodeError("no \(driver)") }
            return try entry.make(DeviceConfig(name: name, driver: driver))
        }
    }

    /// Serves `agent` on a free loopback port for the duration of `body`.
    static func serving<T: Sendable>(
        _ agent: NodeAgent, _ security: NodeSecurity, _ body: @Sendable (Int) async throws -> T
    ) async throws -> T {
        let server = try NodeServer(agent: agent, host: "127.0.0.1", port: 0, security: security)
        let (ports, gotPort) = AsyncStream<Int>.makeStream()
        let task = Task { try await server.serve { gotPort.yield($0) } }
        defer { task.cancel() }
        var port = 0
        for await p in ports {
            port = p
            break
        }
        return try await body(port)
    }

    @Test func aRemoteTaggerDeliversTheSameTagsAsALocalOne() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        var parameters = LabParameters()
        parameters.pairRate = 2e6
        let remoteLab = SimulatedLab(parameters: parameters, seed: 11), localLab = SimulatedLab(parameters: parameters, seed: 11)
        let audit = try AuditLog(path: lab.dir.appendingPathComponent("audit.jsonl").path)
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: remoteLab), audit: audit)
        try await Self.serving(agent, lab.security(lab.node)) { port in
            let node = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            defer { node.close() }
            let described = try await node.describe(timeout: .seconds(60))
            #expect(described.map(\.name) == ["pump", "tagger"])
            let taggerInfo = try #require(described.first { $0.name == "tagger" })
            #expect(taggerInfo.descriptor.kind == .timeTagger && taggerInfo.channels == 4)
            try await node.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            let pumpInfo = try #require(described.first { $0.name == "pump" })
            let pump = RemoteDevice(name: "pump", descriptor: pumpInfo.descriptor, channels: 0, node: node, timeout: .seconds(60))
            let tagger = RemoteDevice(name: "tagger", descriptor: taggerInfo.descriptor, channels: 4, node: node, timeout: .seconds(60))
            try await pump.connect()
            try await tagger.connect()
            try await pump.set("power", to: .quantity(Quantity(10e-3, .power)))
            try await pump.set("enabled", to: .bool(true))
            #expect(try await pump.get("enabled") == .bool(true))
            let received = Mutex<[TagBlock]>([])
            let interval = try await tagger.acquire(for: .milliseconds(300)) { block in received.withLock { $0.append(block) } }
            let remote = received.withLock { blocks in
                TagBlock(timestamps: blocks.flatMap(\.timestamps), channels: blocks.flatMap(\.channels))
            }
            // The same calls on a local lab of the same seed.
            let local = try Self.devices(lab: localLab)
            try await local[0].set("power", to: .quantity(Quantity(10e-3, .power)))
            try await local[0].set("enabled", to: .bool(true))
            let localBlocks = Mutex<[TagBlock]>([])
            let localInterval = try await (local[1] as? any TimeTagger)?.acquire(for: .milliseconds(300)) { b in localBlocks.withLock { $0.append(b) } }
            let expected = localBlocks.withLock { blocks in
                TagBlock(timestamps: blocks.flatMap(\.timestamps), channels: blocks.flatMap(\.channels))
            }
            #expect(remote.count > 100_000, "\(remote.count) tags")
            #expect(remote == expected, "remote \(remote.count) tags, local \(expected.count)")
            #expect(interval == localInterval)
            try await pump.enterSafeState()
            #expect(try await pump.get("enabled") == .bool(false))
        }
        let entries = try AuditLog.read(lab.dir.appendingPathComponent("audit.jsonl").path)
        #expect(entries.contains { $0.what.hasPrefix("set enabled") && $0.who.contains("coordinator") && $0.result == "ok" }, "\(entries)")
        #expect(entries.contains { $0.what.hasPrefix("acquire") && $0.result.hasPrefix("ok") })
    }

    @Test func observersAndOtherLabsAreRefused() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: SimulatedLab(seed: 1)))
        try await Self.serving(agent, lab.security(lab.node)) { port in
            // An observer may describe, but not lease or set.
            let observer = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.observer))
            defer { observer.close() }
            #expect(try await observer.describe(timeout: .seconds(60)).count == 2)
            await #expect(throws: NodeError.self) { try await observer.takeLease() }
            let pump = RemoteDevice(name: "pump", descriptor: try await observer.describe(timeout: .seconds(60))[0].descriptor, channels: 0, node: observer, timeout: .seconds(60))
            do {
                try await pump.set("enabled", to: .bool(true))
                Issue.record("an observer set a property")
            } catch let e as DeviceError {
                #expect(e.kind == .rejected && e.detail.contains("observer"), "\(e)")
            }
            // A certificate from another CA fails the handshake: nothing is served to it.
            let intruder = try RemoteNode(
                name: "alice", host: "127.0.0.1", port: port,
                security: .mutualTLS(certificate: lab.stranger.certificate, key: lab.stranger.key, ca: lab.ca.certificatePath))
            defer { intruder.close() }
            await #expect(throws: NodeError.self) { _ = try await intruder.describe(timeout: .seconds(3)) }
        }
    }

    @Test func aRetriedCommandIsAnsweredFromTheRecordNotAppliedTwice() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: SimulatedLab(seed: 1)))
        try await Self.serving(agent, lab.security(lab.node)) { port in
            let node = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            defer { node.close() }
            try await node.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            let request = Herald_Node_V1_SetRequest.with {
                $0.requestID = "set-1"
                $0.device = "pump"
                $0.property = "enabled"
                $0.value = Herald_Node_V1_Value(.bool(true))
            }
            let first = try await node.call("set", timeout: .seconds(60), .set(request)).callResult()
            let second = try await node.call("set", timeout: .seconds(60), .set(request)).callResult()
            #expect(!first.replayed && second.replayed)
        }
    }

    /// The coordinator vanishes (its connection dropped, no release): the node's lease expires
    /// and every device goes safe within 1 s of the expiry.
    @Test func aVanishedCoordinatorLeavesTheNodeSafeWithinALeaseAndASecond() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        let world = SimulatedLab(seed: 1)
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: world))
        try await Self.serving(agent, lab.security(lab.node)) { port in
            let node = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            try await node.takeLease(length: .milliseconds(500))
            let pump = RemoteDevice(name: "pump", descriptor: try await node.describe(timeout: .seconds(60))[0].descriptor, channels: 0, node: node, timeout: .seconds(60))
            try await pump.set("power", to: .quantity(Quantity(5e-3, .power)))
            try await pump.set("enabled", to: .bool(true))
            #expect(await world.pump.enabled)
            let gone = ContinuousClock.now
            node.abandon()  // as a killed coordinator: the connection drops, no release beat
            var safeAfter: Duration?
            while ContinuousClock.now - gone < .seconds(5) {
                if await !world.pump.enabled {
                    safeAfter = ContinuousClock.now - gone
                    break
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let after = try #require(safeAfter, "the pump was still on 5 s after the coordinator vanished")
            // The lease was last renewed at most a quarter of its length before the drop.
            #expect(after < .milliseconds(500) + .seconds(1), "safe after \(after)")
        }
    }
}
