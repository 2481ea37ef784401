import Foundation
import HeraldCore
import Yams

// Analysis steps: which data set each reads, its channels, window and delays, and which analyses a run cannot compute.
extension Context {
    mutating func arms(_ node: Node?, at parent: Node, needReflect: Bool) -> (ArmChannels, ArmChannels)? {
        guard let node else {
            error("this analysis needs 'arms' (detector channels of arms a and b)", at: parent)
            return nil
        }
        var arms: [String: ArmChannels] = [:]
        for arm in entries(node, allowed: ["a", "b"], what: "arms") {
            let ports = fields(arm.value, allowed: ["pass", "reflect"], what: "arm \(arm.key)")
            let pass = integer(ports["pass"], what: "channel", range: 1...255)
            let reflect = integer(ports["reflect"], what: "channel", range: 1...255)
            guard let pass else {
                if ports["pass"] == nil { error("arm \(arm.key) needs the 'pass' channel (detector behind the transmitted port)", at: arm.value) }
                continue
            }
            if needReflect && reflect == nil {
                error("arm \(arm.key) needs the 'reflect' channel too: this analysis uses both PBS ports", at: arm.value)
                continue
            }
            arms[arm.key] = ArmChannels(pass: pass, reflect: reflect)
        }
        guard let a = arms["a"], let b = arms["b"] else {
            if arms.count == entries(node, allowed: nil, what: "arms").count { error("arms needs 'a' and 'b'", at: node) }
            return nil
        }
        return (a, b)
    }

    /// Per-channel delays in integer picoseconds, like the tags.
    /// An analysis's `delays:`, or those of an included delays file (`herald calibrate-delays`).
    mutating func delays(_ node: Node?) -> [Int: Int64] {
        guard let node else { return includedDelays }
        var out: [Int: Int64] = [:]
        for d in entries(node, allowed: nil, what: "delays") {
            guard let ch = Int(d.key), (1...255).contains(ch) else {
                error("delays are keyed by channel number (1–255)", at: d.keyNode)
                continue
            }
            guard let q = quantity(d.value, .time, what: "delay of channel \(ch)") else { continue }
            guard abs(q.value) < 1 else {
                error("a channel delay must be shorter than 1 s, got \(q)", at: d.value)
                continue
            }
            out[ch] = Int64(clampingRounded: q.value * 1e12)
        }
        return out
    }

    mutating func dataset(_ node: Node?, expect kinds: [DatasetKind], what: String, at parent: Node) -> String? {
        guard let node else {
            error("\(what) needs 'sweep' (the sweep or named acquisition it analyses)", at: parent)
            return nil
        }
        guard let name = string(node, what: "\(what).sweep") else { return nil }
        guard let kind = datasets[name] else {
            // A sweep already refused for its own error: saying it is missing too is noise.
            if failedDatasets.contains(name) { return nil }
            let known = datasets.keys.sorted()
            error("no sweep or named acquisition '\(name)' before this step" + (known.isEmpty ? "" : "; defined: \(known.joined(separator: ", "))"), at: node)
            return nil
        }
        guard kinds.contains(kind) else {
            let need: String
            switch kinds.first {
            case .tomography: need = "a tomography sweep (basis: tomography-16/36/9)"
            case .chsh: need = "a CHSH sweep (basis: chsh)"
            default: need = "a sweep or named acquisition"
            }
            error("\(what) needs \(need); '\(name)' is not one", at: node)
            return nil
        }
        // Analyses a run cannot compute are refused here, never left empty or pooled.
        if openSweeps.contains(name) {
            error(
                "'\(name)' is still running at this step, which is inside its own sweep; put the \(what) step after the sweep",
                at: node)
            return nil
        }
        if let depth = datasetDepth[name], depth > 1 {
            error(
                "'\(name)' runs inside \(depth) nested sweeps; an analysis is computed per point of the one sweep around its "
                    + "data set, so nest it at most one sweep deep", at: node)
            return nil
        }
        return name
    }

    /// One data set is counted once: every analysis of it must use the same window and delays.
    /// Channels an analysis counts that its data set's tagger does not have (one tagger, no
    /// clocks: merged streams renumber the other taggers' channels).
    mutating func checkChannels(_ channels: Set<Int>, of dataset: String, at node: Node) {
        guard clocks == nil, let taggers = datasetTaggers[dataset], taggers.count == 1, let tagger = taggers.first,
            let count = devices[tagger]?.channels
        else { return }
        let beyond = channels.filter { $0 < 1 || $0 > count }.sorted()
        if !beyond.isEmpty {
            error(
                "channel\(beyond.count > 1 ? "s" : "") \(beyond.map(String.init).joined(separator: ", ")) of '\(dataset)': "
                    + "tagger '\(tagger)' (\(devices[tagger]?.id ?? "")) has channels 1–\(count)", at: node)
        }
    }

    mutating func requireCounting(_ spec: CountingSpec, for dataset: String, at node: Node) {
        checkChannels(Set(spec.pairs.flatMap { [$0.a, $0.b] }), of: dataset, at: node)
        if let (existing, _) = countingByDataset[dataset] {
            if existing.windowPs != spec.windowPs || existing.delaysPs != spec.delaysPs {
                error("analyses of '\(dataset)' must share one coincidence window and delays (it is counted once)", at: node)
            }
            var merged = existing
            for p in spec.pairs where !merged.pairs.contains(p) { merged.pairs.append(p) }
            countingByDataset[dataset] = (merged, node)
        } else {
            countingByDataset[dataset] = (spec, node)
        }
    }

    mutating func compileAnalysis(_ kind: String, _ node: Node, keyNode: Node) -> AnalysisStep? {
        switch kind {
        case "tomography":
            let byKey = fields(
                node, allowed: ["sweep", "arms", "window", "delays", "target", "accidentals", "estimator", "errors"],
                what: "tomography")
            let sweep = dataset(byKey["sweep"], expect: [.tomography], what: "tomography", at: node)
            let arms = arms(byKey["arms"], at: node, needReflect: false)
            let window = windowValue(byKey["window"], at: node)
            let delays = delays(byKey["delays"])
            var target = BellState.phiPlus
            if let t = byKey["target"], let s = string(t, what: "target") {
                if let b = BellState(rawValue: s) { target = b } else {
                    error("target must be one of \(BellState.allCases.map(\.rawValue).joined(separator: ", "))", at: t)
                }
            }
            var subtract = false
            if let a = byKey["accidentals"], let s = string(a, what: "accidentals") {
                if ["keep", "subtract"].contains(s) { subtract = s == "subtract" } else { error("accidentals must be 'keep' or 'subtract'", at: a) }
            }
            guard let sweep, let (a, b) = arms, let window else { return nil }
            var spec = TomographySpec(sweep: sweep, armA: a, armB: b, windowPs: window, delaysPs: delays, target: target)
            spec.subtractAccidentals = subtract
            if let e = byKey["estimator"], let name = string(e, what: "estimator") {
                if let estimator = Estimator(rawValue: name) { spec.estimator = estimator } else {
                    error("estimator must be \(Estimator.allCases.map(\.rawValue).joined(separator: ", ")); got '\(name)'", at: e)
                }
            }
            if let e = byKey["errors"], let n = integer(e, what: "errors (Monte-Carlo resamples)", range: 0...100_000) {
                spec.monteCarlo = n
            }
            let step = AnalysisStep.tomography(spec)
            if let c = step.counting { requireCounting(c, for: sweep, at: keyNode) }
            return step
        case "chsh":
            let byKey = fields(node, allowed: ["sweep", "arms", "window", "delays"], what: "chsh")
            let sweep = dataset(byKey["sweep"], expect: [.chsh], what: "chsh", at: node)
            let arms = arms(byKey["arms"], at: node, needReflect: true)
            let window = windowValue(byKey["window"], at: node)
            let delays = delays(byKey["delays"])
            guard let sweep, let (a, b) = arms, let window, let ra = a.reflect, let rb = b.reflect else { return nil }
            let pairs = [ChannelPair(a.pass, b.pass), ChannelPair(a.pass, rb), ChannelPair(ra, b.pass), ChannelPair(ra, rb)]
            let counting = CountingSpec(pairs: pairs, windowPs: window, delaysPs: delays)
            requireCounting(counting, for: sweep, at: keyNode)
            return .chsh(dataset: sweep, armA: a, armB: b, counting: counting)
        case "g2":
            let byKey = fields(node, allowed: ["sweep", "herald", "signals", "window"], what: "g2")
            let data = dataset(byKey["sweep"], expect: [.single, .values, .tomography, .chsh], what: "g2", at: node)
            let herald = integer(byKey["herald"], what: "g2.herald", range: 1...255)
            var signals: (Int, Int)?
            if let s = byKey["signals"] {
                let list = s.sequence.map(Array.init) ?? []
                let channels = list.compactMap { integer($0, what: "signal channel", range: 1...255) }
                if channels.count == 2 && channels[0] != channels[1] { signals = (channels[0], channels[1]) } else {
                    error("g2.signals lists the two detectors behind the beam splitter, e.g. [3, 4]", at: s)
                }
            } else {
                error("g2 needs 'signals: [c1, c2]' (the two outputs of the beam splitter)", at: node)
            }
            if byKey["herald"] == nil { error("g2 needs 'herald' (the heralding detector's channel)", at: node) }
            let window = windowValue(byKey["window"], at: node)
            guard let data, let herald, let signals, let window else { return nil }
            let step = AnalysisStep.heraldedG2(dataset: data, herald: herald, signals: signals, windowPs: window)
            if let c = step.counting { requireCounting(c, for: data, at: keyNode) }
            return step
        case "rates":
            let byKey = fields(node, allowed: ["sweep", "pairs", "window", "delays", "fit"], what: "rates")
            let data = dataset(byKey["sweep"], expect: [.single, .values, .tomography, .chsh], what: "rates", at: node)
            var pairs: [ChannelPair] = []
            if let p = byKey["pairs"] {
                for item in p.sequence.map(Array.init) ?? [] {
                    let chans = (item.sequence.map(Array.init) ?? []).compactMap { integer($0, what: "channel", range: 1...255) }
                    if chans.count == 2 { pairs.append(ChannelPair(chans[0], chans[1])) } else {
                        error("each pair is two channels, e.g. [1, 3]", at: item)
                    }
                }
            }
            let window = byKey["window"].flatMap { windowValue($0, at: node) } ?? 1000  // 1 ns
            let delays = delays(byKey["delays"])
            guard let data else { return nil }
            let counting = CountingSpec(pairs: pairs, windowPs: window, delaysPs: delays)
            requireCounting(counting, for: data, at: keyNode)
            var fit = RateFit.linear
            if let f = byKey["fit"], let text = string(f, what: "fit") {
                if let model = RateFit(rawValue: text) { fit = model } else {
                    error("rates fit is one of \(RateFit.allCases.map(\.rawValue).joined(separator: ", ")), got '\(text)'", at: f)
                }
            }
            return .rates(dataset: data, counting: counting, fit: fit)
        case "correlation":
            let byKey = fields(node, allowed: ["sweep", "pair", "range", "bin", "delays"], what: "correlation")
            let data = dataset(byKey["sweep"], expect: [.single, .values, .tomography, .chsh], what: "correlation", at: node)
            var pair: (Int, Int)?
            if let p = byKey["pair"] {
                let channels = (p.sequence.map(Array.init) ?? []).compactMap { integer($0, what: "channel", range: 1...255) }
                if channels.count == 2 { pair = (channels[0], channels[1]) } else {
                    error("correlation.pair is two channels A, B (the histogram is of t_B − t_A), e.g. [1, 3]", at: p)
                }
            } else {
                error("correlation needs 'pair: [A, B]' (the histogram is of t_B − t_A)", at: node)
            }
            let range = histogramTime(byKey["range"], what: "correlation.range", at: node)
            let bin = histogramTime(byKey["bin"], what: "correlation.bin", at: node)
            let delays = delays(byKey["delays"])
            guard let data, let pair, let range, let bin else { return nil }
            guard range >= bin, range / bin <= 1_000_000 else {
                error("correlation.range must be at least one bin, with at most a million bins each side", at: byKey["range"] ?? node)
                return nil
            }
            checkChannels([pair.0, pair.1], of: data, at: keyNode)
            return .correlation(CorrelationAnalysisSpec(dataset: data, channelA: pair.0, channelB: pair.1, binPs: bin, rangePs: range, delaysPs: delays))
        default:
            return nil
        }
    }

    /// A time of 1 ps to 1 s in integer picoseconds (a histogram's range and bins).
    mutating func histogramTime(_ node: Node?, what: String, at parent: Node) -> Int64? {
        guard let node else {
            error("needs '\(what.split(separator: ".").last ?? "")' (a time, e.g. 100 ps)", at: parent)
            return nil
        }
        guard let q = quantity(node, .time, what: what) else { return nil }
        guard q.value >= 1e-12 && q.value < 1 else {
            error("\(what) must be between 1 ps and 1 s, got \(q)", at: node)
            return nil
        }
        return Int64(clampingRounded: q.value * 1e12)
    }

    /// The full coincidence window in integer picoseconds, like the tags.
    mutating func windowValue(_ node: Node?, at parent: Node) -> Int64? {
        guard let node else {
            error("needs a coincidence 'window' (full width, e.g. 1 ns)", at: parent)
            return nil
        }
        guard let q = quantity(node, .time, what: "window") else { return nil }
        guard q.value >= 1e-12 && q.value < 1 else {
            error("the coincidence window must be between 1 ps and 1 s, got \(q)", at: node)
            return nil
        }
        return Int64(clampingRounded: q.value * 1e12)
    }
}
