import ComplexModule
import HeraldCore
import RealModule

/// Maximum-likelihood two-qubit tomography with the exact Poisson likelihood.
///
/// The unnormalised state M = N·ρ = T·T† (T lower triangular: 4 real diagonal and 6 complex
/// entries, 16 real parameters) is positive by construction and its trace is the fitted
/// intensity N, so no constraint is needed. The expected count of projection k is
///     μ_k = d_k·tr(E_k M) + a_k,   E_k = Σ_c w_c |ψ_c⟩⟨ψ_c|,
/// with d_k a relative intensity × detector-pair efficiency (default 1), a_k the accidentals
/// *added to the prediction* (not subtracted from the data), and E_k the measurement's POVM
/// element: the ideal projector |a⊗b⟩⟨a⊗b|, or with crosstalk a mixture of it and its
/// neighbours (see `Projection.components`). The estimator minimises Σ μ_k − n_k·log μ_k
/// (the Poisson negative log-likelihood).
/// Hedged MLE (Blume-Kohout, PRL 105, 200504 (2010)) also multiplies the likelihood by
/// det(ρ)^β, β = 1/2, which keeps the estimate off the boundary of state space.
public struct MaximumLikelihood: Sendable {
    /// One pure product state ψ = a ⊗ b of a POVM element (4 complex amplitudes) and its weight.
    struct Component: Sendable {
        var re: SIMD4<Double>
        var im: SIMD4<Double>
        var weight: Double
    }

    /// One measured count: its POVM element is `components[first..<end]`.
    struct Term: Sendable {
        var first: Int
        var end: Int
        var scale: Double
        var accidentals: Double
    }

    let terms: [Term]
    let components: [Component]
    public let hedging: Double
    public var maxIterations = 1000

    /// - Parameters:
    ///   - scales: d_k per projection (relative intensity × efficiency); nil means all 1.
    ///   - hedging: β of hedged MLE; 0 for plain MLE.
    public init(_ projections: [Projection], scales: [Double]? = nil, hedging: Double = 0) {
        var terms: [Term] = []
        var components: [Component] = []
        for (k, p) in projections.enumerated() {
            let first = components.count
            for (a, b, w) in p.components {
                let psi = [a.h * b.h, a.h * b.v, a.v * b.h, a.v * b.v]
                components.append(
                    Component(
                        re: SIMD4(psi[0].real, psi[1].real, psi[2].real, psi[3].real),
                        im: SIMD4(psi[0].imaginary, psi[1].imaginary, psi[2].imaginary, psi[3].imaginary),
                        weight: w))
            }
            terms.append(Term(first: first, end: components.count, scale: scales?[k] ?? 1, accidentals: max(p.accidentals, 0)))
        }
        self.terms = terms
        self.components = components
        self.hedging = hedging
    }

    /// Lower-triangular parameter layout: diagonal (0…3), then (i, j, re index, im index).
    static let offDiagonal: [(Int, Int, Int, Int)] = [
        (1, 0, 4, 5), (2, 0, 6, 7), (2, 1, 8, 9), (3, 0, 10, 11), (3, 1, 12, 13), (3, 2, 14, 15),
    ]

    /// |T†ψ|² and half its gradient with respect to the 16 parameters, for one component.
    /// v = T†ψ: v_j = Σ_{i≥j} conj(T_ij) ψ_i, with conj(T_ij)·ψ_i = (Tr pr + Ti pi) + i(Tr pi − Ti pr);
    /// ∂|v|²/∂Re T_ij = 2 Re(conj(v_j) ψ_i) and ∂|v|²/∂Im T_ij = 2 Im(conj(v_j) ψ_i).
    @inline(__always)
    static func normAndHalfGradient(_ x: SIMD16<Double>, _ c: Component) -> (Double, SIMD16<Double>) {
        let (p0r, p1r, p2r, p3r) = (c.re[0], c.re[1], c.re[2], c.re[3])
        let (p0i, p1i, p2i, p3i) = (c.im[0], c.im[1], c.im[2], c.im[3])
        let v0r = x[0] * p0r + x[4] * p1r + x[5] * p1i + x[6] * p2r + x[7] * p2i + x[10] * p3r + x[11] * p3i
        let v0i = x[0] * p0i + x[4] * p1i - x[5] * p1r + x[6] * p2i - x[7] * p2r + x[10] * p3i - x[11] * p3r
        let v1r = x[1] * p1r + x[8] * p2r + x[9] * p2i + x[12] * p3r + x[13] * p3i
        let v1i = x[1] * p1i + x[8] * p2i - x[9] * p2r + x[12] * p3i - x[13] * p3r
        let v2r = x[2] * p2r + x[14] * p3r + x[15] * p3i
        let v2i = x[2] * p2i + x[14] * p3i - x[15] * p3r
        let v3r = x[3] * p3r, v3i = x[3] * p3i
        let norm = v0r * v0r + v0i * v0i + v1r * v1r + v1i * v1i + v2r * v2r + v2i * v2i + v3r * v3r + v3i * v3i
        let half = SIMD16<Double>(
            v0r * p0r + v0i * p0i, v1r * p1r + v1i * p1i, v2r * p2r + v2i * p2i, v3r * p3r + v3i * p3i,
            v0r * p1r + v0i * p1i, v0r * p1i - v0i * p1r, v0r * p2r + v0i * p2i, v0r * p2i - v0i * p2r,
            v1r * p2r + v1i * p2i, v1r * p2i - v1i * p2r, v0r * p3r + v0i * p3i, v0r * p3i - v0i * p3r,
            v1r * p3r + v1i * p3i, v1r * p3i - v1i * p3r, v2r * p3r + v2i * p3i, v2r * p3i - v2i * p3r)
        return (norm, half)
    }

    /// μ_k and ∂μ_k/∂x for one term.
    @inline(__always)
    static func prediction(
        _ x: SIMD16<Double>, _ t: Term, _ components: UnsafeBufferPointer<Component>
    ) -> (Double, SIMD16<Double>) {
        var norm = 0.0
        var half = SIMD16<Double>()
        for c in t.first..<t.end {
            let (n, h) = normAndHalfGradient(x, components[c])
            let w = components[c].weight
            norm += w * n
            half += w * h
        }
        return (max(t.scale * norm + t.accidentals, 1e-300), (2 * t.scale) * half)
    }

    /// Negative log-likelihood (up to a constant) and its gradient at parameters `x`.
    /// This is the hot loop of every fit: no allocation and no bounds checks inside.
    func objective(_ xs: [Double], counts: [Double], gradient g: inout [Double]) -> Double {
        let x = SIMD16<Double>(xs)
        var gradient = SIMD16<Double>()
        var f = 0.0
        terms.withUnsafeBufferPointer { terms in
            components.withUnsafeBufferPointer { components in
                counts.withUnsafeBufferPointer { counts in
                    for k in 0..<terms.count {
                        let n = counts[k]
                        let (mu, dmu) = Self.prediction(x, terms[k], components)
                        f += mu - (n > 0 ? n * Double.log(mu) : 0)
                        gradient += (1 - n / mu) * dmu
                    }
                }
            }
        }
        if hedging > 0 {
            // −β·log det ρ = −β·(Σ 2 log|T_ii| − 4 log tr M), tr M = Σ x².
            let trace = (x * x).sum()
            var logDet = 0.0
            for i in 0..<4 {
                logDet += 2 * Double.log(max(abs(x[i]), 1e-300))
                gradient[i] -= hedging * 2 / x[i]
            }
            f -= hedging * (logDet - 4 * Double.log(trace))
            gradient += (hedging * 8 / trace) * x
        }
        for i in 0..<16 { g[i] = gradient[i] }
        return f
    }

    /// The exact Hessian of the negative log-likelihood at `x`, row-major into `h`:
    ///     Σ_k (n_k/μ_k²) J_k J_kᵀ + ∂²/∂x² tr(A·T·T†),   A = Σ_k (1 − n_k/μ_k) d_k E_k,
    /// with J_k = ∂μ_k/∂x. The second term is what Gauss–Newton (Fisher scoring) drops; it
    /// keeps curvature along directions where T_ii → 0, so Newton steps converge quickly on
    /// rank-deficient estimates (the usual case for nearly pure states) where Fisher steps stall.
    func hessian(_ xs: [Double], counts: [Double], into h: inout [Double]) {
        let x = SIMD16<Double>(xs)
        var rows = [SIMD16<Double>](repeating: SIMD16(), count: 16)
        // A as real and imaginary parts (A = R + iS, R symmetric, S antisymmetric).
        var ar = [Double](repeating: 0, count: 16), ai = ar
        terms.withUnsafeBufferPointer { terms in
            components.withUnsafeBufferPointer { components in
                for (k, t) in terms.enumerated() {
                    let n = counts[k]
                    let (mu, j) = Self.prediction(x, t, components)
                    let scaled = (n / (mu * mu)) * j
                    if n > 0 { for a in 0..<16 where j[a] != 0 { rows[a] += j[a] * scaled } }
                    let c = (1 - n / mu) * t.scale
                    for index in t.first..<t.end {
                        let p = components[index]
                        let w = c * p.weight
                        for r in 0..<4 {
                            for q in 0..<4 {
                                // (ψψᴴ)_rq = ψ_r·conj(ψ_q)
                                ar[r * 4 + q] += w * (p.re[r] * p.re[q] + p.im[r] * p.im[q])
                                ai[r * 4 + q] += w * (p.im[r] * p.re[q] - p.re[r] * p.im[q])
                            }
                        }
                    }
                }
            }
        }
        // tr(A T T†) = Σ_j t_jᴴ A t_j over the columns t_j of T. With t = u + iv its Hessian in
        // (u, v) is 2[[R, −S], [S, R]], restricted to each column's own parameters.
        for column in 0..<4 {
            for r in column..<4 {
                for q in column..<4 {
                    let (ur, vr) = Self.parameterIndex[r][column], (uq, vq) = Self.parameterIndex[q][column]
                    rows[ur][uq] += 2 * ar[r * 4 + q]
                    if let vr, let vq { rows[vr][vq] += 2 * ar[r * 4 + q] }
                    if let vq { rows[ur][vq] -= 2 * ai[r * 4 + q] }
                    if let vr { rows[vr][uq] += 2 * ai[r * 4 + q] }
                }
            }
        }
        if hedging > 0 {
            let trace = (x * x).sum()
            for a in 0..<16 {
                rows[a] -= (hedging * 16 * x[a] / (trace * trace)) * x
                rows[a][a] += hedging * 8 / trace
            }
            for i in 0..<4 { rows[i][i] += hedging * 2 / (x[i] * x[i]) }
        }
        for a in 0..<16 { for b in 0..<16 { h[a * 16 + b] = rows[a][b] } }
    }

    /// Parameter indices of T_rc (r ≥ c): the real part, and the imaginary part (nil on the
    /// real diagonal). A table built once from `offDiagonal`, since every Newton step reads it.
    static let parameterIndex: [[(re: Int, im: Int?)]] = (0..<4).map { r in
        (0..<4).map { c in
            if r == c { return (r, nil) }
            let entry = offDiagonal.first { $0.0 == r && $0.1 == c }
            return entry.map { ($0.2, $0.3) } ?? (-1, nil)  // above the diagonal: never read
        }
    }

    /// Solves (H + λ·|diag H|)·δ = −g by Cholesky; false if not positive definite (the
    /// exact Hessian can be indefinite far from the optimum: a larger λ then makes it definite).
    static func dampedStep(_ h: [Double], _ g: [Double], lambda: Double, into delta: inout [Double]) -> Bool {
        var a = h
        for i in 0..<16 { a[i * 16 + i] = h[i * 16 + i] + lambda * abs(h[i * 16 + i]) + 1e-12 }
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
    /// Damped Newton (Levenberg–Marquardt on the exact Hessian): it converges in a handful of
    /// iterations where first-order methods need hundreds, and the damping keeps it stable
    /// where the Hessian is indefinite or nearly singular.
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
        var converged = false
        while iteration < maxIterations {
            iteration += 1
            hessian(x, counts: counts, into: &h)
            var improved = false
            for _ in 0..<30 {
                if Self.dampedStep(h, g, lambda: lambda, into: &delta) {
                    // Newton decrement gᵀF⁻¹g: the likelihood still to gain. Below 1e-10
                    // (in log-likelihood units, far under any statistical meaning) we are done.
                    if lambda <= 1e-6 {
                        var decrement = 0.0
                        for i in 0..<16 { decrement -= g[i] * delta[i] }
                        if decrement < 1e-10 {
                            converged = true
                            break
                        }
                    }
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
            // Stalled when the likelihood has stopped moving (twice) or no step helps.
            if converged || !improved || quiet >= 2 { break }
        }
        // Newton steps can still stall on exactly singular problems (pure states from exact counts).
        if converged { return (x, iteration) }
        let (polished, more) = polish(counts: counts, start: x)
        return (polished, iteration + more)
    }

    /// L-BFGS with Armijo backtracking. Slower to converge than the Newton steps, but it keeps
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
