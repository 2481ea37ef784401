import HeraldCore

/// A histogram of time differences Δ = (t_b + delay_b) − (t_a + delay_a) between two
/// channels: g2(τ) when both are detectors of one beam, a cross-correlation otherwise.
public struct CorrelationSpec: Sendable, Hashable {
    public var pair: ChannelPair
    public var binWidthPs: Int64
    /// Bins cover Δ ∈ [−range, +range).
    public var rangePs: Int64

    public init(pair: ChannelPair, binWidthPs: Int64, rangePs: Int64) {
        self.pair = pair
        self.binWidthPs = binWidthPs
        self.rangePs = rangePs
    }

    public var binCount: Int { Int((2 * rangePs + binWidthPs - 1) / binWidthPs) }
}

/// Counts in each bin of a ``CorrelationSpec``.
public struct CorrelationHistogram: Sendable, Equatable {
    public var spec: CorrelationSpec
    public var counts: [Int64]

    /// Left edge of bin `i`, in picoseconds.
    public func lowerEdgePs(_ i: Int) -> Int64 { -spec.rangePs + Int64(i) * spec.binWidthPs }
    /// Centre of bin `i`, in picoseconds.
    public func centerPs(_ i: Int) -> Double { Double(lowerEdgePs(i)) + Double(spec.binWidthPs) / 2 }
}

/// What a ``CoincidenceStream`` counts.
public struct CoincidenceConfiguration: Sendable {
    /// Full width: two tags coincide when |Δ| ≤ window/2 (as ``CoincidenceCounter``).
    public var windowPs: Int64
    /// Added to each channel's timestamps before anything is compared.
    public var delaysPs: [Int: Int64]
    public var pairs: [ChannelPair]
    /// n-fold coincidences: one tag on every channel of the group, all within window/2 of
    /// each other (the span of the tuple ≤ window/2, which for n = 2 is the pair rule).
    public var groups: [[Int]]
    /// If set, each pair is also counted with channel b shifted by this much: a direct
    /// measurement of accidentals (use a multiple of the pulse period for pulsed sources).
    public var offsetWindowPs: Int64?
    public var correlations: [CorrelationSpec]
    /// How far out of time order the tagger may deliver a tag: a tag may arrive after
    /// tags up to this much later than it. Tags are held back this long before counting.
    public var reorderBoundPs: Int64

    public init(
        windowPs: Int64, delaysPs: [Int: Int64] = [:], pairs: [ChannelPair] = [], groups: [[Int]] = [],
        offsetWindowPs: Int64? = nil, correlations: [CorrelationSpec] = [], reorderBoundPs: Int64 = 0
    ) {
        self.windowPs = windowPs
        self.delaysPs = delaysPs
        self.pairs = pairs
        self.groups = groups
        self.offsetWindowPs = offsetWindowPs
        self.correlations = correlations
        self.reorderBoundPs = reorderBoundPs
    }

    /// Every channel the configuration reads, ascending.
    public var channels: [Int] {
        var s = Set<Int>()
        for p in pairs { s.insert(p.a); s.insert(p.b) }
        for g in groups { s.formUnion(g) }
        for c in correlations { s.insert(c.pair.a); s.insert(c.pair.b) }
        return s.sorted()
    }
}

/// What a ``CoincidenceStream`` counted.
public struct CoincidenceResult: Sendable, Equatable {
    public var singles: [Int: Int] = [:]
    public var coincidences: [ChannelPair: Int] = [:]
    /// Counts in the offset window (see ``CoincidenceConfiguration/offsetWindowPs``).
    public var offsetCoincidences: [ChannelPair: Int] = [:]
    public var nfold: [[Int]: Int] = [:]
    public var histograms: [CorrelationHistogram] = []
    /// The tagger's lost-data intervals, merged and sorted. Their tags were not counted.
    public var excluded: [ExcludedInterval] = []
    /// Tags dropped because they fell inside an excluded interval.
    public var droppedTags = 0
    /// First and last accepted raw timestamps (an envelope: a lost-data marker that arrives
    /// after tags inside its interval drops them without narrowing these).
    public var firstPs: Int64?
    public var lastPs: Int64?

    public init() {}

    /// Total excluded time within [startPs, stopPs).
    public func excludedPs(from startPs: Int64, to stopPs: Int64) -> Int64 {
        excluded.reduce(0) { $0 + max(0, min($1.stopPs, stopPs) - max($1.startPs, startPs)) }
    }

    /// Time in [startPs, stopPs) in which tags were not lost, in seconds.
    public func liveSeconds(from startPs: Int64, to stopPs: Int64) -> Double {
        Double(stopPs - startPs - excludedPs(from: startPs, to: stopPs)) * 1e-12
    }

    /// Singles-based accidentals S_a·S_b·window/T for `pair` over `liveSeconds`.
    public func accidentals(_ pair: ChannelPair, windowPs: Int64, liveSeconds: Double) -> Double {
        guard liveSeconds > 0 else { return 0 }
        return Double(singles[pair.a] ?? 0) * Double(singles[pair.b] ?? 0) * Double(windowPs) * 1e-12 / liveSeconds
    }
}

public enum CoincidenceError: Error, CustomStringConvertible, Sendable, Equatable {
    case invalidConfiguration(String)
    /// A tag (or lost-data marker) arrived later than the reorder bound allows.
    case reorderBoundExceeded(block: Int, index: Int, channel: Int, timestampPs: Int64, latestPs: Int64, boundPs: Int64)

    public var description: String {
        switch self {
        case .invalidConfiguration(let why): return "invalid coincidence configuration: \(why)"
        case .reorderBoundExceeded(let block, let index, let channel, let t, let latest, let bound):
            let what = index < 0 ? "lost-data marker" : "tag \(index) (channel \(channel))"
            return "block \(block), \(what): timestamp \(t) ps arrived after a tag at \(latest) ps, "
                + "\(latest - t) ps out of order, beyond the reorder bound of \(bound) ps; "
                + "raise the reorder bound to at least \(latest - t) ps or fix the tagger's clock"
        }
    }
}

/// Counts singles, pair and n-fold coincidences and correlation histograms on a stream
/// of tag blocks, holding only the tags still inside the longest correlation range.
///
/// Feeding the same tags in any split into blocks, or in one block, gives identical
/// results, as long as no tag arrives more than the reorder bound out of time order.
/// Each tag is compared only with the earlier tags within reach (window/2, the offset
/// window, the histogram ranges), so at low duty cycle the cost is one comparison per tag.
public struct CoincidenceStream: Sendable {
    public let configuration: CoincidenceConfiguration
    /// Channel → dense slot, or −1 for channels nobody asked about (dropped on entry).
    private let slotOf: [Int32]
    private var delayOfSlot: [Int64]
    private let channelOfSlot: [Int]
    private let half: Int64
    private let reach: Int64
    private let minDelay: Int64

    // Pending tags: delayed timestamp and slot, sorted from `next` on; earlier ones are history.
    private var times: [Int64] = []
    private var slots: [Int32] = []
    private var next = 0
    private var latestRaw = Int64.min
    private var blockIndex = 0

    // Accumulators, indexed by slot.
    private var singles: [Int]
    private var pairMatrix: [Int]
    private var offsetCounts: [Int]
    private var nfoldCounts: [Int]
    /// Every histogram's bins in one flat array (histogram h starts at histogramBases[h]), so
    /// the hot loop increments through one buffer pointer.
    private var histogramCounts: [Int64]
    private let histogramBases: [Int]
    /// What to do for a tag pair (earlier slot, later slot): the actions of pair (j, c) are
    /// actions[actionStart[j·k + c] ..< actionStart[j·k + c + 1]], flat for the hot loop.
    private let actions: [Action]
    private let actionStart: [Int]
    private let groupsBySlot: [[(group: Int, others: [Int])]]
    private var activeExcluded: [ExcludedInterval] = []
    private var allExcluded: [ExcludedInterval] = []
    private var dropped = 0
    private var firstRaw: Int64?
    private var lastRaw: Int64?

    /// Work attached to an ordered slot pair (earlier tag's slot, later tag's slot).
    private enum Action: Sendable {
        /// Histogram `index`; `sign` turns d = t_later − t_earlier into Δ = t_b − t_a.
        case histogram(index: Int, sign: Int64)
        case offset(pair: Int, sign: Int64)
    }

    public init(_ configuration: CoincidenceConfiguration) throws {
        self.configuration = configuration
        guard configuration.windowPs > 0 else { throw CoincidenceError.invalidConfiguration("the window must be positive") }
        guard configuration.reorderBoundPs >= 0 else {
            throw CoincidenceError.invalidConfiguration("the reorder bound must not be negative")
        }
        let channels = configuration.channels
        for c in channels where !(0...255).contains(c) {
            throw CoincidenceError.invalidConfiguration("channel \(c) is outside 0…255")
        }
        channelOfSlot = channels
        var slotOf = [Int32](repeating: -1, count: 256)
        for (s, c) in channels.enumerated() { slotOf[c] = Int32(s) }
        self.slotOf = slotOf
        let k = channels.count
        delayOfSlot = channels.map { configuration.delaysPs[$0] ?? 0 }
        minDelay = delayOfSlot.min() ?? 0
        half = configuration.windowPs >> 1
        var reach = half
        let limit: Int64 = 1 << 60  // ~13 days: keeps every sum of times, delays and ranges from overflowing
        if let off = configuration.offsetWindowPs {
            guard off.magnitude < limit else { throw CoincidenceError.invalidConfiguration("offset window \(off) ps is out of range") }
            reach = max(reach, abs(off) + half)
        }
        for (c, d) in configuration.delaysPs where d.magnitude >= limit {
            throw CoincidenceError.invalidConfiguration("delay \(d) ps on channel \(c) is out of range")
        }
        guard configuration.windowPs < limit, configuration.reorderBoundPs < limit else {
            throw CoincidenceError.invalidConfiguration("window or reorder bound is out of range")
        }

        var actions = [[Action]](repeating: [], count: k * k)
        for (h, spec) in configuration.correlations.enumerated() {
            guard spec.binWidthPs > 0, spec.rangePs > 0 else {
                throw CoincidenceError.invalidConfiguration("histogram \(spec.pair.a)–\(spec.pair.b): bin width and range must be positive")
            }
            guard spec.rangePs < limit, spec.binCount <= 10_000_000 else {
                throw CoincidenceError.invalidConfiguration("histogram \(spec.pair.a)–\(spec.pair.b) would have \(spec.binCount) bins; widen the bins")
            }
            reach = max(reach, spec.rangePs)
            let a = Int(slotOf[spec.pair.a]), b = Int(slotOf[spec.pair.b])
            actions[a * k + b].append(.histogram(index: h, sign: 1))
            if a != b { actions[b * k + a].append(.histogram(index: h, sign: -1)) }
        }
        if configuration.offsetWindowPs != nil {
            for (p, pair) in configuration.pairs.enumerated() where pair.a != pair.b {
                let a = Int(slotOf[pair.a]), b = Int(slotOf[pair.b])
                actions[a * k + b].append(.offset(pair: p, sign: 1))
                actions[b * k + a].append(.offset(pair: p, sign: -1))
            }
        }
        self.reach = reach
        self.actions = actions.flatMap { $0 }
        self.actionStart = actions.reduce(into: [0]) { $0.append($0[$0.count - 1] + $1.count) }

        var bySlot = [[(group: Int, others: [Int])]](repeating: [], count: k)
        for (g, group) in configuration.groups.enumerated() {
            guard group.count >= 2, Set(group).count == group.count else {
                throw CoincidenceError.invalidConfiguration("n-fold group \(group) needs at least two distinct channels")
            }
            let s = group.map { Int(slotOf[$0]) }
            for (i, slot) in s.enumerated() {
                bySlot[slot].append((g, s.enumerated().filter { $0.offset != i }.map(\.element)))
            }
        }
        groupsBySlot = bySlot
        singles = Array(repeating: 0, count: k)
        pairMatrix = Array(repeating: 0, count: k * k)
        offsetCounts = Array(repeating: 0, count: configuration.pairs.count)
        nfoldCounts = Array(repeating: 0, count: configuration.groups.count)
        histogramBases = configuration.correlations.reduce(into: [0]) { $0.append($0[$0.count - 1] + $1.binCount) }
        histogramCounts = Array(repeating: 0, count: histogramBases[histogramBases.count - 1])
    }

    /// Counts a whole tag stream at once.
    public static func count(_ block: TagBlock, _ configuration: CoincidenceConfiguration) throws -> CoincidenceResult {
        var stream = try CoincidenceStream(configuration)
        try stream.ingest(block)
        return stream.finish()
    }

    /// Adds one block from the tagger and counts every tag that can no longer gain partners.
    public mutating func ingest(_ block: TagBlock) throws {
        defer { blockIndex += 1 }
        let bound = configuration.reorderBoundPs
        for interval in block.excluded {
            if Self.lags(interval.startPs, behind: latestRaw, by: bound) {
                throw CoincidenceError.reorderBoundExceeded(
                    block: blockIndex, index: -1, channel: -1, timestampPs: interval.startPs, latestPs: latestRaw, boundPs: bound)
            }
            guard interval.stopPs > interval.startPs else { continue }
            activeExcluded.append(interval)
            allExcluded.append(interval)
        }
        if !block.excluded.isEmpty { dropPendingInsideExcluded() }

        // Processed tags all precede the horizon, which every new tag follows; only the
        // pending tail has to stay in order.
        var sorted = true
        var previous = times.count > next ? times[times.count - 1] : Int64.min
        times.reserveCapacity(times.count + block.count)
        slots.reserveCapacity(slots.count + block.count)
        for (index, (t, c)) in zip(block.timestamps, block.channels).enumerated() {
            let slot = slotOf[Int(c)]
            if slot < 0 { continue }
            if Self.lags(t, behind: latestRaw, by: bound) {
                throw CoincidenceError.reorderBoundExceeded(
                    block: blockIndex, index: index, channel: Int(c), timestampPs: t, latestPs: latestRaw, boundPs: bound)
            }
            if t > latestRaw { latestRaw = t }
            if !activeExcluded.isEmpty, activeExcluded.contains(where: { t >= $0.startPs && t < $0.stopPs }) {
                dropped += 1
                continue
            }
            if firstRaw.map({ t < $0 }) ?? true { firstRaw = t }
            if lastRaw.map({ t > $0 }) ?? true { lastRaw = t }
            let delayed = t &+ delayOfSlot[Int(slot)]
            if delayed < previous { sorted = false }
            previous = delayed
            times.append(delayed)
            slots.append(slot)
        }
        if !sorted { sortPending() }
        // Every tag still to come has raw time ≥ latest − bound, so delayed time ≥ horizon.
        guard latestRaw != .min else { return }
        let settled = Self.saturating(latestRaw, -bound)
        process(before: Self.saturating(settled, minDelay))
        activeExcluded.removeAll { $0.stopPs <= settled }
    }

    /// Counts the tags still held back and returns the totals.
    public mutating func finish() -> CoincidenceResult {
        process(before: .max)
        var r = CoincidenceResult()
        let k = channelOfSlot.count
        for (s, c) in channelOfSlot.enumerated() { r.singles[c] = singles[s] }
        for (p, pair) in configuration.pairs.enumerated() {
            let a = Int(slotOf[pair.a]), b = Int(slotOf[pair.b])
            r.coincidences[pair] = a == b ? pairMatrix[a * k + a] : pairMatrix[a * k + b] + pairMatrix[b * k + a]
            if configuration.offsetWindowPs != nil, pair.a != pair.b { r.offsetCoincidences[pair] = offsetCounts[p] }
        }
        for (g, group) in configuration.groups.enumerated() { r.nfold[group] = nfoldCounts[g] }
        r.histograms = configuration.correlations.enumerated().map { h, spec in
            CorrelationHistogram(spec: spec, counts: Array(histogramCounts[histogramBases[h]..<histogramBases[h + 1]]))
        }
        r.excluded = Self.merge(allExcluded)
        r.droppedTags = dropped
        r.firstPs = firstRaw
        r.lastPs = lastRaw
        return r
    }

    /// True when `t` is more than `bound` earlier than `latest` (never true before any tag).
    static func lags(_ t: Int64, behind latest: Int64, by bound: Int64) -> Bool {
        guard latest != .min else { return false }
        let (d, overflow) = latest.subtractingReportingOverflow(t)
        return overflow ? latest > t : d > bound
    }

    static func saturating(_ a: Int64, _ b: Int64) -> Int64 {
        let (s, overflow) = a.addingReportingOverflow(b)
        return overflow ? (b > 0 ? .max : .min) : s
    }

    static func merge(_ intervals: [ExcludedInterval]) -> [ExcludedInterval] {
        var out: [ExcludedInterval] = []
        for i in intervals.sorted(by: { ($0.startPs, $0.stopPs) < ($1.startPs, $1.stopPs) }) {
            if let last = out.last, i.startPs <= last.stopPs {
                out[out.count - 1].stopPs = max(last.stopPs, i.stopPs)
                if !last.reason.split(separator: "+").contains(Substring(i.reason)) { out[out.count - 1].reason += "+" + i.reason }
            } else {
                out.append(i)
            }
        }
        return out
    }

    /// A marker may arrive after tags inside its interval (within the bound): drop those.
    private mutating func dropPendingInsideExcluded() {
        var keptTimes: [Int64] = [], keptSlots: [Int32] = []
        for i in next..<times.count {
            let raw = times[i] - delayOfSlot[Int(slots[i])]
            if activeExcluded.contains(where: { raw >= $0.startPs && raw < $0.stopPs }) {
                dropped += 1
            } else {
                keptTimes.append(times[i])
                keptSlots.append(slots[i])
            }
        }
        times.replaceSubrange(next..., with: keptTimes)
        slots.replaceSubrange(next..., with: keptSlots)
        // First/last accepted bounds may now be loose; recompute from what is left is not
        // possible for processed history, so they stay as an envelope of accepted tags.
    }

    /// Sorts the pending (unprocessed) tags by time, ties by slot, so the order never
    /// depends on how tags were split into blocks.
    private mutating func sortPending() {
        let order = (next..<times.count).sorted { (times[$0], slots[$0]) < (times[$1], slots[$1]) }
        let t = order.map { times[$0] }, s = order.map { slots[$0] }
        times.replaceSubrange(next..., with: t)
        slots.replaceSubrange(next..., with: s)
    }

    /// Counts every pending tag earlier than `horizon`, looking back at earlier tags within reach.
    private mutating func process(before horizon: Int64) {
        let k = channelOfSlot.count
        let half = self.half, reach = self.reach
        let hasActions = !actions.isEmpty
        let hasGroups = !configuration.groups.isEmpty
        let offset = configuration.offsetWindowPs ?? 0
        var near = [Int](repeating: 0, count: k)
        var i = next
        // Move the accumulators into locals (no copy) so the closures below touch no `self`.
        var singles = self.singles, matrix = self.pairMatrix
        var histogramCounts = self.histogramCounts, offsetCounts = self.offsetCounts, nfoldCounts = self.nfoldCounts
        self.singles = []; self.pairMatrix = []; self.histogramCounts = []; self.offsetCounts = []; self.nfoldCounts = []
        defer {
            self.singles = singles; self.pairMatrix = matrix; self.histogramCounts = histogramCounts
            self.offsetCounts = offsetCounts; self.nfoldCounts = nfoldCounts
        }
        let actions = self.actions, actionStart = self.actionStart, groupsBySlot = self.groupsBySlot
        let histograms = configuration.correlations.enumerated().map { h, spec in
            (base: histogramBases[h], range: spec.rangePs, width: spec.binWidthPs, samePair: spec.pair.a == spec.pair.b)
        }
        // Hot loop: buffer pointers drop bounds checks; j stays in [0, i), i in [next, count).
        histogramCounts.withUnsafeMutableBufferPointer { bins in
            times.withUnsafeBufferPointer { ts in
                slots.withUnsafeBufferPointer { sl in
                    singles.withUnsafeMutableBufferPointer { singles in
                        matrix.withUnsafeMutableBufferPointer { matrix in
                            let n = ts.count
                            while i < n {
                                let t = ts[i]
                                if t >= horizon { break }
                                let c = Int(sl[i])
                                singles[c] &+= 1
                                var j = i &- 1
                                var anyNear = false
                                while j >= 0 {
                                    let d = t &- ts[j]
                                    if d > reach { break }
                                    let cj = Int(sl[j])
                                    if d <= half {
                                        matrix[cj &* k &+ c] &+= 1
                                        if hasGroups { near[cj] &+= 1; anyNear = true }
                                    }
                                    if hasActions {
                                        for a in actionStart[cj &* k &+ c]..<actionStart[cj &* k &+ c &+ 1] {
                                            let action = actions[a]
                                            switch action {
                                            case .histogram(let h, let sign):
                                                let spec = histograms[h]
                                                let shifted = sign &* d &+ spec.range
                                                if shifted >= 0 && shifted < 2 &* spec.range {
                                                    bins[spec.base &+ Int(shifted / spec.width)] &+= 1
                                                }
                                                // Same-channel histograms see each pair once; Δ and −Δ both occur.
                                                if spec.samePair, d > 0 {
                                                    let mirrored = spec.range &- d
                                                    if mirrored >= 0 && mirrored < 2 &* spec.range {
                                                        bins[spec.base &+ Int(mirrored / spec.width)] &+= 1
                                                    }
                                                }
                                            case .offset(let p, let sign):
                                                if abs(sign &* d &- offset) <= half { offsetCounts[p] &+= 1 }
                                            }
                                        }
                                    }
                                    j &-= 1
                                }
                                if anyNear {
                                    for (g, others) in groupsBySlot[c] {
                                        var product = 1
                                        for o in others { product &*= near[o] }
                                        nfoldCounts[g] &+= product
                                    }
                                    for s in 0..<k { near[s] = 0 }
                                }
                                i &+= 1
                            }
                        }
                    }
                }
            }
        }
        next = i
        // History older than reach before the next tag to count can never pair again.
        let oldest = next < times.count ? min(times[next], horizon) : horizon
        let keepFrom = Self.saturating(oldest, -reach)
        var drop = 0
        while drop < next && times[drop] < keepFrom { drop += 1 }
        if drop > 0 && (drop >= 4096 || drop == times.count) && drop * 2 >= next {
            times.removeFirst(drop)
            slots.removeFirst(drop)
            next -= drop
        }
    }
}
