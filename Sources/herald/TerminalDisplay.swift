import Foundation
import HeraldCore
import HeraldLive
import Logging
import Synchronization

/// The terminal's bottom line during a run, and the log lines above it.
///
/// On a terminal (stderr a tty) the progress line is redrawn in place, and every log line
/// first clears it, is written whole with its newline, then the line is drawn again below:
/// log lines go above the progress, never through it. Anywhere else (a pipe, a file, CI)
/// there is no progress line and the log is plain lines.
final class TerminalDisplay: Sendable {
    static let shared = TerminalDisplay()

    private struct State {
        var status = ""
    }

    let isTerminal: Bool
    private let state = Mutex(State())

    init(isTerminal: Bool = isatty(STDERR_FILENO) != 0) { self.isTerminal = isTerminal }

    /// A whole line above the progress line.
    func log(_ line: String) {
        state.withLock { s in
            var out = isTerminal && !s.status.isEmpty ? "\r\u{1B}[2K" : ""
            out += line.hasSuffix("\n") ? line : line + "\n"
            if isTerminal { out += s.status }
            Self.write(out)
        }
    }

    /// Replaces the progress line (terminal only), cut to the terminal's width.
    func setStatus(_ text: String) {
        guard isTerminal else { return }
        state.withLock { s in
            let width = Self.columns()
            let line = text.count >= width ? String(text.prefix(max(10, width - 2))) + "…" : text
            s.status = line
            Self.write("\r\u{1B}[2K" + line)
        }
    }

    /// Leaves the last progress line on screen and moves below it.
    func finish() {
        guard isTerminal else { return }
        state.withLock { s in
            if !s.status.isEmpty { Self.write("\n") }
            s.status = ""
        }
    }

    static func columns() -> Int {
        var size = winsize()
        if ioctl(STDERR_FILENO, UInt(TIOCGWINSZ), &size) == 0, size.ws_col > 20 { return Int(size.ws_col) }
        return 100
    }

    /// Errors ignored: a terminal that hung up (SIGHUP, EIO) or a closed pipe (EPIPE) must
    /// not crash the run on its way to the safe state, as `FileHandle.write(_:)` would.
    private static func write(_ text: String) { try? FileHandle.standardError.write(contentsOf: Data(text.utf8)) }
}

/// swift-log's lines through the display, so they never garble the progress line. The
/// format is StreamLogHandler's: time, level, label, message, metadata.
struct DisplayLogHandler: LogHandler {
    let label: String
    let display: TerminalDisplay
    var logLevel: Logger.Level = .notice
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let all = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let meta = all.isEmpty ? "" : " " + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        let time = Self.timestamp()
        display.log("\(time) \(event.level) \(label) :\(meta) \(event.message)")
    }

    static func timestamp() -> String {
        var t = time(nil)
        var parts = tm()
        localtime_r(&t, &parts)
        var buffer = [Int8](repeating: 0, count: 32)
        let n = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &parts)
        return String(decoding: buffer.prefix(n).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// The progress line of `herald run`: the current point and ETA, the latest rates of the
/// pairs the script analyses, and PAUSED with the interlock and its condition while one
/// holds acquisition. Redrawn at most ten times a second (or at once when the run pauses,
/// resumes or stops), from the run's ``LiveRun`` digest.
final class ProgressLine: RunEventSink {
    private let live: LiveRun
    private let display: TerminalDisplay
    private let lastDraw = Mutex<(at: ContinuousClock.Instant, state: LiveSnapshot.State?)>((.now, nil))

    init(live: LiveRun, display: TerminalDisplay) {
        self.live = live
        self.display = display
    }

    func handle(_ event: RunEvent) async throws {
        guard display.isTerminal else { return }
        if case .tags = event { } else if case .runStopped = event {
            display.setStatus(Self.line(live.snapshot()))
            display.finish()
            return
        }
        // Cheap checks first: most events (tag blocks) come far faster than the line redraws.
        let now = ContinuousClock.now, state = live.runState
        let due = lastDraw.withLock { last -> Bool in
            guard state != last.state || now - last.at >= .milliseconds(100) else { return false }
            last = (now, state)
            return true
        }
        if due { display.setStatus(Self.line(live.snapshot())) }
    }

    static func line(_ s: LiveSnapshot) -> String {
        var parts: [String] = []
        if let pause = s.pause {
            parts.append("PAUSED: \(pause.interlock) (\(pause.condition))")
        } else if s.state == .stopped {
            parts.append("stopped: \(s.status ?? "")")
        }
        if let p = s.point {
            parts.append("\(p.sweep) \(p.index + 1)/\(p.of) \(p.label)")
        } else if let step = s.step {
            parts.append(step)
        }
        let rates = s.pairs.compactMap { p in p.trace.last.map { "\(p.name) " + Display.measured($0.value, $0.error, unit: "s^-1") } }
        if !rates.isEmpty { parts.append(rates.prefix(4).joined(separator: "  ")) }
        if s.entanglement.heralds > 0 { parts.append("heralds \(s.entanglement.heralds)") }
        parts.append(String(format: "%.0f tags/s", s.tagRate))
        if let eta = s.etaSeconds, s.state != .stopped { parts.append(String(format: "left ~%.0f s", eta.rounded(.up))) }
        return parts.joined(separator: " │ ")
    }
}
