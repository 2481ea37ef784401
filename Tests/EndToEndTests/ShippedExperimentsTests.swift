import Foundation
import HeraldCore
import HeraldRunner
import Testing

/// Every script in Experiments/ must validate, run to success on the simulated lab, and
/// give what its header says a user should expect (within 5σ of its reported error).
@Suite struct ShippedExperimentsTests {
    /// The scripts of Experiments/ and Experiments/hardware/ (whose instrument drivers run on
    /// simulated instruments under --mock); lab files, which describe devices and hold no
    /// steps, are included by scripts rather than run.
    static var scripts: [String] {
        let dir = Paths.root.appendingPathComponent("Experiments")
        let top = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasSuffix(".yaml") }
        let hardware = ((try? FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("hardware").path)) ?? [])
            .filter { $0.hasSuffix(".yaml") && $0 != "lab.yaml" }.map { "hardware/" + $0 }
        return (top + hardware).sorted()
    }

    /// Expected values from each script's simulation block (see the script headers).
    static let expectations: [String: [String: Double]] = [
        "bell-tomography-16.yaml": ["fidelity": 0.9247],
        "bell-tomography.yaml": ["fidelity": 0.925],
        "chsh.yaml": ["S": 2 * 2.0.squareRoot() * 0.9],
        // The same S with photon B on a second tagger whose clock drifts and wanders, merged by its marks.
        "two-tagger-chsh.yaml": ["S": 2 * 2.0.squareRoot() * 0.9],
        // 2·R·τ: 1 MHz pairs at 25 mW, 5 ns window.
        "g2-hbt.yaml": ["g2_0": 2 * 1e6 * 5e-9],
        // The same with the signals on a second tagger, its clock calibrated from the photons.
        "two-tagger-g2.yaml": ["g2_0": 2 * 1e6 * 5e-9],
        "detector-darkcounts.yaml": ["rate_1": 200, "rate_2": 200, "rate_3": 200, "rate_4": 200],
        // R/P·η²·(1+V)/4 per watt.
        "pump-power-scan.yaml": ["coincidence_rate_1_3_slope": 400e3 / 10e-3 * 0.0625 * 0.475, "coincidence_rate_1_3_intercept": 0],
        // The replay of a mock bell-tomography run gives that run's state.
        "replay-tomography.yaml": ["fidelity": 0.925],
        // ½η² with η = 0.5·0.05·10^(−0.006)·(1 − e^(−50/7))·0.8; F = (1 + r²(2c² + 1) + o²)/4 − 1.5·10⁻⁴.
        "remote-entanglement.yaml": ["success_probability": 0.5 * 0.0197100 * 0.0197100, "fidelity": 0.9904],
        // The fit across lengths: 0.19 dB/km at 1550 nm, and ½η_Aη_B·2 kHz at 0 km.
        "remote-entanglement-distance.yaml": ["attenuation": 0.19, "herald_rate_at_zero": 3.538],
        // Identical exponential photons (τ = 7 ns), bob's delay scanned across alice's 30 ns.
        "two-node-hom.yaml": ["hom_visibility": 1, "hom_width": 7e-9, "hom_centre": 30e-9, "hom_baseline": 0.5],
        // V = 2·20·30/(20² + 30²); η_ion·η_atom/2 at 10 kHz.
        "heterogeneous-link.yaml": ["fidelity": 0.9593, "herald_rate": 18.646],
        // Link A–C, the last analysed: ½·η(1 km)·η(5 km) at 10 kHz; readout and c's dephasing.
        "three-node-star.yaml": ["herald_rate": 13.61, "fidelity": 0.9969],
        // V, the stage position of equal paths, c₀τc/2 (double pass) and ½·R·η².
        "hom-dip.yaml": ["dip_visibility_1_3": 0.95, "dip_centre_1_3": 0.0125, "dip_width_1_3": 299_792_458 * 1e-12 / 2, "dip_baseline_1_3": 2000],
        // T₀, ΔT and R·η²·(1 + V)/4 along sinc²(π(T − T₀)/ΔT).
        "crystal-temperature-scan.yaml": ["peak_centre_1_3": 308.15, "peak_width_1_3": 2, "peak_rate_1_3": 1900],
        // Singles R·η/2 + dark (the pairs, skewed out of the window, are checked by CorrelateTests).
        "delay-calibration.yaml": ["rate_1": 50_200, "rate_3": 50_200, "peak_position": 2.5e-9],
        // The D/A fringe (the last analysis; the H/V one is checked by PolarizationFringeTests): V, 45°, R·η²/4.
        "polarization-visibility.yaml": ["fringe_visibility_1_3": 0.9, "fringe_phase_1_3": 45, "fringe_rate_1_3": 6250],
        // Through the real ITC4001, ELL14 and TDC1 drivers on simulated instruments: (1 + 3V)/4, V = 0.95.
        "hardware/bell-tomography-usb.yaml": ["fidelity": (1 + 3 * 0.95) / 4],
        // The same dip and phase-matching curve as above, through the SMC100, TED4015, PM100, ELL14, ITC4001 and TDC1 drivers.
        "hardware/hom-dip-smc100.yaml": ["dip_visibility_1_3": 0.95, "dip_centre_1_3": 0.0125, "dip_width_1_3": 299_792_458 * 1e-12 / 2, "dip_baseline_1_3": 2000],
        "hardware/crystal-temperature-scan-ted4015.yaml": ["peak_centre_1_3": 308.15, "peak_width_1_3": 2, "peak_rate_1_3": 1900],
    ]

    /// Shorter points for the long scans: the suite runs every script at once in this process,
    /// and on 2 cores their simulations would starve the other suites' tasks. The expectations
    /// hold at any length; only the errors they are checked against grow.
    static let shorter: [String: [String: String]] = [
        "hom-dip.yaml": ["integration": "100 ms"], "hardware/hom-dip-smc100.yaml": ["integration": "100 ms"],
        "crystal-temperature-scan.yaml": ["integration": "100 ms"], "hardware/crystal-temperature-scan-ted4015.yaml": ["integration": "100 ms"],
        "polarization-visibility.yaml": ["integration": "100 ms"], "delay-calibration.yaml": ["integration": "200 ms"],
        "hardware/bell-tomography-usb.yaml": ["integration": "250 ms"],
    ]

    /// Scripts that replay a recording get one made by running another shipped script first.
    static let recordings: [String: (script: String, overrides: [String: String])] = [
        "replay-tomography.yaml": ("bell-tomography.yaml", ["integration": "200 ms"])
    ]

    @Test(arguments: scripts)
    func runsOnMocksAndGivesWhatItsHeaderPromises(script: String) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let experiments = Paths.root.appendingPathComponent("Experiments")
        let path = experiments.appendingPathComponent(script).path
        var overrides: [String: String] = Self.shorter[script] ?? [:]
        if let (source, sourceOverrides) = Self.recordings[script] {
            let recording = dir.appendingPathComponent("recording.h5").path
            let made = try await Herald.run(
                .init(
                    scriptPath: experiments.appendingPathComponent(source).path, mock: true, outPath: recording, seed: 11,
                    overrides: sourceOverrides))
            #expect(made.status == .success)
            overrides = sourceOverrides.merging(["recording": recording]) { a, _ in a }
        }
        let out = dir.appendingPathComponent("out.h5").path
        let live = LiveResults()
        let report = try await Herald.run(
            .init(scriptPath: path, mock: true, outPath: out, seed: 11, overrides: overrides), extraSinks: [live])
        #expect(report.status == .success, "\(report.reason ?? "")")

        // Replayed from the file through the reducer, with the window and delays it was recorded
        // with, every count and every figure is what the run computed live: bit for bit.
        let recount = try await Herald.recount(path: out)
        let liveAnalyses = await live.analyses, liveCounts = await live.counts
        #expect(recount.count == liveAnalyses.count, "\(script): \(recount.count) recounted analyses, \(liveAnalyses.count) live")
        for (r, l) in zip(recount.map(\.record), liveAnalyses) {
            #expect(r.name == l.name && r.outer == l.outer)
            #expect(Self.same(r.values, l.values), "\(script) \(r.name): \(r.values) recounted, \(l.values) live")
            #expect(Self.same(r.uncertainties, l.uncertainties), "\(script) \(r.name) uncertainties")
            #expect(r.series.keys.sorted() == l.series.keys.sorted())
            for (k, v) in r.series { #expect(Self.same(v, l.series[k] ?? []), "\(script) \(r.name) series \(k)") }
            #expect(r.rhoReal == l.rhoReal && r.rhoImag == l.rhoImag)
        }
        let recounted = recount.flatMap(\.counts)
        for c in recounted {
            let l = try #require(liveCounts.first { $0.sweep == c.sweep && $0.index == c.index && $0.outer == c.outer })
            #expect(c == l, "\(script): point \(c.sweep)[\(c.index)] recounted \(c), live \(l)")
        }
        // Heralded-entanglement scripts count no tags: their heralds come from the entangler.
        let heralded = (try String(contentsOfFile: path, encoding: .utf8)).contains("- entangle:")
        #expect(!recounted.isEmpty || heralded, "\(script): the recount counted nothing")
        // Every stream a consumer sees is described, with units, before its first event.
        let streams = await live.streams.map(\.stream)
        let text = try String(contentsOfFile: path, encoding: .utf8)
        let clocked = text.contains("\nclocks:")
        let tagger = heralded || clocked ? "tags/analyser" : "tags/tagger"
        let expectedStreams = [tagger, "points", "acquisitions", "pauses", "counts", "analyses"] + (heralded ? ["heralds"] : [])
            + (clocked ? ["tags/remote", "clocks"] : [])
        #expect(expectedStreams.allSatisfy(streams.contains), "\(streams)")
        #expect(await live.streams.first { $0.stream == tagger }?.fields.map(\.unit) == ["ps", "1"])
        let expected = try #require(Self.expectations[script], "add the expectations of \(script) to this test")
        for (key, value) in expected {
            // The last analysis that reports the figure (a script may end with several analyses).
            let analysis = try #require(report.analyses.last { $0.values[key] != nil } ?? report.analyses.last)
            let measured = try #require(analysis.values[key], "\(script): no \(key)")
            let sigma = try #require(analysis.uncertainties[key], "\(script): no error for \(key)")
            #expect(abs(measured - value) < 5 * sigma, "\(script): \(key) = \(measured) ± \(sigma), expected \(value)")
        }
    }

    /// Equal bit for bit, so NaN (a g2 with no triples) equals itself.
    static func same(_ a: [Double], _ b: [Double]) -> Bool {
        a.count == b.count && zip(a, b).allSatisfy { $0.bitPattern == $1.bitPattern }
    }

    static func same(_ a: [String: Double], _ b: [String: Double]) -> Bool {
        a.keys.sorted() == b.keys.sorted() && a.allSatisfy { k, v in b[k]?.bitPattern == v.bitPattern }
    }
}

/// The counts and analyses a run emitted live.
actor LiveResults: RunEventSink {
    var counts: [PointCounts] = []
    var analyses: [AnalysisRecord] = []
    var streams: [StreamDescriptor] = []

    func handle(_ event: RunEvent) async throws {
        switch event {
        case .streamDeclared(let d): streams.append(d)
        case .counts(let c): counts.append(c)
        case .analysis(let a): analyses.append(a)
        default: break
        }
    }
}
