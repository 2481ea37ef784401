import HeraldCore

/// The tags of several taggers, each stamped by its own clock, merged as they arrive into one
/// time-ordered stream in the reference tagger's time base, as a run's `clocks:` section says.
///
/// Each tagger is a lane. The reference's tags are settled as they come; a tagger followed by
/// its sync marks is corrected by interpolating between knots (a mark of its own paired with
/// the reference's of the same second), so its tags wait for the knot after them: about one
/// mark period of tags is held, however long the run. ``flush()`` (the end of a point) settles
/// the rest, past the last knot on the line through the last two.
public struct MergedTagStream: Sendable {
    public let spec: ClocksSpec
    private var lanes: [Lane]
    private let referenceIndex = 0
    /// The latest time handed on: the stream never goes back before it (a model switched at a
    /// calibration, or an extrapolation past the last knot then an interpolation, could swap
    /// two tags by the models' disagreement, nanoseconds at most).
    private var lastOutPs = Int64.min
    /// Between ``beginCalibration()`` and ``endCalibration()``: photons are kept for it.
    private var calibrating = false
    /// The most photons a calibration keeps a side (0.8 GB): far more than a peak needs.
    public static let calibrationLimit = 100_000_000

    struct Lane: Sendable {
        var name: String
        var shift: Int
        var tracking: ClocksSpec.Tracking
        /// Tags not yet handed on: local times, channels already shifted, from `head` on.
        var times: [Int64] = []
        var channels: [UInt8] = []
        var head = 0
        /// The latest local time this lane is known to be complete to (its last tag, or the end
        /// of an acquisition it finished).
        var seenPs = Int64.min
        /// Marks tracking: its own marks not yet paired, the reference's marks seen so far
        /// (trimmed once paired), raw knots, and the knots (smoothed) the correction uses.
        var localMarks: [Int64] = []
        var referenceMarks: [Int64] = []
        var raw: [ClockModel.Knot] = []
        var knots: [ClockModel.Knot] = []
        var segment = 0
        var unpairedMarks = 0
        var periodPs: Int64 = 1_000_000_000_000
        /// Correlation tracking: the model of the last calibration, and while calibrating the
        /// photons of both sides it uses.
        var calibrated: ClockModel?
        var calibrationReference: [Int64] = []
        var calibrationLocal: [Int64] = []
        var calibrations = 0
        /// Its lost-data intervals, in its own clock, until their start is settled.
        var lostLocal: [ExcludedInterval] = []
        /// The local time of the last tag handed on.
        var lastTakenPs = Int64.min

        var pending: Int { times.count - head }
    }

    public init(spec: ClocksSpec) {
        self.spec = spec
        lanes = [Lane(name: spec.reference, shift: 0, tracking: .none)]
            + spec.taggers.map { Lane(name: $0.name, shift: $0.channelOffset, tracking: $0.tracking) }
    }

    /// Tags held, not yet settled: the stream's memory.
    public var heldTags: Int { lanes.reduce(0) { $0 + $1.pending } }

    /// A block from `device` in its own clock; returns what is now settled, merged, in the
    /// reference's time base. A device outside the `clocks:` section is refused.
    public mutating func add(_ block: TagBlock, from device: String) throws(ClockCalibrationError) -> TagBlock {
        guard let k = lanes.firstIndex(where: { $0.name == device }) else {
            throw .notInClocks(tagger: device, reference: spec.reference)
        }
        let shift = lanes[k].shift
        if shift > 0, let top = block.channels.max(), Int(top) + shift > 255 {
            throw .channelOutOfRange(tagger: device, channel: Int(top), offset: shift)
        }
        lanes[k].times.append(contentsOf: block.timestamps)
        if shift == 0 {
            lanes[k].channels.append(contentsOf: block.channels)
        } else {
            lanes[k].channels.append(contentsOf: block.channels.lazy.map { UInt8(truncatingIfNeeded: Int($0) + shift) })
        }
        if let last = block.timestamps.last { lanes[k].seenPs = max(lanes[k].seenPs, last) }
        // Mapped once its start is settled, with the correction its tags get (see drain).
        lanes[k].lostLocal += block.excluded
        // Sync marks: the lane's own, and the reference's for every lane that pairs with them.
        if case .marks(let channel, _, _) = lanes[k].tracking {
            for (t, c) in zip(block.timestamps, block.channels) where Int(c) == channel { lanes[k].localMarks.append(t) }
        }
        if k == referenceIndex {
            for j in lanes.indices {
                guard case .marks(_, let referenceChannel, _) = lanes[j].tracking else { continue }
                for (t, c) in zip(block.timestamps, block.channels) where Int(c) == referenceChannel { lanes[j].referenceMarks.append(t) }
            }
        }
        if calibrating {
            for j in lanes.indices {
                guard case .correlation(let referenceChannels, let channels, _, _) = lanes[j].tracking else { continue }
                if k == referenceIndex {
                    let wanted = Set(referenceChannels)
                    for (t, c) in zip(block.timestamps, block.channels) where wanted.contains(Int(c)) { lanes[j].calibrationReference.append(t) }
                } else if k == j {
                    let wanted = Set(channels)
                    for (t, c) in zip(block.timestamps, block.channels) where wanted.contains(Int(c)) { lanes[j].calibrationLocal.append(t) }
                }
                if lanes[j].calibrationReference.count > Self.calibrationLimit || lanes[j].calibrationLocal.count > Self.calibrationLimit {
                    throw .calibrationTooLong(tagger: lanes[j].name, limit: Self.calibrationLimit)
                }
            }
        }
        return drain(final: false)
    }

    /// `device` finished an acquisition at `stopPs` of its clock: complete to there even if its
    /// last tag came earlier.
    public mutating func covered(_ device: String, toPs stopPs: Int64) -> TagBlock {
        guard let k = lanes.firstIndex(where: { $0.name == device }) else { return TagBlock() }
        lanes[k].seenPs = max(lanes[k].seenPs, stopPs)
        return drain(final: false)
    }

    /// A `calibrate_clocks` acquisition starts: the photons of the correlation-tracked
    /// taggers and of the reference are kept until ``endCalibration()``.
    public mutating func beginCalibration() {
        calibrating = true
        for k in lanes.indices {
            lanes[k].calibrationReference = []
            lanes[k].calibrationLocal = []
        }
    }

    /// Calibrates every correlation-tracked clock from the photons kept since
    /// ``beginCalibration()``; the model holds until the next calibration.
    public mutating func endCalibration() throws(ClockCalibrationError) {
        calibrating = false
        for k in lanes.indices {
            guard case .correlation(_, _, let rangePs, let maxDrift) = lanes[k].tracking else { continue }
            var search = ClockCalibration.Search()
            search.rangePs = rangePs
            search.maxDrift = maxDrift
            // A recalibration searches about where the last one says the offset is now: the
            // clock may have walked beyond the range since (1 ppm is 60 µs a minute).
            search.prior = lanes[k].calibrated
            // Each tagger delivers in time order; the selection keeps that order.
            var model = try ClockCalibration.fromCorrelation(
                reference: lanes[k].calibrationReference, local: lanes[k].calibrationLocal, tagger: lanes[k].name,
                referenceName: spec.reference, search: search)
            lanes[k].calibrations += 1
            model.method = "calibrated by the run (calibration \(lanes[k].calibrations)): " + model.method
            lanes[k].calibrated = model
            lanes[k].calibrationReference = []
            lanes[k].calibrationLocal = []
        }
    }

    /// Before a point starts: everything held that can be placed, settled now, for the points
    /// already open; the tags of a tagger whose clock is not known yet (no paired mark, no
    /// calibration) cannot be placed, belong to no point that could count them, and are
    /// left out of the counts (they stay in the raw data).
    public mutating func settleBeforePoint() -> TagBlock {
        for k in lanes.indices {
            switch lanes[k].tracking {
            case .marks:
                Self.pair(&lanes[k], referenceSeen: lanes[referenceIndex].seenPs, final: true)
                if lanes[k].knots.isEmpty { drop(&lanes[k]) }
            case .correlation:
                if lanes[k].calibrated == nil { drop(&lanes[k]) }
            default: break
            }
        }
        return drain(final: true)
    }

    private func drop(_ lane: inout Lane) {
        lane.head = lane.times.count
        lane.lostLocal = []
    }

    /// Everything held, settled now (the end of a point or of the run).
    public mutating func flush() throws(ClockCalibrationError) -> TagBlock {
        for lane in lanes where lane.pending > 0 {
            if case .correlation = lane.tracking, lane.calibrated == nil { throw .notCalibrated(tagger: lane.name) }
        }
        for k in lanes.indices {
            guard case .marks(let channel, let referenceChannel, _) = lanes[k].tracking, lanes[k].pending > 0 else { continue }
            Self.pair(&lanes[k], referenceSeen: lanes[referenceIndex].seenPs, final: true)
            if lanes[k].knots.isEmpty { throw .noMarksYet(tagger: lanes[k].name, channel: channel, referenceChannel: referenceChannel) }
        }
        return drain(final: true)
    }

    /// The models the run followed, for the record: per tagger, the line through its knots
    /// (offset and drift with 1σ errors) and the knots themselves.
    public func models() -> [ClockModel] {
        lanes.dropFirst().map { lane in
            switch lane.tracking {
            case .model(let m, _): return m
            case .correlation:
                return lane.calibrated
                    ?? ClockModel(
                        tagger: lane.name, reference: spec.reference, offsetPs: 0, drift: 0, epochPs: 0, offsetErrorPs: .infinity,
                        driftError: .infinity, source: "correlation", method: "not calibrated yet")
            case .none:
                return ClockModel(
                    tagger: lane.name, reference: spec.reference, offsetPs: 0, drift: 0, epochPs: 0, source: "none",
                    method: "uncorrected: only the channels shifted by \(lane.shift)")
            case .marks(let channel, let referenceChannel, let smoothing):
                let epoch = lane.knots.first?.localPs ?? 0
                let points = lane.knots.map {
                    ClockCalibration.SegmentOffset(midPs: Double($0.localPs - epoch), offsetPs: $0.offsetPs, errorPs: 1, pairs: 1)
                }
                let fit = points.count >= 2 ? ClockCalibration.weightedLine(points) : nil
                var m = ClockModel(
                    tagger: lane.name, reference: spec.reference, offsetPs: fit?.intercept ?? lane.knots.first?.offsetPs ?? 0,
                    drift: fit?.slope ?? 0, epochPs: epoch, offsetErrorPs: fit?.interceptError ?? .infinity,
                    driftError: fit?.slopeError ?? .infinity, source: "pps",
                    method: "tracked through the run: marks on channel \(channel) paired with the reference's channel \(referenceChannel), "
                        + "offset interpolated between knots" + (smoothing > 0 ? ", each the line through \(2 * smoothing + 1) marks" : "")
                        + (lane.unpairedMarks > 0 ? "; \(lane.unpairedMarks) marks had no partner and were left out" : ""),
                    residualRmsPs: fit?.residualRms ?? 0, reducedChiSquare: 1, samples: lane.knots.count)
                m.knots = lane.knots
                return m
            }
        }
    }

    // MARK: Settling

    /// Pairs a lane's marks with the reference's and turns them into knots. A local mark is
    /// paired once the reference is complete past where its partner could be.
    private static func pair(_ lane: inout Lane, referenceSeen: Int64, final: Bool) {
        guard case .marks(_, _, let smoothing) = lane.tracking else { return }
        // The marks' period: the shortest step between the reference's marks seen (a PPS: 1 s;
        // an acquisition's gap is no period). Until two are seen, a second.
        for (a, b) in zip(lane.referenceMarks, lane.referenceMarks.dropFirst()) where b > a { lane.periodPs = min(lane.periodPs, b - a) }
        let period = lane.periodPs
        var used = 0
        for l in lane.localMarks {
            // Where its partner should be: on the line through the last two knots (the drift
            // carried across a gap between acquisitions), within what 100 ppm could add since;
            // the first within half a period.
            var predicted = l
            var tolerance = period / 2
            if let last = lane.raw.last {
                var drift = 0.0
                if lane.raw.count >= 2 {
                    let before = lane.raw[lane.raw.count - 2]
                    if last.localPs > before.localPs { drift = (last.offsetPs - before.offsetPs) / Double(last.localPs - before.localPs) }
                }
                predicted = l &- whole(last.offsetPs + drift * Double(l - last.localPs))
                tolerance = min(tolerance, 10_000_000 + (l - last.localPs) / 10_000)
            }
            guard final || referenceSeen >= predicted + tolerance else { break }
            used += 1
            let i = ClockCalibration.nearest(lane.referenceMarks, predicted)
            guard lane.referenceMarks.indices.contains(i), abs(lane.referenceMarks[i] - predicted) < tolerance else {
                lane.unpairedMarks += 1
                continue
            }
            lane.raw.append(ClockModel.Knot(localPs: l, offsetPs: Double(l - lane.referenceMarks[i]), errorPs: 0))
            lane.referenceMarks.removeFirst(i + 1)
        }
        lane.localMarks.removeFirst(used)
        // Knot k is the line through raw knots k − h … k + h at its mark: it waits for h more.
        let ready = final ? lane.raw.count : max(0, lane.raw.count - smoothing)
        while lane.knots.count < ready {
            let k = lane.knots.count
            let window = lane.raw[max(0, k - smoothing)...min(lane.raw.count - 1, k + smoothing)]
            var knot = lane.raw[k]
            if window.count >= 3 {
                let points = window.map {
                    ClockCalibration.SegmentOffset(midPs: Double($0.localPs - knot.localPs), offsetPs: $0.offsetPs, errorPs: 1, pairs: 1)
                }
                let fit = ClockCalibration.weightedLine(points)
                knot.offsetPs = fit.intercept
                knot.errorPs = fit.interceptError
            }
            lane.knots.append(knot)
        }
    }

    /// A correction in whole picoseconds, clamped rather than trapping: garbage knots from a
    /// damaged file give garbage times, never a crash.
    @inline(__always) static func whole(_ x: Double) -> Int64 {
        x.isFinite ? Int64(min(max(x, -0x1p61), 0x1p61).rounded()) : 0
    }

    /// local − reference at local time `t`, as its tags are corrected there (for lost
    /// intervals); arithmetic that cannot trap on a damaged file's numbers.
    private func correction(_ lane: Lane, at t: Int64) -> Int64 {
        let whole = Self.whole
        switch lane.tracking {
        case .none: return 0
        case .model(let m, _): return whole(m.offsetPs + m.drift * (Double(t) - Double(m.epochPs)))
        case .correlation: return lane.calibrated.map { whole($0.offsetPs + $0.drift * (Double(t) - Double($0.epochPs))) } ?? 0
        case .marks: return whole(Self.offset(lane, at: t))
        }
    }

    /// The reference time up to which a lane's tags can be corrected and are complete.
    private func settledReference(_ lane: Lane) -> Int64 {
        guard lane.seenPs > .min else { return .min }
        switch lane.tracking {
        case .none: return lane.seenPs
        case .model(let m, _): return m.toReference(lane.seenPs)
        // While calibrating, its tags wait for the new model rather than take the old one's
        // extrapolation a minute or more on.
        case .correlation: return calibrating ? .min : lane.calibrated.map { $0.toReference(lane.seenPs) } ?? .min
        case .marks:
            guard lane.knots.count >= 2, let last = lane.knots.last else { return .min }
            let t = min(last.localPs, lane.seenPs)
            return t &- Self.whole(Self.offset(lane, at: t))
        }
    }

    /// local − reference at local time `t`: between knots linearly, beyond them on the line
    /// through the nearest two (one knot: a constant offset).
    private static func offset(_ lane: Lane, at t: Int64) -> Double {
        let knots = lane.knots
        guard let first = knots.first else { return 0 }
        guard knots.count >= 2 else { return first.offsetPs }
        var i = min(max(lane.segment, 0), knots.count - 2)
        while i + 2 < knots.count && knots[i + 1].localPs < t { i += 1 }
        while i > 0 && knots[i].localPs > t { i -= 1 }
        let a = knots[i], b = knots[i + 1]
        let span = Double(b.localPs - a.localPs)
        return a.offsetPs + (span > 0 ? Double(t - a.localPs) / span : 0) * (b.offsetPs - a.offsetPs)
    }

    private mutating func drain(final: Bool) -> TagBlock {
        for k in lanes.indices {
            if case .marks = lanes[k].tracking { Self.pair(&lanes[k], referenceSeen: lanes[referenceIndex].seenPs, final: final) }
        }
        var cut = Int64.max
        if !final { for lane in lanes { cut = min(cut, settledReference(lane)) } }
        guard cut > .min else { return TagBlock() }
        // Each lane's tags up to the cut, corrected; then merged two at a time.
        var out: TagBlock?
        var lost: [ExcludedInterval] = []
        for k in lanes.indices {
            let part = Self.take(&lanes[k], upToReference: cut)
            out = out.map { ClockMerge.merge($0, part, model: nil) } ?? part
            // A lost interval goes out once its start is settled (a tag at or after it taken,
            // or the end), shifted by the correction at its start: the same knots whenever the
            // blocks came, so a recount places it where the run did.
            var kept: [ExcludedInterval] = []
            for e in lanes[k].lostLocal {
                if final || e.startPs <= lanes[k].lastTakenPs {
                    let o = correction(lanes[k], at: e.startPs)
                    lost.append(ExcludedInterval(startPs: e.startPs &- o, stopPs: e.stopPs &- o, reason: e.reason))
                } else {
                    kept.append(e)
                }
            }
            lanes[k].lostLocal = kept
        }
        var block = out ?? TagBlock()
        // Never back before what was handed on.
        let before = lastOutPs
        block.timestamps.withUnsafeMutableBufferPointer { p in
            var last = before
            for i in p.indices {
                if p[i] < last { p[i] = last } else { last = p[i] }
            }
        }
        if let t = block.timestamps.last { lastOutPs = max(lastOutPs, t) }
        block.excluded = lost.map { e in
            let start = max(e.startPs, before)
            return ExcludedInterval(startPs: start, stopPs: max(start, e.stopPs), reason: e.reason)
        }.filter { $0.stopPs > $0.startPs }
        return block
    }

    /// Removes and returns a lane's held tags whose reference time is at most `cut`.
    private static func take(_ lane: inout Lane, upToReference cut: Int64) -> TagBlock {
        var block = TagBlock()
        var i = lane.head
        let n = lane.times.count
        block.timestamps.reserveCapacity(n - i)
        switch lane.tracking {
        case .none:
            while i < n && lane.times[i] <= cut { i += 1 }
            block.timestamps.append(contentsOf: lane.times[lane.head..<i])
        case .model, .correlation:
            // A fixed line: the script's model, or the last calibration's (none yet: nothing settles).
            let fixed: ClockModel?
            if case .model(let m, _) = lane.tracking { fixed = m } else { fixed = lane.calibrated }
            guard let m = fixed else { break }
            while i < n {
                let r = m.toReference(lane.times[i])
                if r > cut { break }
                block.timestamps.append(r)
                i += 1
            }
        case .marks:
            // Segment by segment, the cursor only moving forward with the tags: the same
            // arithmetic as `offset(_:at:)`, without its search for every tag.
            let knots = lane.knots
            guard let first = knots.first else { break }
            var seg = min(max(lane.segment, 0), max(0, knots.count - 2))
            lane.times.withUnsafeBufferPointer { times in
                while i < n {
                    let t = times[i]
                    if knots.count >= 2 {
                        while seg + 2 < knots.count && knots[seg + 1].localPs < t { seg += 1 }
                        while seg > 0 && knots[seg].localPs > t { seg -= 1 }
                    }
                    let a = knots.count >= 2 ? knots[seg] : first, b = knots.count >= 2 ? knots[seg + 1] : first
                    let span = Double(b.localPs - a.localPs), rise = b.offsetPs - a.offsetPs
                    // The tags of this segment (or, past the last knot, of the line beyond it).
                    let end = knots.count >= 2 && seg + 2 < knots.count ? b.localPs : Int64.max
                    var stopped = false
                    while i < n {
                        let t = times[i]
                        if t > end { break }
                        let o = a.offsetPs + (span > 0 ? Double(t - a.localPs) / span : 0) * rise
                        let r = t &- whole(o)
                        if r > cut {
                            stopped = true
                            break
                        }
                        block.timestamps.append(r)
                        i += 1
                    }
                    if stopped { break }
                }
            }
            lane.segment = seg
        }
        block.channels.append(contentsOf: lane.channels[lane.head..<i])
        if i > lane.head { lane.lastTakenPs = lane.times[i - 1] }
        lane.head = i
        // Compact once half the arrays are spent, so a long run's memory stays what is held.
        if lane.head > 65_536 && lane.head * 2 > lane.times.count {
            lane.times.removeFirst(lane.head)
            lane.channels.removeFirst(lane.head)
            lane.head = 0
        }
        return block
    }
}
