import ComplexModule
import RealModule

/// A small dense square complex matrix (row-major). Sized for two-qubit work (4×4),
/// where plain loops beat any BLAS call overhead.
public struct ComplexMatrix: Sendable, Equatable {
    public let n: Int
    public var elements: [Complex<Double>]

    public init(n: Int, elements: [Complex<Double>]) {
        precondition(elements.count == n * n)
        self.n = n
        self.elements = elements
    }

    public init(zeros n: Int) { self.init(n: n, elements: .init(repeating: .zero, count: n * n)) }

    public static func identity(_ n: Int) -> ComplexMatrix {
        var m = ComplexMatrix(zeros: n)
        for i in 0..<n { m[i, i] = .one }
        return m
    }

    /// |ψ⟩⟨ψ|
    public static func projector(_ psi: [Complex<Double>]) -> ComplexMatrix {
        var m = ComplexMatrix(zeros: psi.count)
        for i in psi.indices { for j in psi.indices { m[i, j] = psi[i] * psi[j].conjugate } }
        return m
    }

    public static func diagonal(_ d: [Double]) -> ComplexMatrix {
        var m = ComplexMatrix(zeros: d.count)
        for i in d.indices { m[i, i] = Complex(d[i]) }
        return m
    }

    public subscript(i: Int, j: Int) -> Complex<Double> {
        get { elements[i * n + j] }
        set { elements[i * n + j] = newValue }
    }

    public var adjoint: ComplexMatrix {
        var m = ComplexMatrix(zeros: n)
        for i in 0..<n { for j in 0..<n { m[j, i] = self[i, j].conjugate } }
        return m
    }

    public var conjugate: ComplexMatrix {
        ComplexMatrix(n: n, elements: elements.map(\.conjugate))
    }

    public var trace: Complex<Double> { (0..<n).reduce(.zero) { $0 + self[$1, $1] } }

    public static func * (a: ComplexMatrix, b: ComplexMatrix) -> ComplexMatrix {
        precondition(a.n == b.n)
        let n = a.n
        var c = ComplexMatrix(zeros: n)
        for i in 0..<n {
            for k in 0..<n {
                let aik = a[i, k]
                if aik == .zero { continue }
                for j in 0..<n { c[i, j] = c[i, j] + aik * b[k, j] }
            }
        }
        return c
    }

    public static func * (s: Double, a: ComplexMatrix) -> ComplexMatrix {
        ComplexMatrix(n: a.n, elements: a.elements.map { $0 * s })
    }

    public static func + (a: ComplexMatrix, b: ComplexMatrix) -> ComplexMatrix {
        ComplexMatrix(n: a.n, elements: zip(a.elements, b.elements).map { $0 + $1 })
    }

    public static func - (a: ComplexMatrix, b: ComplexMatrix) -> ComplexMatrix {
        ComplexMatrix(n: a.n, elements: zip(a.elements, b.elements).map { $0 - $1 })
    }

    /// Kronecker product a ⊗ b.
    public static func kron(_ a: ComplexMatrix, _ b: ComplexMatrix) -> ComplexMatrix {
        let n = a.n * b.n
        var m = ComplexMatrix(zeros: n)
        for i in 0..<a.n { for j in 0..<a.n { for k in 0..<b.n { for l in 0..<b.n {
            m[i * b.n + k, j * b.n + l] = a[i, j] * b[k, l]
        } } } }
        return m
    }

    /// Re tr(a·b) for Hermitian a, b, computed without forming the product.
    public static func realTraceOfProduct(_ a: ComplexMatrix, _ b: ComplexMatrix) -> Double {
        var s = 0.0
        for i in 0..<a.n { for k in 0..<a.n { s += (a[i, k] * b[k, i]).real } }
        return s
    }

    /// ⟨ψ|M|ψ⟩ (real part).
    public func expectation(_ psi: [Complex<Double>]) -> Double {
        var s = Complex<Double>.zero
        for i in 0..<n { for j in 0..<n { s = s + psi[i].conjugate * self[i, j] * psi[j] } }
        return s.real
    }

    /// Largest absolute element difference, for tests and convergence checks.
    public func maxDifference(_ other: ComplexMatrix) -> Double {
        zip(elements, other.elements).map { ($0 - $1).length }.max() ?? 0
    }

    /// Eigen-decomposition of a Hermitian matrix by cyclic complex Jacobi rotations.
    ///
    /// Returns eigenvalues in descending order and the unitary whose columns are the
    /// matching eigenvectors. Jacobi is chosen over QR because for n ≤ 8 it is short,
    /// unconditionally stable, and accurate for tiny eigenvalues (which decide positivity).
    public func hermitianEigen() -> (values: [Double], vectors: ComplexMatrix) {
        var a = self
        var v = ComplexMatrix.identity(n)
        for _ in 0..<100 {
            var off = 0.0
            for p in 0..<n { for q in (p + 1)..<max(p + 1, n) { off += a[p, q].lengthSquared } }
            if off < 1e-30 { break }
            for p in 0..<(n - 1) {
                for q in (p + 1)..<n {
                    let apq = a[p, q]
                    let r = apq.length
                    if r < 1e-300 { continue }
                    // Phase that makes the (p,q) element real, then a real Jacobi rotation.
                    let phase = apq * (1 / r)  // e^{iφ}
                    let app = a[p, p].real, aqq = a[q, q].real
                    let zeta = (aqq - app) / (2 * r)
                    let t = (zeta >= 0 ? 1.0 : -1.0) / (abs(zeta) + (1 + zeta * zeta).squareRoot())
                    let c = 1 / (1 + t * t).squareRoot()
                    let s = t * c
                    // U acts on the (p,q) plane: [[c, s], [-s·e^{-iφ}, c·e^{-iφ}]].
                    let upp = Complex(c), upq = Complex(s)
                    let uqp = phase.conjugate * (-s), uqq = phase.conjugate * c
                    // a ← a·U (columns p, q)
                    for k in 0..<n {
                        let akp = a[k, p], akq = a[k, q]
                        a[k, p] = akp * upp + akq * uqp
                        a[k, q] = akp * upq + akq * uqq
                    }
                    // a ← U†·a (rows p, q)
                    for k in 0..<n {
                        let apk = a[p, k], aqk = a[q, k]
                        a[p, k] = upp.conjugate * apk + uqp.conjugate * aqk
                        a[q, k] = upq.conjugate * apk + uqq.conjugate * aqk
                    }
                    a[p, q] = .zero
                    a[q, p] = .zero
                    for k in 0..<n {
                        let vkp = v[k, p], vkq = v[k, q]
                        v[k, p] = vkp * upp + vkq * uqp
                        v[k, q] = vkp * upq + vkq * uqq
                    }
                }
            }
        }
        let order = (0..<n).sorted { a[$0, $0].real > a[$1, $1].real }
        var sortedVectors = ComplexMatrix(zeros: n)
        for (newCol, oldCol) in order.enumerated() {
            for k in 0..<n { sortedVectors[k, newCol] = v[k, oldCol] }
        }
        return (order.map { a[$0, $0].real }, sortedVectors)
    }

    /// V·diag(d)·V†
    public static func fromEigen(values: [Double], vectors v: ComplexMatrix) -> ComplexMatrix {
        let n = v.n
        var m = ComplexMatrix(zeros: n)
        for k in 0..<n where values[k] != 0 {
            for i in 0..<n {
                let vik = v[i, k] * values[k]
                for j in 0..<n { m[i, j] = m[i, j] + vik * v[j, k].conjugate }
            }
        }
        return m
    }

    /// Applies `f` to the eigenvalues of a Hermitian matrix.
    public func hermitianFunction(_ f: (Double) -> Double) -> ComplexMatrix {
        let (values, vectors) = hermitianEigen()
        return .fromEigen(values: values.map(f), vectors: vectors)
    }
}

extension Complex where RealType == Double {
    /// Scaling by a real number (not provided by swift-numerics 1.x).
    @inline(__always)
    static func * (z: Complex<Double>, a: Double) -> Complex<Double> {
        Complex(z.real * a, z.imaginary * a)
    }
}
