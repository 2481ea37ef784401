import Foundation
import HeraldCore
import Synchronization

/// Progress on stderr when it is a terminal: step, sweep point k of n, elapsed and
/// estimated time left, and the live tag rate. Silent when piped, so logs stay clean.
final class ProgressPrinter: RunEventSink {
    private struct State {
        var started = ContinuousClock.now
        var totalSeconds = 0.0
        var acquiredPs: Int64 = 0
        var sweep = ""
        var lastBlockStart: Int64?
        var lastBlockTags = 0
        var rate = 0.0
    }

    private let enabled: Bool
    private let state = Mutex(State())

    init(enabled: Bool) { self.enabled = enabled && isatty(STDERR_FILENO) != 0 }

    func handle(_ event: RunEvent) async throws {
        guard enabled else { return }
        let line: String? = state.withLock { s in
            switch event {
            case .runStarted(let start):
                s.started = .now
                s.totalSeconds = start.plan.acquisitionSeconds
                return nil
            case .sweepPointStarted(let sweep, let index, let count, let label):
                s.sweep = "\(sweep) \(index + 1)/\(count) \(label)"
                return status(s)
            case .tags(_, let block):
                guard let first = block.timestamps.first, let last = block.timestamps.last else { return nil }
                let span = Double(last - first) * 1e-12
                if span > 0 { s.rate = Double(block.count) / span }
                return nil
            case .sweepPointFinished(let r):
                s.acquiredPs += r.stopPs - r.startPs
                return status(s)
            case .runStopped:
                return "\n"
            default:
                return nil
            }
        }
        if let line { FileHandle.standardError.write(Data(line.utf8)) }
    }

    private func status(_ s: State) -> String {
        let elapsed = ContinuousClock.now - s.started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        let done = Double(s.acquiredPs) * 1e-12
        let left = done > 0 && s.totalSeconds > done ? seconds * (s.totalSeconds - done) / done : 0
        return String(format: "\r%@  elapsed %.1f s  left ~%.1f s  %.0f tags/s    ", s.sweep, seconds, left, s.rate)
    }
}
