import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldCore
import HeraldNodeProtocol
import Logging
import Synchronization

/// A connection from the coordinator to one node: its client, the lease it holds on it, and the
/// session its device commands travel on.
///
/// The lease is renewed by beats in a bidirectional stream every `length / 4`; the node answers
/// each one. A node whose answers stop for `lossAfter` has lost its link (a quiet stream is not
/// a live one). Then, by the script's policy:
/// - **fail** (the default): the node is lost, and every device on it reports so through
///   ``PresenceReporting``, which fails the run and puts every other node safe;
/// - **reconnect within W**: the coordinator retries with backoff (0.1 s doubling to 2 s) until
///   W has passed. A node back within its lease carries the lease on (`resume_token`), its
///   devices untouched; one whose lease expired meanwhile has put them safe, and the
///   coordinator restores what it had set on them (the journal below) before any other command
///   goes out. Commands wait for the link meanwhile, and the engine discards what an outage
///   overlapped (``LinkReporting``). Not back within W: lost, as with fail.
public final class RemoteNode: Sendable {
    public let name: String
    public let address: String
    /// The script's `on_loss: {reconnect_within: …}`; nil fails the run at the first loss.
    /// Set once the script is compiled (the node is described before).
    public var reconnectWithin: Duration? {
        get { policy.withLock { $0 } }
        set { policy.withLock { $0 = newValue } }
    }
    private let policy: Mutex<Duration?>
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let node: Herald_Node_V1_Node.Client<HTTP2ClientTransport.Posix>
    private let connections: Task<Void, any Error>
    private let state = Mutex(LeaseState())
    private let lostSignal = AsyncStream<DeviceError>.makeStream()
    let logger: Logger

    struct LeaseState {
        /// Each lease stream's tasks carry the generation they were started in: a stale one's
        /// failure (after a reconnection replaced it) is ignored.
        var generation = 0
        var lastGrant: ContinuousClock.Instant?
        var lost: DeviceError?
        var keeper: Task<Void, Never>?
        var watcher: Task<Void, Never>?
        /// Set by release(): only then does the keeper end its stream with a release beat.
        var releasing = false
        var length: Duration = .seconds(1)
        var lossAfter: Duration = .seconds(1)
        /// The lease's token, which the session and the streams present.
        var token: String?
        var session: NodeSession?
        /// Since when the link has been down, while reconnecting.
        var outageSince: ContinuousClock.Instant?
        var outages = 0
        var linkWaiters: [CheckedContinuation<Void, any Error>] = []
        var reconnector: Task<Void, Never>?
        /// The stream a reconnection opened failed before the outage was closed.
        var relapsed = false
        var journal = Journal()
    }

    /// What the coordinator has set on the node's devices, to restore after the node put them
    /// safe during an outage: per device, whether it was connected, its settings in the order
    /// last set, and an entangler's configuration. A safe state clears the settings.
    struct Journal {
        var order: [String] = []
        var connected: Set<String> = []
        var settings: [String: [(String, Value)]] = [:]
        var configurations: [String: Herald_Node_V1_EntanglerConfiguration] = [:]

        mutating func note(_ device: String) { if !order.contains(device) { order.append(device) } }
    }

    public init(name: String, host: String, port: Int, security: NodeSecurity, reconnectWithin: Duration? = nil, logger: Logger = Logger(label: "herald.nodes")) throws {
        self.name = name
        self.address = "\(host):\(port)"
        self.policy = Mutex(reconnectWithin)
        self.logger = logger
        let transportSecurity: HTTP2ClientTransport.Posix.TransportSecurity
        switch security {
        case .plaintextLoopback:
            guard ["127.0.0.1", "::1", "localhost"].contains(host) else {
                throw NodeError("node \(name): plaintext is for loopback only, not \(host)")
            }
            transportSecurity = .plaintext
        case .mutualTLS(let cert, let key, let ca):
            transportSecurity = .mTLS(certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)) {
                $0.trustRoots = .certificates([.file(path: ca, format: .pem)])
                $0.serverCertificateVerification = .fullVerification
            }
        }
        var config = HTTP2ClientTransport.Posix.Config.defaults
        config.http2.maxFrameSize = 1 << 20
        let transport = try HTTP2ClientTransport.Posix(
            target: .ipv4(address: host, port: port), transportSecurity: transportSecurity, config: config)
        client = GRPCClient(transport: transport)
        node = Herald_Node_V1_Node.Client(wrapping: client)
        let c = client
        connections = Task { try await c.runConnections() }
    }

    deinit {
        connections.cancel()
    }

    /// Call options of every command: bounded, and capped in size like the node's.
    func options(timeout: Duration) -> CallOptions {
        var o = CallOptions.defaults
        o.timeout = timeout
        o.maxResponseMessageBytes = nodeMaxMessageBytes
        o.maxRequestMessageBytes = nodeMaxMessageBytes
        return o
    }

    /// The devices the node serves, with their drivers' descriptors.
    public func describe(timeout: Duration = .seconds(5)) async throws -> [(name: String, descriptor: DriverDescriptor, channels: Int, streams: Bool)] {
        let response: Herald_Node_V1_DescribeResponse
        do {
            response = try await node.describe(.init(), options: options(timeout: timeout))
        } catch let e as RPCError {
            throw NodeError("node \(name) at \(address): \(e.message.isEmpty ? "\(e.code)" : e.message)")
        }
        return try response.devices.map { d in
            do {
                return (d.name, try d.driver.decoded(node: name), Int(d.channelCount), d.streams)
            } catch {
                throw NodeError("node \(name) describes device '\(d.name)' unreadably: \(error)")
            }
        }
    }

    // MARK: The lease

    /// Takes the node's lease and keeps renewing it until ``release()``.
    public func takeLease(length: Duration = .seconds(1), lossAfter requestedLoss: Duration = .seconds(1), firstGrantWithin: Duration = .seconds(10)) async throws {
        let held = state.withLock { s -> Bool in
            guard s.keeper == nil else { return true }
            s.length = length
            // Beats come every quarter of the lease: never count a node lost between two of them.
            s.lossAfter = max(requestedLoss, length / 2)
            s.releasing = false
            return false
        }
        guard !held else { throw NodeError("node \(name): its lease is already held") }
        switch await startLease(resume: nil, firstGrantWithin: firstGrantWithin) {
        case .success: return
        case .failure(let e):
            release()
            throw e
        }
    }

    /// Opens a lease stream (a new generation) and waits for its first grant; says whether it
    /// carried on the lease of `resume`.
    private func startLease(resume: String?, firstGrantWithin: Duration) async -> Result<Bool, NodeError> {
        let (generation, length, lossAfter) = state.withLock { s in
            s.generation += 1
            s.lastGrant = nil
            return (s.generation, s.length, s.lossAfter)
        }
        let granted = AsyncStream<Result<Bool, NodeError>>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let node = self.node, name = self.name
        let beatMs = Int64(length.components.seconds * 1000 + length.components.attoseconds / 1_000_000_000_000_000)
        let leaseOptions = options(timeout: .seconds(365 * 86_400))
        // Strong captures: the tasks keep the node alive until release() or close() ends them.
        let keeper = Task { [self] in
            do {
                try await node.lease(
                    request: StreamingClientRequest { writer in
                        var sequence: Int64 = 0
                        while !Task.isCancelled {
                            sequence += 1
                            try await writer.write(
                                .with {
                                    $0.sequence = sequence
                                    $0.leaseMs = beatMs
                                    if sequence == 1, let resume { $0.resumeToken = resume }
                                })
                            try? await Task.sleep(for: length / 4)  // cancelled: fall through to the release
                        }
                        // A clean release: the coordinator has put the node's devices safe itself.
                        if self.state.withLock({ $0.releasing }) {
                            try await writer.write(.with { $0.sequence = sequence + 1; $0.leaseMs = 0 })
                        }
                    },
                    options: leaseOptions
                ) { response in
                    for try await status in response.messages {
                        if status.granted {
                            let first = self.state.withLock { s -> Bool in
                                guard s.generation == generation else { return false }
                                defer { s.lastGrant = .now }
                                if s.lastGrant == nil { s.token = status.token }
                                return s.lastGrant == nil
                            }
                            if first {
                                granted.continuation.yield(.success(status.resumed))
                                granted.continuation.finish()
                            }
                        } else {
                            // Refused, or expired while we were away (its devices were put safe).
                            let why =
                                switch status.holder {
                                case "expired": "let this run's lease expire"
                                case "replaced": "gave this run's lease to another session of the same certificate"
                                default: "refused the lease"
                                }
                            let error = DeviceError(device: name, .disconnected, "node \(name) \(why)")
                            // Replaced by another session: no reconnection brings this one back.
                            if status.holder == "replaced" { self.lose(error) } else { self.linkDown(generation, error) }
                            granted.continuation.yield(.failure(NodeError("node \(name) \(why)")))
                            granted.continuation.finish()
                            return
                        }
                    }
                }
            } catch {
                // Lost only once it was held: a refused lease is an error of takeLease, not a loss.
                if !Task.isCancelled, self.state.withLock({ $0.lastGrant != nil && $0.generation == generation }) {
                    self.linkDown(generation, DeviceError(device: name, .disconnected, "node \(name): its lease stream broke (\(error))"))
                }
                granted.continuation.yield(.failure(NodeError("node \(name): \(error)")))
            }
            granted.continuation.finish()
        }
        let watcher = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                if Task.isCancelled { return }
                let (last, current) = state.withLock { ($0.lastGrant, $0.generation == generation) }
                guard current else { return }
                if let last, ContinuousClock.now - last > lossAfter {
                    linkDown(generation, DeviceError(device: name, .disconnected, "node \(name) at \(address) answered no lease beat for \(lossAfter)"))
                    return
                }
            }
        }
        let (oldKeeper, oldWatcher, released) = state.withLock { s in
            // Released meanwhile (the run ended during a reconnection): these must not live on.
            if s.releasing { return (keeper as Task<Void, Never>?, watcher as Task<Void, Never>?, true) }
            defer {
                s.keeper = keeper
                s.watcher = watcher
            }
            return (s.keeper, s.watcher, false)
        }
        oldWatcher?.cancel()
        oldKeeper?.cancel()
        if released { return .failure(NodeError("node \(name): released")) }
        // The first answer, within a deadline: a node that takes the stream and never answers
        // must not hang the run.
        let first = await withTaskGroup(of: Result<Bool, NodeError>?.self) { group in
            group.addTask {
                for await r in granted.stream { return r }
                return .failure(NodeError("node \(name) closed its lease stream without answering"))
            }
            group.addTask {
                try? await Task.sleep(for: firstGrantWithin)
                return nil
            }
            let r = await group.next() ?? nil
            group.cancelAll()
            return r
        }
        return first ?? .failure(NodeError("node \(name) at \(address) did not grant its lease within \(firstGrantWithin)"))
    }

    /// The link of lease stream `generation` is down: lost, or reconnecting, by the policy.
    private func linkDown(_ generation: Int, _ error: DeviceError) {
        guard let within = reconnectWithin else { return lose(error) }
        let start = state.withLock { s -> Bool in
            guard s.generation == generation, s.lost == nil, !s.releasing else { return false }
            // The new stream of a reconnection failed while it was restoring: try again.
            if s.outageSince != nil {
                s.relapsed = true
                return false
            }
            s.outageSince = .now
            s.outages += 1
            return true
        }
        guard start else { return }
        logger.warning("node \(name): \(error.detail); reconnecting for up to \(within)")
        let (session, keeper, watcher) = state.withLock { s in
            defer { s.session = nil }
            return (s.session, s.keeper, s.watcher)
        }
        // Calls waiting on the dead link fail now (and wait for it to come back) rather than at their deadlines.
        session?.drop()
        watcher?.cancel()
        keeper?.cancel()
        let task = Task { [self] in await reconnect(within: within, reason: error) }
        let released = state.withLock { s -> Bool in
            if s.releasing { return true }
            s.reconnector = task
            return false
        }
        if released { task.cancel() }
    }

    private func reconnect(within: Duration, reason: DeviceError) async {
        let since = state.withLock { $0.outageSince } ?? .now
        var delay = Duration.milliseconds(100)
        var attempts = 0
        while !Task.isCancelled {
            let left = within - (ContinuousClock.now - since)
            guard left > .zero else { break }
            attempts += 1
            let resume = state.withLock { $0.token }
            state.withLock { $0.relapsed = false }
            switch await startLease(resume: resume, firstGrantWithin: min(left, .seconds(2))) {
            case .success(let resumed):
                do {
                    if !resumed { try await restore() }
                } catch {
                    // Down again while restoring: another attempt, if time is left.
                    if state.withLock({ $0.relapsed }) { continue }
                    return lose(DeviceError(device: name, .disconnected, "node \(name) came back but its devices could not be restored: \(error)"))
                }
                if state.withLock({ $0.relapsed }) { continue }
                let waited = ContinuousClock.now - since
                logger.notice("node \(name): back after \(waited) (\(attempts) attempts); \(resumed ? "its lease carried on" : "its lease had expired: settings restored")")
                let waiters = state.withLock { s in
                    defer {
                        s.outageSince = nil
                        s.linkWaiters = []
                        s.reconnector = nil
                    }
                    return s.linkWaiters
                }
                for w in waiters { w.resume() }
                return
            case .failure:
                // This attempt's stream is abandoned without a release beat: a late grant of a
                // resumed lease must not end it cleanly (its devices were not put safe by us).
                let (keeper, watcher) = state.withLock { ($0.keeper, $0.watcher) }
                watcher?.cancel()
                keeper?.cancel()
                let pause = min(delay, within - (ContinuousClock.now - since))
                if pause > .zero { try? await Task.sleep(for: pause) }
                delay = min(delay * 2, .seconds(2))
            }
        }
        lose(DeviceError(device: name, .disconnected, "node \(name) at \(address): \(reason.detail), and it was not back within \(within) (\(attempts) attempts)"))
    }

    /// Re-applies the journal on a new lease, device by device, before any other command.
    private func restore() async throws {
        let journal = state.withLock { $0.journal }
        for device in journal.order {
            if journal.connected.contains(device) {
                try check(await call("restore connect", timeout: .seconds(10), .connect(.with { $0.requestID = UUID().uuidString; $0.device = device })).callResult())
            }
            for (property, value) in journal.settings[device] ?? [] {
                try check(
                    await call(
                        "restore set \(property)", timeout: .seconds(10),
                        .set(
                            .with {
                                $0.requestID = UUID().uuidString
                                $0.device = device
                                $0.property = property
                                $0.value = Herald_Node_V1_Value(value)
                            })
                    ).callResult())
            }
            if let c = journal.configurations[device] {
                try check(
                    await call(
                        "restore configure", timeout: .seconds(10),
                        .configure(.with { $0.requestID = UUID().uuidString; $0.device = device; $0.configuration = c })
                    ).callResult())
            }
        }
        func check(_ r: Herald_Node_V1_CallResult) throws {
            if r.hasFailure { throw NodeError("\(r.failure.kind): \(r.failure.detail)") }
        }
    }

    /// Notes a command that succeeded, for ``restore()``.
    func journal(_ device: String, connected: Bool = false, set: (String, Value)? = nil, safe: Bool = false, configured: Herald_Node_V1_EntanglerConfiguration? = nil) {
        guard reconnectWithin != nil else { return }
        state.withLock { s in
            s.journal.note(device)
            if connected { s.journal.connected.insert(device) }
            if let (property, value) = set {
                var list = s.journal.settings[device] ?? []
                list.removeAll { $0.0 == property }
                list.append((property, value))
                s.journal.settings[device] = list
            }
            if safe { s.journal.settings[device] = [] }
            if let configured { s.journal.configurations[device] = configured }
        }
    }

    /// How many outages the link has had (each one reconnected or not).
    var outageCount: Int { state.withLock { $0.outages } }

    /// Returns at once while the link is up; while reconnecting, when it is back; throws when
    /// the node is lost.
    func linkRestored() async throws {
        try await withCheckedThrowingContinuation { (k: CheckedContinuation<Void, any Error>) in
            let now = state.withLock { s -> Result<Void, any Error>? in
                if let lost = s.lost { return .failure(lost) }
                if s.outageSince == nil { return .success(()) }
                s.linkWaiters.append(k)
                return nil
            }
            if let now { k.resume(with: now) }
        }
    }

    /// After a call failed: waits until the link has shown whether it is down (an outage
    /// declared: then until it is back, throwing if it is lost) or up (a grant after `since`),
    /// for at most twice the loss time. A call can fail before the lease's watcher notices.
    func linkSettled(since: ContinuousClock.Instant) async throws {
        let limit = state.withLock { $0.lossAfter } * 2
        while ContinuousClock.now - since < limit {
            let (outage, lost, granted) = state.withLock { ($0.outageSince != nil, $0.lost, ($0.lastGrant ?? since) > since) }
            if let lost { throw lost }
            if outage { return try await linkRestored() }
            if granted { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
        try await linkRestored()
    }

    /// Stops renewing and releases the lease (after the run put the devices safe).
    public func release() {
        let (keeper, watcher, session, reconnector) = state.withLock { s in
            s.releasing = true
            defer {
                s.keeper = nil
                s.watcher = nil
                s.session = nil
                s.reconnector = nil
            }
            return (s.keeper, s.watcher, s.session, s.reconnector)
        }
        reconnector?.cancel()
        session?.close()
        watcher?.cancel()
        keeper?.cancel()
    }

    /// The lease's token, for the streams' requests.
    var leaseToken: String { state.withLock { $0.token ?? "" } }

    /// A device command on the node's session, opened on first use and again after it broke.
    func call(_ what: String, timeout: Duration, _ kind: Herald_Node_V1_Command.OneOf_Kind) async throws -> Herald_Node_V1_Reply {
        let node = self.node
        let session = state.withLock { s -> NodeSession in
            if let live = s.session, !live.isBroken, live.token == (s.token ?? "") { return live }
            s.session?.close()
            // Without a lease the node refuses every command, with its reason (an observer's
            // certificate, no lease taken): it is the authority, not this side.
            let fresh = NodeSession(node: node, token: s.token ?? "", options: options(timeout: .seconds(365 * 86_400)))
            s.session = fresh
            return fresh
        }
        return try await session.call(what, timeout: timeout, kind)
    }

    func lose(_ error: DeviceError) {
        let (first, waiters) = state.withLock { s -> (Bool, [CheckedContinuation<Void, any Error>]) in
            guard s.lost == nil else { return (false, []) }
            s.lost = error
            defer { s.linkWaiters = [] }
            return (true, s.linkWaiters)
        }
        for w in waiters { w.resume(throwing: error) }
        if first { lostSignal.continuation.yield(error) }
    }

    /// Why the node was lost, if it was.
    var lostError: DeviceError? { state.withLock { $0.lost } }

    /// Returns when the node is lost.
    func lost() async -> DeviceError {
        if let e = state.withLock({ $0.lost }) { return e }
        for await e in lostSignal.stream { return e }
        return DeviceError(device: name, .disconnected, "node \(name) was lost")
    }

    /// The node's events from now on (every command it executes and every lease event, as its
    /// audit log records them), until `handle` returns false or the node ends the stream.
    /// Observers may watch; `dropped` counts events the node dropped before this one because
    /// this watcher was behind.
    public func watch(_ handle: @escaping @Sendable (AuditEntry, _ dropped: Int64) async -> Bool) async throws {
        do {
            try await node.watch(.init(), options: options(timeout: .seconds(365 * 86_400))) { response in
                for try await e in response.messages {
                    let entry = AuditEntry(
                        time: Date(timeIntervalSince1970: Double(e.timeUnixMs) / 1000), who: e.who, what: e.what, device: e.device, result: e.result)
                    if !(await handle(entry, e.dropped)) { return }
                }
            }
        } catch let e as RPCError {
            throw NodeError("node \(name) at \(address): \(e.message.isEmpty ? "\(e.code)" : e.message)")
        }
    }

    public func close() {
        release()
        connections.cancel()
    }

    /// Drops the connection without releasing the lease, as a killed coordinator does (tests).
    public func abandon() {
        let (keeper, watcher, session) = state.withLock { ($0.keeper, $0.watcher, $0.session) }
        session?.drop()
        watcher?.cancel()
        client.beginGracefulShutdown()
        connections.cancel()
        keeper?.cancel()
    }
}
