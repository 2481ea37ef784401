import Foundation

/// xoshiro256** seeded through SplitMix64: fast, reproducible across platforms,
/// so a `--seed` gives bit-identical tag streams everywhere.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    private var s: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var x = seed
        func splitmix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s = (splitmix(), splitmix(), splitmix(), splitmix())
    }

    @inline(__always)
    public mutating func next() -> UInt64 {
        let result = rotl(s.1 &* 5, 7) &* 9
        let t = s.1 << 17
        s.2 ^= s.0
        s.3 ^= s.1
        s.1 ^= s.2
        s.0 ^= s.3
        s.2 ^= t
        s.3 = rotl(s.3, 45)
        return result
    }

    @inline(__always) private func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }

    /// Uniform in (0, 1], never 0, so logarithms are safe.
    @inline(__always)
    public mutating func unitOpen() -> Double { (Double(next() >> 11) + 1) * 0x1p-53 }

    /// Exponential waiting time with the given rate (1/s), in seconds.
    @inline(__always)
    public mutating func exponential(rate: Double) -> Double { -log(unitOpen()) / rate }

    /// Standard normal deviate (Box–Muller).
    public mutating func gaussian() -> Double {
        let u1 = unitOpen(), u2 = unitOpen()
        return (-2 * log(u1)).squareRoot() * cos(2 * .pi * u2)
    }

    /// An exact Poisson deviate: Knuth's product method below mean 10, Hörmann's
    /// transformed rejection (PTRS, 1993) above, so resampled counts have the right tails.
    public mutating func poisson(_ mean: Double) -> Int {
        guard mean > 0 else { return 0 }
        if mean < 10 {
            let limit = exp(-mean)
            var k = 0
            var p = unitOpen()
            while p > limit {
                k += 1
                p *= unitOpen()
            }
            return k
        }
        let slam = mean.squareRoot(), logLam = log(mean)
        let b = 0.931 + 2.53 * slam
        let a = -0.059 + 0.02483 * b
        let invAlpha = 1.1239 + 1.1328 / (b - 3.4)
        let vr = 0.9277 - 3.6224 / (b - 2)
        while true {
            let u = unitOpen() - 0.5
            let v = unitOpen()
            let us = 0.5 - abs(u)
            let k = floor((2 * a / us + b) * u + mean + 0.43)
            if us >= 0.07 && v <= vr { return Int(k) }
            if k < 0 || (us < 0.013 && v > us) { continue }
            if log(v) + log(invAlpha) - log(a / (us * us) + b) <= -mean + k * logLam - lgamma(k + 1) {
                return Int(k)
            }
        }
    }
}
