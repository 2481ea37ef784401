import Foundation
import HeraldRunReader
import HeraldRunner
import HeraldStore
import Testing

/// The HDF5 store, checked through independent readers (h5py, phconvert) and the CLI.
@Suite(.serialized) struct StoreTests {
    /// Runs a shipped experiment on the mocks into `dir/out/<name>.h5`.
    func run(_ script: String, in dir: URL, _ extra: [String] = []) async throws -> String {
        let name = URL(fileURLWithPath: script).deletingPathExtension().lastPathComponent
        let out = dir.appendingPathComponent("out/\(name).h5").path
        let r = try await runProcess(
            Paths.herald.path,
            ["run", Paths.root.appendingPathComponent("Experiments/\(script)").path, "--mock", "--seed", "7", "--out", out] + extra)
        #expect(r.status == 0, "\(r.stderr)")
        return out
    }

    func python(_ args: [String]) async throws -> ProcessResult {
        try await runProcess(Paths.python, [Paths.root.appendingPathComponent("Tests/python/store_checks.py").path] + args)
    }

    /// phconvert's validator accepts the files, h5py reads every dataset, and every path
    /// docs/hdf5-layout.md documents exists (a tomography run with a recount, and a CHSH run).
    @Test func filesArePhotonHDF5AndMatchTheDocumentedLayout() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let bell = try await run("bell-tomography.yaml", in: dir, ["--set", "integration=50ms"])
        let recount = try await runProcess(Paths.herald.path, ["analyze", bell, "--window", "2ns", "--json"])
        #expect(recount.status == 0, "\(recount.stderr)")
        let chsh = try await run("chsh.yaml", in: dir)
        // A nested sweep, for the outer-point columns.
        let nestedScript = dir.appendingPathComponent("nested.yaml")
        try NestedSweepTests.script(analyses: "  - rates: {sweep: angle, pairs: [[1, 3]], window: 1 ns}")
            .write(to: nestedScript, atomically: true, encoding: .utf8)
        let nested = dir.appendingPathComponent("nested.h5").path
        let made = try await runProcess(Paths.herald.path, ["run", nestedScript.path, "--mock", "--seed", "3", "--out", nested])
        #expect(made.status == 0, "\(made.stderr)")
        // A heralded-entanglement run, for /user/herald/heralds and /user/herald/network.
        let heralds = try await run("remote-entanglement.yaml", in: dir, ["--set", "heralds=300"])
        // Two taggers on their own clocks, for /user/herald/taggers and /user/herald/clocks.
        let clocked = try await run("two-tagger-chsh.yaml", in: dir, ["--set", "integration=200ms"])
        let r = try await python(
            ["layout", Paths.root.appendingPathComponent("docs/hdf5-layout.md").path, bell, chsh, nested, heralds, clocked])
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
    }

    /// The README's h5py snippet runs as printed and counts what Herald counted.
    @Test func readmeSnippetCountsLikeHerald() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try await run("bell-tomography.yaml", in: dir, ["--set", "integration=100ms"])
        let r = try await python(["readme", Paths.root.appendingPathComponent("README.md").path, dir.path])
        #expect(r.status == 0, "\(r.stderr)")
        let printed = r.stdout.split(separator: " ").firstIndex(of: "coincidences;").map { r.stdout.split(separator: " ")[$0 - 1] }
        let herald = try RunFile.summary(path: file).counts.first { $0.label == "HV" && $0.channelA == 1 && $0.channelB == 4 }
        #expect(printed.flatMap { Int($0) } == herald?.coincidences, "\(r.stdout)")
        #expect((herald?.coincidences ?? 0) > 100)
    }

    /// A live SWMR reader follows the run; after SIGKILL, `herald recover` gives back every
    /// tag the reader saw, the sweep table, and exit_status "incomplete".
    /// Both tag layouts: plain, and compressed chunks written directly (H5Dwrite_chunk) plus
    /// a partial tail chunk rewritten at every flush.
    @Test(arguments: [[], ["--compress", "1"]])
    func killedRunIsRecoveredWithEveryFlushedTag(options: [String]) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let r = try await python(
            ["crash", Paths.herald.path, Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path, dir.path] + options)
        #expect(r.status == 0, "\(r.stdout)\(r.stderr)")
        #expect(r.stdout.contains("plain open before recover was refused"), "\(r.stdout)")
    }

    /// A recount with a wider window adds new entries and leaves the run's own untouched;
    /// its counts grow with the window, and the accidental estimate scales with it exactly.
    @Test func analyzeRecountsFromRawTagsAndAppends() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let file = try await run("bell-tomography-16.yaml", in: dir)
        let before = try RunFile.summary(path: file)
        let same = try await Herald.recount(path: file)
        let wide = try await Herald.recount(path: file, .init(windowPs: 5000))
        let after = try RunFile.summary(path: file)
        #expect(after.analyses.map(\.entry) == ["000_tomography", "001_tomography", "002_tomography"])
        #expect(after.analyses[0].values == before.analyses[0].values)
        let sameCounts = same.flatMap(\.counts).flatMap(\.pairs), wideCounts = wide.flatMap(\.counts).flatMap(\.pairs)
        #expect(sameCounts.count == before.counts.count && wideCounts.count == before.counts.count)
        #expect(sameCounts.map(\.coincidences) == before.counts.map(\.coincidences))
        #expect(zip(wideCounts, sameCounts).allSatisfy { $0.coincidences >= $1.coincidences })
        #expect(wide.first?.record.parameters["window_s"] == "5e-09")
        // Accidentals are S_a·S_b·window/T: the singles and T do not change, so 5 ns gives 5×.
        let ratio = wideCounts.map(\.accidentals).reduce(0, +) / sameCounts.map(\.accidentals).reduce(0, +)
        #expect(abs(ratio - 5) < 1e-9)

        let bad = try await runProcess(Paths.herald.path, ["analyze", dir.appendingPathComponent("missing.h5").path])
        #expect(bad.status == 1 && bad.stderr.contains("no such file"))
    }

    /// `herald analyze --window` recounts g2 and rates runs too, and what it finds equals a
    /// numpy recount of the same raw tags (read with h5py): every count, singles and pair rate.
    @Test func g2AndRatesRecountsMatchNumpyFromTheRawTags() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let g2 = try await run("g2-hbt.yaml", in: dir)
        let rates = try await run("pump-power-scan.yaml", in: dir, ["--set", "integration=100ms"])
        for (file, options) in [(g2, ["--window", "2ns"]), (rates, ["--window", "2ns", "--delay", "3=0.6ns"])] {
            let recount = try await runProcess(Paths.herald.path, ["analyze", file] + options)
            #expect(recount.status == 0, "\(recount.stderr)")
            #expect(recount.stdout.contains("new analysis entry /user/herald/analysis/001_"), "\(recount.stdout)")
            let oracle = try await python(["recount-oracle", file])
            #expect(oracle.status == 0, "\(oracle.stdout)\(oracle.stderr)")
        }
        let units = try await python(["units", g2, rates])
        #expect(units.status == 0, "\(units.stdout)\(units.stderr)")
    }
}
