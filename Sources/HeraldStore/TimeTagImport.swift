import Foundation
import HeraldCore
import HeraldRunReader
#if canImport(Glibc)
import Glibc
#endif
import HeraldHDF5
import HeraldTTTR

/// What `herald import` wrote.
public struct ImportReport: Sendable, Codable {
    public var output: String
    public var source: String
    public var container: String
    public var format: String
    public var photons: Int
    public var detectors: [Int: Int]
    public var acquisitionDurationS: Double
}

/// Converts a time-tag recording to a Photon-HDF5 file, decoding and writing chunk by chunk.
///
/// Timestamps keep the file's own unit (timestamps_unit = the global resolution for T2, the
/// sync period for T3), as phconvert does, so nothing is rounded. T3 files also get
/// `nanotimes` with their TCSPC specs. Detectors are the file's channel numbers (0-based for
/// PicoQuant). Every header tag is copied to /user/picoquant/header.
public enum TimeTagImport {
    ///
    /// The file is written under a temporary name beside `output` and renamed into place only
    /// when complete, so a failed import (a truncated record, a full disk) leaves nothing.
    /// `author`, `affiliation` and `sample` fill Photon-HDF5's /identity and /sample; left out,
    /// they are written as "unspecified" on purpose, as a run's are.
    public static func convert(
        _ source: TimeTagFile, to output: String, softwareVersion: String, overwrite: Bool = false,
        author: String? = nil, affiliation: String? = nil, sample: String? = nil
    ) throws -> ImportReport {
        try OutputPath.checkCreatable(output, overwrite: overwrite)
        let url = URL(fileURLWithPath: output)
        let partial = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).partial-\(getpid())").path
        unlink(partial)
        do {
            let report = try write(
                source, to: partial, softwareVersion: softwareVersion, reportedAs: output,
                authorship: (author, affiliation, sample))
            guard rename(partial, output) == 0 else {
                throw OutputPath.failure(output, errno, what: "cannot move the finished import into place")
            }
            return report
        } catch {
            unlink(partial)
            throw error
        }
    }

    static func write(
        _ source: TimeTagFile, to path: String, softwareVersion: String, reportedAs output: String,
        authorship: (author: String?, affiliation: String?, sample: String?) = (nil, nil, nil)
    ) throws -> ImportReport {
        let file = try H5File.create(path, overwrite: true)
        defer { file.close() }
        let created = source.header?["File_CreatingTime"]?.date ?? Date()
        try PhotonHDF5.writeHeader(
            file, description: "Imported by Herald from \(URL(fileURLWithPath: source.path).lastPathComponent) "
                + "(\(source.container.rawValue)\(source.format.map { ", " + $0.name + " " + $0.mode.rawValue } ?? ""))",
            softwareVersion: softwareVersion, createdAt: Date(), filename: output)
        let photons = try file.group("photon_data")
        try PhotonHDF5.title(photons)
        let chunk = 65_536
        let timestamps = try photons.appendable("timestamps", of: Int64.self, chunk: chunk)
        let detectors = try photons.appendable("detectors", of: UInt8.self, chunk: chunk)
        let nanotimes = source.mode == .t3 ? try photons.appendable("nanotimes", of: UInt16.self, chunk: chunk) : nil
        try PhotonHDF5.title(timestamps)
        try PhotonHDF5.title(detectors)
        if let nanotimes { try PhotonHDF5.title(nanotimes) }
        var counts = [Int64](repeating: 0, count: 256)
        var first: Int64?, last: Int64?
        var total = 0
        try source.decode { e in
            try timestamps.append(e.times)
            try detectors.append(e.channels)
            try nanotimes?.append(e.dtimes)
            for c in e.channels { counts[Int(c)] += 1 }
            if first == nil { first = e.times.first }
            if let l = e.times.last { last = l }
            total += e.times.count
        }
        try timestamps.writeTail()
        try detectors.writeTail()
        try nanotimes?.writeTail()
        let specs = try photons.group("timestamps_specs")
        try PhotonHDF5.title(specs)
        try PhotonHDF5.title(try specs.write("timestamps_unit", scalar: source.timeUnitPs * 1e-12))
        if let micro = source.microtimeUnitPs {
            let n = try photons.group("nanotimes_specs")
            try PhotonHDF5.title(n)
            let bins = Int64(1) << (source.format?.recordType == 0x0001_0303 ? 12 : 15)
            try PhotonHDF5.title(try n.write("tcspc_unit", scalar: micro * 1e-12))
            try PhotonHDF5.title(try n.write("tcspc_num_bins", scalar: bins))
            try PhotonHDF5.title(try n.write("tcspc_range", scalar: Double(bins) * micro * 1e-12))
        }
        // The header's acquisition time (ms) when present, else the span of the photons.
        let span = first.flatMap { f in last.map { Double($0 - f) * source.timeUnitPs * 1e-12 } } ?? 0
        let duration = source.recordedDuration ?? span
        try file.dataset("acquisition_duration").overwrite([duration])
        var perDetector: [UInt8: Int64] = [:]
        for (c, n) in counts.enumerated() where n > 0 { perDetector[UInt8(c)] = n }
        // In T3 the time unit is the sync period: the pulsed source's rate.
        try PhotonHDF5.writeSetup(
            file, detectorCounts: perDetector, lifetime: source.mode == .t3,
            repetitionRate: source.mode == .t3 && source.timeUnitPs > 0 ? 1e12 / source.timeUnitPs : nil)
        try writeProvenance(file, source, created: created)
        try PhotonHDF5.writeAuthorship(file, author: authorship.author, affiliation: authorship.affiliation, sample: authorship.sample)
        if let header = source.header { try writeHeaderTags(file, header) }
        return ImportReport(
            output: output, source: source.path, container: source.container.rawValue,
            format: source.format.map { "\($0.name) \($0.mode.rawValue)" } ?? "Swabian", photons: total,
            detectors: Dictionary(uniqueKeysWithValues: perDetector.map { (Int($0), Int($1)) }), acquisitionDurationS: duration)
    }

    static func writeProvenance(_ file: H5File, _ source: TimeTagFile, created: Date) throws {
        let provenance = try file.group("provenance")
        try PhotonHDF5.title(provenance)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        let url = URL(fileURLWithPath: source.path)
        var fields = [
            ("filename", url.lastPathComponent), ("filename_full", url.standardizedFileURL.path),
            ("creation_time", formatter.string(from: created)),
        ]
        if case .ansiString(let name)? = source.header?["CreatorSW_Name"] { fields.append(("software", name)) }
        if case .ansiString(let version)? = source.header?["CreatorSW_Version"] { fields.append(("software_version", version)) }
        for (name, value) in fields { try PhotonHDF5.title(try provenance.write(name, fixedString: value)) }
    }

    /// Every header tag as a dataset named after it (array tags as NAME[index]), so nothing
    /// of the original header is lost.
    static func writeHeaderTags(_ file: H5File, _ header: PTUHeader) throws {
        let group = try file.group("user").group("picoquant").group("header")
        for tag in header.tags where tag.name != "Header_End" {
            // HDF5 cannot name a dataset "", "." or with "/"; such a tag (only seen in damaged
            // files) keeps its value under a name that says where it was.
            let base = tag.name.isEmpty || tag.name == "." || tag.name == ".." ? "unnamed_tag_at_byte_\(tag.offset)" : tag.name
            let name = (tag.index >= 0 ? "\(base)[\(tag.index)]" : base).replacingOccurrences(of: "/", with: "_")
            guard !group.contains(name) else { continue }
            switch tag.value {
            case .int(let v): _ = try group.write(name, scalar: v)
            case .bool(let b): _ = try group.write(name, scalar: Int64(b ? 1 : 0))
            case .bitSet(let v), .color(let v): _ = try group.write(name, scalar: v)
            case .float(let v): _ = try group.write(name, scalar: v)
            case .dateTime(let v):
                _ = try group.write(name, fixedString: tag.value.text)
                _ = try group.write(name + "_days", scalar: v)
            case .floatArray(let a): _ = try group.write(name, a)
            case .ansiString(let s), .wideString(let s): _ = try group.write(name, fixedString: s.isEmpty ? " " : s)
            case .empty, .binaryBlob: continue
            }
        }
    }
}
