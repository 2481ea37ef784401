import Foundation
import Testing

/// `herald report` on the demo, the g2 run, the entanglement run and a run that paused:
/// Tests/python/report_checks.py reads every plotted number back out of the SVG and compares
/// it with the HDF5 file (histograms against a numpy recount of the raw tags), then has
/// headless Chromium render the file offline.
@Suite(.serialized) struct ReportTests {
    struct Checked: Decodable {
        var figures, rho, counts, series, histogram, bands, herald_rate: Int
    }

    struct Summary: Decodable {
        var problems: [String]
        var checked: Checked
        var charts: Int
    }

    static func report(_ script: String, name: String, extra: [String] = []) async throws -> Summary {
        let out = Paths.root.appendingPathComponent(".build/test-artifacts/report")
        try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
        let h5 = out.appendingPathComponent("\(name).h5").path, html = out.appendingPathComponent("\(name).html").path
        let run = try await runProcess(
            Paths.herald.path, ["run", Paths.root.appendingPathComponent(script).path, "--mock", "--seed", "11", "--out", h5, "--overwrite"] + extra)
        #expect(run.status == 0, "\(run.stderr)")
        let report = try await runProcess(Paths.herald.path, ["report", h5, "--out", html])
        #expect(report.status == 0 && report.stdout.contains(html), "\(report.stderr)")
        let check = try await runProcess(
            Paths.python, [Paths.root.appendingPathComponent("Tests/python/report_checks.py").path, html, h5, out.appendingPathComponent("\(name).png").path])
        #expect(check.status == 0, "\(check.stderr)")
        let summary = try JSONDecoder().decode(Summary.self, from: Data(check.stdout.utf8))
        #expect(summary.problems.isEmpty, "\(summary.problems)")
        return summary
    }

    @Test func theDemosReportHoldsItsFiguresRhoCountsAndHistograms() async throws {
        let s = try await Self.report("Experiments/bell-tomography.yaml", name: "demo")
        #expect(s.checked.figures >= 10 && s.checked.rho == 32)
        #expect(s.checked.counts == 36 * 4, "36 settings × 4 detector pairs")
        #expect(s.checked.histogram == 4 * 200, "4 pairs × 200 bins")
    }

    @Test func theG2RunsReportHoldsItsHistograms() async throws {
        let s = try await Self.report("Experiments/g2-hbt.yaml", name: "g2")
        #expect(s.checked.figures >= 3 && s.checked.histogram == 2 * 200)
    }

    @Test func theEntanglementRunsReportHoldsHeraldRatesFidelityAndRho() async throws {
        let s = try await Self.report("Experiments/remote-entanglement.yaml", name: "entanglement")
        #expect(s.checked.rho == 32 && s.checked.herald_rate >= 1 && s.checked.series >= 1)
    }

    @Test func aPausedRunsReportMarksThePause() async throws {
        let s = try await Self.report("Tests/Fixtures/monitor/paused-tomography.yaml", name: "paused")
        #expect(s.checked.bands == 1)
    }

    @Test func analyzePrintsRhoAsTheRunComputedIt() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let h5 = dir.appendingPathComponent("run.h5").path
        let run = try await runProcess(
            Paths.herald.path, ["run", Paths.root.appendingPathComponent("Tests/Fixtures/monitor/paused-tomography.yaml").path, "--mock", "--seed", "2", "--out", h5, "--json"])
        struct Report: Decodable { struct A: Decodable { var rhoReal: [Double]; var rhoImag: [Double] }; var analyses: [A] }
        let live = try #require(try JSONDecoder().decode(Report.self, from: Data(run.stdout.utf8)).analyses.first)
        let json = try await runProcess(Paths.herald.path, ["analyze", h5, "--json"])
        let stored = try #require(try JSONDecoder().decode(Report.self, from: Data(json.stdout.utf8)).analyses.first)
        #expect(stored.rhoReal == live.rhoReal && stored.rhoImag == live.rhoImag && live.rhoReal.count == 16)
        let text = try await runProcess(Paths.herald.path, ["analyze", h5])
        #expect(text.stdout.contains("Re ρ:") && text.stdout.contains("Im ρ:"))
        let hh = String(format: "%+.4f", live.rhoReal[0])
        #expect(text.stdout.contains("HH    \(hh) "), "\(text.stdout)")
    }
}
