import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCatalogue
import HeraldCore
import HeraldLive
import HeraldRunner
import HeraldScript
import HeraldUSB
import Logging
import Synchronization

@main
struct HeraldCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "herald",
        abstract: "Run quantum-photonics experiments: scripts drive lasers, waveplates and time taggers; results go to HDF5.",
        version: Herald.version,
        subcommands: [
            Run.self, Validate.self, Analyze.self, Recover.self, Tomography.self, Inspect.self, Import.self, Drivers.self,
            Devices.self, CheckDriver.self, NodeCommand.self, CalibrateClocks.self, Report.self, Correlate.self, CalibrateDelays.self, Runs.self,
            CatalogueCommand.self,
        ])
}

/// Logs go to stderr so `--json` output on stdout stays machine-readable, through the
/// terminal display so they never cut through a progress line.
func bootstrapLogging(verbose: Bool) {
    LoggingSystem.bootstrap { label in
        DisplayLogHandler(label: label, display: .shared, logLevel: verbose ? .debug : .notice)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Validate and run an experiment script.",
        discussion: """
            The whole script is validated before any device is touched. On SIGINT, SIGTERM, SIGHUP or \
            SIGQUIT the current device call is cut, every device goes to its safe state, and the file is closed \
            with exit status "aborted" (exit code 130). Exit code 65 means the script was rejected, 1 that the \
            run failed. SIGPIPE is ignored (a closed output pipe does not stop the run). See docs/guarantees.md.
            """)

    @OptionGroup var script: ScriptOptions
    @OptionGroup var plugins: PluginOptions
    @OptionGroup var nodeClient: NodeClientOptions
    @Option(help: "Output HDF5 file (default: out/<name>-<time>.h5).") var out: String?
    @Option(help: "Random seed of the simulated lab (recorded in the file).") var seed: UInt64?
    @Flag(help: "Pace simulated devices in real time instead of a virtual clock.") var realtime = false
    @Option(
        name: .customLong("fault"),
        help: "Inject a fault into a simulated device: 'DEVICE KIND [at TIME]', KIND one of disconnect, timeout, garbage, stall, overflow (repeatable).")
    var faults: [String] = []
    @Option(help: "Store tags with shuffle + deflate at this zlib level (1-9; stock h5py reads them).") var compress: Int32?
    @Flag(
        name: .customLong("no-raw-tags"),
        help: "Count and analyse tags live but store none (monitoring runs too long to keep every tag; the file says so).")
    var noRawTags = false
    @Flag(help: "Replace the output file if it exists.") var overwrite = false
    @Flag(help: "Print the run report as JSON on stdout.") var json = false
    @Flag(name: .shortAndLong, help: "Log every step.") var verbose = false
    @Option(
        help: ArgumentHelp(
            "With --mock: write every command the drivers sent to their simulated instruments, and each answer, to this file (JSON lines).",
            valueName: "file"))
    var transcript: String?
    @Option(
        name: .customLong("meta"),
        help: ArgumentHelp("Record KEY=VALUE with the run: operator, affiliation, sample, tags (comma-separated), excitation_wavelength, detection_wavelength, or any other key (repeatable).", valueName: "key=value"))
    var meta: [String] = []
    @OptionGroup var monitor: MonitorOptions
    @OptionGroup var catalogue: CatalogueOptions

    func validate() throws {
        _ = try monitor.configuration
        if transcript != nil && !script.mock { throw ValidationError("--transcript records the simulated instruments: it needs --mock") }
        var check = RunMetadata()
        for item in meta {
            guard let eq = item.firstIndex(of: "=") else { throw ValidationError("--meta expects KEY=VALUE, e.g. operator=Ada, got '\(item)'") }
            if let problem = check.apply(String(item[..<eq]), String(item[item.index(after: eq)...])) { throw ValidationError("--meta: \(problem)") }
        }
        for fault in faults {
            do { try Herald.checkFault(fault) } catch { throw ValidationError("--fault '\(fault)': \(error)") }
        }
        if let compress, !(1...9).contains(compress) { throw ValidationError("--compress takes a zlib level from 1 to 9") }
    }

    func run() async throws {
        bootstrapLogging(verbose: verbose)
        let logger = Logger(label: "herald")
        var request = Herald.RunRequest(
            scriptPath: script.script, mock: script.mock, outPath: out, seed: seed, overwrite: overwrite,
            overrides: try script.parameters(), realtime: realtime, compressionLevel: compress)
        request.faults = faults
        request.nodeSecurity = try nodeClient.security
        request.pluginDirectories = plugins.pluginDirectories
        request.includeDirectories = script.includeDirectories
        request.rawTags = !noRawTags
        request.transcriptPath = transcript
        request.catalogue = try catalogue.location
        request.meta = meta.compactMap { item in
            item.firstIndex(of: "=").map { (String(item[..<$0]), String(item[item.index(after: $0)...])) }
        }
        let live = LiveRun()
        var sinks: [any RunEventSink] = [live]
        if !json { sinks.append(ProgressLine(live: live, display: .shared)) }
        let server = try await monitor.start(live: live, logger: logger)
        let stopRequest = StopRequest()
        request.stopRequest = stopRequest
        let task = Task { [request, sinks] in try await Herald.run(request, extraSinks: sinks, logger: logger) }
        let signals = SignalHandler { signal, count in
            if count == 1 {
                stopRequest.request("stopped by \(signal.name) (\(signal.meaning))")
                logger.warning("\(signal.name): stopping the run; devices go to their safe state (interrupt again to stop waiting)")
            } else {
                logger.warning("\(signal.name) again: not waiting; the safe state still runs")
            }
            task.cancel()
        }
        defer { signals.cancel() }
        let report: Herald.RunReport
        do {
            report = try await mappingErrors { try await task.value }
            await monitor.stop(server, stopRequest: stopRequest)
        } catch {
            await monitor.stop(server, stopRequest: stopRequest)
            throw error
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            FileHandle.standardOutput.write(try encoder.encode(report))
            print()
        } else {
            printSummary(report)
        }
        if report.status != .success { throw ExitCode(ExitStatusCode.code(for: report.status)) }
    }

    func printSummary(_ report: Herald.RunReport) {
        print("data:   \(report.output)")
        print("status: \(report.status.rawValue)\(report.reason.map { " (\($0))" } ?? "")  tags: \(report.tags)  seed: \(report.seed)")
        for a in report.analyses {
            let view = AnalysisView(
                name: a.name, estimator: a.estimator, parameters: a.parameters, values: a.values,
                uncertainties: a.uncertainties, series: a.series, labels: a.labels, outer: a.outer, notes: a.notes,
                rhoReal: a.rhoReal, rhoImag: a.rhoImag)
            for line in view.lines(all: false) { print(line) }
        }
    }
}

/// Turns every signal that would end the process into a safe stop: a callback with the
/// signal and the number of stop signals so far.
///
/// SIGHUP comes when the SSH session or terminal goes away, SIGQUIT from Ctrl-\\; by default
/// each kills the process on the spot (SIGQUIT through the Swift runtime's crash handler),
/// leaving the laser on and the file open. Ignoring the signal first and watching it with a
/// dispatch source replaces those defaults. SIGPIPE (the reader of our output went away) is
/// ignored: the run carries on to its normal end.
final class SignalHandler {
    struct Caught: Sendable {
        var number: Int32
        var name: String
        var meaning: String
    }

    static let stopSignals: [Caught] = [
        Caught(number: SIGINT, name: "SIGINT", meaning: "interrupt, Ctrl-C"),
        Caught(number: SIGTERM, name: "SIGTERM", meaning: "termination request"),
        Caught(number: SIGHUP, name: "SIGHUP", meaning: "the terminal or SSH session hung up"),
        Caught(number: SIGQUIT, name: "SIGQUIT", meaning: "quit, Ctrl-\\"),
    ]

    private let sources: [any DispatchSourceSignal]

    init(_ handler: @escaping @Sendable (Caught, Int) -> Void) {
        // SIGPIPE is ignored outright, not watched: a closed output pipe then fails the write
        // (EPIPE) and the run goes on to its normal end, safe state and closed file. Watched
        // through a dispatch source it could send libdispatch's forwarding handler into an
        // endless re-raise on a loaded machine (seen once in the stop-signal tests).
        signal(SIGPIPE, SIG_IGN)
        let queue = DispatchQueue(label: "herald.signals")
        let count = Mutex(0)
        sources = Self.stopSignals.map { caught in
            signal(caught.number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: caught.number, queue: queue)
            source.setEventHandler {
                let n = count.withLock { c -> Int in
                    c += 1
                    return c
                }
                handler(caught, n)
            }
            source.resume()
            return source
        }
    }

    func cancel() { sources.forEach { $0.cancel() } }
}

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check a script against the drivers' declared properties, units and limits, with no device I/O.",
        discussion: "A script with nodes: is checked against what each node serves (they are only described).")

    @OptionGroup var script: ScriptOptions
    @OptionGroup var plugins: PluginOptions
    @OptionGroup var nodeClient: NodeClientOptions

    func run() async throws {
        let security = try nodeClient.security
        let compiled = try await mappingErrors {
            try await Herald.validate(
                path: script.script, mock: script.mock, overrides: try script.parameters(),
                pluginDirectories: plugins.pluginDirectories, includeDirectories: script.includeDirectories, nodeSecurity: security)
        }
        print("\(script.script): OK — \(compiled.plan.devices.count) devices, \(compiled.plan.steps.count) steps, \(compiled.plan.acquisitionCount) acquisitions")
        let estimate = compiled.plan.estimatedDuration
        var line = "estimated duration: \(Display.duration(estimate.seconds)) of acquisitions and waits, plus the devices' own time (moves, settling)"
        if estimate.conditionalUpTo > 0 { line += "; conditional waits may add up to \(Display.duration(estimate.conditionalUpTo))" }
        if estimate.open { line += "; entangle steps run until their heralds and are not estimated" }
        print(line)
    }
}

struct Drivers: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List every driver with its kind, properties and where it came from (built-in or a plugin).")

    @OptionGroup var pluginOptions: PluginOptions

    func run() throws {
        let plugins = Herald.loadPlugins(pluginOptions.pluginDirectories)
        for d in Herald.descriptorRegistry(plugins: plugins.entries).descriptors {
            print("\(d.id)  v\(d.version)  [\(d.kind.rawValue)]  \(d.origin)\(d.isMock ? ", simulated" : "")")
            print("    \(d.summary)")
            print("    matched by \(d.matchedBy.sorted().map(\.rawValue).joined(separator: ", "))")
            for p in d.properties {
                var range = p.range.map { " range \($0.lowerBound)...\($0.upperBound)" } ?? ""
                if let r = p.range, case .quantity(let d) = p.type {
                    // Both ends with one prefix, from the larger: "range 0...20 mW".
                    let scale = max(abs(r.lowerBound), abs(r.upperBound))
                    let lo = Display.quantity(r.lowerBound, unit: d.siUnit, scale: scale)
                    let hi = Display.quantity(r.upperBound, unit: d.siUnit, scale: scale)
                    range = " range " + (lo.split(separator: " ").first.map(String.init) ?? lo) + "..." + hi
                }
                print("    property \(p.name): \(p.type)\(range)\(p.settable ? "" : " (read-only)")")
            }
            for s in d.settings { print("    setting  \(s.name): \(s.type)") }
        }
        print(
            plugins.directories.isEmpty
                ? "plugin directories: none (set HERALD_PLUGIN_PATH or pass --plugin-dir)"
                : "plugin directories: " + plugins.directories.joined(separator: ", "))
        for problem in plugins.problems { print("plugin not loaded: \(problem)") }
    }
}

struct Devices: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List attached USB devices: libusb enumerates them, udev adds serial and names.")

    func run() throws {
        let devices = try USBContext().devices()
        // udev reads the strings from sysfs, so listing needs no permission to open the device.
        let described = (try? UDev().usbDevices()) ?? []
        if devices.isEmpty { print("no USB devices visible (check permissions and udev rules)") }
        for d in devices {
            let u = described.first { $0.bus == Int(d.bus) && $0.address == Int(d.address) }
            var line = d.description
            if let u {
                line += "  serial \(u.serial ?? "-")  \(u.manufacturer ?? "") \(u.product ?? "")"
                line += "  \(u.sysPath)"
            }
            let claim = Herald.usbIdentities.first { $0.vendorID == d.vendorID && $0.productID == d.productID }
            line += "  driver \(claim?.driver ?? "-")"
            print(line)
        }
    }
}

struct Tomography: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reconstruct a two-qubit state from a CSV of projective counts.",
        discussion: """
            The CSV has a header row with at least setting,counts and optionally \
            duration_s,singles_a,singles_b,window_ns (accidentals = singles_a·singles_b·window/duration) and \
            scale (relative intensity × efficiency). A setting is two letters from H V D A R L, photon A first, \
            with R = (H − iV)/√2 (use --swap-circular for the opposite sign). Conventions: docs/tomography.md.
            """)

    @Argument(help: "CSV file of counts.") var counts: String
    @Option(help: "Estimator: mle, linear or hedged.") var estimator: HeraldCore.Estimator = .mle
    @Option(help: "Monte-Carlo resamples for error bars (0: none).") var errors: Int = 0
    @Option(help: "Seed of the Monte-Carlo resampling.") var seed: UInt64 = 1
    @Flag(help: "Read R as (H+iV)/√2 and L as (H−iV)/√2.") var swapCircular = false
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws {
        guard errors >= 0 && errors <= 1_000_000 else { throw ValidationError("--errors must be between 0 and 10⁶") }
    }

    func run() throws {
        let text: String
        do { text = try String(contentsOfFile: counts, encoding: .utf8) } catch {
            throw ValidationError("cannot read \(counts): \(error.localizedDescription)")
        }
        let table = try mappingErrors { try CountsTable.parse(text, file: counts, swapCircular: swapCircular) }
        let options = TomographyOptions(
            estimator: estimator, scales: table.scales,
            monteCarlo: errors, seed: seed)
        let result: TomographyResult
        do { result = try HeraldAnalysis.Tomography.reconstruct(table.projections, options: options) } catch {
            FileHandle.standardError.write(Data("\(counts): error: \(error)\n".utf8))
            throw ExitCode(ExitStatusCode.rejected)
        }
        if json {
            FileHandle.standardOutput.write(try TomographyReport.json(result, errors: errors > 0))
            print()
        } else {
            print("estimator: \(result.estimator.rawValue)  projections: \(table.projections.count)  intensity: \(String(format: "%.1f", result.intensity))")
            for figure in TomographyReport.printed {
                let key = figure.key
                guard let v = result.figures[key] else { continue }
                let e = errors > 0 ? result.uncertainties[key].map { String(format: " ± %.5f", $0) } ?? "" : ""
                print("  \(key): " + String(format: "%.5f", v) + e)
            }
            if result.linearMinEigenvalue < 0 {
                print("  note: linear inversion was unphysical (smallest eigenvalue \(String(format: "%.4f", result.linearMinEigenvalue)))")
            }
        }
    }
}

/// The JSON shape of `herald tomography --json` (documented in docs/tomography.md).
enum TomographyReport {
    static let scalars: [Figure] = [.concurrence, .tangle, .purity, .entropy, .linearEntropy, .negativity, .logNegativity, .maxCHSH]
    /// What `herald tomography` prints, in order.
    static let printed: [Figure] = BellState.allCases.map(Figure.fidelity) + [.maxFidelity] + scalars

    static func object(_ values: [String: Double]) -> [String: Any] {
        var out: [String: Any] = [:]
        var fidelity: [String: Double] = ["max": values[figure: .maxFidelity] ?? .nan]
        for b in BellState.allCases { fidelity[b.rawValue] = values[figure: .fidelity(b)] ?? .nan }
        out["fidelity"] = fidelity
        for f in scalars { out[f.key] = values[figure: f] ?? .nan }
        return out
    }

    static func json(_ r: TomographyResult, errors: Bool) throws -> Data {
        var out = object(r.figures)
        out["estimator"] = r.estimator.rawValue
        out[Figure.intensity.key] = r.intensity
        out[Figure.linearMinEigenvalue.key] = r.linearMinEigenvalue
        out["rho"] = [
            "real": (0..<4).map { i in (0..<4).map { r.state[i, $0].real } },
            "imag": (0..<4).map { i in (0..<4).map { r.state[i, $0].imaginary } },
        ]
        if errors {
            out["errors"] = object(r.uncertainties)
            out["error_method"] = r.uncertaintyMethod
        }
        return try JSONSerialization.data(withJSONObject: out, options: [.prettyPrinted, .sortedKeys])
    }
}

extension HeraldCore.Estimator: ExpressibleByArgument {}
