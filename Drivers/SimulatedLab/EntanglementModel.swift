import ComplexModule
import Foundation
import HeraldCore
import RealModule

/// A state of the two remote qubits: a 4×4 density matrix in the basis ↑↑, ↑↓, ↓↑, ↓↓
/// (first index: the link's first node), row-major. ↑ is the qubit state that emits H.
public struct TwoQubitState: Sendable, Equatable {
    public var elements: [Complex<Double>]

    public init(_ elements: [Complex<Double>] = Array(repeating: .zero, count: 16)) {
        precondition(elements.count == 16, "a two-qubit state has 16 elements")
        self.elements = elements
    }

    public subscript(_ i: Int, _ j: Int) -> Complex<Double> {
        get { elements[4 * i + j] }
        set { elements[4 * i + j] = newValue }
    }

    public var trace: Double { (0..<4).reduce(0) { $0 + self[$1, $1].real } }

    public static func + (a: TwoQubitState, b: TwoQubitState) -> TwoQubitState {
        TwoQubitState(zip(a.elements, b.elements).map { $0 + $1 })
    }

    public func scaled(_ f: Double) -> TwoQubitState { TwoQubitState(elements.map { $0 * Complex(f) }) }

    public var normalised: TwoQubitState { trace > 0 ? scaled(1 / trace) : self }

    /// |x⟩⟨y| for two-qubit vectors.
    static func outer(_ x: [Complex<Double>], _ y: [Complex<Double>]) -> TwoQubitState {
        var s = TwoQubitState()
        for i in 0..<4 { for j in 0..<4 { s[i, j] = x[i] * y[j].conjugate } }
        return s
    }

    /// The product of two one-qubit operators (2×2, row-major).
    static func product(_ a: [Complex<Double>], _ b: [Complex<Double>]) -> TwoQubitState {
        var s = TwoQubitState()
        for i in 0..<2 { for j in 0..<2 { for k in 0..<2 { for l in 0..<2 {
            s[2 * i + k, 2 * j + l] = a[2 * i + j] * b[2 * k + l]
        } } } }
        return s
    }

    /// ⟨ψ|ρ|ψ⟩ for the Bell state (in the ↑/↓ ≙ H/V correspondence).
    public func fidelity(to bell: BellState) -> Double {
        let r = 1 / 2.0.squareRoot()
        let v: [Double]
        switch bell {
        case .phiPlus: v = [r, 0, 0, r]
        case .phiMinus: v = [r, 0, 0, -r]
        case .psiPlus: v = [0, r, r, 0]
        case .psiMinus: v = [0, r, -r, 0]
        }
        var sum = Complex<Double>.zero
        for i in 0..<4 { for j in 0..<4 { sum = sum + Complex(v[i]) * self[i, j] * Complex(v[j]) } }
        return sum.real
    }

    /// Multiplies the coherences of each qubit by its factor (dephasing: off-diagonal in that qubit).
    public func dephased(_ a: Double, _ b: Double) -> TwoQubitState {
        var s = self
        for i in 0..<4 {
            for j in 0..<4 {
                var f = 1.0
                if (i >> 1) != (j >> 1) { f *= a }
                if (i & 1) != (j & 1) { f *= b }
                s[i, j] = self[i, j] * Complex(f)
            }
        }
        return s
    }

    /// The +1 eigenvector of a Pauli operator.
    public static func eigenvector(_ basis: ReadoutBasis, _ sign: Int) -> [Complex<Double>] {
        let r = 1 / 2.0.squareRoot()
        switch (basis, sign > 0) {
        case (.z, true): return [Complex(1), .zero]
        case (.z, false): return [.zero, Complex(1)]
        case (.x, true): return [Complex(r), Complex(r)]
        case (.x, false): return [Complex(r), Complex(-r)]
        case (.y, true): return [Complex(r), Complex(0, r)]
        case (.y, false): return [Complex(r), Complex(0, -r)]
        }
    }

    /// Projects qubit `qubit` (0 or 1) onto the `sign` eigenstate of `basis`: the
    /// unnormalised post-measurement state, whose trace is the outcome's probability.
    public func projected(qubit: Int, _ basis: ReadoutBasis, _ sign: Int) -> TwoQubitState {
        let e = Self.eigenvector(basis, sign)
        var p = [Complex<Double>](repeating: .zero, count: 4)
        for i in 0..<2 { for j in 0..<2 { p[2 * i + j] = e[i] * e[j].conjugate } }
        let identity: [Complex<Double>] = [Complex(1), .zero, .zero, Complex(1)]
        let projector = qubit == 0 ? Self.product(p, identity) : Self.product(identity, p)
        return projector.times(self).times(projector)
    }

    func times(_ o: TwoQubitState) -> TwoQubitState {
        var s = TwoQubitState()
        for i in 0..<4 { for j in 0..<4 {
            var sum = Complex<Double>.zero
            for k in 0..<4 { sum = sum + self[i, k] * o[k, j] }
            s[i, j] = sum
        } }
        return s
    }

    /// ⟨σ_a ⊗ σ_b⟩.
    public func correlation(_ a: ReadoutBasis, _ b: ReadoutBasis) -> Double {
        var e = 0.0
        for sa in [1, -1] { for sb in [1, -1] {
            e += Double(sa * sb) * projected(qubit: 0, a, sa).projected(qubit: 1, b, sb).trace
        } }
        return e
    }
}

/// Single-photon wavepackets: acceptance in a detection window, sampling, and the overlap
/// |∫ξ_A(t) ξ_B*(t−δ) e^{iΔω t} dt|² that sets the two-photon interference visibility.
public enum Wavepacket {
    /// Intensity σ and peak time of a Gaussian photon of FWHM `fwhm`.
    static func gaussian(_ fwhm: Double) -> (sigma: Double, peak: Double) { (fwhm / (8 * log(2.0)).squareRoot(), fwhm) }

    /// P(photon's arrival ≤ t), t from the excitation (delays excluded).
    public static func cdf(_ node: QuantumNodeParameters, _ t: Double) -> Double {
        switch node.shape {
        case .exponential: return t <= 0 ? 0 : 1 - exp(-t / node.wavepacket)
        case .gaussian:
            let g = gaussian(node.wavepacket)
            return 0.5 * (1 + erf((t - g.peak) / (g.sigma * 2.0.squareRoot())))
        }
    }

    /// The fraction of the node's photons that arrive inside the window [start, start + length).
    public static func acceptance(_ node: QuantumNodeParameters, delay: Double, start: Double, length: Double) -> Double {
        max(0, cdf(node, start + length - delay) - cdf(node, start - delay))
    }

    /// One arrival time from the excitation (delays excluded).
    static func sample(_ node: QuantumNodeParameters, _ rng: inout SeededGenerator) -> Double {
        switch node.shape {
        case .exponential: return -log(rng.unitOpen()) * node.wavepacket
        case .gaussian:
            let g = gaussian(node.wavepacket)
            return g.peak + g.sigma * rng.gaussian()
        }
    }

    /// The mode overlap of two photons whose emissions are `delay` apart (B later) and whose
    /// frequencies differ by `detuning` (Hz): the visibility of their Hong–Ou–Mandel dip.
    /// Closed forms for two exponential or two Gaussian photons; numerical otherwise.
    public static func overlap(_ a: QuantumNodeParameters, _ b: QuantumNodeParameters, delay: Double, detuning: Double) -> Double {
        let omega = 2 * Double.pi * detuning
        switch (a.shape, b.shape) {
        case (.exponential, .exponential):
            // ∫_{max(0,δ)}^∞ e^{−t/2τa} e^{−(t−δ)/2τb} e^{iωt} dt / √(τaτb)
            let ta = a.wavepacket, tb = b.wavepacket
            let re = 1 / (2 * ta) + 1 / (2 * tb)
            let t0 = max(0, delay)
            return exp(delay / tb - 2 * re * t0) / (ta * tb * (re * re + omega * omega))
        case (.gaussian, .gaussian):
            let ga = gaussian(a.wavepacket), gb = gaussian(b.wavepacket)
            let s2 = ga.sigma * ga.sigma + gb.sigma * gb.sigma
            let d = ga.peak - (gb.peak + delay)
            return 2 * ga.sigma * gb.sigma / s2 * exp(-d * d / (2 * s2)) * exp(-2 * omega * omega * ga.sigma * ga.sigma * gb.sigma * gb.sigma / s2)
        default:
            return numericalOverlap(a, b, delay: delay, omega: omega)
        }
    }

    /// |Σ √I_a(t) √I_b(t−δ) e^{iωt} dt|² on a grid fine against both wavepackets and ω.
    static func numericalOverlap(_ a: QuantumNodeParameters, _ b: QuantumNodeParameters, delay: Double, omega: Double) -> Double {
        func intensity(_ n: QuantumNodeParameters, _ t: Double) -> Double {
            switch n.shape {
            case .exponential: return t < 0 ? 0 : exp(-t / n.wavepacket) / n.wavepacket
            case .gaussian:
                let g = gaussian(n.wavepacket)
                return exp(-(t - g.peak) * (t - g.peak) / (2 * g.sigma * g.sigma)) / (g.sigma * (2 * Double.pi).squareRoot())
            }
        }
        let span = 12 * max(a.wavepacket, b.wavepacket) + abs(delay)
        let start = min(0, delay) - 2 * max(a.wavepacket, b.wavepacket)
        let finest = min(a.wavepacket, b.wavepacket) / 200
        let steps = min(400_000, max(20_000, Int(span / finest), omega > 0 ? Int(span * omega / 0.1) : 0))
        let dt = span / Double(steps)
        var re = 0.0, im = 0.0
        for k in 0...steps {
            let t = start + Double(k) * dt
            let amp = (intensity(a, t) * intensity(b, t - delay)).squareRoot()
            re += amp * cos(omega * t) * dt
            im += amp * sin(omega * t) * dt
        }
        return re * re + im * im
    }
}

/// The per-attempt physics of one link at one moment: where each node's photon may go,
/// which detectors click, and the state of the remote qubits for each way they can click.
///
/// Each node emits (|↑⟩|H⟩ + |↓⟩|V⟩)/√2 (or, after a failed preparation, qubit and photon
/// uncorrelated); its fibre rotates the polarisation and loses photons; at the analyser a
/// beam splitter (input A → √T c + √R d, B → √R c − √T d) and a PBS per output send each
/// photon to one of four modes, c_H, c_V, d_H, d_V (tagger channels 1–4). When both photons
/// arrive, the two ways of reaching a pair of modes interfere by the photons' mode overlap V:
/// ρ = |D⟩⟨D| + |E⟩⟨E| + V(|D⟩⟨E| + |E⟩⟨D|), D and E the direct and exchanged amplitudes;
/// two photons in one mode weigh (1 + V)|D⟩⟨D|. Detectors click with their efficiency or a
/// dark count in the window. Every way the detectors can click is enumerated once, so a
/// simulation draws whole attempts without trying them one by one.
public struct LinkModel: Sendable {
    /// Probability that each node's photon reaches the analyser inside the window.
    public let arrival: [Double]
    /// The photons' mode overlap (HOM visibility).
    public let visibility: Double
    /// Probability of a dark (or noise) click per detector in one window.
    public let darkProbability: [Double]
    /// Per node: the photon's arrival delay at the analyser (its emission delay), seconds.
    public let delays: [Double]

    /// One way an attempt can make some detectors click.
    public struct Outcome: Sendable {
        public var probability: Double
        /// Bit d set: detector d + 1 clicked.
        public var clicks: UInt8
        /// Per detector: the node whose photon is in its mode (−1: none; 2: both). A SIMD
        /// value, not an array: the attempt loop reads it for every click, without refcounting.
        public var photonFrom: SIMD4<Int8>
        /// Index into ``states``.
        public var state: Int
        /// For two photons in two modes: the share of the pair's weight in the exchanged path
        /// (A's photon in the other mode), for timing the clicks.
        public var exchange: Double = 0
    }

    public let outcomes: [Outcome]
    /// The normalised remote state of each photon outcome (which modes the photons reached).
    public let states: [TwoQubitState]
    /// P(some detector clicks) per attempt.
    public let anyClick: Double
    let cumulative: [Double]

    /// - Parameters: rotations are the fibres' net polarisation rotations in degrees; delays
    ///   the nodes' emission delays; the window is relative to the excitation, in seconds.
    public init(
        link: QuantumLinkParameters, nodes: [QuantumNodeParameters], rotations: [Double], delays: [Double],
        windowStart: Double, windowLength: Double
    ) throws(FibreModelError) {
        precondition(nodes.count == 2 && link.fibres.count == 2, "a link joins two nodes")
        var arrival: [Double] = []
        for k in 0..<2 {
            let node = nodes[k]
            let accepted = Wavepacket.acceptance(node, delay: delays[k], start: windowStart, length: windowLength)
            arrival.append(node.efficiencyIntoFibre * (try link.fibres[k].transmission(at: node.wavelengthInFibre)) * accepted)
        }
        self.arrival = arrival
        self.delays = delays
        let detuning = 299_792_458 / nodes[0].wavelengthInFibre - 299_792_458 / nodes[1].wavelengthInFibre
        let v = Wavepacket.overlap(nodes[0], nodes[1], delay: delays[1] - delays[0], detuning: detuning)
        visibility = min(1, max(0, v))
        let an = link.analyser
        var noise = 0.0
        for k in 0..<2 where nodes[k].conversionEfficiency != nil {
            noise += nodes[k].conversionNoise * (try link.fibres[k].transmission(at: nodes[k].wavelengthInFibre)) * an.efficiency / 4
        }
        let pDark = 1 - exp(-(an.darkRate + noise) * windowLength)
        darkProbability = Array(repeating: pDark, count: 4)

        // Mode amplitudes: amp[node][mode][qubit] for each pure qubit–photon component.
        let t = an.transmission.squareRoot(), r = (1 - an.transmission).squareRoot()
        let portFactor: [[Double]] = [[t, t, r, r], [r, r, -t, -t]]  // node A, node B over c_H c_V d_H d_V
        func components(_ node: QuantumNodeParameters) -> [(weight: Double, c: [[Complex<Double>]])] {
            let h = 1 / 2.0.squareRoot()
            var list: [(Double, [[Complex<Double>]])] = [(1 - node.preparationError, [[Complex(h), .zero], [.zero, Complex(h)]])]
            if node.preparationError > 0 {
                for s in 0..<2 { for q in 0..<2 {
                    var c = [[Complex<Double>]](repeating: [.zero, .zero], count: 2)
                    c[s][q] = Complex(1)
                    list.append((node.preparationError / 4, c))
                } }
            }
            return list
        }
        func amplitudes(_ c: [[Complex<Double>]], node k: Int) -> [[Complex<Double>]] {
            let theta = rotations[k] * .pi / 180
            var amp = [[Complex<Double>]](repeating: [.zero, .zero], count: 4)
            for s in 0..<2 {
                let h = c[s][0] * Complex(cos(theta)) - c[s][1] * Complex(sin(theta))
                let vv = c[s][0] * Complex(sin(theta)) + c[s][1] * Complex(cos(theta))
                for m in 0..<4 { amp[m][s] = (m % 2 == 0 ? h : vv) * Complex(portFactor[k][m]) }
            }
            return amp
        }
        /// The reduced qubit state of a node whose photon was lost.
        func reduced(_ c: [[Complex<Double>]]) -> [Complex<Double>] {
            var rho = [Complex<Double>](repeating: .zero, count: 4)
            for s in 0..<2 { for s2 in 0..<2 { for q in 0..<2 { rho[2 * s + s2] = rho[2 * s + s2] + c[s][q] * c[s2][q].conjugate } } }
            return rho
        }
        func vector(_ a: [Complex<Double>], _ b: [Complex<Double>]) -> [Complex<Double>] {
            [a[0] * b[0], a[0] * b[1], a[1] * b[0], a[1] * b[1]]
        }
        func outer2(_ a: [Complex<Double>]) -> [Complex<Double>] {
            [a[0] * a[0].conjugate, a[0] * a[1].conjugate, a[1] * a[0].conjugate, a[1] * a[1].conjugate]
        }

        // Photon outcomes: (photons per mode with their node, weight of the arrival pattern, unnormalised state).
        struct PhotonOutcome {
            var from: [Int8]
            var count: [Int]
            var weight: Double
            var state: TwoQubitState
            var direct = 0.0, exchanged = 0.0
        }
        var photonOutcomes: [PhotonOutcome] = []
        func add(_ key: [Int8], _ count: [Int], _ weight: Double, _ s: TwoQubitState, direct: Double = 0, exchanged: Double = 0) {
            if let i = photonOutcomes.firstIndex(where: { $0.from == key && $0.count == count }) {
                photonOutcomes[i].state = photonOutcomes[i].state + s
                photonOutcomes[i].direct += direct
                photonOutcomes[i].exchanged += exchanged
            } else {
                photonOutcomes.append(PhotonOutcome(from: key, count: count, weight: weight, state: s, direct: direct, exchanged: exchanged))
            }
        }
        let ea = arrival[0], eb = arrival[1]
        for (wa, ca) in components(nodes[0]) where wa > 0 {
            for (wb, cb) in components(nodes[1]) where wb > 0 {
                let w = wa * wb
                let ampA = amplitudes(ca, node: 0), ampB = amplitudes(cb, node: 1)
                let redA = reduced(ca), redB = reduced(cb)
                add([-1, -1, -1, -1], [0, 0, 0, 0], (1 - ea) * (1 - eb), TwoQubitState.product(redA, redB).scaled(w))
                for m in 0..<4 {
                    var key: [Int8] = [-1, -1, -1, -1], count = [0, 0, 0, 0]
                    key[m] = 0
                    count[m] = 1
                    add(key, count, ea * (1 - eb), TwoQubitState.product(outer2(ampA[m]), redB).scaled(w))
                    key[m] = 1
                    add(key, count, (1 - ea) * eb, TwoQubitState.product(redA, outer2(ampB[m])).scaled(w))
                }
                for m1 in 0..<4 {
                    for m2 in m1..<4 {
                        var key: [Int8] = [-1, -1, -1, -1], count = [0, 0, 0, 0]
                        let d = vector(ampA[m1], ampB[m2])
                        let s: TwoQubitState
                        var direct = 0.0, exchanged = 0.0
                        if m1 == m2 {
                            key[m1] = 2  // both photons: timed by whichever arrives first
                            count[m1] = 2
                            s = TwoQubitState.outer(d, d).scaled(1 + visibility)
                        } else {
                            key[m1] = 0
                            key[m2] = 1
                            count[m1] = 1
                            count[m2] = 1
                            let e = vector(ampA[m2], ampB[m1])
                            // The exchanged path puts A's photon in m2 and B's in m1.
                            s = TwoQubitState.outer(d, d) + TwoQubitState.outer(e, e)
                                + (TwoQubitState.outer(d, e) + TwoQubitState.outer(e, d)).scaled(visibility)
                            direct = w * TwoQubitState.outer(d, d).trace
                            exchanged = w * TwoQubitState.outer(e, e).trace
                        }
                        add(key, count, ea * eb, s.scaled(w), direct: direct, exchanged: exchanged)
                    }
                }
            }
        }

        let eta = an.efficiency
        var outcomes: [Outcome] = []
        var states: [TwoQubitState] = []
        for photon in photonOutcomes {
            let p = photon.state.trace * photon.weight
            guard p > 0 else { continue }
            let index = states.count
            states.append(photon.state.normalised)
            for mask in 1..<16 {
                var q = p
                for d in 0..<4 {
                    let silent = pow(1 - eta, Double(photon.count[d])) * (1 - darkProbability[d])
                    q *= (mask >> d) & 1 == 1 ? 1 - silent : silent
                }
                let paths = photon.direct + photon.exchanged
                if q > 0 {
                    outcomes.append(
                        Outcome(
                            probability: q, clicks: UInt8(mask), photonFrom: SIMD4(photon.from), state: index,
                            exchange: paths > 0 ? photon.exchanged / paths : 0))
                }
            }
        }
        self.outcomes = outcomes
        self.states = states
        var total = 0.0
        cumulative = outcomes.map {
            total += $0.probability
            return total
        }
        anyClick = min(1, total)
    }

    /// The click mask of a set of channels (1–4).
    public static func mask(_ channels: [Int]) -> UInt8 {
        channels.reduce(UInt8(0)) { $0 | (1 << UInt8(max(0, min(7, $1 - 1)))) }
    }

    /// P(exactly these detectors click) per attempt.
    public func probability(of channels: [Int]) -> Double {
        let m = Self.mask(channels)
        return outcomes.filter { $0.clicks == m }.reduce(0) { $0 + $1.probability }
    }

    /// The remote state heralded by exactly these detectors clicking (before dephasing).
    public func heraldedState(_ channels: [Int]) -> TwoQubitState {
        let m = Self.mask(channels)
        return outcomes.filter { $0.clicks == m }.reduce(TwoQubitState()) { $0 + states[$1.state].scaled($1.probability) }
            .normalised
    }

    /// Draws one outcome, given that some detector clicked.
    func draw(_ rng: inout SeededGenerator) -> Outcome? {
        guard let total = cumulative.last, total > 0 else { return nil }
        let u = rng.unitOpen() * total
        var lo = 0, hi = cumulative.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if cumulative[mid] < u { lo = mid + 1 } else { hi = mid }
        }
        return outcomes[lo]
    }
}
