import HeraldAnalysis
import HeraldCore
import Testing

/// The run's streaming merge on known clocks: exact where the clock is what the marks say,
/// the same however the blocks arrive (so a recount equals the run), in time order, and
/// holding about one mark period of tags.
@Suite struct MergedTagStreamTests {
    static let second: Int64 = 1_000_000_000_000

    /// A clock whose offset is piecewise linear between whole seconds, as marks there measure it:
    /// 2.5 µs, 1 ppm, and a kink of up to ±200 ps at every second.
    static func offset(_ t: Int64) -> Double {
        let knots: [Double] = (0...12).map { k in 2.5e6 + 1e-6 * Double(Int64(k) * second) + [0, 120, -80, 200, 40, -150, 90, 0, -60, 180, 10, -30, 70][k] }
        let k = Int(t / second), f = Double(t % second) / Double(second)
        return knots[k] + (knots[k + 1] - knots[k]) * f
    }

    /// 10 s: the reference's photons (channel 1) and marks (channel 5), and the other tagger's
    /// partners of every photon (channel 3) and marks (channel 5), stamped by its clock.
    static func streams() -> (a: TagBlock, b: TagBlock) {
        var rng = SeededGenerator(seed: 5)
        var a = TagBlock(), b = TagBlock()
        var t: Int64 = 1_000
        var k: Int64 = 1
        while t < 10 * second {
            if t >= k * second {
                a.timestamps.append(k * second)
                a.channels.append(5)
                b.timestamps.append(k * second + Int64(offset(k * second).rounded()))
                b.channels.append(5)
                k += 1
            }
            a.timestamps.append(t)
            a.channels.append(1)
            b.timestamps.append(t + Int64(offset(t).rounded()))
            b.channels.append(3)
            t += Int64(rng.exponential(rate: 5e-8).rounded()) + 1  // 50 k photons/s
        }
        // An overflow of the second tagger from 3.5 s to 3.6 s of lab time, in its clock.
        let lost = (3_500_000_000_000 as Int64, 3_600_000_000_000 as Int64)
        b.excluded = [ExcludedInterval(startPs: lost.0 + Int64(offset(lost.0).rounded()), stopPs: lost.1 + Int64(offset(lost.0).rounded()))]
        return (a, b)
    }

    static let spec = ClocksSpec(
        reference: "a", taggers: [.init(name: "b", channelOffset: 8, tracking: .marks(channel: 5, referenceChannel: 5, smoothing: 0))])

    /// The merged stream fed `blockA`/`blockB` tags at a time, b first or a first.
    /// `lostFirst`: the lost interval comes with b's first block (as a recount hands it on),
    /// else with the block after its end (as the tagger reports it, once it knows).
    static func merged(blockA: Int, blockB: Int, bFirst: Bool, lostFirst: Bool = true) throws -> (out: TagBlock, held: Int) {
        let (a, b) = streams()
        var stream = MergedTagStream(spec: spec)
        var out = TagBlock()
        var held = 0
        var i = 0, j = 0
        var lostSent = false
        func take(_ s: TagBlock, _ from: inout Int, _ n: Int) -> TagBlock {
            let end = min(from + n, s.count)
            defer { from = end }
            return TagBlock(timestamps: Array(s.timestamps[from..<end]), channels: Array(s.channels[from..<end]))
        }
        while i < a.count || j < b.count {
            for side in bFirst ? [1, 0] : [0, 1] {
                let first = side == 1 && j == 0
                var piece = side == 0 ? take(a, &i, blockA) : take(b, &j, blockB)
                guard piece.count > 0 else { continue }
                if side == 1, !lostSent, let e = b.excluded.first, lostFirst ? first : (piece.timestamps.last ?? .min) >= e.stopPs {
                    piece.excluded = b.excluded
                    lostSent = true
                }
                let got = try stream.add(piece, from: side == 0 ? "a" : "b")
                out.timestamps += got.timestamps
                out.channels += got.channels
                out.excluded += got.excluded
                held = max(held, stream.heldTags)
            }
        }
        let rest = try stream.flush()
        out.timestamps += rest.timestamps
        out.channels += rest.channels
        out.excluded += rest.excluded
        return (out, held)
    }

    @Test func exactInTimeOrderTheSameHoweverTheBlocksComeAndBounded() throws {
        let (a, b) = Self.streams()
        let one = try Self.merged(blockA: 1000, blockB: 1000, bFirst: false)
        let other = try Self.merged(blockA: 7777, blockB: 313, bFirst: true, lostFirst: false)
        #expect(one.out.count == a.count + b.count)
        #expect(one.out.timestamps == other.out.timestamps && one.out.channels == other.out.channels)
        // The lost interval lands at the same place whenever it came, on the lab's 3.5–3.6 s
        // (the correction at its start; exact to a picosecond between marks).
        #expect(one.out.excluded == other.out.excluded)
        #expect(one.out.excluded.count == 1)
        if let e = one.out.excluded.first {
            #expect(abs(e.startPs - 3_500_000_000_000) <= 1 && abs(e.stopPs - 3_600_000_000_000) <= 1_000, "\(e)")
        }
        #expect(zip(one.out.timestamps, one.out.timestamps.dropFirst()).allSatisfy { $0 <= $1 })
        // Every partner back on its photon between the first mark and the last: the marks are
        // exact and the clock is linear between them, so the correction is exact up to the
        // rounding of the stamp (≤ 1 ps). Before the first and after the last, the line through
        // the nearest two is extrapolated and misses the kinks (≤ 1 ns here).
        let photons = zip(one.out.timestamps, one.out.channels).filter { $0.1 == 1 }.map(\.0)
        let partners = zip(one.out.timestamps, one.out.channels).filter { $0.1 == 11 }.map(\.0)
        #expect(photons.count == partners.count)
        let between = zip(photons, partners).filter { $0.0 >= Self.second && $0.0 <= 9 * Self.second }
        #expect(between.count > 350_000)
        #expect(between.allSatisfy { abs($0.0 - $0.1) <= 1 })
        #expect(zip(photons, partners).allSatisfy { abs($0 - $1) <= 1_000 })
        // Held: until the second mark, two periods of tags (50 k/s a side); then one.
        #expect(one.held < 4 * 52_000 + 2_000, "held \(one.held)")
        // The knots: one per paired mark, each the offset there.
        var stream = MergedTagStream(spec: Self.spec)
        _ = try stream.add(a, from: "a")
        _ = try stream.add(b, from: "b")
        _ = try stream.flush()
        let model = try #require(stream.models().first)
        #expect(model.knots.count == 9)
        for knot in model.knots {
            let truth = Self.offset(knot.localPs - Int64(knot.offsetPs.rounded()))
            #expect(abs(knot.offsetPs - truth) <= 1)
        }
    }

    @Test func aTaggerOutsideTheClocksAndOneWithoutMarksAreNamed() throws {
        var stream = MergedTagStream(spec: Self.spec)
        #expect(throws: ClockCalibrationError.notInClocks(tagger: "c", reference: "a")) {
            _ = try stream.add(TagBlock(timestamps: [1], channels: [1]), from: "c")
        }
        _ = try stream.add(TagBlock(timestamps: [1, 2], channels: [1, 1]), from: "a")
        _ = try stream.add(TagBlock(timestamps: [5, 6], channels: [3, 3]), from: "b")
        #expect(throws: ClockCalibrationError.noMarksYet(tagger: "b", channel: 5, referenceChannel: 5)) { _ = try stream.flush() }
    }
}
