import Foundation
import HeraldCore
import Yams

/// The `clocks:` section: which tagger is the time base of the merged stream, and how each
/// other tagger's clock is followed through the run.
///
/// ```yaml
/// clocks:
///   reference: analyser
///   taggers:
///     remote:
///       channel_offset: 8          # its channel c is c + 8 in the merged stream
///       track: marks               # its sync marks against the reference's
///       sync_channel: 5            # on its channel 5 …
///       reference_sync_channel: 5  # … and the reference's channel 5
///       smoothing: 0               # marks either side in each knot (GPS: more)
///     lab_b:
///       track: model
///       model: lab_b-clock.yaml    # from herald calibrate-clocks --out, fixed
///     lab_c:
///       track: correlation         # calibrated by each calibrate_clocks step from photons
///       reference_channels: [1, 2] # the reference's detectors of the shared photons …
///       channels: [3, 4]           # … and this tagger's (its own numbers)
///       search: 10 us              # the offset is looked for within ±10 µs
///       max_drift: 20 ppm
///     lab_d:
///       track: none                # uncorrected (to see what no tracking costs)
/// ```
extension Context {
    mutating func compileClocks(_ node: Node) -> ClocksSpec? {
        let byKey = fields(node, allowed: ["reference", "taggers"], what: "clocks")
        guard let referenceNode = byKey["reference"], let taggersNode = byKey["taggers"] else {
            error("clocks needs 'reference' (the tagger whose clock is the time base) and 'taggers' (the others)", at: node)
            return nil
        }
        guard let reference = string(referenceNode, what: "clocks.reference"), checkTagger(reference, at: referenceNode) else { return nil }
        var taggers: [ClocksSpec.Tagger] = []
        var ok = true
        let entries = entries(taggersNode, allowed: nil, what: "clocks.taggers")
        if entries.isEmpty {
            error("clocks.taggers names no tagger: list the taggers whose clocks follow '\(reference)'", at: taggersNode)
            return nil
        }
        for (position, entry) in entries.enumerated() {
            guard checkTagger(entry.key, at: entry.keyNode) else {
                ok = false
                continue
            }
            if entry.key == reference {
                error("'\(reference)' is the reference; clocks.taggers lists the other taggers", at: entry.keyNode)
                ok = false
                continue
            }
            let what = "clocks.taggers.\(entry.key)"
            let f = fields(
                entry.value,
                allowed: [
                    "channel_offset", "track", "sync_channel", "reference_sync_channel", "smoothing", "model", "reference_channels", "channels",
                    "search", "max_drift",
                ],
                what: what)
            let offset = f["channel_offset"].map { integer($0, what: "\(what).channel_offset", range: 0...247) } ?? 8 * (position + 1)
            let trackText = f["track"].flatMap { string($0, what: "\(what).track") } ?? (f["model"] != nil ? "model" : "marks")
            var tracking: ClocksSpec.Tracking?
            switch trackText {
            case "marks":
                guard let channelNode = f["sync_channel"] else {
                    error("\(what): track: marks needs sync_channel, the channel of its sync marks (PPS, White Rabbit)", at: entry.value)
                    ok = false
                    continue
                }
                let channel = integer(channelNode, what: "\(what).sync_channel", range: 1...255)
                let referenceChannel = f["reference_sync_channel"].map { integer($0, what: "\(what).reference_sync_channel", range: 1...255) } ?? channel
                let smoothing = f["smoothing"].map { integer($0, what: "\(what).smoothing", range: 0...100) } ?? 0
                if let channel, let referenceChannel, let smoothing {
                    tracking = .marks(channel: channel, referenceChannel: referenceChannel, smoothing: smoothing)
                }
            case "model":
                guard let modelNode = f["model"] else {
                    error("\(what): track: model needs model, a clocks file written by herald calibrate-clocks --out", at: entry.value)
                    ok = false
                    continue
                }
                tracking = clockModel(modelNode, tagger: entry.key, reference: reference, what: what)
            case "correlation":
                let referenceChannels = channelList(f["reference_channels"], what: "\(what).reference_channels", in: entry.value)
                let channels = channelList(f["channels"], what: "\(what).channels", in: entry.value)
                let range = f["search"].map { quantity($0, .time, what: "\(what).search") } ?? Quantity(10e-6, .time)
                let drift = f["max_drift"].map { quantity($0, .dimensionless, what: "\(what).max_drift") } ?? Quantity(20e-6, .dimensionless)
                if let r = range, !(1e-9...1e-3).contains(r.value) { error("\(what).search must be within 1 ns … 1 ms", at: f["search"] ?? entry.value) }
                if let d = drift, !(1e-9...1e-3).contains(d.value) { error("\(what).max_drift must be within 1 ppb … 1000 ppm", at: f["max_drift"] ?? entry.value) }
                if let referenceChannels, let channels, let range, let drift {
                    tracking = .correlation(
                        referenceChannels: referenceChannels, channels: channels, rangePs: Int64((range.value * 1e12).rounded()), maxDrift: drift.value)
                }
            case "none":
                tracking = ClocksSpec.Tracking.none
            default:
                error("\(what).track '\(trackText)' is not one of: marks, model, correlation, none", at: f["track"] ?? entry.value)
            }
            guard let tracking, let offset else {
                ok = false
                continue
            }
            taggers.append(ClocksSpec.Tagger(name: entry.key, channelOffset: offset, tracking: tracking))
        }
        // Each tagger's channels land in a range of their own in the merged stream.
        var seen: [Int: String] = [:]
        for t in taggers {
            if t.channelOffset == 0 {
                error("clocks.taggers.\(t.name).channel_offset 0 puts its channels on the reference's", at: taggersNode)
                ok = false
            } else if let other = seen[t.channelOffset] {
                error("clocks.taggers.\(t.name) and \(other) have the same channel_offset \(t.channelOffset): their channels would be one", at: taggersNode)
                ok = false
            }
            seen[t.channelOffset] = t.name
        }
        return ok ? ClocksSpec(reference: reference, taggers: taggers) : nil
    }

    /// A required list of channels, e.g. `[1, 2]`.
    private mutating func channelList(_ node: Node?, what: String, in parent: Node) -> [Int]? {
        guard let node else {
            error("\(what) is needed: the channels of the photons both taggers see, e.g. [1, 2]", at: parent)
            return nil
        }
        guard let items = node.sequence.map(Array.init), !items.isEmpty else {
            error("\(what) must be a list of channels, e.g. [1, 2]", at: node)
            return nil
        }
        let channels = items.compactMap { integer($0, what: "channel", range: 1...255) }
        return channels.count == items.count ? channels : nil
    }

    /// `calibrate_clocks: {duration: 5 s}`: every tagger of `clocks:` acquires together, and the
    /// `track: correlation` clocks are calibrated from the photons (a data set of its own,
    /// `name`, so the file and a recount have it).
    mutating func compileClockCalibration(_ node: Node, keyNode: Node) -> [PlanStep] {
        var durationNode: Node? = node
        var nameNode: Node?
        if node.mapping != nil {
            let f = fields(node, allowed: ["duration", "name"], what: "calibrate_clocks")
            durationNode = f["duration"]
            nameNode = f["name"]
            if durationNode == nil { error("calibrate_clocks needs 'duration', how long every tagger acquires for it", at: node) }
        }
        guard let clocks else {
            if !hasClocksSection { error("calibrate_clocks needs a 'clocks:' section saying which taggers it calibrates", at: keyNode) }
            return []
        }
        guard clocks.taggers.contains(where: { if case .correlation = $0.tracking { return true } else { return false } }) else {
            error("calibrate_clocks calibrates the clocks with track: correlation, and clocks: has none", at: keyNode)
            return []
        }
        guard let d = duration(durationNode, what: "calibrate_clocks.duration", allowZero: false) else { return [] }
        var name = nameNode.flatMap { string($0, what: "calibrate_clocks.name") } ?? "clock_calibration"
        if nameNode == nil {
            var k = 2
            while datasets[name] != nil { name = "clock_calibration_\(k)"; k += 1 }
        }
        defineDataset(name, .single, at: nameNode ?? keyNode)
        self.clocks?.calibrations.append(name)
        return [.acquire(devices: clocks.members, duration: d, name: name, location: location(keyNode))]
    }

    private mutating func checkTagger(_ name: String, at node: Node) -> Bool {
        guard let descriptor = devices[name] else {
            error("unknown device '\(name)'; declared devices: \(devices.keys.sorted().joined(separator: ", "))", at: node)
            return false
        }
        guard descriptor.kind == .timeTagger else {
            error("'\(name)' is a \(descriptor.kind.rawValue); clocks are time-taggers'", at: node)
            return false
        }
        return true
    }

    /// A model from a clocks file (`herald calibrate-clocks --out`), beside the script, read
    /// now and kept with the run's included files.
    private mutating func clockModel(_ node: Node, tagger: String, reference: String, what: String) -> ClocksSpec.Tracking? {
        guard let relative = string(node, what: "\(what).model") else { return nil }
        let dir = (file as NSString).deletingLastPathComponent
        let path = relative.hasPrefix("/") || dir.isEmpty ? relative : dir + "/" + relative
        guard let real = Self.resolved(path) else {
            error("cannot read the clocks file '\(path)': no such file (write one with herald calibrate-clocks --out)", at: node)
            return nil
        }
        guard includeRoots.contains(where: { real == $0 || real.hasPrefix($0 == "/" ? "/" : $0 + "/") }) else {
            error("clocks file '\(relative)' is outside the script's folder (\(includeRoots.first ?? ".")); see --include-dir", at: node)
            return nil
        }
        guard let text = try? String(contentsOfFile: real, encoding: .utf8) else {
            error("cannot read the clocks file '\(path)'", at: node)
            return nil
        }
        includedFiles.append(IncludedFile(path: path, resolvedPath: real, text: text))
        guard let root = parse(text: text, file: path) else { return nil }
        let saved = file
        file = path
        defer { file = saved }
        let top = fields(root, allowed: ["clocks"], what: "a clocks file")
        guard let clocks = top["clocks"] else {
            error("a clocks file holds 'clocks:', one entry per tagger (herald calibrate-clocks --out)", at: root)
            return nil
        }
        guard let entry = entries(clocks, allowed: nil, what: "clocks").first(where: { $0.key == tagger }) else {
            error("the clocks file has no model for '\(tagger)'", at: clocks)
            return nil
        }
        let f = fields(
            entry.value,
            allowed: [
                "reference", "offset_ps", "offset_error_ps", "drift", "drift_error", "epoch_ps", "source", "method", "residual_rms_ps",
                "reduced_chi_square", "samples",
            ], what: "clocks.\(tagger)")
        func number(_ key: String, required: Bool = true) -> Double? {
            guard let n = f[key] else {
                if required { error("clocks.\(tagger) needs \(key)", at: entry.value) }
                return nil
            }
            guard let text = n.scalar?.string, let v = Double(text), v.isFinite else {
                error("clocks.\(tagger).\(key) must be a finite number", at: n)
                return nil
            }
            return v
        }
        let modelReference = f["reference"].flatMap { string($0, what: "clocks.\(tagger).reference") }
        if let modelReference, modelReference != reference {
            error("this model maps '\(tagger)' to '\(modelReference)', but the script's clocks.reference is '\(reference)'", at: f["reference"] ?? entry.value)
            return nil
        }
        guard let offset = number("offset_ps"), let drift = number("drift"), let epoch = number("epoch_ps") else { return nil }
        guard abs(drift) < 1e-2, abs(epoch) < 0x1p62, abs(offset) < 0x1p50 else {
            error("clocks.\(tagger): offset, drift or epoch out of any tagger's range", at: entry.value)
            return nil
        }
        let model = ClockModel(
            tagger: tagger, reference: reference, offsetPs: offset, drift: drift, epochPs: Int64(epoch),
            offsetErrorPs: number("offset_error_ps", required: false) ?? 0, driftError: number("drift_error", required: false) ?? 0,
            source: f["source"]?.scalar?.string ?? "given", method: (f["method"]?.scalar?.string ?? "") + " (from \(relative))",
            residualRmsPs: number("residual_rms_ps", required: false) ?? 0, reducedChiSquare: number("reduced_chi_square", required: false) ?? 1,
            samples: Int(min(max(number("samples", required: false) ?? 0, 0), 1e15)))
        return .model(model, file: relative)
    }
}
