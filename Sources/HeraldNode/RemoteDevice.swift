import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldCore
import HeraldNodeProtocol
import Synchronization

/// A connection from the coordinator to one node: its client, and the lease it holds on it.
///
/// The lease is renewed by beats in a bidirectional stream every `length / 4`; the node answers
/// each one. A node whose answers stop for `lossAfter` counts as lost (a quiet stream is not a
/// live one), and every device on it reports so through ``PresenceReporting``, which fails the
/// run and puts every other node safe.
public final class RemoteNode: Sendable {
    public let name: String
    public let address: String
    let client: GRPCClient<HTTP2ClientTransport.Posix>
    let node: Herald_Node_V1_Node.Client<HTTP2ClientTransport.Posix>
    private let connections: Task<Void, any Error>
    private let state = Mutex(LeaseState())
    private let lostSignal = AsyncStream<DeviceError>.makeStream()

    struct LeaseState {
        var lastGrant: ContinuousClock.Instant?
        var lost: DeviceError?
        var keeper: Task<Void, Never>?
        var watcher: Task<Void, Never>?
        /// The lease's token, which the session and the streams present.
        var token: String?
        var session: NodeSession?
    }

    public init(name: String, host: String, port: Int, security: NodeSecurity) throws {
        self.name = name
        self.address = "\(host):\(port)"
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
        guard state.withLock({ $0.keeper == nil }) else { throw NodeError("node \(name): its lease is already held") }
        // Beats come every quarter of the lease: never count a node lost between two of them.
        let lossAfter = max(requestedLoss, length / 2)
        let granted = AsyncStream<Result<Void, NodeError>>.makeStream(bufferingPolicy: .bufferingNewest(1))
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
                            try await writer.write(.with { $0.sequence = sequence; $0.leaseMs = beatMs })
                            try? await Task.sleep(for: length / 4)  // cancelled: fall through to the release
                        }
                        // A clean release: the coordinator has put the node's devices safe itself.
                        try await writer.write(.with { $0.sequence = sequence + 1; $0.leaseMs = 0 })
                    },
                    options: leaseOptions
                ) { response in
                    for try await status in response.messages {
                        if status.granted {
                            let first = self.state.withLock { s -> Bool in
                                defer { s.lastGrant = .now }
                                if s.token == nil { s.token = status.token }
                                return s.lastGrant == nil
                            }
                            if first {
                                granted.continuation.yield(.success(()))
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
                            self.lose(DeviceError(device: name, .disconnected, "node \(name) \(why)"))
                            granted.continuation.yield(.failure(NodeError("node \(name) \(why)")))
                            granted.continuation.finish()
                            return
                        }
                    }
                }
            } catch {
                // Lost only once it was held: a refused lease is an error of takeLease, not a loss.
                if !Task.isCancelled, self.state.withLock({ $0.lastGrant != nil }) {
                    self.lose(DeviceError(device: name, .disconnected, "node \(name): its lease stream broke (\(error))"))
                }
                granted.continuation.yield(.failure(NodeError("node \(name): \(error)")))
            }
            granted.continuation.finish()
        }
        let watcher = Task { [self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(100))
                if Task.isCancelled { return }
                let last = state.withLock { $0.lastGrant }
                if let last, ContinuousClock.now - last > lossAfter {
                    lose(DeviceError(device: name, .disconnected, "node \(name) at \(address) answered no lease beat for \(lossAfter)"))
                    return
                }
            }
        }
        state.withLock {
            $0.keeper = keeper
            $0.watcher = watcher
        }
        // The first answer, within a deadline: a node that takes the stream and never answers
        // must not hang the run.
        let first = await withTaskGroup(of: Result<Void, NodeError>?.self) { group in
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
        switch first {
        case .success?: return
        case .failure(let e)?:
            release()
            throw e
        case nil:
            release()
            throw NodeError("node \(name) at \(address) did not grant its lease within \(firstGrantWithin)")
        }
    }

    /// Stops renewing and releases the lease (after the run put the devices safe).
    public func release() {
        let (keeper, watcher, session) = state.withLock { s in
            defer {
                s.keeper = nil
                s.watcher = nil
                s.session = nil
            }
            return (s.keeper, s.watcher, s.session)
        }
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
            if let live = s.session, !live.isBroken { return live }
            // Without a lease the node refuses every command, with its reason (an observer's
            // certificate, no lease taken): it is the authority, not this side.
            let fresh = NodeSession(node: node, token: s.token ?? "", options: options(timeout: .seconds(365 * 86_400)))
            s.session = fresh
            return fresh
        }
        return try await session.call(what, timeout: timeout, kind)
    }

    func lose(_ error: DeviceError) {
        let first = state.withLock { s -> Bool in
            guard s.lost == nil else { return false }
            s.lost = error
            return true
        }
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

/// Makes the remote device for a description: a plain device, or one that is also the
/// entangler, qubit readout or streaming tagger the description says.
public func remoteDevice(
    name: String, remote: String? = nil, descriptor: DriverDescriptor, channels: Int, streams: Bool, node: RemoteNode,
    timeout: Duration = .seconds(5)
) -> RemoteDevice {
    switch descriptor.kind {
    case .entangler: return RemoteEntangler(name: name, remote: remote, descriptor: descriptor, channels: channels, node: node, timeout: timeout)
    case .qubitReadout: return RemoteReadout(name: name, remote: remote, descriptor: descriptor, channels: channels, node: node, timeout: timeout)
    case .timeTagger where streams:
        return RemoteStreamingTagger(name: name, remote: remote, descriptor: descriptor, channels: channels, node: node, timeout: timeout)
    default: return RemoteDevice(name: name, remote: remote, descriptor: descriptor, channels: channels, node: node, timeout: timeout)
    }
}

/// A device on a node, driven through the node protocol as if it were local: the engine's
/// timeouts, retries, interlocks and safe state apply unchanged.
public class RemoteDevice: TimeTagger, PresenceReporting, @unchecked Sendable {
    public let name: String
    public let descriptor: DriverDescriptor
    public let channelCount: Int
    let remote: String
    let node: RemoteNode
    let timeout: Duration

    public required init(
        name: String, remote: String? = nil, descriptor: DriverDescriptor, channels: Int, node: RemoteNode, timeout: Duration = .seconds(5)
    ) {
        self.name = name
        self.remote = remote ?? name
        self.descriptor = descriptor
        self.channelCount = channels
        self.node = node
        self.timeout = timeout
    }

    public var needsWallClock: Bool { true }
    public var answersWithoutWaiting: Bool { false }

    func failure(_ f: Herald_Node_V1_DeviceFailure) -> DeviceError { f.decoded(device: name, node: node.name) }

    /// Maps transport failures to the device errors the engine knows.
    func mapped(_ e: RPCError) -> DeviceError {
        switch e.code {
        case .deadlineExceeded: return DeviceError(device: name, .timeout, "node \(node.name): \(e.message)")
        case .permissionDenied, .failedPrecondition, .invalidArgument, .notFound, .unauthenticated, .resourceExhausted:
            return DeviceError(device: name, .rejected, "node \(node.name): \(e.message)")
        case .internalError: return DeviceError(device: name, .invalidResponse, "node \(node.name): \(e.message)")
        default: return DeviceError(device: name, .disconnected, "node \(node.name) at \(node.address): \(e.code) \(e.message)")
        }
    }

    /// A command, retried once with the same request id when the transport failed: the node
    /// answers a retry of a command it already ran from its record.
    func command(_ what: (String) async throws -> Herald_Node_V1_CallResult) async throws {
        if let lost = node.lostError { throw DeviceError(device: name, .disconnected, lost.detail) }
        let id = UUID().uuidString
        var result: Herald_Node_V1_CallResult
        do {
            result = try await what(id)
        } catch let e as RPCError where e.code == .unavailable {
            do { result = try await what(id) } catch let e as RPCError { throw mapped(e) }
        } catch let e as RPCError {
            throw mapped(e)
        }
        if result.hasFailure { throw failure(result.failure) }
    }

    public func connect() async throws {
        let remote = self.remote
        try await command { id in try await node.call("connect", timeout: timeout, .connect(.with { $0.requestID = id; $0.device = remote })).callResult() }
    }

    public func set(_ property: String, to value: Value) async throws {
        let remote = self.remote
        try await command { id in
            try await node.call(
                "set \(property)", timeout: timeout,
                .set(
                    .with {
                        $0.requestID = id
                        $0.device = remote
                        $0.property = property
                        $0.value = Herald_Node_V1_Value(value)
                    })
            ).callResult()
        }
    }

    public func get(_ property: String) async throws -> Value {
        let response: Herald_Node_V1_GetResponse
        do {
            let reply = try await node.call("get \(property)", timeout: timeout, .get(.with { $0.device = remote; $0.property = property }))
            guard case .get(let r)? = reply.kind else { throw RPCError(code: .internalError, message: "get \(property) answered with another kind of reply") }
            response = r
        } catch let e as RPCError {
            throw mapped(e)
        }
        if response.hasFailure { throw failure(response.failure) }
        do {
            return try response.value.decoded()
        } catch {
            throw DeviceError(device: name, .invalidResponse, "node \(node.name) answered get \(property) with \(error)")
        }
    }

    public func enterSafeState() async throws {
        // A lost node cannot be reached; it puts its devices safe itself when the lease ends.
        if let lost = node.lostError {
            throw DeviceError(device: name, .disconnected, "\(lost.detail); the node puts it safe itself when this run's lease expires")
        }
        let remote = self.remote
        try await command { id in
            try await node.call("safe state", timeout: timeout, .safeState(.with { $0.requestID = id; $0.device = remote })).callResult()
        }
    }

    public func disconnect() async {
        let remote = self.remote
        try? await command { id in
            try await node.call("disconnect", timeout: timeout, .disconnect(.with { $0.requestID = id; $0.device = remote })).callResult()
        }
    }

    /// 2⁶⁰ ps (13 days): the bound on times a node may report, as on times read from a file.
    static let timeBound: Int64 = 1 << 60

    static func checked(_ i: Herald_Node_V1_Interval, device: String, node: String) throws -> AcquisitionInterval {
        guard i.startPs >= 0, i.startPs <= i.stopPs, i.stopPs < timeBound, i.tags >= 0, let tags = Int(exactly: i.tags) else {
            throw DeviceError(device: device, .invalidResponse, "node \(node) reported an interval [\(i.startPs), \(i.stopPs)) ps of \(i.tags) tags")
        }
        return AcquisitionInterval(startPs: i.startPs, stopPs: i.stopPs, tags: tags)
    }

    static func checked(_ block: TagBlock, device: String, node: String) throws {
        if let first = block.timestamps.first, let last = block.timestamps.last, first < 0 || last >= timeBound {
            throw DeviceError(device: device, .invalidResponse, "node \(node) sent tags at \(first)…\(last) ps")
        }
        for e in block.excluded where e.startPs < 0 || e.startPs > e.stopPs || e.stopPs >= timeBound {
            throw DeviceError(device: device, .invalidResponse, "node \(node) sent a lost interval [\(e.startPs), \(e.stopPs)) ps")
        }
    }

    public func vanished() async -> DeviceError {
        let e = await node.lost()
        return DeviceError(device: name, e.kind, e.detail)
    }

    public func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        let ps = picoseconds(duration)
        let token = self.node.leaseToken
        let request = Herald_Node_V1_AcquireRequest.with {
            $0.requestID = UUID().uuidString
            $0.device = remote
            $0.durationPs = ps
            $0.leaseToken = token
        }
        let name = self.name, nodeName = node.name, node = self.node
        // Each batch is handed on as it arrives, inside the call: while the consumers are behind,
        // no more is read, and gRPC's flow control makes the node's tagger wait.
        do {
            return try await withoutActuallyEscaping(deliver) { deliver in
                try await node.node.acquire(request, options: node.options(timeout: duration + timeout)) { response in
                    var last: AcquisitionInterval?
                    for try await batch in response.messages {
                        if batch.hasFailure { throw batch.failure.decoded(device: name, node: nodeName) }
                        if batch.count > 0 || !batch.excluded.isEmpty {
                            let block: TagBlock
                            do {
                                block = try TagCodec.decode(batch)
                            } catch {
                                throw DeviceError(device: name, .invalidResponse, "node \(nodeName) sent a tag batch that does not decode: \(error)")
                            }
                            try Self.checked(block, device: name, node: nodeName)
                            try await deliver(block)
                        }
                        if batch.hasInterval {
                            last = try Self.checked(batch.interval, device: name, node: nodeName)
                        }
                    }
                    guard let last else {
                        throw DeviceError(device: name, .invalidResponse, "node \(nodeName) ended the acquisition without its interval")
                    }
                    return last
                }
            }
        } catch let e as RPCError {
            throw mapped(e)
        }
    }
}

/// A node's entangler, remotely: configure, then one attempt loop per call.
public final class RemoteEntangler: RemoteDevice, Entangler, @unchecked Sendable {
    public func configure(_ c: EntanglerConfiguration) async throws {
        let remote = self.remote
        try await command { id in
            try await node.call(
                "configure", timeout: timeout,
                .configure(
                    .with {
                        $0.requestID = id
                        $0.device = remote
                        $0.configuration = .with { m in
                            m.link = c.link
                            m.nodes = c.nodes
                            m.cyclePs = c.cyclePs
                            m.windowStartPs = c.windowStartPs
                            m.windowLengthPs = c.windowLengthPs
                            m.patterns = c.patterns.map { p in .with { $0.channels = p.map { Int32(clamping: $0) } } }
                            m.timeoutPs = c.timeoutPs
                        }
                    })
            ).callResult()
        }
    }

    public func runAttemptLoop() async throws -> EntanglerOutcome {
        let out: Herald_Node_V1_AttemptOutcome
        do {
            // Bounded by the engine (the loop's timeout plus the device's); no retry: a loop rerun
            // would be a different loop.
            let reply = try await node.call(
                "attempt loop", timeout: .seconds(3600), .runAttemptLoop(.with { $0.requestID = UUID().uuidString; $0.device = remote }))
            guard case .attempt(let o)? = reply.kind else { throw RPCError(code: .internalError, message: "the attempt loop answered with another kind of reply") }
            out = o
        } catch let e as RPCError {
            throw mapped(e)
        }
        if out.hasFailure { throw failure(out.failure) }
        return out.pattern >= 0
            ? .herald(timePs: out.timePs, pattern: Int(out.pattern), attempts: out.attempts)
            : .timedOut(attempts: out.attempts, stopPs: out.timePs)
    }
}

/// A node's qubit readout, remotely.
public final class RemoteReadout: RemoteDevice, QubitReadout, @unchecked Sendable {
    public func measure(in basis: ReadoutBasis) async throws -> QubitMeasurement {
        let out: Herald_Node_V1_MeasureResponse
        do {
            let reply = try await node.call(
                "measure", timeout: timeout, .measure(.with { $0.requestID = UUID().uuidString; $0.device = remote; $0.basis = basis.rawValue }))
            guard case .measure(let m)? = reply.kind else { throw RPCError(code: .internalError, message: "measure answered with another kind of reply") }
            out = m
        } catch let e as RPCError {
            throw mapped(e)
        }
        if out.hasFailure { throw failure(out.failure) }
        guard let counts = Int(exactly: out.counts) else { throw DeviceError(device: name, .invalidResponse, "counts \(out.counts)") }
        return QubitMeasurement(outcome: Int(out.outcome), counts: counts)
    }
}

/// A streaming tagger on a node (an analyser station's), remotely.
public final class RemoteStreamingTagger: RemoteDevice, StreamingTagger, @unchecked Sendable {
    public func collect() async throws -> (TagBlock, AcquisitionInterval) {
        let name = self.name, nodeName = node.name, remote = self.remote
        do {
            let request = Herald_Node_V1_CollectRequest.with { $0.device = remote; $0.leaseToken = node.leaseToken }
            return try await node.node.collect(request, options: node.options(timeout: timeout)) { response in
                var timestamps: [Int64] = [], channels: [UInt8] = [], excluded: [ExcludedInterval] = []
                var interval: AcquisitionInterval?
                for try await batch in response.messages {
                    if batch.hasFailure { throw batch.failure.decoded(device: name, node: nodeName) }
                    if batch.count > 0 {
                        let block: TagBlock
                        do { block = try TagCodec.decode(batch) } catch {
                            throw DeviceError(device: name, .invalidResponse, "node \(nodeName) sent a tag batch that does not decode: \(error)")
                        }
                        try Self.checked(block, device: name, node: nodeName)
                        guard timestamps.count + block.count <= 1 << 26 else {
                            throw DeviceError(device: name, .invalidResponse, "node \(nodeName) sent more than 64 M tags in one collection")
                        }
                        timestamps += block.timestamps
                        channels += block.channels
                    }
                    excluded += batch.excluded.map { ExcludedInterval(startPs: $0.startPs, stopPs: $0.stopPs, reason: $0.reason) }
                    if batch.hasInterval {
                        interval = try Self.checked(batch.interval, device: name, node: nodeName)
                    }
                }
                guard let interval else { throw DeviceError(device: name, .invalidResponse, "node \(nodeName) ended a collection without its interval") }
                let block = TagBlock(timestamps: timestamps, channels: channels, excluded: excluded)
                try Self.checked(block, device: name, node: nodeName)
                return (block, interval)
            }
        } catch let e as RPCError {
            throw mapped(e)
        }
    }
}

extension Herald_Node_V1_Reply {
    /// The call result of a command that answers with one.
    func callResult() throws -> Herald_Node_V1_CallResult {
        guard case .result(let r)? = kind else { throw RPCError(code: .internalError, message: "the node answered with another kind of reply") }
        return r
    }
}
