import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldCore
import HeraldNodeProtocol
import Logging
import Synchronization
import X509

/// What a caller may do, from the role in its client certificate's organisational unit.
public enum NodeRole: String, Sendable {
    /// May lease the node, set, acquire and put devices safe.
    case controller
    /// May only describe the node.
    case observer
    /// Another node: controls the devices it serves on another node's behalf (the simulated
    /// world's devices, for the nodes whose mocks live there), like a controller.
    case node
}

/// The devices one node serves, and the rules around them: one controller per device at a
/// time (a lease holder, from its first command), a lease's expiry putting its devices safe,
/// request ids that make a retried command a replay rather than a second application, and the
/// audit log of every command.
public actor NodeAgent {
    public let name: String
    let devices: [String: any Device]
    let order: [String]
    let audit: AuditLog?
    let logger: Logger

    struct Lease {
        var expires: ContinuousClock.Instant
        var length: Duration
    }
    /// Live leases by holder: several controllers may hold one (a simulated world serves two
    /// nodes' devices), but each device has one controller at a time, the first holder that
    /// commanded it, until its lease ends.
    private var leases: [String: Lease] = [:]
    private var claims: [String: String] = [:]
    /// Holders whose lease expired: a late beat of theirs is refused, not a silent renewal.
    private var expired: Set<String> = []
    /// Recent commands by (caller, request id): their results, or the task still running them,
    /// so a retry that arrives while the first is running waits for it instead of running again.
    private var results: [String: Task<Herald_Node_V1_CallResult, Never>] = [:]
    private var resultOrder: [String] = []
    static let rememberedResults = 4096
    /// The node configuration's entries (limits, `safe:` assignments), by device.
    let configs: [String: DeviceConfig]
    /// Whether other nodes (role `node`) may control devices here: only a simulated world's.
    let acceptsNodes: Bool

    public init(
        name: String, devices: [any Device], configs: [DeviceConfig] = [], acceptsNodes: Bool = false, audit: AuditLog? = nil,
        logger: Logger = Logger(label: "herald.node")
    ) {
        self.name = name
        self.devices = Dictionary(devices.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.order = devices.map(\.name)
        self.configs = Dictionary(configs.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.acceptsNodes = acceptsNodes
        self.audit = audit
        self.logger = logger
    }

    public var description: Herald_Node_V1_DescribeResponse {
        .with { r in
            r.node = name
            r.heraldVersion = NodeProtocolVersion.current
            r.devices = order.compactMap { devices[$0] }.map { d in
                .with {
                    $0.name = d.name
                    // The node's limits narrow what the coordinator may ask for.
                    var descriptor = d.descriptor
                    if let narrowed = configs[d.name]?.properties, !narrowed.isEmpty { descriptor.properties = narrowed }
                    $0.driver = Herald_Node_V1_DriverDescriptor(descriptor)
                    $0.channelCount = Int32(clamping: (d as? any TimeTagger)?.channelCount ?? 0)
                    $0.needsWallClock = d.needsWallClock
                    $0.answersWithoutWaiting = d.answersWithoutWaiting
                    $0.streams = d is any StreamingTagger
                }
            }
        }
    }

    // MARK: Leases

    /// Grants or renews `holder`'s lease.
    func beat(holder: String, length: Duration, first: Bool) async -> (granted: Bool, holder: String) {
        // A beat after this holder's lease expired: its devices were put safe; it must start over.
        if !first && leases[holder] == nil && expired.contains(holder) { return (false, "expired") }
        if first { expired.remove(holder) }
        // A new lease stream from a holder that still has one (a coordinator restarted within its
        // lease): the old session ends here, its devices safe, and the new one inherits nothing.
        if first, leases[holder] != nil {
            let mine = order.filter { claims[$0] == holder }
            claims = claims.filter { $0.value != holder }
            leases[holder] = nil
            record(who: holder, what: "lease", device: "", result: "a new session replaces a live one: safe state of \(mine.joined(separator: ", "))")
            await safeState(mine)
        }
        if leases[holder] == nil { record(who: holder, what: "lease", device: "", result: "granted for \(length)") }
        leases[holder] = Lease(expires: .now + length, length: length)
        return (true, holder)
    }

    /// A clean release (the coordinator put its devices safe itself): its devices are free.
    func release(holder: String) {
        guard leases.removeValue(forKey: holder) != nil else { return }
        claims = claims.filter { $0.value != holder }
        record(who: holder, what: "lease", device: "", result: "released")
    }

    /// Called about ten times a second: an expired lease puts every device it controlled safe.
    func checkLease() async {
        let now = ContinuousClock.now
        for (holder, lease) in leases where lease.expires <= now {
            // Re-checked: an earlier holder's safe state awaited, and this one may have renewed.
            guard let current = leases[holder], current.expires <= .now else { continue }
            _ = lease
            leases[holder] = nil
            expired.insert(holder)
            claims = claims.filter { $0.value != holder }
            // Its devices, and any no other live controller holds: nothing is left unattended.
            let mine = order.filter { claims[$0] == nil }
            logger.warning("lease of \(holder) expired: putting \(mine.isEmpty ? "no device" : mine.joined(separator: ", ")) safe")
            record(who: holder, what: "lease", device: "", result: "expired: safe state of \(mine.joined(separator: ", "))")
            await safeState(mine)
        }
    }

    /// Every device at once, each bounded: one hung instrument must not hold the others up.
    /// The configuration's `safe:` assignments run first, then the driver's own safe state.
    func safeState(_ names: [String]) async {
        let work: [(String, any Device, [Assignment])] = names.compactMap { n in devices[n].map { (n, $0, configs[n]?.safeState ?? []) } }
        let outcomes = await withTaskGroup(of: (String, String).self) { group in
            for (name, device, assignments) in work {
                group.addTask {
                    let result: String? = await withTaskGroup(of: String?.self) { g in
                        g.addTask {
                            do {
                                for a in assignments { try await device.set(a.property, to: a.value) }
                                try await device.enterSafeState()
                                return "ok"
                            } catch {
                                return "FAILED: \(error)"
                            }
                        }
                        g.addTask {
                            try? await Task.sleep(for: .seconds(2))
                            return nil
                        }
                        let first = await g.next() ?? nil
                        g.cancelAll()
                        return first
                    }
                    return (name, result ?? "FAILED: no answer within 2 s")
                }
            }
            var all: [(String, String)] = []
            for await o in group { all.append(o) }
            return all
        }
        for (name, result) in outcomes.sorted(by: { $0.0 < $1.0 }) {
            if result != "ok" { logger.critical("\(name): could not enter its safe state: \(result)") }
            record(who: "node", what: "safe state", device: name, result: result)
        }
    }

    /// Throws unless `caller` may control `device` now: a controller with a live lease, and the
    /// device's controller (it becomes so by its first command).
    func requireControl(_ caller: Caller, device: String) throws {
        guard caller.role != .observer else {
            record(who: caller.subject, what: "control", device: device, result: "refused: observer")
            throw RPCError(code: .permissionDenied, message: "\(caller.subject) is an observer: it may describe the node, not control it")
        }
        guard caller.role != .node || acceptsNodes else {
            record(who: caller.subject, what: "control", device: device, result: "refused: node role")
            throw RPCError(code: .permissionDenied, message: "node \(name) accepts no control from other nodes (only a simulated world does)")
        }
        guard let lease = leases[caller.subject], lease.expires > .now else {
            record(who: caller.subject, what: "control", device: device, result: "refused: no lease")
            throw RPCError(code: .failedPrecondition, message: "\(caller.subject) holds no lease on node \(name): take it before controlling it")
        }
        if let holder = claims[device], holder != caller.subject {
            record(who: caller.subject, what: "control", device: device, result: "refused: controlled by \(holder)")
            throw RPCError(code: .failedPrecondition, message: "device '\(device)' on node \(name) is controlled by \(holder)")
        }
        claims[device] = caller.subject
    }

    // MARK: Commands

    func device(_ name: String) throws -> any Device {
        guard let d = devices[name] else {
            throw RPCError(code: .notFound, message: "node \(self.name) serves no device '\(name)'; it serves \(order.joined(separator: ", "))")
        }
        return d
    }

    /// Runs a command once per (caller, request id): a retry gets the first run's result, and
    /// one that arrives while the first still runs waits for it. The caller is authorised and
    /// the device claimed before anything runs. A call cancelled by its client (the coordinator
    /// gone, the call abandoned) is cancelled here too, and once it has stopped its device is
    /// put safe: gRPC does not cancel the handler's task by itself.
    func command(
        _ caller: Caller, requestID: String, what: String, device name: String,
        _ body: @escaping @Sendable (any Device) async throws -> Void
    ) async throws -> Herald_Node_V1_CallResult {
        let d = try device(name)
        try requireControl(caller, device: name)
        let key = caller.subject + "\u{1F}" + requestID
        if !requestID.isEmpty, let earlier = results[key] {
            var r = await earlier.value
            r.replayed = true
            record(who: caller.subject, what: what + " (retry " + requestID + ")", device: name, result: "replayed")
            return r
        }
        let run = Task { () -> Herald_Node_V1_CallResult in
            var result = Herald_Node_V1_CallResult()
            do {
                try await body(d)
            } catch let e as DeviceError {
                result.failure = Herald_Node_V1_DeviceFailure(e)
            } catch is SimulatedHang {
                result.failure = .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = "\(what) did not complete (simulated instrument)" }
            } catch is CancellationError {
                result.failure = .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = "\(what) was cancelled by its caller" }
            } catch {
                result.failure = .with { $0.kind = DeviceError.Kind.invalidResponse.rawValue; $0.detail = "\(what): \(error)" }
            }
            return result
        }
        if !requestID.isEmpty {
            results[key] = run
            resultOrder.append(key)
            if resultOrder.count > Self.rememberedResults { results[resultOrder.removeFirst()] = nil }
        }
        let cancelled = CancelFlag()
        let result = await withRPCCancellationHandler {
            await run.value
        } onCancelRPC: {
            cancelled.set()
            run.cancel()
        }
        record(who: caller.subject, what: what, device: name, result: result.hasFailure ? "\(result.failure.kind): \(result.failure.detail)" : "ok")
        if cancelled.isSet {
            record(who: caller.subject, what: what, device: name, result: "cancelled by its caller: putting the device safe")
            await safeState([name])
        }
        return result
    }

    /// A `set` checked against the node configuration's limits first.
    func checkLimits(device name: String, _ property: String, _ value: Value) throws {
        guard let spec = configs[name]?.properties.first(where: { $0.name == property }) else { return }
        if let problem = spec.problem(with: value) {
            throw DeviceError(device: name, .rejected, "refused by node \(self.name)'s limits: \(property) \(problem)")
        }
    }

    func record(who: String, what: String, device: String, result: String) {
        audit?.append(AuditEntry(time: Date(), who: who, what: what, device: device, result: result))
    }
}

/// The caller of an RPC, from its client certificate (or the loopback plaintext mode, in
/// which the one local caller is a controller).
public struct Caller: Sendable {
    public var subject: String
    public var role: NodeRole
}

/// The node's gRPC service over its agent.
public struct NodeService: Herald_Node_V1_Node.SimpleServiceProtocol {
    let agent: NodeAgent
    /// Loopback plaintext: no certificates, every caller the local controller.
    let plaintext: Bool

    public init(agent: NodeAgent, plaintext: Bool = false) {
        self.agent = agent
        self.plaintext = plaintext
    }

    func caller(_ context: ServerContext) throws -> Caller {
        if plaintext { return Caller(subject: "local (plaintext loopback)", role: .controller) }
        guard let tls = context.transportSpecific as? HTTP2ServerTransport.Posix.Context, let cert = tls.peerCertificate else {
            throw RPCError(code: .unauthenticated, message: "no client certificate")
        }
        return try Caller(certificate: cert)
    }

    public func describe(request: Herald_Node_V1_DescribeRequest, context: ServerContext) async throws -> Herald_Node_V1_DescribeResponse {
        let who = try caller(context)
        await agent.record(who: who.subject, what: "describe", device: "", result: "ok")
        return await agent.description
    }

    public func connect(request: Herald_Node_V1_DeviceRequest, context: ServerContext) async throws -> Herald_Node_V1_CallResult {
        try await agent.command(try caller(context), requestID: request.requestID, what: "connect", device: request.device) {
            try await $0.connect()
        }
    }

    public func set(request: Herald_Node_V1_SetRequest, context: ServerContext) async throws -> Herald_Node_V1_CallResult {
        let value: Value
        do {
            value = try request.value.decoded()
        } catch {
            throw RPCError(code: .invalidArgument, message: "set \(request.device).\(request.property): \(error)")
        }
        let property = request.property, agent = self.agent, name = request.device
        return try await agent.command(try caller(context), requestID: request.requestID, what: "set \(property)=\(value)", device: name) {
            try await agent.checkLimits(device: name, property, value)
            try await $0.set(property, to: value)
        }
    }

    public func get(request: Herald_Node_V1_GetRequest, context: ServerContext) async throws -> Herald_Node_V1_GetResponse {
        let who = try caller(context)
        let d = try await agent.device(request.device)
        try await agent.requireControl(who, device: request.device)
        var response = Herald_Node_V1_GetResponse()
        do {
            response.value = Herald_Node_V1_Value(try await d.get(request.property))
        } catch let e as DeviceError {
            response.failure = Herald_Node_V1_DeviceFailure(e)
        } catch is SimulatedHang {
            response.failure = .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = "get \(request.property) did not complete" }
        }
        return response
    }

    public func safeState(request: Herald_Node_V1_DeviceRequest, context: ServerContext) async throws -> Herald_Node_V1_CallResult {
        try await agent.command(try caller(context), requestID: request.requestID, what: "safe state", device: request.device) {
            try await $0.enterSafeState()
        }
    }

    public func disconnect(request: Herald_Node_V1_DeviceRequest, context: ServerContext) async throws -> Herald_Node_V1_CallResult {
        try await agent.command(try caller(context), requestID: request.requestID, what: "disconnect", device: request.device) {
            await $0.disconnect()
        }
    }

    public func acquire(
        request: Herald_Node_V1_AcquireRequest, response: RPCWriter<Herald_Node_V1_TagBatch>, context: ServerContext
    ) async throws {
        let who = try caller(context)
        guard let tagger = try await agent.device(request.device) as? any TimeTagger else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) is not a time tagger")
        }
        guard request.durationPs > 0, request.durationPs < 1_000_000 * 1_000_000_000_000 else {
            throw RPCError(code: .invalidArgument, message: "an acquisition of \(request.durationPs) ps")
        }
        try await agent.requireControl(who, device: request.device)
        let duration = Duration.nanoseconds(request.durationPs / 1000)
        await agent.record(who: who.subject, what: "acquire \(duration)", device: request.device, result: "started")
        let last = try await guarded(request.device) { () -> Herald_Node_V1_TagBatch in
            var last = Herald_Node_V1_TagBatch()
            do {
                let interval = try await tagger.acquire(for: duration) { block in
                    // Batches go out as they come; the writer waits while the stream's window is
                    // full, so a slow coordinator slows the tagger and memory stays bounded.
                    for batch in try TagCodec.batches(block) { try await response.write(batch) }
                }
                last.interval = .with { $0.startPs = interval.startPs; $0.stopPs = interval.stopPs; $0.tags = Int64(interval.tags) }
            } catch let e as DeviceError {
                last.failure = Herald_Node_V1_DeviceFailure(e)
            } catch is SimulatedHang {
                last.failure = .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = "acquire stopped delivering" }
            } catch let e as NodeProtocolError {
                last.failure = .with { $0.kind = DeviceError.Kind.invalidResponse.rawValue; $0.detail = "the tagger delivered \(e)" }
            }
            return last
        }
        try await response.write(last)
        await agent.record(who: who.subject, what: "acquire \(duration)", device: request.device, result: last.hasFailure ? last.failure.detail : "ok")
    }

    public func configure(request: Herald_Node_V1_ConfigureRequest, context: ServerContext) async throws -> Herald_Node_V1_CallResult {
        let c = request.configuration
        // Checked here as the compiler checks a script: a real entangler must not get garbage timing.
        guard c.cyclePs > 0, c.cyclePs <= 1_000_000_000_000, c.windowStartPs >= 0, c.windowLengthPs > 0,
            c.windowStartPs <= c.cyclePs - c.windowLengthPs, c.timeoutPs >= c.cyclePs, c.timeoutPs <= 3_600_000_000_000_000,
            c.nodes.count == 2, !c.patterns.isEmpty, c.patterns.allSatisfy({ !$0.channels.isEmpty && $0.channels.allSatisfy { (1...255).contains($0) } })
        else {
            throw RPCError(code: .invalidArgument, message: "configure \(request.device): an attempt loop no entangler can run")
        }
        let configuration = EntanglerConfiguration(
            link: c.link, nodes: c.nodes, cyclePs: c.cyclePs, windowStartPs: c.windowStartPs, windowLengthPs: c.windowLengthPs,
            patterns: c.patterns.map { $0.channels.map(Int.init) }, timeoutPs: c.timeoutPs)
        return try await agent.command(try caller(context), requestID: request.requestID, what: "configure link \(c.link)", device: request.device) {
            guard let e = $0 as? any Entangler else { throw DeviceError(device: $0.name, .unsupported, "is not an entangler") }
            try await e.configure(configuration)
        }
    }

    public func runAttemptLoop(request: Herald_Node_V1_DeviceRequest, context: ServerContext) async throws -> Herald_Node_V1_AttemptOutcome {
        let who = try caller(context)
        guard let e = try await agent.device(request.device) as? any Entangler else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) is not an entangler")
        }
        try await agent.requireControl(who, device: request.device)
        let out = try await guarded(request.device) { () -> Herald_Node_V1_AttemptOutcome in
            var out = Herald_Node_V1_AttemptOutcome()
            do {
                switch try await e.runAttemptLoop() {
                case .herald(let t, let p, let n):
                    out.timePs = t
                    out.pattern = Int32(clamping: p)
                    out.attempts = n
                case .timedOut(let n, let stop):
                    out.timePs = stop
                    out.pattern = -1
                    out.attempts = n
                }
            } catch let error as DeviceError {
                out.failure = Herald_Node_V1_DeviceFailure(error)
            } catch is SimulatedHang {
                out.failure = .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = "the attempt loop did not return" }
            }
            return out
        }
        return out
    }

    public func measure(request: Herald_Node_V1_MeasureRequest, context: ServerContext) async throws -> Herald_Node_V1_MeasureResponse {
        let who = try caller(context)
        guard let r = try await agent.device(request.device) as? any QubitReadout else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) is not a qubit readout")
        }
        guard let basis = ReadoutBasis(rawValue: request.basis) else {
            throw RPCError(code: .invalidArgument, message: "basis '\(request.basis)': X, Y or Z")
        }
        try await agent.requireControl(who, device: request.device)
        var out = Herald_Node_V1_MeasureResponse()
        do {
            let m = try await guarded(request.device) { try await r.measure(in: basis) }
            out.outcome = Int32(clamping: m.outcome)
            out.counts = Int64(m.counts)
        } catch let error as DeviceError {
            out.failure = Herald_Node_V1_DeviceFailure(error)
        } catch is SimulatedHang {
            out.failure = .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = "measure did not return" }
        }
        return out
    }

    public func collect(
        request: Herald_Node_V1_DeviceRequest, response: RPCWriter<Herald_Node_V1_TagBatch>, context: ServerContext
    ) async throws {
        let who = try caller(context)
        guard let t = try await agent.device(request.device) as? any StreamingTagger else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) does not stream")
        }
        try await agent.requireControl(who, device: request.device)
        var last = Herald_Node_V1_TagBatch()
        do {
            let (block, interval) = try await t.collect()
            for batch in try TagCodec.batches(block) { try await response.write(batch) }
            last.interval = .with { $0.startPs = interval.startPs; $0.stopPs = interval.stopPs; $0.tags = Int64(interval.tags) }
        } catch let error as DeviceError {
            last.failure = Herald_Node_V1_DeviceFailure(error)
        } catch let e as NodeProtocolError {
            last.failure = .with { $0.kind = DeviceError.Kind.invalidResponse.rawValue; $0.detail = "the tagger delivered \(e)" }
        }
        try await response.write(last)
    }

    public func lease(
        request: RPCAsyncSequence<Herald_Node_V1_LeaseBeat, any Error>, response: RPCWriter<Herald_Node_V1_LeaseStatus>,
        context: ServerContext
    ) async throws {
        let who = try caller(context)
        guard who.role != .observer else {
            throw RPCError(code: .permissionDenied, message: "\(who.subject) is an observer: it may not lease the node")
        }
        // A stream that ends or breaks just stops renewing: the lease then expires on its own,
        // and the devices go safe, unless the coordinator released it with a zero-length beat.
        var first = true
        for try await beat in request {
            defer { first = false }
            if beat.leaseMs == 0 {
                await agent.release(holder: who.subject)
                try await response.write(.with { $0.sequence = beat.sequence; $0.granted = false; $0.holder = "" })
                return
            }
            let length = Duration.milliseconds(min(max(beat.leaseMs, 100), 60_000))
            let (granted, holder) = await agent.beat(holder: who.subject, length: length, first: first)
            try await response.write(.with { $0.sequence = beat.sequence; $0.granted = granted; $0.holder = holder })
            if !granted { return }
        }
    }

    /// Runs a device command so that a cancelled RPC (the coordinator gone, the call abandoned)
    /// puts that device safe: gRPC does not cancel the handler's task by itself.
    /// The caller was authorised before: the call runs as a task of its own, a cancelled RPC
    /// cancels it, and only once it has stopped is the device put safe (a safe state racing
    /// the call could be undone by it).
    func guarded<T: Sendable>(_ device: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let cancelled = CancelFlag()
        let work = Task { try await body() }
        let result = await withRPCCancellationHandler {
            await work.result
        } onCancelRPC: {
            cancelled.set()
            work.cancel()
        }
        if cancelled.isSet {
            await agent.record(who: "node", what: "call cancelled by its caller", device: device, result: "putting the device safe")
            await agent.safeState([device])
        }
        return try result.get()
    }
}

extension Caller {
    /// The subject and role of a client certificate: the role is its organisational unit.
    init(certificate: Certificate) throws {
        let subject = certificate.subject.description
        var role: NodeRole?
        for rdn in certificate.subject {
            for attribute in rdn where attribute.type == .RDNAttributeType.organizationalUnitName {
                role = NodeRole(rawValue: String(describing: attribute.value))
            }
        }
        guard let role else {
            throw RPCError(code: .permissionDenied, message: "certificate \(subject) carries no role (OU=controller or OU=observer)")
        }
        self.init(subject: subject, role: role)
    }
}

public enum NodeProtocolVersion {
    public static let current = "herald-node/1"
}

/// Set once, from any thread: whether a call's client cancelled it.
final class CancelFlag: Sendable {
    private let flag = Mutex(false)
    func set() { flag.withLock { $0 = true } }
    var isSet: Bool { flag.withLock { $0 } }
}
