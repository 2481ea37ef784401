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
}
