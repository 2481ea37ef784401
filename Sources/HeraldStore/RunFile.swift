import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldHDF5

/// A run file read back: what `herald analyze` prints.
public struct RunSummary: Sendable, Codable {
    public struct CountRow: Sendable, Codable, Equatable {
        public var sweep: String
        public var point: Int
        public var label: String
        public var projection: String
        public var channelA: Int
        public var channelB: Int
        public var coincidences: Int
        public var accidentals: Double
    }

    public struct Analysis: Sendable, Codable {
        public var entry: String
        public var name: String
        public var estimator: String
        public var parameters: [String: String]
        public var values: [String: Double]
        public var uncertainties: [String: Double]
    }

    public var path: String
    public var schemaVersion: String
    public var run: [String: String]
    public var tags: Int
    public var acquisitionDurationS: Double
    public var counts: [CountRow]
    public var analyses: [Analysis]
}

/// Reads Herald run files, and recomputes analyses from their raw tags.
public enum RunFile {
    static let runAttributes = [
        "name", "run_id", "started_at", "stopped_at", "exit_status", "reason", "herald_version", "mock", "script_path",
        "recovered_at",
    ]
    static let analysisParameters = [
        "sweep", "window_s", "delays_s", "target", "accidentals", "uncertainty_method", "projections", "recounted_from",
    ]

    public static func summary(path: String) throws -> RunSummary {
        let file = try open(path)
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        let runGroup = try herald.openGroup("run")
        var run: [String: String] = [:]
        for key in runAttributes { if let v = try runGroup.stringAttribute(key) { run[key] = v } }
        if let seed = try runGroup.attribute("seed", as: UInt64.self) { run["seed"] = "\(seed)" }
        return RunSummary(
            path: path, schemaVersion: try herald.stringAttribute("schema_version") ?? "?", run: run,
            tags: try file.openGroup("photon_data").dataset("timestamps").extent,
            acquisitionDurationS: try file.dataset("acquisition_duration").read(Double.self).first ?? 0,
            counts: try countRows(herald), analyses: try analyses(herald))
    }

    /// Opens a Herald run file, failing with `unreadable` (plus HDF5's reason) if HDF5 cannot
    /// open it, and naming the file if it is not a Herald run.
    static func open(
        _ path: String, mode: H5File.Mode = .readOnly,
        unreadable: String = "cannot open as HDF5; if the runner was killed, run `herald recover` on it first"
    ) throws -> H5File {
        guard FileManager.default.fileExists(atPath: path) else { throw StoreError(path: path, "no such file") }
        let file: H5File
        do { file = try H5File.open(path, mode: mode) } catch {
            throw StoreError(path: path, "\(unreadable) (\(error))")
        }
        guard file.contains("user"), try file.openGroup("user").contains("herald") else {
            throw StoreError(path: path, "not a Herald run file: /user/herald is missing")
        }
        return file
    }

    static func countRows(_ herald: H5Group) throws -> [RunSummary.CountRow] {
        guard herald.contains("counts") else { return [] }
        let counts = try herald.openGroup("counts")
        var rows: [RunSummary.CountRow] = []
        for sweep in try counts.childNames() {
            let g = try counts.openGroup(sweep)
            let index = try g.dataset("point_index").read(Int64.self)
            let label = try g.dataset("label").readStrings(), projection = try g.dataset("projection").readStrings()
            let a = try g.dataset("channel_a").read(Int64.self), b = try g.dataset("channel_b").read(Int64.self)
            let n = try g.dataset("coincidences").read(Int64.self), acc = try g.dataset("accidentals").read(Double.self)
            guard [label.count, projection.count, a.count, b.count, n.count, acc.count].allSatisfy({ $0 == index.count }) else {
                throw StoreError(path: g.path, "columns of the counts table differ in length")
            }
            for i in index.indices {
                rows.append(.init(
                    sweep: sweep, point: Int(index[i]), label: label[i], projection: projection[i], channelA: Int(a[i]),
                    channelB: Int(b[i]), coincidences: Int(n[i]), accidentals: acc[i]))
            }
        }
        return rows
    }

    static func analyses(_ herald: H5Group) throws -> [RunSummary.Analysis] {
        guard herald.contains("analysis") else { return [] }
        let analysis = try herald.openGroup("analysis")
        return try analysis.childNames().map { entry in
            let g = try analysis.openGroup(entry)
            var parameters: [String: String] = [:]
            for key in analysisParameters { if let v = try g.stringAttribute(key) { parameters[key] = v } }
            func scalars(_ name: String) throws -> [String: Double] {
                guard g.contains(name) else { return [:] }
                let sub = try g.openGroup(name)
                var out: [String: Double] = [:]
                for k in try sub.childNames() { out[k] = try sub.dataset(k).read(Double.self).first }
                return out
            }
            let name = entry.split(separator: "_", maxSplits: 1).last.map(String.init) ?? entry
            return RunSummary.Analysis(
                entry: entry, name: name, estimator: try g.stringAttribute("estimator") ?? "", parameters: parameters,
                values: try scalars("values"), uncertainties: try scalars("uncertainties"))
        }
    }

    /// What to change when recounting.
    public struct Recount: Sendable {
        /// Full coincidence window in seconds; nil keeps the run's.
        public var window: Double?
        /// Per-channel delays in seconds; channels not listed keep the run's delay.
        public var delays: [Int: Double] = [:]
        public var estimator: Estimator?
        public init(window: Double? = nil, delays: [Int: Double] = [:], estimator: Estimator? = nil) {
            self.window = window
            self.delays = delays
            self.estimator = estimator
        }
    }

    /// Recounts the coincidences of the run's tomography sweep from the raw tags with another
    /// window or other delays, redoes the tomography, and appends the result as a new
    /// analysis entry (the run's own entries are never touched). Returns the new entry.
    public static func retomograph(path: String, _ recount: Recount) throws -> (entry: String, record: AnalysisRecord, counts: [RunSummary.CountRow]) {
        let file = try open(path, mode: .readWrite)
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        guard let source = try analyses(herald).first(where: { $0.name == "tomography" }),
            let sweep = source.parameters["sweep"]
        else { throw StoreError(path: path, "the run has no tomography analysis to recompute") }
        let window = recount.window ?? Double(source.parameters["window_s"] ?? "") ?? 1e-9
        var delays = AnalysisRecord.parseDelays(source.parameters["delays_s"] ?? "")
        delays.merge(recount.delays) { _, new in new }
        let estimator = recount.estimator ?? Estimator(rawValue: source.estimator) ?? .linear

        let rows = try countRows(herald).filter { $0.sweep == sweep }
        let sweepGroup = try herald.openGroup("sweeps").openGroup(sweep)
        let pointIndex = try sweepGroup.dataset("index").read(Int64.self)
        let starts = try sweepGroup.dataset("start_ps").read(Int64.self), stops = try sweepGroup.dataset("stop_ps").read(Int64.self)
        var paused: [ExcludedInterval] = []
        if herald.contains("paused") {
            let p = try herald.openGroup("paused")
            paused = zip(try p.dataset("start_ps").read(Int64.self), try p.dataset("stop_ps").read(Int64.self))
                .map { ExcludedInterval(startPs: $0, stopPs: $1, reason: "paused") }
            if let bad = paused.first(where: { !($0.startPs <= $0.stopPs && $0.startPs.magnitude < 1 << 60 && $0.stopPs.magnitude < 1 << 60) }) {
                throw StoreError(path: path, "paused interval [\(bad.startPs), \(bad.stopPs)) ps is impossible; the file is damaged", kind: .invalidFile)
            }
        }
        let tags = try TagReader(file)
        try tags.verifyTimeOrder()
        var configuration = CoincidenceConfiguration(
            windowPs: Int64((window * 1e12).rounded()), delaysPs: delays.mapValues { Int64(($0 * 1e12).rounded()) })
        configuration.pairs = Array(Set(rows.map { ChannelPair($0.channelA, $0.channelB) })).sorted { ($0.a, $0.b) < ($1.a, $1.b) }

        guard starts.count == pointIndex.count, stops.count == pointIndex.count else {
            throw StoreError(
                path: path, "sweeps/\(sweep): index, start_ps and stop_ps differ in length (\(pointIndex.count), \(starts.count), "
                    + "\(stops.count)); the file is damaged", kind: .invalidFile)
        }
        var recounted: [RunSummary.CountRow] = []
        var projections: [Projection] = []
        for (k, point) in pointIndex.enumerated() {
            // 2⁶⁰ ps is 13 days: beyond it the arithmetic of the counter could overflow.
            guard starts[k] <= stops[k], starts[k].magnitude < 1 << 60, stops[k].magnitude < 1 << 60 else {
                throw StoreError(
                    path: path, "sweeps/\(sweep) point \(point) covers [\(starts[k]), \(stops[k])) ps, which no run can; the file is damaged",
                    kind: .invalidFile)
            }
            let block = try tags.block(from: starts[k], to: stops[k])
            var withPauses = block
            withPauses.excluded = paused.filter { $0.stopPs > starts[k] && $0.startPs < stops[k] }
            let r = try CoincidenceStream.count(withPauses, configuration)
            let live = r.liveSeconds(from: starts[k], to: stops[k])
            for row in rows where row.point == Int(point) {
                let pair = ChannelPair(row.channelA, row.channelB)
                var new = row
                new.coincidences = r.coincidences[pair] ?? 0
                new.accidentals = r.accidentals(pair, windowPs: configuration.windowPs, liveSeconds: live)
                recounted.append(new)
                let letters = row.projection.compactMap { PolarizationLabel(rawValue: String($0)) }
                guard letters.count == 2 else {
                    throw StoreError(path: path, "projection '\(row.projection)' of point \(row.point) is not two of H,V,D,A,R,L")
                }
                projections.append(Projection(letters[0], letters[1], counts: Double(new.coincidences), accidentals: new.accidentals))
            }
        }
        let subtract = source.parameters["accidentals"] == "subtract"
        let result = try Tomography.reconstruct(
            projections, options: TomographyOptions(estimator: estimator, accidentals: subtract ? .subtract : .keep))
        let record = AnalysisRecord.tomography(
            result, projections: projections.count, estimator: estimator, target: source.parameters["target"] ?? "phi+",
            sweep: sweep, window: window, delays: delays, subtractAccidentals: subtract,
            extra: ["recounted_from": "raw tags (herald analyze), source entry \(source.entry)"])
        let entry = try AnalysisStore.append(record, to: try herald.openGroup("analysis")) { g in
            let c = try g.group("counts")
            try c.write("point_index", recounted.map { Int64($0.point) })
            try c.write("projection", strings: recounted.map(\.projection))
            try c.write("coincidences", recounted.map { Int64($0.coincidences) })
            try c.write("accidentals", recounted.map(\.accidentals))
        }
        return (entry, record, recounted)
    }
}

/// A run recorded with `--no-raw-tags`: its counts and analyses are in the file, its tags are not.
public struct NoRawTagsError: Error, CustomStringConvertible, Sendable {
    public var path: String
    /// The run's `raw_tags` attribute.
    public var note: String
    public var description: String {
        "\(path): the run stored no raw tags to read (raw_tags: \(note)); its live counts and analyses are in /user/herald"
    }
}

/// Reads stretches of the tag stream by time, relying on timestamps being in order.
struct TagReader {
    let timestamps: H5Dataset
    let detectors: H5Dataset
    let count: Int

    init(_ file: H5File) throws {
        // A run recorded with --no-raw-tags has an empty tag stream on purpose: say so rather
        // than recount or replay nothing.
        if file.contains("user"), let run = try? file.openGroup("user").openGroup("herald").openGroup("run"),
            let note = try run.stringAttribute("raw_tags"), note != "recorded"
        {
            throw NoRawTagsError(path: file.path, note: note)
        }
        let photons = try file.openGroup("photon_data")
        timestamps = try photons.dataset("timestamps")
        detectors = try photons.dataset("detectors")
        count = min(try timestamps.extent, try detectors.extent)
    }

    /// Checks the whole stream is in time order, a block at a time: the point lookups
    /// binary-search it, and on a damaged file (timestamps negated or shuffled) they would
    /// silently find the wrong stretches or none.
    func verifyTimeOrder() throws {
        let block = 1 << 20
        var previous = Int64.min
        for offset in stride(from: 0, to: count, by: block) {
            let times = try timestamps.read(Int64.self, offset: offset, count: min(block, count - offset))
            for (i, t) in times.enumerated() {
                if t < previous {
                    throw StoreError(
                        path: "photon_data/timestamps",
                        "element \(offset + i) (\(t) ps) comes before the one ahead of it (\(previous) ps): the tags are out of "
                            + "time order, so the file is damaged and cannot be recounted", kind: .invalidFile)
                }
                previous = t
            }
        }
    }

    /// Index of the first tag with timestamp ≥ t (binary search, one element read per step).
    func lowerBound(_ t: Int64) throws -> Int {
        var lo = 0, hi = count
        while lo < hi {
            let mid = (lo + hi) / 2
            if try timestamps.read(Int64.self, offset: mid, count: 1)[0] < t { lo = mid + 1 } else { hi = mid }
        }
        return lo
    }

    /// Tags with start ≤ t < stop. The search assumes time order, so the block is checked
    /// for it: a damaged file (timestamps negated, shuffled) fails naming the element
    /// instead of giving counts from the wrong stretch of the run.
    func block(from start: Int64, to stop: Int64) throws -> TagBlock {
        let lo = try lowerBound(start), hi = try lowerBound(stop)
        guard hi >= lo else { throw StoreError(path: "photon_data/timestamps", "not in time order near element \(hi)", kind: .invalidFile) }
        let times = try timestamps.read(Int64.self, offset: lo, count: hi - lo)
        for (i, t) in times.enumerated() where t < start || t >= stop || (i > 0 && t < times[i - 1]) {
            throw StoreError(
                path: "photon_data/timestamps",
                "element \(lo + i) (\(t) ps) is out of time order or outside its point [\(start), \(stop)) ps; the file's tags are "
                    + "damaged, so they cannot be recounted", kind: .invalidFile)
        }
        return TagBlock(timestamps: times, channels: try detectors.read(UInt8.self, offset: lo, count: hi - lo))
    }
}
