import HeraldCore

/// CHSH inequality from coincidence counts with both PBS ports of each arm detected.
public enum CHSH {
    /// Counts at one setting pair: (pass,pass), (pass,reflect), (reflect,pass), (reflect,reflect).
    public struct SettingCounts: Sendable {
        public var pp, pr, rp, rr: Double
        public init(pp: Double, pr: Double, rp: Double, rr: Double) {
            (self.pp, self.pr, self.rp, self.rr) = (pp, pr, rp, rr)
        }
        public var total: Double { pp + pr + rp + rr }
        /// Correlation E = (N_pp + N_rr − N_pr − N_rp) / N.
        public var correlation: Double { total > 0 ? (pp + rr - pr - rp) / total : 0 }
        /// Poisson error of E: σ² = (1 − E²)/N (delta method on the four counts).
        public var correlationError: Double {
            total > 0 ? ((1 - correlation * correlation) / total).squareRoot() : .infinity
        }
    }

    /// S = Σ sᵢ Eᵢ over the four settings in `CHSHSettings` order, with its Poisson error.
    public static func s(_ settings: [SettingCounts]) -> (s: Double, error: Double, correlations: [Double]) {
        precondition(settings.count == CHSHSettings.signs.count)
        let e = settings.map(\.correlation)
        let s = zip(CHSHSettings.signs, e).reduce(0) { $0 + $1.0 * $1.1 }
        let err = settings.map { $0.correlationError * $0.correlationError }.reduce(0, +).squareRoot()
        return (s, err, e)
    }
}

/// Heralded second-order correlation at zero delay (Hanbury Brown–Twiss behind a herald).
public struct HeraldedG2Counts: Sendable, Equatable {
    public var heralds: Int = 0
    public var heraldAnd1: Int = 0
    public var heraldAnd2: Int = 0
    public var heraldAnd1And2: Int = 0

    public init() {}

    /// Counts herald tags with signal tags within ±window/2 (windowPs full width).
    /// For each herald, n₁ and n₂ tags in its window add n₁, n₂ and n₁·n₂ to the totals.
    public mutating func add(herald: [Int64], signal1: [Int64], signal2: [Int64], windowPs: Int64) {
        var lo1 = 0, hi1 = 0, lo2 = 0, hi2 = 0
        for t in herald {
            while lo1 < signal1.count && 2 * (t - signal1[lo1]) > windowPs { lo1 += 1 }
            if hi1 < lo1 { hi1 = lo1 }
            while hi1 < signal1.count && 2 * (signal1[hi1] - t) <= windowPs { hi1 += 1 }
            while lo2 < signal2.count && 2 * (t - signal2[lo2]) > windowPs { lo2 += 1 }
            if hi2 < lo2 { hi2 = lo2 }
            while hi2 < signal2.count && 2 * (signal2[hi2] - t) <= windowPs { hi2 += 1 }
            let n1 = hi1 - lo1, n2 = hi2 - lo2
            heraldAnd1 += n1
            heraldAnd2 += n2
            heraldAnd1And2 += n1 * n2
        }
        heralds += herald.count
    }

    public static func + (a: Self, b: Self) -> Self {
        var c = a
        c.heralds += b.heralds
        c.heraldAnd1 += b.heraldAnd1
        c.heraldAnd2 += b.heraldAnd2
        c.heraldAnd1And2 += b.heraldAnd1And2
        return c
    }

    /// g2(0) = N_h·N_h12 / (N_h1·N_h2), and its Poisson error (relative errors of the
    /// three coincidence counts in quadrature; N_h is far larger and neglected). With no
    /// triple coincidence the error is that of one count, an upper-bound scale.
    public var g2: (value: Double, error: Double) {
        guard heraldAnd1 > 0, heraldAnd2 > 0 else { return (.nan, .nan) }
        let scale = Double(heralds) / (Double(heraldAnd1) * Double(heraldAnd2))
        let value = scale * Double(heraldAnd1And2)
        let triple = max(Double(heraldAnd1And2), 1)
        let rel = (1 / triple + 1 / Double(heraldAnd1) + 1 / Double(heraldAnd2)).squareRoot()
        return (value, (heraldAnd1And2 > 0 ? value : scale) * rel)
    }
}

/// Weighted straight-line fit y = a + b·x with known y errors.
public enum LinearFit {
    public static func fit(x: [Double], y: [Double], sigma: [Double]) -> (intercept: Double, slope: Double, interceptError: Double, slopeError: Double)? {
        var s = 0.0, sx = 0.0, sy = 0.0, sxx = 0.0, sxy = 0.0
        for i in x.indices {
            let w = 1 / (sigma[i] * sigma[i])
            guard w.isFinite else { return nil }
            s += w
            sx += w * x[i]
            sy += w * y[i]
            sxx += w * x[i] * x[i]
            sxy += w * x[i] * y[i]
        }
        let d = s * sxx - sx * sx
        guard x.count >= 2, d > 0 else { return nil }
        return ((sxx * sy - sx * sxy) / d, (s * sxy - sx * sy) / d, (sxx / d).squareRoot(), (s / d).squareRoot())
    }
}
