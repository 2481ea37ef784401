import HeraldCore
import Synchronization

/// Collects the tags of selected channels during one sweep point, from the
/// tagger's delivery callback (which is @Sendable, hence the lock).
final class ChannelCollector: Sendable {
    private let channels: Set<Int>
    private let storage = Mutex<[Int: [Int64]]>([:])

    init(channels: Set<Int>) { self.channels = channels }

    func add(_ block: TagBlock) {
        storage.withLock { store in
            for (t, c) in zip(block.timestamps, block.channels) where channels.contains(Int(c)) {
                store[Int(c), default: []].append(t)
            }
        }
    }

    func snapshot() -> [Int: [Int64]] { storage.withLock { $0 } }
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
        case .acquire(let device, let d, _): return "acquire \(device) for \(d)"
        case .sweep(let s): return "sweep \(s.name) over \(s.points.count) points"
        case .tomography(let spec, _): return "tomography of sweep \(spec.sweep)"
        }
    }
}
