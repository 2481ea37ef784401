import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import Testing

/// Validation that used to let scripts through, or said too much: channels a tagger does not
/// have, a sweep's error followed by its analyses' knock-on complaints, and the estimate of
/// how long a run takes.
@Suite struct ValidationGapTests {
    static func scan(pairs: String = "[[1, 3]]", from: String = "2 mW") -> String {
        """
        herald: 1
        devices:
          pump: {driver: mock.laser}
          tagger: {driver: mock.timetagger}
        steps:
          - set: {pump.enabled: true}
          - wait: 2 s
          - wait: {until: pump.locked == true, timeout: 5 s}
          - sweep:
              name: power
              set: pump.power
              range: {from: \(from), to: 20 mW, step: 2 mW}
              steps:
                - acquire: {device: tagger, duration: 500 ms}
          - rates: {sweep: power, pairs: \(pairs), window: 1 ns}
        """
    }

    @Test func channelsBeyondTheTaggersInputsAreRefused() throws {
        let d = diagnostics(Self.scan(pairs: "[[1, 5]]"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.message.contains("channel 5 of 'power': tagger 'tagger' (mock.timetagger) has channels 1–4") == true, "\(d)")
        #expect(d.first?.location.line == 15)
    }

    /// A correlation step is checked like the other analyses: its channels against the tagger,
    /// its bins against its range, each at its line and column.
    @Test func aCorrelationStepsChannelsAndBinsAreChecked() throws {
        let base = Self.scan().replacingOccurrences(of: "  - rates: {sweep: power, pairs: [[1, 3]], window: 1 ns}", with: "")
        let beyond = diagnostics(base + "  - correlation: {sweep: power, pair: [1, 6], range: 10 ns, bin: 50 ps}\n")
        #expect(beyond.count == 1 && beyond.first?.message.contains("channel 6 of 'power'") == true, "\(beyond)")
        #expect(beyond.first?.location.line == 15)
        let wide = diagnostics(base + "  - correlation: {sweep: power, pair: [1, 3], range: 10 ps, bin: 50 ps}\n")
        #expect(wide.count == 1 && wide.first?.message.contains("at least one bin") == true, "\(wide)")
        #expect(wide.first?.location.column == 54, "\(wide)")
        let unit = diagnostics(base + "  - correlation: {sweep: power, pair: [1, 3], range: 10 mW, bin: 50 ps}\n")
        #expect(unit.count == 1 && unit.first?.location.column == 54, "\(unit)")
        #expect(throws: Never.self) { _ = try compile(base + "  - correlation: {sweep: power, pair: [3, 3], range: 10 ns, bin: 50 ps}\n") }
    }

    /// A wrong unit in the sweep's range is the one error: the rates step that reads the
    /// sweep is not refused again for the sweep being missing.
    @Test func aSweepsOwnErrorIsNotFollowedByKnockOnErrors() throws {
        let d = diagnostics(Self.scan(from: "2 ms"))
        #expect(d.count == 1, "\(d)")
        #expect(d.first?.message.contains("expected a power") == true && d.first?.location.line == 12, "\(d)")
    }

    /// 10 points × 500 ms plus a 2 s wait; the conditional wait may add up to its 5 s timeout.
    @Test func theEstimatedDurationCountsAcquisitionsWaitsAndTimeouts() throws {
        let plan = try compile(Self.scan()).plan
        let e = plan.estimatedDuration
        #expect(abs(e.seconds - 7) < 1e-9 && abs(e.conditionalUpTo - 5) < 1e-9 && !e.open, "\(e)")
        #expect(Display.duration(e.seconds) == "7.0 s" && Display.duration(750) == "12 min 30 s" && Display.duration(7500) == "2 h 05 min")
    }

    /// The recording a replay script names must exist when the script is validated.
    @Test func aReplayRecordingThatDoesNotExistFailsValidation() async throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-vg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("replay.yaml").path
        try """
            herald: 1
            devices:
              tagger: {driver: replay.timetagger, match: {file: \(dir.path)/missing.ptu}}
            steps:
              - acquire: {device: tagger, duration: 10 ms}
            """.write(toFile: path, atomically: true, encoding: .utf8)
        await #expect(throws: ScriptErrors.self) { _ = try await Herald.validate(path: path, mock: true, nodeSecurity: nil) }
    }
}
