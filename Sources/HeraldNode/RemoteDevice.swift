import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldCore
import HeraldNodeProtocol
import Synchronization

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
public class RemoteDevice: GroupAcquiringTagger, PresenceReporting, LinkReporting, @unchecked Sendable {
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
    /// With a reconnection policy, a command waits for the link to come back, and one that
    /// failed because it went down is retried (once) after it has.
    func command(_ what: (String) async throws -> Herald_Node_V1_CallResult) async throws {
        try await awaitLink()
        let id = UUID().uuidString
        var result: Herald_Node_V1_CallResult
        do {
            result = try await what(id)
        } catch let e as RPCError where e.code == .unavailable {
            try await settleLink(since: .now)
            do { result = try await what(id) } catch let e as RPCError { throw mapped(e) }
        } catch let e as RPCError {
            throw mapped(e)
        }
        if result.hasFailure { throw failure(result.failure) }
    }

    /// Throws at once for a lost node; waits while a reconnecting one is away.
    func awaitLink() async throws {
        if let lost = node.lostError { throw DeviceError(device: name, .disconnected, lost.detail) }
        guard node.reconnectWithin != nil else { return }
        do {
            try await node.linkRestored()
        } catch let e as DeviceError {
            throw DeviceError(device: name, .disconnected, e.detail)
        }
    }

    /// After a failed call: with a reconnection policy, until the link is known to be up (or
    /// back); without one, at once.
    func settleLink(since: ContinuousClock.Instant) async throws {
        if let lost = node.lostError { throw DeviceError(device: name, .disconnected, lost.detail) }
        guard node.reconnectWithin != nil else { return }
        do {
            try await node.linkSettled(since: since)
        } catch let e as DeviceError {
            throw DeviceError(device: name, .disconnected, e.detail)
        }
    }

    public func linkSettled(since: ContinuousClock.Instant) async throws { try await settleLink(since: since) }

    public var reconnects: Bool { node.reconnectWithin != nil }
    public var linkOutages: Int { node.outageCount }
    public var linkName: String { "node \(node.name)" }
    public func linkRestored() async throws { try await awaitLink() }

    public func connect() async throws {
        let remote = self.remote
        try await command { id in try await node.call("connect", timeout: timeout, .connect(.with { $0.requestID = id; $0.device = remote })).callResult() }
        node.journal(remote, connected: true)
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
        node.journal(remote, set: (property, value))
    }

    public func get(_ property: String) async throws -> Value {
        try await awaitLink()
        let remote = self.remote
        func ask() async throws -> Herald_Node_V1_GetResponse {
            let reply = try await node.call("get \(property)", timeout: timeout, .get(.with { $0.device = remote; $0.property = property }))
            guard case .get(let r)? = reply.kind else { throw RPCError(code: .internalError, message: "get \(property) answered with another kind of reply") }
            return r
        }
        let response: Herald_Node_V1_GetResponse
        do {
            do {
                response = try await ask()
            } catch let e as RPCError where e.code == .unavailable {
                // A read is safe to repeat once the link is back.
                try await settleLink(since: .now)
                response = try await ask()
            }
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
        // Forgotten before it is sent: a reconnection must never restore what a safe state was asked to undo.
        node.journal(remote, safe: true)
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
        try await acquire(for: duration, group: nil, deliver: deliver)
    }

    /// Taggers of a group that live on one node start together there (the node passes the
    /// group to them); taggers on different nodes start when their nodes get the call.
    public func acquire(
        for duration: Duration, group: AcquisitionGroup, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        try await acquire(for: duration, group: Optional(group), deliver: deliver)
    }

    private func acquire(
        for duration: Duration, group: AcquisitionGroup?, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        try await awaitLink()
        let ps = picoseconds(duration)
        let token = self.node.leaseToken
        let request = Herald_Node_V1_AcquireRequest.with {
            $0.requestID = UUID().uuidString
            $0.device = remote
            $0.durationPs = ps
            $0.leaseToken = token
            if let group {
                // Its own name as the node knows it, so the node finds it among the members.
                $0.groupID = group.id.uuidString
                $0.groupMembers = group.members.map { $0 == self.name ? self.remote : $0 }
            }
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
        let configuration = Herald_Node_V1_EntanglerConfiguration.with { m in
            m.link = c.link
            m.nodes = c.nodes
            m.cyclePs = c.cyclePs
            m.windowStartPs = c.windowStartPs
            m.windowLengthPs = c.windowLengthPs
            m.patterns = c.patterns.map { p in .with { $0.channels = p.map { Int32(clamping: $0) } } }
            m.timeoutPs = c.timeoutPs
        }
        try await command { id in
            try await node.call(
                "configure", timeout: timeout,
                .configure(.with { $0.requestID = id; $0.device = remote; $0.configuration = configuration })
            ).callResult()
        }
        node.journal(remote, configured: configuration)
    }

    public func runAttemptLoop() async throws -> EntanglerOutcome {
        try await awaitLink()
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
        try await awaitLink()
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
        try await awaitLink()
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
