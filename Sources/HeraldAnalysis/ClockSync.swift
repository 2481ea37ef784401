import Foundation
import HeraldCore

// One time base for several taggers. Each tagger counts on its own clock; a ClockModel maps its
// local times to the reference tagger's: t_ref = t_local − offset(t_local), with offset(t) =
// offsetPs + drift · (t − epochPs), optionally refined by knots (piecewise-linear tracking of
// a clock that wanders). Calibration finds the model from PPS marks recorded by both taggers
// or from photons both saw (the cross-correlation's peak), coarse to fine, with 1σ errors.

/// Why a clock could not be calibrated; each names the tagger.
public enum ClockCalibrationError: Error, CustomStringConvertible, Sendable, Equatable {
    case noOverlap(tagger: String, reference: String, taggerSpan: ClosedRange<Int64>, referenceSpan: ClosedRange<Int64>)
    case noMarks(tagger: String, channel: Int)
    case tooFewTags(tagger: String, count: Int)
    case noCorrelation(tagger: String, searchPs: Int64, significance: Double)
    case driftBeyondRange(tagger: String, drift: Double, maxDrift: Double)
    /// Tags from a tagger the run's `clocks:` section does not place in the time base.
    case notInClocks(tagger: String, reference: String)
    /// Tags of a correlation-tracked tagger before its first `calibrate_clocks` step.
    case notCalibrated(tagger: String)
    /// A `calibrate_clocks` acquisition kept more photons than a calibration may hold.
    case calibrationTooLong(tagger: String, limit: Int)
    /// A tagger's channel, shifted by its channel_offset, beyond the merged stream's 255.
    case channelOutOfRange(tagger: String, channel: Int, offset: Int)
    /// A point ended before any of the tagger's sync marks could be paired with the reference's.
    case noMarksYet(tagger: String, channel: Int, referenceChannel: Int)

    public var description: String {
        switch self {
        case .noOverlap(let t, let r, let a, let b):
            return "tagger '\(t)' and reference '\(r)' do not overlap in time (\(t): \(a.lowerBound)…\(a.upperBound) ps, "
                + "\(r): \(b.lowerBound)…\(b.upperBound) ps): calibrate recordings made at the same time"
        case .noMarks(let t, let ch):
            return "tagger '\(t)': channel \(ch) has no marks (at least two PPS or sync marks are needed): check which input the PPS is on"
        case .tooFewTags(let t, let n):
            return "tagger '\(t)': \(n) tags are too few to calibrate from (at least 100 in the overlap)"
        case .noCorrelation(let t, let s, let sig):
            return "tagger '\(t)': no correlation peak with the reference within ±\(Double(s) / 1e6) µs that holds over the recording "
                + "(the tallest \(String(format: "%.1f", sig))σ above background, in one window): check that both taggers see the same photons, "
                + "widen the search, acquire longer, or allow a larger drift"
        case .noMarksYet(let t, let c, let r):
            return "tagger '\(t)': no sync mark on its channel \(c) could be paired with one on the reference's channel \(r) by the end of the point: "
                + "a point must span at least one mark (a second, for a PPS), both taggers must record the marks, and their clocks must agree to within half a mark period; "
                + "or give the clock a model (track: model)"
        case .channelOutOfRange(let t, let c, let o):
            return "tagger '\(t)' delivered a tag on its channel \(c), which its channel_offset \(o) puts beyond 255: lower clocks.taggers.\(t).channel_offset"
        case .notCalibrated(let t):
            return "tagger '\(t)' is tracked by correlation but a point ended before its first calibrate_clocks step: calibrate before the first point"
        case .calibrationTooLong(let t, let n):
            return "tagger '\(t)': the calibrate_clocks acquisition kept more than \(n) photons a side: shorten it, or calibrate on fewer channels"
        case .notInClocks(let t, let r):
            return "tagger '\(t)' delivered tags but is not in the run's clocks: section (reference '\(r)'): list it under clocks.taggers"
        case .driftBeyondRange(let t, let d, let m):
            return "tagger '\(t)': its clock seems to drift by \(String(format: "%.3g", d * 1e6)) ppm, beyond the search range of ±\(String(format: "%.3g", m * 1e6)) ppm: "
                + "widen --max-drift if it does, or check that both taggers see the same photons (peaks that are not shared photons can line up by chance)"
        }
    }
}

public enum ClockCalibration {
    /// Options of the correlation search.
    public struct Search: Sendable {
        /// The offset is looked for within ±this (ps).
        public var rangePs: Int64 = 10_000_000
        /// The largest drift the search allows (fractional).
        public var maxDrift: Double = 20e-6
        /// Segments the overlap is cut into: each gives one offset, the line through them the drift.
        public var segments: Int = 32
        /// The coarse histogram's smallest bin (ps); at least 1/200 of the range, and widened
        /// with the window when a window is too sparse for a clear peak.
        public var coarseBinPs: Int64 = 1000
        /// A model known before (the last calibration): the search is centred on its offset
        /// rather than on zero.
        public var prior: ClockModel?
        public init() {}
    }

    /// One segment's offset measurement.
    struct SegmentOffset {
        var midPs: Double
        var offsetPs: Double
        var errorPs: Double
        var pairs: Int
    }

    /// The model mapping `local` (tagger `name`) to `reference` from photons both saw: the
    /// cross-correlation peak, found coarse (a histogram per segment, the line through the
    /// segments' peaks) then fine (the background-subtracted centroid of each segment's peak
    /// about that line, and a weighted line through those). Both streams in time order.
    public static func fromCorrelation(
        reference: [Int64], local: [Int64], tagger name: String, referenceName: String = "reference", search: Search = Search()
    ) throws(ClockCalibrationError) -> ClockModel {
        guard let r0 = reference.first, let r1 = reference.last, let l0 = local.first, let l1 = local.last else {
            throw .tooFewTags(tagger: name, count: min(reference.count, local.count))
        }
        // Overlap allowing for the largest offset.
        let start = max(l0, r0 - search.rangePs), stop = min(l1, r1 + search.rangePs)
        guard start < stop else { throw .noOverlap(tagger: name, reference: referenceName, taggerSpan: l0...l1, referenceSpan: r0...r1) }
        let lo = lowerBound(local, start), hi = lowerBound(local, stop)
        guard hi - lo >= 100 else { throw .tooFewTags(tagger: name, count: hi - lo) }
        let k = max(3, min(search.segments, (hi - lo) / 200))
        let epoch = local[lo]
        let span = Double(local[hi - 1] - epoch)
        // Every tag at one instant (a damaged file): no windows to search.
        guard span > 0 else { throw .tooFewTags(tagger: name, count: 1) }

        // Coarse, tracking: short windows, each short enough that the largest drift smears its
        // peak over at most one bin, searched ±range about the offset the windows before it
        // predict. They start at the overlap's beginning and step out geometrically (each twice
        // as far as the last), so the prediction stays good to about a bin however far the
        // offset has walked by the end; then more fill the gaps. A window too sparse for a
        // clear peak doubles every window (and the bin with it) and the search starts over.
        var coarseBin = max(search.coarseBinPs, search.rangePs / 200, 1)
        // Short enough that the largest drift smears a window's peak over at most a bin, and at
        // most an eighth of the span: the coarse line needs windows to draw its slope through
        // (a recording shorter than a window would give one peak, and no drift).
        var windowPs = min(Double(coarseBin) / max(search.maxDrift, 1e-12), span / 8)
        var coarse: [SegmentOffset] = []
        var best = 0.0
        search: while true {
            var centres: [Double] = []
            var c = windowPs / 2
            while c < span - windowPs / 2 {
                centres.append(c)
                c = max(c * 2, c + windowPs)
            }
            centres.append(max(windowPs / 2, span - windowPs / 2))
            let fill = max(0, 48 - centres.count)
            for f in 0..<fill { centres.append(span * (Double(f) + 0.5) / Double(fill)) }
            coarse = []
            best = 0
            var tried = 0
            for centre in centres {
                let a = lowerBound(local, epoch + Int64(centre - windowPs / 2)), b = lowerBound(local, epoch + Int64(centre + windowPs / 2))
                // A window in a gap of the recording (the source off, a burst's end) says nothing.
                guard b - a >= 20 else { continue }
                tried += 1
                let prior = search.prior.map { $0.offset(at: epoch + Int64(centre)) } ?? 0
                let predicted = coarse.isEmpty ? prior : (leastSquares(coarse).map { $0.intercept + $0.slope * centre } ?? coarse[0].offsetPs)
                let (peak, significance, pairs) = coarsePeak(
                    reference, local, a..<b, aroundPs: Int64(predicted.rounded()), rangePs: search.rangePs, binPs: coarseBin)
                best = max(best, significance)
                if significance >= 5 && pairs >= 10 {
                    coarse.append(SegmentOffset(midPs: centre, offsetPs: peak, errorPs: Double(coarseBin), pairs: pairs))
                } else if coarse.isEmpty && tried >= 3 {
                    break  // the first windows find nothing: longer ones
                }
            }
            if coarse.count >= 3 && coarse.count * 5 >= tried * 3 { break search }
            guard windowPs * 2 <= span / 3 else { throw .noCorrelation(tagger: name, searchPs: search.rangePs, significance: best) }
            windowPs *= 2
            coarseBin = max(coarseBin, Int64((search.maxDrift * windowPs).rounded(.up)))
        }
        guard let line = robustLine(coarse) else { throw .noCorrelation(tagger: name, searchPs: search.rangePs, significance: best) }
        // Windows whose peak is far from the line found a chance peak: when most do, there is
        // no one peak to track (no shared photons, or a drift beyond the range smearing it).
        let consistent = coarse.filter { abs($0.offsetPs - (line.intercept + line.slope * $0.midPs)) <= 3 * Double(coarseBin) }
        guard consistent.count * 2 > coarse.count else {
            throw .noCorrelation(tagger: name, searchPs: search.rangePs, significance: best)
        }
        guard abs(line.slope) <= search.maxDrift else { throw .driftBeyondRange(tagger: name, drift: line.slope, maxDrift: search.maxDrift) }

        // Fine: each segment's centroid about the line, three times: the coarse line's slope is
        // good only to a bin over the span, which smears a long segment's peak; each pass's
        // weighted line is the next one's, in a window narrowed to the scatter it left.
        var window = 3 * Double(coarseBin)
        var fine: [SegmentOffset] = []
        var current = line
        var fit = Line(intercept: line.intercept, slope: line.slope, interceptError: .infinity, slopeError: .infinity, residualRms: 0, reducedChiSquare: 1)
        for pass in 0..<3 {
            var found: [SegmentOffset] = []
            for s in 0..<k {
                let a = lo + (hi - lo) * s / k, b = lo + (hi - lo) * (s + 1) / k
                guard b > a else { continue }
                // The first passes only steer the line: a sample of each segment is enough.
                let step = pass < 2 ? max(1, (b - a) / 8_000) : 1
                if let f = finePeak(reference, local, a..<b, step: step, epoch: epoch, line: current, windowPs: window) { found.append(f) }
            }
            guard found.count >= 2 else {
                if pass == 0 { throw .noCorrelation(tagger: name, searchPs: search.rangePs, significance: best) }
                break
            }
            fine = found
            fit = weightedLine(fine)
            current = (fit.intercept, fit.slope)
            window = min(window, max(2000, 20 * fit.residualRms))
        }
        // The coarse line was within the range: a fine line beyond it was fitted to chance
        // centroids, not to a peak both taggers share.
        guard abs(fit.slope) <= search.maxDrift else { throw .noCorrelation(tagger: name, searchPs: search.rangePs, significance: best) }
        var model = ClockModel(
            tagger: name, reference: referenceName, offsetPs: fit.intercept, drift: fit.slope, epochPs: epoch,
            offsetErrorPs: fit.interceptError, driftError: fit.slopeError, source: "correlation",
            method: "cross-correlation: \(coarse.count) coarse windows of \(Int64(windowPs)) ps (bin \(coarseBin) ps within ±\(search.rangePs) ps), then centroids of \(k) segments, three passes, the last within ±\(Int(window)) ps",
            residualRmsPs: fit.residualRms, reducedChiSquare: fit.reducedChiSquare, samples: fine.reduce(0) { $0 + $1.pairs })
        model.knots = fine.map { ClockModel.Knot(localPs: epoch + Int64($0.midPs.rounded()), offsetPs: $0.offsetPs, errorPs: $0.errorPs) }
        return model
    }

    /// The model from PPS (or any periodic sync) marks both taggers recorded: each local mark
    /// paired with the reference mark of the same second, and a line through their differences.
    public static func fromMarks(
        reference: [Int64], local: [Int64], tagger name: String, referenceName: String = "reference", referenceChannel: Int, channel: Int,
        maxDrift: Double = 1e-3
    ) throws(ClockCalibrationError) -> ClockModel {
        guard reference.count >= 2 else { throw .noMarks(tagger: referenceName, channel: referenceChannel) }
        guard local.count >= 2 else { throw .noMarks(tagger: name, channel: channel) }
        guard let r0 = reference.first, let r1 = reference.last, let l0 = local.first, let l1 = local.last else {
            throw .noMarks(tagger: name, channel: channel)
        }
        var steps = zip(reference.dropFirst(), reference).map { $0 - $1 }
        steps.sort()
        let period = steps[steps.count / 2]
        guard period > 0 else { throw .noMarks(tagger: referenceName, channel: referenceChannel) }
        // The first local mark's nearest reference mark gives the offset to within a period.
        let first = nearest(reference, l0)
        let coarse = l0 - reference[first]
        var pairs: [(Double, Double)] = []
        for t in local {
            let i = nearest(reference, t - coarse)
            let d = t - reference[i]
            if abs(d - coarse) < period / 2 { pairs.append((Double(t - l0), Double(d))) }
        }
        guard pairs.count >= 2 else {
            throw .noOverlap(tagger: name, reference: referenceName, taggerSpan: l0...l1, referenceSpan: r0...r1)
        }
        let segments = pairs.map { SegmentOffset(midPs: $0.0, offsetPs: $0.1, errorPs: 1, pairs: 1) }
        // Unit weights: the fit scales its errors by the scatter, which is the marks' jitter.
        let fit = weightedLine(segments)
        let jitter = fit.residualRms
        guard abs(fit.slope) <= maxDrift else { throw .driftBeyondRange(tagger: name, drift: fit.slope, maxDrift: maxDrift) }
        return ClockModel(
            tagger: name, reference: referenceName, offsetPs: fit.intercept, drift: fit.slope, epochPs: l0, offsetErrorPs: fit.interceptError,
            driftError: fit.slopeError, source: "pps", method: "marks: channel \(channel) against the reference's channel \(referenceChannel), period \(period) ps",
            residualRmsPs: jitter, reducedChiSquare: 1, samples: pairs.count)
    }

    // MARK: Pieces

    static func lowerBound(_ a: [Int64], _ x: Int64) -> Int { a.firstIndex(notBelow: x) }

    static func nearest(_ a: [Int64], _ x: Int64) -> Int {
        let i = lowerBound(a, x)
        if i == 0 { return 0 }
        if i == a.count { return a.count - 1 }
        return x - a[i - 1] <= a[i] - x ? i - 1 : i
    }

    /// The tallest bin of local − reference − aroundPs over `range` of the local tags, within
    /// ±rangePs: (its centre as an offset, its height above the mean bin in Poisson σ, the pairs in it).
    static func coarsePeak(
        _ reference: [Int64], _ local: [Int64], _ range: Range<Int>, aroundPs: Int64, rangePs: Int64, binPs: Int64
    ) -> (Double, Double, Int) {
        let bins = Int((2 * rangePs) / binPs) + 1
        var counts = [Int32](repeating: 0, count: bins)
        // At most 50 k tags a window: the coarse peak needs far fewer.
        let stride = max(1, range.count / 50_000)
        reference.withUnsafeBufferPointer { ref in
            local.withUnsafeBufferPointer { loc in
                var j = lowerBound(reference, loc[range.lowerBound] - aroundPs - rangePs)
                var i = range.lowerBound
                while i < range.upperBound {
                    let t = loc[i] - aroundPs
                    while j < ref.count && ref[j] < t - rangePs { j += 1 }
                    var m = j
                    while m < ref.count && ref[m] <= t + rangePs {
                        let b = Int((t - ref[m] + rangePs) / binPs)
                        if b >= 0 && b < bins { counts[b] &+= 1 }
                        m += 1
                    }
                    i += stride
                }
            }
        }
        guard let peak = counts.indices.max(by: { counts[$0] < counts[$1] }) else { return (0, 0, 0) }
        // The background: the mean of the other bins (a median is 0 in a sparse histogram).
        let total = counts.reduce(0) { $0 + Int($1) }
        let background = Double(total - Int(counts[peak])) / Double(max(1, bins - 1))
        let significance = (Double(counts[peak]) - background) / max(background, 1).squareRoot()
        let centre = Double(aroundPs + Int64(peak) * binPs - rangePs) + Double(binPs) / 2
        return (centre, significance, Int(counts[peak]))
    }

    /// Unweighted least squares through the coarse points so far (the tracking's prediction).
    static func leastSquares(_ points: [SegmentOffset]) -> (intercept: Double, slope: Double)? {
        guard points.count >= 2 else { return points.first.map { ($0.offsetPs, 0) } }
        let n = Double(points.count)
        let mx = points.reduce(0) { $0 + $1.midPs } / n, my = points.reduce(0) { $0 + $1.offsetPs } / n
        var sxx = 0.0, sxy = 0.0
        for p in points {
            sxx += (p.midPs - mx) * (p.midPs - mx)
            sxy += (p.midPs - mx) * (p.offsetPs - my)
        }
        guard sxx > 0 else { return (my, 0) }
        let slope = sxy / sxx
        return (my - slope * mx, slope)
    }

    /// The centroid of local − reference − line(t) within ±windowPs, with a flat background
    /// (from the window's outer thirds) subtracted, iterated to ±4 RMS of the peak.
    static func finePeak(
        _ reference: [Int64], _ local: [Int64], _ range: Range<Int>, step: Int = 1, epoch: Int64, line: (intercept: Double, slope: Double),
        windowPs: Double
    ) -> SegmentOffset? {
        var residuals: [Double] = []
        residuals.reserveCapacity(range.count / step + 1)
        reference.withUnsafeBufferPointer { ref in
            local.withUnsafeBufferPointer { loc in
                let w = Int64(windowPs.rounded(.up))
                let predicted0 = ClockMerge.nearest(line.intercept + line.slope * Double(loc[range.lowerBound] - epoch))
                var j = lowerBound(reference, loc[range.lowerBound] - predicted0 - w)
                for i in Swift.stride(from: range.lowerBound, to: range.upperBound, by: step) {
                    let t = loc[i]
                    let predicted = line.intercept + line.slope * Double(t - epoch)
                    let target = t - ClockMerge.nearest(predicted)
                    while j < ref.count && ref[j] < target - w { j += 1 }
                    var m = j
                    while m < ref.count && ref[m] <= target + w {
                        residuals.append(Double(t - ref[m]) - predicted)
                        m += 1
                    }
                }
            }
        }
        guard residuals.count >= 10 else { return nil }
        // Background density from |r| in the outer third of the window.
        var outerCount = 0
        for r in residuals where abs(r) > windowPs * 2 / 3 { outerCount += 1 }
        let density = Double(outerCount) / (windowPs * 2 / 3)  // per ps, both sides together over 2·(w/3)
        // Start at the mode, not the mean: a recording's own correlations (bunching, a second
        // peak) would pull a mean off the sharp peak of the photons both taggers saw.
        let bins = 256
        let binWidth = 2 * windowPs / Double(bins)
        var histogram = [Int](repeating: 0, count: bins)
        for r in residuals {
            let b = Int(((r + windowPs) / binWidth).rounded(.down))
            if b >= 0 && b < bins { histogram[b] += 1 }
        }
        let mode = histogram.indices.max { histogram[$0] < histogram[$1] } ?? bins / 2
        var center = -windowPs + (Double(mode) + 0.5) * binWidth, half = max(2 * binWidth, 20), signal = 0.0, rms = 0.0
        for _ in 0..<6 {
            // One pass, no copies: the count and moments of the residuals within ±half.
            var count = 0.0, sum = 0.0, squares = 0.0
            for r in residuals where abs(r - center) <= half {
                count += 1
                sum += r
                squares += r * r
            }
            let background = density * 2 * half
            let n = count - background
            guard n > 5 else { return nil }
            // Background-subtracted moments: a flat background has mean `center` and variance half²/3.
            let s1 = sum - background * center
            let s2 = squares - background * (center * center + half * half / 3)
            let next = s1 / n
            rms = max(0.5, (max(0, s2 / n - next * next)).squareRoot())
            signal = n
            let settled = abs(next - center) < 0.01
            center = next
            half = min(half, max(4 * rms, 20))
            if settled { break }
        }
        let mid = Double(local[(range.lowerBound + range.upperBound - 1) / 2] - epoch)
        return SegmentOffset(
            midPs: mid, offsetPs: line.intercept + line.slope * mid + center, errorPs: rms / signal.squareRoot(), pairs: Int(signal.rounded()))
    }

    /// A line through coarse peaks that ignores the odd wrong one: the median of the pairwise
    /// slopes (Theil–Sen) and the median intercept.
    static func robustLine(_ points: [SegmentOffset]) -> (intercept: Double, slope: Double)? {
        guard points.count >= 2 else { return nil }
        var slopes: [Double] = []
        for i in points.indices {
            for j in points.indices where j > i && points[j].midPs != points[i].midPs {
                slopes.append((points[j].offsetPs - points[i].offsetPs) / (points[j].midPs - points[i].midPs))
            }
        }
        guard !slopes.isEmpty else { return nil }
        slopes.sort()
        let slope = slopes[slopes.count / 2]
        var intercepts = points.map { $0.offsetPs - slope * $0.midPs }
        intercepts.sort()
        return (intercepts[intercepts.count / 2], slope)
    }

    struct Line {
        var intercept: Double
        var slope: Double
        var interceptError: Double
        var slopeError: Double
        var residualRms: Double
        var reducedChiSquare: Double
    }

    /// Weighted least squares y = a + b·x with the covariance from the weights; when the points
    /// scatter more than their errors say (a wandering clock), the errors are scaled by √(χ²/dof).
    static func weightedLine(_ points: [SegmentOffset]) -> Line {
        var sw = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0
        for p in points {
            let w = 1 / max(p.errorPs * p.errorPs, 1e-6)
            sw += w
            sx += w * p.midPs
            sy += w * p.offsetPs
            sxx += w * p.midPs * p.midPs
            sxy += w * p.midPs * p.offsetPs
        }
        let det = sw * sxx - sx * sx
        let slope = det != 0 ? (sw * sxy - sx * sy) / det : 0
        let intercept = (sy - slope * sx) / sw
        var chi2 = 0.0, sq = 0.0
        for p in points {
            let r = p.offsetPs - (intercept + slope * p.midPs)
            chi2 += r * r / max(p.errorPs * p.errorPs, 1e-6)
            sq += r * r
        }
        let dof = max(1, points.count - 2)
        let reduced = chi2 / Double(dof)
        let scale = max(1, reduced).squareRoot()
        return Line(
            intercept: intercept, slope: slope, interceptError: det != 0 ? (sxx / det).squareRoot() * scale : .infinity,
            slopeError: det != 0 ? (sw / det).squareRoot() * scale : .infinity, residualRms: (sq / Double(points.count)).squareRoot(),
            reducedChiSquare: reduced)
    }
}

/// Time-ordered streams of several taggers merged into one, in the reference time base.
public enum ClockMerge {
    /// Merges `reference` with `other` corrected by `model` (nil: taken as it is), `other`'s
    /// channels shifted by `channelShift` so the two taggers' inputs stay apart. Both inputs in
    /// time order; so is the result (a drift above −1 keeps a corrected stream in order).
    public static func merge(_ reference: TagBlock, _ other: TagBlock, model: ClockModel?, channelShift: UInt8 = 0) -> TagBlock {
        let na = reference.count, nb = other.count, n = na + nb
        // The second stream is corrected in a pass of its own first: done inside the merge, the
        // correction's arithmetic would lengthen the chain each step waits on (which stream
        // advanced) and halve the speed.
        let b: [Int64]
        if let model, model.knots.isEmpty {
            // Copy and correct in one pass, into a buffer of its own.
            let offset = model.offsetPs, drift = model.drift, epoch = model.epochPs
            b = [Int64](unsafeUninitializedCapacity: nb) { dst, written in
                HugePages.advise(dst)
                other.timestamps.withUnsafeBufferPointer { src in
                    for i in 0..<nb { dst[i] = src[i] &- nearest(offset + drift * Double(src[i] &- epoch)) }
                }
                written = nb
            }
        } else if let model {
            b = other.timestamps.map(model.toReference)
        } else {
            b = other.timestamps
        }
        var channels: [UInt8] = []
        let times = [Int64](unsafeUninitializedCapacity: n) { out, written in
            HugePages.advise(out)
            channels = [UInt8](unsafeUninitializedCapacity: n) { outc, writtenc in
                HugePages.advise(outc)
                reference.timestamps.withUnsafeBufferPointer { at in
                    reference.channels.withUnsafeBufferPointer { ac in
                        b.withUnsafeBufferPointer { bt in
                            other.channels.withUnsafeBufferPointer { bc in
                                mergeLoop(at, ac, bt, bc, out, outc, shift: channelShift)
                            }
                        }
                    }
                }
                writtenc = n
            }
            written = n
        }
        return TagBlock(timestamps: times, channels: channels)
    }

    /// Rounds to the nearest integer (ties to even) with neither a library call nor a range
    /// check: x + 1.5·2⁵² has the integer in its low bits, exact for |x| < 2⁵¹ ps (26 days; a
    /// correction is an offset plus ppm of the run's length).
    @inline(__always) static func nearest(_ x: Double) -> Int64 {
        let magic = 6_755_399_441_055_744.0
        return Int64(bitPattern: (x + magic).bitPattern) &- Int64(bitPattern: magic.bitPattern)
    }

    /// The merge itself, branch-free in its inner loop (which stream's tag comes next is a
    /// coin toss the predictor cannot learn).
    @inline(__always) static func mergeLoop(
        _ at: UnsafeBufferPointer<Int64>, _ ac: UnsafeBufferPointer<UInt8>, _ bt: UnsafeBufferPointer<Int64>, _ bc: UnsafeBufferPointer<UInt8>,
        _ out: UnsafeMutableBufferPointer<Int64>, _ outc: UnsafeMutableBufferPointer<UInt8>, shift: UInt8
    ) {
        let na = at.count, nb = bt.count
        var i = 0, j = 0, o = 0
        while i < na && j < nb {
            let x = at[i], y = bt[j]
            // All ones when the second stream's tag comes first (y < x), else zero; times are
            // below 2⁶² so the difference cannot overflow.
            let takeB = (y &- x) >> 63
            out[o] = (x & ~takeB) | (y & takeB)
            let m = UInt8(truncatingIfNeeded: takeB)
            outc[o] = (ac[i] & ~m) | ((bc[j] &+ shift) & m)
            i &+= 1 &+ Int(takeB)
            j &-= Int(takeB)
            o &+= 1
        }
        while i < na {
            out[o] = at[i]
            outc[o] = ac[i]
            i += 1
            o += 1
        }
        while j < nb {
            out[o] = bt[j]
            outc[o] = bc[j] &+ shift
            j += 1
            o += 1
        }
    }
}
