import HeraldCore

/// Counts two-fold coincidences in time-sorted tags.
///
/// Two tags pair when |(t_a + delay_a) − (t_b + delay_b)| ≤ window/2, so `window`
/// is the full width of the coincidence window. Every pair of tags within the window
/// counts once (a tag may take part in several pairs, as in Swabian's and PicoQuant's
/// software); accidentals are estimated as S_a·S_b·window/T.
public struct CoincidenceCounter: Sendable {
    public var windowPs: Int64
    public var delaysPs: [Int: Int64]

    public init(window seconds: Double, delays: [Int: Double] = [:]) {
        windowPs = Int64((seconds * 1e12).rounded())
        delaysPs = delays.mapValues { Int64(($0 * 1e12).rounded()) }
    }

    /// Timestamps of one channel with its delay applied. A constant shift keeps them sorted.
    public func channel(_ channel: Int, of block: TagBlock) -> [Int64] {
        let delay = delaysPs[channel] ?? 0
        var out: [Int64] = []
        for (t, c) in zip(block.timestamps, block.channels) where Int(c) == channel { out.append(t + delay) }
        return out
    }

    /// Number of (a, b) tag pairs with 2·|t_a − t_b| ≤ window; both inputs sorted ascending.
    /// Two pointers bound the window for each `a` in O(n_a + n_b).
    public func count(_ a: [Int64], _ b: [Int64]) -> Int {
        // 2·|Δ| ≤ w ⟺ |Δ| ≤ ⌊w/2⌋ for integers, which avoids doubling (and overflowing) Δ.
        let half = windowPs >> 1
        // Hot loop: buffer pointers drop the bounds checks; indices stay within [0, count].
        return a.withUnsafeBufferPointer { a in
            b.withUnsafeBufferPointer { b in
                var lo = 0, hi = 0, total = 0
                let n = b.count
                for t in a {
                    while lo < n && t - b[lo] > half { lo &+= 1 }
                    if hi < lo { hi = lo }
                    while hi < n && b[hi] - t <= half { hi &+= 1 }
                    total &+= hi &- lo
                }
                return total
            }
        }
    }

    /// Expected accidental coincidences for singles counts `sa`, `sb` over `seconds`.
    public func accidentals(_ sa: Int, _ sb: Int, seconds: Double) -> Double {
        guard seconds > 0 else { return 0 }
        return Double(sa) * Double(sb) * Double(windowPs) * 1e-12 / seconds
    }
}
