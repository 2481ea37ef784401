import ComplexModule
import HeraldCore
import RealModule

/// Standard two-qubit figures of merit. Conventions are in docs/tomography.md.
public enum FiguresOfMerit {
    static let s = 1 / 2.0.squareRoot()

    /// Bell states in the basis |HH⟩, |HV⟩, |VH⟩, |VV⟩.
    public static let bellStates: [(BellState, [Complex<Double>])] = [
        (.phiPlus, [Complex(s), .zero, .zero, Complex(s)]),
        (.phiMinus, [Complex(s), .zero, .zero, Complex(-s)]),
        (.psiPlus, [.zero, Complex(s), Complex(s), .zero]),
        (.psiMinus, [.zero, Complex(s), Complex(-s), .zero]),
    ]

    /// Fidelity ⟨Φ|ρ|Φ⟩ to each Bell state.
    public static func bellFidelities(_ rho: ComplexMatrix) -> [String: Double] {
        var out = [String: Double]()
        for (state, psi) in bellStates { out[figure: .fidelity(state)] = rho.expectation(psi) }
        return out
    }

    /// Wootters concurrence: max(0, λ1−λ2−λ3−λ4), λ the square roots of the eigenvalues of
    /// √ρ ρ̃ √ρ with ρ̃ = (σy⊗σy) ρ* (σy⊗σy). Uses only Hermitian eigen-decompositions.
    public static func concurrence(_ rho: ComplexMatrix) -> Double {
        let yy = ComplexMatrix.kron(Tomography.pauli[2], Tomography.pauli[2])
        let flipped = yy * rho.conjugate * yy
        let root = rho.hermitianFunction { max($0, 0).squareRoot() }
        let m = root * flipped * root
        let lambdas = m.hermitianEigen().values.map { max($0, 0).squareRoot() }.sorted(by: >)
        return max(0, lambdas[0] - lambdas[1] - lambdas[2] - lambdas[3])
    }

    /// ρ with the second qubit transposed.
    public static func partialTransposeB(_ rho: ComplexMatrix) -> ComplexMatrix {
        var out = ComplexMatrix(zeros: 4)
        for i in 0..<2 { for k in 0..<2 { for j in 0..<2 { for l in 0..<2 {
            out[2 * i + k, 2 * j + l] = rho[2 * i + l, 2 * j + k]
        } } } }
        return out
    }

    /// All figures for a physical state.
    public static func all(_ rho: ComplexMatrix) -> [String: Double] {
        var f = bellFidelities(rho)
        let c = concurrence(rho)
        f[figure: .concurrence] = c
        f[figure: .tangle] = c * c
        let purity = ComplexMatrix.realTraceOfProduct(rho, rho)
        f[figure: .purity] = purity
        // Linear entropy normalised to [0, 1] for two qubits: (4/3)(1 − tr ρ²).
        f[figure: .linearEntropy] = 4.0 / 3.0 * (1 - purity)
        let eigen = rho.hermitianEigen().values
        f[figure: .entropy] = eigen.reduce(0) { $1 > 1e-15 ? $0 - $1 * Double.log2($1) : $0 }
        let traceNorm = partialTransposeB(rho).hermitianEigen().values.reduce(0) { $0 + abs($1) }
        f[figure: .negativity] = (traceNorm - 1) / 2
        f[figure: .logNegativity] = Double.log2(traceNorm)
        let t = correlationMatrix(rho)
        f[figure: .maxFidelity] = fullyEntangledFraction(t)
        f[figure: .maxCHSH] = horodeckiS(t)
        return f
    }

    /// T_ij = tr(ρ σ_i ⊗ σ_j), i, j ∈ {x, y, z}, row-major.
    public static func correlationMatrix(_ rho: ComplexMatrix) -> [Double] {
        var t = [Double](repeating: 0, count: 9)
        for i in 1...3 { for j in 1...3 {
            t[(i - 1) * 3 + (j - 1)] = ComplexMatrix.realTraceOfProduct(rho, Tomography.pauliPairs[4 * i + j])
        } }
        return t
    }

    /// Singular values of a 3×3 real matrix (descending), and the sign of its determinant.
    static func singularValues(_ t: [Double]) -> (values: [Double], detSign: Double) {
        // TᵀT is symmetric positive semi-definite: its eigenvalues are the squared singular values.
        var m = ComplexMatrix(zeros: 3)
        for i in 0..<3 { for j in 0..<3 {
            var s = 0.0
            for k in 0..<3 { s += t[k * 3 + i] * t[k * 3 + j] }
            m[i, j] = Complex(s)
        } }
        let values = m.hermitianEigen().values.map { max($0, 0).squareRoot() }
        let det = t[0] * (t[4] * t[8] - t[5] * t[7]) - t[1] * (t[3] * t[8] - t[5] * t[6]) + t[2] * (t[3] * t[7] - t[4] * t[6])
        return (values, det > 0 ? 1 : det < 0 ? -1 : 0)
    }

    /// Maximal fidelity to any maximally entangled state (the fully entangled fraction):
    /// (1 + s₁ + s₂ − sgn(det T)·s₃)/4 with s the singular values of T (Badziąg et al.,
    /// PRA 62, 012311 (2000)); maximally entangled states are (1⊗U)|Φ+⟩, whose T has det −1.
    public static func fullyEntangledFraction(_ t: [Double]) -> Double {
        let (s, sign) = singularValues(t)
        return (1 + s[0] + s[1] - sign * s[2]) / 4
    }

    /// The largest CHSH value the state allows: 2·√(m₁ + m₂), m the two largest eigenvalues
    /// of TᵀT (Horodecki, Horodecki & Horodecki, PLA 200, 340 (1995)).
    public static func horodeckiS(_ t: [Double]) -> Double {
        let (s, _) = singularValues(t)
        return 2 * (s[0] * s[0] + s[1] * s[1]).squareRoot()
    }
}
