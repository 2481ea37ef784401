import Foundation
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
        /// The outer point, for a point of a nested sweep.
        public var outer: PointRef?
    }

    public struct Analysis: Sendable, Codable {
        public var entry: String
        public var name: String
        public var estimator: String
        public var parameters: [String: String]
        public var values: [String: Double]
        public var uncertainties: [String: Double]
        /// For an analysis of a nested sweep: the outer point it covers.
        public var outer: PointRef?
        /// Per-point series (rates per point), with the points' labels.
        public var series: [String: [Double]] = [:]
        public var labels: [String] = []
        /// The density matrix of a tomography, row-major (`rho`, complex128); empty otherwise.
        public var rhoReal: [Double] = []
        public var rhoImag: [Double] = []
    }

    public var path: String
    public var schemaVersion: String
    public var run: [String: String]
    public var tags: Int
    public var acquisitionDurationS: Double
    public var counts: [CountRow]
    public var analyses: [Analysis]
}

/// Reads Herald run files: the summary `herald analyze` prints, and the file itself for readers.
public enum RunFile {
    static let runAttributes = [
        "name", "run_id", "started_at", "stopped_at", "exit_status", "reason", "herald_version", "mock", "script_path",
        "recovered_at",
    ]
    static let analysisParameters = [
        "sweep", "window_s", "delays_s", "target", "accidentals", "uncertainty_method", "projections", "recounted_from",
        "herald", "signals", "outer_label", "swept_unit",
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
    public static func open(
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
            let outer = g.contains("outer_index") ? try g.dataset("outer_index").read(Int64.self) : []
            let outerSweep = try g.stringAttribute("outer_sweep")
            guard [label.count, projection.count, a.count, b.count, n.count, acc.count].allSatisfy({ $0 == index.count }),
                outer.isEmpty || outer.count == index.count
            else {
                throw StoreError(path: g.path, "columns of the counts table differ in length")
            }
            // The outer sweep's labels, read once for the table rather than once per row.
            let outerLabels = try outerSweep.map { try sweepLabels(herald, $0) } ?? [:]
            for i in index.indices {
                var ref: PointRef?
                if let outerSweep, !outer.isEmpty, outer[i] >= 0 {
                    ref = PointRef(sweep: outerSweep, index: Int(outer[i]), label: outerLabels[Int(outer[i])] ?? "")
                }
                rows.append(.init(
                    sweep: sweep, point: Int(index[i]), label: label[i], projection: projection[i], channelA: Int(a[i]),
                    channelB: Int(b[i]), coincidences: Int(n[i]), accidentals: acc[i], outer: ref))
            }
        }
        return rows
    }

    /// Each point's label of sweep `sweep`, by point index, from its sweep table.
    static func sweepLabels(_ herald: H5Group, _ sweep: String) throws -> [Int: String] {
        guard herald.contains("sweeps"), try herald.openGroup("sweeps").contains(sweep) else { return [:] }
        let g = try herald.openGroup("sweeps").openGroup(sweep)
        let indices = try g.dataset("index").read(Int64.self), labels = try g.dataset("label").readStrings()
        return Dictionary(zip(indices.map { Int($0) }, labels), uniquingKeysWith: { first, _ in first })
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
            var outer: PointRef?
            if let sweep = try g.stringAttribute("outer_sweep"), let index = try g.attribute("outer_index", as: Int64.self) {
                outer = PointRef(sweep: sweep, index: Int(index), label: try g.stringAttribute("outer_label") ?? "")
            }
            var series: [String: [Double]] = [:]
            if g.contains("series") {
                let sub = try g.openGroup("series")
                for k in try sub.childNames() where sub.kind(of: k) == .numericDataset { series[k] = try sub.dataset(k).read(Double.self) }
            }
            var rho: (real: [Double], imag: [Double]) = ([], [])
            // At most 64 × 64 (six qubits): a damaged file's huge dataset is not read.
            if g.contains("rho"), try g.dataset("rho").extent <= 64 {
                rho = try g.dataset("rho").readComplex(limit: 64 * 64)
                let n = Int(Double(rho.real.count).squareRoot())
                // A square matrix or nothing: a damaged shape must not index out of bounds later.
                if n * n != rho.real.count { rho = ([], []) }
            }
            return RunSummary.Analysis(
                entry: entry, name: name, estimator: try g.stringAttribute("estimator") ?? "", parameters: parameters,
                values: try scalars("values"), uncertainties: try scalars("uncertainties"), outer: outer, series: series,
                labels: g.contains("point_labels") ? try g.dataset("point_labels").readStrings() : [], rhoReal: rho.real,
                rhoImag: rho.imag)
        }
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
    /// Where the tags are, for errors: photon_data, or /user/herald/taggers/<name>.
    let path: String

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
        path = "photon_data"
    }

    /// The raw tags of a tagger other than the clocks' reference, in its own clock.
    init(_ file: H5File, tagger: String) throws {
        let path = "user/herald/taggers/\(tagger)"
        guard let g = try? file.openGroup("user").openGroup("herald").openGroup("taggers").openGroup(tagger) else {
            throw StoreError(path: file.path, "has no /\(path): the tags of tagger '\(tagger)' are missing", kind: .invalidFile)
        }
        timestamps = try g.dataset("timestamps")
        detectors = try g.dataset("detectors")
        count = min(try timestamps.extent, try detectors.extent)
        self.path = path
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
                        path: path + "/timestamps",
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
        guard hi >= lo else { throw StoreError(path: path + "/timestamps", "not in time order near element \(hi)", kind: .invalidFile) }
        let times = try timestamps.read(Int64.self, offset: lo, count: hi - lo)
        for (i, t) in times.enumerated() where t < start || t >= stop || (i > 0 && t < times[i - 1]) {
            throw StoreError(
                path: path + "/timestamps",
                "element \(lo + i) (\(t) ps) is out of time order or outside its point [\(start), \(stop)) ps; the file's tags are "
                    + "damaged, so they cannot be recounted", kind: .invalidFile)
        }
        return TagBlock(timestamps: times, channels: try detectors.read(UInt8.self, offset: lo, count: hi - lo))
    }
}

extension RunFile {
    /// Turns a read that libhdf5 never returns from (some damaged object headers make 1.10
    /// loop) into `onHang`'s message, naming the call and the object. Once per process; the
    /// commands that only read files arm it (a run does not: its device deadlines already
    /// reach the safe state).
    public static func watchReads(limit: Duration, onHang: @escaping @Sendable (String) -> Void) {
        HDF5ReadWatchdog.arm(limit: limit, onHang: onHang)
    }
}
