import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import HeraldSequencer
import HeraldRunReader
import HeraldStore
import SimulatedLab
import Testing

/// Simulation parameters of the fixture run; the expected fidelity is computed from these.
struct Fixture {
    var pairRate = 200e3  // at nominal power, and the script pumps at nominal power
    var visibility = 0.9
    var efficiency = 0.25
    var darkRate = 30e3  // noisy detectors, so accidentals visibly dilute the state
    var jitter = 50e-12
    var window = 50e-9
    var seconds = 1.0

    var script: String {
        """
        herald: 1
        name: bell-fixture
        simulation:
          pair_rate: \(pairRate) Hz
          nominal_power: 10 mW
          visibility: \(visibility)
          efficiency: \(efficiency)
          dark_rate: \(darkRate) Hz
          jitter: \(jitter) s
        \(bellSetupDevices)
        steps:
          - set: {pump.power: 10 mW, pump.enabled: true}
          - sweep:
              name: tomography
              basis: tomography-16
              analyzers:
                a: {qwp: qwp_a, hwp: hwp_a}
                b: {qwp: qwp_b, hwp: hwp_b}
              steps:
                - acquire: {device: tagger, duration: \(seconds) s}
          - set: {pump.enabled: false}
          - tomography:
              sweep: tomography
              arms: {a: {pass: 1}, b: {pass: 3}}
              window: \(window) s
          - tomography:
              sweep: tomography
              arms: {a: {pass: 1}, b: {pass: 3}}
              window: \(window) s
              accidentals: subtract
        """
    }

    /// Fidelity of the Werner state itself: F_ρ = (1 + 3V)/4.
    var stateFidelity: Double { (1 + 3 * visibility) / 4 }

    /// Fidelity of what the detectors herald, accidentals included.
    ///
    /// Per projector pair, the coincidence rate is C·tr(ρ P) + A with
    ///   C = R η² ε  (true pairs; ε = erf(w / 4σ) is the fraction whose jitter
    ///                difference Δt ~ N(0, 2σ²) falls inside ±w/2),
    ///   A = S² w    (accidentals; S = Rη/2 + d is a pass-port singles rate, since
    ///                a Werner state's marginals are maximally mixed).
    /// Accidentals are the same for every setting, so they add A·4·(I/4) to C·ρ:
    ///   F = (C·F_ρ + A) / (C + 4A).
    var heraldedFidelity: Double {
        let singles = pairRate * efficiency / 2 + darkRate
        let accidentals = singles * singles * window
        let capture = erf(window / (4 * jitter))
        let trueRate = pairRate * efficiency * efficiency * capture
        return (trueRate * stateFidelity + accidentals) / (trueRate + 4 * accidentals)
    }
}

@Suite struct BellRunTests {
    @Test func fidelityAgreesWithThePhysicsWithinCountingErrors() async throws {
        let fixture = Fixture()
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let scriptURL = dir.appendingPathComponent("bell.yaml")
        try fixture.script.write(to: scriptURL, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("run.h5").path

        let report = try await Herald.run(.init(scriptPath: scriptURL.path, mock: true, outPath: out, seed: 2026))
        #expect(report.status == .success)
        try #require(report.analyses.count == 2)

        let kept = report.analyses[0], subtracted = report.analyses[1]
        let f = try #require(kept.values["fidelity"]), sigma = try #require(kept.uncertainties["fidelity"])
        // The tolerance is the counting-statistics error the analysis reports (3σ),
        // and that error must itself be of the size Poisson statistics imply (not inflated).
        #expect(sigma > 0 && sigma < 0.02)
        print("bell fixture: F = \(f) ± \(sigma), expected \(fixture.heraldedFidelity); subtracted: \(subtracted.values["fidelity"] ?? 0) ± \(subtracted.uncertainties["fidelity"] ?? 0), expected \(fixture.stateFidelity)")
        #expect(abs(f - fixture.heraldedFidelity) < 3 * sigma, "F = \(f) ± \(sigma), expected \(fixture.heraldedFidelity)")
        // Accidentals dilute the heralded state measurably here; subtracting them recovers F_ρ.
        #expect(fixture.stateFidelity - fixture.heraldedFidelity > 3 * sigma)
        let fs = try #require(subtracted.values["fidelity"]), ss = try #require(subtracted.uncertainties["fidelity"])
        #expect(abs(fs - fixture.stateFidelity) < 3 * ss, "subtracted F = \(fs) ± \(ss), expected \(fixture.stateFidelity)")
        // Concurrence of the Werner state: max(0, (3V − 1)/2) after subtraction.
        let c = try #require(subtracted.values["concurrence"]), cs = try #require(subtracted.uncertainties["concurrence"])
        #expect(abs(c - (3 * fixture.visibility - 1) / 2) < 3 * cs)

        // An independent reader (h5py + numpy) checks the file against the report.
        let reportURL = dir.appendingPathComponent("report.json")
        try JSONEncoder().encode(report).write(to: reportURL)
        let check = try await runProcess(Paths.python, [Paths.root.appendingPathComponent("Tests/python/check_run.py").path, out, reportURL.path])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains("check_run: OK"))
    }

    @Test func sameSeedGivesTheSameRun() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var fixture = Fixture()
        fixture.seconds = 0.05
        let scriptURL = dir.appendingPathComponent("bell.yaml")
        try fixture.script.write(to: scriptURL, atomically: true, encoding: .utf8)
        let a = try await Herald.run(.init(scriptPath: scriptURL.path, outPath: dir.appendingPathComponent("a.h5").path, seed: 5))
        let b = try await Herald.run(.init(scriptPath: scriptURL.path, outPath: dir.appendingPathComponent("b.h5").path, seed: 5))
        let c = try await Herald.run(.init(scriptPath: scriptURL.path, outPath: dir.appendingPathComponent("c.h5").path, seed: 6))
        #expect(a.tags == b.tags && a.analyses.first?.rhoReal == b.analyses.first?.rhoReal)
        #expect(a.tags != c.tags)
    }
}

/// A consumer that fails partway through, standing in for a full disk or a crashed display.
final class FailingSink: RunEventSink {
    let failAfterPoints: Int
    init(failAfterPoints: Int) { self.failAfterPoints = failAfterPoints }
    func handle(_ event: RunEvent) async throws {
        if case .sweepPointFinished(let r) = event, r.index + 1 >= failAfterPoints {
            throw DeviceError(device: "tagger", .disconnected, "simulated loss mid-run")
        }
    }
}

@Suite struct FailureTests {
    /// A failure mid-sweep leaves the laser off, keeps the tags already recorded, and
    /// closes the file with exit status "failed" and the reason.
    @Test func failureMidRunRunsTheSafeStateAndKeepsTheData() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        var fixture = Fixture()
        fixture.seconds = 0.05
        let compiled = try Herald.compiler(registry: Herald.descriptorRegistry).compile(text: fixture.script, file: "f.yaml")
        let lab = SimulatedLab(parameters: try LabParameters(compiled.simulation), seed: 1)
        let registry = Herald.registry(lab: lab)
        var devices: [String: any Device] = [:]
        for config in compiled.plan.devices { devices[config.name] = try registry.entry(config.driver)!.make(config) }
        let out = dir.appendingPathComponent("failed.h5").path
        let recorder = try RunRecorder(path: out)
        let engine = RunEngine(
            plan: compiled.plan, devices: devices, clock: lab.clock, sinks: [recorder, FailingSink(failAfterPoints: 3)])
        let stop = await engine.run(
            start: RunStart(
                runID: UUID(), plan: compiled.plan, devices: [], seed: 1, mock: true, startedAt: Date(),
                heraldVersion: Herald.version))

        #expect(stop.status == .failed)
        #expect(stop.failure == .device("tagger", .disconnected), "\(stop.reason ?? "")")
        #expect(await lab.pump.enabled == false, "the pump must be left off")
        #expect(stop.tagCount > 0)

        let probe = """
            import h5py, sys
            f = h5py.File(sys.argv[1], "r")
            run = f["user/herald/run"].attrs
            print(run["exit_status"], len(f["photon_data/timestamps"]), run["tag_count"], run["reason"])
            """
        let r = try await runProcess(Paths.python, ["-c", probe, out])
        #expect(r.status == 0, "\(r.stderr)")
        let fields = r.stdout.split(separator: " ")
        #expect(fields.first == "failed")
        #expect(fields.count > 2 && Int(fields[1]) == stop.tagCount && Int(fields[2]) == stop.tagCount)
    }
}
