import HeraldCore
import Synchronization

/// Collects the tags of selected channels during one sweep point, from the
/// tagger's delivery callback (which is @Sendable, hence the lock).
final class ChannelCollector: Sendable {
    /// nil keeps every channel.
    private let channels: Set<Int>?
    private let storage = Mutex<[Int: [Int64]]>([:])

    init(channels: Set<Int>?) { self.channels = channels }

    convenience init(spec: DatasetSpec) { self.init(channels: spec.allChannels ? nil : spec.channels) }

    func add(_ block: TagBlock) {
        storage.withLock { store in
            for (t, c) in zip(block.timestamps, block.channels) where channels?.contains(Int(c)) ?? true {
                store[Int(c), default: []].append(t)
            }
        }
    }

    func snapshot() -> [Int: [Int64]] { storage.withLock { $0 } }

    /// Appends another collector's tags (a slice that passed the interlock check).
    func merge(_ other: ChannelCollector) {
        let tags = other.snapshot()
        storage.withLock { store in
            for (c, t) in tags { store[c, default: []].append(contentsOf: t) }
        }
    }
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
        case .acquire(let device, let d, let name, _): return "acquire \(device) for \(d)" + (name.map { " as \($0)" } ?? "")
        case .sweep(let s): return "sweep \(s.name) over \(s.points.count) points"
        case .analysis(let a, _): return "\(a.name) of \(a.dataset)"
        }
    }
}

/// Runs `operation`, failing with a device timeout if it takes longer than `limit` of real
/// time. Device I/O is bounded in real time even when the run itself is on a virtual clock.
/// The operation is cancelled on timeout; drivers must honour cancellation for the bound to hold.
func withDeadline<T: Sendable>(
    _ limit: Duration, device: String, what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await operation() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        defer { group.cancelAll() }
        guard let first = try await group.next() else { throw CancellationError() }
        guard let value = first else {
            throw DeviceError(device: device, .timeout, "\(what) did not complete within \(limit)")
        }
        return value
    }
}
