import ArgumentParser
import Foundation
import HeraldRunner
import HeraldStore
import HeraldTTTR

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print a time-tag file's header and what its records hold.",
        discussion: """
            Reads PicoQuant unified files (.ptu: PicoHarp, HydraHarp V1/V2, TimeHarp 260, MultiHarp; T2 and T3) and \
            Swabian Time Tagger dumps (.dump, 16 bytes per tag). Decodes every record once, in constant memory, and \
            prints photons per channel, markers, overflows and the first and last photon time.
            """)

    @Argument(help: "The file to read.") var file: String
    @Flag(help: "Read the file as a Swabian dump whatever its extension.") var swabian = false
    @Flag(help: "Print JSON instead of text.") var json = false

    /// Header values as JSON numbers, booleans or strings (dates as ISO 8601 text).
    enum HeaderValue: Encodable {
        case int(Int64), number(Double), bool(Bool), text(String)

        init(_ v: PTUValue) {
            switch v {
            case .int(let i): self = .int(i)
            case .bitSet(let b), .color(let b): self = .int(Int64(bitPattern: b))
            case .float(let f): self = .number(f)
            case .bool(let b): self = .bool(b)
            default: self = .text(v.text)
            }
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.singleValueContainer()
            switch self {
            case .int(let i): try c.encode(i)
            case .number(let d): if d.isFinite { try c.encode(d) } else { try c.encode("\(d)") }
            case .bool(let b): try c.encode(b)
            case .text(let t): try c.encode(t)
            }
        }

        var text: String {
            switch self {
            case .int(let i): return String(i)
            case .number(let d): return "\(d)"
            case .bool(let b): return b ? "true" : "false"
            case .text(let t): return t
            }
        }
    }

    struct Output: Encodable {
        var container: String
        var format: String?
        var recordType: String?
        var mode: String
        var timeUnitPs: Double
        var microtimeUnitPs: Double?
        var header: [String: HeaderValue]
        var statistics: TTTRStatistics
        var warnings: [String]
    }

    func run() throws {
        do {
            let f = try TimeTagFile.open(file, swabian: swabian ? true : nil)
            let stats = try f.statistics()
            var header: [String: HeaderValue] = [:]
            for tag in f.header?.tags ?? [] where tag.name != "Header_End" {
                header[tag.index >= 0 ? "\(tag.name)[\(tag.index)]" : tag.name] = HeaderValue(tag.value)
            }
            let output = Output(
                container: f.container.rawValue, format: f.format?.name,
                recordType: f.format.map { "0x" + String($0.recordType, radix: 16, uppercase: true) }, mode: f.mode.rawValue,
                timeUnitPs: f.timeUnitPs, microtimeUnitPs: f.microtimeUnitPs, header: header, statistics: stats, warnings: f.warnings)
            if json { return try printJSON(output) }
            print("\(file): \(f.container.rawValue)" + (f.format.map { ", \($0.name) \($0.mode.rawValue) (record type \(output.recordType ?? ""))" } ?? ""))
            for (name, value) in header.sorted(by: { $0.key < $1.key }) { print("  \(name) = \(value.text)") }
            print("records: \(stats.records); photons: \(stats.photons); overflow records: \(stats.overflowRecords) (\(stats.overflows) overflows)")
            for (c, n) in stats.photonsPerChannel.sorted(by: { $0.key < $1.key }) { print("  channel \(c): \(n) photons") }
            if stats.syncRecords > 0 { print("sync records: \(stats.syncRecords)") }
            for (m, n) in stats.markers.sorted(by: { $0.key < $1.key }) { print("  marker bits \(m): \(n)") }
            if stats.lostIntervals > 0 || stats.missedEvents > 0 {
                print("lost-data intervals: \(stats.lostIntervals); missed events: \(stats.missedEvents)")
            }
            if let a = stats.firstPhotonPs, let b = stats.lastPhotonPs {
                print("first photon \(a) ps, last \(b) ps: \(String(format: "%.6f", stats.spanSeconds)) s")
            }
            for w in f.warnings { print("warning: \(w)") }
        } catch let e as TTTRFileError {
            throw ExitStatusCode.exit(for: e)
        }
    }
}

struct Import: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Convert a time-tag file to Photon-HDF5.",
        discussion: """
            Writes photon_data (timestamps in the file's own unit, detectors, and nanotimes for T3), setup, \
            acquisition_duration, provenance, and every original header tag under /user/picoquant/header. \
            phconvert's validator accepts the result.
            """)

    @Argument(help: "The file to convert (.ptu or a Swabian .dump).") var file: String
    @Option(help: "The Photon-HDF5 file to write.") var out: String
    @Flag(help: "Replace the output file if it exists.") var overwrite = false
    @Flag(help: "Read the input as a Swabian dump whatever its extension.") var swabian = false
    @Flag(help: "Print the report as JSON.") var json = false
    @Option(
        help: ArgumentHelp(
            "Record operator=NAME, affiliation=NAME or sample=NAME in Photon-HDF5's identity and sample groups (repeatable; each is \"unspecified\" without it).",
            valueName: "key=value"))
    var meta: [String] = []

    /// `--meta` as the three fields an import records; anything else is refused by name.
    func authorship() throws -> (author: String?, affiliation: String?, sample: String?) {
        var out: (author: String?, affiliation: String?, sample: String?) = (nil, nil, nil)
        for item in meta {
            guard let eq = item.firstIndex(of: "="), eq != item.startIndex else {
                throw ValidationError("--meta \(item): write KEY=VALUE, e.g. --meta operator=Ada")
            }
            let key = item[..<eq].lowercased(), value = String(item[item.index(after: eq)...])
            switch key {
            case "operator", "author": out.author = value
            case "affiliation", "author_affiliation": out.affiliation = value
            case "sample", "sample_name": out.sample = value
            default: throw ValidationError("--meta \(key): an import records operator, affiliation and sample")
            }
        }
        return out
    }

    func validate() throws { _ = try authorship() }

    func run() throws {
        do {
            let who = try authorship()
            let source = try TimeTagFile.open(file, swabian: swabian ? true : nil)
            if !overwrite && FileManager.default.fileExists(atPath: out) {
                throw ValidationError("\(out) exists; pass --overwrite to replace it")
            }
            let report = try TimeTagImport.convert(
                source, to: out, softwareVersion: Herald.version, overwrite: overwrite, author: who.author,
                affiliation: who.affiliation, sample: who.sample)
            if json { return try printJSON(report) }
            print("wrote \(report.output): \(report.photons) photons from \(report.format), \(report.acquisitionDurationS) s")
        } catch let e as TTTRFileError {
            throw ExitStatusCode.exit(for: e)
        }
    }
}
