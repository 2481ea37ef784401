import Foundation
import HeraldCore
import MockTimeTagger
import Testing

@testable import SimulatedLab

/// Statistical tests of the simulated lab against closed-form expectations.
///
/// Every tolerance is a number of standard deviations of the counting statistics of the
/// quantity tested (derived in each test), never a hand-picked percentage. With 5σ and a
/// fixed seed, the tests are deterministic and a correct simulation fails none of them.
@Suite struct PhysicsTests {
    static let k = 5.0

    func lab(_ configure: (inout LabParameters) -> Void, seed: UInt64 = 1) -> SimulatedLab {
        var p = LabParameters()
        configure(&p)
        return SimulatedLab(parameters: p, seed: seed)
    }

    func pump(_ lab: SimulatedLab, power: Double = 10e-3, repetitionRate: Double = 0) async {
        await lab.setPump(power: power)
        await lab.setPump(repetitionRate: repetitionRate)
        await lab.setPump(enabled: true)
    }

    /// Pairs (a, b) with |a − b − shift| ≤ window, by two pointers over sorted lists.
    func coincidences(_ a: [Int64], _ b: [Int64], windowPs: Int64, shiftPs: Int64 = 0) -> Int {
        var n = 0, lo = 0
        for t in a {
            while lo < b.count && b[lo] + shiftPs < t - windowPs { lo += 1 }
            var j = lo
            while j < b.count && b[j] + shiftPs <= t + windowPs { n += 1; j += 1 }
        }
        return n
    }

    func expectClose(_ measured: Double, _ expected: Double, sigma: Double, _ what: String) {
        let z = (measured - expected) / sigma
        #expect(abs(z) < Self.k, "\(what): measured \(measured), expected \(expected) ± \(sigma) (z = \(z))")
    }

    @Test("singles and coincidences are linear in pump power, plus dark counts and accidentals")
    func singlesAndCoincidencesFollowThePump() async throws {
        let (rate, eta, dark, window) = (200e3, 0.25, 500.0, Int64(1000))
        for power in [2e-3, 5e-3, 10e-3] {
            let lab = lab { $0.pairRate = rate; $0.efficiency = eta; $0.darkRate = dark; $0.jitter = 50e-12 }
            await pump(lab, power: power)
            let seconds = 1.0
            let clicks = try await lab.detect(duration: .seconds(seconds))
            let r = rate * power / 10e-3
            // Each pair puts a Poisson(Rη) photon count in each arm; the arms share pairs, so
            // Var(N_A + N_B) = 2RηT + 2Rη²T, plus the independent dark counts.
            let singles = Double(clicks.count)
            expectClose(
                singles, 2 * r * eta * seconds + 4 * dark * seconds,
                sigma: (2 * r * eta * (1 + eta) * seconds + 4 * dark * seconds).squareRoot(), "singles at \(power) W")
            let armA = (clicks.perDetector[0] + clicks.perDetector[1]).sorted()
            let armB = (clicks.perDetector[2] + clicks.perDetector[3]).sorted()
            let c = Double(coincidences(armA, armB, windowPs: window))
            // True pairs (both photons detected, jitter ≪ window) plus accidentals at the
            // rate the measured singles imply; Poisson counts.
            let accidentals = Double(armA.count) * Double(armB.count) * Double(2 * window) * 1e-12 / seconds
            let expected = r * eta * eta * seconds + accidentals
            expectClose(c, expected, sigma: expected.squareRoot(), "coincidences at \(power) W")
        }
    }

    @Test("accidental coincidences scale with the window and the product of singles")
    func accidentalsFollowWindowAndSingles() async throws {
        let lab = lab { $0.pairRate = 2e6; $0.efficiency = 0.25; $0.darkRate = 1000 }
        await pump(lab)
        let seconds = 0.5
        let clicks = try await lab.detect(duration: .seconds(seconds))
        let a = clicks.perDetector[0], b = clicks.perDetector[2]
        // Shifted by 500 ns, no true pair falls in the window: all coincidences are accidental.
        for window in [Int64(1_000), 5_000, 20_000] {
            let n = Double(coincidences(a, b, windowPs: window, shiftPs: 500_000))
            let expected = Double(a.count) * Double(b.count) * Double(2 * window) * 1e-12 / seconds
            expectClose(n, expected, sigma: expected.squareRoot(), "accidentals in ±\(window) ps")
        }
        // And with the same window, a quarter of the singles gives a sixteenth of the accidentals.
        let low = self.lab({ $0.pairRate = 2e6; $0.efficiency = 0.25 / 4; $0.darkRate = 250 }, seed: 2)
        await pump(low)
        let lowClicks = try await low.detect(duration: .seconds(seconds))
        let (la, lb) = (lowClicks.perDetector[0], lowClicks.perDetector[2])
        let n = Double(coincidences(la, lb, windowPs: 20_000, shiftPs: 500_000))
        let expected = Double(la.count) * Double(lb.count) * 40_000e-12 / seconds
        expectClose(n, expected, sigma: expected.squareRoot(), "accidentals at a quarter of the singles")
    }

    /// Probability that a pulse clicks none of the detectors in `set`, when a pulse holds
    /// Poisson(μ) independent pairs and one pair hits at least one of them with probability q.
    static func none(_ mu: Double, _ q: Double) -> Double { exp(-mu * q) }

    @Test("heralded g2(0) of the pulsed source follows its multi-pair statistics", arguments: [0.05, 0.2])
    func heraldedG2FollowsMultiPairProbability(mu: Double) async throws {
        let (f, eta) = (1e6, 0.5)
        let lab = lab { $0.pairRate = mu * f; $0.efficiency = eta; $0.darkRate = 0; $0.jitter = 50e-12; $0.visibility = 0 }
        await pump(lab, repetitionRate: f)
        let seconds = 2.0
        let clicks = try await lab.detect(duration: .seconds(seconds))
        // Which detectors clicked in each pulse (jitter ≪ the 1 µs period).
        var flags = [UInt8](repeating: 0, count: Int(seconds * f) + 1)
        for (d, bit) in [(0, UInt8(1)), (1, 1), (2, 2), (3, 4)] {
            for t in clicks.perDetector[d] { flags[Int((Double(t) * 1e-12 * f).rounded())] |= bit }
        }
        var nH = 0, nH3 = 0, nH4 = 0, nH34 = 0
        for x in flags where x & 1 != 0 {
            nH += 1
            if x & 2 != 0 { nH3 += 1 }
            if x & 4 != 0 { nH4 += 1 }
            if x & 6 == 6 { nH34 += 1 }
        }
        let measured = Double(nH34) * Double(nH) / (Double(nH3) * Double(nH4))
        // Closed form: a pair's idler reaches the herald (either port) with probability η;
        // its signal leaves by port 3 or 4 with probability ½ each (the reduced state of any
        // Werner state is unpolarized) and is detected with probability η; pairs are
        // independent, so "no click in a set" is exp(−μ·q) and inclusion–exclusion does the rest.
        let (h, s) = (eta, eta / 2)
        let pNotH = Self.none(mu, h), pNot3 = Self.none(mu, s)
        let pNotH3 = Self.none(mu, h + s - h * s), pNot34 = Self.none(mu, 2 * s)
        let pNotH34 = Self.none(mu, h + 2 * s - h * 2 * s)
        let pH = 1 - pNotH
        let pH3 = 1 - pNotH - pNot3 + pNotH3
        let pH34 = 1 - pNotH - 2 * pNot3 + 2 * pNotH3 + pNot34 - pNotH34
        let expected = pH34 * pH / (pH3 * pH3)
        // Relative error of a ratio of counts: the triple count dominates.
        let sigma = expected * (1 / Double(nH34) + 1 / Double(nH3) + 1 / Double(nH4)).squareRoot()
        expectClose(measured, expected, sigma: sigma, "heralded g2(0) at μ = \(mu)")
    }

    @Test("non-paralyzable dead time saturates the count rate as n / (1 + nτ)", arguments: [1e6, 5e6, 20e6])
    func deadTimeSaturates(trueRate n: Double) async throws {
        let tau = 100e-9
        let lab = lab { $0.darkRate = n; $0.deadTime = tau; $0.pairRate = 0 }
        let seconds = 0.2
        let clicks = try await lab.detect(duration: .seconds(seconds))
        let expected = n / (1 + n * tau) * seconds
        for (d, times) in clicks.perDetector.enumerated() {
            // A dead-time-filtered Poisson process is a renewal process with Fano factor
            // 1/(1 + nτ)², so the count's σ is √N/(1 + nτ).
            expectClose(Double(times.count), expected, sigma: expected.squareRoot() / (1 + n * tau), "detector \(d + 1) at \(n) /s")
            let minGap = zip(times.dropFirst(), times).map { $0 - $1 }.min() ?? .max
            #expect(minGap >= Int64(tau * 1e12), "two clicks \(minGap) ps apart within the \(tau) s dead time")
        }
    }

    @Test("afterpulses raise the count rate by 1/(1 − p), in clusters")
    func afterpulsingRaisesTheRate() async throws {
        let (d, p) = (20e3, 0.2)
        let lab = lab { $0.darkRate = d; $0.deadTime = 20e-9; $0.afterpulseProbability = p; $0.afterpulseDelay = 200e-9; $0.pairRate = 0 }
        let seconds = 1.0
        let clicks = try await lab.detect(duration: .seconds(seconds))
        // Each dark count starts a geometric cluster: mean 1/(1−p), E[K²] = (1+p)/(1−p)².
        let expected = d * seconds / (1 - p)
        let sigma = (d * seconds * (1 + p)).squareRoot() / (1 - p)
        for times in clicks.perDetector { expectClose(Double(times.count), expected, sigma: sigma, "clicks with afterpulsing") }
    }

    @Test("coincidences follow Malus' law as the half-wave plate turns", arguments: [0.0, 11.25, 22.5, 33.75, 45])
    func malusLawFringe(hwp: Double) async throws {
        let (rate, eta, v, window) = (400e3, 0.25, 0.9, Int64(1000))
        let lab = lab { $0.pairRate = rate; $0.efficiency = eta; $0.visibility = v; $0.darkRate = 200 }
        await pump(lab)
        await lab.setAngle(hwp, arm: .a, plate: .hwp)
        let seconds = 0.5
        let clicks = try await lab.detect(duration: .seconds(seconds))
        let (aPass, bPass) = (clicks.perDetector[0], clicks.perDetector[2])
        let c = Double(coincidences(aPass, bPass, windowPs: window))
        // Arm B projects on H; a HWP at θ makes arm A's pass port project on cos2θ H + sin2θ V.
        // ⟨x H|ρ|x H⟩ = V·cos²2θ/2 + (1 − V)/4 for the Werner state.
        let twoTheta = 2 * hwp * .pi / 180
        let p = v * pow(cos(twoTheta), 2) / 2 + (1 - v) / 4
        let accidentals = Double(aPass.count) * Double(bPass.count) * Double(2 * window) * 1e-12 / seconds
        let expected = rate * eta * eta * seconds * p + accidentals
        expectClose(c, expected, sigma: expected.squareRoot(), "coincidences at HWP \(hwp)°")
    }

    @Test("an arbitrary density matrix is simulated as given")
    func densityMatrixSource() async throws {
        // |HV⟩⟨HV|: arm A always H (detector 1), arm B always V (detector 4).
        var numbers = [Double](repeating: 0, count: 32)
        numbers[5] = 1
        var p = try LabParameters(["density_matrix": .text(numbers.map { String($0) }.joined(separator: " "))])
        p.darkRate = 0
        let lab = SimulatedLab(parameters: p, seed: 3)
        await pump(lab)
        let clicks = try await lab.detect(duration: .milliseconds(200))
        #expect(clicks.perDetector[1].isEmpty && clicks.perDetector[2].isEmpty)
        #expect(clicks.perDetector[0].count > 1000 && clicks.perDetector[3].count > 1000)
        // Not a state: rejected with the reason.
        #expect(throws: LabParameterError.self) { try LabParameters.densityMatrix(parsing: "1 0 0") }
        numbers[0] = 1.5
        numbers[5] = -0.5
        let negative = numbers.map { String($0) }.joined(separator: " ")
        #expect(throws: LabParameterError.self) { try LabParameters.densityMatrix(parsing: negative) }
    }

    @Test("a shut shutter or an unlocked pump makes no pairs; dark counts remain")
    func shutterBlocksThePump() async throws {
        let lab = lab { $0.pairRate = 1e6; $0.darkRate = 1000 }
        await pump(lab)
        await lab.setShutter(open: false)
        let seconds = 1.0
        let clicks = try await lab.detect(duration: .seconds(seconds))
        let expected = 4 * 1000 * seconds
        expectClose(Double(clicks.count), expected, sigma: expected.squareRoot(), "dark counts behind a closed shutter")
    }

    @Test("the same seed gives the same clicks")
    func deterministicGivenASeed() async throws {
        func run() async throws -> [[Int64]] {
            let lab = lab({ $0.deadTime = 30e-9; $0.afterpulseProbability = 0.05 }, seed: 42)
            await pump(lab)
            return try await lab.detect(duration: .milliseconds(50)).perDetector
        }
        let first = try await run(), second = try await run()
        #expect(first == second)
        #expect(first.reduce(0) { $0 + $1.count } > 1000)
    }
}
