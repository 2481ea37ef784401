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
        /// New for every lease stream: commands present it, so a second session of the same
        /// certificate (a restarted coordinator, a second one started by mistake) replaces the
        /// first, whose commands are then refused.
        var token: String
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
    /// For `/metrics`: commands executed and tags streamed since the node started.
    private var commandsHandled = 0
    private var tagsStreamed = 0

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

    /// What `herald node serve --metrics` reports: the devices, who holds a live lease, and
    /// the work done so far.
    public struct Stats: Sendable, Equatable {
        public var name: String
        public var devices: [String]
        public var leaseHolders: [String]
        public var commands: Int
        public var tagsStreamed: Int
    }

    public var stats: Stats {
        let now = ContinuousClock.now
        return Stats(
            name: name, devices: order, leaseHolders: leases.filter { $0.value.expires > now }.keys.sorted(), commands: commandsHandled,
            tagsStreamed: tagsStreamed)
    }

    func streamed(_ tags: Int) { tagsStreamed += tags }
    func commandHandled() { commandsHandled += 1 }

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

    /// Watchers of the node's events (`Watch`), each with the count of events it missed.
    private var watchers: [UInt64: (AsyncStream<Herald_Node_V1_NodeEvent>.Continuation, Int64)] = [:]
    private var nextWatcher: UInt64 = 0

    /// What a beat got: the grant, and the token the stream carries from now on.
    struct Grant {
        var granted: Bool
        var holder: String
        var token: String
        var resumed = false
    }

    /// Grants or renews `holder`'s lease; `token` is the one this lease stream presents. A
    /// stream's first beat may name the live lease it carries on (`resume`: a coordinator whose
    /// connection dropped and came back within the lease), which then keeps its devices as they are.
    func beat(holder: String, length: Duration, first: Bool, token: String, resume: String = "") async -> Grant {
        if first, !resume.isEmpty, let live = leases[holder], live.token == resume, live.expires > .now {
            leases[holder]?.expires = .now + length
            record(who: holder, what: "lease", device: "", result: "resumed on a new connection")
            return Grant(granted: true, holder: holder, token: resume, resumed: true)
        }
        // A beat after this holder's lease expired: its devices were put safe; it must start over.
        if !first && leases[holder]?.token != token && expired.contains(holder) { return Grant(granted: false, holder: "expired", token: token) }
        // A beat of a session that another one of the same holder replaced.
        if !first, let live = leases[holder], live.token != token { return Grant(granted: false, holder: "replaced", token: token) }
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
        leases[holder] = Lease(expires: .now + length, length: length, token: token)
        return Grant(granted: true, holder: holder, token: token)
    }

    /// Grants a lease outside a lease stream (the fuzzer's controller), with its token.
    public func grantLease(holder: String, length: Duration, token: String) async {
        _ = await beat(holder: holder, length: length, first: true, token: token)
    }

    /// A clean release (the coordinator put its devices safe itself): its devices are free.
    func release(holder: String, token: String) {
        guard leases[holder]?.token == token else { return }
        leases[holder] = nil
        claims = claims.filter { $0.value != holder }
        record(who: holder, what: "lease", device: "", result: "released")
    }

    /// A session ended (its stream broke or closed) with calls still running on `devices`: they
    /// were cancelled and put safe. The lease ends with them, as if it had expired, so the
    /// coordinator learns its devices were disturbed (its next beat is answered "expired") and,
    /// with a reconnection policy, restores them on a new lease instead of resuming this one.
    func sessionAbandoned(holder: String, token: String, devices abandoned: [String]) async {
        guard let lease = leases[holder], lease.token == token else { return }
        leases[holder] = nil
        expired.insert(holder)
        let mine = order.filter { claims[$0] == holder }
        claims = claims.filter { $0.value != holder }
        record(
            who: holder, what: "session", device: "",
            result: "ended with calls running on \(abandoned.joined(separator: ", ")): lease ended, safe state of \(mine.joined(separator: ", "))")
        await safeState(mine.filter { !abandoned.contains($0) })
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
    /// It runs as a task of its own: a safe state asked for by a call being cancelled (an
    /// abandoned session's) must not inherit that cancellation, which would cut its device
    /// calls and its 2 s bound short.
    func safeState(_ names: [String]) async {
        await Task { await self.performSafeState(names) }.value
    }

    private func performSafeState(_ names: [String]) async {
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

    /// Throws unless `caller` may control `device` now: a controller with a live lease whose
    /// token it presents, and the device's controller (it becomes so by its first command).
    func requireControl(_ caller: Caller, token: String, device: String) throws {
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
        guard lease.token == token else {
            record(who: caller.subject, what: "control", device: device, result: "refused: the token of an ended lease")
            throw RPCError(
                code: .failedPrecondition,
                message: "\(caller.subject) presents the token of a lease on node \(name) that another session of the same certificate replaced")
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
        _ caller: Caller, token: String, requestID: String, what: String, device name: String,
        _ body: @escaping @Sendable (any Device) async throws -> Void
    ) async throws -> Herald_Node_V1_CallResult {
        let d = try device(name)
        try requireControl(caller, token: token, device: name)
        // Scoped to the lease: a retry on the same lease is answered from the record; one on a
        // new lease (its devices were put safe when the old one ended) runs again.
        let key = caller.subject + "\u{1F}" + token + "\u{1F}" + requestID
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
        let (result, cancelled) = await awaitCancellably(run)
        record(who: caller.subject, what: what, device: name, result: result.hasFailure ? "\(result.failure.kind): \(result.failure.detail)" : "ok")
        if cancelled {
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

    /// Writes an entry to the audit log and hands it to every watcher; a watcher that is
    /// behind loses it (counted), the node never waits for one.
    func record(who: String, what: String, device: String, result: String) {
        let now = Date()
        audit?.append(AuditEntry(time: now, who: who, what: what, device: device, result: result))
        guard !watchers.isEmpty else { return }
        for (id, (continuation, dropped)) in watchers {
            let event = Herald_Node_V1_NodeEvent.with {
                $0.timeUnixMs = Int64((now.timeIntervalSince1970 * 1000).rounded())
                $0.who = who
                $0.what = what
                $0.device = device
                $0.result = result
                $0.dropped = dropped
            }
            switch continuation.yield(event) {
            case .dropped: watchers[id]?.1 = dropped + 1
            case .enqueued: watchers[id]?.1 = 0
            case .terminated: watchers[id] = nil
            @unknown default: break
            }
        }
    }

    /// A stream of the node's events from now on, buffered up to 1024.
    func watch() -> (UInt64, AsyncStream<Herald_Node_V1_NodeEvent>) {
        let (stream, continuation) = AsyncStream<Herald_Node_V1_NodeEvent>.makeStream(bufferingPolicy: .bufferingOldest(1024))
        nextWatcher += 1
        watchers[nextWatcher] = (continuation, 0)
        return (nextWatcher, stream)
    }

    func unwatch(_ id: UInt64) {
        watchers.removeValue(forKey: id)?.0.finish()
    }
}

/// The caller of an RPC, from its client certificate (or the loopback plaintext mode, in
/// which the one local caller is a controller).
public struct Caller: Sendable {
    public var subject: String
    public var role: NodeRole

    public init(subject: String, role: NodeRole) {
        self.subject = subject
        self.role = role
    }
}

/// The node's gRPC service over its agent.
public struct NodeService: Herald_Node_V1_Node.SimpleServiceProtocol {
    let agent: NodeAgent
    /// Loopback plaintext: no certificates, every caller the local controller.
    let plaintext: Bool
    /// Calls one session may have running at once: a controller cannot make the node spawn
    /// without bound.
    static let callsPerSession = 64

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

    // MARK: The session

    public func session(
        request: RPCAsyncSequence<Herald_Node_V1_Command, any Error>, response: RPCWriter<Herald_Node_V1_Reply>, context: ServerContext
    ) async throws {
        let who = try caller(context)
        guard who.role != .observer else {
            await agent.record(who: who.subject, what: "session", device: "", result: "refused: observer")
            throw RPCError(code: .permissionDenied, message: "\(who.subject) is an observer: it may describe and watch the node, not control it")
        }
        // Replies go out through one writer, in the order calls finish. A controller that sends
        // commands and never reads the replies would make them pile up: past 1024 unsent, the
        // session ends.
        let (replies, out) = AsyncStream<Herald_Node_V1_Reply>.makeStream()
        let calls = SessionCalls()
        let writer = Task {
            for await reply in replies {
                try await response.write(reply)
                calls.sent()
            }
        }
        var token: String?
        do {
            for try await command in request {
                let id = command.call
                guard calls.unsent < 1024 else {
                    throw RPCError(code: .resourceExhausted, message: "more than 1024 replies unread: the session ends")
                }
                calls.queued()
                switch command.kind {
                case .open(let open)?:
                    token = open.leaseToken
                    calls.sent()  // no reply
                case .cancel(let call)?:
                    calls.cancel(call)
                    calls.sent()
                case nil:
                    out.yield(.refusal(id, .invalidArgument, "a command with nothing in it"))
                case let kind?:
                    guard let token else {
                        out.yield(.refusal(id, .failedPrecondition, "open the session with the lease's token first"))
                        continue
                    }
                    guard calls.count < Self.callsPerSession else {
                        out.yield(.refusal(id, .resourceExhausted, "more than \(Self.callsPerSession) calls running in one session"))
                        continue
                    }
                    guard !calls.isRunning(id) else {
                        out.yield(.refusal(id, .alreadyExists, "call \(id) is already running in this session"))
                        continue
                    }
                    // Calls to one device run in the order they came; calls to others beside them.
                    let device = kind.device
                    let before = calls.last(for: device)
                    calls.reserve(id, device: device)
                    let task = Task {
                        await before?.value
                        let reply = await self.execute(kind, call: id, caller: who, token: token)
                        calls.finished(id, device: device)
                        out.yield(reply)
                    }
                    calls.started(id, device: device, task)
                }
            }
        } catch let e as RPCError where e.code == .resourceExhausted {
            let abandoned = await calls.cancelAll()
            if let token, !abandoned.isEmpty { await agent.sessionAbandoned(holder: who.subject, token: token, devices: abandoned) }
            out.finish()
            writer.cancel()
            throw e
        } catch {
            // The stream broke: treated as its end.
        }
        // The session is over: calls still running are abandoned, and put their devices safe;
        // the lease ends with them (see NodeAgent.sessionAbandoned).
        let abandoned = await calls.cancelAll()
        if let token, !abandoned.isEmpty { await agent.sessionAbandoned(holder: who.subject, token: token, devices: abandoned) }
        out.finish()
        try? await writer.value
    }

    /// One session command outside a stream, as the session would run it (tools, and the
    /// fuzzer, which feeds it mutated messages).
    public func handle(_ command: Herald_Node_V1_Command, caller: Caller, token: String) async -> Herald_Node_V1_Reply {
        guard let kind = command.kind else { return .refusal(command.call, .invalidArgument, "a command with nothing in it") }
        return await execute(kind, call: command.call, caller: caller, token: token)
    }

    /// One session command, as its reply: refusals (authorisation, lease, arguments) travel as
    /// `CallError`s with the gRPC code a unary call would have failed with.
    func execute(_ kind: Herald_Node_V1_Command.OneOf_Kind, call: UInt64, caller who: Caller, token: String) async -> Herald_Node_V1_Reply {
        await agent.commandHandled()
        var reply = Herald_Node_V1_Reply()
        reply.call = call
        do {
            switch kind {
            case .connect(let r):
                reply.result = try await agent.command(who, token: token, requestID: r.requestID, what: "connect", device: r.device) {
                    try await $0.connect()
                }
            case .set(let r):
                reply.result = try await set(r, who, token)
            case .get(let r):
                reply.get = try await get(r, who, token)
            case .safeState(let r):
                reply.result = try await agent.command(who, token: token, requestID: r.requestID, what: "safe state", device: r.device) {
                    try await $0.enterSafeState()
                }
            case .disconnect(let r):
                reply.result = try await agent.command(who, token: token, requestID: r.requestID, what: "disconnect", device: r.device) {
                    await $0.disconnect()
                }
            case .configure(let r):
                reply.result = try await configure(r, who, token)
            case .runAttemptLoop(let r):
                reply.attempt = try await runAttemptLoop(r, who, token)
            case .measure(let r):
                reply.measure = try await measure(r, who, token)
            case .open, .cancel:
                throw RPCError(code: .invalidArgument, message: "not a device command")
            }
        } catch let e as RPCError {
            reply.error = .with {
                $0.code = Int32(e.code.rawValue)
                $0.message = e.message
            }
        } catch {
            reply.error = .with {
                $0.code = Int32(RPCError.Code.internalError.rawValue)
                $0.message = "\(error)"
            }
        }
        return reply
    }

    func set(_ request: Herald_Node_V1_SetRequest, _ who: Caller, _ token: String) async throws -> Herald_Node_V1_CallResult {
        let value: Value
        do {
            value = try request.value.decoded()
        } catch {
            throw RPCError(code: .invalidArgument, message: "set \(request.device).\(request.property): \(error)")
        }
        let property = request.property, agent = self.agent, name = request.device
        return try await agent.command(who, token: token, requestID: request.requestID, what: "set \(property)=\(value)", device: name) {
            try await agent.checkLimits(device: name, property, value)
            try await $0.set(property, to: value)
        }
    }

    func get(_ request: Herald_Node_V1_GetRequest, _ who: Caller, _ token: String) async throws -> Herald_Node_V1_GetResponse {
        let d = try await agent.device(request.device)
        try await agent.requireControl(who, token: token, device: request.device)
        var response = Herald_Node_V1_GetResponse()
        do {
            response.value = Herald_Node_V1_Value(try await guarded(request.device) { try await d.get(request.property) })
        } catch {
            guard let failure = Self.deviceFailure(error, hang: "get \(request.property) did not complete") else { throw error }
            response.failure = failure
        }
        await agent.record(
            who: who.subject, what: "get \(request.property)", device: request.device,
            result: response.hasFailure ? "\(response.failure.kind): \(response.failure.detail)" : "\(response.value)")
        return response
    }

    func configure(_ request: Herald_Node_V1_ConfigureRequest, _ who: Caller, _ token: String) async throws -> Herald_Node_V1_CallResult {
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
        return try await agent.command(who, token: token, requestID: request.requestID, what: "configure link \(c.link)", device: request.device) {
            guard let e = $0 as? any Entangler else { throw DeviceError(device: $0.name, .unsupported, "is not an entangler") }
            try await e.configure(configuration)
        }
    }

    func runAttemptLoop(_ request: Herald_Node_V1_DeviceRequest, _ who: Caller, _ token: String) async throws -> Herald_Node_V1_AttemptOutcome {
        guard let e = try await agent.device(request.device) as? any Entangler else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) is not an entangler")
        }
        try await agent.requireControl(who, token: token, device: request.device)
        var out = Herald_Node_V1_AttemptOutcome()
        do {
            switch try await guarded(request.device, { try await e.runAttemptLoop() }) {
            case .herald(let t, let p, let n):
                out.timePs = t
                out.pattern = Int32(clamping: p)
                out.attempts = n
            case .timedOut(let n, let stop):
                out.timePs = stop
                out.pattern = -1
                out.attempts = n
            }
        } catch {
            guard let failure = Self.deviceFailure(error, hang: "the attempt loop did not return") else { throw error }
            out.failure = failure
        }
        let result =
            out.hasFailure
            ? "\(out.failure.kind): \(out.failure.detail)"
            : out.pattern >= 0 ? "herald, pattern \(out.pattern), after \(out.attempts) attempts" : "no herald in \(out.attempts) attempts"
        await agent.record(who: who.subject, what: "attempt loop", device: request.device, result: result)
        return out
    }

    func measure(_ request: Herald_Node_V1_MeasureRequest, _ who: Caller, _ token: String) async throws -> Herald_Node_V1_MeasureResponse {
        guard let r = try await agent.device(request.device) as? any QubitReadout else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) is not a qubit readout")
        }
        guard let basis = ReadoutBasis(rawValue: request.basis) else {
            throw RPCError(code: .invalidArgument, message: "basis '\(request.basis)': X, Y or Z")
        }
        try await agent.requireControl(who, token: token, device: request.device)
        var out = Herald_Node_V1_MeasureResponse()
        do {
            let m = try await guarded(request.device) { try await r.measure(in: basis) }
            out.outcome = Int32(clamping: m.outcome)
            out.counts = Int64(m.counts)
        } catch {
            guard let failure = Self.deviceFailure(error, hang: "measure did not return") else { throw error }
            out.failure = failure
        }
        await agent.record(
            who: who.subject, what: "measure \(basis.rawValue)", device: request.device,
            result: out.hasFailure ? "\(out.failure.kind): \(out.failure.detail)" : "outcome \(out.outcome) (\(out.counts) counts)")
        return out
    }

    // MARK: Streams

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
        var group: AcquisitionGroup?
        if !request.groupID.isEmpty {
            guard let id = UUID(uuidString: request.groupID), (2...64).contains(request.groupMembers.count),
                request.groupMembers.allSatisfy({ (1...256).contains($0.utf8.count) })
            else {
                throw RPCError(code: .invalidArgument, message: "an acquisition group must be a UUID and 2–64 member names")
            }
            group = AcquisitionGroup(id: id, members: request.groupMembers)
        }
        try await agent.requireControl(who, token: request.leaseToken, device: request.device)
        let duration = Duration.nanoseconds(request.durationPs / 1000)
        await agent.record(who: who.subject, what: "acquire \(duration)", device: request.device, result: "started")
        let inGroup = group
        let last = try await guarded(request.device) { () -> Herald_Node_V1_TagBatch in
            var last = Herald_Node_V1_TagBatch()
            do {
                // Batches go out as they come; the writer waits while the stream's window is
                // full, so a slow coordinator slows the tagger and memory stays bounded.
                let deliver: @Sendable (TagBlock) async throws -> Void = { block in
                    for batch in try TagCodec.batches(block) { try await response.write(batch) }
                    await agent.streamed(block.count)
                }
                // A group's taggers on this node start together; one that cannot starts on the call.
                let interval: AcquisitionInterval
                if let group = inGroup, let grouped = tagger as? any GroupAcquiringTagger {
                    interval = try await grouped.acquire(for: duration, group: group, deliver: deliver)
                } else {
                    interval = try await tagger.acquire(for: duration, deliver: deliver)
                }
                last.interval = Herald_Node_V1_Interval(interval)
            } catch {
                guard let failure = Self.deviceFailure(error, hang: "acquire stopped delivering") else { throw error }
                last.failure = failure
            }
            return last
        }
        try await response.write(last)
        await agent.record(
            who: who.subject, what: "acquire \(duration)", device: request.device,
            result: last.hasFailure ? last.failure.detail : "ok: \(last.interval.tags) tags")
    }

    public func collect(
        request: Herald_Node_V1_CollectRequest, response: RPCWriter<Herald_Node_V1_TagBatch>, context: ServerContext
    ) async throws {
        let who = try caller(context)
        guard let t = try await agent.device(request.device) as? any StreamingTagger else {
            throw RPCError(code: .invalidArgument, message: "'\(request.device)' on node \(agent.name) does not stream")
        }
        try await agent.requireControl(who, token: request.leaseToken, device: request.device)
        var last = Herald_Node_V1_TagBatch()
        do {
            let (block, interval) = try await guarded(request.device) { try await t.collect() }
            for batch in try TagCodec.batches(block) { try await response.write(batch) }
            await agent.streamed(block.count)
            last.interval = Herald_Node_V1_Interval(interval)
        } catch {
            // A collection has no hang of its own to report: a simulated one fails the call.
            guard let failure = Self.deviceFailure(error, hang: nil) else { throw error }
            last.failure = failure
        }
        try await response.write(last)
        await agent.record(
            who: who.subject, what: "collect", device: request.device,
            result: last.hasFailure ? last.failure.detail : "ok: \(last.interval.tags) tags")
    }

    public func watch(request: Herald_Node_V1_WatchRequest, response: RPCWriter<Herald_Node_V1_NodeEvent>, context: ServerContext) async throws {
        let who = try caller(context)
        // Subscribed first: the watcher's own subscription is its first event.
        let (id, events) = await agent.watch()
        await agent.record(who: who.subject, what: "watch", device: "", result: "subscribed")
        let agent = self.agent
        // A cancelled call (the watcher gone) ends the subscription.
        await withRPCCancellationHandler {
            for await event in events {
                do { try await response.write(event) } catch { break }
            }
        } onCancelRPC: {
            Task { await agent.unwatch(id) }
        }
        await agent.unwatch(id)
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
        var token = UUID().uuidString
        var first = true
        for try await beat in request {
            defer { first = false }
            if beat.leaseMs == 0 {
                await agent.release(holder: who.subject, token: token)
                try await response.write(.with { $0.sequence = beat.sequence; $0.granted = false; $0.holder = "" })
                return
            }
            let length = Duration.milliseconds(min(max(beat.leaseMs, 100), 60_000))
            let grant = await agent.beat(
                holder: who.subject, length: length, first: first, token: token, resume: first ? beat.resumeToken : "")
            token = grant.token
            try await response.write(
                .with {
                    $0.sequence = beat.sequence
                    $0.granted = grant.granted
                    $0.holder = grant.holder
                    $0.resumed = grant.resumed
                    if grant.granted { $0.token = grant.token }
                })
            if !grant.granted { return }
        }
    }

    /// A device call's error as the failure the protocol reports: the device's own
    /// (`DeviceError`), a simulated instrument that stopped answering (a timeout, `hang` saying
    /// what; nil leaves it unmapped), or a tagger's block that does not encode. Nil for any
    /// other error, which is not the device's: the caller rethrows it.
    static func deviceFailure(_ error: any Error, hang: String?) -> Herald_Node_V1_DeviceFailure? {
        switch error {
        case let e as DeviceError: return Herald_Node_V1_DeviceFailure(e)
        case is SimulatedHang:
            guard let hang else { return nil }
            return .with { $0.kind = DeviceError.Kind.timeout.rawValue; $0.detail = hang }
        case let e as NodeProtocolError: return .with { $0.kind = DeviceError.Kind.invalidResponse.rawValue; $0.detail = "the tagger delivered \(e)" }
        default: return nil
        }
    }

    /// Runs a device call so that an abandoned one (its RPC or session cancelled, the
    /// coordinator gone) puts that device safe: gRPC does not cancel the handler's task by
    /// itself. The caller was authorised before: the call runs as a task of its own, and only
    /// once it has stopped is the device put safe (a safe state racing the call could be
    /// undone by it).
    func guarded<T: Sendable>(_ device: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let work = Task { try await body() }
        let (result, cancelled) = await awaitCancellably(Task { await work.result }, cancel: { work.cancel() })
        if cancelled {
            await agent.record(who: "node", what: "call cancelled by its caller", device: device, result: "putting the device safe")
            await agent.safeState([device])
        }
        return try result.get()
    }
}

/// Waits for `task`, cancelling it (and `cancel`) when the waiting task is cancelled (a session
/// ending) or the RPC is (its client gone); says whether it was.
func awaitCancellably<T: Sendable>(_ task: Task<T, Never>, cancel: (@Sendable () -> Void)? = nil) async -> (T, Bool) {
    let cancelled = CancelFlag()
    let value = await withTaskCancellationHandler {
        await withRPCCancellationHandler {
            await task.value
        } onCancelRPC: {
            cancelled.set()
            cancel?()
            task.cancel()
        }
    } onCancel: {
        cancelled.set()
        cancel?()
        task.cancel()
    }
    return (value, cancelled.isSet)
}

/// The calls a session has running: by call number (for `cancel`), and the last by device (so
/// one device's calls run in order). A call is reserved before its task starts, so a call that
/// finishes at once is never counted as running after it.
final class SessionCalls: Sendable {
    private struct State {
        var running: [UInt64: (device: String, task: Task<Void, Never>?)] = [:]
        var lastByDevice: [String: Task<Void, Never>] = [:]
        var unsent = 0
    }
    private let state = Mutex(State())

    var count: Int { state.withLock { $0.running.count } }
    var unsent: Int { state.withLock { $0.unsent } }
    func queued() { state.withLock { $0.unsent += 1 } }
    func sent() { state.withLock { $0.unsent -= 1 } }
    func isRunning(_ id: UInt64) -> Bool { state.withLock { $0.running[id] != nil } }
    func last(for device: String) -> Task<Void, Never>? { state.withLock { $0.lastByDevice[device] } }
    func reserve(_ id: UInt64, device: String) { state.withLock { $0.running[id] = (device, nil) } }
    func started(_ id: UInt64, device: String, _ task: Task<Void, Never>) {
        state.withLock {
            // A call that already finished needs no place in the order, nor in the table.
            guard $0.running[id] != nil else { return }
            $0.running[id]?.task = task
            $0.lastByDevice[device] = task
        }
    }
    func finished(_ id: UInt64, device: String) {
        state.withLock {
            guard let entry = $0.running.removeValue(forKey: id) else { return }
            // Forget the device once its last call is done: names come from the client.
            if let task = entry.task, $0.lastByDevice[device] == task { $0.lastByDevice[device] = nil }
        }
    }
    func cancel(_ id: UInt64) { state.withLock { $0.running[id]?.task }?.cancel() }
    /// Cancels every running call and waits for them; returns the devices they were on.
    func cancelAll() async -> [String] {
        let (all, devices) = state.withLock { s in
            defer { s.lastByDevice = [:] }
            return (s.running.values.compactMap(\.task) + s.lastByDevice.values, Array(Set(s.running.values.map(\.device))).sorted())
        }
        for t in all { t.cancel() }
        for t in all { await t.value }
        return devices
    }
}

extension Herald_Node_V1_Reply {
    static func refusal(_ call: UInt64, _ code: RPCError.Code, _ message: String) -> Self {
        .with {
            $0.call = call
            $0.error = .with {
                $0.code = Int32(code.rawValue)
                $0.message = message
            }
        }
    }
}

extension Herald_Node_V1_Command.OneOf_Kind {
    /// The device a command is for ("" for the session's own).
    var device: String {
        switch self {
        case .connect(let r), .safeState(let r), .disconnect(let r), .runAttemptLoop(let r): return r.device
        case .set(let r): return r.device
        case .get(let r): return r.device
        case .configure(let r): return r.device
        case .measure(let r): return r.device
        case .open, .cancel: return ""
        }
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
