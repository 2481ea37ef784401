import HeraldCore

struct G2Key: Hashable, Sendable {
    var herald: Int
    var signal1: Int
    var signal2: Int
    var windowPs: Int64
}

/// What one data set must count for all the analyses that read it.
struct DatasetSpec: Sendable {
    var counting = CountingSpec(pairs: [], windowPs: 1000, delaysPs: [:])
    var channels: Set<Int> = []
    /// Keep every channel's tags (for rates), not only `channels`.
    var allChannels = false
    var g2: [G2Key] = []
    var correlations: [CorrelationAnalysisSpec] = []
    var tomography: TomographySpec?

    mutating func add(_ a: AnalysisStep) {
        channels.formUnion(a.channels)
        allChannels = allChannels || a.needsAllChannels
        if let c = a.counting {
            // The compiler guarantees one window and one set of delays per data set.
            counting.windowPs = c.windowPs
            counting.delaysPs = c.delaysPs
            for p in c.pairs where !counting.pairs.contains(p) { counting.pairs.append(p) }
        }
        if case .heraldedG2(_, let h, let s, let w) = a { g2.append(G2Key(herald: h, signal1: s.0, signal2: s.1, windowPs: w)) }
        if case .tomography(let t) = a { tomography = t }
        if case .correlation(let c) = a, !correlations.contains(c) { correlations.append(c) }
    }
}

/// Counts of one point of a data set.
struct PointResult: Sendable {
    var point: ReductionPlan.Point
    var counts: PointCounts
    var g2: [G2Key: HeraldedG2Counts]
    var correlations: [CorrelationAnalysisSpec: CorrelationCounts] = [:]
}

/// One point's histogram of a correlation analysis, with the singles that normalise it.
struct CorrelationCounts: Sendable {
    var counts: [Int64]
    var singlesA: Int
    var singlesB: Int
    var seconds: Double

    static func + (l: Self, r: Self) -> Self {
        let counts = l.counts.isEmpty ? r.counts : zip(l.counts, r.counts).map { $0 + $1 }
        return Self(counts: counts, singlesA: l.singlesA + r.singlesA, singlesB: l.singlesB + r.singlesB, seconds: l.seconds + r.seconds)
    }
}

/// Turns the counts of a data set into an analysis record.
enum Analyses {
    static func run(_ step: AnalysisStep, data: [PointResult]) throws -> AnalysisRecord {
        switch step {
        case .tomography(let spec): return try tomography(spec, data: data)
        case .chsh(_, let a, let b, let counting): return chsh(a, b, counting, data: data)
        case .heraldedG2(_, let h, let s, let w): return g2(G2Key(herald: h, signal1: s.0, signal2: s.1, windowPs: w), data: data)
        case .rates(let dataset, let counting, let fit): return rates(dataset, counting, fit: fit, data: data)
        case .entanglement(let spec):
            // Heralds, not counts: the reducer runs these through EntanglementAnalysis.
            return try EntanglementAnalysis.run(spec, points: [])
        case .correlation(let spec): return correlation(spec, data: data)
        }
    }

    /// The histogram summed over the points, and g2(τ) = counts·T / (N_a·N_b·bin): the
    /// histogram over what uncorrelated streams with the same singles give per bin. Its error
    /// is the bin's Poisson error, √counts, on that scale.
    static func correlation(_ spec: CorrelationAnalysisSpec, data: [PointResult]) -> AnalysisRecord {
        let total = data.compactMap { $0.correlations[spec] }.reduce(CorrelationCounts(counts: [], singlesA: 0, singlesB: 0, seconds: 0), +)
        var record = AnalysisRecord(
            name: "correlation", estimator: "histogram",
            parameters: [
                "pair": "\(spec.channelA),\(spec.channelB)", "bin_s": AnalysisRecord.seconds(spec.binPs),
                "range_s": AnalysisRecord.seconds(spec.rangePs), "delays_s": AnalysisRecord.formatDelays(spec.delaysPs),
            ],
            values: [:], uncertainties: [:])
        let bins = CorrelationSpec(pair: ChannelPair(spec.channelA, spec.channelB), binWidthPs: spec.binPs, rangePs: spec.rangePs)
        let histogram = CorrelationHistogram(
            spec: bins, counts: total.counts.isEmpty ? [Int64](repeating: 0, count: bins.binCount) : total.counts)
        record.series[figure: .delay] = histogram.counts.indices.map { Double(histogram.lowerEdgePs($0)) * 1e-12 }
        record.series[figure: .histogramCounts] = histogram.counts.map(Double.init)
        record.values[figure: .liveTime] = total.seconds
        // Expected counts per bin of two uncorrelated streams: N_a·N_b·bin / T.
        let accidental = total.seconds > 0 ? Double(total.singlesA) * Double(total.singlesB) * Double(spec.binPs) * 1e-12 / total.seconds : 0
        if accidental > 0 {
            record.series[figure: .g2Tau] = histogram.counts.map { Double($0) / accidental }
            record.series[figure: .error(.g2Tau)] = histogram.counts.map { Double($0).squareRoot() / accidental }
            // g2 at τ = 0: the bin holding zero delay.
            if let zero = histogram.counts.indices.first(where: { histogram.lowerEdgePs($0) <= 0 && 0 < histogram.lowerEdgePs($0) + spec.binPs }) {
                record.values[figure: .g2AtZero] = Double(histogram.counts[zero]) / accidental
                record.uncertainties[figure: .g2AtZero] = max(Double(histogram.counts[zero]), 1).squareRoot() / accidental
            }
            record.values[figure: .accidentalsPerBin] = accidental
        } else {
            record.notes.append("no singles on channel \(total.singlesA == 0 ? spec.channelA : spec.channelB): g2(τ) is not normalised")
        }
        do {
            let peak = try histogram.delayEstimate()
            record.values[figure: .peakPosition] = peak.peakPs * 1e-12
            record.uncertainties[figure: .peakPosition] = peak.peakErrorPs * 1e-12
            record.values[figure: .peakWidth] = peak.widthPs * 1e-12
            record.values[figure: .peakSignificance] = peak.significance
            record.values[figure: .delayCorrection] = Double(peak.correctionPs) * 1e-12
        } catch {
            record.notes.append("\(error)")
        }
        return record
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
            estimator: spec.estimator, accidentals: spec.subtractAccidentals ? .subtract : .keep,
            monteCarlo: spec.monteCarlo)
        let result = try Tomography.reconstruct(projections, options: options)
        return .tomography(
            result, projections: projections.count, estimator: options.estimator, target: spec.target, sweep: spec.sweep,
            windowPs: spec.windowPs, delaysPs: spec.delaysPs, subtractAccidentals: spec.subtractAccidentals)
    }

    static func chsh(_ a: ArmChannels, _ b: ArmChannels, _ counting: CountingSpec, data: [PointResult]) -> AnalysisRecord {
        let ra = a.reflect ?? a.pass, rb = b.reflect ?? b.pass
        let settings = data.map { r in
            CHSH.SettingCounts(
                pp: coincidences(r, a.pass, b.pass), pr: coincidences(r, a.pass, rb), rp: coincidences(r, ra, b.pass),
                rr: coincidences(r, ra, rb))
        }
        var record = AnalysisRecord(
            name: "chsh", estimator: "counts", parameters: ["window_s": AnalysisRecord.seconds(counting.windowPs)], values: [:], uncertainties: [:])
        guard settings.count == CHSHSettings.signs.count else {
            record.notes = ["expected 4 setting pairs, got \(settings.count)"]
            return record
        }
        let (s, err, e) = CHSH.s(settings)
        record.values[figure: .chshS] = s
        record.uncertainties[figure: .chshS] = err
        record.series[figure: .correlation] = e
        record.series[figure: .error(.correlation)] = settings.map(\.correlationError)
        record.series[figure: .settingTotal] = settings.map(\.total)
        record.values[figure: .violationSigma] = (abs(s) - 2) / err
        record.labels = data.map(\.point.label)
        return record
    }

    static func g2(_ key: G2Key, data: [PointResult]) -> AnalysisRecord {
        let total = data.compactMap { $0.g2[key] }.reduce(HeraldedG2Counts(), +)
        let (value, error) = total.g2
        var record = AnalysisRecord(
            name: "g2", estimator: "heralded-hbt",
            parameters: ["herald": "\(key.herald)", "signals": "\(key.signal1),\(key.signal2)", "window_s": AnalysisRecord.seconds(key.windowPs)],
            values: [:], uncertainties: [:])
        record.values[figure: .g2Zero] = value
        record.uncertainties[figure: .g2Zero] = error
        record.values[figure: .heralds] = Double(total.heralds)
        record.values[figure: .heraldAnd1] = Double(total.heraldAnd1)
        record.values[figure: .heraldAnd2] = Double(total.heraldAnd2)
        record.values[figure: .heraldAnd1And2] = Double(total.heraldAnd1And2)
        if total.heraldAnd1And2 == 0 { record.notes.append("no triple coincidence: g2(0) = 0 with error of one count") }
        return record
    }

    static func rates(_ dataset: String, _ counting: CountingSpec, fit model: RateFit = .linear, data: [PointResult]) -> AnalysisRecord {
        var record = AnalysisRecord(
            name: "rates", estimator: "counts/live-time", parameters: ["sweep": dataset, "window_s": AnalysisRecord.seconds(counting.windowPs)],
            values: [:], uncertainties: [:])
        record.labels = data.map(\.point.label)
        let channels = Set(data.flatMap { $0.counts.singles.keys }).sorted()
        for ch in channels {
            let rate = Figure.rate(channel: ch)
            let n = data.map { Double($0.counts.singles[ch] ?? 0) }
            let t = data.map(\.counts.duration)
            record.series[figure: rate] = zip(n, t).map { $1 > 0 ? $0 / $1 : 0 }
            record.series[figure: .error(rate)] = zip(n, t).map { $1 > 0 ? $0.squareRoot() / $1 : 0 }
            let totalN = n.reduce(0, +), totalT = t.reduce(0, +)
            if totalT > 0 {
                record.values[figure: rate] = totalN / totalT
                record.uncertainties[figure: rate] = totalN.squareRoot() / totalT
            }
        }
        // The swept quantity, when every point has one (sweeps over one property).
        let swept = data.compactMap { $0.point.value }
        let hasSweptValue = !swept.isEmpty && swept.count == data.count
        if hasSweptValue {
            record.series[figure: .sweptValue] = swept
            if let unit = data.first?.point.unit { record.parameters["swept_unit"] = unit }
        }
        for p in counting.pairs {
            let figure = Figure.coincidenceRate(p.a, p.b)
            let n = data.map { coincidences($0, p.a, p.b) }
            let t = data.map(\.counts.duration)
            let rate = zip(n, t).map { $1 > 0 ? $0 / $1 : 0 }
            let err = zip(n, t).map { $1 > 0 ? max($0, 1).squareRoot() / $1 : 0 }
            record.series[figure: figure] = rate
            record.series[figure: .error(figure)] = err
            if hasSweptValue, model != .linear {
                record.parameters["fit"] = model.rawValue
                ScanFit.fit(model, x: swept, counts: n, durations: t, pair: p, into: &record)
                continue
            }
            // Against the swept quantity, a straight-line fit (pair rate ∝ pump power, say).
            if hasSweptValue, let fit = LinearFit.fit(x: swept, y: rate, sigma: err) {
                record.values[figure: .slope(p.a, p.b)] = fit.slope
                record.uncertainties[figure: .slope(p.a, p.b)] = fit.slopeError
                record.values[figure: .intercept(p.a, p.b)] = fit.intercept
                record.uncertainties[figure: .intercept(p.a, p.b)] = fit.interceptError
                // The fit's quality beside it: χ² per degree of freedom (≈ 1 for a straight line).
                if swept.count > 2 {
                    let chi2 = zip(swept, zip(rate, err)).reduce(0.0) { sum, point in
                        let (x, (y, s)) = point
                        let r = (y - fit.intercept - fit.slope * x) / s
                        return sum + (r.isFinite ? r * r : 0)
                    }
                    record.values["chi2_per_dof_\(p.a)_\(p.b)"] = chi2 / Double(swept.count - 2)
                }
            }
        }
        return record
    }
}
