import Foundation
import HeraldCore

/// Prints sweep progress on stderr: a rewritten line on a terminal, nothing when piped.
final class ProgressPrinter: RunEventSink {
    private let enabled: Bool

    init(enabled: Bool) { self.enabled = enabled && isatty(STDERR_FILENO) != 0 }

    func handle(_ event: RunEvent) async throws {
        guard enabled else { return }
        switch event {
        case .sweepPointStarted(let sweep, let index, let count, let label):
            FileHandle.standardError.write(Data("\r\(sweep): point \(index + 1)/\(count) \(label)    ".utf8))
        case .runStopped:
            FileHandle.standardError.write(Data("\r\n".utf8))
        default:
            break
        }
    }
}
