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
    /// This is the hot loop of every fit: the parameters and the gradient live in locals
    /// (registers) for the whole sum, with no allocation and no bounds checks inside.
    @inline(__always)
    func objective(_ x: [Double], counts: [Double], gradient g: inout [Double]) -> Double {
        let (x0, x1, x2, x3) = (x[0], x[1], x[2], x[3])
        let (x4, x5, x6, x7, x8, x9) = (x[4], x[5], x[6], x[7], x[8], x[9])
        let (x10, x11, x12, x13, x14, x15) = (x[10], x[11], x[12], x[13], x[14], x[15])
        var (g0, g1, g2, g3, g4, g5, g6, g7) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        var (g8, g9, g10, g11, g12, g13, g14, g15) = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
        var f = 0.0
        terms.withUnsafeBufferPointer { terms in
            counts.withUnsafeBufferPointer { counts in
                for k in 0..<terms.count {
                    let t = terms[k]
                    let n = counts[k]
                    let (p0r, p1r, p2r, p3r) = t.re
                    let (p0i, p1i, p2i, p3i) = t.im
                    // v = T†ψ: v_j = Σ_{i≥j} conj(T_ij) ψ_i, and
                    // conj(T_ij)·ψ_i = (Tr pr + Ti pi) + i(Tr pi − Ti pr).
                    var v0r = x0 * p0r + x4 * p1r + x5 * p1i + x6 * p2r + x7 * p2i + x10 * p3r + x11 * p3i
                    var v0i = x0 * p0i + x4 * p1i - x5 * p1r + x6 * p2i - x7 * p2r + x10 * p3i - x11 * p3r
                    var v1r = x1 * p1r + x8 * p2r + x9 * p2i + x12 * p3r + x13 * p3i
                    var v1i = x1 * p1i + x8 * p2i - x9 * p2r + x12 * p3i - x13 * p3r
                    var v2r = x2 * p2r + x14 * p3r + x15 * p3i
                    var v2i = x2 * p2i + x14 * p3i - x15 * p3r
                    var v3r = x3 * p3r
                    var v3i = x3 * p3i
                    let norm = v0r * v0r + v0i * v0i + v1r * v1r + v1i * v1i + v2r * v2r + v2i * v2i + v3r * v3r + v3i * v3i
                    let mu = max(t.scale * norm + t.accidentals, 1e-300)
                    f += mu - (n > 0 ? n * Double.log(mu) : 0)
                    // df/dμ = 1 − n/μ; dμ/d|v|² = d_k; d|v|²/dRe T_ij = 2 Re(conj(v_j) ψ_i), d/dIm T_ij = 2 Im(conj(v_j) ψ_i).
                    let w = 2 * t.scale * (1 - n / mu)
                    v0r *= w; v0i *= w; v1r *= w; v1i *= w; v2r *= w; v2i *= w; v3r *= w; v3i *= w
                    // Re/Im of conj(v_j)·ψ_i = (vr pr + vi pi) + i(vr pi − vi pr)
                    g0 += v0r * p0r + v0i * p0i
                    g1 += v1r * p1r + v1i * p1i
                    g2 += v2r * p2r + v2i * p2i
                    g3 += v3r * p3r + v3i * p3i
                    g4 += v0r * p1r + v0i * p1i; g5 += v0r * p1i - v0i * p1r
                    g6 += v0r * p2r + v0i * p2i; g7 += v0r * p2i - v0i * p2r
                    g8 += v1r * p2r + v1i * p2i; g9 += v1r * p2i - v1i * p2r
                    g10 += v0r * p3r + v0i * p3i; g11 += v0r * p3i - v0i * p3r
                    g12 += v1r * p3r + v1i * p3i; g13 += v1r * p3i - v1i * p3r
                    g14 += v2r * p3r + v2i * p3i; g15 += v2r * p3i - v2i * p3r
                }
            }
        }
        g[0] = g0; g[1] = g1; g[2] = g2; g[3] = g3; g[4] = g4; g[5] = g5; g[6] = g6; g[7] = g7
        g[8] = g8; g[9] = g9; g[10] = g10; g[11] = g11; g[12] = g12; g[13] = g13; g[14] = g14; g[15] = g15
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

    /// Gradient and Fisher information F = Σ_k J_k J_kᵀ / μ_k (J_k = ∂μ_k/∂x) at `x`, plus the
    /// exact Hessian of the hedging term. F is the expected Hessian of the Poisson NLL.
    func fisher(_ x: [Double], counts: [Double], fisher h: inout [Double]) {
        for i in 0..<256 { h[i] = 0 }
        var j = [Double](repeating: 0, count: 16)
        for k in 0..<terms.count {
            let t = terms[k]
            let (p0r, p1r, p2r, p3r) = t.re
            let (p0i, p1i, p2i, p3i) = t.im
            let v0r = x[0] * p0r + x[4] * p1r + x[5] * p1i + x[6] * p2r + x[7] * p2i + x[10] * p3r + x[11] * p3i
            let v0i = x[0] * p0i + x[4] * p1i - x[5] * p1r + x[6] * p2i - x[7] * p2r + x[10] * p3i - x[11] * p3r
            let v1r = x[1] * p1r + x[8] * p2r + x[9] * p2i + x[12] * p3r + x[13] * p3i
            let v1i = x[1] * p1i + x[8] * p2i - x[9] * p2r + x[12] * p3i - x[13] * p3r
            let v2r = x[2] * p2r + x[14] * p3r + x[15] * p3i
            let v2i = x[2] * p2i + x[14] * p3i - x[15] * p3r
            let v3r = x[3] * p3r, v3i = x[3] * p3i
            let norm = v0r * v0r + v0i * v0i + v1r * v1r + v1i * v1i + v2r * v2r + v2i * v2i + v3r * v3r + v3i * v3i
            let mu = max(t.scale * norm + t.accidentals, 1e-300)
            let c = 2 * t.scale
            j[0] = c * (v0r * p0r + v0i * p0i); j[1] = c * (v1r * p1r + v1i * p1i)
            j[2] = c * (v2r * p2r + v2i * p2i); j[3] = c * (v3r * p3r + v3i * p3i)
            j[4] = c * (v0r * p1r + v0i * p1i); j[5] = c * (v0r * p1i - v0i * p1r)
            j[6] = c * (v0r * p2r + v0i * p2i); j[7] = c * (v0r * p2i - v0i * p2r)
            j[8] = c * (v1r * p2r + v1i * p2i); j[9] = c * (v1r * p2i - v1i * p2r)
            j[10] = c * (v0r * p3r + v0i * p3i); j[11] = c * (v0r * p3i - v0i * p3r)
            j[12] = c * (v1r * p3r + v1i * p3i); j[13] = c * (v1r * p3i - v1i * p3r)
            j[14] = c * (v2r * p3r + v2i * p3i); j[15] = c * (v2r * p3i - v2i * p3r)
            _ = counts
            let inv = 1 / mu
            for a in 0..<16 where j[a] != 0 {
                let ja = j[a] * inv
                for b in a..<16 { h[a * 16 + b] += ja * j[b] }
            }
        }
        if hedging > 0 {
            var trace = 0.0
            for i in 0..<16 { trace += x[i] * x[i] }
            for i in 0..<4 { h[i * 16 + i] += hedging * 2 / (x[i] * x[i]) }
            for a in 0..<16 {
                h[a * 16 + a] += hedging * 8 / trace
                for b in a..<16 { h[a * 16 + b] -= hedging * 16 * x[a] * x[b] / (trace * trace) }
            }
        }
        for a in 0..<16 { for b in 0..<a { h[a * 16 + b] = h[b * 16 + a] } }
    }

    /// Solves (H + λ·diag(H))·δ = −g by Cholesky; false if not positive definite.
    static func dampedStep(_ h: [Double], _ g: [Double], lambda: Double, into delta: inout [Double]) -> Bool {
        var a = h
        for i in 0..<16 { a[i * 16 + i] = h[i * 16 + i] * (1 + lambda) + 1e-12 }
        // Cholesky A = L·Lᵀ in place (lower triangle).
        for c in 0..<16 {
            var d = a[c * 16 + c]
            for k in 0..<c { d -= a[c * 16 + k] * a[c * 16 + k] }
            guard d > 0 else { return false }
            let l = d.squareRoot()
            a[c * 16 + c] = l
            for r in (c + 1)..<16 {
                var s = a[r * 16 + c]
                for k in 0..<c { s -= a[r * 16 + k] * a[c * 16 + k] }
                a[r * 16 + c] = s / l
            }
        }
        for i in 0..<16 {
            var s = -g[i]
            for k in 0..<i { s -= a[i * 16 + k] * delta[k] }
            delta[i] = s / a[i * 16 + i]
        }
        for i in stride(from: 15, through: 0, by: -1) {
            var s = delta[i]
            for k in (i + 1)..<16 { s -= a[k * 16 + i] * delta[k] }
            delta[i] = s / a[i * 16 + i]
        }
        return true
    }

    /// Fits counts starting from `start` (parameters of T); returns the parameters and iterations.
    ///
    /// Levenberg–Marquardt on the Fisher information (Fisher scoring with damping): it
    /// converges in a handful of iterations where first-order methods need hundreds, and the
    /// damping keeps it stable near the boundary of state space where F becomes singular.
    public func fit(counts: [Double], start: [Double]) -> (parameters: [Double], iterations: Int) {
        var x = start
        var g = [Double](repeating: 0, count: 16), gTrial = g
        var h = [Double](repeating: 0, count: 256)
        var delta = [Double](repeating: 0, count: 16)
        var trial = x
        var f = objective(x, counts: counts, gradient: &g)
        var lambda = 1e-3
        let scale = max(counts.reduce(0, +), 1)
        var iteration = 0
        var quiet = 0
        while iteration < maxIterations {
            iteration += 1
            fisher(x, counts: counts, fisher: &h)
            var improved = false
            for _ in 0..<30 {
                if Self.dampedStep(h, g, lambda: lambda, into: &delta) {
                    for i in 0..<16 { trial[i] = x[i] + delta[i] }
                    let fTrial = objective(trial, counts: counts, gradient: &gTrial)
                    if fTrial.isFinite && fTrial <= f {
                        let change = f - fTrial
                        swap(&x, &trial)
                        swap(&g, &gTrial)
                        f = fTrial
                        lambda = max(lambda / 5, 1e-9)
                        improved = true
                        quiet = change < 1e-13 * scale ? quiet + 1 : 0
                        break
                    }
                }
                lambda *= 8
            }
            // Converged when the likelihood has stopped moving (twice) or no step helps.
            if !improved || quiet >= 2 { break }
        }
        let (polished, more) = polish(counts: counts, start: x)
        return (polished, iteration + more)
    }

    /// L-BFGS with Armijo backtracking. Slower to converge than the Fisher steps, but it keeps
    /// making progress where the Cholesky parametrisation degenerates (rank-deficient states,
    /// T_ii → 0), so it finishes what `fit` starts.
    func polish(counts: [Double], start: [Double]) -> (parameters: [Double], iterations: Int) {
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
            if change >= 0 && change < 1e-13 * scale { break }
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
