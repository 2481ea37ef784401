import Foundation
import HeraldCore
import HeraldHDF5
import HeraldRunReader
import HeraldRunner
import Testing

/// The heralded-entanglement experiment end to end: the file h5py recomputes, the remote
/// state, and bad input (unknown nodes, detectors and wavelengths; a garbled entangler; a
/// link that stops heralding) failing clearly with what was recorded kept.
@Suite(.serialized) struct EntanglementTests {
    static let script = Paths.root.appendingPathComponent("Experiments/remote-entanglement.yaml")

    func python(_ args: [String]) async throws -> ProcessResult {
        try await runProcess(Paths.python, [Paths.root.appendingPathComponent("Tests/python/store_checks.py").path] + args)
    }

    /// The stored heralds give, with numpy, every rate and fidelity Herald computed, and the
    /// README's snippet prints what the run printed.
    @Test func h5pyRecomputesTheHeraldRateAndFidelityFromTheStoredHeralds() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("out/remote-entanglement.h5").path
        let run = try await runProcess(Paths.herald.path, ["run", Self.script.path, "--mock", "--seed", "5", "--set", "heralds=1800", "--out", out])
        #expect(run.status == 0, "\(run.stderr)")
        let checked = try await python(["heralds", out])
        #expect(checked.status == 0, "\(checked.stdout)\(checked.stderr)")
        let units = try await python(["units", out])
        #expect(units.status == 0, "\(units.stdout)\(units.stderr)")
        let snippet = try await python(["readme", Paths.root.appendingPathComponent("README.md").path, dir.path, "readme-heralds"])
        #expect(snippet.status == 0, "\(snippet.stderr)")
        // "1800 heralds in N attempts: R per second, fidelity F", against the run's own printout.
        let printed = run.stdout
        func figure(_ title: String, in text: String) -> String? {
            text.split(separator: "\n").first { $0.contains(title + ":") }.map { line in
                String(line.split(separator: ":").last?.split(separator: " ").first ?? "")
            }
        }
        let rate = try #require(figure("heralded entanglement rate", in: printed))
        let fidelity = try #require(figure("fidelity to target Bell state", in: printed))
        #expect(snippet.stdout.contains("\(rate) per second"), "\(snippet.stdout) vs rate \(rate)")
        #expect(snippet.stdout.contains("fidelity \(fidelity)"), "\(snippet.stdout) vs fidelity \(fidelity)")
    }

    /// The nine-setting maximum-likelihood state and the parity correlations estimate the same
    /// fidelity: their difference is within 5σ of the two errors combined (an upper bound on
    /// its spread, since both use the diagonal settings' readings).
    @Test func nineSettingStateAgreesWithTheParityFidelity() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let report = try await Herald.run(
            .init(scriptPath: Self.script.path, outPath: dir.appendingPathComponent("r.h5").path, seed: 9, overrides: ["heralds": "2700"]))
        #expect(report.status == .success, "\(report.reason ?? "")")
        let a = try #require(report.analyses.last)
        let parity = try #require(a.values["fidelity"]), mle = try #require(a.values["fidelity_mle"])
        let sp = try #require(a.uncertainties["fidelity"]), sm = try #require(a.uncertainties["fidelity_mle"])
        #expect(abs(parity - mle) < 5 * (sp * sp + sm * sm).squareRoot(), "parity \(parity) ± \(sp), MLE \(mle) ± \(sm)")
        #expect(a.rhoReal.count == 16)
        // A physical state: trace 1.
        let trace: Double = a.rhoReal[0] + a.rhoReal[5] + a.rhoReal[10] + a.rhoReal[15]
        #expect(abs(trace - 1) < 1e-9)
    }

    static let network = """
        herald: 1
        simulation:
          network:
            nodes:
              alice: {wavelength: 422 nm}
              bob: {wavelength: 2000 nm}
            links:
              ab:
                fibres: {alice: {length: 1 m}, carol: {length: 1 m}}
              ok:
                fibres: {alice: {length: 1 m}, bob: {length: 1 m}}
        devices:
          ea: {driver: mock.entangler, settings: {node: alice}}
          eb: {driver: mock.entangler, settings: {node: dave}}
          ra: {driver: mock.qubit-readout, settings: {node: alice}}
          rb: {driver: mock.qubit-readout, settings: {node: bob}}
          bsa: {driver: mock.analyser-tagger}
        links:
          ok:
            nodes:
              - {name: alice, entangler: ea, readout: ra}
              - {name: bob, entangler: eb, readout: rb}
            analyser: {tagger: bsa, detectors: {c_h: 1, c_v: 2, d_h: 3, d_v: 4}}
        steps:
          - entangle:
              name: h
              link: ok
              cycle: 1 us
              window: {start: 0 ns, length: 2 us}
              patterns:
                - {name: c, detectors: [c_h, c_q], heralds: psi+}
              timeout: 1 ms
              until: {heralds: 10}
          - entangle:
              name: h2
              link: nowhere
              cycle: 1 us
              window: {start: 0 ns, length: 100 ns}
              patterns: [{name: c, detectors: [c_h, c_v]}]
              timeout: 1 ms
              until: {time: 1 s}
          - entanglement: {sweep: h}
        """

    /// Every problem of a network script at once, each at its line and column.
    @Test func badNetworkInputIsReportedAtItsPlace() throws {
        let compiler = Herald.compiler(registry: Herald.descriptorRegistry)
        do {
            _ = try compiler.compile(text: Self.network, file: "net.yaml", mock: true)
            Issue.record("the script compiled")
        } catch let errors as ScriptErrors {
            let text = errors.diagnostics.map { "\($0.location.line):\($0.location.column) \($0.message)" }
            func has(_ line: Int, _ fragment: String) -> Bool {
                errors.diagnostics.contains { $0.location.line == line && $0.message.contains(fragment) }
            }
            // A link between nodes that do not exist.
            #expect(has(9, "joins node 'carol', which simulation.network.nodes does not declare"), "\(text)")
            // A wavelength the fibre model lacks.
            #expect(has(11, "no attenuation at 2000.0 nm"), "\(text)")
            // A device on an undeclared node.
            #expect(has(14, "node 'dave'"), "\(text)")
            // A pattern naming an unknown detector.
            #expect(has(31, "names detector 'c_q', which link 'ok' does not have"), "\(text)")
            // A window longer than the cycle; an unknown link.
            #expect(has(29, "must lie inside one cycle"), "\(text)")
            #expect(has(36, "unknown link 'nowhere'"), "\(text)")
        }
    }

    /// An entangler that reports a herald stamped after its own loop's timeout is garbage:
    /// the run fails naming it, every herald before it stays in the file, and the safe state runs.
    @Test func aHeraldAfterTheTimeoutFailsTheRunAndKeepsWhatWasRecorded() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("garbled.h5").path
        var request = Herald.RunRequest(scriptPath: Self.script.path, outPath: out, seed: 3)
        request.faults = ["entangler_a garbage at 3 s"]
        let report = try await Herald.run(request)
        #expect(report.status == .failed)
        #expect(report.failure == .device("entangler_a", .invalidResponse), "\(String(describing: report.failure))")
        #expect(report.reason?.contains("outside its loop's timeout") == true, "\(report.reason ?? "")")
        // Read in a scope of its own: an open group keeps the file open for the recount below.
        let times: [Int64] = try {
            let file = try RunFile.open(out)
            defer { file.close() }
            let g = try file.openGroup("user").openGroup("herald")
            let times = try g.openGroup("heralds").openGroup("heralds").dataset("time_ps").read(Int64.self)
            // About 196 heralds per second for 3 s came before the fault: all kept, none after it.
            #expect(times.count > 300 && times.allSatisfy { $0 < 3_000_000_000_000 + 10_000_000_000 }, "\(times.count) heralds")
            let log = try g.dataset("log").readStrings().joined(separator: "\n")
            #expect(log.contains("safe state: entangler_a") && log.contains("safe state: entangler_b"), "\(log)")
            return times
        }()
        // The point the fault cut short is still analysed from the file: every herald counts.
        let recount = try await Herald.recount(path: out)
        let heralds = try #require(recount.last?.record.values["heralds"])
        #expect(Int(heralds) == times.count, "recount \(heralds), file \(times.count)")
    }

    /// A fit across a sweep needs every point of it: inside the sweep's body it is refused.
    @Test func aFitInsideItsSweepIsRefused() throws {
        let text = try String(contentsOf: Paths.root.appendingPathComponent("Experiments/remote-entanglement-distance.yaml"), encoding: .utf8)
            .replacingOccurrences(of: "            measure: parity\n  - entanglement: {sweep: heralds, fit: attenuation, drift_bins: 0}",
                with: "            measure: parity\n        - entanglement: {sweep: heralds, fit: attenuation}")
        #expect(text.contains("        - entanglement: {sweep: heralds, fit: attenuation}"))
        let compiler = Herald.compiler(registry: Herald.descriptorRegistry)
        #expect(throws: ScriptErrors.self) { try compiler.compile(text: text, file: "fit.yaml", mock: true) }
        do {
            _ = try compiler.compile(text: text, file: "fit.yaml", mock: true)
        } catch let e as ScriptErrors {
            #expect(e.diagnostics.contains { $0.message.contains("a fit needs every point of sweep 'length'") }, "\(e)")
        }
    }

    /// A link that stops heralding fails the run once its attempt loops have timed out
    /// max_timeouts times in a row, naming the link, rather than looping for ever.
    @Test func aLinkThatNeverHeraldsFailsNamingIt() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try String(contentsOf: Self.script, encoding: .utf8)
            .replacingOccurrences(of: "emission_probability: 0.5", with: "emission_probability: 0")
            .replacingOccurrences(of: "measure: pauli-9", with: "measure: pauli-9\n      max_timeouts: 20")
        let path = dir.appendingPathComponent("dark.yaml")
        try text.write(to: path, atomically: true, encoding: .utf8)
        let report = try await Herald.run(.init(scriptPath: path.path, outPath: dir.appendingPathComponent("d.h5").path, seed: 1))
        #expect(report.status == .failed)
        guard case .step(.entanglementStalled, let location)? = report.failure else {
            Issue.record("failure \(String(describing: report.failure))")
            return
        }
        #expect(location?.line == 73, "the entangle step's line")
        #expect(report.reason?.contains("link 'ab' heralded nothing in 20 attempt loops") == true, "\(report.reason ?? "")")
    }

    /// A drifting fibre rotation θ(t) = 3°/s · t shows in the fidelity against time: each bin
    /// of the drift series is the bin's mean of cos²θ(t) (ideal readout and photons otherwise),
    ///   ⟨cos²(at)⟩ over [t0, t1] = ½ + (sin 2at1 − sin 2at0) / (4a(t1 − t0)),
    /// within 5σ of its binomial error.
    @Test func aDriftingFibreShowsInTheFidelityAgainstTime() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let text = try String(contentsOf: Self.script, encoding: .utf8)
            .replacingOccurrences(of: "bob: {length: 2 m}", with: "bob: {length: 2 m, drift: 3}")
            .replacingOccurrences(of: "readout_dark: 0.1", with: "readout_dark: 0")
            .replacingOccurrences(of: "t2_star: 1 ms", with: "t2_star: 1000 s")
            .replacingOccurrences(of: "measure: pauli-9", with: "measure: parity")
            .replacingOccurrences(of: "until: {heralds: $heralds}", with: "until: {time: 20 s}")
        let path = dir.appendingPathComponent("drift.yaml")
        try text.write(to: path, atomically: true, encoding: .utf8)
        let report = try await Herald.run(.init(scriptPath: path.path, outPath: dir.appendingPathComponent("d.h5").path, seed: 4))
        #expect(report.status == .success, "\(report.reason ?? "")")
        let a = try #require(report.analyses.last)
        let time = try #require(a.series["time"]), fidelity = try #require(a.series["fidelity"])
        let errors = try #require(a.series["fidelity_error"])
        #expect(time.count == 10)
        let rate = 3 * Double.pi / 180, width = 20.0 / Double(time.count)
        for (k, t) in time.enumerated() {
            let t0 = t - width / 2, t1 = t + width / 2
            let expected = 0.5 + (sin(2 * rate * t1) - sin(2 * rate * t0)) / (4 * rate * (t1 - t0))
            #expect(abs(fidelity[k] - expected) < 5 * errors[k], "bin \(k) at \(t) s: \(fidelity[k]) ± \(errors[k]), expected \(expected)")
        }
        #expect(fidelity.first ?? 0 > 0.95 && fidelity.last ?? 1 < 0.6, "\(fidelity)")
    }

    /// A cycle too short for the herald to come back over the fibre is refused by the node.
    @Test func aCycleShorterThanTheHeraldsRoundTripIsRefused() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = Paths.root.appendingPathComponent("Experiments/remote-entanglement-distance.yaml")
        let text = try String(contentsOf: script, encoding: .utf8).replacingOccurrences(of: "cycle: 500 us", with: "cycle: 100 us")
        let path = dir.appendingPathComponent("short.yaml")
        try text.write(to: path, atomically: true, encoding: .utf8)
        let report = try await Herald.run(.init(scriptPath: path.path, outPath: dir.appendingPathComponent("s.h5").path, seed: 1))
        #expect(report.status == .failed)
        #expect(report.reason?.contains("shorter than the 195.9 µs the herald needs to come back over the fibre of node 'bob'") == true, "\(report.reason ?? "")")
    }
}
