import HeraldCore

/// Turns a run's events into its counts and analyses: the one place Herald counts tags
/// and analyses them, live during a run and again when `herald analyze` replays a stored run.
///
/// It subscribes to the engine's events and passes every event on to the consumers below it
/// (recorder, report, progress), adding what the events mean:
/// - each finished point of a data set an analysis reads gets a `.counts` event, counted from
///   the tags of the point's counted acquisitions (stretches that overlapped an interlock
///   violation are dropped, as are tags in the tagger's lost-data intervals);
/// - each `.analysisRequested` gets one `.analysis` event, or one for each outer point when the
///   data set is a nested sweep: an inner sweep is never pooled across outer settings.
///
/// Tags reach every open point: the points of a nested sweep and of the sweep around it.
public actor RunReducer: RunEventSink {
    private let downstream: [any RunEventSink]
    private var plan: ReductionPlan?
    private var specs: [String: DatasetSpec] = [:]
    /// Points that have started and not finished, outermost first.
    private var open: [OpenPoint] = []
    /// With interlocks: the blocks of the acquisition in progress, until its check decides.
    private var held: [(device: String, block: TagBlock)] = []
    /// Finished points of each data set an analysis reads, in order.
    private var results: [String: [PointResult]] = [:]
    /// Outer points each analysis request has already analysed (a request inside the outer
    /// sweep's body runs once per outer point and must analyse only the new one).
    private var analysed: [String: Set<Int>] = [:]
    /// Heralds of the `entangle` points in progress, and the finished points of each data set.
    private var entangling: [String: EntanglementPoint] = [:]
    private var entangled: [String: [(outer: PointRef?, point: EntanglementPoint)]] = [:]
    /// Several taggers: their tags merged into the reference's time base before counting.
    private var merged: MergedTagStream?

    private struct OpenPoint {
        var dataset: String
        var index: Int
        var tally: PointTally?
        var seconds = 0.0
    }

    /// `plan` nil: taken from the run-started event. A recount passes the stored one.
    public init(plan: ReductionPlan? = nil, downstream: [any RunEventSink]) {
        self.downstream = downstream
        if let plan { self.plan = plan }
        if let plan { specs = Self.specs(plan) }
        merged = plan?.clocks.map(MergedTagStream.init)
    }

    private static func specs(_ plan: ReductionPlan) -> [String: DatasetSpec] {
        var specs: [String: DatasetSpec] = [:]
        // Entanglement data sets are heralds, not tags to count.
        for a in plan.analyses where a.countsTags { specs[a.dataset, default: DatasetSpec()].add(a) }
        return specs
    }

    private func pass(_ event: RunEvent) async throws {
        for sink in downstream { try await sink.handle(event) }
    }

    public func handle(_ event: RunEvent) async throws {
        switch event {
        case .runStarted(let start):
            if plan == nil {
                let p = ReductionPlan(plan: start.plan)
                plan = p
                specs = Self.specs(p)
                merged = p.clocks.map(MergedTagStream.init)
            }
            try await pass(event)
            for descriptor in StreamDescriptor.reducerStreams { try await pass(.streamDeclared(descriptor)) }
            if merged != nil { try await pass(.streamDeclared(StreamDescriptor.clocksStream)) }
        case .sweepPointStarted(let sweep, let index, _, _):
            // Tags still held from before the point belong to the points already open, not to it.
            if let rest = merged?.settleBeforePoint() { try tally(rest, from: plan?.clocks?.reference ?? "") }
            if plan?.clocks?.calibrations.contains(sweep) == true { merged?.beginCalibration() }
            open.append(OpenPoint(dataset: sweep, index: index, tally: try specs[sweep].map { try PointTally(spec: $0) }))
            try await pass(event)
        case .tags(let device, let block):
            // Recorded first: a block the counter refuses is still kept in the file.
            try await pass(event)
            if plan?.hasInterlocks == true {
                if open.contains(where: { $0.tally != nil }) { held.append((device, block)) }
            } else {
                try count(block, from: device)
            }
        case .acquired(let a):
            let blocks = held
            held = []
            if a.counted {
                for (device, block) in blocks { try count(block, from: device) }
                // Live time once per stretch, not once per tagger acquiring it.
                if merged == nil || a.device == plan?.clocks?.reference {
                    for i in open.indices { open[i].seconds += a.seconds }
                }
                // Optional chaining mutates in place (a copy would copy what the stream holds).
                if let settled = merged?.covered(a.device, toPs: a.stopPs) { try tally(settled, from: a.device) }
            }
            try await pass(event)
        case .sweepPointFinished(let record):
            try await pass(event)
            if merged != nil {
                // A calibration's point: its photons give the clocks that settle its own tags and those after.
                let rest: TagBlock?
                do {
                    if plan?.clocks?.calibrations.contains(record.sweep) == true { try merged?.endCalibration() }
                    // The point's last tags: the stream settles what it held, past the last knot.
                    rest = try merged?.flush()
                } catch {
                    throw Self.clockFailure(error)
                }
                if let rest, let m = merged {
                    try tally(rest, from: m.spec.reference)
                    try await pass(.clocks(m.models()))
                }
            }
            try await finish(record)
        case .analysisRequested(let step, let location):
            try await pass(event)
            if case .entanglement(let spec) = step {
                try await analyse(spec, location: location)
            } else {
                try await analyse(step, location: location)
            }
        case .herald(let h):
            if let compact = CompactHerald(h) { entangling[h.dataset, default: EntanglementPoint()].heralds.append(compact) }
            try await pass(event)
        case .entangled(let r):
            var point = entangling.removeValue(forKey: r.dataset) ?? EntanglementPoint()
            point.summary = r
            entangled[r.dataset, default: []].append((r.outer, point))
            try await pass(event)
        default:
            try await pass(event)
        }
    }

    /// An `entanglement` analysis: one record per outer point (a data set outside any sweep is
    /// one group), then the fit across them when the step asks for one.
    private func analyse(_ spec: EntanglementAnalysisSpec, location: SourceLocation?) async throws {
        let key = "\(location?.description ?? "") entanglement \(spec.dataset)"
        let groups = newGroups((entangled[spec.dataset] ?? []).map { ($0.outer, $0.point) }, key: key)
        var rows: [(value: Double, record: AnalysisRecord)] = []
        var unit = ""
        for group in groups {
            var record: AnalysisRecord
            do {
                record = try EntanglementAnalysis.run(spec, points: group.items)
            } catch let e as TomographyError {
                let at = group.outer.map { " at \($0.sweep)[\($0.index)] \($0.label)" } ?? ""
                throw StepError(.analysisFailed, location: location, message: "entanglement of '\(spec.dataset)'\(at): \(e)")
            }
            record.outer = group.outer
            record.parameters["sweep"] = spec.dataset
            try await pass(.analysis(record))
            if let outer = group.outer, let p = plan?.dataset(outer.sweep)?.points, p.indices.contains(outer.index),
                let value = p[outer.index].value
            {
                rows.append((value, record))
                unit = p[outer.index].unit ?? ""
            }
        }
        if var fit = EntanglementAnalysis.fit(spec, rows, unit: unit) {
            fit.parameters["sweep"] = spec.dataset
            fit.parameters["swept_unit"] = unit
            fit.labels = rows.map { $0.record.outer?.label ?? "" }
            try await pass(.analysis(fit))
        }
    }

    /// Items grouped by their outer point, in the order they ran (a data set outside any sweep
    /// is one group); groups an earlier request under `key` already analysed are left out.
    private func newGroups<T>(_ items: [(outer: PointRef?, item: T)], key: String) -> [(outer: PointRef?, items: [T])] {
        var groups: [(outer: PointRef?, items: [T])] = []
        for (outer, item) in items {
            if let i = groups.firstIndex(where: { $0.outer == outer }) {
                groups[i].items.append(item)
            } else {
                groups.append((outer, [item]))
            }
        }
        if groups.isEmpty { groups = [(nil, [])] }
        return groups.filter { g in g.outer.map { analysed[key, default: []].insert($0.index).inserted } ?? true }
    }

    private func count(_ block: TagBlock, from device: String) throws {
        guard merged != nil else { return try tally(block, from: device) }
        let settled: TagBlock?
        do { settled = try merged?.add(block, from: device) } catch { throw Self.clockFailure(error) }
        if let settled { try tally(settled, from: device) }
    }

    /// The merged stream could not place a tagger's tags (each error names the tagger): the
    /// run's clocks are not what the script said, so the counts would be wrong.
    private static func clockFailure(_ error: ClockCalibrationError) -> StepError {
        StepError(.analysisFailed, location: nil, message: "clocks: \(error)")
    }

    private func tally(_ block: TagBlock, from device: String) throws {
        guard block.count > 0 || !block.excluded.isEmpty else { return }
        do {
            for i in open.indices where open[i].tally != nil { try open[i].tally?.add(block) }
        } catch let e as CoincidenceError {
            // Tags the counter cannot order are garbage from the tagger: the run fails naming it.
            throw DeviceError(device: device, .invalidResponse, "delivered tags the coincidence counter cannot order: \(e)")
        }
    }

    private func finish(_ record: SweepPointRecord) async throws {
        guard let k = open.lastIndex(where: { $0.dataset == record.sweep && $0.index == record.index }) else { return }
        let point = open.remove(at: k)
        guard let spec = specs[record.sweep], let tally = point.tally else { return }
        let planned = plan?.dataset(record.sweep)?.points
        let description = planned.flatMap { $0.indices.contains(record.index) ? $0[record.index] : nil }
            ?? ReductionPlan.Point(label: record.label)
        let result = tally.result(
            spec: spec, dataset: record.sweep, index: record.index, point: description, liveSeconds: point.seconds,
            outer: record.outer)
        results[record.sweep, default: []].append(result)
        try await pass(.counts(result.counts))
    }

    private func analyse(_ step: AnalysisStep, location: SourceLocation?) async throws {
        let data = results[step.dataset] ?? []
        let key = "\(location?.description ?? "") \(step.name) \(step.dataset)"
        for group in newGroups(data.map { ($0.counts.outer, $0) }, key: key) {
            var record: AnalysisRecord
            do {
                record = try Analyses.run(step, data: group.items)
            } catch let e as TomographyError {
                let at = group.outer.map { " at \($0.sweep)[\($0.index)] \($0.label)" } ?? ""
                throw StepError(.analysisFailed, location: location, message: "\(step.name) of '\(step.dataset)'\(at): \(e)")
            }
            record.outer = group.outer
            record.parameters["sweep"] = step.dataset
            if let c = step.counting, record.parameters["delays_s"] == nil, !c.delaysPs.isEmpty {
                record.parameters["delays_s"] = AnalysisRecord.formatDelays(c.delaysPs)
            }
            try await pass(.analysis(record))
        }
    }
}

/// Counts one data set's tags for one point as they arrive. Pairs and singles go through a
/// ``CoincidenceStream``, so memory stays bounded however long the point acquires.
struct PointTally {
    var stream: CoincidenceStream
    /// Singles of every channel (rates), which the stream does not see.
    var singles = [Int](repeating: 0, count: 256)
    /// Tags of heralded-g2 channels: the herald-centred triple count needs whole arrays.
    var g2Tags: [Int: [Int64]] = [:]
    let g2Channels: Set<Int>
    let windowPs: Int64
    /// One stream per correlation analysis: each histogram has its own delays and bins.
    var correlations: [(spec: CorrelationAnalysisSpec, stream: CoincidenceStream)]

    init(spec: DatasetSpec) throws {
        windowPs = spec.counting.windowPs
        stream = try CoincidenceStream(
            CoincidenceConfiguration(windowPs: windowPs, delaysPs: spec.counting.delaysPs, pairs: spec.counting.pairs.map { ChannelPair($0.a, $0.b) }))
        g2Channels = Set(spec.g2.flatMap { [$0.herald, $0.signal1, $0.signal2] })
        correlations = try spec.correlations.map { c in
            let histogram = CorrelationSpec(pair: ChannelPair(c.channelA, c.channelB), binWidthPs: c.binPs, rangePs: c.rangePs)
            return (c, try CoincidenceStream(CoincidenceConfiguration(windowPs: c.binPs, delaysPs: c.delaysPs, correlations: [histogram])))
        }
    }

    mutating func add(_ block: TagBlock) throws {
        try stream.ingest(block)
        for i in correlations.indices { try correlations[i].stream.ingest(block) }
        block.countChannels(into: &singles)
        if !g2Channels.isEmpty {
            for (t, c) in zip(block.timestamps, block.channels) where g2Channels.contains(Int(c)) {
                g2Tags[Int(c), default: []].append(t)
            }
        }
    }

    func result(
        spec: DatasetSpec, dataset: String, index: Int, point: ReductionPlan.Point, liveSeconds: Double, outer: PointRef?
    ) -> PointResult {
        var allSingles: [Int: Int] = [:]
        for (c, n) in singles.enumerated() where n > 0 { allSingles[c] = n }
        // Channels the stream counts: its singles leave out tags in the tagger's lost-data intervals.
        var finished = stream
        let counted = finished.finish()
        for (c, n) in counted.singles { allSingles[c] = n }
        var pairs: [PointCounts.Pair] = []
        for pair in spec.counting.pairs {
            var projection = "\(pair.a)-\(pair.b)"
            if let setting = point.setting, let t = spec.tomography {
                let (x, y) = t.projectedStates(channelA: pair.a, channelB: pair.b, setting: setting)
                projection = x.rawValue + y.rawValue
            }
            pairs.append(
                PointCounts.Pair(
                    channelA: pair.a, channelB: pair.b, projection: projection, coincidences: counted.coincidences[pair] ?? 0,
                    accidentals: counted.accidentals(pair, windowPs: windowPs, liveSeconds: liveSeconds)))
        }
        var g2: [G2Key: HeraldedG2Counts] = [:]
        for key in spec.g2 {
            var c = HeraldedG2Counts()
            c.add(
                herald: g2Tags[key.herald] ?? [], signal1: g2Tags[key.signal1] ?? [], signal2: g2Tags[key.signal2] ?? [],
                windowPs: key.windowPs)
            g2[key] = c
        }
        var histograms: [CorrelationAnalysisSpec: CorrelationCounts] = [:]
        for (c, stream) in correlations {
            var finished = stream
            let result = finished.finish()
            guard let h = result.histograms.first else { continue }
            histograms[c] = CorrelationCounts(
                counts: h.counts, singlesA: result.singles[c.channelA] ?? 0, singlesB: result.singles[c.channelB] ?? 0, seconds: liveSeconds)
        }
        var kept: [Int: Int] = [:]
        for channel in spec.channels { kept[channel] = allSingles[channel] ?? 0 }
        if spec.allChannels { kept.merge(allSingles) { a, _ in a } }
        let counts = PointCounts(
            sweep: dataset, index: index, label: point.label, duration: liveSeconds, singles: kept, pairs: pairs, outer: outer)
        return PointResult(point: point, counts: counts, g2: g2, correlations: histograms)
    }
}
