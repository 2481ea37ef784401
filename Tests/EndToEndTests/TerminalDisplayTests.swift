import Foundation
import Testing

/// The progress line in a real terminal: `herald run` inside tmux, whose screen is read back
/// as a user sees it, while the run logs a warning and pauses on an interlock.
@Suite(.serialized) struct TerminalDisplayTests {
    static let script = Paths.root.appendingPathComponent("Tests/Fixtures/monitor/paused-tomography.yaml").path

    @Test func logLinesGoAboveTheProgressLineWhichSaysPaused() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        struct Screens: Decodable {
            var status: String
            /// The screen's bottom line, each time it changed.
            var bottoms: [String]
            var last: String
        }
        let r = try await runProcess(
            Paths.python,
            [
                Paths.root.appendingPathComponent("Tests/python/terminal_checks.py").path, dir.path, "--", Paths.herald.path, "run",
                Self.script, "--mock", "--realtime", "--seed", "3", "--out", dir.appendingPathComponent("run.h5").path,
            ])
        #expect(r.status == 0, "\(r.stderr)")
        let screens = try JSONDecoder().decode(Screens.self, from: Data(r.stdout.utf8))
        let bottoms = screens.bottoms, last = screens.last
        #expect(screens.status == "exit=0", "\(last)")

        // While paused, the bottom line of the screen says so, with the interlock and its condition.
        let paused = bottoms.filter { $0.hasPrefix("PAUSED: pump-lock (pump.locked == true)") }
        #expect(!paused.isEmpty, "no screen showed the pause:\n\(bottoms.suffix(20).joined(separator: "\n"))")
        // Before and after, it shows the point, the analysed pairs' rates and the time left.
        let running = bottoms.filter { $0.hasPrefix("tomography ") && $0.contains("1-3 ") && $0.contains("left ~") }
        #expect(!running.isEmpty, "\(bottoms.suffix(10))")

        // The warning and the notice are whole lines of their own, above the progress line.
        let lines = last.split(separator: "\n").map(String.init)
        let warning = lines.filter { $0.contains("interlock 'pump-lock' (pump.locked == true) violated: acquisition paused") }
        #expect(warning.count == 1, "\(last)")
        #expect(warning.allSatisfy { $0.contains(" warning herald : ") && !$0.contains("│") }, "\(warning)")
        let cleared = lines.filter { $0.contains("interlock 'pump-lock' cleared") }
        #expect(cleared.count == 1 && cleared.allSatisfy { !$0.contains("│") }, "\(last)")
        // No log line was written into a progress line, nor a progress line into a log line.
        for line in lines where line.contains("│") {
            #expect(!line.contains(" herald : "), "progress and log on one line: \(line)")
        }
        // The final progress line stays on screen, above the summary.
        #expect(lines.contains { $0.hasPrefix("stopped: success") }, "\(last)")
        #expect(lines.contains { $0.hasPrefix("status: success") }, "\(last)")
    }

    @Test func withoutATerminalTheOutputIsPlainLines() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try await runProcess(
            Paths.herald.path, ["run", Self.script, "--mock", "--seed", "3", "--out", dir.appendingPathComponent("run.h5").path])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(!r.stderr.contains("\r") && !r.stderr.contains("\u{1B}"), "control characters in piped output: \(r.stderr.debugDescription)")
        #expect(r.stderr.contains("violated: acquisition paused\n"))
        #expect(!r.stderr.contains("│"))
    }
}
