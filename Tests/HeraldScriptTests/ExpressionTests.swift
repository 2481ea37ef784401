import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import Testing

/// Arithmetic with units in values and lockstep sweeps: dimension errors, division by zero
/// and limits exceeded at one point only are refused at their column before anything runs;
/// a thousand mutated expressions never crash the compiler and each error is located in the file.
@Suite struct ExpressionTests {
    static func script(power: String = "$p0 + 2 mW", hwp: String = "$alpha / 2", to: String = "180 deg") -> String {
        """
        herald: 1
        parameters:
          p0: 8 mW
        devices:
          pump: {driver: mock.laser, limits: {power: {max: 20 mW}}}
          qwp_b: {driver: mock.rotator, settings: {arm: b, plate: qwp}}
          hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
          tagger: {driver: mock.timetagger}
        steps:
          - set: {pump.power: \(power), pump.enabled: true}
          - sweep:
              name: fringe
              variable: alpha
              range: {from: 0 deg, to: \(to), step: 10 deg}
              set: {qwp_b.angle: $alpha, hwp_b.angle: \(hwp)}
              steps:
                - acquire: {device: tagger, duration: 10 ms}
        """
    }

    @Test func lockstepPointsCarryEveryPropertyComputedFromTheVariable() throws {
        let plan = try compile(Self.script()).plan
        let power = try #require(plan.steps.first.flatMap { step -> Assignment? in
            if case .set(let a) = step { return a.first } else { return nil }
        })
        #expect(power.value.quantity?.value == 0.010, "$p0 + 2 mW = 10 mW")
        guard case .sweep(let sweep) = plan.steps[1] else { Issue.record("no sweep"); return }
        #expect(sweep.points.count == 19)
        let p = sweep.points[3]  // alpha = 30°
        #expect(p.value?.value == 30)
        #expect(p.assignments.map(\.device) == ["qwp_b", "hwp_b"])
        #expect(p.assignments.map { $0.value.quantity?.value } == [30, 15])
    }

    @Test(arguments: [
        ("$p0 + 2 ns", "cannot add a time to a power", 4),
        ("$p0 * 2 mW", "power × power has no unit", 4),
        ("$p0 / 0", "division by zero", 4),
        ("$p0 +", "a value is missing at the end", 5),
        ("($p0 + 1 mW", "')' expected", 11),
        ("$p0 + 2 furlong", "unknown unit 'furlong'", 6),
        ("$nope * 2", "'$nope' is not a parameter", 0),
        ("$p0 2 mW", "unexpected '2'", 4),
    ])
    func aBadExpressionIsRefusedAtItsColumn(power: String, message: String, offset: Int) throws {
        let d = diagnostics(Self.script(power: power))
        let first = try #require(d.first)
        #expect(first.message.contains(message), "\(first.message)")
        // The value starts at column 23 of line 10 ("  - set: {pump.power: …").
        #expect(first.location.line == 10 && first.location.column == 23 + offset, "\(first.location) for '\(power)'")
    }

    /// $alpha · 2 passes the mount's 360° range at α = 190° only: the script is refused naming
    /// that point, and once, not at every later point.
    @Test func aLimitExceededAtOneSweepPointStopsTheScriptBeforeItRuns() throws {
        let d = diagnostics(Self.script(hwp: "$alpha * 2", to: "190 deg"))
        #expect(d.count == 1, "\(d)")
        let first = try #require(d.first)
        #expect(first.message.contains("380") && first.message.contains("$alpha = 190.0 deg"), "\(first.message)")
        #expect(first.location.line == 15, "\(first.location)")
        // And a run of it never starts: no file is made.
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-expr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("s.yaml").path
        try Self.script(hwp: "$alpha * 2", to: "190 deg").write(toFile: path, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("r.h5").path
        #expect(throws: ScriptErrors.self) { _ = try Herald.validate(path: path, mock: true) }
        #expect(!FileManager.default.fileExists(atPath: out))
    }

    /// A sequence with arguments: each `run` binds them for the body, in values and expressions.
    @Test func sequencesTakeArguments() throws {
        let text = """
            herald: 1
            devices:
              hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
              tagger: {driver: mock.timetagger}
            sequences:
              analyse_at:
                - set: {hwp_b.angle: $angle / 2}
                - acquire: {device: tagger, duration: 10 ms}
            steps:
              - run: {sequence: analyse_at, with: {angle: 22.5 deg}}
              - run: {sequence: analyse_at, with: {angle: 45 deg}}
            """
        let plan = try compile(text).plan
        let angles = plan.steps.compactMap { step -> Double? in
            if case .set(let a) = step { return a.first?.value.quantity?.value } else { return nil }
        }
        #expect(angles == [11.25, 22.5])
        // Without its argument the body's $angle is unknown, said at the body's line.
        let d = diagnostics(text.replacingOccurrences(of: "{sequence: analyse_at, with: {angle: 45 deg}}", with: "analyse_at"))
        #expect(d.first?.message.contains("'$angle' is not a parameter or a sweep variable") == true && d.first?.location.line == 7, "\(d)")
    }

    @Test func aRangeWhoseStepMissesItsEndSaysSoAndHowToIncludeIt() throws {
        let d = diagnostics(Self.script(to: "185 deg"))
        let first = try #require(d.first)
        #expect(first.message.contains("stops at 180") && first.message.contains("include_end: true"), "\(first.message)")
        let included = try compile(Self.script(to: "185 deg").replacingOccurrences(of: "step: 10 deg}", with: "step: 10 deg, include_end: true}"))
        guard case .sweep(let s) = included.plan.steps[1] else { Issue.record("no sweep"); return }
        #expect(s.points.last?.value?.value == 185 && s.points.count == 20)
    }

    /// 1000 mutations of valid expressions (characters dropped, doubled, swapped, replaced by
    /// operators, digits, units and junk): the compiler never crashes, and every refusal is a
    /// diagnostic on the expression's line, inside the file.
    @Test func athousandMutatedExpressionsNeverCrashAndEveryErrorIsLocated() async throws {
        // A thousand compiles on a thread of their own: on the pool they would hold up the
        // other suites' tasks for seconds on 2 cores.
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, Error>) in
            Thread { c.resume(with: Result { try Self.mutateAndCompile() }) }.start()
        }
    }

    static func mutateAndCompile() throws {
        let seeds = ["$p0 + 2 mW", "2 * $p0 - 1 mW", "($p0 + 4 mW) / 2", "-$p0 + 20 mW", "$p0 * 1.5", "${p0} / 2 + 3 mW"]
        let alphabet = Array("$()+-*/ 0123456789.eEmWnsdegKµ°%{}p_x\"'#:,[]")
        var g = SystemRandomNumberGenerator()
        var refused = 0
        for i in 0..<1000 {
            var chars = Array(seeds[i % seeds.count])
            for _ in 0..<Int.random(in: 1...3, using: &g) {
                guard !chars.isEmpty else { break }
                let at = Int.random(in: 0..<chars.count, using: &g)
                switch Int.random(in: 0..<4, using: &g) {
                case 0: chars.remove(at: at)
                case 1: chars.insert(alphabet.randomElement(using: &g) ?? "+", at: at)
                case 2: chars[at] = alphabet.randomElement(using: &g) ?? "*"
                default: chars.insert(chars[at], at: at)
                }
            }
            // Quoted, so YAML hands the compiler the text whatever it holds.
            let text = String(chars).replacingOccurrences(of: "\\", with: "").replacingOccurrences(of: "\"", with: "'")
            let d: [ScriptDiagnostic]
            do {
                _ = try compile(script(power: "\"\(text)\""))
                d = []
            } catch let e as ScriptErrors {
                d = e.diagnostics
            }
            if !d.isEmpty {
                refused += 1
                #expect(d.allSatisfy { $0.location.file == "test.yaml" && $0.location.line >= 1 && $0.location.line <= 20 }, "'\(text)': \(d)")
                #expect(d.contains { $0.location.line == 10 }, "'\(text)': the error is on the expression's line: \(d)")
            }
        }
        #expect(refused > 300, "most mutations are not valid expressions (\(refused) refused)")
    }
}
