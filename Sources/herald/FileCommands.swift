import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCatalogue
import HeraldCore
import HeraldReport
import HeraldRunReader
import HeraldRunner
import HeraldStore

/// Parses a time like "2ns", "1.5 ns" or "3e-9" (seconds).
func parseTime(_ text: String, option: String) throws -> Double {
    guard let q = Quantity.parse(text), q.dimension == .time || q.dimension == .dimensionless else {
        throw ValidationError("\(option) expects a time such as 2ns or 1.5e-9, got '\(text)'")
    }
    return q.value
}

func printJSON<T: Encodable>(_ value: T) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    FileHandle.standardOutput.write(try encoder.encode(value))
    print()
}

struct Recover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Make the file of a killed run readable again, keeping every flushed tag.",
        discussion: """
            After the runner is killed (kill -9, power loss), the HDF5 file is still marked open for writing and \
            stock tools refuse it. This clears the mark without truncating anything, rebuilds the sweep table from \
            the live progress records, and sets the run's exit_status to "incomplete". Tags flushed before the \
            crash (at most one second old) are all kept. Safe to run twice. See docs/hdf5-layout.md.
            """)

    @Argument(help: "The HDF5 file of the interrupted run.") var file: String
    @Flag(help: "Print the report as JSON.") var json = false
    @OptionGroup var catalogue: CatalogueOptions

    func run() async throws {
        ExitStatusCode.watchReads(of: file)
        let report: RecoveryReport
        do { report = try RunRecovery.recover(path: file) } catch { throw ExitStatusCode.exit(for: error) }
        await updateCatalogue()
        if json { return try printJSON(report) }
        if let when = report.recoveredBefore {
            print("\(file): already recovered at \(when); nothing more to do (\(report.tags) tags)")
        } else if report.alreadyComplete {
            print("\(file): the run closed its file cleanly; nothing to recover (\(report.tags) tags)")
        } else {
            print(
                "\(file): recovered \(report.tags) tags, \(report.sweepPoints) finished sweep points and the counts of "
                    + "\(report.countedPoints) points; run marked incomplete")
            if report.unpairedTagsDropped > 0 {
                print("  dropped \(report.unpairedTagsDropped) timestamps whose detector channel was never flushed")
            }
        }
    }

    /// The catalogue's record of the run, from the recovered file: it showed the run as
    /// running (killed), and now shows it incomplete with what the file kept. A catalogue that
    /// cannot be reached is only a warning: the file is recovered either way.
    func updateCatalogue() async {
        guard let location = try? catalogue.location, location != .off else { return }
        do {
            let record = try CatalogueRecord(file: file)
            let c = try await catalogue.open()
            defer { Task { await c.close() } }
            try await c.save(record)
        } catch {
            FileHandle.standardError.write(Data("warning: the run catalogue was not updated (\(error)); `herald catalogue rebuild` re-reads the file\n".utf8))
        }
    }
}

struct Analyze: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a run file's summary, or recompute its analyses from the raw tags.",
        discussion: """
            With --window, --delay or --estimator, the run's stored events (points, acquisitions and their tags \
            from /photon_data, paused and lost intervals) are replayed through the same reducer that counted and \
            analysed the run live, with the new parameters. Every analysis of the run (tomography, chsh, g2, \
            rates) is recomputed and appended as a new entry under /user/herald/analysis; existing entries are \
            never changed. With the run's own window and delays, the recount equals the run's counts exactly.
            """)

    @Argument(help: "Herald run files, or run uids from the catalogue (`herald runs`), one or several.") var files: [String]
    @OptionGroup var catalogue: CatalogueOptions
    @Option(help: "Full coincidence window for the recount, e.g. 2ns.") var window: String?
    @Option(help: "Channel delay for the recount, CHANNEL=TIME, e.g. 3=1.2ns (repeatable).") var delay: [String] = []
    @Option(help: "Estimator for the recount: mle, linear or hedged (default: the run's).") var estimator: HeraldCore.Estimator?
    @Flag(help: "Print JSON.") var json = false

    /// The recount's options, checked before any file is opened.
    func recountOptions() throws -> Herald.RecountOptions? {
        guard window != nil || !delay.isEmpty || estimator != nil else { return nil }
        var options = Herald.RecountOptions()
        if let window {
            let seconds = try parseTime(window, option: "--window")
            guard seconds > 0, seconds < 1 else { throw ValidationError("--window must be above 0 and below 1 s, got '\(window)'") }
            options.windowPs = Int64(clampingRounded: seconds * 1e12)
        }
        for item in delay {
            let parts = item.split(separator: "=", maxSplits: 1)
            guard parts.count == 2, let channel = Int(parts[0]), (0...255).contains(channel) else {
                throw ValidationError("--delay expects CHANNEL=TIME with a channel 0–255, e.g. 3=1.2ns, got '\(item)'")
            }
            let seconds = try parseTime(String(parts[1]), option: "--delay")
            guard abs(seconds) < 1 else { throw ValidationError("--delay must be shorter than 1 s, got '\(item)'") }
            options.delaysPs[channel] = Int64(clampingRounded: seconds * 1e12)
        }
        options.estimator = estimator
        return options
    }

    func validate() throws {
        _ = try recountOptions()
        guard !files.isEmpty else { throw ValidationError("give a run file or a run uid (`herald runs` lists them)") }
    }

    func run() async throws {
        let paths = try await catalogue.resolve(files)
        // One file prints as before; several print one after another (with --json, one array).
        if paths.count == 1 { return try await analyze(paths[0]) }
        let recounting = try recountOptions() != nil
        if json && !recounting {
            var summaries: [RunSummary] = []
            for p in paths {
                ExitStatusCode.watchReads(of: p)
                do { summaries.append(try RunFile.summary(path: p)) } catch { throw ExitStatusCode.exit(for: error) }
            }
            return try printJSON(summaries)
        }
        for (i, p) in paths.enumerated() {
            if i > 0 { print() }
            if !json { print("== \(p)") }
            try await analyze(p)
        }
    }

    func analyze(_ file: String) async throws {
        ExitStatusCode.watchReads(of: file)
        if let options = try recountOptions() {
            let entries: [Herald.RecountEntry]
            do { entries = try await Herald.recount(path: file, options) } catch { throw ExitStatusCode.exit(for: error) }
            if json {
                struct Out: Encodable {
                    var entry: String, name: String, estimator: String, parameters: [String: String]
                    var outer: PointRef?
                    var values: [String: Double], uncertainties: [String: Double], series: [String: [Double]]
                }
                return try printJSON(entries.map {
                    Out(
                        entry: $0.entry, name: $0.record.name, estimator: $0.record.estimator, parameters: $0.record.parameters,
                        outer: $0.record.outer, values: $0.record.values, uncertainties: $0.record.uncertainties,
                        series: $0.record.series)
                })
            }
            for e in entries {
                let r = e.record
                let window = Double(r.parameters["window_s"] ?? "").map { Display.quantity($0, unit: "s") } ?? "?"
                print("new analysis entry /user/herald/analysis/\(e.entry), window \(window):")
                let view = AnalysisView(
                    name: r.name, estimator: r.estimator, parameters: r.parameters, values: r.values,
                    uncertainties: r.uncertainties, series: r.series, labels: r.labels, outer: r.outer, notes: r.notes,
                    rhoReal: r.rhoReal, rhoImag: r.rhoImag)
                for line in view.lines(all: true) { print("  " + line) }
            }
            return
        }
        let s: RunSummary
        do { s = try RunFile.summary(path: file) } catch { throw ExitStatusCode.exit(for: error) }
        if json { return try printJSON(s) }
        print("\(s.run["name"] ?? "?")  run \(s.run["run_id"] ?? "?")  schema \(s.schemaVersion)")
        print("  status: \(s.run["exit_status"] ?? "?")" + (s.run["reason"].map { $0.isEmpty ? "" : " (\($0))" } ?? ""))
        print("  started \(s.run["started_at"] ?? "?"), stopped \(s.run["stopped_at"] ?? "?")")
        print("  \(s.tags) tags over \(String(format: "%.3f", s.acquisitionDurationS)) s of acquisition")
        if !s.counts.isEmpty {
            print("  counts (point label projection: coincidences, accidentals):")
            for r in s.counts {
                let outer = r.outer.map { "\($0.sweep)[\($0.index)] " } ?? ""
                print("    \(outer)\(r.sweep)[\(r.point)] \(r.label) \(r.projection) ch\(r.channelA)-\(r.channelB): \(r.coincidences), \(String(format: "%.1f", r.accidentals))")
            }
        }
        for a in s.analyses {
            print("  analysis \(a.entry):")
            let view = AnalysisView(
                name: a.name, estimator: a.estimator, parameters: a.parameters, values: a.values,
                uncertainties: a.uncertainties, series: a.series, labels: a.labels, outer: a.outer, rhoReal: a.rhoReal,
                rhoImag: a.rhoImag)
            for line in view.lines(all: true) { print("    " + line) }
        }
    }
}

struct Report: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Write one self-contained HTML report of a run file: metadata, every analysis, ρ, counts, fits, histograms, pauses.",
        discussion: """
            The report is a single file with inline SVG and no script or outside resource, so it opens offline \
            and can be attached to a logbook. Every plotted number is also in its mark's data-value attribute.
            """)

    @Argument(help: "Herald run files, or run uids from the catalogue (`herald runs`), one or several.") var files: [String]
    @OptionGroup var catalogue: CatalogueOptions
    @Option(help: "Where to write the report (default: the run file with .html; one run only).") var out: String?

    func validate() throws {
        guard !files.isEmpty else { throw ValidationError("give a run file or a run uid (`herald runs` lists them)") }
        if out != nil && files.count > 1 { throw ValidationError("--out names one report: with several runs each report goes beside its file") }
    }

    func run() async throws {
        for file in try await catalogue.resolve(files) { try write(file) }
    }

    func write(_ file: String) throws {
        ExitStatusCode.watchReads(of: file)
        let target = out ?? (file.hasSuffix(".h5") ? String(file.dropLast(3)) : file) + ".html"
        let html: String
        do { html = try RunReportPage.html(path: file) } catch { throw ExitStatusCode.exit(for: error) }
        do { try Data(html.utf8).write(to: URL(fileURLWithPath: target), options: .atomic) } catch {
            throw ExitStatusCode.exit(for: StoreError(path: target, "cannot write the report: \(error.localizedDescription)"))
        }
        print(target)
    }
}
