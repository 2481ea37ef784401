import ComplexModule
import HeraldCore
import RealModule

/// Maximum-likelihood two-qubit tomography with the exact Poisson likelihood.
///
/// The unnormalised state M = N·ρ = T·T† (T lower triangular: 4 real diagonal and 6 complex
/// entries, 16 real parameters) is positive by construction and its trace is the fitted
/// intensity N, so no constraint is needed. The expected count of projection k is
///     μ_k = d_k·⟨ψ_k|M|ψ_k⟩ + a_k,
/// with d_k a relative intensity × detector-pair efficiency (default 1) and a_k the
/// accidentals, *added to the prediction* (not subtracted from the data). The estimator
/// minimises Σ μ_k − n_k·log μ_k (the Poisson negative log-likelihood) by L-BFGS.
/// Hedged MLE (Blume-Kohout, PRL 105, 200504 (2010)) also multiplies the likelihood by
/// det(ρ)^β, β = 1/2, which keeps the estimate off the boundary of state space.
public struct MaximumLikelihood: Sendable {
    /// One projection in the form the optimiser uses: ψ = a ⊗ b as 4 complex amplitudes.
    struct Term: Sendable {
        var re: (Double, Double, Double, Double)
        var im: (Double, Double, Double, Double)
        var scale: Double
        var accidentals: Double
    }

    let terms: [Term]
    public let hedging: Double
    public var maxIterations = 1000

    /// - Parameters:
    ///   - scales: d_k per projection (relative intensity × efficiency); nil means all 1.
    ///   - hedging: β of hedged MLE; 0 for plain MLE.
    public init(_ projections: [Projection], scales: [Double]? = nil, hedging: Double = 0) {
        terms = projections.enumerated().map { k, p in
            let psi = [p.a.h * p.b.h, p.a.h * p.b.v, p.a.v * p.b.h, p.a.v * p.b.v]
            return Term(
                re: (psi[0].real, psi[1].real, psi[2].real, psi[3].real),
                im: (psi[0].imaginary, psi[1].imaginary, psi[2].imaginary, psi[3].imaginary),
                scale: scales?[k] ?? 1, accidentals: max(p.accidentals, 0))
        }
        self.hedging = hedging
    }

    /// Lower-triangular parameter layout: diagonal (0…3), then (i, j, re index, im index).
    static let offDiagonal: [(Int, Int, Int, Int)] = [
        (1, 0, 4, 5), (2, 0, 6, 7), (2, 1, 8, 9), (3, 0, 10, 11), (3, 1, 12, 13), (3, 2, 14, 15),
    ]

    /// Negative log-likelihood (up to a constant) and its gradient at parameters `x`.
    /// This is the hot loop of every fit: plain stack arithmetic, no allocation.
    @inline(__always)
    func objective(_ x: [Double], counts: [Double], gradient g: inout [Double]) -> Double {
        for i in 0..<16 { g[i] = 0 }
        var f = 0.0
        for k in 0..<terms.count {
            let t = terms[k]
            let n = counts[k]
            // v = T†ψ:  v_j = Σ_{i≥j} conj(T_ij) ψ_i.
            let (p0r, p1r, p2r, p3r) = t.re
            let (p0i, p1i, p2i, p3i) = t.im
            // conj(T_ij)·ψ_i = (Tr − iTi)(pr + i pi) = (Tr pr + Ti pi) + i(Tr pi − Ti pr)
            var v0r = x[0] * p0r + x[4] * p1r + x[5] * p1i + x[6] * p2r + x[7] * p2i + x[10] * p3r + x[11] * p3i
            var v0i = x[0] * p0i + x[4] * p1i - x[5] * p1r + x[6] * p2i - x[7] * p2r + x[10] * p3i - x[11] * p3r
            var v1r = x[1] * p1r + x[8] * p2r + x[9] * p2i + x[12] * p3r + x[13] * p3i
            var v1i = x[1] * p1i + x[8] * p2i - x[9] * p2r + x[12] * p3i - x[13] * p3r
            var v2r = x[2] * p2r + x[14] * p3r + x[15] * p3i
            var v2i = x[2] * p2i + x[14] * p3i - x[15] * p3r
            var v3r = x[3] * p3r
            var v3i = x[3] * p3i
            let norm = v0r * v0r + v0i * v0i + v1r * v1r + v1i * v1i + v2r * v2r + v2i * v2i + v3r * v3r + v3i * v3i
            let mu = max(t.scale * norm + t.accidentals, 1e-300)
            f += mu - (n > 0 ? n * Double.log(mu) : 0)
            // d f/d μ = 1 − n/μ; d μ/d|v|² = d_k; d|v|²/dRe T_ij = 2 Re(conj(v_j) ψ_i), d/dIm = 2 Im(conj(v_j) ψ_i).
            let w = 2 * t.scale * (1 - n / mu)
            v0r *= w; v0i *= w; v1r *= w; v1i *= w; v2r *= w; v2i *= w; v3r *= w; v3i *= w
            // Re/Im of conj(v_j)·ψ_i = (vr pr + vi pi) + i(vr pi − vi pr)
            g[0] += v0r * p0r + v0i * p0i
            g[1] += v1r * p1r + v1i * p1i
            g[2] += v2r * p2r + v2i * p2i
            g[3] += v3r * p3r + v3i * p3i
            g[4] += v0r * p1r + v0i * p1i; g[5] += v0r * p1i - v0i * p1r
            g[6] += v0r * p2r + v0i * p2i; g[7] += v0r * p2i - v0i * p2r
            g[8] += v1r * p2r + v1i * p2i; g[9] += v1r * p2i - v1i * p2r
            g[10] += v0r * p3r + v0i * p3i; g[11] += v0r * p3i - v0i * p3r
            g[12] += v1r * p3r + v1i * p3i; g[13] += v1r * p3i - v1i * p3r
            g[14] += v2r * p3r + v2i * p3i; g[15] += v2r * p3i - v2i * p3r
        }
        if hedging > 0 {
            // −β·log det ρ = −β·(Σ 2 log|T_ii| − 4 log tr M), tr M = Σ x².
            var trace = 0.0
            for i in 0..<16 { trace += x[i] * x[i] }
            var logDet = 0.0
            for i in 0..<4 { logDet += 2 * Double.log(max(abs(x[i]), 1e-300)) }
            f -= hedging * (logDet - 4 * Double.log(trace))
            for i in 0..<4 { g[i] -= hedging * 2 / x[i] }
            for i in 0..<16 { g[i] += hedging * 4 * 2 * x[i] / trace }
        }
        return f
    }

    /// Fits counts starting from `start` (parameters of T); returns the parameters and the iterations used.
    public func fit(counts: [Double], start: [Double]) -> (parameters: [Double], iterations: Int) {
        var x = start
        var g = [Double](repeating: 0, count: 16)
        var f = objective(x, counts: counts, gradient: &g)
        let m = 8
        var sHistory = [[Double]](repeating: [Double](repeating: 0, count: 16), count: m)
        var yHistory = sHistory
        var rhoHistory = [Double](repeating: 0, count: m)
        var alpha = [Double](repeating: 0, count: m)
        var stored = 0, head = 0
        var direction = [Double](repeating: 0, count: 16)
        var xNew = x, gNew = g
        let scale = max(counts.reduce(0, +), 1)
        var iteration = 0
        while iteration < maxIterations {
            iteration += 1
            // Two-loop recursion: direction = −H·g.
            for i in 0..<16 { direction[i] = -g[i] }
            var idx = head
            for _ in 0..<stored {
                idx = (idx - 1 + m) % m
                var dot = 0.0
                for i in 0..<16 { dot += sHistory[idx][i] * direction[i] }
                alpha[idx] = rhoHistory[idx] * dot
                for i in 0..<16 { direction[i] -= alpha[idx] * yHistory[idx][i] }
            }
            if stored > 0 {
                let last = (head - 1 + m) % m
                var sy = 0.0, yy = 0.0
                for i in 0..<16 {
                    sy += sHistory[last][i] * yHistory[last][i]
                    yy += yHistory[last][i] * yHistory[last][i]
                }
                let gamma = sy / yy
                for i in 0..<16 { direction[i] *= gamma }
            } else {
                // First step: a small move relative to the parameters' size.
                var gn = 0.0, xn = 0.0
                for i in 0..<16 {
                    gn += g[i] * g[i]
                    xn += x[i] * x[i]
                }
                let s = 1e-3 * (xn / max(gn, 1e-300)).squareRoot()
                for i in 0..<16 { direction[i] *= s }
            }
            for _ in 0..<stored {
                var dot = 0.0
                for i in 0..<16 { dot += yHistory[idx][i] * direction[i] }
                let beta = rhoHistory[idx] * dot
                for i in 0..<16 { direction[i] += sHistory[idx][i] * (alpha[idx] - beta) }
                idx = (idx + 1) % m
            }
            var slope = 0.0
            for i in 0..<16 { slope += g[i] * direction[i] }
            if slope >= 0 {
                // Not a descent direction (curvature lost): restart from steepest descent.
                stored = 0
                for i in 0..<16 { direction[i] = -g[i] * 1e-6 }
                slope = 0
                for i in 0..<16 { slope += g[i] * direction[i] }
                if slope == 0 { break }
            }
            // Backtracking line search with the Armijo condition.
            var step = 1.0
            var fNew = f
            var accepted = false
            for _ in 0..<40 {
                for i in 0..<16 { xNew[i] = x[i] + step * direction[i] }
                fNew = objective(xNew, counts: counts, gradient: &gNew)
                if fNew.isFinite && fNew <= f + 1e-4 * step * slope {
                    accepted = true
                    break
                }
                step *= 0.5
            }
            if !accepted { break }
            var sy = 0.0
            for i in 0..<16 {
                sHistory[head][i] = xNew[i] - x[i]
                yHistory[head][i] = gNew[i] - g[i]
                sy += sHistory[head][i] * yHistory[head][i]
            }
            if sy > 1e-300 {
                rhoHistory[head] = 1 / sy
                head = (head + 1) % m
                stored = min(stored + 1, m)
            }
            let change = f - fNew
            swap(&x, &xNew)
            swap(&g, &gNew)
            f = fNew
            // Converged when the likelihood no longer moves at the level of rounding of Σn.
            if change >= 0 && change < 1e-14 * scale { break }
        }
        return (x, iteration)
    }

    /// Parameters of T for a positive definite M (complex Cholesky, M = T·T†).
    public static func parameters(for m: ComplexMatrix) -> [Double] {
        var l = [[Complex<Double>]](repeating: [Complex<Double>](repeating: .zero, count: 4), count: 4)
        for j in 0..<4 {
            var d = m[j, j].real
            for k in 0..<j { d -= l[j][k].lengthSquared }
            let ljj = max(d, 1e-300).squareRoot()
            l[j][j] = Complex(ljj)
            for i in (j + 1)..<4 {
                var s = m[i, j]
                for k in 0..<j { s = s - l[i][k] * l[j][k].conjugate }
                l[i][j] = s * (1 / ljj)
            }
        }
        var x = [Double](repeating: 0, count: 16)
        for i in 0..<4 { x[i] = l[i][i].real }
        for (i, j, r, im) in offDiagonal {
            x[r] = l[i][j].real
            x[im] = l[i][j].imaginary
        }
        return x
    }

    /// M = T·T† for parameters `x`.
    public static func matrix(_ x: [Double]) -> ComplexMatrix {
        var t = ComplexMatrix(zeros: 4)
        for i in 0..<4 { t[i, i] = Complex(x[i]) }
        for (i, j, r, im) in offDiagonal { t[i, j] = Complex(x[r], x[im]) }
        return t * t.adjoint
    }

    /// A full-rank starting point: the linear estimate made physical, mixed with 1% white noise.
    public static func start(_ projections: [Projection]) -> [Double] {
        let fallback = 0.25 * ComplexMatrix.identity(4)
        let (rho, intensity) = (try? Tomography.linearInversion(projections)) ?? (fallback, max(projections.reduce(0) { $0 + $1.counts } / 4, 1))
        let physical = Tomography.closestPhysical(rho)
        let mixed = 0.99 * physical + 0.0025 * ComplexMatrix.identity(4)
        return parameters(for: max(intensity, 1e-9) * mixed)
    }
}
