import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldRunReader
import HeraldTTTR

struct CalibrateClocks: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate-clocks",
        abstract: "Find how a tagger's clock maps to a reference tagger's: from two recordings made at the same time, or a run with several taggers.",
        discussion: """
            From photons both taggers saw (the cross-correlation's peak, coarse to fine), or with --pps from \
            PPS or sync marks recorded on a channel of each. Prints the offset and drift with their 1σ errors, \
            the residual and χ²/dof, and with --out writes them as YAML, a clocks file a script's \
            clocks.taggers.<name>.model reads (docs/clocks.md). Recordings: PicoQuant or Swabian time-tag \
            files, or Herald run files (.h5). Given one Herald run file recorded with several taggers \
            (clocks:), each other tagger is calibrated against the run's reference, from the raw tags of both.
            """)

    @Argument(help: "The reference tagger's recording, or a run file with several taggers.") var reference: String
    @Argument(help: "The other tagger's recording (none for a run file with several taggers).") var other: String?
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
    static func times(_ path: String, channels: [Int], tagger: String? = nil) throws -> [Int64] {
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
            let stream = try RunTagStream(path: path, tagger: tagger)
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
        ExitStatusCode.watchReads(of: other.map { "\(reference), \($0)" } ?? reference)
        try mappingErrors {
            var pairs: [(referenceName: String, name: String, ref: [Int64], loc: [Int64])] = []
            let refChannels = pps.map { [$0] } ?? referenceChannels, otherChannels = pps.map { [$0] } ?? channels
            if let other {
                pairs.append((
                    URL(fileURLWithPath: reference).lastPathComponent, URL(fileURLWithPath: other).lastPathComponent,
                    try Self.times(reference, channels: refChannels), try Self.times(other, channels: otherChannels)
                ))
            } else {
                guard reference.hasSuffix(".h5"), let taggers = try RunTagStream.taggers(path: reference) else {
                    throw ValidationError(
                        "\(reference) is not a run with several taggers: give two recordings (the reference's, then the other tagger's)")
                }
                let ref = try Self.times(reference, channels: refChannels)
                for name in taggers.others {
                    pairs.append((taggers.reference, name, ref, try Self.times(reference, channels: otherChannels, tagger: name)))
                }
            }
            var models: [ClockModel] = []
            for (referenceName, name, ref, loc) in pairs {
                models.append(try calibrate(referenceName: referenceName, name: name, ref: ref, loc: loc))
            }
            let yaml = Self.yaml(models)
            if let out { try Data(yaml.utf8).write(to: URL(fileURLWithPath: out)) }
            if json {
                let encoder = JSONEncoder()
                encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
                // One model (two recordings) prints as one object, as before; a run's several as a list.
                if models.count == 1, let m = models.first {
                    print(String(decoding: try encoder.encode(m), as: UTF8.self))
                } else {
                    print(String(decoding: try encoder.encode(models), as: UTF8.self))
                }
            } else {
                for model in models { print(Self.text(model)) }
            }
        }
    }

    func calibrate(referenceName: String, name: String, ref: [Int64], loc: [Int64]) throws -> ClockModel {
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
            return model
    }

    static func text(_ model: ClockModel) -> String {
        """
        clock of \(model.tagger) against \(model.reference) (\(model.source), \(model.samples) \(model.source == "pps" ? "marks" : "pairs")):
          offset at \(model.epochPs) ps: \(String(format: "%.1f", model.offsetPs)) ± \(String(format: "%.1f", model.offsetErrorPs)) ps
          drift: \(String(format: "%.6f", model.drift * 1e6)) ± \(String(format: "%.6f", model.driftError * 1e6)) ppm
          residual RMS: \(String(format: "%.1f", model.residualRmsPs)) ps, χ²/dof \(String(format: "%.2f", model.reducedChiSquare))
          method: \(model.method)
        """
    }

    /// The models as YAML: a clocks file, which a script's `clocks.taggers.<name>.model` reads.
    /// Errors that could not be estimated (infinite) are left out.
    static func yaml(_ models: [ClockModel]) -> String {
        var out = "# herald calibrate-clocks: local time → reference time, t_ref = t_local − (offset + drift · (t_local − epoch))\nclocks:\n"
        for m in models {
            out += "  \(m.tagger.debugDescription):\n"
            out += "    reference: \(m.reference.debugDescription)\n"
            out += "    offset_ps: \(m.offsetPs)\n"
            if m.offsetErrorPs.isFinite { out += "    offset_error_ps: \(m.offsetErrorPs)\n" }
            out += "    drift: \(m.drift)\n"
            if m.driftError.isFinite { out += "    drift_error: \(m.driftError)\n" }
            out += "    epoch_ps: \(m.epochPs)\n"
            out += "    source: \(m.source)\n"
            out += "    method: \(m.method.debugDescription)\n"
            out += "    residual_rms_ps: \(m.residualRmsPs)\n"
            if m.reducedChiSquare.isFinite { out += "    reduced_chi_square: \(m.reducedChiSquare)\n" }
            out += "    samples: \(m.samples)\n"
        }
        return out
    }
}
