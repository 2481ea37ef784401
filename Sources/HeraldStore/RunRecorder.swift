import Crypto
import Foundation
import HeraldRunReader
import HeraldCore
import HeraldHDF5

/// Records a run's events to an HDF5 file that stock h5py opens with no plugin, laid out
/// as Photon-HDF5 with Herald's own records under `/user/herald` (docs/hdf5-layout.md).
///
/// Crash safety: the layout is created when the run starts, then the file switches to
/// HDF5 single-writer/multiple-reader mode. From then on tags are appended to chunked,
/// growable datasets and the file is flushed at least once a second while tags arrive and
/// after every sweep point, so a notebook can follow the run live and a killed runner
/// loses at most the last second; `herald recover` makes such a file readable again.
/// SWMR forbids creating objects, so the summary tables are written after the SWMR
/// session closes, when the run stops. Per-point counts are appended to live tables as each
/// point finishes, so a killed `--no-raw-tags` run keeps them too.
///
/// One writer per file: the recorder holds `FILE.lock` (``RunFileLock``) from before the
/// file is created until it is closed. Disk full: before each write the recorder checks the
/// free space and stops the run (a `.diskFull` ``StoreError``) while `diskMargin` is left,
/// so it can still close the file with everything recorded so far. If a write fails anyway
/// (another process filled the disk), the space reserved in the lock file is released and
/// the file is flushed again; only if that too fails are the HDF5 handles abandoned, never
/// closed, leaving the file as of its last flush for `herald recover`.
public actor RunRecorder: RunEventSink {
    public static let schemaVersion = "0.4"
    /// 65 536 tags per chunk: 512 KiB of int64 timestamps. Large enough that per-chunk
    /// overhead (B-tree entries, a compression call) is small at 10⁷ tags/s, small enough
    /// that a reader pulling one tomography setting touches little extra data, and within
    /// HDF5's default 1 MiB chunk cache so an append never re-reads a partial chunk.
    static let chunkTags = 1 << 16
    /// With the ticker's period on top, a flush at least every 0.8 s while the run is open,
    /// whether or not tags arrive: at most one second of data is ever unflushed.
    static let flushInterval = Duration.milliseconds(700)
    static let tickerPeriod = Duration.milliseconds(100)
    /// Free space kept for closing the file: the summary tables, log and analyses.
    public static let defaultDiskMargin: Int64 = 1 << 20
    /// Space the lock file holds back for the close, released if the disk fills anyway.
    static let reserveBytes: Int64 = 512 << 10

    public nonisolated let path: String
    private var file: H5File?
    private var timestamps: H5AppendableDataset<Int64>?
    private var detectors: H5AppendableDataset<UInt8>?
    /// A run with several taggers: each tagger other than the clocks' reference, as it
    /// recorded its tags in its own clock, under /user/herald/taggers/<name>.
    private var otherTaggers: [String: (timestamps: H5AppendableDataset<Int64>, detectors: H5AppendableDataset<UInt8>)] = [:]
    /// Lost-data intervals of those taggers, in their own clocks.
    private var otherLost: [String: [ExcludedInterval]] = [:]
    /// The latest clock models the reducer followed (`.clocks`).
    private var clockModels: [ClockModel] = []
    private var progress: LiveProgress?
    private var heraldLog: HeraldLog?
    private var start: RunStart?
    private var sweepRows: [SweepPointRecord] = []
    private var countRows: [PointCounts] = []
    private var analyses: [AnalysisRecord] = []
    private var pauses: [PauseRecord] = []
    private var streams: [StreamDescriptor] = []
    /// Intervals the tagger reported losing tags in (overflows, missed events).
    private var lost: [ExcludedInterval] = []
    private var log: [String] = []
    /// The `record` steps' readings, written with the summary.
    private var recordings: [RecordedReading] = []
    private var lastFlush = ContinuousClock.now
    private var firstTag: Int64?
    private var lastTag: Int64?
    private var detectorCounts = [Int](repeating: 0, count: 256)
    /// Tags this recorder was handed and kept (stored, or counted with `rawTags` false).
    private var recordedTags = 0
    /// Set when a write failed or the disk filled: later tag blocks are refused with it.
    private var writeFailure: StoreError?
    /// HDF5 failed a write, so its caches may hold entries it cannot write.
    private var hdf5Failed = false
    private var lock: RunFileLock?
    /// Flushes on time while no tags arrive (waits, slow devices).
    private var ticker: Task<Void, Never>?

    private let compression: DeflateSettings?
    private let rawTags: Bool
    private let diskMargin: Int64
    private let overwrite: Bool

    /// Creates the output file; refuses to overwrite an existing one unless asked.
    /// `compression` stores tags shuffled and deflated (stock h5py reads them), compressed
    /// on all cores; nil stores them raw. With `rawTags` false the tags are counted (per
    /// detector, first and last) but not stored: for monitoring runs too long to keep every
    /// tag. `photon_data` is then empty and the run's `raw_tags` attribute says why.
    /// `diskMargin` is the free space at which recording stops (see the type's notes); a
    /// negative margin turns the check off, leaving only the fallback (for its tests).
    public init(
        path: String, overwrite: Bool = false, compression: DeflateSettings? = nil, rawTags: Bool = true,
        diskMargin: Int64 = RunRecorder.defaultDiskMargin
    ) throws {
        self.path = path
        self.compression = compression
        self.rawTags = rawTags
        self.diskMargin = diskMargin
        self.overwrite = overwrite
        try OutputPath.checkCreatable(path, overwrite: overwrite)
        // Locked before truncating, so `--overwrite` cannot destroy a file a live run holds.
        let lock = try RunFileLock(path: path, purpose: "herald run", reserveBytes: Self.reserveBytes)
        // Written under a hidden name until its layout is on disk, then renamed into place: a
        // file at `path` is always one `herald recover` can restore (a kill between creating
        // the file and its first flush left one that was not a Herald file at all), and with
        // --overwrite the old file stays whole until the new one is sound.
        let url = URL(fileURLWithPath: path)
        partialPath = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())").path
        do {
            self.file = try H5File.create(partialPath, overwrite: true, swmr: true)
        } catch {
            lock.release()
            try OutputPath.checkCreatable(path, overwrite: overwrite)
            throw StoreError(path: path, "cannot create the file: \(error)")
        }
        self.lock = lock
    }

    /// Where the file is written until its layout is flushed (see `init`).
    private let partialPath: String
    private var inPlace = false

    public func handle(_ event: RunEvent) async throws {
        switch event {
        case .runStarted(let s):
            start = s
            try begin(s)
        case .streamDeclared(let d):
            streams.append(d)
        case .stepStarted(let index, let summary):
            log.append("step \(index): \(summary)")
        case .sweepPointStarted:
            break
        case .tags(let device, let block):
            guard var timestamps, var detectors else {
                throw StoreError(path: path, "tags from \(device) arrived before the run started")
            }
            if let writeFailure { throw writeFailure }
            let other = otherTaggers[device]
            if let other { (timestamps, detectors) = other }
            if rawTags {
                // 9 bytes a tag uncompressed: an upper bound on what the append writes.
                try ensureSpace(Int64(block.count) * 9)
                try writing(bytes: Int64(block.count) * 9) {
                    try timestamps.append(block.timestamps)
                    try detectors.append(block.channels)
                }
            }
            recordedTags += block.count
            if ContinuousClock.now - lastFlush >= Self.flushInterval { try flush() }
            // photon_data's own summary (its detectors and span) is the reference tagger's.
            guard other == nil else {
                otherLost[device, default: []] += block.excluded
                break
            }
            block.countChannels(into: &detectorCounts)
            lost += block.excluded
            if let first = block.timestamps.first, firstTag == nil { firstTag = first }
            if let last = block.timestamps.last { lastTag = last }
        case .sweepPointFinished(let record):
            sweepRows.append(record)
            try writing { try progress?.add(record) }
            try flush()
        case .counts(let c):
            countRows.append(c)
            // Flushed with the point, so a killed run keeps every finished point's counts.
            try writing { try progress?.add(c) }
            try flush()
        case .acquired(let a):
            try writing { try progress?.add(a) }
        case .analysisRequested:
            break
        case .analysis(let a):
            analyses.append(a)
            // Live too: the summary tables are written only at the stop, when SWMR ends.
            try writing { try progress?.add(a) }
            try flush()
        case .pauseStarted:
            break
        case .pause(let p):
            pauses.append(p)
            try writing { try progress?.add(p) }
            try flush()
        case .herald(let h):
            try writing { try heraldLog?.add(h) }
            if ContinuousClock.now - lastFlush >= Self.flushInterval { try flush() }
        case .entangled(let r):
            try writing { try heraldLog?.add(r) }
            try flush()
        case .clocks(let models):
            clockModels = models
        case .recorded(let r):
            recordings.append(r)
        case .log(let line):
            log.append(line)
        case .runStopped(let stop):
            try finish(stop)
        }
    }

    /// `checkSpace` false: the retry after a failed write, which runs on the released
    /// reserve and must not be refused for the margin it is already inside.
    private func flush(checkSpace: Bool = true) throws {
        guard !hdf5Failed else { return }
        if checkSpace { try ensureSpace(0) }
        try writing {
            try timestamps?.writeTail()
            try detectors?.writeTail()
            for (_, other) in otherTaggers {
                try other.timestamps.writeTail()
                try other.detectors.writeTail()
            }
            // The flush log lets a reader (and the kill tests) see how much a crash could lose.
            try heraldLog?.writeTails()
            try progress?.addFlush(unixSeconds: Date().timeIntervalSince1970, lastTagPs: lastTag ?? -1)
            try file?.flush()
        }
        lastFlush = ContinuousClock.now
    }

    /// Stops the run while `diskMargin` is still free, so the close has room.
    private func ensureSpace(_ bytes: Int64) throws {
        guard diskMargin >= 0, let free = DiskSpace.available(near: path), free - bytes < diskMargin else { return }
        let failure = StoreError(
            path: path,
            "disk full: \(DiskSpace.format(free)) free on its filesystem (Herald stops recording with \(DiskSpace.format(diskMargin)) "
                + "left, to close the file); recording stopped after \(recordedTags) tags, all of them kept",
            kind: .diskFull)
        writeFailure = failure
        throw failure
    }

    /// Runs HDF5 writes of about `bytes`; a failure marks the file so the close takes the
    /// careful path, and is reported as disk full when the filesystem could not take them.
    private func writing(bytes: Int64 = 1 << 20, _ body: () throws -> Void) throws {
        // After a failed write HDF5's state is suspect: nothing more is appended, so the live
        // tables cannot fall out of step with one another.
        if hdf5Failed { throw writeFailure ?? StoreError(path: path, "an earlier write failed") }
        do {
            try body()
        } catch {
            hdf5Failed = true
            let free = DiskSpace.available(near: path) ?? 0
            lock?.releaseReserve()
            let failure =
                free < bytes + max(diskMargin, 0)
                ? StoreError(
                    path: path,
                    "disk full: a write failed with \(DiskSpace.format(free)) free on its filesystem; the file keeps what was flushed "
                        + "before (\(error))", kind: .diskFull)
                : StoreError(path: path, "writing the file failed: \(error)")
            writeFailure = failure
            throw failure
        }
    }

    /// Everything known when the run starts, then SWMR mode.
    private func begin(_ s: RunStart) throws {
        try writing { try layOut(s) }
        try flush()  // the first entry of the flush log: the run's start
        // Without --overwrite, link() fails if a file appeared at `path` meanwhile (rename would
        // silently replace it); with it, rename replaces the old file atomically.
        if overwrite {
            guard rename(partialPath, path) == 0 else { throw OutputPath.failure(path, errno, what: "cannot move the new file into place") }
        } else {
            guard link(partialPath, path) == 0 else {
                let e = errno
                throw e == EEXIST
                    ? StoreError(path: path, "appeared while the run started; pass --overwrite to replace it", kind: .exists)
                    : OutputPath.failure(path, e, what: "cannot move the new file into place")
            }
            unlink(partialPath)
        }
        inPlace = true
        ticker = Task { [weak self] in
            while !Task.isCancelled {
                try? await Task.sleep(for: Self.tickerPeriod)
                await self?.flushIfDue()
            }
        }
    }

    private func flushIfDue() {
        guard file != nil, writeFailure == nil, ContinuousClock.now - lastFlush >= Self.flushInterval else { return }
        try? flush()  // a failure is kept in writeFailure and stops the run at the next block
    }

    private func layOut(_ s: RunStart) throws {
        guard let file else { return }
        try PhotonHDF5.writeHeader(
            file, description: s.plan.name, softwareVersion: s.heraldVersion, createdAt: s.startedAt, filename: path)
        let photons = try file.group("photon_data")
        try PhotonHDF5.title(photons)
        let ts = try photons.appendable("timestamps", of: Int64.self, chunk: Self.chunkTags, compression: compression)
        let det = try photons.appendable("detectors", of: UInt8.self, chunk: Self.chunkTags, compression: compression)
        try PhotonHDF5.title(ts)
        try PhotonHDF5.title(det)
        let specs = try photons.group("timestamps_specs")
        try PhotonHDF5.title(specs)
        try PhotonHDF5.title(try specs.write("timestamps_unit", scalar: 1e-12))

        let m = s.plan.metadata
        try PhotonHDF5.writeAuthorship(file, author: m.operatorName, affiliation: m.affiliation, sample: m.sample)
        let herald = try file.group("user").group("herald")
        try herald.setAttribute("schema_version", Self.schemaVersion)
        // Everything a run says about itself, found here without knowing Photon-HDF5's fields.
        let meta = try herald.group("metadata")
        var attributes: [(String, String)] = [
            ("operator", m.operatorName ?? ""), ("affiliation", m.affiliation ?? ""), ("sample", m.sample ?? ""),
            ("tags", m.tags.joined(separator: ",")), ("description", s.plan.description), ("herald_version", s.heraldVersion),
            ("host", m.host ?? ""), ("script_revision", m.scriptRevision ?? ""),
            ("script_dirty", m.scriptDirty.map { $0 ? "true" : "false" } ?? "unknown (not in a git repository)"),
        ]
        // Every parameter as the run used it and the `--set` overrides alone, as JSON objects (the run catalogue's rebuild reads them).
        func json(_ d: [String: String]) -> String {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            return (try? e.encode(d)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        }
        attributes += [("parameters", json(s.plan.parameters.mapValues(\.text))), ("overrides", json(m.overrides))]
        attributes += m.extra.sorted { $0.key < $1.key }.map { ("extra_" + $0.key, $0.value) }
        for (k, v) in attributes { try meta.setAttribute(k, v) }
        if let w = m.excitationWavelength { try meta.setAttribute("excitation_wavelength_m", w) }
        if let w = m.detectionWavelength { try meta.setAttribute("detection_wavelength_m", w) }
        let run = try herald.group("run")
        let iso = ISO8601DateFormatter()
        try run.setAttribute("run_id", s.runID.uuidString)
        try run.setAttribute("name", s.plan.name)
        try run.setAttribute("started_at", iso.string(from: s.startedAt))
        try run.setAttribute("herald_version", s.heraldVersion)
        try run.setAttribute("mock", s.mock ? "true" : "false")
        try run.setAttribute("raw_tags", rawTags ? "recorded" : "not recorded: counted live only (herald run --no-raw-tags)")
        if let seed = s.seed { try run.setAttribute("seed", seed) }
        try run.setAttribute("script_path", s.plan.scriptPath)
        try run.setAttribute("writer_pid", Int64(getpid()))
        // Until the run stops cleanly this says "running"; `herald recover` turns it into "incomplete".
        try run.setAttribute("exit_status", "running")
        let parameters = try herald.group("parameters")
        // As written (attributes), and each quantity as a number in SI units with its units.
        for (k, v) in s.plan.parameters.sorted(by: { $0.key < $1.key }) {
            try parameters.setAttribute(k, v.text)
            if case .quantity(let q) = v.value {
                try parameters.write(k, scalar: q.value).setAttribute("units", q.dimension == .dimensionless ? "1" : q.dimension.siUnit)
            }
        }
        let script = try herald.write("script", string: s.plan.scriptText)
        func sha256(_ text: String) -> String { SHA256.hash(data: Data(text.utf8)).map { String(format: "%02x", $0) }.joined() }
        try script.setAttribute("sha256", sha256(s.plan.scriptText))
        // Included files beside the script, so the file alone reproduces the run.
        let includes = try herald.group("includes")
        try includes.write("path", strings: s.plan.includedFiles.map(\.path))
        try includes.write("resolved_path", strings: s.plan.includedFiles.map(\.resolvedPath))
        try includes.write("text", strings: s.plan.includedFiles.map(\.text))
        try includes.write("sha256", strings: s.plan.includedFiles.map { sha256($0.text) })
        // The hosts whose nodes served devices (empty for a run on this host alone).
        let nodes = try herald.group("nodes")
        for n in s.plan.nodes {
            let g = try nodes.group(n.name)
            try g.setAttribute("address", n.address)
            try g.setAttribute("devices", s.plan.devices.filter { $0.node == n.name }.map(\.name).joined(separator: ","))
        }
        let devices = try herald.group("devices")
        for d in s.devices {
            let g = try devices.group(d.name)
            try g.setAttribute("driver", d.driver)
            try g.setAttribute("driver_version", d.driverVersion)
            for (k, v) in d.settings.sorted(by: { $0.key < $1.key }) { try g.setAttribute("setting_" + k, v) }
        }
        // What the run reducer needed of the plan, so `herald analyze` replays the run through it.
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let reduction = try herald.write(
            "reduction_plan", string: String(decoding: try encoder.encode(ReductionPlan(plan: s.plan)), as: UTF8.self))
        try reduction.setAttribute("format", "JSON (herald ReductionPlan); windows and delays in seconds")
        progress = try LiveProgress(in: herald, plan: s.plan)
        heraldLog = try HeraldLog(in: herald, plan: s.plan)
        if let network = s.plan.network { try Self.writeNetwork(network, into: herald) }
        if let clocks = s.plan.clocks {
            // The other taggers' raw tags, as each recorded them (its own clock, its own channel
            // numbers); photon_data is the reference's. Created before SWMR starts.
            let taggers = try herald.group("taggers")
            try taggers.setAttribute("reference", clocks.reference)
            try taggers.setAttribute(
                "about", "tags of each tagger other than the reference (whose tags are photon_data), in its own clock and channels; "
                    + "/user/herald/clocks/<tagger> maps its clock to the reference's")
            for t in clocks.taggers {
                let g = try taggers.group(t.name)
                try g.setAttribute("channel_offset", Int64(t.channelOffset))
                let tts = try g.appendable("timestamps", of: Int64.self, chunk: Self.chunkTags, compression: compression)
                let tdet = try g.appendable("detectors", of: UInt8.self, chunk: Self.chunkTags, compression: compression)
                try tts.setAttribute("units", "ps (this tagger's clock)")
                otherTaggers[t.name] = (tts, tdet)
            }
        }
        timestamps = ts
        detectors = det
        try file.flush()
        try file.startSWMRWrite()
    }

    private func finish(_ stop: RunStop) throws {
        ticker?.cancel()
        ticker = nil
        guard let open = file else { return }
        defer {
            lock?.release()
            lock = nil
        }
        guard inPlace else {
            // The run never got as far as its first flush: nothing was recorded.
            if hdf5Failed { open.abandon() } else { open.close() }
            file = nil
            unlink(partialPath)
            return
        }
        if hdf5Failed {
            // The reserve was released when the write failed: one more try at a clean flush.
            hdf5Failed = false
            do { try flush(checkSpace: false) } catch {
                for location in [timestamps, detectors, open] as [H5Location?] { location?.abandon() }
                for (_, other) in otherTaggers {
                    other.timestamps.abandon()
                    other.detectors.abandon()
                }
                otherTaggers = [:]
                progress?.abandon()
                heraldLog?.abandon()
                timestamps = nil
                detectors = nil
                progress = nil
                heraldLog = nil
                file = nil
                throw StoreError(
                    path: path,
                    "\(writeFailure?.message ?? "a write failed"); the file could not be closed, so run `herald recover \(path)` "
                        + "to keep the tags flushed before the failure", kind: writeFailure?.kind ?? .other)
            }
        }
        // Leave SWMR: close every handle, then reopen normally to add the summary tables.
        try timestamps?.writeTail()
        try detectors?.writeTail()
        for (_, other) in otherTaggers {
            try other.timestamps.writeTail()
            try other.detectors.writeTail()
        }
        otherTaggers = [:]
        timestamps = nil
        detectors = nil
        progress = nil
        // The herald log's datasets too: an open dataset keeps the SWMR file open behind the
        // close, and the file would keep its write mark.
        heraldLog = nil
        open.close()
        self.file = nil
        let file = try H5File.open(path, mode: .readWrite)
        defer { file.close() }
        guard file.contains("user") else { return }  // the run never started
        do {
            try writeSummary(file, stop)
        } catch {
            // Closing needs a little space too; give it the reserve if the summary ran out.
            lock?.releaseReserve()
            let kind = (error as? StoreError)?.kind ?? ((DiskSpace.available(near: path) ?? 0) < diskMargin ? .diskFull : .other)
            throw StoreError(
                path: path, "could not write the run's closing summary (\(error)); the file still says \"running\": "
                    + "run `herald recover \(path)` to restore it", kind: kind)
        }
    }

    /// `/user/herald/records/<device>.<property>/{value,sweep,point_index,time_ps}`: one row per
    /// reading, the value in SI units (`units` attribute; flags 1/0; text as strings).
    private func writeRecordings(_ herald: H5Group) throws {
        guard !recordings.isEmpty else { return }
        let records = try herald.group("records")
        var order: [String] = []
        var byName: [String: [RecordedReading]] = [:]
        for r in recordings {
            let key = "\(r.device).\(r.property)"
            if byName[key] == nil { order.append(key) }
            byName[key, default: []].append(r)
        }
        for key in order {
            guard let rows = byName[key] else { continue }
            let g = try records.group(key)
            if rows.allSatisfy({ $0.value.text == nil }) {
                let values = rows.map { r -> Double in
                    switch r.value {
                    case .quantity(let q): return q.value
                    case .bool(let b): return b ? 1 : 0
                    case .text: return .nan
                    }
                }
                let ds = try g.write("value", values)
                if case .quantity(let q) = rows[0].value { try ds.setAttribute("units", q.dimension == .dimensionless ? "1" : q.dimension.siUnit) }
            } else {
                try g.write("value", strings: rows.map { $0.value.description })
            }
            try g.write("sweep", strings: rows.map { $0.point?.sweep ?? "" })
            try g.write("point_index", rows.map { Int64($0.point?.index ?? -1) })
            try g.write("time_ps", rows.map(\.timePs))
        }
    }

    /// The pump's wavelength when a laser's `wavelength` setting gives it (meta: says it otherwise).
    private var laserWavelength: Double? {
        start?.plan.devices.lazy.compactMap { d -> Double? in
            guard let q = d.settings["wavelength"]?.quantity, q.dimension == .length else { return nil }
            return q.value
        }.first
    }

    private func writeSummary(_ file: H5File, _ stop: RunStop) throws {
        let iso = ISO8601DateFormatter()
        let acquired = sweepRows.reduce(0.0) { $0 + Double($1.stopPs - $1.startPs) * 1e-12 }
        let span = firstTag.flatMap { f in lastTag.map { Double($0 - f) * 1e-12 } } ?? 0
        try file.dataset("acquisition_duration").overwrite([acquired > 0 ? acquired : span])
        var perDetector: [UInt8: Int64] = [:]
        for (c, n) in detectorCounts.enumerated() where n > 0 { perDetector[UInt8(c)] = Int64(n) }
        let m = start?.plan.metadata
        try PhotonHDF5.writeSetup(
            file, detectorCounts: perDetector,
            wavelengths: .init(excitation: m?.excitationWavelength ?? laserWavelength, detection: m?.detectionWavelength))

        let herald = try file.openGroup("user").openGroup("herald")
        let run = try herald.openGroup("run")
        try herald.write("log", strings: log)
        try writeRecordings(herald)
        // Which node failed, and when: a device failure of a device that lives on a node.
        if case .device(let device, let kind)? = stop.failure, let node = start?.plan.devices.first(where: { $0.name == device })?.node,
            herald.contains("nodes"), try herald.openGroup("nodes").contains(node)
        {
            let g = try herald.openGroup("nodes").openGroup(node)
            try g.setAttribute("failed_at", iso.string(from: stop.stoppedAt))
            try g.setAttribute("failure", "\(device) \(kind.rawValue): \(stop.reason ?? "")")
        }

        try SummaryTables.writeSweeps(sweepRows, into: herald, withSettings: true)
        // Paused intervals: their tags stay in photon_data but were excluded from the counts.
        let paused = try SummaryTables.writePaused(start: pauses.map(\.startPs), stop: pauses.map(\.stopPs), into: herald)
        try paused.write("interlock", strings: pauses.map(\.interlock))
        try paused.write("condition", strings: pauses.map(\.condition))
        try paused.write("resumed", pauses.map { UInt8($0.resumed ? 1 : 0) })
        // Lost intervals: the tagger said its data there is incomplete (counts excluded them).
        let lostGroup = try herald.group("lost")
        try lostGroup.write("start_ps", lost.map(\.startPs))
        try lostGroup.write("stop_ps", lost.map(\.stopPs))
        try lostGroup.write("reason", strings: lost.map(\.reason))

        try SummaryTables.writeCounts(countRows, into: herald)
        // What each event stream of the run carried, with units: a reader's key to the tables.
        let streamsGroup = try herald.group("streams")
        for d in streams {
            let g = try streamsGroup.group(d.stream.replacingOccurrences(of: "/", with: ":"))
            try g.setAttribute("source", d.source)
            try g.write("field", strings: d.fields.map(\.name))
            try g.write("type", strings: d.fields.map(\.type))
            try g.write("units", strings: d.fields.map(\.unit))
        }

        if !clockModels.isEmpty { try ClockStore.write(clockModels, into: herald) }
        if herald.contains("taggers") {
            let taggers = try herald.openGroup("taggers")
            for (name, intervals) in otherLost.sorted(by: { $0.key < $1.key }) where taggers.contains(name) {
                let g = try taggers.openGroup(name).group("lost")
                try g.write("start_ps", intervals.map(\.startPs))
                try g.write("stop_ps", intervals.map(\.stopPs))
                try g.write("reason", strings: intervals.map(\.reason))
            }
        }
        let analysis = try herald.group("analysis")
        for a in analyses { try AnalysisStore.append(a, to: analysis) }
        try DatasetUnits.label(herald)
        // Last: until the tables above are all written the file still says "running", so a
        // summary cut short (the disk filled) leaves a file that `herald recover` restores.
        try run.setAttribute("stopped_at", iso.string(from: stop.stoppedAt))
        try run.setAttribute("reason", stop.reason ?? "")
        // What the file holds: equal to the engine's count unless recording stopped early (disk full).
        try run.setAttribute("tag_count", Int64(recordedTags))
        try run.setAttribute("exit_status", stop.status.rawValue)
    }
}

/// The clock models of a run with several taggers: `/user/herald/clocks/<tagger>`, each with
/// its provenance as attributes (reference, source, method, offset and drift with 1σ errors,
/// residual, samples) and its knots (`knot_local_ps`, `knot_offset_ps`, `knot_error_ps`).
enum ClockStore {
    static func write(_ models: [ClockModel], into herald: H5Group) throws {
        let clocks = try herald.group("clocks")
        try clocks.setAttribute(
            "about", "t_reference = t_local − offset(t_local); offset(t) = offset_ps + drift·(t − epoch_ps), or interpolated "
                + "linearly between the knots where there are knots")
        for m in models {
            let g = try clocks.group(m.tagger)
            try g.setAttribute("reference", m.reference)
            try g.setAttribute("source", m.source)
            try g.setAttribute("method", m.method)
            try g.write("offset_ps", scalar: m.offsetPs)
            try g.write("offset_error_ps", scalar: m.offsetErrorPs)
            try g.write("drift", scalar: m.drift)
            try g.write("drift_error", scalar: m.driftError)
            try g.write("epoch_ps", scalar: Double(m.epochPs))
            try g.write("residual_rms_ps", scalar: m.residualRmsPs)
            try g.write("reduced_chi_square", scalar: m.reducedChiSquare)
            try g.write("samples", scalar: Double(m.samples))
            try g.write("knot_local_ps", m.knots.map(\.localPs))
            try g.write("knot_offset_ps", m.knots.map(\.offsetPs))
            try g.write("knot_error_ps", m.knots.map(\.errorPs))
        }
    }
}

/// The summary tables a clean stop writes and `herald recover` rebuilds from the live progress.
enum SummaryTables {
    /// `sweeps/<sweep>/{index,label,start_ps,stop_ps}`, and `settings` when they are known.
    static func writeSweeps(_ rows: [SweepPointRecord], into herald: H5Group, withSettings: Bool) throws {
        let sweeps = try herald.group("sweeps")
        for name in Set(rows.map(\.sweep)).sorted() {
            let mine = rows.filter { $0.sweep == name }
            let g = try sweeps.group(name)
            try g.write("index", mine.map { Int64($0.index) })
            try g.write("label", strings: mine.map(\.label))
            try g.write("start_ps", mine.map(\.startPs))
            try g.write("stop_ps", mine.map(\.stopPs))
            // A nested sweep's points name the outer point they ran inside (−1: none).
            if let outer = mine.lazy.compactMap(\.outer).first {
                try g.setAttribute("outer_sweep", outer.sweep)
                try g.write("outer_index", mine.map { Int64($0.outer?.index ?? -1) })
            }
            guard withSettings else { continue }
            let keys = Set(mine.flatMap { $0.settings.keys }).sorted()
            try g.write("settings", strings: mine.map { r in keys.map { "\($0)=\(r.settings[$0] ?? "")" }.joined(separator: ";") })
        }
    }

    /// `counts/<data set>/…`: one row per point and detector pair, singles per point.
    static func writeCounts(_ countRows: [PointCounts], into herald: H5Group) throws {
        let counts = try herald.group("counts")
        for name in Set(countRows.map(\.sweep)).sorted() {
            let rows = countRows.filter { $0.sweep == name }
            let flat = rows.flatMap { r in r.pairs.map { (r, $0) } }
            let g = try counts.group(name)
            try g.write("point_index", flat.map { Int64($0.0.index) })
            if let outer = rows.lazy.compactMap(\.outer).first {
                try g.setAttribute("outer_sweep", outer.sweep)
                try g.write("outer_index", flat.map { Int64($0.0.outer?.index ?? -1) })
            }
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
    }

    /// `paused/{start_ps,stop_ps}`; returns the group for the columns only a clean stop knows.
    static func writePaused(start: [Int64], stop: [Int64], into herald: H5Group) throws -> H5Group {
        let paused = try herald.group("paused")
        try paused.write("start_ps", start)
        try paused.write("stop_ps", stop)
        return paused
    }
}

/// Adds analyses to a closed run file (what `herald analyze` recounted), each with the
/// counts it was computed from, under the run's lock so a live run's file is refused.
public enum RunAnalysisAppender {
    /// Appends `records` in order, `counts[i]` beside `records[i]`; returns the new entry names.
    /// Takes the file's lock unless the caller `holding` it already does.
    public static func append(
        _ records: [AnalysisRecord], counts: [[PointCounts]], to path: String, holding held: RunFileLock? = nil
    ) throws -> [String] {
        let lock = try held ?? RunFileLock(path: path, purpose: "herald analyze")
        defer { if held == nil { lock.release() } }
        let file = try RunFile.open(path, mode: .readWrite)
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        let analysis = try herald.group("analysis")
        let entries = try zip(records, counts).map { record, points in
            try AnalysisStore.append(record, to: analysis) { g in
                let flat = points.flatMap { p in p.pairs.map { (p, $0) } }
                guard !flat.isEmpty else { return }
                let c = try g.group("counts")
                try c.write("point_index", flat.map { Int64($0.0.index) })
                try c.write("projection", strings: flat.map(\.1.projection))
                try c.write("channel_a", flat.map { Int64($0.1.channelA) })
                try c.write("channel_b", flat.map { Int64($0.1.channelB) })
                try c.write("coincidences", flat.map { Int64($0.1.coincidences) })
                try c.write("accidentals", flat.map(\.1.accidentals))
            }
        }
        try DatasetUnits.label(herald)
        return entries
    }
}

/// Analysis entries under /user/herald/analysis: one group per entry, numbered in order
/// (`000_tomography`, `001_chsh`, …). Entries are only ever added, never replaced.
enum AnalysisStore {
    @discardableResult
    static func append(_ a: AnalysisRecord, to analysis: H5Group, extra: ((H5Group) throws -> Void)? = nil) throws -> String {
        let name = String(format: "%03d_%@", try analysis.childNames().count, a.name)
        let g = try analysis.group(name)
        try g.setAttribute("estimator", a.estimator)
        if let outer = a.outer {
            // An analysis of a nested sweep covers the inner points of one outer point.
            try g.setAttribute("outer_sweep", outer.sweep)
            try g.setAttribute("outer_index", Int64(outer.index))
            try g.setAttribute("outer_label", outer.label)
        }
        for (k, v) in a.parameters.sorted(by: { $0.key < $1.key }) { try g.setAttribute(k, v) }
        try g.write("notes", strings: a.notes)
        if !a.rhoReal.isEmpty {
            let n = Int(Double(a.rhoReal.count).squareRoot())
            try g.write("rho", complexReal: a.rhoReal, imag: a.rhoImag, shape: [n, n])
        }
        if !a.series.isEmpty {
            let series = try g.group("series")
            for (k, v) in a.series.sorted(by: { $0.key < $1.key }) { try series.write(k, v) }
            if a.labels.count == a.series.values.first?.count { try g.write("point_labels", strings: a.labels) }
        }
        let values = try g.group("values")
        for (k, v) in a.values { try values.write(k, scalar: v) }
        let errors = try g.group("uncertainties")
        for (k, v) in a.uncertainties { try errors.write(k, scalar: v) }
        try extra?(g)
        return name
    }
}

/// Sweep points, pauses, per-point counts and flushes as they happen, in datasets created
/// before SWMR starts, so that a live reader, and `herald recover` after a crash, know which
/// stretch of the tag stream belongs to which setting and what each finished point counted.
struct LiveProgress {
    static let chunk = 256
    let pointSweep, pointIndex, pointStart, pointStop, pausedStart, pausedStop: H5AppendableDataset<Int64>
    /// One row per counted point, then one per detector pair and one per singles channel of it.
    let countedDataset, countedPoint: H5AppendableDataset<Int64>
    let countedDuration: H5AppendableDataset<Double>
    /// Pairs and singles name their counted row by its ordinal: an inner sweep repeats its
    /// (sweep, point) for every outer point, so those cannot key them.
    let pairRow, pairChannelA, pairChannelB, pairProjection, pairCoincidences: H5AppendableDataset<Int64>
    let pairAccidentals: H5AppendableDataset<Double>
    let singlesRow, singlesChannel, singlesCount: H5AppendableDataset<Int64>
    /// When each flush happened (Unix seconds) and the last tag it made durable.
    let flushUnix: H5AppendableDataset<Double>
    let flushLastTag: H5AppendableDataset<Int64>
    /// The outer point of each point and counted row (−1: none), for nested sweeps.
    let pointOuter, countedOuter: H5AppendableDataset<Int64>
    /// Each analysis result as it exists, one JSON document per result: the bytes in
    /// `results_json`, and where each ends in `results_end` (a reader takes the shortest).
    let resultsJSON: H5AppendableDataset<UInt8>
    let resultsEnd: H5AppendableDataset<Int64>
    /// Every acquisition and whether it counted, in `/user/herald/acquisitions` (kept as written).
    let acquisitionStart, acquisitionStop, acquisitionDevice: H5AppendableDataset<Int64>
    let acquisitionCounted: H5AppendableDataset<UInt8>
    let sweepNames: [String]
    let deviceNames: [String]

    init(in herald: H5Group, plan: Plan) throws {
        let g = try herald.group("progress")
        var names: [String] = []
        var labels: [String: [String]] = [:]
        func scan(_ steps: [PlanStep]) {
            for step in steps {
                switch step {
                case .sweep(let s):
                    if !names.contains(s.name) { names.append(s.name) }
                    labels[s.name] = s.points.map(\.label)
                    scan(s.body)
                case .acquire(_, _, let name?, _):
                    if !names.contains(name) { names.append(name) }
                default: break
                }
            }
        }
        scan(plan.steps)
        sweepNames = names
        try g.write("sweep_names", strings: names)
        let planned = try g.group("planned_labels")
        for (name, l) in labels { try planned.write(name, strings: l) }
        func int(_ name: String) throws -> H5AppendableDataset<Int64> { try g.appendable(name, of: Int64.self, chunk: Self.chunk) }
        func real(_ name: String) throws -> H5AppendableDataset<Double> { try g.appendable(name, of: Double.self, chunk: Self.chunk) }
        pointSweep = try int("point_sweep")
        pointIndex = try int("point_index")
        pointStart = try int("point_start_ps")
        pointStop = try int("point_stop_ps")
        pausedStart = try int("paused_start_ps")
        pausedStop = try int("paused_stop_ps")
        countedDataset = try int("counted_sweep")
        countedPoint = try int("counted_point")
        countedDuration = try real("counted_duration_s")
        pairRow = try int("pair_row")
        pairChannelA = try int("pair_channel_a")
        pairChannelB = try int("pair_channel_b")
        pairProjection = try int("pair_projection")
        pairCoincidences = try int("pair_coincidences")
        pairAccidentals = try real("pair_accidentals")
        singlesRow = try int("singles_row")
        singlesChannel = try int("singles_channel")
        singlesCount = try int("singles_count")
        flushUnix = try real("flush_unix_s")
        flushLastTag = try int("flush_last_tag_ps")
        pointOuter = try int("point_outer_index")
        countedOuter = try int("counted_outer_index")
        resultsJSON = try g.appendable("results_json", of: UInt8.self, chunk: 4096)
        resultsEnd = try int("results_end")
        let acquisitions = try herald.group("acquisitions")
        deviceNames = plan.devices.map(\.name)
        try acquisitions.write("device_names", strings: deviceNames)
        acquisitionStart = try acquisitions.appendable("start_ps", of: Int64.self, chunk: Self.chunk)
        acquisitionStop = try acquisitions.appendable("stop_ps", of: Int64.self, chunk: Self.chunk)
        acquisitionDevice = try acquisitions.appendable("device", of: Int64.self, chunk: Self.chunk)
        acquisitionCounted = try acquisitions.appendable("counted", of: UInt8.self, chunk: Self.chunk)
    }

    private var all: [H5Location] {
        [
            pointSweep, pointIndex, pointStart, pointStop, pausedStart, pausedStop, countedDataset, countedPoint,
            countedDuration, pairRow, pairChannelA, pairChannelB, pairProjection, pairCoincidences,
            pairAccidentals, singlesRow, singlesChannel, singlesCount, flushUnix, flushLastTag, pointOuter, countedOuter,
            acquisitionStart, acquisitionStop, acquisitionDevice, acquisitionCounted, resultsJSON, resultsEnd,
        ]
    }

    func abandon() { all.forEach { $0.abandon() } }

    func add(_ r: SweepPointRecord) throws {
        try pointSweep.append([Int64(sweepNames.firstIndex(of: r.sweep) ?? -1)])
        try pointIndex.append([Int64(r.index)])
        try pointStart.append([r.startPs])
        try pointOuter.append([Int64(r.outer?.index ?? -1)])
        try pointStop.append([r.stopPs])
    }

    func add(_ a: AcquisitionRecord) throws {
        try acquisitionStart.append([a.startPs])
        try acquisitionDevice.append([Int64(deviceNames.firstIndex(of: a.device) ?? -1)])
        try acquisitionCounted.append([a.counted ? 1 : 0])
        // Last: a reader takes the shortest column, so a row cut short is not read in part.
        try acquisitionStop.append([a.stopPs])
    }

    func add(_ p: PauseRecord) throws {
        try pausedStart.append([p.startPs])
        try pausedStop.append([p.stopPs])
    }

    func add(_ c: PointCounts) throws {
        let sweep = Int64(sweepNames.firstIndex(of: c.sweep) ?? -1), point = Int64(c.index)
        let row = Int64(countedPoint.count)
        for pair in c.pairs {
            try pairRow.append([row])
            try pairChannelA.append([Int64(pair.channelA)])
            try pairChannelB.append([Int64(pair.channelB)])
            try pairProjection.append([ProjectionCode.encode(pair.projection)])
            try pairCoincidences.append([Int64(pair.coincidences)])
            try pairAccidentals.append([pair.accidentals])
        }
        for (channel, n) in c.singles.sorted(by: { $0.key < $1.key }) {
            try singlesRow.append([row])
            try singlesChannel.append([Int64(channel)])
            try singlesCount.append([Int64(n)])
        }
        // The counted row last: recovery keeps a point only if its row made it, so a point
        // cut short mid-write is dropped whole, never kept in part.
        try countedDataset.append([sweep])
        try countedOuter.append([Int64(c.outer?.index ?? -1)])
        try countedDuration.append([c.duration])
        try countedPoint.append([point])
    }

    func add(_ a: AnalysisRecord) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "inf", negativeInfinity: "-inf", nan: "nan")
        let bytes = Array(try encoder.encode(LiveResult(a)))
        try resultsJSON.append(bytes)
        try resultsEnd.append([Int64(resultsJSON.count)])
    }

    func addFlush(unixSeconds: Double, lastTagPs: Int64) throws {
        try flushUnix.append([unixSeconds])
        try flushLastTag.append([lastTagPs])
    }
}

/// An analysis result as `progress/results_json` holds it while the run goes.
struct LiveResult: Encodable {
    var name, estimator: String
    var outer: String?
    var parameters: [String: String]
    var values, uncertainties: [String: Double]
    var rho_real, rho_imag: [Double]
    var series: [String: [Double]]
    var labels, notes: [String]

    init(_ a: AnalysisRecord) {
        name = a.name
        estimator = a.estimator
        outer = a.outer?.label
        parameters = a.parameters
        values = a.values
        uncertainties = a.uncertainties
        rho_real = a.rhoReal
        rho_imag = a.rhoImag
        series = a.series
        labels = a.labels
        notes = a.notes
    }
}

/// A pair's projection in a live integer column: two letters of HVDARL as 6·a + b, or −1
/// for the plain "A-B" channel label (rebuilt from the channels).
enum ProjectionCode {
    static let letters = Array("HVDARL")

    static func encode(_ projection: String) -> Int64 {
        let p = Array(projection)
        guard p.count == 2, let a = letters.firstIndex(of: p[0]), let b = letters.firstIndex(of: p[1]) else { return -1 }
        return Int64(a * 6 + b)
    }

    static func decode(_ code: Int64, channelA: Int, channelB: Int) -> String {
        guard (0..<36).contains(code) else { return "\(channelA)-\(channelB)" }
        return String([letters[Int(code) / 6], letters[Int(code) % 6]])
    }
}
