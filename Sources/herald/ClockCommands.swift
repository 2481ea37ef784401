import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldRunReader
import HeraldTTTR

struct CalibrateClocks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate-clocks",
        abstract: "Find how a second tagger's clock maps to a reference tagger's, from two recordings made at the same time.",
        discussion: """
            From photons both taggers saw (the cross-correlation's peak, coarse to fine), or with --pps from \
            PPS or sync marks recorded on a channel of each. Prints the offset and drift with their 1σ errors, \
            the residual and χ²/dof, and with --out writes them as YAML (docs/clocks.md). Recordings: PicoQuant \
            or Swabian time-tag files, or Herald run files (.h5).
            """)

    @Argument(help: "The reference tagger's recording.") var reference: String
    @Argument(help: "The other tagger's recording.") var other: String
    @Option(name: .long, parsing: .upToNextOption, help: "The reference's channels to use (all when not given).") var referenceChannels: [Int] = []
    @Option(name: .long, parsing: .upToNextOption, help: "The other recording's channels to use (all when not given).") var channels: [Int] = []
    @Option(name: .long, help: "Calibrate from marks on this channel of both recordings instead of from photons.") var pps: Int?
    @Option(name: .long, help: "The offset is looked for within ± this many microseconds.") var searchUs: Double = 10
    @Option(name: .long, help: "The largest drift allowed, in ppm.") var maxDriftPpm: Double = 20
    @Option(name: .long, help: "Write the clock model as YAML here.") var out: String?
    @Flag(help: "Print JSON instead of text.") var json = false

    /// At most this many tags a recording (3.2 GB of times): a calibration needs far fewer, and
    /// a larger file must not exhaust the memory.
    static let tagLimit = 400_000_000

    /// A recording's tags in time order, on the channels asked for.
    static func times(_ path: String, channels: [Int]) throws -> [Int64] {
        let wanted = Set(channels)
        func keep(_ block: TagBlock, into times: inout [Int64]) throws {
            if wanted.isEmpty {
                times += block.timestamps
            } else {
                for (t, c) in zip(block.timestamps, block.channels) where wanted.contains(Int(c)) { times.append(t) }
            }
            guard times.count <= tagLimit else {
                throw ValidationError("\(path) holds more than \(tagLimit) tags on the channels asked for: select fewer channels (--channels) or a shorter recording")
            }
        }
        var times: [Int64] = []
        if path.hasSuffix(".h5") {
            let stream = try RunTagStream(path: path)
            while let block = try stream.next(maxTags: 1 << 20) { try keep(block, into: &times) }
        } else {
            let file = try TimeTagFile.open(path)
            try file.decode { events in try keep(file.tagBlock(events, markers: true), into: &times) }
        }
        // A tagger's stream is in time order; a file merged from several may not be.
        times.sort()
        return times
    }

    func run() throws {
        try mappingErrors {
            let ref = try Self.times(reference, channels: pps.map { [$0] } ?? referenceChannels)
            let loc = try Self.times(other, channels: pps.map { [$0] } ?? channels)
            let referenceName = URL(fileURLWithPath: reference).lastPathComponent, name = URL(fileURLWithPath: other).lastPathComponent
            let model: ClockModel
            if let pps {
                model = try ClockCalibration.fromMarks(
                    reference: ref, local: loc, tagger: name, referenceName: referenceName, referenceChannel: pps, channel: pps,
                    maxDrift: maxDriftPpm * 1e-6)
            } else {
                var search = ClockCalibration.Search()
                guard searchUs > 0, searchUs <= 1000, maxDriftPpm > 0, maxDriftPpm <= 1000 else {
                    throw ValidationError("--search-us must be in (0, 1000] and --max-drift-ppm in (0, 1000]")
                }
                search.rangePs = Int64(searchUs * 1e6)
                search.maxDrift = maxDriftPpm * 1e-6
                model = try ClockCalibration.fromCorrelation(reference: ref, local: loc, tagger: name, referenceName: referenceName, search: search)
            }
            let yaml = Self.yaml(model)
            if let out { try Data(yaml.utf8).write(to: URL(fileURLWithPath: out)) }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                print(String(decoding: try encoder.encode(model), as: UTF8.self))
            } else {
                print(
                    """
                    clock of \(name) against \(referenceName) (\(model.source), \(model.samples) \(model.source == "pps" ? "marks" : "pairs")):
                      offset at \(model.epochPs) ps: \(String(format: "%.1f", model.offsetPs)) ± \(String(format: "%.1f", model.offsetErrorPs)) ps
                      drift: \(String(format: "%.6f", model.drift * 1e6)) ± \(String(format: "%.6f", model.driftError * 1e6)) ppm
                      residual RMS: \(String(format: "%.1f", model.residualRmsPs)) ps, χ²/dof \(String(format: "%.2f", model.reducedChiSquare))
                      method: \(model.method)
                    """)
            }
        }
    }

    /// The model as YAML, for the record beside the run (a script cannot include it yet).
    static func yaml(_ m: ClockModel) -> String {
        """
        # herald calibrate-clocks: local time → reference time, t_ref = t_local − (offset + drift · (t_local − epoch))
        clocks:
          \(m.tagger.debugDescription):
            reference: \(m.reference.debugDescription)
            offset_ps: \(m.offsetPs)
            offset_error_ps: \(m.offsetErrorPs)
            drift: \(m.drift)
            drift_error: \(m.driftError)
            epoch_ps: \(m.epochPs)
            source: \(m.source)
            method: \(m.method.debugDescription)
            residual_rms_ps: \(m.residualRmsPs)
            reduced_chi_square: \(m.reducedChiSquare)
            samples: \(m.samples)

        """
    }
}
