import HeraldCore

struct G2Key: Hashable, Sendable {
    var herald: Int
    var signal1: Int
    var signal2: Int
    var window: Double
}

/// What one data set must count for all the analyses that read it.
struct DatasetSpec: Sendable {
    var counting = CountingSpec(pairs: [], window: 1e-9, delays: [:])
    var channels: Set<Int> = []
    /// Keep every channel's tags (for rates), not only `channels`.
    var allChannels = false
    var g2: [G2Key] = []
    var tomography: TomographySpec?

    mutating func add(_ a: AnalysisStep) {
        channels.formUnion(a.channels)
        allChannels = allChannels || a.needsAllChannels
        if let c = a.counting {
            // The compiler guarantees one window and one set of delays per data set.
            counting.window = c.window
            counting.delays = c.delays
            for p in c.pairs where !counting.pairs.contains(p) { counting.pairs.append(p) }
        }
        if case .heraldedG2(_, let h, let s, let w) = a { g2.append(G2Key(herald: h, signal1: s.0, signal2: s.1, window: w)) }
        if case .tomography(let t) = a { tomography = t }
    }
}

/// Counts of one point of a data set.
struct PointResult: Sendable {
    var point: ReductionPlan.Point
    var counts: PointCounts
    var g2: [G2Key: HeraldedG2Counts]
}

/// Turns the counts of a data set into an analysis record.
enum Analyses {
    static func run(_ step: AnalysisStep, data: [PointResult]) throws -> AnalysisRecord {
        switch step {
        case .tomography(let spec): return try tomography(spec, data: data)
        case .chsh(_, let a, let b, let counting): return chsh(a, b, counting, data: data)
        case .heraldedG2(_, let h, let s, let w): return g2(G2Key(herald: h, signal1: s.0, signal2: s.1, window: w), data: data)
        case .rates(let dataset, let counting): return rates(dataset, counting, data: data)
        }
    }

    static func coincidences(_ r: PointResult, _ a: Int, _ b: Int) -> Double {
        Double(r.counts.pairs.first { $0.channelA == a && $0.channelB == b }?.coincidences ?? 0)
    }

    static func tomography(_ spec: TomographySpec, data: [PointResult]) throws -> AnalysisRecord {
        var projections: [Projection] = []
        let wanted = Set(spec.channelPairs.map { ChannelPair($0.0, $0.1) })
        for r in data {
            guard let setting = r.point.setting else { continue }
            for pair in r.counts.pairs where wanted.contains(ChannelPair(pair.channelA, pair.channelB)) {
                let (a, b) = spec.projectedStates(channelA: pair.channelA, channelB: pair.channelB, setting: setting)
                projections.append(Projection(a, b, counts: Double(pair.coincidences), accidentals: pair.accidentals))
            }
        }
        let options = TomographyOptions(
            estimator: Estimator(rawValue: spec.estimator) ?? .linear, accidentals: spec.subtractAccidentals ? .subtract : .keep,
            monteCarlo: spec.monteCarlo)
        let result = try Tomography.reconstruct(projections, options: options)
        return .tomography(
            result, projections: projections.count, estimator: options.estimator, target: spec.target, sweep: spec.sweep,
            window: spec.window, delays: spec.delays, subtractAccidentals: spec.subtractAccidentals)
    }

    static func chsh(_ a: ArmChannels, _ b: ArmChannels, _ counting: CountingSpec, data: [PointResult]) -> AnalysisRecord {
        let ra = a.reflect ?? a.pass, rb = b.reflect ?? b.pass
        let settings = data.map { r in
            CHSH.SettingCounts(
                pp: coincidences(r, a.pass, b.pass), pr: coincidences(r, a.pass, rb), rp: coincidences(r, ra, b.pass),
                rr: coincidences(r, ra, rb))
        }
        var record = AnalysisRecord(
            name: "chsh", estimator: "counts", parameters: ["window_s": "\(counting.window)"], values: [:], uncertainties: [:])
        guard settings.count == CHSHSettings.signs.count else {
            record.notes = ["expected 4 setting pairs, got \(settings.count)"]
            return record
        }
        let (s, err, e) = CHSH.s(settings)
        record.values["S"] = s
        record.uncertainties["S"] = err
        record.series["E"] = e
        record.series["E_error"] = settings.map(\.correlationError)
        record.series["total"] = settings.map(\.total)
        record.values["violation_sigma"] = (abs(s) - 2) / err
        return record
    }

    static func g2(_ key: G2Key, data: [PointResult]) -> AnalysisRecord {
        let total = data.compactMap { $0.g2[key] }.reduce(HeraldedG2Counts(), +)
        let (value, error) = total.g2
        var record = AnalysisRecord(
            name: "g2", estimator: "heralded-hbt",
            parameters: ["herald": "\(key.herald)", "signals": "\(key.signal1),\(key.signal2)", "window_s": "\(key.window)"],
            values: [
                "g2_0": value, "heralds": Double(total.heralds), "herald_and_1": Double(total.heraldAnd1),
                "herald_and_2": Double(total.heraldAnd2), "herald_and_1_and_2": Double(total.heraldAnd1And2),
            ], uncertainties: ["g2_0": error])
        if total.heraldAnd1And2 == 0 { record.notes.append("no triple coincidence: g2(0) = 0 with error of one count") }
        return record
    }

    static func rates(_ dataset: String, _ counting: CountingSpec, data: [PointResult]) -> AnalysisRecord {
        var record = AnalysisRecord(
            name: "rates", estimator: "counts/live-time", parameters: ["sweep": dataset, "window_s": "\(counting.window)"],
            values: [:], uncertainties: [:])
        let channels = Set(data.flatMap { $0.counts.singles.keys }).sorted()
        for ch in channels {
            let n = data.map { Double($0.counts.singles[ch] ?? 0) }
            let t = data.map(\.counts.duration)
            record.series["rate_\(ch)"] = zip(n, t).map { $1 > 0 ? $0 / $1 : 0 }
            record.series["rate_\(ch)_error"] = zip(n, t).map { $1 > 0 ? $0.squareRoot() / $1 : 0 }
            let totalN = n.reduce(0, +), totalT = t.reduce(0, +)
            if totalT > 0 {
                record.values["rate_\(ch)"] = totalN / totalT
                record.uncertainties["rate_\(ch)"] = totalN.squareRoot() / totalT
            }
        }
        // The swept quantity, when every point has one (sweeps over one property).
        let swept = data.compactMap { $0.point.value }
        let hasSweptValue = !swept.isEmpty && swept.count == data.count
        if hasSweptValue { record.series["swept_value"] = swept }
        for p in counting.pairs {
            let key = "coincidence_rate_\(p.a)_\(p.b)"
            let n = data.map { coincidences($0, p.a, p.b) }
            let t = data.map(\.counts.duration)
            let rate = zip(n, t).map { $1 > 0 ? $0 / $1 : 0 }
            let err = zip(n, t).map { $1 > 0 ? max($0, 1).squareRoot() / $1 : 0 }
            record.series[key] = rate
            record.series[key + "_error"] = err
            // Against the swept quantity, a straight-line fit (pair rate ∝ pump power, say).
            if hasSweptValue, let fit = LinearFit.fit(x: swept, y: rate, sigma: err) {
                record.values[key + "_slope"] = fit.slope
                record.uncertainties[key + "_slope"] = fit.slopeError
                record.values[key + "_intercept"] = fit.intercept
                record.uncertainties[key + "_intercept"] = fit.interceptError
            }
        }
        return record
    }
}
