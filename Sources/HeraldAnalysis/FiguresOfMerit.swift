import ComplexModule
import RealModule

/// Standard two-qubit figures of merit. Conventions are in docs/tomography.md.
public enum FiguresOfMerit {
    static let s = 1 / 2.0.squareRoot()

    /// Bell states in the basis |HH⟩, |HV⟩, |VH⟩, |VV⟩.
    public static let bellStates: [(String, [Complex<Double>])] = [
        ("phi+", [Complex(s), .zero, .zero, Complex(s)]),
        ("phi-", [Complex(s), .zero, .zero, Complex(-s)]),
        ("psi+", [.zero, Complex(s), Complex(s), .zero]),
        ("psi-", [.zero, Complex(s), Complex(-s), .zero]),
    ]

    /// Fidelity ⟨Φ|ρ|Φ⟩ to each Bell state, keyed `fidelity_phi+` etc.
    public static func bellFidelities(_ rho: ComplexMatrix) -> [String: Double] {
        var out = [String: Double]()
        for (name, psi) in bellStates { out["fidelity_" + name] = rho.expectation(psi) }
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
        f["concurrence"] = c
        f["tangle"] = c * c
        let purity = ComplexMatrix.realTraceOfProduct(rho, rho)
        f["purity"] = purity
        // Linear entropy normalised to [0, 1] for two qubits: (4/3)(1 − tr ρ²).
        f["linear_entropy"] = 4.0 / 3.0 * (1 - purity)
        let eigen = rho.hermitianEigen().values
        f["entropy"] = eigen.reduce(0) { $1 > 1e-15 ? $0 - $1 * Double.log2($1) : $0 }
        let traceNorm = partialTransposeB(rho).hermitianEigen().values.reduce(0) { $0 + abs($1) }
        f["negativity"] = (traceNorm - 1) / 2
        f["log_negativity"] = Double.log2(traceNorm)
        return f
    }
}
