import Clocks
import Foundation
import HeraldAnalysis
import HeraldCatalogue
import HeraldCore
import HeraldScript
import HeraldSequencer
import HeraldHDF5
import HeraldPlugins
import HeraldStore
import Logging
import MockLaser
import MockCounter
import MockStage
import MockPowerMeter
import MockTemperatureController
import MockRotator
import MockShutter
import MockTimeTagger
import ReplayTimeTagger
import S15TDC1
import ThorlabsElliptec
import ThorlabsITC4001
import ThorlabsPM100
import ThorlabsTED4015
import NewportSMC100
import USBInstrument
import SimulatedLab
import SimulatedInstruments
import MockNetwork
import HeraldNode

/// Wires the modules together for one run: script → plan → engine → devices → events → store.
public enum Herald {
    public static let version = "0.1.0"

    /// Every built-in driver, then the plugins' drivers. Mock drivers are bound to `lab`.
    public static func registry(lab: SimulatedLab, plugins: [DriverEntry] = [], transcript: InstrumentTranscript = InstrumentTranscript()) -> DriverRegistry {
        var r = DriverRegistry()
        r.register(DriverEntry(descriptor: MockLaser.descriptor) { MockLaser(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockRotator.descriptor) { try MockRotator(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockTimeTagger.descriptor) { try MockTimeTagger(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockShutter.descriptor) { MockShutter(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockCounter.descriptor) { MockCounter(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockStage.descriptor) { MockStage(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockPowerMeter.descriptor) { MockPowerMeter(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockTemperatureController.descriptor) { MockTemperatureController(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockEntangler.descriptor) { try MockEntangler(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockQubitReadout.descriptor) { try MockQubitReadout(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockAnalyserTagger.descriptor) { try MockAnalyserTagger(config: $0, lab: lab) })
        r.register(DriverEntry(descriptor: MockFibreElement.polarisationController) {
            try MockFibreElement(config: $0, lab: lab, element: .polarisationController)
        })
        r.register(DriverEntry(descriptor: MockFibreElement.spoolSwitch) { try MockFibreElement(config: $0, lab: lab, element: .spoolSwitch) })
        r.register(DriverEntry(descriptor: ReplayTimeTagger.descriptor) { try ReplayTimeTagger(config: $0) })
        // Under --mock the instrument drivers run unchanged on simulated instruments of the same lab.
        let sim: @Sendable (String) -> InstrumentSimulator? = { id in SimulatedInstruments.simulator(for: id, lab: lab, transcript: transcript) }
        r.register(DriverEntry(descriptor: ThorlabsITC4001.descriptor, simulatesInstrument: true) {
            ThorlabsITC4001(config: $0, simulator: sim(ThorlabsITC4001.descriptor.id))
        })
        r.register(DriverEntry(descriptor: ElliptecRotator.descriptor, simulatesInstrument: true) {
            ElliptecRotator(config: $0, simulator: sim(ElliptecRotator.descriptor.id))
        })
        r.register(DriverEntry(descriptor: S15TDC1.descriptor, simulatesInstrument: true) {
            S15TDC1(config: $0, simulator: sim(S15TDC1.descriptor.id))
        })
        r.register(DriverEntry(descriptor: ThorlabsPM100.descriptor, simulatesInstrument: true) {
            ThorlabsPM100(config: $0, simulator: sim(ThorlabsPM100.descriptor.id))
        })
        r.register(DriverEntry(descriptor: ThorlabsTED4015.descriptor, simulatesInstrument: true) {
            ThorlabsTED4015(config: $0, simulator: sim(ThorlabsTED4015.descriptor.id))
        })
        r.register(DriverEntry(descriptor: NewportSMC100.descriptor, simulatesInstrument: true) {
            NewportSMC100(config: $0, simulator: sim(NewportSMC100.descriptor.id))
        })
        for entry in plugins where r.entry(entry.descriptor.id) == nil { r.register(entry) }
        return r
    }

    /// The USB identities the built-in instrument drivers claim (for `herald devices`).
    public static let usbIdentities: [USBIdentity] = [ThorlabsITC4001.usb, ElliptecRotator.usb, S15TDC1.usb, ThorlabsPM100.usb, ThorlabsTED4015.usb]

    /// The registry used when only descriptors are needed (validation, listing): built-ins
    /// and the plugins of `HERALD_PLUGIN_PATH`.
    public static var descriptorRegistry: DriverRegistry { descriptorRegistry(pluginDirectories: []) }

    public static func descriptorRegistry(pluginDirectories: [String]) -> DriverRegistry {
        descriptorRegistry(plugins: loadPlugins(pluginDirectories).entries)
    }

    /// Built-ins and the given plugin drivers, for validation and listing (the lab is a stand-in).
    public static func descriptorRegistry(plugins: [DriverEntry]) -> DriverRegistry {
        registry(lab: SimulatedLab(seed: 0), plugins: plugins)
    }

    /// Loads the plugins of `HERALD_PLUGIN_PATH` and `directories`; built-in ids win.
    public static func loadPlugins(_ directories: [String]) -> PluginLoad {
        let builtIn = Set(registry(lab: SimulatedLab(seed: 0)).descriptors.map(\.id))
        return PluginLoader.load(directories: PluginLoader.directories(explicit: directories), reserved: builtIn)
    }

    public static func compiler(registry: DriverRegistry, includeDirectories: [String] = []) -> ScriptCompiler {
        var compiler = ScriptCompiler(registry: registry, simulationSpecs: LabParameters.specs)
        compiler.networkSchema = NetworkParameters.schema
        compiler.includeDirectories = includeDirectories
        compiler.simulationCheck = { key, value in
            guard key == "density_matrix", let text = value.text else { return nil }
            do {
                _ = try LabParameters.densityMatrix(parsing: text)
                return nil
            } catch {
                return String(describing: error)
            }
        }
        compiler.faultParser = { text in
            do {
                let spec = try FaultSpec.parse(text)
                return (spec.device, spec.kind.rawValue, nil)
            } catch {
                return (nil, nil, String(describing: error))
            }
        }
        return compiler
    }

    /// Checks the syntax of a `--fault` argument (`DEVICE KIND [at TIME]`).
    public static func checkFault(_ text: String) throws { _ = try FaultSpec.parse(text) }

    /// Validates a script without touching any device (a script with `nodes:` only with `mock`).
    public static func validate(
        path: String, mock: Bool = false, overrides: [String: String] = [:], pluginDirectories: [String] = [],
        includeDirectories: [String] = []
    ) throws -> CompiledScript {
        let compiled = try compiler(registry: descriptorRegistry(pluginDirectories: pluginDirectories), includeDirectories: includeDirectories)
            .compile(path: path, mock: mock, overrides: overrides)
        if !mock { try DevicePresence.check(compiled.plan) }
        return compiled
    }

    /// Validates a script without touching any device. A script with `nodes:` is checked
    /// against what each node serves (they are described, nothing else), unless `mock`.
    public static func validate(
        path: String, mock: Bool = false, overrides: [String: String] = [:], pluginDirectories: [String] = [],
        includeDirectories: [String] = [], nodeSecurity: NodeSecurity?
    ) async throws -> CompiledScript {
        var c = compiler(registry: descriptorRegistry(pluginDirectories: pluginDirectories), includeDirectories: includeDirectories)
        if !mock {
            let nodes = await NodeConnections.describe(ScriptCompiler.nodeAddresses(path: path), security: nodeSecurity)
            defer { nodes.close() }
            c.nodeCatalogue = nodes.catalogue
            c.nodeProblems = nodes.problems
        }
        let compiled = try c.compile(path: path, mock: mock, overrides: overrides)
        try await checkRecordings(compiled.plan)
        if !mock { try DevicePresence.check(compiled.plan) }
        return compiled
    }

    /// The run's replays open their recordings (`run` would fail at connect): each problem at
    /// its device's line, all at once.
    static func checkRecordings(_ plan: Plan) async throws {
        var problems: [ScriptDiagnostic] = []
        for d in plan.devices where d.driver == ReplayTimeTagger.descriptor.id && d.node == nil {
            do { try await ReplayTimeTagger.preflight(config: d) } catch {
                problems.append(ScriptDiagnostic("\(error)", at: d.location ?? SourceLocation(file: plan.scriptPath, line: 1, column: 1)))
            }
        }
        if !problems.isEmpty { throw ScriptErrors(problems) }
    }

    /// What a user asked `herald run` to do.
    public struct RunRequest: Sendable {
        public var scriptPath: String
        public var mock: Bool
        public var outPath: String?
        public var seed: UInt64?
        public var overwrite: Bool
        /// `--set name=value` parameter overrides.
        public var overrides: [String: String]
        /// Run simulated devices in real time instead of on the virtual clock.
        public var realtime: Bool
        /// Store tags shuffled + deflated at this zlib level (nil: uncompressed).
        public var compressionLevel: Int32?
        /// `--fault DEVICE KIND [at TIME]`: faults to inject into simulated devices, added to
        /// the script's `simulation.faults`.
        public var faults: [String] = []
        /// `--plugin-dir`: directories of driver plugins, after `HERALD_PLUGIN_PATH`.
        public var pluginDirectories: [String] = []
        /// `--include-dir`: folders besides the script's own that `include:` may read.
        public var includeDirectories: [String] = []
        /// `--no-raw-tags`: count and analyse tags live, store none of them.
        public var rawTags = true
        /// Set by whoever cancels the run (the CLI's signal handler) to say why.
        public var stopRequest: StopRequest?
        /// Free space at which recording stops so the file can still be closed.
        public var diskMargin: Int64 = RunRecorder.defaultDiskMargin
        /// How this coordinator proves itself to the script's nodes (`--cert/--key/--ca`, or
        /// `--plaintext-loopback`); nil for a script without nodes.
        public var nodeSecurity: NodeSecurity?
        /// How long a node keeps this run's lease without a beat.
        public var leaseLength: Duration = .seconds(1)
        /// `--transcript FILE`: every exchange with the simulated instruments, as JSON lines.
        public var transcriptPath: String?
        /// `--meta key=value`: the operator, sample, tags and anything else, over the script's `meta:`.
        public var meta: [(key: String, value: String)] = []
        /// The run catalogue the run registers in (`--catalogue`, `HERALD_CATALOGUE`); off for library callers unless set.
        public var catalogue: CatalogueLocation = .off

        public init(
            scriptPath: String, mock: Bool = true, outPath: String? = nil, seed: UInt64? = nil, overwrite: Bool = false,
            overrides: [String: String] = [:], realtime: Bool = false, compressionLevel: Int32? = nil
        ) {
            self.compressionLevel = compressionLevel
            self.scriptPath = scriptPath
            self.mock = mock
            self.outPath = outPath
            self.seed = seed
            self.overwrite = overwrite
            self.overrides = overrides
            self.realtime = realtime
        }
    }

    /// The outcome of a run, as printed by `herald run --json`.
    public struct RunReport: Sendable, Codable {
        public var output: String
        public var status: ExitStatus
        public var reason: String?
        /// What failed, typed: match on this, not on `reason`.
        public var failure: RunFailure?
        public var tags: Int
        public var seed: UInt64
        public var analyses: [Analysis]

        public struct Analysis: Sendable, Codable {
            public var name: String
            public var estimator: String
            public var values: [String: Double]
            public var uncertainties: [String: Double]
            public var rhoReal: [Double]
            public var rhoImag: [Double]
            public var notes: [String]
            public var series: [String: [Double]]
            /// For an analysis of a nested sweep: the outer point it covers.
            public var outer: PointRef?
            public var parameters: [String: String]
            /// The label of each point the series run over.
            public var labels: [String]
        }
    }

    /// Compiles, opens devices, runs and records. Throws only for problems found
    /// before the run starts (script errors, an output file that cannot be created);
    /// how the run itself ended is in the report.
    public static func run(
        _ request: RunRequest, extraSinks: [any RunEventSink] = [], logger: Logger = Logger(label: "herald")
    ) async throws -> RunReport {
        let seed = request.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        // Compile once against descriptors to learn the simulation block, then build the lab.
        let plugins = loadPlugins(request.pluginDirectories)
        for problem in plugins.problems { logger.warning("plugin not loaded: \(problem)") }
        let descriptors = descriptorRegistry(plugins: plugins.entries)
        // Nodes are described first: what they serve decides how the devices on them compile.
        let nodes = request.mock ? NodeConnections() : await NodeConnections.describe(
            ScriptCompiler.nodeAddresses(path: request.scriptPath), security: request.nodeSecurity)
        defer { nodes.close() }
        var scriptCompiler = compiler(registry: descriptors, includeDirectories: request.includeDirectories)
        if !request.mock {
            scriptCompiler.nodeCatalogue = nodes.catalogue
            scriptCompiler.nodeProblems = nodes.problems
        }
        let compiled = try scriptCompiler.compile(path: request.scriptPath, mock: request.mock, overrides: request.overrides)
        // The script's faults were checked by the compiler, at their lines; `--fault` ones are checked here.
        for text in request.faults {
            let spec = try FaultSpec.parse(text)
            if let problem = descriptors.faultTargetProblem(device: spec.device, kind: spec.kind.rawValue, in: compiled.plan.devices) {
                throw LabParameterError("--fault '\(text)': \(problem)")
            }
        }
        // Every missing instrument at once, before any is opened.
        if !request.mock { try DevicePresence.check(compiled.plan) }
        let faults = try (compiled.faults + request.faults).map { try FaultSpec.parse($0) }
        let lab = SimulatedLab(
            parameters: try LabParameters(compiled.simulation), network: try NetworkParameters(compiled.network), seed: seed, pacing: request.realtime ? .realtime : .virtual,
            faults: faults)
        let transcript = InstrumentTranscript()
        let registry = registry(lab: lab, plugins: plugins.entries, transcript: transcript)
        var plan = compiled.plan
        for (k, v) in request.meta {
            if let problem = plan.metadata.apply(k, v) { throw LabParameterError("--meta \(k)=\(v): \(problem)") }
        }
        plan.metadata.overrides = request.overrides
        await RunProvenance.fill(&plan.metadata, scriptPath: plan.scriptPath, includes: plan.includedFiles.map(\.resolvedPath))
        defer {
            // What the drivers said to the simulated instruments, for `--transcript`.
            if let path = request.transcriptPath {
                do {
                    try transcript.jsonLines().write(toFile: path, atomically: true, encoding: .utf8)
                } catch {
                    logger.error("could not write the instrument transcript to \(path): \(error)")
                }
            }
        }

        var devices: [String: any Device] = [:]
        var records: [DeviceRecord] = []
        for config in plan.devices {
            if let nodeName = config.node {
                let device = try nodes.device(config, node: nodeName)
                devices[config.name] = device
                records.append(
                    DeviceRecord(
                        name: config.name, driver: device.descriptor.id, driverVersion: device.descriptor.version,
                        settings: ["node": nodeName, "address": nodes.address(nodeName), "origin": device.descriptor.origin]))
                continue
            }
            guard let entry = registry.entry(config.driver) else {
                throw DeviceError(device: config.name, .notFound, "driver \(config.driver) is not available")
            }
            devices[config.name] = try entry.make(config)
            records.append(
                DeviceRecord(
                    name: config.name, driver: entry.descriptor.id, driverVersion: entry.descriptor.version,
                    settings: config.settings.mapValues(\.description).merging(["match": config.match.description]) { a, _ in a }))
        }
        let allMock = plan.devices.allSatisfy { ($0.match == .simulated) || (registry.entry($0.driver)?.descriptor.isMock ?? false) }
        // Simulated devices and fast replay run on the lab's virtual clock; hardware needs real time.
        let clock: any Clock<Duration> = devices.values.contains { $0.needsWallClock } ? ContinuousClock() : lab.runClock

        let output = request.outPath ?? defaultOutputPath(name: plan.name)
        try OutputPath.createParent(of: output)
        let recorder = try RunRecorder(
            path: output, overwrite: request.overwrite, compression: request.compressionLevel.map { DeflateSettings(level: $0) },
            rawTags: request.rawTags, diskMargin: request.diskMargin)
        let collector = ReportCollector()
        // After the recorder, so the stop it registers sees the closed file's size. It never holds the run up.
        let catalogue = request.catalogue == .off ? nil : CatalogueSink(location: request.catalogue, outputPath: output)
        // The engine's events go through the reducer, which adds counts and analyses for the consumers below it.
        let reducer = RunReducer(downstream: [recorder, collector] + (catalogue.map { [$0] } ?? []) + extraSinks)
        // The in-flight bound is there to ride out a slow disk. With no raw tags nothing waits
        // for the disk, so a small one keeps a producer faster than counting (a replay) from
        // holding a large backlog in memory.
        let engine = RunEngine(
            plan: plan, devices: devices, clock: clock, sinks: [reducer], logger: logger,
            sinkBacklogTags: request.rawTags ? RunEngine.defaultSinkBacklogTags : RunEngine.countedOnlyBacklogTags,
            stopRequest: request.stopRequest)
        let start = RunStart(
            runID: UUID(), plan: plan, devices: records, seed: seed, mock: allMock, startedAt: Date(),
            heraldVersion: version)
        // Each node's lease, held for the run: a node whose coordinator vanishes goes safe by itself.
        try await nodes.takeLeases(length: request.leaseLength, policies: plan.nodes)
        let stop = await engine.run(start: start)
        nodes.releaseLeases()
        if let catalogue, let problem = await catalogue.finish().first {
            logger.warning(
                "run catalogue \(request.catalogue): \(problem); the record is kept and goes to the catalogue when it is back (any `herald runs`), or `herald catalogue rebuild` re-reads the file")
        }
        return RunReport(
            output: output, status: stop.status, reason: stop.reason, failure: stop.failure, tags: stop.tagCount, seed: seed,
            analyses: await collector.analyses)
    }

    static func defaultOutputPath(name: String) -> String {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        f.locale = Locale(identifier: "en_US_POSIX")
        return "out/\(safeFileName(name))-\(f.string(from: Date())).h5"
    }

    /// A script's `name:` as one file-name component: letters, digits, `-`, `_` and `.` are
    /// kept, anything else (a `/`, `..`, spaces, control characters) becomes `_`, so the
    /// default output always lands inside `out/`.
    public static func safeFileName(_ name: String) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
        var out = String(name.prefix(100).map { allowed.contains($0) ? $0 : "_" })
        while out.hasPrefix(".") { out = "_" + out.dropFirst() }
        return out.isEmpty ? "run" : out
    }
}

/// Keeps analysis results for the run report.
actor ReportCollector: RunEventSink {
    var analyses: [Herald.RunReport.Analysis] = []

    func handle(_ event: RunEvent) async throws {
        if case .analysis(let a) = event {
            analyses.append(
                .init(
                    name: a.name, estimator: a.estimator, values: a.values, uncertainties: a.uncertainties,
                    rhoReal: a.rhoReal, rhoImag: a.rhoImag, notes: a.notes, series: a.series, outer: a.outer,
                    parameters: a.parameters, labels: a.labels))
        }
    }
}
