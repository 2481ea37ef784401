import ArgumentParser
import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldRunReader
import HeraldTTTR

/// Where a command's tags come from: a Herald run file's stored tags, or a time-tag file
/// (PicoQuant PTU/HT3/T3R, Swabian dump), read block by block in constant memory.
struct TagSource {
    let path: String

    /// Hands every block of tags, in time order, to `body`.
    func forEachBlock(_ body: (TagBlock) throws -> Void) throws {
        let ext = (path as NSString).pathExtension.lowercased()
        if ext == "h5" || ext == "hdf5" {
            let stream = try RunTagStream(path: path)
            while let block = try stream.next() { try body(block) }
        } else {
            let file = try TimeTagFile.open(path)
            try file.decode { events in try body(file.tagBlock(events)) }
        }
    }
}

/// The histogram of Δ = (t_b + d_b) − (t_a + d_a) over a file's tags, counted by the same
/// `CoincidenceStream` a run counts with.
func correlationHistogram(_ source: TagSource, pair: ChannelPair, rangePs: Int64, binPs: Int64, delaysPs: [Int: Int64] = [:]) throws
    -> (CorrelationHistogram, singles: [Int: Int])
{
    let spec = CorrelationSpec(pair: pair, binWidthPs: binPs, rangePs: rangePs)
    var stream = try CoincidenceStream(
        CoincidenceConfiguration(windowPs: binPs, delaysPs: delaysPs, correlations: [spec], reorderBoundPs: 0))
    try source.forEachBlock { try stream.ingest($0) }
    let result = stream.finish()
    guard let histogram = result.histograms.first else { throw ValidationError("no histogram was counted") }
    return (histogram, result.singles)
}

func parseDelays(_ items: [String]) throws -> [Int: Int64] {
    var out: [Int: Int64] = [:]
    for item in items {
        let parts = item.split(separator: "=", maxSplits: 1)
        guard parts.count == 2, let channel = Int(parts[0]), (0...255).contains(channel) else {
            throw ValidationError("--delay expects CHANNEL=TIME with a channel 0–255, e.g. 3=1.2ns, got '\(item)'")
        }
        let seconds = try parseTime(String(parts[1]), option: "--delay")
        guard abs(seconds) < 1 else { throw ValidationError("--delay must be shorter than 1 s, got '\(item)'") }
        out[channel] = Int64(clampingRounded: seconds * 1e12)
    }
    return out
}

struct Correlate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The cross-correlation (or, for a channel with itself, the autocorrelation) histogram of a file's tags.",
        discussion: """
            Δ = (t_b + d_b) − (t_a + d_a) for every pair of tags on channels a and b, binned over [−range, +range). \
            Reads a Herald run (.h5) or a time-tag file (.ptu, .ht3, .t3r, .dump), in constant memory. \
            With a peak 5σ above the background, also prints its position, width and the delay that centres it.
            """)

    @Argument(help: "A Herald run file or a time-tag file.") var file: String
    @Option(help: "The two channels, A,B (the histogram is of t_B − t_A).") var pair: String
    @Option(help: "Half-width of the histogram, e.g. 100ns.") var range: String = "100ns"
    @Option(help: "Bin width, e.g. 100ps.") var bin: String = "100ps"
    @Option(help: "Channel delay applied first, CHANNEL=TIME (repeatable).") var delay: [String] = []
    @Flag(help: "Print JSON.") var json = false

    struct Output: Encodable {
        var file: String
        var pair: [Int]
        var binPs: Int64
        var rangePs: Int64
        /// Left edges of the bins, in ps.
        var lowerEdgesPs: [Int64]
        var counts: [Int64]
        var singles: [String: Int]
        var peak: Peak?

        struct Peak: Encodable {
            var positionPs: Double
            var positionErrorPs: Double
            var widthPs: Double
            var significance: Double
            var correctionPs: Int64
        }
    }

    func run() throws {
        let channels = pair.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard channels.count == 2, channels.allSatisfy({ (0...255).contains($0) }) else {
            throw ValidationError("--pair expects two channels A,B, e.g. 1,3; got '\(pair)'")
        }
        let rangeS = try parseTime(range, option: "--range"), binS = try parseTime(bin, option: "--bin")
        let rangePs = Int64(clampingRounded: rangeS * 1e12), binPs = Int64(clampingRounded: binS * 1e12)
        guard binPs >= 1, rangePs >= binPs, rangePs / binPs <= 1_000_000 else {
            throw ValidationError("--bin must be at least 1 ps and --range at least one bin, with at most a million bins each side")
        }
        let (h, singles) = try correlationHistogram(
            TagSource(path: file), pair: ChannelPair(channels[0], channels[1]), rangePs: rangePs, binPs: binPs, delaysPs: parseDelays(delay))
        let peak = (try? h.delayEstimate()).map {
            Output.Peak(positionPs: $0.peakPs, positionErrorPs: $0.peakErrorPs, widthPs: $0.widthPs, significance: $0.significance, correctionPs: $0.correctionPs)
        }
        let out = Output(
            file: file, pair: channels, binPs: binPs, rangePs: rangePs, lowerEdgesPs: h.counts.indices.map { h.lowerEdgePs($0) }, counts: h.counts,
            singles: Dictionary(uniqueKeysWithValues: singles.map { (String($0.key), $0.value) }), peak: peak)
        if json { return try printJSON(out) }
        print("\(file): t\(channels[1]) − t\(channels[0]), \(h.counts.count) bins of \(Display.quantity(Double(binPs) * 1e-12, unit: "s")), total \(h.counts.reduce(0, +))")
        if let p = peak {
            print(String(format: "peak at %.1f ± %.1f ps (RMS width %.1f ps, %.0fσ): delay channel %d by %lld ps to centre it", p.positionPs, p.positionErrorPs, p.widthPs, p.significance, channels[1], p.correctionPs))
        } else {
            print("no peak 5σ above the background")
        }
        for (i, c) in h.counts.enumerated() where c > 0 { print("\(h.lowerEdgePs(i))\t\(c)") }
    }
}

struct CalibrateDelays: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "calibrate-delays",
        abstract: "Find each channel's delay against a reference channel from the correlation peaks, and write them as a file scripts include.",
        discussion: """
            For every channel with tags, the histogram of its tags against the reference's: its peak (5σ above the \
            background, or the channel is reported and left out) gives the delay that centres it at zero. The output \
            (`--out delays.yaml`) holds `delays: {CHANNEL: TIME}`; a script that includes it counts with those delays \
            wherever an analysis gives none of its own.
            """)

    @Argument(help: "A Herald run file or a time-tag file.") var file: String
    @Option(help: "The channel the others are delayed against.") var reference: Int = 1
    @Option(help: "Half-width of each histogram, e.g. 50ns.") var range: String = "50ns"
    @Option(help: "Bin width, e.g. 50ps.") var bin: String = "50ps"
    @Option(help: "Write the delays here (YAML a script can include).") var out: String?
    @Flag(help: "Print JSON.") var json = false

    struct Output: Encodable {
        var reference: Int
        var delaysPs: [String: Int64]
        var peaks: [String: Correlate.Output.Peak]
        var noPeak: [String: String]
    }

    func run() throws {
        let rangePs = Int64(clampingRounded: try parseTime(range, option: "--range") * 1e12)
        let binPs = Int64(clampingRounded: try parseTime(bin, option: "--bin") * 1e12)
        guard binPs >= 1, rangePs >= binPs, rangePs / binPs <= 1_000_000 else {
            throw ValidationError("--bin must be at least 1 ps and --range at least one bin, with at most a million bins each side")
        }
        // Which channels have tags: one pass over the file.
        var seen: Set<Int> = []
        try TagSource(path: file).forEachBlock { b in for c in Set(b.channels) { seen.insert(Int(c)) } }
        guard seen.contains(reference) else {
            throw ValidationError("reference channel \(reference) has no tags in \(file); channels with tags: \(seen.sorted().map(String.init).joined(separator: ", "))")
        }
        var output = Output(reference: reference, delaysPs: [String(reference): 0], peaks: [:], noPeak: [:])
        for channel in seen.sorted() where channel != reference {
            let (h, _) = try correlationHistogram(TagSource(path: file), pair: ChannelPair(reference, channel), rangePs: rangePs, binPs: binPs)
            do {
                let e = try h.delayEstimate()
                output.delaysPs[String(channel)] = e.correctionPs
                output.peaks[String(channel)] = Correlate.Output.Peak(
                    positionPs: e.peakPs, positionErrorPs: e.peakErrorPs, widthPs: e.widthPs, significance: e.significance, correctionPs: e.correctionPs)
            } catch {
                output.noPeak[String(channel)] = "\(error)"
            }
        }
        if let out {
            var text = "# Channel delays from `herald calibrate-delays \((file as NSString).lastPathComponent)`, against channel \(reference).\n"
            text += "# Include this file from a script: analyses without delays of their own count with these.\n"
            text += "delays:\n"
            for (c, d) in output.delaysPs.sorted(by: { Int($0.key) ?? 0 < Int($1.key) ?? 0 }) { text += "  \(c): \(d) ps\n" }
            try text.write(toFile: out, atomically: true, encoding: .utf8)
        }
        if json { return try printJSON(output) }
        for (c, d) in output.delaysPs.sorted(by: { Int($0.key) ?? 0 < Int($1.key) ?? 0 }) {
            let p = output.peaks[c].map { String(format: " (peak %.1f ± %.1f ps, %.0fσ)", $0.positionPs, $0.positionErrorPs, $0.significance) } ?? ""
            print("channel \(c): \(d) ps\(p)")
        }
        for (c, why) in output.noPeak.sorted(by: { $0.key < $1.key }) { print("channel \(c): left out: \(why)") }
        if let out { print("written to \(out)") }
    }
}
