import HeraldCore
import Synchronization

/// The first error of a concurrent task, for others to check.
final class FailureLatch: Sendable {
    private let stored = Mutex<(any Error)?>(nil)
    func set(_ error: any Error) { stored.withLock { if $0 == nil { $0 = error } } }
    var error: (any Error)? { stored.withLock { $0 } }
}

final class TagCounter: Sendable {
    private let count = Mutex(0)
    func add(_ n: Int) { count.withLock { $0 += n } }
    var value: Int { count.withLock { $0 } }
}

extension PlanStep {
    /// One line describing the step, for progress output and the event log.
    public var summary: String {
        switch self {
        case .set(let a): return "set " + a.map { "\($0.device).\($0.property)=\($0.value)" }.joined(separator: ", ")
        case .wait(let d, _): return "wait \(d)"
        case .waitUntil(let c, let timeout, _, _): return "wait until \(c) (timeout \(timeout))"
        case .acquire(let devices, let d, let name, _): return "acquire \(devices.joined(separator: " + ")) for \(d)" + (name.map { " as \($0)" } ?? "")
        case .sweep(let s): return "sweep \(s.name) over \(s.points.count) points"
        case .analysis(let a, _): return "\(a.name) of \(a.dataset)"
        case .entangle(let e, _):
            let until = [e.stop.heralds.map { "\($0) heralds" }, e.stop.timePs.map { "\(Double($0) * 1e-12) s" }].compactMap { $0 }
            return "entangle link \(e.link.name) as \(e.name) until \(until.joined(separator: " or "))"
        case .record(let targets, _): return "record " + targets.map { "\($0.device).\($0.property)" }.joined(separator: ", ")
        }
    }
}

/// Runs `operation`, failing with a device timeout if it takes longer than `limit` of real
/// time. Device I/O is bounded in real time even when the run itself is on a virtual clock.
/// The operation is cancelled on timeout; drivers must honour cancellation for the bound to hold.
func withDeadline<T: Sendable>(
    _ limit: Duration, device: String, what: String, heartbeat: Heartbeat? = nil, idle: Duration = .zero,
    _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            // A call that shows signs of life (a tagger delivering blocks) is given `idle`
            // after its last one: a slow simulation or a busy disk is not a hung device.
            var deadline = ContinuousClock.now + limit
            while true {
                try await Task.sleep(until: deadline, clock: .continuous)
                guard let last = heartbeat?.last, last + idle > deadline else { return nil }
                deadline = last + idle
            }
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw CancellationError() }
        guard let value = first else {
            throw DeviceError(
                device: device, .timeout,
                "\(what) did not complete within \(limit)" + (heartbeat == nil ? "" : " and delivered nothing for \(idle)"))
        }
        return value
    }
}

/// The time of a long call's last sign of life, for ``withDeadline``.
final class Heartbeat: Sendable {
    private let instant = Mutex(ContinuousClock.now)
    func beat() { instant.withLock { $0 = .now } }
    var last: ContinuousClock.Instant { instant.withLock { $0 } }
}

/// Rejects a tagger's blocks whose timestamps go backwards, within a block or across the
/// blocks of one acquisition: garbled data must fail the run by name before it reaches the
/// file or the counts. One compare per tag.
final class TimeOrderCheck: Sendable {
    private let last = Mutex(Int64.min)
    let device: String

    init(device: String) { self.device = device }

    func check(_ block: TagBlock) throws {
        try last.withLock { last in
            var previous = last
            for (i, t) in block.timestamps.enumerated() {
                if t < previous {
                    throw DeviceError(
                        device: device, .invalidResponse,
                        "delivered tags out of time order: tag \(i) of a block of \(block.count) is at \(t) ps, after \(previous) ps")
                }
                previous = t
            }
            last = previous
        }
    }
}

/// Bounds how many tags are on their way from a tagger to the sinks. The recorder writes on
/// its own task so a slow disk does not count against the device's deadline; without a bound,
/// a disk slower than the tagger would grow memory until the run died. A producer more than
/// `limit` tags ahead waits here instead (backpressure): a real tagger then buffers, and
/// reports an overflow if its own buffer fills, which is recorded as lost data.
final class TagBudget: Sendable {
    private struct State {
        var inFlight = 0
        var closed = false
        var waiters: [(id: Int, tags: Int, continuation: CheckedContinuation<Void, Never>)] = []
        var nextID = 0
    }

    let limit: Int
    private let state = Mutex(State())

    init(limit: Int) { self.limit = limit }

    /// Waits until `tags` more fit (a block larger than the limit goes alone), or the
    /// budget is closed, or the task is cancelled.
    func acquire(_ tags: Int) async {
        let id: Int? = state.withLock { s in
            if s.closed || s.inFlight == 0 || s.inFlight + tags <= limit {
                s.inFlight += tags
                return nil
            }
            s.nextID += 1
            return s.nextID
        }
        guard let id else { return }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s in
                    // Space may have opened (or the task been cancelled) since the check above.
                    if s.closed || s.inFlight == 0 || s.inFlight + tags <= limit || Task.isCancelled {
                        s.inFlight += tags
                        return true
                    }
                    s.waiters.append((id, tags, c))
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            let c = state.withLock { s -> CheckedContinuation<Void, Never>? in
                guard let i = s.waiters.firstIndex(where: { $0.id == id }) else { return nil }
                s.inFlight += s.waiters[i].tags
                return s.waiters.remove(at: i).continuation
            }
            c?.resume()
        }
    }

    /// The sinks have handled `tags`: wake the waiters that now fit, in order.
    func release(_ tags: Int) {
        let ready = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.inFlight -= tags
            var out: [CheckedContinuation<Void, Never>] = []
            while let first = s.waiters.first, s.closed || s.inFlight == 0 || s.inFlight + first.tags <= limit {
                s.inFlight += first.tags
                out.append(s.waiters.removeFirst().continuation)
            }
            return out
        }
        for c in ready { c.resume() }
    }

    /// The sinks stopped (a write failed): nobody waits any more.
    func close() {
        let all = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.closed = true
            defer { s.waiters.removeAll() }
            return s.waiters.map(\.continuation)
        }
        for c in all { c.resume() }
    }

    /// Tags handed on and not yet handled (for tests).
    var inFlight: Int { state.withLock { $0.inFlight } }
}

/// The simulated-device call in progress (the engine makes one at a time), for the run's
/// backstop watchdog.
final class SimulatedCallWatch: Sendable {
    private struct Call {
        var token: Int
        var device: String
        var what: String
        var started: ContinuousClock.Instant
        var limit: Duration
    }
    private struct State {
        var next = 0
        var call: Call?
        /// True while the watchdog runs (the plan's steps); calls outside it (connect, the safe
        /// state) keep their own deadline tasks.
        var watching = false
    }
    private let state = Mutex(State())

    var watching: Bool {
        get { state.withLock { $0.watching } }
        set { state.withLock { $0.watching = newValue } }
    }

    func begin(device: String, what: String, limit: Duration) -> Int {
        state.withLock {
            $0.next += 1
            $0.call = Call(token: $0.next, device: device, what: what, started: .now, limit: limit)
            return $0.next
        }
    }

    func end(_ token: Int) { state.withLock { if $0.call?.token == token { $0.call = nil } } }

    /// The call in progress if it has run longer than its limit.
    func overdue() -> (device: String, what: String, limit: Duration)? {
        state.withLock { state in
            guard let c = state.call, ContinuousClock.now - c.started > c.limit else { return nil }
            return (c.device, c.what, c.limit)
        }
    }
}

