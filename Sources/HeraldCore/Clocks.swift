// The clocks of several taggers: how each maps to the reference tagger's time base (the model
// a calibration finds), and how a run follows them (the script's `clocks:` section). The
// calibration and the merge are in HeraldAnalysis.

/// How one tagger's clock maps to the reference's.
public struct ClockModel: Sendable, Codable, Equatable {
    public var tagger: String
    public var reference: String
    /// offset(epoch): local − reference, in ps.
    public var offsetPs: Double
    /// Fractional frequency error: 1e-6 is 1 ppm (the local clock runs fast by that much).
    public var drift: Double
    public var epochPs: Int64
    public var offsetErrorPs: Double
    public var driftError: Double
    /// "pps" or "correlation".
    public var source: String
    /// How: the method and its parameters, for the record.
    public var method: String
    /// RMS of the per-segment (or per-mark) offsets about the model, in ps.
    public var residualRmsPs: Double
    /// χ² per degree of freedom of the final fit (1 for a clock that only drifts; more when it wanders).
    public var reducedChiSquare: Double
    /// Pairs (correlation) or marks (PPS) the fit used.
    public var samples: Int
    /// Tracking: (local time, offset) knots through which the offset is interpolated linearly;
    /// empty for a purely linear model.
    public var knots: [Knot] = []

    public struct Knot: Sendable, Codable, Equatable {
        public var localPs: Int64
        public var offsetPs: Double
        public var errorPs: Double

        public init(localPs: Int64, offsetPs: Double, errorPs: Double) {
            self.localPs = localPs
            self.offsetPs = offsetPs
            self.errorPs = errorPs
        }
    }

    public init(
        tagger: String, reference: String, offsetPs: Double, drift: Double, epochPs: Int64, offsetErrorPs: Double = 0, driftError: Double = 0,
        source: String = "given", method: String = "", residualRmsPs: Double = 0, reducedChiSquare: Double = 1, samples: Int = 0
    ) {
        self.tagger = tagger
        self.reference = reference
        self.offsetPs = offsetPs
        self.drift = drift
        self.epochPs = epochPs
        self.offsetErrorPs = offsetErrorPs
        self.driftError = driftError
        self.source = source
        self.method = method
        self.residualRmsPs = residualRmsPs
        self.reducedChiSquare = reducedChiSquare
        self.samples = samples
    }

    /// local − reference at local time `t`.
    @inlinable public func offset(at t: Int64) -> Double {
        if knots.count >= 2 {
            // Linear between knots, the fitted line beyond them.
            if t >= knots[0].localPs && t <= knots[knots.count - 1].localPs {
                var lo = 0, hi = knots.count - 1
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2
                    if knots[mid].localPs <= t { lo = mid } else { hi = mid }
                }
                let a = knots[lo], b = knots[hi]
                let span = Double(b.localPs - a.localPs)
                let f = span > 0 ? Double(t - a.localPs) / span : 0
                return a.offsetPs + f * (b.offsetPs - a.offsetPs)
            }
        }
        return offsetPs + drift * Double(t - epochPs)
    }

    /// The reference time of a local time.
    @inlinable public func toReference(_ t: Int64) -> Int64 { t - Int64(offset(at: t).rounded()) }
}

/// A script's `clocks:` section: which tagger is the time base of the merged stream, and how
/// each other tagger's clock is followed to it through the run.
public struct ClocksSpec: Sendable, Codable, Equatable {
    public var reference: String
    public var taggers: [Tagger]

    public struct Tagger: Sendable, Codable, Equatable {
        public var name: String
        /// Added to its channel numbers in the merged stream, so two taggers' inputs stay apart.
        public var channelOffset: Int
        public var tracking: Tracking

        public init(name: String, channelOffset: Int, tracking: Tracking) {
            self.name = name
            self.channelOffset = channelOffset
            self.tracking = tracking
        }
    }

    public enum Tracking: Sendable, Codable, Equatable {
        /// Follows the sync marks (PPS, White Rabbit) both taggers record: each mark paired with
        /// the reference's of the same second gives a knot, and the offset is interpolated
        /// between knots; `smoothing` marks either side go into each knot's line (for a GPS
        /// PPS's nanosecond jitter). Tags wait for the knot after them.
        case marks(channel: Int, referenceChannel: Int, smoothing: Int)
        /// A model calibrated beforehand (`herald calibrate-clocks --out`), fixed through the run.
        case model(ClockModel, file: String)
        /// Calibrated by the run itself at each `calibrate_clocks` step, from photons both
        /// taggers saw (the cross-correlation's peak, coarse to fine): the reference's
        /// `referenceChannels` against this tagger's `channels`, the offset searched within
        /// ±`rangePs` and the drift within ±`maxDrift`. Fixed between calibrations.
        case correlation(referenceChannels: [Int], channels: [Int], rangePs: Int64, maxDrift: Double)
        /// Uncorrected: only the channels shifted (what no tracking costs).
        case none
    }

    /// Data sets (named acquisitions of every tagger) whose tags calibrate the `correlation`
    /// clocks: the script's `calibrate_clocks` steps.
    public var calibrations: [String] = []

    public init(reference: String, taggers: [Tagger], calibrations: [String] = []) {
        self.reference = reference
        self.taggers = taggers
        self.calibrations = calibrations
    }

    enum CodingKeys: String, CodingKey { case reference, taggers, calibrations }

    /// `calibrations` may be absent (plans stored before calibrate_clocks steps).
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        reference = try c.decode(String.self, forKey: .reference)
        taggers = try c.decode([Tagger].self, forKey: .taggers)
        calibrations = try c.decodeIfPresent([String].self, forKey: .calibrations) ?? []
    }

    /// The reference, then the others.
    public var members: [String] { [reference] + taggers.map(\.name) }
}
