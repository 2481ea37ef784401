import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldNodeProtocol
import Synchronization

/// The coordinator's end of a node session: one bidirectional stream that carries every
/// device command to the node, each matched to its reply by call number. Opening an HTTP/2
/// stream per command cost about a millisecond a call; on the session it is one message each
/// way.
///
/// Every call has a deadline, kept by one watchdog for the whole session (not a timer per
/// call: an attempt loop may be given an hour). A call that times out or whose task is
/// cancelled is cancelled on the node too, which puts its device safe. When the stream breaks,
/// every call waiting on it fails with `unavailable`, and the next call opens a new session.
final class NodeSession: Sendable {
    private struct Pending {
        var continuation: CheckedContinuation<Herald_Node_V1_Reply, any Error>
        var deadline: ContinuousClock.Instant
        var what: String
    }
    private struct State {
        var pending: [UInt64: Pending] = [:]
        var next: UInt64 = 0
        var broken: RPCError?
    }
    /// Shared with the stream's and the watchdog's tasks, which must not keep the session alive.
    private final class Shared: Sendable {
        let state = Mutex(State())
    }
    private let shared = Shared()
    private let outbound: AsyncStream<Herald_Node_V1_Command>.Continuation
    private let stream: Task<Void, Never>
    private let watchdog: Task<Void, Never>

    /// The lease token the session was opened with: a session of an older lease is replaced.
    let token: String

    init(node: Herald_Node_V1_Node.Client<HTTP2ClientTransport.Posix>, token: String, options: CallOptions) {
        self.token = token
        let (commands, outbound) = AsyncStream<Herald_Node_V1_Command>.makeStream()
        self.outbound = outbound
        outbound.yield(.with { $0.open = .with { $0.leaseToken = token } })
        let shared = self.shared
        @Sendable func failAll(_ error: RPCError) {
            let waiting = shared.state.withLock { s in
                if s.broken == nil { s.broken = error }
                defer { s.pending = [:] }
                return Array(s.pending.values)
            }
            for p in waiting { p.continuation.resume(throwing: error) }
        }
        stream = Task {
            do {
                try await node.session(
                    request: StreamingClientRequest { writer in
                        for await command in commands { try await writer.write(command) }
                    }, options: options
                ) { response in
                    for try await reply in response.messages {
                        let waiting = shared.state.withLock { $0.pending.removeValue(forKey: reply.call) }
                        waiting?.continuation.resume(returning: reply)
                    }
                }
                failAll(RPCError(code: .unavailable, message: "the node ended the session"))
            } catch let e as RPCError {
                switch e.code {
                case .permissionDenied, .unauthenticated, .failedPrecondition, .invalidArgument, .resourceExhausted:
                    // The node refused the session: a retry would be refused the same way.
                    failAll(e)
                default:
                    // However else it broke (cancelled when the link was given up, reset), for a
                    // caller a broken session is one to retry on a new one: unavailable.
                    failAll(RPCError(code: .unavailable, message: "the session broke: \(e.code) \(e.message)"))
                }
            } catch {
                failAll(RPCError(code: .unavailable, message: "the session broke: \(error)"))
            }
        }
        watchdog = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(50))
                let now = ContinuousClock.now
                let overdue = shared.state.withLock { s in
                    let late = s.pending.filter { $0.value.deadline <= now }
                    for id in late.keys { s.pending[id] = nil }
                    return late
                }
                for (id, p) in overdue {
                    outbound.yield(.with { $0.cancel = id })
                    p.continuation.resume(throwing: RPCError(code: .deadlineExceeded, message: "\(p.what): no answer within its deadline"))
                }
            }
        }
    }

    deinit {
        close()
    }

    /// Whether the stream has broken: a new session is needed.
    var isBroken: Bool { shared.state.withLock { $0.broken != nil } }

    /// Sends a command and waits for its reply; throws `RPCError` for a refusal, a timeout or a
    /// broken session, and `CancellationError` when the calling task is cancelled.
    func call(_ what: String, timeout: Duration, _ kind: Herald_Node_V1_Command.OneOf_Kind) async throws -> Herald_Node_V1_Reply {
        let id = shared.state.withLock { s -> UInt64 in
            s.next += 1
            return s.next
        }
        let reply = try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (k: CheckedContinuation<Herald_Node_V1_Reply, any Error>) in
                // Registered and sent under one lock, as abandon() removes and cancels under it:
                // a cancel can never overtake its command.
                let outbound = self.outbound
                let broken = shared.state.withLock { s -> RPCError? in
                    if let b = s.broken { return b }
                    s.pending[id] = Pending(continuation: k, deadline: .now + timeout, what: what)
                    outbound.yield(.with { $0.call = id; $0.kind = kind })
                    return nil
                }
                if let broken { return k.resume(throwing: broken) }
                // Cancelled before the handler below could see the call: give it up now.
                if Task.isCancelled { abandon(id) }
            }
        } onCancel: {
            abandon(id)
        }
        if case .error(let e)? = reply.kind {
            throw RPCError(code: Status.Code(rawValue: Int(e.code)).flatMap(RPCError.Code.init) ?? .unknown, message: e.message)
        }
        return reply
    }

    /// Gives a call up: the node cancels it (its device goes safe), the caller gets a cancellation.
    private func abandon(_ id: UInt64) {
        let outbound = self.outbound
        let p = shared.state.withLock { s -> Pending? in
            guard let p = s.pending.removeValue(forKey: id) else { return nil }
            outbound.yield(.with { $0.cancel = id })
            return p
        }
        p?.continuation.resume(throwing: CancellationError())
    }

    /// Ends the session: the node cancels whatever is still running on it.
    func close() {
        outbound.finish()
        watchdog.cancel()
    }

    /// Drops the stream at once, as a killed coordinator does (tests).
    func drop() {
        close()
        stream.cancel()
    }
}
