import HeraldAnalysis
import HeraldCore
import Testing

/// Tags of four channels with real coincidences: photon "events" land on random subsets
/// of channels with jitter, over a Poisson background.
private func clusteredTags(seed: UInt64, events: Int = 600, span: Int64 = 2_000_000) -> [(t: Int64, c: UInt8)] {
    var rng = SeededGenerator(seed: seed)
    var tags: [(t: Int64, c: UInt8)] = []
    for _ in 0..<events {
        let t0 = Int64.random(in: 0..<span, using: &rng)
        for c in UInt8(1)...4 where Bool.random(using: &rng) {
            tags.append((t0 + Int64.random(in: -400...400, using: &rng), c))
        }
        if Int.random(in: 0..<4, using: &rng) == 0 { tags.append((t0 + 37, 1)) }  // same-channel neighbours
    }
    for _ in 0..<events { tags.append((Int64.random(in: 0..<span, using: &rng), UInt8.random(in: 1...5, using: &rng))) }
    return tags.sorted { $0.t < $1.t }
}

/// The O(n²) definitions the stream must reproduce.
private struct BruteForce {
    var byChannel: [Int: [Int64]] = [:]

    init(_ tags: [(t: Int64, c: UInt8)], delays: [Int: Int64], excluded: [ExcludedInterval]) {
        for (t, c) in tags where !excluded.contains(where: { t >= $0.startPs && t < $0.stopPs }) {
            byChannel[Int(c), default: []].append(t + (delays[Int(c)] ?? 0))
        }
    }

    /// Ordered pairs (x on a, y on b, distinct tags) with predicate on Δ = y − x.
    func orderedPairs(_ a: Int, _ b: Int, _ keep: (Int64) -> Bool) -> Int {
        let xs = byChannel[a] ?? [], ys = byChannel[b] ?? []
        var n = 0
        for (i, x) in xs.enumerated() { for (j, y) in ys.enumerated() where !(a == b && i == j) && keep(y - x) { n += 1 } }
        return n
    }

    func coincidences(_ p: ChannelPair, half: Int64) -> Int {
        let n = orderedPairs(p.a, p.b) { abs($0) <= half }
        return p.a == p.b ? n / 2 : n
    }

    func threefold(_ g: [Int], half: Int64) -> Int {
        var n = 0
        for x in byChannel[g[0]] ?? [] {
            for y in byChannel[g[1]] ?? [] where abs(y - x) <= half {
                for z in byChannel[g[2]] ?? [] where max(x, y, z) - min(x, y, z) <= half { n += 1 }
            }
        }
        return n
    }

    func histogram(_ spec: CorrelationSpec) -> [Int64] {
        var bins = [Int64](repeating: 0, count: spec.binCount)
        _ = orderedPairs(spec.pair.a, spec.pair.b) { d in
            let s = d + spec.rangePs
            if s >= 0 && s < 2 * spec.rangePs { bins[Int(s / spec.binWidthPs)] += 1 }
            return false
        }
        return bins
    }
}

@Suite struct CoincidenceStreamTests {
    let configuration = CoincidenceConfiguration(
        windowPs: 1000, delaysPs: [3: 1500, 4: -700],
        pairs: [ChannelPair(1, 3), ChannelPair(1, 4), ChannelPair(2, 3), ChannelPair(2, 4), ChannelPair(1, 1)],
        groups: [[1, 2, 3], [1, 3]], offsetWindowPs: 25_000,
        correlations: [
            CorrelationSpec(pair: ChannelPair(1, 3), binWidthPs: 250, rangePs: 8000),
            CorrelationSpec(pair: ChannelPair(2, 2), binWidthPs: 100, rangePs: 3000),
        ],
        reorderBoundPs: 5000)

    @Test func wholeStreamMatchesTheDefinitions() throws {
        let tags = clusteredTags(seed: 3)
        let excluded = [ExcludedInterval(startPs: 400_000, stopPs: 460_000), ExcludedInterval(startPs: 450_000, stopPs: 520_000, reason: "missed events")]
        let r = try CoincidenceStream.count(
            TagBlock(timestamps: tags.map(\.t), channels: tags.map(\.c), excluded: excluded), configuration)
        let brute = BruteForce(tags, delays: configuration.delaysPs, excluded: excluded)
        let half = configuration.windowPs / 2
        for p in configuration.pairs {
            #expect(r.coincidences[p] == brute.coincidences(p, half: half), "pair \(p)")
            if p.a != p.b {
                #expect(r.offsetCoincidences[p] == brute.orderedPairs(p.a, p.b) { abs($0 - 25_000) <= half }, "offset \(p)")
            }
        }
        #expect(r.nfold[[1, 2, 3]] == brute.threefold([1, 2, 3], half: half))
        #expect(r.nfold[[1, 3]] == r.coincidences[ChannelPair(1, 3)])
        for h in r.histograms { #expect(h.counts == brute.histogram(h.spec), "histogram \(h.spec.pair)") }
        for c in 1...4 { #expect(r.singles[c] == brute.byChannel[c]?.count) }
        #expect(r.singles[5] == nil)  // channel 5 was not asked for
        // The two overlapping lost-data intervals merge; their tags are dropped, not counted.
        #expect(r.excluded.count == 1 && r.excluded[0].startPs == 400_000 && r.excluded[0].stopPs == 520_000)
        #expect(r.droppedTags > 0)
        #expect(r.liveSeconds(from: 0, to: 2_000_000) == Double(2_000_000 - 120_000) * 1e-12)
        // The clustered data must actually exercise every counter.
        #expect(r.coincidences.values.allSatisfy { $0 > 20 } && r.nfold[[1, 2, 3]]! > 20)
    }

    /// Blocks of any size, delivered up to the reorder bound out of order, with lost-data
    /// markers mid-stream, give exactly the whole-stream result.
    @Test(arguments: [11, 12, 13, 14])
    func blockwiseEqualsWholeStream(seed: UInt64) throws {
        var rng = SeededGenerator(seed: seed)
        let sorted = clusteredTags(seed: seed)
        let bound = configuration.reorderBoundPs
        // Arrival order: each tag delayed by up to `bound`, which the bound permits.
        let arrival = sorted.map { ($0, $0.t + Int64.random(in: 0...bound, using: &rng)) }.sorted { $0.1 < $1.1 }
        let excluded = (0..<3).map { _ in
            let s = Int64.random(in: 0..<1_900_000, using: &rng)
            return ExcludedInterval(startPs: s, stopPs: s + Int64.random(in: 1000...40_000, using: &rng))
        }
        let whole = try CoincidenceStream.count(
            TagBlock(timestamps: arrival.map(\.0.t), channels: arrival.map(\.0.c), excluded: excluded), configuration)

        var stream = try CoincidenceStream(configuration)
        var i = 0
        var pendingMarkers = excluded.sorted { $0.startPs < $1.startPs }
        while i < arrival.count {
            let n = [1, 2, 7, 64, 500].randomElement(using: &rng) ?? 1
            let slice = arrival[i..<min(i + n, arrival.count)]
            // A marker travels with the first block that reaches its start on the arrival clock.
            let due = pendingMarkers.filter { $0.startPs <= (slice.last?.1 ?? 0) }
            pendingMarkers.removeAll { due.contains($0) }
            try stream.ingest(TagBlock(timestamps: slice.map(\.0.t), channels: slice.map(\.0.c), excluded: due))
            i += n
        }
        try stream.ingest(TagBlock(excluded: pendingMarkers))
        let blockwise = stream.finish()
        #expect(blockwise == whole)
        #expect(whole.droppedTags > 0)
    }

    @Test func tagsBeyondTheReorderBoundAreRejectedWithTheirPlace() throws {
        var stream = try CoincidenceStream(CoincidenceConfiguration(windowPs: 100, pairs: [ChannelPair(1, 2)], reorderBoundPs: 1000))
        try stream.ingest(TagBlock(timestamps: [10_000, 12_000], channels: [1, 2]))
        #expect(throws: CoincidenceError.reorderBoundExceeded(block: 1, index: 1, channel: 1, timestampPs: 10_500, latestPs: 12_000, boundPs: 1000)) {
            try stream.ingest(TagBlock(timestamps: [11_500, 10_500], channels: [2, 1]))
        }
        #expect(throws: CoincidenceError.self) { try CoincidenceStream(CoincidenceConfiguration(windowPs: 0, pairs: [ChannelPair(1, 2)])) }
        #expect(throws: CoincidenceError.self) { try CoincidenceStream(CoincidenceConfiguration(windowPs: 10, groups: [[1, 1]])) }
    }

    @Test func agreesWithTheTwoPointerCounter() throws {
        let tags = clusteredTags(seed: 21, events: 3000, span: 20_000_000)
        let block = TagBlock(timestamps: tags.map(\.t), channels: tags.map(\.c))
        let counter = CoincidenceCounter(window: 1.2e-9, delays: [2: 3e-10])
        let r = try CoincidenceStream.count(block, CoincidenceConfiguration(
            windowPs: counter.windowPs, delaysPs: counter.delaysPs, pairs: [ChannelPair(1, 2), ChannelPair(3, 4)]))
        #expect(r.coincidences[ChannelPair(1, 2)] == counter.count(counter.channel(1, of: block), counter.channel(2, of: block)))
        #expect(r.coincidences[ChannelPair(3, 4)] == counter.count(counter.channel(3, of: block), counter.channel(4, of: block)))
    }

    /// A stream long enough that old history is dropped many times between blocks: the
    /// histograms (cross, reversed, same-channel, bin widths that do not divide the range)
    /// must still equal the definition bin for bin, so no link into dropped history is used.
    @Test func histogramsSurviveHistoryBeingDropped() throws {
        let tags = clusteredTags(seed: 31, events: 12_000, span: 400_000_000)
        let specs = [
            CorrelationSpec(pair: ChannelPair(1, 3), binWidthPs: 333, rangePs: 60_000),
            CorrelationSpec(pair: ChannelPair(4, 2), binWidthPs: 7, rangePs: 2_000),
            CorrelationSpec(pair: ChannelPair(1, 1), binWidthPs: 1000, rangePs: 100_000),
        ]
        let configuration = CoincidenceConfiguration(windowPs: 1000, delaysPs: [3: 1500], correlations: specs)
        var stream = try CoincidenceStream(configuration)
        var i = 0
        while i < tags.count {  // ~5000-tag blocks: past the 4096-tag drop threshold each time
            let slice = tags[i..<min(i + 4999, tags.count)]
            try stream.ingest(TagBlock(timestamps: slice.map(\.t), channels: slice.map(\.c)))
            i += 4999
        }
        let r = stream.finish()
        // The definition, by a sorted two-pointer sweep (the O(n²) one is too slow at this size).
        var byChannel: [Int: [Int64]] = [:]
        for (t, c) in tags { byChannel[Int(c), default: []].append(t + (configuration.delaysPs[Int(c)] ?? 0)) }
        for (h, spec) in specs.enumerated() {
            var bins = [Int64](repeating: 0, count: spec.binCount)
            let xs = byChannel[spec.pair.a]!.sorted(), ys = byChannel[spec.pair.b]!.sorted()
            var lo = 0
            for (ix, x) in xs.enumerated() {
                while lo < ys.count && ys[lo] < x - spec.rangePs { lo += 1 }
                var j = lo
                while j < ys.count && ys[j] < x + spec.rangePs {
                    if !(spec.pair.a == spec.pair.b && j == ix) { bins[Int((ys[j] - x + spec.rangePs) / spec.binWidthPs)] += 1 }
                    j += 1
                }
            }
            #expect(r.histograms[h].counts == bins, "histogram \(spec.pair)")
            #expect(bins.reduce(0, +) > 1000)
        }
    }

    /// Pairs at a known delay with Gaussian jitter over a flat background: the calibrated
    /// delay must match within 5 standard errors of the peak centroid (σ/√N from the counts).
    @Test func delayCalibrationFindsTheCrossCorrelationPeak() throws {
        var rng = SeededGenerator(seed: 5)
        let trueDelay: Int64 = 3217, jitter = 50.0, pairs = 4000
        var tags: [(t: Int64, c: UInt8)] = []
        for _ in 0..<pairs {
            let t = Int64.random(in: 0..<1_000_000_000_000, using: &rng)
            tags.append((t, 1))
            tags.append((t + trueDelay + Int64((jitter * rng.gaussian()).rounded()), 2))
        }
        let background = (0..<200_000).map { _ in Int64.random(in: 0..<1_000_000_000_000, using: &rng) }
        for t in background { tags.append((t, UInt8.random(in: 1...2, using: &rng))) }
        tags.sort { $0.t < $1.t }
        let block = TagBlock(timestamps: tags.map(\.t), channels: tags.map(\.c))
        let spec = CorrelationSpec(pair: ChannelPair(1, 2), binWidthPs: 20, rangePs: 20_000)
        let r = try CoincidenceStream.count(block, CoincidenceConfiguration(windowPs: 400, correlations: [spec]))
        let estimate = try #require(try r.histograms.first?.delayEstimate())
        #expect(abs(estimate.peakPs - Double(trueDelay)) <= 5 * estimate.peakErrorPs)
        #expect(abs(estimate.peakCounts - Double(pairs)) <= 5 * Double(pairs).squareRoot() + 3 * estimate.backgroundPerBin)
        #expect(estimate.peakErrorPs < 2)

        // With the correction applied, a 400 ps window catches the pairs (±4σ of jitter).
        let corrected = try CoincidenceStream.count(block, CoincidenceConfiguration(
            windowPs: 400, delaysPs: [2: estimate.correctionPs], pairs: [ChannelPair(1, 2)]))
        let caught = Double(corrected.coincidences[ChannelPair(1, 2)] ?? 0)
        #expect(abs(caught - Double(pairs)) <= 5 * Double(pairs).squareRoot())

        // Pure background has no peak, and says so.
        let flat = try CoincidenceStream.count(
            TagBlock(timestamps: background.sorted(), channels: background.map { _ in UInt8(1) }),
            CoincidenceConfiguration(windowPs: 400, correlations: [CorrelationSpec(pair: ChannelPair(1, 1), binWidthPs: 1000, rangePs: 1_000_000)]))
        #expect(throws: DelayCalibrationError.self) { try flat.histograms[0].delayEstimate() }
    }
}
