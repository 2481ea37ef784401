import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCore
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

func fail(_ error: Error, code: Int32 = 1) -> ExitCode {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    return ExitCode(code)
}

struct Recover: ParsableCommand {
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

    func run() throws {
        let report: RecoveryReport
        do { report = try RunRecovery.recover(path: file) } catch { throw fail(error) }
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
}

struct Analyze: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a run file's summary, or recompute its tomography from the raw tags.",
        discussion: """
            With --window or --delay, the coincidences of the tomography sweep are recounted from \
            /photon_data with the new parameters (paused intervals excluded, as in the run), the state is \
            reconstructed again, and the result is appended as a new entry under /user/herald/analysis; \
            existing entries are never changed.
            """)

    @Argument(help: "A Herald HDF5 run file.") var file: String
    @Option(help: "Full coincidence window for the recount, e.g. 2ns.") var window: String?
    @Option(help: "Channel delay for the recount, CHANNEL=TIME, e.g. 3=1.2ns (repeatable).") var delay: [String] = []
    @Option(help: "Estimator for the recount: mle, linear or hedged (default: the run's).") var estimator: Tomography.EstimatorOption?
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        if window != nil || !delay.isEmpty || estimator != nil {
            var recount = RunFile.Recount()
            if let window { recount.window = try parseTime(window, option: "--window") }
            for item in delay {
                let parts = item.split(separator: "=", maxSplits: 1)
                guard parts.count == 2, let channel = Int(parts[0]) else {
                    throw ValidationError("--delay expects CHANNEL=TIME, e.g. 3=1.2ns, got '\(item)'")
                }
                recount.delays[channel] = try parseTime(String(parts[1]), option: "--delay")
            }
            recount.estimator = estimator.flatMap { HeraldAnalysis.Estimator(rawValue: $0.rawValue) }
            let result: (entry: String, record: AnalysisRecord, counts: [RunSummary.CountRow])
            do { result = try RunFile.retomograph(path: file, recount) } catch { throw fail(error) }
            if json {
                struct Out: Encodable {
                    var entry: String, estimator: String, parameters: [String: String]
                    var values: [String: Double], uncertainties: [String: Double]
                }
                return try printJSON(Out(
                    entry: result.entry, estimator: result.record.estimator, parameters: result.record.parameters,
                    values: result.record.values, uncertainties: result.record.uncertainties))
            }
            let r = result.record
            print("new analysis entry /user/herald/analysis/\(result.entry) (\(r.estimator), window \(r.parameters["window_s"] ?? "?") s)")
            printFigures(r.values, r.uncertainties)
            return
        }
        let s: RunSummary
        do { s = try RunFile.summary(path: file) } catch { throw fail(error) }
        if json { return try printJSON(s) }
        print("\(s.run["name"] ?? "?")  run \(s.run["run_id"] ?? "?")  schema \(s.schemaVersion)")
        print("  status: \(s.run["exit_status"] ?? "?")" + (s.run["reason"].map { $0.isEmpty ? "" : " (\($0))" } ?? ""))
        print("  started \(s.run["started_at"] ?? "?"), stopped \(s.run["stopped_at"] ?? "?")")
        print("  \(s.tags) tags over \(String(format: "%.3f", s.acquisitionDurationS)) s of acquisition")
        if !s.counts.isEmpty {
            print("  counts (point label projection: coincidences, accidentals):")
            for r in s.counts {
                print("    \(r.sweep)[\(r.point)] \(r.label) \(r.projection) ch\(r.channelA)-\(r.channelB): \(r.coincidences), \(String(format: "%.1f", r.accidentals))")
            }
        }
        for a in s.analyses {
            print("  analysis \(a.entry) (\(a.estimator))")
            printFigures(a.values, a.uncertainties)
        }
    }

    func printFigures(_ values: [String: Double], _ errors: [String: Double]) {
        for (k, v) in values.sorted(by: { $0.key < $1.key }) {
            print("    \(k): \(String(format: "%.5g", v))" + (errors[k].map { " ± " + String(format: "%.2g", $0) } ?? ""))
        }
    }
}
