import ComplexModule
import HeraldCore
import RealModule

/// One projective measurement of a photon pair: the states each arm's detector
/// projected onto, and what was counted.
public struct Projection: Sendable, Equatable {
    public var label: String
    public var a: JonesVector
    public var b: JonesVector
    public var counts: Double
    /// Expected accidental coincidences in the same interval (0 if unknown).
    public var accidentals: Double
    /// Crosstalk of arm A's analyser: the probability that a photon leaving in the state
    /// orthogonal to `a` is registered by this detector, and that one in `a` is lost to the
    /// other port (a polarizer of finite extinction, a PBS that leaks). 0 is ideal.
    public var crosstalkA: Double
    /// The same for arm B.
    public var crosstalkB: Double

    public init(
        label: String, a: JonesVector, b: JonesVector, counts: Double, accidentals: Double = 0,
        crosstalkA: Double = 0, crosstalkB: Double = 0
    ) {
        self.label = label
        self.a = a
        self.b = b
        self.counts = counts
        self.accidentals = accidentals
        self.crosstalkA = crosstalkA
        self.crosstalkB = crosstalkB
    }

    /// A projection named by two state letters, e.g. `("H", "D")`.
    public init(_ a: PolarizationLabel, _ b: PolarizationLabel, counts: Double, accidentals: Double = 0) {
        self.init(label: a.rawValue + b.rawValue, a: a.jones, b: b.jones, counts: counts, accidentals: accidentals)
    }

    /// The measurement's POVM element as weighted product states: with crosstalk ε per arm,
    /// E = E_A ⊗ E_B, E_X = (1−ε_X)|x⟩⟨x| + ε_X|x⊥⟩⟨x⊥|. Zero weights are left out, so an
    /// ideal projection is one component of weight 1.
    public var components: [(a: JonesVector, b: JonesVector, weight: Double)] {
        let arms = [(a, crosstalkA), (b, crosstalkB)].map { v, e in
            [(v, 1 - e), (v.orthogonal, e)].filter { $0.1 != 0 }
        }
        return arms[0].flatMap { ja, wa in arms[1].map { jb, wb in (ja, jb, wa * wb) } }
    }

    /// The two-photon POVM element (|a⟩⟨a| ⊗ |b⟩⟨b| without crosstalk).
    public var projector: ComplexMatrix {
        components.reduce(ComplexMatrix(zeros: 4)) { sum, c in
            sum + c.weight * .projector([c.a.h * c.b.h, c.a.h * c.b.v, c.a.v * c.b.h, c.a.v * c.b.v])
        }
    }
}

public enum TomographyError: Error, CustomStringConvertible, Sendable {
    case notInformationallyComplete(projections: Int)
    case noCounts
    /// The accidental estimate is at least the counts: nothing is left above background.
    case noSignalAboveAccidentals(counts: Double, accidentals: Double)

    public var description: String {
        switch self {
        case .notInformationallyComplete(let n):
            return "the \(n) projections do not determine a two-qubit state (not informationally complete); "
                + "use tomography-16, tomography-36 or tomography-9 with both detectors"
        case .noCounts:
            return "no coincidences were counted; check the coincidence window, the channel delays and that the source is on"
        case .noSignalAboveAccidentals(let n, let a):
            return "the accidental coincidences (\(String(format: "%.1f", a)) in all) are at least the counts (\(String(format: "%.0f", n))): "
                + "no signal is left above background to reconstruct; check the singles, the window and the duration they were computed from"
        }
    }
}

/// What to do with the accidental-coincidence estimate in linear inversion.
public enum AccidentalsPolicy: String, Sendable {
    /// Reconstruct the state of the detected pairs, accidentals included (what the detectors heralded).
    case keep
    /// Subtract the singles-based accidental estimate from each count before inversion.
    case subtract
}

/// How to reconstruct, and how to estimate errors.
public struct TomographyOptions: Sendable {
    public var estimator: Estimator = .linear
    /// Linear inversion only: subtract accidentals from the counts, or keep them.
    /// (MLE always adds the accidentals to the prediction instead.)
    public var accidentals: AccidentalsPolicy = .keep
    /// Relative intensity × detector-pair efficiency per projection (nil: all 1).
    public var scales: [Double]?
    /// Monte-Carlo resamples for error bars; 0 uses the delta method instead.
    public var monteCarlo = 0
    public var seed: UInt64 = 1

    public init(
        estimator: Estimator = .linear, accidentals: AccidentalsPolicy = .keep, scales: [Double]? = nil,
        monteCarlo: Int = 0, seed: UInt64 = 1
    ) {
        self.estimator = estimator
        self.accidentals = accidentals
        self.scales = scales
        self.monteCarlo = monteCarlo
        self.seed = seed
    }
}

/// A reconstructed two-qubit state with its figures of merit.
public struct TomographyResult: Sendable {
    public var estimator: Estimator
    /// The state the figures describe: closest physical state (linear) or the MLE.
    public var state: ComplexMatrix
    /// The unconstrained linear-inversion estimate (Hermitian, unit trace, possibly not positive).
    public var linear: ComplexMatrix
    /// The smallest eigenvalue of `linear`; negative means linear inversion was unphysical.
    public var linearMinEigenvalue: Double
    /// Fitted pair count for a unit-trace projector pair (the unknown overall intensity).
    public var intensity: Double
    public var figures: [String: Double]
    /// One-σ uncertainties, same keys as `figures`.
    public var uncertainties: [String: Double]
    /// `delta-method` or `monte-carlo (N resamples)`.
    public var uncertaintyMethod: String
    /// Optimiser iterations (MLE only).
    public var iterations: Int = 0

    /// The closest physical state to `linear` (kept for callers of the linear estimator).
    public var physical: ComplexMatrix { state }
}

/// Two-qubit state tomography.
public enum Tomography {
    /// Single-qubit Stokes components tr(|ψ⟩⟨ψ| σ_k) for σ = (I, X, Y, Z).
    static func stokes(_ v: JonesVector, crosstalk: Double = 0) -> [Double] {
        let hh = v.h.lengthSquared, vv = v.v.lengthSquared
        let hv = v.h.conjugate * v.v  // ⟨H|ψ⟩*⟨V|ψ⟩ … gives the coherences
        let c = 1 - 2 * crosstalk
        return [hh + vv, c * 2 * hv.real, c * 2 * hv.imaginary, c * (hh - vv)]
    }

    static let pauli: [ComplexMatrix] = [
        .identity(2),
        ComplexMatrix(n: 2, elements: [.zero, .one, .one, .zero]),
        ComplexMatrix(n: 2, elements: [.zero, Complex(0, -1), Complex(0, 1), .zero]),
        ComplexMatrix(n: 2, elements: [.one, .zero, .zero, Complex(-1)]),
    ]

    /// The 16 two-qubit Pauli products σ_i ⊗ σ_j, index 4i + j.
    static let pauliPairs: [ComplexMatrix] = (0..<16).map { .kron(pauli[$0 / 4], pauli[$0 % 4]) }

    /// Linear inversion by least squares over all projections.
    ///
    /// Counts are modelled as n_k = tr(P_k T) with T = N·ρ expanded in Pauli products; the
    /// 16 coefficients come from the normal equations, so any informationally complete
    /// set (16, 36, 9×4, or more) works, and N (the unknown intensity) is fitted.
    public static func linearInversion(
        _ projections: [Projection], accidentals: AccidentalsPolicy = .keep
    ) throws -> (rho: ComplexMatrix, intensity: Double) {
        let counts = projections.map { accidentals == .subtract ? $0.counts - $0.accidentals : $0.counts }
        return try linearInversion(projections, counts: counts)
    }

    static func designMatrix(_ projections: [Projection]) -> [[Double]] {
        projections.map { p in
            // Crosstalk ε shrinks an arm's Bloch vector by 1 − 2ε and keeps its trace.
            let sa = stokes(p.a, crosstalk: p.crosstalkA), sb = stokes(p.b, crosstalk: p.crosstalkB)
            return (0..<16).map { sa[$0 / 4] * sb[$0 % 4] / 4 }
        }
    }

    static func linearInversion(_ projections: [Projection], counts: [Double]) throws -> (
        rho: ComplexMatrix, intensity: Double
    ) {
        let design = designMatrix(projections)
        guard let t = leastSquares(design, counts) else {
            throw TomographyError.notInformationallyComplete(projections: projections.count)
        }
        let intensity = t[0]
        guard intensity > 0 else { throw TomographyError.noCounts }
        var rho = ComplexMatrix(zeros: 4)
        for k in 0..<16 { rho = rho + (t[k] / (4 * intensity)) * pauliPairs[k] }
        return (rho, intensity)
    }

    /// Solves min‖A x − y‖² through the normal equations with partial pivoting.
    /// Returns nil when AᵀA is (numerically) singular.
    static func leastSquares(_ a: [[Double]], _ y: [Double]) -> [Double]? {
        guard let m = a.first?.count else { return nil }
        var ata = [[Double]](repeating: [Double](repeating: 0, count: m + 1), count: m)
        for (row, yk) in zip(a, y) {
            for i in 0..<m where row[i] != 0 {
                for j in 0..<m { ata[i][j] += row[i] * row[j] }
                ata[i][m] += row[i] * yk
            }
        }
        let scale = (0..<m).map { ata[$0][$0] }.max() ?? 0
        guard scale > 0 else { return nil }
        for col in 0..<m {
            guard let pivot = (col..<m).max(by: { abs(ata[$0][col]) < abs(ata[$1][col]) }),
                abs(ata[pivot][col]) > 1e-10 * scale
            else { return nil }
            ata.swapAt(col, pivot)
            for r in 0..<m where r != col {
                let f = ata[r][col] / ata[col][col]
                if f == 0 { continue }
                for c in col...m { ata[r][c] -= f * ata[col][c] }
            }
        }
        return (0..<m).map { ata[$0][m] / ata[$0][$0] }
    }

    /// The closest density matrix to a Hermitian unit-trace matrix in Frobenius norm:
    /// its eigenvalues projected onto the probability simplex (Smolin, Gambetta & Smith,
    /// PRL 108, 070502 (2012)), eigenvectors kept.
    public static func closestPhysical(_ rho: ComplexMatrix) -> ComplexMatrix {
        let (values, vectors) = rho.hermitianEigen()
        return .fromEigen(values: projectOntoSimplex(values), vectors: vectors)
    }

    /// Euclidean projection of a vector onto {x ≥ 0, Σx = 1}.
    static func projectOntoSimplex(_ v: [Double]) -> [Double] {
        let sorted = v.sorted(by: >)
        var cumulative = 0.0
        var theta = 0.0
        for (k, value) in sorted.enumerated() {
            cumulative += value
            let candidate = (cumulative - 1) / Double(k + 1)
            if value - candidate > 0 { theta = candidate }
        }
        return v.map { max($0 - theta, 0) }
    }

    /// Reconstructs with the linear estimator (kept for existing callers).
    public static func reconstruct(
        _ projections: [Projection], accidentals: AccidentalsPolicy = .keep
    ) throws -> TomographyResult {
        try reconstruct(projections, options: TomographyOptions(estimator: .linear, accidentals: accidentals))
    }

    /// One estimate from counts: the state, its intensity and (MLE) the fitted parameters.
    struct Estimate {
        var state: ComplexMatrix
        var intensity: Double
        var parameters: [Double]
        var iterations: Int
        /// The unconstrained linear estimate (linear estimator only), for the `_linear` figures.
        var linear: ComplexMatrix?
    }

    /// Counts as linear inversion sees them: accidentals subtracted if asked, divided by the scales.
    static func linearCounts(_ projections: [Projection], _ counts: [Double], _ options: TomographyOptions) -> [Double] {
        let adjusted = zip(projections, counts).map { p, n in options.accidentals == .subtract ? n - p.accidentals : n }
        return options.scales.map { s in zip(adjusted, s).map { $0 / $1 } } ?? adjusted
    }

    static func estimate(
        _ projections: [Projection], counts: [Double], options: TomographyOptions, mle: MaximumLikelihood?,
        start: [Double]?
    ) throws -> Estimate {
        switch options.estimator {
        case .linear:
            let (rho, intensity) = try linearInversion(projections, counts: linearCounts(projections, counts, options))
            return Estimate(state: closestPhysical(rho), intensity: intensity, parameters: [], iterations: 0, linear: rho)
        case .mle, .hedged:
            guard let mle, let start else { throw TomographyError.noCounts }
            let (x, iterations) = mle.fit(counts: counts, start: start)
            let m = MaximumLikelihood.matrix(x)
            let trace = m.trace.real
            guard trace > 0 else { throw TomographyError.noCounts }
            return Estimate(state: (1 / trace) * m, intensity: trace, parameters: x, iterations: iterations, linear: nil)
        }
    }

    static func figures(_ state: ComplexMatrix, linear: ComplexMatrix?) -> [String: Double] {
        var f = FiguresOfMerit.all(state)
        if let linear { for (state, psi) in FiguresOfMerit.bellStates { f[figure: .linearFidelity(state)] = linear.expectation(psi) } }
        return f
    }

    /// Reconstructs the state, its figures of merit and their counting-statistics errors.
    /// Up to this many projections the delta method refits the estimator for every count
    /// moved (two fits per count: O(n²) in all); above it, each count's effect on the estimate
    /// is linearised (``linearisedDelta``), so tables of thousands of rows take linear time.
    static let refitDeltaLimit = 64

    /// The delta method with each count's effect on the estimate linearised: for linear
    /// inversion exactly, t = (AᵀA)⁻¹Aᵀy, so moving n_k by h moves t by h·(AᵀA)⁻¹a_k/s_k; for
    /// maximum likelihood by the implicit-function theorem at the optimum, h·H⁻¹∇μ_k/μ_k
    /// (one Newton step of the refit the small-table path makes). Each figure is then
    /// differenced at the two moved estimates as before. Nil if the system is singular, so the
    /// caller refits instead.
    static func linearisedDelta(
        _ projections: [Projection], counts: [Double], options: TomographyOptions, best: Estimate, mle: MaximumLikelihood?
    ) -> [String: Double]? {
        var variance = [String: Double]()
        func accumulate(_ k: Int, _ h: Double, _ up: Estimate, _ down: Estimate) {
            let fu = figures(up.state, linear: up.linear), fd = figures(down.state, linear: down.linear)
            for (name, vu) in fu {
                guard let vd = fd[name] else { continue }
                let derivative = (vu - vd) / (2 * h)
                variance[name, default: 0] += derivative * derivative * counts[k]
            }
        }
        switch options.estimator {
        case .linear:
            let design = designMatrix(projections)
            let y = linearCounts(projections, counts, options)
            guard let t = leastSquares(design, y) else { return nil }
            var ata = [Double](repeating: 0, count: 256)
            for row in design { for i in 0..<16 where row[i] != 0 { for j in 0..<16 { ata[i * 16 + j] += row[i] * row[j] } } }
            guard let inverse = invert16(ata) else { return nil }
            func estimate(_ t: [Double]) -> Estimate? {
                guard t[0] > 0 else { return nil }
                var rho = ComplexMatrix(zeros: 4)
                for k in 0..<16 { rho = rho + (t[k] / (4 * t[0])) * pauliPairs[k] }
                return Estimate(state: closestPhysical(rho), intensity: t[0], parameters: [], iterations: 0, linear: rho)
            }
            for k in projections.indices where counts[k] > 0 {
                let h = max(counts[k] * 1e-4, 1e-3)
                let scale = options.scales?[k] ?? 1
                var direction = [Double](repeating: 0, count: 16)
                for i in 0..<16 { for j in 0..<16 { direction[i] += inverse[i * 16 + j] * design[k][j] } }
                let up = zip(t, direction).map { $0 + h / scale * $1 }, down = zip(t, direction).map { $0 - h / scale * $1 }
                guard let eu = estimate(up), let ed = estimate(down) else { continue }
                accumulate(k, h, eu, ed)
            }
        case .mle, .hedged:
            guard let mle, best.parameters.count == 16 else { return nil }
            var hessian = [Double](repeating: 0, count: 256)
            mle.hessian(best.parameters, counts: counts, into: &hessian)
            guard let inverse = invert16(hessian) else { return nil }
            let x = SIMD16<Double>(best.parameters)
            func estimate(_ p: SIMD16<Double>) -> Estimate? {
                let params = (0..<16).map { p[$0] }
                let m = MaximumLikelihood.matrix(params)
                let trace = m.trace.real
                guard trace > 0 else { return nil }
                return Estimate(state: (1 / trace) * m, intensity: trace, parameters: params, iterations: 0, linear: nil)
            }
            mle.terms.withUnsafeBufferPointer { terms in
                mle.components.withUnsafeBufferPointer { components in
                    for k in projections.indices where counts[k] > 0 {
                        let (mu, gradient) = MaximumLikelihood.prediction(x, terms[k], components)
                        var direction = SIMD16<Double>()
                        for i in 0..<16 {
                            var sum = 0.0
                            for j in 0..<16 { sum += inverse[i * 16 + j] * gradient[j] }
                            direction[i] = sum / mu
                        }
                        let h = max(counts[k] * 1e-4, 1e-3)
                        guard let eu = estimate(x + h * direction), let ed = estimate(x - h * direction) else { continue }
                        accumulate(k, h, eu, ed)
                    }
                }
            }
        }
        return variance
    }

    /// The inverse of a 16×16 matrix (row-major) by Gauss–Jordan with partial pivoting; nil
    /// when it is numerically singular.
    static func invert16(_ m: [Double]) -> [Double]? {
        var a = m, inv = [Double](repeating: 0, count: 256)
        for i in 0..<16 { inv[i * 16 + i] = 1 }
        let scale = (0..<16).map { abs(a[$0 * 16 + $0]) }.max() ?? 0
        guard scale > 0 else { return nil }
        for col in 0..<16 {
            guard let pivot = (col..<16).max(by: { abs(a[$0 * 16 + col]) < abs(a[$1 * 16 + col]) }),
                abs(a[pivot * 16 + col]) > 1e-12 * scale
            else { return nil }
            if pivot != col {
                for j in 0..<16 {
                    a.swapAt(col * 16 + j, pivot * 16 + j)
                    inv.swapAt(col * 16 + j, pivot * 16 + j)
                }
            }
            let d = a[col * 16 + col]
            for j in 0..<16 {
                a[col * 16 + j] /= d
                inv[col * 16 + j] /= d
            }
            for r in 0..<16 where r != col {
                let f = a[r * 16 + col]
                if f == 0 { continue }
                for j in 0..<16 {
                    a[r * 16 + j] -= f * a[col * 16 + j]
                    inv[r * 16 + j] -= f * inv[col * 16 + j]
                }
            }
        }
        return inv
    }

    public static func reconstruct(_ projections: [Projection], options: TomographyOptions) throws -> TomographyResult {
        try reconstruct(projections, options: options, forceRefitDelta: false)
    }

    /// `forceRefitDelta`: refit for every count even on a large table (tests compare the paths).
    static func reconstruct(
        _ projections: [Projection], options: TomographyOptions, forceRefitDelta: Bool
    ) throws -> TomographyResult {
        guard projections.contains(where: { $0.counts > 0 }) else { throw TomographyError.noCounts }
        // Maximum likelihood models the accidentals as background, and subtraction removes
        // them: either way a background that reaches the counts leaves an intensity of zero.
        let total = projections.reduce(0) { $0 + $1.counts }, background = projections.reduce(0) { $0 + max($1.accidentals, 0) }
        if background >= total && (options.estimator != .linear || options.accidentals == .subtract) {
            throw TomographyError.noSignalAboveAccidentals(counts: total, accidentals: background)
        }
        let counts = projections.map(\.counts)
        // Linear inversion is always done: it is reported as-is and seeds the optimiser.
        let (linear, _) = try linearInversion(projections, counts: linearCounts(projections, counts, options))
        let minEigen = linear.hermitianEigen().values.last ?? 0
        let mle: MaximumLikelihood? =
            options.estimator == .linear
            ? nil : MaximumLikelihood(projections, scales: options.scales, hedging: options.estimator == .hedged ? 0.5 : 0)
        let start = mle == nil ? nil : MaximumLikelihood.start(projections)
        let best = try estimate(projections, counts: counts, options: options, mle: mle, start: start)
        let figures = figures(best.state, linear: best.linear)

        var sums = [String: (Double, Double, Int)]()  // Σx, Σx², n
        var variance = [String: Double]()
        let method: String
        if options.monteCarlo > 0 {
            // Resample every count from a Poisson law with the observed mean and refit.
            var rng = SeededGenerator(seed: options.seed)
            let warm = best.parameters.isEmpty ? start : best.parameters
            for _ in 0..<options.monteCarlo {
                let resampled = counts.map { Double(rng.poisson($0)) }
                guard let e = try? estimate(projections, counts: resampled, options: options, mle: mle, start: warm) else {
                    continue
                }
                for (k, v) in Self.figures(e.state, linear: e.linear) where v.isFinite {
                    let (s, s2, n) = sums[k] ?? (0, 0, 0)
                    sums[k] = (s + v, s2 + v * v, n + 1)
                }
            }
            for (k, (s, s2, n)) in sums where n > 1 {
                variance[k] = max(0, (s2 - s * s / Double(n)) / Double(n - 1))
            }
            method = "monte-carlo (\(options.monteCarlo) resamples)"
        } else if projections.count > Self.refitDeltaLimit, !forceRefitDelta,
            let linearised = linearisedDelta(projections, counts: counts, options: options, best: best, mle: mle)
        {
            variance = linearised
            method = "delta-method"
        } else {
            // Delta method through the whole estimator: var f = Σ (∂f/∂n_k)² n_k (Poisson),
            // derivatives by central differences. Accidental estimates are treated as exact.
            let warm = best.parameters.isEmpty ? start : best.parameters
            for k in projections.indices {
                let nk = counts[k]
                guard nk > 0 else { continue }
                let h = max(nk * 1e-4, 1e-3)
                var up = counts, down = counts
                up[k] += h
                down[k] -= h
                guard let eu = try? estimate(projections, counts: up, options: options, mle: mle, start: warm),
                    let ed = try? estimate(projections, counts: down, options: options, mle: mle, start: warm)
                else { continue }
                let fu = Self.figures(eu.state, linear: eu.linear), fd = Self.figures(ed.state, linear: ed.linear)
                for (name, vu) in fu {
                    guard let vd = fd[name] else { continue }
                    let derivative = (vu - vd) / (2 * h)
                    variance[name, default: 0] += derivative * derivative * nk
                }
            }
            method = "delta-method"
        }
        return TomographyResult(
            estimator: options.estimator, state: best.state, linear: linear, linearMinEigenvalue: minEigen,
            intensity: best.intensity, figures: figures, uncertainties: variance.mapValues { $0.squareRoot() },
            uncertaintyMethod: method, iterations: best.iterations)
    }
}
