import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import HeraldMonitor
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
@Suite(.serialized, .timeLimit(.minutes(2))) struct NodeTests {
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

    /// The node's pump and tagger as remote devices, connected, with the pump on at 10 mW.
    static func pumpOnAndTagger(
        _ node: RemoteNode, _ described: [(name: String, descriptor: DriverDescriptor, channels: Int, streams: Bool)]
    ) async throws -> (pump: RemoteDevice, tagger: RemoteDevice) {
        let pumpInfo = try #require(described.first { $0.name == "pump" })
        let taggerInfo = try #require(described.first { $0.name == "tagger" })
        let pump = RemoteDevice(name: "pump", descriptor: pumpInfo.descriptor, channels: 0, node: node, timeout: .seconds(60))
        let tagger = RemoteDevice(name: "tagger", descriptor: taggerInfo.descriptor, channels: 4, node: node, timeout: .seconds(60))
        try await pump.connect()
        try await tagger.connect()
        try await pump.set("power", to: .quantity(Quantity(10e-3, .power)))
        try await pump.set("enabled", to: .bool(true))
        return (pump, tagger)
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

    /// `herald node serve --metrics`: the node's /metrics, scraped over HTTP, counts the
    /// commands it executed and the tags it streamed, and shows the live lease.
    @Test func aNodesMetricsCountItsCommandsTagsAndLeases() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        var parameters = LabParameters()
        parameters.pairRate = 2e5
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: SimulatedLab(parameters: parameters, seed: 3)))
        let figures = NodeMetrics()
        let metrics = MetricsServer(configuration: MonitorConfiguration(host: "127.0.0.1", port: 0, token: "node-metrics-token-0123")) {
            let s = await agent.stats
            return figures.exposition(.init(node: s.name, devices: s.devices, leaseHolders: s.leaseHolders, commands: s.commands, tagsStreamed: s.tagsStreamed))
        }
        let port = try await metrics.start()
        @Sendable func scrape(token: String?) async throws -> (Int, String) {
            var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/metrics")))
            if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
            let (data, response) = try await URLSession.shared.data(for: request)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
        }
        let streamed = try await Self.serving(agent, lab.security(lab.node)) { nodePort in
            let node = try RemoteNode(name: "alice", host: "127.0.0.1", port: nodePort, security: lab.security(lab.controller))
            defer { node.close() }
            let described = try await node.describe(timeout: .seconds(60))
            try await node.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            let (_, tagger) = try await Self.pumpOnAndTagger(node, described)
            let n = Mutex(0)
            _ = try await tagger.acquire(for: .milliseconds(200)) { block in n.withLock { $0 += block.count } }
            let (status, text) = try await scrape(token: "node-metrics-token-0123")
            #expect(status == 200)
            #expect(text.contains("herald_node_leases{node=\"alice\"} 1"), "\(text)")
            return (n.withLock { $0 }, text)
        }
        let (status, text) = try await scrape(token: "node-metrics-token-0123")
        #expect(status == 200)
        #expect(streamed.0 > 1000)
        #expect(text.contains("herald_node_up{node=\"alice\"} 1"), "\(text)")
        #expect(text.contains("herald_node_devices{node=\"alice\"} 2"))
        #expect(text.contains("herald_node_tags_streamed_total{node=\"alice\"} \(streamed.0)"), "\(text)")
        let commands = await agent.stats.commands
        #expect(commands >= 3 && text.contains("herald_node_commands_total{node=\"alice\"} \(commands)"), "\(text)")
        #expect(try await scrape(token: nil).0 == 401)
        #expect(try await scrape(token: "wrong-token-wrong-token").0 == 401)
        await metrics.stop()
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
            let (pump, tagger) = try await Self.pumpOnAndTagger(node, described)
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

    /// Two coordinators with one certificate (a restarted one, or a second started by mistake):
    /// the second lease replaces the first, whose devices go safe, and whose session and beats
    /// are refused from then on. Leases keyed by the certificate alone would let both drive.
    @Test func aSecondSessionOfOneCertificateReplacesTheFirst() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        let world = SimulatedLab(seed: 1)
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: world))
        try await Self.serving(agent, lab.security(lab.node)) { port in
            let first = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            let second = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            defer {
                first.close()
                second.close()
            }
            let descriptor = try await first.describe(timeout: .seconds(60))[0].descriptor
            try await first.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            let pumpByFirst = RemoteDevice(name: "pump", descriptor: descriptor, channels: 0, node: first, timeout: .seconds(60))
            try await pumpByFirst.set("power", to: .quantity(Quantity(5e-3, .power)))
            try await pumpByFirst.set("enabled", to: .bool(true))
            #expect(await world.pump.enabled)
            try await second.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            // The replaced session's devices were put safe.
            #expect(await !world.pump.enabled)
            do {
                try await pumpByFirst.set("enabled", to: .bool(true))
                Issue.record("the replaced session still drives the pump")
            } catch let e as DeviceError {
                #expect(e.detail.contains("replaced") || e.kind == .disconnected, "\(e)")
            }
            #expect(await !world.pump.enabled)
            // Its next beat is answered "replaced": the first coordinator learns it lost the node.
            let lost = await first.lost()
            #expect(lost.detail.contains("another session of the same certificate"), "\(lost)")
            let pumpBySecond = RemoteDevice(name: "pump", descriptor: descriptor, channels: 0, node: second, timeout: .seconds(60))
            try await pumpBySecond.set("enabled", to: .bool(true))
            #expect(await world.pump.enabled)
        }
    }

    /// An observer watches what the node does: a controller's commands arrive as events with
    /// who, what and the result; the observer still may not command anything.
    @Test func anObserverWatchesTheNodesCommands() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: SimulatedLab(seed: 1)))
        try await Self.serving(agent, lab.security(lab.node)) { port in
            let observer = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.observer))
            let controller = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            defer {
                observer.close()
                controller.close()
            }
            let (events, seen) = AsyncStream<Herald_Node_V1_NodeEvent>.makeStream()
            let subscribed = AsyncStream<Void>.makeStream()
            let watching = Task {
                try await observer.node.watch(.init(), options: observer.options(timeout: .seconds(60))) { response in
                    for try await event in response.messages {
                        if event.what == "watch" { subscribed.continuation.yield() }
                        seen.yield(event)
                    }
                }
            }
            defer { watching.cancel() }
            // Subscribed once the watcher's own event comes back.
            for await _ in subscribed.stream { break }
            try await controller.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            let descriptor = try await controller.describe(timeout: .seconds(60))[0].descriptor
            let pump = RemoteDevice(name: "pump", descriptor: descriptor, channels: 0, node: controller, timeout: .seconds(60))
            try await pump.set("enabled", to: .bool(true))
            _ = try await pump.get("enabled")
            var got: [Herald_Node_V1_NodeEvent] = []
            for await e in events {
                got.append(e)
                if e.what.hasPrefix("get enabled") { break }
            }
            let set = try #require(got.first { $0.what.hasPrefix("set enabled") })
            #expect(set.who.contains("coordinator") && set.device == "pump" && set.result == "ok")
            #expect(got.contains { $0.what == "lease" && $0.result.hasPrefix("granted") })
            #expect(got.allSatisfy { $0.dropped == 0 })
            // Watching gives no control.
            let asObserver = RemoteDevice(name: "pump", descriptor: descriptor, channels: 0, node: observer, timeout: .seconds(60))
            await #expect(throws: DeviceError.self) { try await asObserver.set("enabled", to: .bool(false)) }
        }
    }

    /// A coordinator whose connection dropped and came back within its lease carries the lease
    /// on: its devices stay as they were. One that comes back after the lease expired starts a
    /// new one, its devices already safe.
    @Test func aLeaseIsResumedOnlyWhileItIsLive() async throws {
        let world = SimulatedLab(seed: 1)
        let agent = NodeAgent(name: "alice", devices: try Self.devices(lab: world))
        let who = Caller(subject: "CN=coordinator", role: .controller)
        let grant = await agent.beat(holder: who.subject, length: .milliseconds(300), first: true, token: "t1")
        #expect(grant.granted && grant.token == "t1")
        _ = try await agent.command(who, token: "t1", requestID: "", what: "set", device: "pump") { try await $0.set("enabled", to: .bool(true)) }
        #expect(await world.pump.enabled)
        // A new stream naming the live lease: carried on, the pump untouched.
        let resumed = await agent.beat(holder: who.subject, length: .milliseconds(300), first: true, token: "t2", resume: "t1")
        #expect(resumed.granted && resumed.resumed && resumed.token == "t1")
        #expect(await world.pump.enabled)
        // Past the lease: it expires (the pump goes safe), and naming it later starts afresh.
        try await Task.sleep(for: .milliseconds(400))
        await agent.checkLease()
        #expect(await !world.pump.enabled)
        let late = await agent.beat(holder: who.subject, length: .milliseconds(300), first: true, token: "t3", resume: "t1")
        #expect(late.granted && !late.resumed && late.token == "t3")
        // The old token commands nothing.
        await #expect(throws: RPCError.self) {
            _ = try await agent.command(who, token: "t1", requestID: "", what: "set", device: "pump") { try await $0.set("enabled", to: .bool(true)) }
        }
        #expect(await !world.pump.enabled)
    }

    /// `on_loss:` is checked like every other key, at its line and column, and compiles to the
    /// node's policy.
    @Test func theLossPolicyIsValidatedAtItsPlace() throws {
        var compiler = Herald.compiler(registry: Herald.descriptorRegistry)
        compiler.nodeCatalogue = ["alice": [:], "bob": [:], "carol": [:], "dave": [:]]
        let text = """
            herald: 1
            name: policies
            nodes:
              alice: {address: '127.0.0.1:50051', on_loss: {reconnect_within: 30 s}}
              bob: {address: '127.0.0.1:50052', on_loss: fail}
              carol: {address: '127.0.0.1:50053', on_loss: maybe}
              dave: {address: '127.0.0.1:50054', on_loss: {reconnect_within: 2 h}}
            devices: {}
            steps: []
            """
        do {
            _ = try compiler.compile(text: text, file: "policies.yaml", mock: false)
            Issue.record("the script compiled")
        } catch let errors as ScriptErrors {
            let text = errors.diagnostics.map { "\($0.location.line):\($0.location.column) \($0.message)" }
            #expect(errors.diagnostics.contains { $0.location.line == 6 && $0.message.contains("'fail' or {reconnect_within") }, "\(text)")
            #expect(errors.diagnostics.contains { $0.location.line == 7 && $0.message.contains("between 1 s and 1 h") }, "\(text)")
            #expect(!errors.diagnostics.contains { $0.location.line == 4 || $0.location.line == 5 }, "\(text)")
        }
        let good = try compiler.compile(
            text: text.replacingOccurrences(of: "on_loss: maybe", with: "on_loss: fail").replacingOccurrences(of: "2 h", with: "10 min"),
            file: "policies.yaml", mock: false)
        let policies = Dictionary(uniqueKeysWithValues: good.plan.nodes.map { ($0.name, $0.reconnectWithin) })
        #expect(policies["alice"] == .some(.seconds(30)) && policies["bob"] == .some(nil) && policies["dave"] == .some(.seconds(600)))
    }

    /// An instrument that takes its time to answer a set, and says when it was put safe.
    final class SlowInstrument: Device, @unchecked Sendable {
        let name = "stage"
        let descriptor = DriverDescriptor(
            id: "test.slow", version: "1", summary: "answers a set after 30 s", kind: .laser,
            properties: [PropertySpec("enabled", .bool, settable: true)])
        let safe = Mutex(0)
        func connect() async throws {}
        func set(_ property: String, to value: Value) async throws { try await Task.sleep(for: .seconds(30)) }
        func get(_ property: String) async throws -> Value { .bool(false) }
        // Takes a moment, as an instrument does: a safe state run from the cancelled call's
        // own task would be cut short here.
        func enterSafeState() async throws {
            try await Task.sleep(for: .milliseconds(10))
            safe.withLock { $0 += 1 }
        }
        func disconnect() async {}
    }

    /// A call the coordinator gives up on (its deadline passed) is cancelled on the node, and
    /// the device of that call is put safe: gRPC would not cancel the handler by itself.
    @Test func anAbandonedCallPutsItsDeviceSafe() async throws {
        let lab = try Lab()
        defer { try? FileManager.default.removeItem(at: lab.dir) }
        let instrument = SlowInstrument()
        let agent = NodeAgent(name: "alice", devices: [instrument])
        try await Self.serving(agent, lab.security(lab.node)) { port in
            let node = try RemoteNode(name: "alice", host: "127.0.0.1", port: port, security: lab.security(lab.controller))
            defer { node.close() }
            try await node.takeLease(length: .seconds(10), lossAfter: .seconds(30))
            let stage = RemoteDevice(name: "stage", descriptor: instrument.descriptor, channels: 0, node: node, timeout: .milliseconds(300))
            let asked = ContinuousClock.now
            do {
                try await stage.set("enabled", to: .bool(true))
                Issue.record("a 30 s set answered within its 0.3 s deadline")
            } catch let e as DeviceError {
                #expect(e.kind == .timeout, "\(e)")
            }
            // The deadline (0.3 s, checked every 50 ms) cancels the call on the node, which puts the stage safe.
            while instrument.safe.withLock({ $0 }) == 0, ContinuousClock.now - asked < .seconds(5) {
                try await Task.sleep(for: .milliseconds(20))
            }
            let after = ContinuousClock.now - asked
            #expect(instrument.safe.withLock { $0 } == 1, "the stage was not put safe")
            #expect(after < .seconds(2), "safe \(after) after the call")
            // The session goes on: the next call is answered.
            #expect(try await stage.get("enabled") == .bool(false))
        }
    }
}
