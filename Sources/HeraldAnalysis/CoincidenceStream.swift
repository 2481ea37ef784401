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
        // Wrapping arithmetic: intervals read from a damaged file may span more than Int64
        // holds, and this must not trap (the overlap of real intervals never wraps).
        excluded.reduce(0) { $0 &+ max(0, min($1.stopPs, stopPs) &- max($1.startPs, startPs)) }
    }

    /// Time in [startPs, stopPs) in which tags were not lost, in seconds.
    public func liveSeconds(from startPs: Int64, to stopPs: Int64) -> Double {
        (Double(stopPs) - Double(startPs) - Double(excludedPs(from: startPs, to: stopPs))) * 1e-12
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
    /// How far back a tag's coincidence, n-fold and offset-window partners can be.
    private let pairReach: Int64
    /// How far back anything can pair, histograms included: how much history is kept.
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
    /// Offset-window counts for a tag pair (earlier slot j, later slot c) are
    /// offsetJobs[offsetJobStart[j·k + c] ..< offsetJobStart[j·k + c + 1]], flat for the hot loop.
    private let offsetJobs: [PairJob]
    private let offsetJobStart: [Int]
    /// Histograms a tag of slot c closes as the later tag: histogramJobs[histogramJobStart[c] ..<
    /// histogramJobStart[c + 1]], each naming the earlier tag's slot.
    private let histogramJobs: [PairJob]
    private let histogramJobStart: [Int]
    /// Histogram ranges reach much further back than the coincidence window, and most tags
    /// in reach are on channels that do not pair. So each processed tag links to the previous
    /// tag of its slot, and a histogram walks only its partner slot's chain. Links are
    /// absolute indices (historyBase + array index) so dropping old history keeps them valid.
    private var previousOfSlot: [Int] = []
    private var latestOfSlot: [Int]
    private var historyBase = 0
    private let groupsBySlot: [[(group: Int, others: [Int])]]
    private var activeExcluded: [ExcludedInterval] = []
    private var allExcluded: [ExcludedInterval] = []
    private var dropped = 0
    private var firstRaw: Int64?
    private var lastRaw: Int64?

    /// Work attached to an ordered slot pair (earlier tag's slot, later tag's slot): one
    /// histogram's bins or one pair's offset-window count. A plain struct rather than an enum
    /// with payloads so the hot loop reads it through a pointer with no switch or copies.
    struct PairJob: Sendable {
        /// The earlier tag's slot.
        var earlierSlot: Int
        /// Turns d = t_later − t_earlier into Δ = t_b − t_a.
        var sign: Int64
        /// First bin of the histogram in the flat bin array, or the offset pair's index.
        var index: Int
        var rangePs: Int64 = 0
        var widthPs: Int64 = 1
        var inverseWidth: Double = 1
        /// Same-channel histograms see each unordered pair once, so Δ and −Δ are both binned
        /// (the histogram counts ordered pairs of distinct tags, like the cross histograms).
        var mirrored = false

        /// ⌊shifted / width⌋ for 0 ≤ shifted < 2·range: a reciprocal multiply, then one
        /// correction step. 64-bit division costs more than the rest of the pair's work, and
        /// the estimate is off by at most one because the quotient is below the 10⁷-bin limit.
        @inline(__always)
        func bin(_ shifted: Int64) -> Int {
            var q = Int64(Double(shifted) * inverseWidth)
            let r = shifted &- q &* widthPs
            if r < 0 { q &-= 1 } else if r >= widthPs { q &+= 1 }
            return Int(q)
        }
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

        var byLaterSlot = [[PairJob]](repeating: [], count: k)
        var base = 0
        for spec in configuration.correlations {
            guard spec.binWidthPs > 0, spec.rangePs > 0 else {
                throw CoincidenceError.invalidConfiguration("histogram \(spec.pair.a)–\(spec.pair.b): bin width and range must be positive")
            }
            guard spec.rangePs < limit, spec.binCount <= 10_000_000 else {
                throw CoincidenceError.invalidConfiguration("histogram \(spec.pair.a)–\(spec.pair.b) would have \(spec.binCount) bins; widen the bins")
            }
            let a = Int(slotOf[spec.pair.a]), b = Int(slotOf[spec.pair.b])
            let job = PairJob(
                earlierSlot: a, sign: 1, index: base, rangePs: spec.rangePs, widthPs: spec.binWidthPs,
                inverseWidth: 1 / Double(spec.binWidthPs), mirrored: a == b)
            byLaterSlot[b].append(job)
            if a != b {
                var reversed = job
                reversed.earlierSlot = b
                reversed.sign = -1
                byLaterSlot[a].append(reversed)
            }
            base += spec.binCount
        }
        var offsetJobs = [[PairJob]](repeating: [], count: k * k)
        if configuration.offsetWindowPs != nil {
            for (p, pair) in configuration.pairs.enumerated() where pair.a != pair.b {
                let a = Int(slotOf[pair.a]), b = Int(slotOf[pair.b])
                offsetJobs[a * k + b].append(PairJob(earlierSlot: a, sign: 1, index: p))
                offsetJobs[b * k + a].append(PairJob(earlierSlot: b, sign: -1, index: p))
            }
        }
        pairReach = reach
        self.reach = configuration.correlations.reduce(reach) { max($0, $1.rangePs) }
        self.offsetJobs = offsetJobs.flatMap { $0 }
        offsetJobStart = offsetJobs.reduce(into: [0]) { $0.append($0[$0.count - 1] + $1.count) }
        histogramJobs = byLaterSlot.flatMap { $0 }
        histogramJobStart = byLaterSlot.reduce(into: [0]) { $0.append($0[$0.count - 1] + $1.count) }
        latestOfSlot = Array(repeating: -1, count: k)

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
        try append(block, previous: &previous, sorted: &sorted)
        if !sorted { sortPending() }
        // Every tag still to come has raw time ≥ latest − bound, so delayed time ≥ horizon.
        guard latestRaw != .min else { return }
        let settled = latestRaw.saturatingAdd(-bound)
        process(before: settled.saturatingAdd(minDelay))
        activeExcluded.removeAll { $0.stopPs <= settled }
    }

    /// Appends a block's wanted tags (delayed) to the pending ones, checking the reorder
    /// bound and dropping tags inside open lost-data intervals. Through buffer pointers into
    /// storage grown once per block, since per-tag appends and optional updates cost more
    /// than the counting itself.
    private mutating func append(_ block: TagBlock, previous: inout Int64, sorted: inout Bool) throws {
        let bound = configuration.reorderBoundPs
        let base = times.count, n = block.count
        times.append(contentsOf: repeatElement(0, count: n))
        slots.append(contentsOf: repeatElement(0, count: n))
        var kept = 0
        var failedAt: Int?
        var latest = latestRaw, first = firstRaw ?? .max, last = lastRaw ?? .min
        var accepted = firstRaw != nil
        var previousLocal = previous, sortedLocal = sorted
        let excluded = activeExcluded, anyExcluded = !activeExcluded.isEmpty
        var droppedLocal = 0
        times.withUnsafeMutableBufferPointer { ts in
            slots.withUnsafeMutableBufferPointer { ss in
                block.timestamps.withUnsafeBufferPointer { bt in
                    block.channels.withUnsafeBufferPointer { bc in
                        slotOf.withUnsafeBufferPointer { slotOf in
                            delayOfSlot.withUnsafeBufferPointer { delayOf in
                                for index in 0..<n {
                                    let t = bt[index]
                                    let slot = slotOf[Int(bc[index])]
                                    if slot < 0 { continue }
                                    if Self.lags(t, behind: latest, by: bound) {
                                        failedAt = index
                                        break
                                    }
                                    if t > latest { latest = t }
                                    if anyExcluded, excluded.contains(where: { t >= $0.startPs && t < $0.stopPs }) {
                                        droppedLocal &+= 1
                                        continue
                                    }
                                    if t < first { first = t }
                                    if t > last { last = t }
                                    let delayed = t &+ delayOf[Int(slot)]
                                    if delayed < previousLocal { sortedLocal = false }
                                    previousLocal = delayed
                                    ts[base &+ kept] = delayed
                                    ss[base &+ kept] = slot
                                    kept &+= 1
                                }
                            }
                        }
                    }
                }
            }
        }
        times.removeLast(n - kept)
        slots.removeLast(n - kept)
        // What was accepted before a failure stays, as in the general loop.
        accepted = accepted || kept > 0
        if accepted {
            firstRaw = first
            lastRaw = last
        }
        latestRaw = latest
        dropped += droppedLocal
        previous = previousLocal
        sorted = sortedLocal
        if let index = failedAt {
            throw CoincidenceError.reorderBoundExceeded(
                block: blockIndex, index: index, channel: Int(block.channels[index]), timestampPs: block.timestamps[index],
                latestPs: latestRaw, boundPs: bound)
        }
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

    /// Bins the tags in `range` (already counted, in time order) into the histograms, each
    /// walking back along its partner slot's chain of earlier tags. A pass of its own so the
    /// pair loop above stays small enough to keep its state in registers.
    @inline(never)
    private mutating func binHistograms(_ range: Range<Int>) {
        if previousOfSlot.count < range.upperBound {
            previousOfSlot.append(contentsOf: repeatElement(-1, count: range.upperBound - previousOfSlot.count))
        }
        let base = historyBase
        histogramCounts.withUnsafeMutableBufferPointer { bins in
            previousOfSlot.withUnsafeMutableBufferPointer { previous in
                latestOfSlot.withUnsafeMutableBufferPointer { latest in
                    histogramJobs.withUnsafeBufferPointer { jobs in
                        histogramJobStart.withUnsafeBufferPointer { jobStart in
                            times.withUnsafeBufferPointer { ts in
                                slots.withUnsafeBufferPointer { sl in
                                    for i in range {
                                        let t = ts[i], c = Int(sl[i])
                                        for h in jobStart[c]..<jobStart[c &+ 1] {
                                            let job = jobs[h]
                                            // r = absolute − base: links to dropped history are negative.
                                            var r = latest[job.earlierSlot] &- base
                                            while r >= 0 {
                                                let d = t &- ts[r]
                                                if d > job.rangePs { break }
                                                let shifted = job.sign &* d &+ job.rangePs
                                                if shifted >= 0 && shifted < 2 &* job.rangePs {
                                                    bins[job.index &+ job.bin(shifted)] &+= 1
                                                }
                                                // Ordered pairs: two tags at the same instant count twice at Δ = 0 too.
                                                if job.mirrored {
                                                    let mirrored = job.rangePs &- d
                                                    if mirrored >= 0 && mirrored < 2 &* job.rangePs {
                                                        bins[job.index &+ job.bin(mirrored)] &+= 1
                                                    }
                                                }
                                                r = previous[r] &- base
                                            }
                                        }
                                        previous[i] = latest[c]
                                        latest[c] = base &+ i
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// True when `t` is more than `bound` earlier than `latest` (never true before any tag).
    static func lags(_ t: Int64, behind latest: Int64, by bound: Int64) -> Bool {
        guard latest != .min else { return false }
        let (d, overflow) = latest.subtractingReportingOverflow(t)
        return overflow ? latest > t : d > bound
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
        let half = self.half, pairReach = self.pairReach
        let hasOffsets = !offsetJobs.isEmpty
        let hasGroups = !configuration.groups.isEmpty
        let offset = configuration.offsetWindowPs ?? 0
        var near = [Int](repeating: 0, count: k)
        let first = next
        var i = next
        // Move the accumulators into locals (no copy) so the closures below touch no `self`.
        var singles = self.singles, matrix = self.pairMatrix
        var offsetCounts = self.offsetCounts, nfoldCounts = self.nfoldCounts
        self.singles = []; self.pairMatrix = []; self.offsetCounts = []; self.nfoldCounts = []
        defer {
            self.singles = singles; self.pairMatrix = matrix
            self.offsetCounts = offsetCounts; self.nfoldCounts = nfoldCounts
        }
        let groupsBySlot = self.groupsBySlot
        // Hot loop: buffer pointers drop bounds checks; j stays in [0, i), i in [next, count).
        offsetJobs.withUnsafeBufferPointer { offsetJobs in
          offsetJobStart.withUnsafeBufferPointer { offsetJobStart in
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
                                    if d > pairReach { break }
                                    let cj = Int(sl[j])
                                    if d <= half {
                                        matrix[cj &* k &+ c] &+= 1
                                        if hasGroups { near[cj] &+= 1; anyNear = true }
                                    }
                                    if hasOffsets {
                                        for a in offsetJobStart[cj &* k &+ c]..<offsetJobStart[cj &* k &+ c &+ 1] {
                                            let job = offsetJobs[a]
                                            if abs(job.sign &* d &- offset) <= half { offsetCounts[job.index] &+= 1 }
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
        }
        if !histogramJobs.isEmpty { binHistograms(first..<i) }
        next = i
        // History older than reach before the next tag to count can never pair again.
        let oldest = next < times.count ? min(times[next], horizon) : horizon
        let keepFrom = oldest.saturatingAdd(-reach)
        // Processed tags are in time order: binary-search the first one still in reach.
        var drop = 0, upper = next
        while drop < upper {
            let mid = (drop + upper) / 2
            if times[mid] < keepFrom { drop = mid + 1 } else { upper = mid }
        }
        if drop > 0 && (drop >= 4096 || drop == times.count) && drop * 2 >= next {
            times.removeFirst(drop)
            slots.removeFirst(drop)
            if !previousOfSlot.isEmpty { previousOfSlot.removeFirst(drop) }
            historyBase += drop
            next -= drop
        }
    }
}
