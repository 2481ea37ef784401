import Foundation
import HeraldRunner
import Testing

/// Every script in Experiments/ must validate and run to success on the simulated lab.
@Suite struct ShippedExperimentsTests {
    static var scripts: [String] {
        let dir = Paths.root.appendingPathComponent("Experiments")
        let names = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return names.filter { $0.hasSuffix(".yaml") }.sorted()
    }

    @Test(arguments: scripts)
    func runsOnMocks(script: String) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = Paths.root.appendingPathComponent("Experiments").appendingPathComponent(script).path
        let report = try await Herald.run(
            .init(scriptPath: path, mock: true, outPath: dir.appendingPathComponent("out.h5").path, seed: 11))
        #expect(report.status == .success, "\(report.reason ?? "")")
        for analysis in report.analyses {
            // Shipped Bell scripts simulate V = 0.9: F = 0.925 up to accidentals, well within 5σ.
            if let f = analysis.values["fidelity"], let s = analysis.uncertainties["fidelity"] {
                #expect(abs(f - 0.925) < 5 * s, "\(script): F = \(f) ± \(s)")
            }
        }
    }

    @Test func thereAreShippedScripts() { #expect(Self.scripts.count >= 2) }
}
