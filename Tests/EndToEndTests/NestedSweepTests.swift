import Foundation
import HeraldCore
import HeraldRunReader
import HeraldRunner
import Testing

/// A sweep inside a sweep: an analysis of the inner sweep is computed for each outer point
/// and labelled with it; the outer sweep's points count every tag of their inner points;
/// analyses a run cannot compute are refused at validation, at their line.
@Suite struct NestedSweepTests {
    /// Polarizer angle (HWP of arm b) inside pump power.
    static func script(analyses: String, innerExtra: String = "") -> String {
        """
        herald: 1
        name: nested
        simulation: {pair_rate: 400 kHz, nominal_power: 10 mW, visibility: 0.9, efficiency: 0.25, dark_rate: 200 Hz}
        devices:
          pump: {driver: mock.laser}
          qwp_a: {driver: mock.rotator, settings: {arm: a, plate: qwp}}
          hwp_a: {driver: mock.rotator, settings: {arm: a, plate: hwp}}
          qwp_b: {driver: mock.rotator, settings: {arm: b, plate: qwp}}
          hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
          tagger: {driver: mock.timetagger}
        steps:
          - set: {qwp_a.angle: 0 deg, hwp_a.angle: 0 deg, qwp_b.angle: 0 deg, pump.power: 0 mW, pump.enabled: true}
          - sweep:
              name: power
              set: pump.power
              values: [5 mW, 15 mW]
              steps:
                - sweep:
                    name: angle
                    set: hwp_b.angle
                    values: [0 deg, 22.5 deg, 45 deg]
                    steps:
                      - acquire: {device: tagger, duration: 300 ms}
        \(innerExtra)
          - set: {pump.enabled: false}
        \(analyses)
        """
    }

    @Test func innerAnalysesArePerOuterPointAndOuterPointsCountTheirInnerTags() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("nested.yaml").path
        try Self.script(analyses: """
              - rates: {sweep: angle, pairs: [[1, 3]], window: 1 ns}
              - rates: {sweep: power, pairs: [[1, 3]], window: 1 ns}
            """).write(toFile: path, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("nested.h5").path
        let report = try await Herald.run(.init(scriptPath: path, mock: true, outPath: out, seed: 5))
        #expect(report.status == .success, "\(report.reason ?? "")")

        // One rates analysis of `angle` per pump power, labelled with it, then the pump-power one.
        let outers = report.analyses.map { $0.outer.map { "\($0.sweep)[\($0.index)] \($0.label)" } ?? "-" }
        #expect(outers == ["power[0] 0.005 W", "power[1] 0.015 W", "-"], "\(outers)")
        for a in report.analyses.prefix(2) { #expect(a.series["coincidence_rate_1_3"]?.count == 3) }
        let perPower = try #require(report.analyses.last?.series["coincidence_rate_1_3"])
        #expect(perPower.count == 2)

        // With both polarizers at H (angle 0) the pair rate scales with pump power: 15 mW gives
        // 3× 5 mW. Tolerance 5σ of the ratio of two Poisson counts: σ = r·√(1/N₀ + 1/N₁).
        let summary = try RunFile.summary(path: out)
        let inner = summary.counts.filter { $0.sweep == "angle" }
        #expect(inner.count == 6)
        let n0 = try #require(inner.first { $0.outer?.index == 0 && $0.point == 0 }).coincidences
        let n1 = try #require(inner.first { $0.outer?.index == 1 && $0.point == 0 }).coincidences
        let ratio = Double(n1) / Double(n0), sigma = ratio * (1 / Double(n0) + 1 / Double(n1)).squareRoot()
        #expect(abs(ratio - 3) < 5 * sigma, "ratio \(ratio) ± \(sigma)")

        // An outer point counts every tag of its inner points: its coincidences are their sum, exactly.
        let outer = summary.counts.filter { $0.sweep == "power" }
        #expect(outer.count == 2)
        for o in outer {
            let sum = inner.filter { $0.outer?.index == o.point }.map(\.coincidences).reduce(0, +)
            #expect(o.coincidences == sum, "power[\(o.point)]: \(o.coincidences) against \(sum) over its angles")
        }

        // The file labels each analysis with its outer point, and so does the CLI.
        #expect(summary.analyses.map { $0.outer?.index } == [0, 1, nil])
        #expect(summary.analyses.first?.outer?.label == "0.005 W")
        let printed = try await runProcess(Paths.herald.path, ["analyze", out])
        #expect(printed.stdout.contains("at power[1] 0.015 W"), "\(printed.stdout)")
        #expect(printed.stdout.contains("power[1] angle[2]"), "\(printed.stdout)")

        // A recount replays the same grouping: again one entry per outer point.
        let recount = try await Herald.recount(path: out, .init(windowPs: 2000))
        #expect(recount.map { $0.record.outer?.index } == [0, 1, nil])
        #expect(recount[1].counts.map(\.index) == [0, 1, 2])
        #expect(recount[1].counts.allSatisfy { $0.outer?.index == 1 })
    }

    /// A nested-sweep recording replays with the same script: the replay driver takes only the
    /// innermost points as the recording's acquisitions (an outer point spans its inner ones),
    /// and the replayed counts equal the recorded ones.
    @Test func aNestedRecordingReplaysWithTheSameCounts() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let analyses = "  - rates: {sweep: angle, pairs: [[1, 3]], window: 1 ns}"
        let recordedScript = dir.appendingPathComponent("nested.yaml").path
        try Self.script(analyses: analyses).write(toFile: recordedScript, atomically: true, encoding: .utf8)
        let recording = dir.appendingPathComponent("recorded.h5").path
        let a = try await Herald.run(.init(scriptPath: recordedScript, mock: true, outPath: recording, seed: 9))
        #expect(a.status == .success, "\(a.reason ?? "")")
        let replayScript = dir.appendingPathComponent("replay.yaml").path
        try Self.script(analyses: analyses)
            .replacingOccurrences(
                of: "tagger: {driver: mock.timetagger}", with: "tagger: {driver: replay.timetagger, settings: {file: \(recording)}}")
            .write(toFile: replayScript, atomically: true, encoding: .utf8)
        let replayed = dir.appendingPathComponent("replayed.h5").path
        let b = try await Herald.run(.init(scriptPath: replayScript, mock: false, outPath: replayed, seed: 9))
        #expect(b.status == .success, "\(b.reason ?? "")")
        let original = try RunFile.summary(path: recording).counts, again = try RunFile.summary(path: replayed).counts
        #expect(original.count == 6 && again.map(\.coincidences) == original.map(\.coincidences))
        #expect(again.map { $0.outer?.index } == original.map { $0.outer?.index })
    }

    @Test func analysesARunCannotComputeAreRefusedAtTheirLine() throws {
        let compiler = Herald.compiler(registry: Herald.descriptorRegistry)
        // Inside its own sweep, the inner sweep has not finished.
        let inside = Self.script(analyses: "", innerExtra: "        - rates: {sweep: power, pairs: [[1, 3]], window: 1 ns}")
        do {
            _ = try compiler.compile(text: inside, file: "inside.yaml")
            Issue.record("an analysis of a sweep inside that sweep was accepted")
        } catch let e as ScriptErrors {
            let d = try #require(e.diagnostics.first)
            #expect(d.location.file == "inside.yaml" && d.location.line == 24, "\(d)")
            #expect(d.message.contains("still running"), "\(d.message)")
        }
        // Two sweeps deep: per-outer-point grouping would pool the outermost sweep's points.
        let deep = """
            herald: 1
            name: deep
            devices:
              pump: {driver: mock.laser}
              hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
              tagger: {driver: mock.timetagger}
            steps:
              - sweep:
                  name: outer
                  set: pump.power
                  values: [5 mW, 15 mW]
                  steps:
                    - sweep:
                        name: middle
                        set: hwp_b.angle
                        values: [0 deg, 45 deg]
                        steps:
                          - acquire: {device: tagger, duration: 10 ms, name: inner}
              - rates: {sweep: inner, pairs: [[1, 3]], window: 1 ns}
            """
        do {
            _ = try compiler.compile(text: deep, file: "deep.yaml")
            Issue.record("an analysis two sweeps deep was accepted")
        } catch let e as ScriptErrors {
            let d = try #require(e.diagnostics.first)
            #expect(d.location.line == 19, "\(d)")
            #expect(d.message.contains("2 nested sweeps"), "\(d.message)")
        }
    }
}
