import Foundation
import HeraldCore
import Testing

@testable import HeraldAnalysis

/// Clocks of two taggers: known offsets and drifts recovered within their stated errors at the
/// nominal coverage, coincidences on the merged stream as sharp as on one tagger, and bad input
/// refused naming the tagger.
@Suite struct ClockSyncTests {
    /// Photon pairs at `pairRate`, one photon to each tagger with Gaussian jitter, plus
    /// uncorrelated background on each; the second tagger's clock runs at offset + drift·t
    /// (local = true + offset + drift · (true − start)).
    struct TwoTaggers {
        var reference: [Int64] = []
        var local: [Int64] = []
        var truePairs = 0
    }

    static func taggers(
        seconds: Double, pairRate: Double, background: Double, offsetPs: Double, drift: Double, jitterPs: Double = 50,
        wanderPs: Double = 0, seed: UInt64
    ) -> TwoTaggers {
        var rng = SeededGenerator(seed: seed)
        var out = TwoTaggers()
        let end = seconds * 1e12
        var t = 0.0
        var walk = 0.0
        var nextWalk = 0.0
        func gauss() -> Double {
            let u = max(1e-300, Double(rng.next() >> 11) / Double(1 << 53)), v = Double(rng.next() >> 11) / Double(1 << 53)
            return (-2 * log(u)).squareRoot() * cos(2 * .pi * v)
        }
        func toLocal(_ x: Double) -> Int64 { Int64((x + offsetPs + drift * x + walk).rounded()) }
        while true {
            t += rng.exponential(rate: pairRate / 1e12)
            if t >= end { break }
            // A random-walk wander, in steps once a second.
            while wanderPs > 0 && t >= nextWalk {
                walk += wanderPs * gauss()
                nextWalk += 1e12
            }
            out.reference.append(Int64((t + jitterPs * gauss()).rounded()))
            out.local.append(toLocal(t + jitterPs * gauss()))
            out.truePairs += 1
        }
        for side in 0..<2 {
            var b = 0.0
            while true {
                b += rng.exponential(rate: background / 1e12)
                if b >= end { break }
                if side == 0 { out.reference.append(Int64(b.rounded())) } else { out.local.append(toLocal(b)) }
            }
        }
        out.reference.sort()
        out.local.sort()
        return out
    }

    /// Coverage: over 20 seeds the true offset and drift fall within 1σ about 68 % of the time
    /// and within 2σ about 95 %. With 20 trials a binomial fraction has σ = √(p(1−p)/20): 0.10 at
    /// p = 0.68 and 0.05 at 0.95; the bounds are 3σ (and at most 100 %).
    @Test func offsetsAndDriftsAreRecoveredWithinTheirErrorsAtNominalCoverage() throws {
        var within1 = 0, within2 = 0, trials = 0
        for seed in 1...20 as ClosedRange<UInt64> {
            let offset = 3_456_789.0 + Double(seed) * 1_111, drift = 1e-6 * (Double(seed % 5) - 2)
            let data = Self.taggers(seconds: 20, pairRate: 5_000, background: 20_000, offsetPs: offset, drift: drift, seed: seed)
            let m = try ClockCalibration.fromCorrelation(reference: data.reference, local: data.local, tagger: "b")
            // The model is in local time: local = x + o + d·x gives offset(local) = (o + d·local)/(1 + d),
            // a slope of d/(1 + d) and, at the epoch, (o + d·epoch)/(1 + d).
            let trueOffsetAtEpoch = (offset + drift * Double(m.epochPs)) / (1 + drift)
            for (value, truth, error) in [(m.offsetPs, trueOffsetAtEpoch, m.offsetErrorPs), (m.drift, drift / (1 + drift), m.driftError)] {
                trials += 1
                if abs(value - truth) <= error { within1 += 1 }
                if abs(value - truth) <= 2 * error { within2 += 1 }
            }
        }
        let f1 = Double(within1) / Double(trials), f2 = Double(within2) / Double(trials)
        // 40 estimates (20 offsets, 20 drifts): σ(f) = √(p(1−p)/40) = 0.074 at 0.68, 0.034 at 0.95.
        #expect(f1 >= 0.68 - 3 * 0.074 && f1 <= 0.68 + 3 * 0.074, "within 1σ: \(f1)")
        #expect(f2 >= 0.95 - 3 * 0.034, "within 2σ: \(f2)")
    }

    /// An hour at 1 ppm: the second clock walks 3.6 µs away. Coincidences in a 1 ns window on
    /// the merged, corrected stream equal the true pairs within counting error; merged with the
    /// offset alone (what a constant-offset synchroniser does) they vanish.
    @Test func coincidencesOnTheMergedStreamStaySharpOverAnHourAt1ppm() throws {
        let data = Self.taggers(seconds: 3600, pairRate: 200, background: 1_000, offsetPs: 4_345_678, drift: 1e-6, seed: 7)
        let model = try ClockCalibration.fromCorrelation(reference: data.reference, local: data.local, tagger: "b")
        #expect(abs(model.drift - 1e-6) <= 3 * model.driftError + 1e-12, "drift \(model.drift) ± \(model.driftError)")
        func coincidences(_ merged: TagBlock) -> Int {
            // Reference on channel 1, the other tagger's on 2 (shifted by 1): pairs within 1 ns.
            var n = 0, last1: Int64 = .min / 2, last2: Int64 = .min / 2
            for (t, c) in zip(merged.timestamps, merged.channels) {
                if c == 1 {
                    if t - last2 <= 1000 { n += 1 }
                    last1 = t
                } else {
                    if t - last1 <= 1000 { n += 1 }
                    last2 = t
                }
            }
            return n
        }
        let a = TagBlock(timestamps: data.reference, channels: Array(repeating: 1, count: data.reference.count))
        let b = TagBlock(timestamps: data.local, channels: Array(repeating: 1, count: data.local.count))
        let tracked = coincidences(ClockMerge.merge(a, b, model: model, channelShift: 1))
        var constant = model
        constant.drift = 0
        constant.knots = []
        let untracked = coincidences(ClockMerge.merge(a, b, model: constant, channelShift: 1))
        // Expected: every true pair (jitter 50 ps ≪ 1 ns) plus accidentals r₁r₂·2τ·T ≈ 1200·1200·2 ns·3600 s ≈ 10.
        let expected = Double(data.truePairs)
        #expect(abs(Double(tracked) - expected) <= 4 * expected.squareRoot() + 20, "tracked \(tracked) of \(data.truePairs) pairs")
        // Without the drift the pairs sit 0…3.6 µs apart: only the first ~1/3600 of the hour counts.
        #expect(Double(untracked) < 0.01 * expected, "constant offset only: \(untracked) of \(data.truePairs)")
        print("1 ppm over an hour: \(tracked) coincidences tracked, \(untracked) with a constant offset, of \(data.truePairs) pairs")
    }

    /// A clock that wanders (a random walk of 200 ps a second on top of its drift): the line's
    /// χ² says so, and the knots track it so coincidences in 1 ns stay.
    @Test func aWanderingClockIsTrackedByItsKnots() throws {
        let data = Self.taggers(seconds: 600, pairRate: 2_000, background: 2_000, offsetPs: 5_000_000, drift: 2e-6, wanderPs: 200, seed: 3)
        let model = try ClockCalibration.fromCorrelation(reference: data.reference, local: data.local, tagger: "b")
        #expect(model.reducedChiSquare > 2, "χ²/dof \(model.reducedChiSquare)")
        #expect(model.knots.count >= 16)
    }

    @Test func ppsMarksGiveTheOffsetAndDrift() throws {
        // A PPS on both taggers, with 20 ps jitter (White Rabbit is about 10 ps, GPS about ns).
        var rng = SeededGenerator(seed: 5)
        var ref: [Int64] = [], loc: [Int64] = []
        let offset = -7_654_321.0, drift = 3e-6
        for s in 0..<600 {
            let t = Double(s) * 1e12 + 0.25e12
            // Uniform jitter of 20 ps RMS: a width of 20·√12 ≈ 69 ps.
            let j1: Double = 69.3 * (rng.unitOpen() - 0.5)
            let j2: Double = 69.3 * (rng.unitOpen() - 0.5)
            let local: Double = t + offset + drift * t + j2
            ref.append(Int64((t + j1).rounded()))
            loc.append(Int64(local.rounded()))
        }
        let m = try ClockCalibration.fromMarks(reference: ref, local: loc, tagger: "b", referenceChannel: 8, channel: 8)
        // In local time (see above): a slope of d/(1 + d), and (o + d·epoch)/(1 + d) at the epoch.
        #expect(abs(m.drift - drift / (1 + drift)) <= 4 * m.driftError, "\(m.drift) ± \(m.driftError)")
        let truth = (offset + drift * Double(m.epochPs)) / (1 + drift)
        #expect(abs(m.offsetPs - truth) <= 4 * m.offsetErrorPs + 1, "\(m.offsetPs) vs \(truth) ± \(m.offsetErrorPs)")
        #expect(m.residualRmsPs > 10 && m.residualRmsPs < 30)
    }

    @Test func badInputIsRefusedNamingTheTagger() {
        let early = (0..<1000).map { Int64($0) * 1_000_000 }
        let late = early.map { $0 + 10_000_000_000_000 }
        #expect(throws: ClockCalibrationError.self) { try ClockCalibration.fromCorrelation(reference: early, local: late, tagger: "bsa") }
        do {
            _ = try ClockCalibration.fromCorrelation(reference: early, local: late, tagger: "bsa")
        } catch {
            #expect(error.description.contains("'bsa'") && error.description.contains("do not overlap"))
        }
        do {
            _ = try ClockCalibration.fromMarks(reference: [], local: [1, 2, 3], tagger: "bsa", referenceName: "alice", referenceChannel: 8, channel: 8)
            Issue.record("no marks accepted")
        } catch {
            #expect(error.description.contains("'alice'") && error.description.contains("channel 8 has no marks"))
        }
        // 200 ppm against a search of ±20 ppm: refused as beyond the range, or as no peak.
        let data = Self.taggers(seconds: 20, pairRate: 5_000, background: 20_000, offsetPs: 1_000_000, drift: 200e-6, seed: 9)
        do {
            _ = try ClockCalibration.fromCorrelation(reference: data.reference, local: data.local, tagger: "bob")
            Issue.record("a drift of 200 ppm was calibrated with a ±20 ppm search")
        } catch {
            #expect(error.description.contains("'bob'"), "\(error)")
        }
    }

    /// The merge is the stable sort of both streams together (the first stream's tag first at
    /// equal times), for every split of sizes and with ties, and applies the model to the second.
    @Test(arguments: [(0, 5), (5, 0), (1, 1), (7, 3), (3, 8), (1000, 999), (2, 2000)])
    func theMergeIsTheStableSortOfBothStreams(na: Int, nb: Int) {
        var rng = SeededGenerator(seed: UInt64(na * 7919 + nb))
        func stream(_ n: Int) -> [Int64] { (0..<n).map { _ in Int64(rng.next() % 50) - 10 }.sorted() }
        let a = stream(na), b = stream(nb)
        let merged = ClockMerge.merge(
            TagBlock(timestamps: a, channels: (0..<na).map { UInt8($0 % 4) }), TagBlock(timestamps: b, channels: (0..<nb).map { UInt8($0 % 4) }),
            model: nil, channelShift: 4)
        // The expected order: by time, then the first stream before the second, then as given.
        let tagged = a.enumerated().map { ($0.element, 0, $0.offset) } + b.enumerated().map { ($0.element, 1, $0.offset) }
        let expected = tagged.sorted { ($0.0, $0.1, $0.2) < ($1.0, $1.1, $1.2) }
        #expect(merged.timestamps == expected.map(\.0))
        #expect(merged.channels == expected.map { UInt8($0.2 % 4) + ($0.1 == 1 ? 4 : 0) })
        // With a model, the second stream is corrected first: an offset of 5 ps moves every tag by 5.
        let shifted = ClockMerge.merge(
            TagBlock(timestamps: [], channels: []), TagBlock(timestamps: b, channels: [UInt8](repeating: 1, count: nb)),
            model: ClockModel(tagger: "b", reference: "a", offsetPs: 5, drift: 0, epochPs: 0))
        #expect(shifted.timestamps == b.map { $0 - 5 })
    }
}
