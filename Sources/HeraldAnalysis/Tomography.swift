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

    public init(label: String, a: JonesVector, b: JonesVector, counts: Double, accidentals: Double = 0) {
        self.label = label
        self.a = a
        self.b = b
        self.counts = counts
        self.accidentals = accidentals
    }

    /// A projection named by two state letters, e.g. `("H", "D")`.
    public init(_ a: PolarizationLabel, _ b: PolarizationLabel, counts: Double, accidentals: Double = 0) {
        self.init(label: a.rawValue + b.rawValue, a: a.jones, b: b.jones, counts: counts, accidentals: accidentals)
    }

    /// The two-photon projector |a⟩⟨a| ⊗ |b⟩⟨b|.
    public var projector: ComplexMatrix {
        .projector([a.h * b.h, a.h * b.v, a.v * b.h, a.v * b.v])
    }
}

public enum TomographyError: Error, CustomStringConvertible, Sendable {
    case notInformationallyComplete(projections: Int)
    case noCounts

    public var description: String {
        switch self {
        case .notInformationallyComplete(let n):
            return "the \(n) projections do not determine a two-qubit state (not informationally complete); "
                + "use tomography-16, tomography-36 or tomography-9 with both detectors"
        case .noCounts:
            return "no coincidences were counted; check the coincidence window, the channel delays and that the source is on"
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

/// A reconstructed two-qubit state with its figures of merit.
public struct TomographyResult: Sendable {
    /// The unconstrained linear-inversion estimate (Hermitian, unit trace, possibly not positive).
    public var linear: ComplexMatrix
    /// The closest physical state to `linear` (Frobenius norm): positive and unit trace.
    public var physical: ComplexMatrix
    /// The smallest eigenvalue of `linear`; negative means linear inversion was unphysical.
    public var linearMinEigenvalue: Double
    /// Fitted pair count for a unit-trace projector pair (the unknown overall intensity).
    public var intensity: Double
    public var figures: [String: Double]
    /// One-σ uncertainties from Poisson counting statistics (delta method), same keys as `figures`.
    public var uncertainties: [String: Double]
}

/// Two-qubit state tomography.
public enum Tomography {
    /// Single-qubit Stokes components tr(|ψ⟩⟨ψ| σ_k) for σ = (I, X, Y, Z).
    static func stokes(_ v: JonesVector) -> [Double] {
        let hh = v.h.lengthSquared, vv = v.v.lengthSquared
        let hv = v.h.conjugate * v.v  // ⟨H|ψ⟩*⟨V|ψ⟩ … gives the coherences
        return [hh + vv, 2 * hv.real, 2 * hv.imaginary, hh - vv]
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
            let sa = stokes(p.a), sb = stokes(p.b)
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

    /// Reconstructs the state, its figures of merit and their counting-statistics errors.
    public static func reconstruct(
        _ projections: [Projection], accidentals: AccidentalsPolicy = .keep
    ) throws -> TomographyResult {
        let counts = projections.map { accidentals == .subtract ? $0.counts - $0.accidentals : $0.counts }
        let (linear, intensity) = try linearInversion(projections, counts: counts)
        let minEigen = linear.hermitianEigen().values.last ?? 0
        let physical = closestPhysical(linear)
        var figures = FiguresOfMerit.all(physical)
        for (name, value) in FiguresOfMerit.bellFidelities(linear) { figures[name + "_linear"] = value }

        // Delta method: var f = Σ (∂f/∂n_k)² var(n_k), with Poisson var(n_k) = observed raw counts.
        // The accidental estimate is treated as exact (it comes from far larger singles counts).
        var variance = [String: Double]()
        for k in projections.indices {
            let nk = projections[k].counts
            guard nk > 0 else { continue }
            let h = max(nk * 1e-4, 1e-3)
            var up = counts, down = counts
            up[k] += h
            down[k] -= h
            guard let lu = try? linearInversion(projections, counts: up).rho,
                let ld = try? linearInversion(projections, counts: down).rho
            else { continue }
            var fu = FiguresOfMerit.all(closestPhysical(lu))
            var fd = FiguresOfMerit.all(closestPhysical(ld))
            for (name, value) in FiguresOfMerit.bellFidelities(lu) { fu[name + "_linear"] = value }
            for (name, value) in FiguresOfMerit.bellFidelities(ld) { fd[name + "_linear"] = value }
            for (name, vu) in fu {
                guard let vd = fd[name] else { continue }
                let derivative = (vu - vd) / (2 * h)
                variance[name, default: 0] += derivative * derivative * nk
            }
        }
        return TomographyResult(
            linear: linear, physical: physical, linearMinEigenvalue: minEigen, intensity: intensity,
            figures: figures, uncertainties: variance.mapValues { $0.squareRoot() })
    }
}
