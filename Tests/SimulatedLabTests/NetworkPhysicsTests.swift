import Foundation
import HeraldCore
import Testing

@testable import SimulatedLab

/// Known answers of the simulated quantum network: heralding probabilities, heralded
/// fidelities, the attenuation law and the HOM dip, each against a closed form.
///
/// Model-level checks are exact (to rounding). Simulated checks allow 5σ of the counting
/// statistics, derived in each test: with a fixed seed they are deterministic.
@Suite struct NetworkPhysicsTests {
    static let k = 5.0
    static let ab = ["alice", "bob"]

    /// Two ion nodes, ideal unless `configure` says otherwise: no darks, no readout error.
    func network(_ configure: (inout NetworkParameters) -> Void = { _ in }) -> NetworkParameters {
        var net = NetworkParameters()
        for name in Self.ab {
            var n = QuantumNodeParameters(name: name)
            n.emissionProbability = 0.5
            n.collectionEfficiency = 0.2
            n.wavelength = 1550e-9
            n.brightCounts = 1e4
            n.darkCounts = 0
            n.threshold = 1
            net.nodes[name] = n
        }
        var analyser = AnalyserParameters()
        analyser.darkRate = 0
        analyser.efficiency = 1
        analyser.jitter = 0
        var fibre = FibreParameters()
        fibre.length = 0
        net.links["ab"] = QuantumLinkParameters(name: "ab", nodes: Self.ab, fibres: [fibre, fibre], analyser: analyser)
        configure(&net)
        return net
    }

    func model(_ net: NetworkParameters, delay: Double = 0, window: Double = 1e-6) throws -> LinkModel {
        let link = try #require(net.links["ab"])
        return try LinkModel(
            link: link, nodes: Self.ab.compactMap { net.nodes[$0] }, rotations: link.fibres.map { $0.rotation(at: 0) },
            delays: [0, delay], windowStart: 0, windowLength: window)
    }

    static let psiPlusPatterns = [[1, 2], [3, 4]]
    static let psiMinusPatterns = [[1, 4], [2, 3]]

    @Test func idealSuccessProbabilityIsHalfTheProductOfEfficienciesAndAQuarterPerPattern() throws {
        let m = try model(network())
        // η = emission × collection × window acceptance (1 − e^{−1 µs/10 ns} = 1); detectors ideal.
        let eta = 0.5 * 0.2
        #expect(abs(m.arrival[0] - eta) < 1e-12)
        let patterns = Self.psiPlusPatterns + Self.psiMinusPatterns
        let total = patterns.reduce(0) { $0 + m.probability(of: $1) }
        #expect(abs(total - 0.5 * eta * eta) < 1e-12)
        for p in patterns { #expect(abs(m.probability(of: p) - 0.125 * eta * eta) < 1e-12) }
        // Same port heralds Ψ+, opposite ports Ψ−, perfectly for indistinguishable photons.
        for p in Self.psiPlusPatterns { #expect(abs(m.heraldedState(p).fidelity(to: .psiPlus) - 1) < 1e-12) }
        for p in Self.psiMinusPatterns { #expect(abs(m.heraldedState(p).fidelity(to: .psiMinus) - 1) < 1e-12) }
        // Every way of clicking, and none, adds up to one attempt.
        let none = (1 - eta) * (1 - eta)
        #expect(abs(m.anyClick + none - 1) < 1e-12)
    }

    @Test func partiallyDistinguishablePhotonsHeraldFidelityOneHalfOfOnePlusV() throws {
        // An emission delay δ between exponential photons of τ = 10 ns: V = e^{−δ/τ}.
        for delay in [2e-9, 5e-9, 20e-9] {
            let m = try model(network(), delay: delay)
            let v = exp(-delay / 10e-9)
            #expect(abs(m.visibility - v) < 1e-12)
            for p in Self.psiPlusPatterns { #expect(abs(m.heraldedState(p).fidelity(to: .psiPlus) - (1 + v) / 2) < 1e-12) }
            for p in Self.psiMinusPatterns { #expect(abs(m.heraldedState(p).fidelity(to: .psiMinus) - (1 + v) / 2) < 1e-12) }
            // Orthogonal polarisations do not interfere: the herald probability stays ½η_Aη_B.
            let total = (Self.psiPlusPatterns + Self.psiMinusPatterns).reduce(0) { $0 + m.probability(of: $1) }
            #expect(abs(total - 0.5 * 0.1 * 0.1) < 1e-9)
        }
        // A frequency mismatch Δν between equal exponential photons: V = 1/(1 + (2πΔν τ)²).
        let detuned = try model(network { $0.nodes["bob"]?.wavelength = 1550e-9 + 1e-15 })
        let dnu = 299_792_458 / 1550e-9 - 299_792_458 / (1550e-9 + 1e-15)
        let x = 2 * Double.pi * dnu * 10e-9
        #expect(abs(detuned.visibility - 1 / (1 + x * x)) < 1e-9)
    }

    @Test func homDipFollowsTheWavepackets() throws {
        // Same-polarisation coincidences across the two ports: P(c_H d_H) = η_Aη_B(1 − V(δ))/8,
        // while each heralding pattern stays η_Aη_B/8, so their ratio is 1 − V(δ).
        for delay in [0.0, 3e-9, -3e-9, 10e-9, 40e-9] {
            let m = try model(network(), delay: delay)
            let ratio = m.probability(of: [1, 3]) / m.probability(of: [1, 2])
            #expect(abs(ratio - (1 - exp(-abs(delay) / 10e-9))) < 1e-9)
        }
        // Gaussian photons of FWHM f: σ = f/√(8 ln 2), V(δ) = e^{−δ²/4σ²}.
        let g = network {
            $0.nodes["alice"]?.shape = .gaussian
            $0.nodes["bob"]?.shape = .gaussian
        }
        let sigma = 10e-9 / (8 * log(2.0)).squareRoot()
        for delay in [0.0, 5e-9, 12e-9] {
            let m = try model(g, delay: delay)
            #expect(abs(m.visibility - exp(-delay * delay / (4 * sigma * sigma))) < 1e-9)
        }
        // Unequal exponential photons do not fully interfere even at δ = 0: V = 4τ_Aτ_B/(τ_A+τ_B)².
        let unequal = try model(network { $0.nodes["bob"]?.wavepacket = 30e-9 })
        #expect(abs(unequal.visibility - 4 * 10 * 30 / (40.0 * 40)) < 1e-9)
        // A mixed pair (exponential and Gaussian) has no closed form and is integrated on a
        // grid; the same grid on two exponential photons must reproduce e^{−|δ|/τ}.
        let exp10 = QuantumNodeParameters(name: "x")
        for delay in [0.0, 4e-9] {
            let numeric = Wavepacket.numericalOverlap(exp10, exp10, delay: delay, omega: 0)
            #expect(abs(numeric - exp(-delay / 10e-9)) < 2e-3)
        }
        let mixed = try model(network { $0.nodes["bob"]?.shape = .gaussian })
        #expect(mixed.visibility > 0.5 && mixed.visibility < 1)
    }

    @Test func darkCountsLowerTheFidelityByTheFalseHeraldsTheyAdd() throws {
        // One real photon and a dark click (or two darks) herald a state of fidelity ¼. To
        // first order, with ideal detectors (η_d = 1) and p_d the dark probability per window:
        //   P_true  = η_Aη_B/8 · (1 − p_d)²
        //   P_false = [η_A(1−η_B) + η_B(1−η_A)]·½·p_d(1 − p_d)² + (1−η_A)(1−η_B)·p_d²(1 − p_d)²
        //   F = (P_true + P_false/4) / (P_true + P_false)
        // The terms left out (both photons arrive, one bunched with the other's pattern detector
        // dark) are of relative order η/4 of P_false.
        let rate = 2e4, window = 1e-6
        let net = network { $0.links["ab"]?.analyser.darkRate = rate }
        let m = try model(net, window: window)
        let pd = 1 - exp(-rate * window), ea = m.arrival[0], eb = m.arrival[1]
        let pTrue = ea * eb / 8 * (1 - pd) * (1 - pd)
        let pFalse = ((ea * (1 - eb) + eb * (1 - ea)) * 0.5 * pd + (1 - ea) * (1 - eb) * pd * pd) * (1 - pd) * (1 - pd)
        let expected = (pTrue + pFalse / 4) / (pTrue + pFalse)
        let f = m.heraldedState([1, 2]).fidelity(to: .psiPlus)
        #expect(abs(f - expected) < (1 - expected) * ea / 4 + 1e-6)
        #expect(f < 0.99)
        #expect(abs(m.probability(of: [1, 2]) - (pTrue + pFalse)) < pFalse * ea / 4 + 1e-12)
    }

    @Test func attenuationLawSetsTheRateAgainstFibreLength() throws {
        // P_success ∝ T_A·T_B with T = 10^{−αL/10}, α = 0.19 dB/km at 1550 nm (fibre model).
        let base = try model(network()).probability(of: [1, 2])
        for km in [5.0, 20.0, 50.0] {
            let m = try model(network { $0.links["ab"]?.fibres[1].length = km * 1000 })
            let expected = base * pow(10, -0.19 * km / 10)
            #expect(abs(m.probability(of: [1, 2]) / expected - 1) < 1e-9)
        }
        #expect(throws: FibreModelError.self) { try FibreModel.attenuation(at: 2000e-9) }
        #expect(abs((try FibreModel.attenuation(at: 1550e-9)) - 0.19) < 1e-12)
    }

    @Test func dephasingShrinksTheCoherenceByTheGaussianFactor() throws {
        // F = (1 + c_A c_B)/2 with c = e^{−(t/T2*)²}, t = 2 × fibre delay + readout delay.
        let state = try model(network()).heraldedState([1, 2])
        for (ca, cb) in [(1.0, 0.9), (0.8, 0.7)] {
            #expect(abs(state.dephased(ca, cb).fidelity(to: .psiPlus) - (1 + ca * cb) / 2) < 1e-12)
        }
    }

    @Test func failedPreparationsHeraldFidelityOneQuarter() throws {
        // A failed preparation leaves qubit and photon uncorrelated (I/4): the photon's random
        // polarisation heralds as often, but the pair has fidelity ¼. With ε_A, ε_B:
        //   F = ¼ + ¾(1 − ε_A)(1 − ε_B), and the herald probability stays ½η².
        for (ea, eb) in [(0.1, 0.0), (0.2, 0.3)] {
            let net = network {
                $0.nodes["alice"]?.preparationError = ea
                $0.nodes["bob"]?.preparationError = eb
            }
            let m = try model(net)
            let expected = 0.25 + 0.75 * (1 - ea) * (1 - eb)
            #expect(abs(m.heraldedState([1, 2]).fidelity(to: .psiPlus) - expected) < 1e-12)
            let total = (Self.psiPlusPatterns + Self.psiMinusPatterns).reduce(0) { $0 + m.probability(of: $1) }
            #expect(abs(total - 0.5 * 0.1 * 0.1) < 1e-12)
        }
    }

    @Test func aSeedReproducesTheRunExactly() async throws {
        let patterns = Self.psiPlusPatterns + Self.psiMinusPatterns
        let a = try await simulate(network(), heralds: 300, patterns: patterns, seed: 21)
        let b = try await simulate(network(), heralds: 300, patterns: patterns, seed: 21)
        let c = try await simulate(network(), heralds: 300, patterns: patterns, seed: 22)
        #expect(a.attempts == b.attempts && a.byPattern == b.byPattern && a.correct == b.correct)
        #expect(a.attempts != c.attempts)
    }

    @Test func fibreRotationLowersTheFidelityAsCosSquaredAndCompensationRestoresIt() throws {
        // Bob's photon rotated by θ: the heralded pair is cos θ (Ψ±) + sin θ (a Φ-like part),
        // so F = cos²θ on every pattern; a polarisation controller at θ takes it back out.
        for degrees in [10.0, 30.0, 60.0] {
            let rotated = network { $0.links["ab"]?.fibres[1].rotation = degrees }
            let m = try model(rotated)
            let c2 = pow(cos(degrees * .pi / 180), 2)
            for p in Self.psiPlusPatterns { #expect(abs(m.heraldedState(p).fidelity(to: .psiPlus) - c2) < 1e-12) }
            for p in Self.psiMinusPatterns { #expect(abs(m.heraldedState(p).fidelity(to: .psiMinus) - c2) < 1e-12) }
            let compensated = network {
                $0.links["ab"]?.fibres[1].rotation = degrees
                $0.links["ab"]?.fibres[1].compensation = degrees
            }
            #expect(abs(try model(compensated).heraldedState([1, 2]).fidelity(to: .psiPlus) - 1) < 1e-12)
        }
    }

    /// Runs the simulated loop for `heralds` heralds and measures the pairs in turn in ZZ, XX, YY.
    func simulate(_ net: NetworkParameters, heralds: Int, patterns: [[Int]], seed: UInt64 = 7) async throws
        -> (attempts: Int64, byPattern: [Int], correct: [Int], perBasis: [Int])
    {
        let lab = SimulatedLab(network: net, seed: seed)
        let config = EntanglerConfiguration(
            link: "ab", nodes: Self.ab, cyclePs: 1_000_000, windowStartPs: 0, windowLengthPs: 1_000_000, patterns: patterns,
            timeoutPs: 1_000_000_000_000)
        for n in Self.ab { try await lab.configureEntangler(node: n, config) }
        var attempts: Int64 = 0
        var byPattern = Array(repeating: 0, count: patterns.count)
        var correct = [0, 0, 0], perBasis = [0, 0, 0]
        let bases: [ReadoutBasis] = [.z, .x, .y]
        for h in 0..<heralds {
            guard case .herald(_, let p, let a) = try await lab.runAttemptLoop(master: "alice") else {
                Issue.record("timed out")
                break
            }
            attempts += a
            byPattern[p] += 1
            let b = bases[h % 3]
            let x = try await lab.measureQubit(node: "alice", basis: b).outcome
            let y = try await lab.measureQubit(node: "bob", basis: b).outcome
            // Ψ+: ZZ anticorrelated, XX and YY correlated; Ψ− (patterns ≥ 2 here): all anticorrelated.
            let psiMinus = patterns[p] == [1, 4] || patterns[p] == [2, 3]
            let wantCorrelated = b != .z && !psiMinus
            if (x == y) == wantCorrelated { correct[h % 3] += 1 }
            perBasis[h % 3] += 1
        }
        return (attempts, byPattern, correct, perBasis)
    }

    /// F = (p_ZZ + p_XX + p_YY)/2 − 1/2 from the fractions of correct parities, with
    /// σ_F² = ¼ Σ p(1−p)/n (binomial).
    func fidelity(_ r: (attempts: Int64, byPattern: [Int], correct: [Int], perBasis: [Int])) -> (f: Double, sigma: Double) {
        var f = -0.5, v = 0.0
        for b in 0..<3 {
            let p = Double(r.correct[b]) / Double(r.perBasis[b])
            f += p / 2
            v += 0.25 * max(p * (1 - p), 1 / Double(r.perBasis[b])) / Double(r.perBasis[b])
        }
        return (f, v.squareRoot())
    }

    @Test func simulatedHeraldsMatchTheModelInRateAndFidelity() async throws {
        let net = network()
        let patterns = Self.psiPlusPatterns + Self.psiMinusPatterns
        let r = try await simulate(net, heralds: 3000, patterns: patterns)
        // Success probability p = ½η²; heralds/attempts has σ = √(p(1−p)/N_attempts).
        let p = 0.5 * 0.1 * 0.1
        let pHat = 3000 / Double(r.attempts)
        #expect(abs(pHat - p) < Self.k * (p * (1 - p) / Double(r.attempts)).squareRoot())
        // Each pattern ¼ of the heralds: multinomial σ = √(N·¼·¾).
        for n in r.byPattern { #expect(abs(Double(n) - 750) < Self.k * (3000 * 0.25 * 0.75).squareRoot()) }
        // Ideal: every parity is right.
        #expect(r.correct == r.perBasis)
    }

    @Test func simulatedFidelityFollowsVisibilityAndReadoutError() async throws {
        // HOM visibility V = e^{−δ/τ} from a 3 ns emission delay: F = (1 + V)/2.
        let delayed = network { $0.nodes["bob"]?.emissionDelay = 3e-9 }
        let v = exp(-0.3)
        let r1 = try await simulate(delayed, heralds: 3000, patterns: Self.psiPlusPatterns)
        let f1 = fidelity(r1)
        #expect(abs(f1.f - (1 + v) / 2) < Self.k * f1.sigma)

        // Readout error: bright reads bright with 1 − e_b, dark reads bright with e_d, so each
        // reading is r·s + o on average (r = 1 − e_b − e_d, o = e_d − e_b) and
        // ⟨m_A m_B⟩ = r²⟨s_A s_B⟩ + o², giving F = (1 + 3r² + o²)/4 for a perfect Ψ+.
        let noisy = network {
            for n in Self.ab {
                $0.nodes[n]?.brightCounts = 4
                $0.nodes[n]?.darkCounts = 0.3
                $0.nodes[n]?.threshold = 2
            }
        }
        let node = try #require(noisy.nodes["alice"])
        let (pbb, pdb) = node.readoutBrightProbabilities
        let rr = pbb - pdb, o = pbb + pdb - 1
        let expected = (1 + 3 * rr * rr + o * o) / 4
        let r2 = try await simulate(noisy, heralds: 3000, patterns: Self.psiPlusPatterns)
        let f2 = fidelity(r2)
        #expect(abs(f2.f - expected) < Self.k * f2.sigma)
        #expect(expected < 0.9)
    }

    @Test func timeoutIsInTimeAndReportsTheAttemptsMade() async throws {
        // No photons at all: every loop times out after timeout / cycle attempts.
        let dark = network { net in for n in Self.ab { net.nodes[n]?.emissionProbability = 0 } }
        let lab = SimulatedLab(network: dark, seed: 1)
        let config = EntanglerConfiguration(
            link: "ab", nodes: Self.ab, cyclePs: 2_000_000, windowStartPs: 0, windowLengthPs: 1_000_000, patterns: [[1, 2]],
            timeoutPs: 1_000_000_000)
        for n in Self.ab { try await lab.configureEntangler(node: n, config) }
        let before = lab.nowPs
        let outcome = try await lab.runAttemptLoop(master: "alice")
        #expect(outcome == .timedOut(attempts: 500, stopPs: before + 1_000_000_000))
        #expect(lab.nowPs == before + 1_000_000_000)
        // A node not armed like the master is refused by name.
        try await lab.configureEntangler(
            node: "bob",
            EntanglerConfiguration(
                link: "ab", nodes: Self.ab, cyclePs: 1_000_000, windowStartPs: 0, windowLengthPs: 1_000_000, patterns: [[1, 2]],
                timeoutPs: 1_000_000_000))
        await #expect(throws: DeviceError.self) { try await lab.runAttemptLoop(master: "alice") }
    }

    @Test func attemptsAreDrawnNotTried() async throws {
        // p ≈ ½(10⁻³)² per attempt: 2·10⁸ attempts hold ≈ 100 heralds and ≈ 4·10⁵ clicks, so
        // the loop makes about that many draws, not 2·10⁸ iterations (`make bench` times 10⁹).
        let sparse = network { net in for n in Self.ab { net.nodes[n]?.collectionEfficiency = 0.002 } }
        let lab = SimulatedLab(network: sparse, seed: 3)
        let config = EntanglerConfiguration(
            link: "ab", nodes: Self.ab, cyclePs: 1_000_000, windowStartPs: 0, windowLengthPs: 1_000_000, patterns: [[1, 2], [3, 4], [1, 4], [2, 3]],
            timeoutPs: 1_000_000_000_000_000)
        for n in Self.ab { try await lab.configureEntangler(node: n, config) }
        var heralds = 0
        while await lab.simulatedAttempts < 200_000_000 {
            if case .herald = try await lab.runAttemptLoop(master: "alice") { heralds += 1 }
        }
        let attempts = Double(await lab.simulatedAttempts)
        let p = 0.5 * 0.001 * 0.001
        #expect(abs(Double(heralds) - p * attempts) < Self.k * (p * attempts).squareRoot())
    }
}
