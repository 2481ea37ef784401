import Foundation
import HeraldCore
import HeraldHDF5

/// Records a run's events to an HDF5 file that stock h5py opens with no plugin.
///
/// Tags stream into chunked, growable datasets as they arrive; everything else is
/// written when the run stops. The file is flushed after every sweep point and at
/// least once a second of wall time, so a crash loses only the unflushed tail.
/// Layout: docs/hdf5-layout.md (schema version in `/user/herald@schema_version`).
public actor RunRecorder: RunEventSink {
    public static let schemaVersion = "0.1"
    /// 65 536 tags per chunk: 512 KiB of int64 timestamps, large enough for efficient
    /// I/O, small enough that a partial read of one setting touches little extra data.
    static let chunkTags = 1 << 16

    public nonisolated let path: String
    private var file: H5File?
    private var timestamps: H5AppendableDataset<Int64>?
    private var detectors: H5AppendableDataset<UInt8>?
    private var start: RunStart?
    private var sweepRows: [SweepPointRecord] = []
    private var countRows: [PointCounts] = []
    private var analyses: [AnalysisRecord] = []
    private var pauses: [PauseRecord] = []
    private var log: [String] = []
    private var lastFlush = ContinuousClock.now
    private var firstTag: Int64?
    private var lastTag: Int64?

    /// Creates the output file; refuses to overwrite an existing one unless asked.
    public init(path: String, overwrite: Bool = false) throws {
        self.path = path
        let file = try H5File.create(path, overwrite: overwrite)
        let photons = try file.group("photon_data")
        self.timestamps = try photons.appendable("timestamps", of: Int64.self, chunk: Self.chunkTags)
        self.detectors = try photons.appendable("detectors", of: UInt8.self, chunk: Self.chunkTags)
        try photons.group("timestamps_specs").write("timestamps_unit", scalar: 1e-12)
        self.file = file
    }

    public func handle(_ event: RunEvent) async throws {
        switch event {
        case .runStarted(let s):
            start = s
        case .stepStarted(let index, let summary):
            log.append("step \(index): \(summary)")
        case .sweepPointStarted:
            break
        case .tags(_, let block):
            try timestamps?.append(block.timestamps)
            try detectors?.append(block.channels)
            if let first = block.timestamps.first, firstTag == nil { firstTag = first }
            if let last = block.timestamps.last { lastTag = last }
            if ContinuousClock.now - lastFlush > .seconds(1) { try flush() }
        case .sweepPointFinished(let record):
            sweepRows.append(record)
            try flush()
        case .counts(let c):
            countRows.append(c)
        case .analysis(let a):
            analyses.append(a)
        case .pause(let p):
            pauses.append(p)
            try flush()
        case .log(let line):
            log.append(line)
        case .runStopped(let stop):
            try finish(stop)
        }
    }

    private func flush() throws {
        try file?.flush()
        lastFlush = ContinuousClock.now
    }

    private func finish(_ stop: RunStop) throws {
        guard let file else { return }
        defer {
            timestamps = nil
            detectors = nil
            file.close()
            self.file = nil
        }
        let iso = ISO8601DateFormatter()
        let acquired = sweepRows.reduce(0.0) { $0 + Double($1.stopPs - $1.startPs) * 1e-12 }
        let span = firstTag.flatMap { f in lastTag.map { Double($0 - f) * 1e-12 } } ?? 0
        try file.write("acquisition_duration", scalar: acquired > 0 ? acquired : span)
        try file.write("description", string: start?.plan.name ?? "")

        let herald = try file.group("user").group("herald")
        try herald.setAttribute("schema_version", Self.schemaVersion)
        let run = try herald.group("run")
        if let s = start {
            try run.setAttribute("run_id", s.runID.uuidString)
            try run.setAttribute("name", s.plan.name)
            try run.setAttribute("started_at", iso.string(from: s.startedAt))
            try run.setAttribute("herald_version", s.heraldVersion)
            try run.setAttribute("mock", s.mock ? "true" : "false")
            if let seed = s.seed { try run.setAttribute("seed", seed) }
            try run.setAttribute("script_path", s.plan.scriptPath)
            let parameters = try herald.group("parameters")
            for (k, v) in s.plan.parameters.sorted(by: { $0.key < $1.key }) { try parameters.setAttribute(k, v) }
            try herald.write("script", string: s.plan.scriptText)
            let devices = try herald.group("devices")
            for d in s.devices {
                let g = try devices.group(d.name)
                try g.setAttribute("driver", d.driver)
                try g.setAttribute("driver_version", d.driverVersion)
                for (k, v) in d.settings.sorted(by: { $0.key < $1.key }) { try g.setAttribute("setting_" + k, v) }
            }
        }
        try run.setAttribute("stopped_at", iso.string(from: stop.stoppedAt))
        try run.setAttribute("exit_status", stop.status.rawValue)
        try run.setAttribute("reason", stop.reason ?? "")
        try run.setAttribute("tag_count", Int64(stop.tagCount))
        try herald.write("log", strings: log)

        let sweeps = try herald.group("sweeps")
        for name in Set(sweepRows.map(\.sweep)).sorted() {
            let rows = sweepRows.filter { $0.sweep == name }
            let g = try sweeps.group(name)
            try g.write("index", rows.map { Int64($0.index) })
            try g.write("label", strings: rows.map(\.label))
            try g.write("start_ps", rows.map(\.startPs))
            try g.write("stop_ps", rows.map(\.stopPs))
            let keys = Set(rows.flatMap { $0.settings.keys }).sorted()
            try g.write("settings", strings: rows.map { r in keys.map { "\($0)=\(r.settings[$0] ?? "")" }.joined(separator: ";") })
        }

        // Paused intervals: their tags stay in photon_data but were excluded from the counts.
        let paused = try herald.group("paused")
        try paused.write("start_ps", pauses.map(\.startPs))
        try paused.write("stop_ps", pauses.map(\.stopPs))
        try paused.write("interlock", strings: pauses.map(\.interlock))
        try paused.write("condition", strings: pauses.map(\.condition))
        try paused.write("resumed", pauses.map { UInt8($0.resumed ? 1 : 0) })

        let counts = try herald.group("counts")
        for name in Set(countRows.map(\.sweep)).sorted() {
            let rows = countRows.filter { $0.sweep == name }
            let flat = rows.flatMap { r in r.pairs.map { (r, $0) } }
            let g = try counts.group(name)
            try g.write("point_index", flat.map { Int64($0.0.index) })
            try g.write("label", strings: flat.map { $0.0.label })
            try g.write("projection", strings: flat.map { $0.1.projection })
            try g.write("channel_a", flat.map { UInt8(clamping: $0.1.channelA) })
            try g.write("channel_b", flat.map { UInt8(clamping: $0.1.channelB) })
            try g.write("coincidences", flat.map { Int64($0.1.coincidences) })
            try g.write("accidentals", flat.map { $0.1.accidentals })
            try g.write("duration_s", flat.map { $0.0.duration })
            let channels = Set(rows.flatMap { $0.singles.keys }).sorted()
            try g.write("singles_channels", channels.map { UInt8(clamping: $0) })
            try g.write(
                "singles", rows.flatMap { r in channels.map { Int64(r.singles[$0] ?? 0) } },
                shape: [rows.count, channels.count])
        }

        let analysis = try herald.group("analysis")
        for (i, a) in analyses.enumerated() {
            let g = try analysis.group(String(format: "%03d_%@", i, a.name))
            try g.setAttribute("estimator", a.estimator)
            for (k, v) in a.parameters.sorted(by: { $0.key < $1.key }) { try g.setAttribute(k, v) }
            try g.write("notes", strings: a.notes)
            if !a.rhoReal.isEmpty {
                let n = Int(Double(a.rhoReal.count).squareRoot())
                try g.write("rho", complexReal: a.rhoReal, imag: a.rhoImag, shape: [n, n])
            }
            if !a.series.isEmpty {
                let series = try g.group("series")
                for (k, v) in a.series.sorted(by: { $0.key < $1.key }) { try series.write(k, v) }
            }
            let values = try g.group("values")
            for (k, v) in a.values { try values.write(k, scalar: v) }
            let errors = try g.group("uncertainties")
            for (k, v) in a.uncertainties { try errors.write(k, scalar: v) }
        }
        try file.flush()
    }
}
