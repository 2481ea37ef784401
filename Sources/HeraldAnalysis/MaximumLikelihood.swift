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
    func objective(_ xs: [Double], counts: [Double], gradient g: inout [Double]) -> Double {
        let (f, gradient) = withBuffers(counts) { evaluate(SIMD16(xs), $0) }
        for i in 0..<16 { g[i] = gradient[i] }
        return f
    }

    /// The model's terms, components and the counts as buffer pointers, for the hot loops.
    struct Buffers {
        var terms: UnsafeBufferPointer<Term>
        var components: UnsafeBufferPointer<Component>
        var counts: UnsafeBufferPointer<Double>
    }

    func withBuffers<R>(_ counts: [Double], _ body: (Buffers) -> R) -> R {
        terms.withUnsafeBufferPointer { terms in
            components.withUnsafeBufferPointer { components in
                counts.withUnsafeBufferPointer { counts in body(Buffers(terms: terms, components: components, counts: counts)) }
            }
        }
    }

    /// Negative log-likelihood and its gradient: the hot loop of every fit, with the
    /// parameters in registers and no allocation or bounds check inside.
    @inline(__always)
    func evaluate(_ x: SIMD16<Double>, _ b: Buffers) -> (Double, SIMD16<Double>) {
        var gradient = SIMD16<Double>()
        var f = 0.0
        for k in 0..<b.terms.count {
            let n = b.counts[k]
            let (mu, dmu) = Self.prediction(x, b.terms[k], b.components)
            f += mu - (n > 0 ? n * Double.log(mu) : 0)
            gradient += (1 - n / mu) * dmu
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
        return (f, gradient)
    }

    /// The exact Hessian of the negative log-likelihood at `x`, row-major into `h`:
    ///     Σ_k (n_k/μ_k²) J_k J_kᵀ + ∂²/∂x² tr(A·T·T†),   A = Σ_k (1 − n_k/μ_k) d_k E_k,
    /// with J_k = ∂μ_k/∂x. The second term is what Gauss–Newton (Fisher scoring) drops; it
    /// keeps curvature along directions where T_ii → 0, so Newton steps converge quickly on
    /// rank-deficient estimates (the usual case for nearly pure states) where Fisher steps stall.
    func hessian(_ xs: [Double], counts: [Double], into h: inout [Double]) {
        withBuffers(counts) { b in
            h.withUnsafeMutableBufferPointer { out in
                withUnsafeTemporaryAllocation(of: Double.self, capacity: 32) { a in
                    hessian(SIMD16(xs), b, into: out, scratch: a)
                }
            }
        }
    }

    /// The Hessian into `h` (256 doubles, row-major), with `scratch` (32 doubles) for A.
    func hessian(
        _ x: SIMD16<Double>, _ b: Buffers, into h: UnsafeMutableBufferPointer<Double>, scratch: UnsafeMutableBufferPointer<Double>
    ) {
        h.initialize(repeating: 0)
        scratch.initialize(repeating: 0)
        guard let rows = UnsafeMutableRawPointer(h.baseAddress), let ar = scratch.baseAddress else { return }
        // A as real and imaginary parts (A = R + iS, R symmetric, S antisymmetric).
        let ai = ar + 16
        let rowBytes = 16 * MemoryLayout<Double>.stride
        for k in 0..<b.terms.count {
            let t = b.terms[k]
            let n = b.counts[k]
            let (mu, j) = Self.prediction(x, t, b.components)
            if n > 0 {
                // Σ (n/μ²) J Jᵀ, a row at a time.
                let scaled = (n / (mu * mu)) * j
                for a in 0..<16 where j[a] != 0 {
                    let row = rows.loadUnaligned(fromByteOffset: a * rowBytes, as: SIMD16<Double>.self)
                    rows.storeBytes(of: row + j[a] * scaled, toByteOffset: a * rowBytes, as: SIMD16<Double>.self)
                }
            }
            let c = (1 - n / mu) * t.scale
            for index in t.first..<t.end {
                let p = b.components[index]
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
        // tr(A T T†) = Σ_j t_jᴴ A t_j over the columns t_j of T. With t = u + iv its Hessian in
        // (u, v) is 2[[R, −S], [S, R]], restricted to each column's own parameters.
        for column in 0..<4 {
            for r in column..<4 {
                for q in column..<4 {
                    let ur = Self.realIndex(r, column), uq = Self.realIndex(q, column)
                    h[ur * 16 + uq] += 2 * ar[r * 4 + q]
                    let hasVr = r != column, hasVq = q != column
                    if hasVr && hasVq { h[(ur + 1) * 16 + uq + 1] += 2 * ar[r * 4 + q] }
                    if hasVq { h[ur * 16 + uq + 1] -= 2 * ai[r * 4 + q] }
                    if hasVr { h[(ur + 1) * 16 + uq] += 2 * ai[r * 4 + q] }
                }
            }
        }
        if hedging > 0 {
            let trace = (x * x).sum()
            for a in 0..<16 {
                for c in 0..<16 { h[a * 16 + c] -= hedging * 16 * x[a] * x[c] / (trace * trace) }
                h[a * 16 + a] += hedging * 8 / trace
            }
            for i in 0..<4 { h[i * 16 + i] += hedging * 2 / (x[i] * x[i]) }
        }
    }

    /// Index of Re T_rc (r ≥ c) in the parameters; Im T_rc, off the diagonal, is the next one.
    /// The layout of `offDiagonal`: diagonal 0…3, then pairs in row order from 4.
    @inline(__always)
    static func realIndex(_ r: Int, _ c: Int) -> Int { r == c ? r : 4 + 2 * (r * (r - 1) / 2 + c) }

    /// Parameter indices of T_rc (r ≥ c): the real part, and the imaginary part (nil on the
    /// real diagonal). A table built once from `offDiagonal`, since every Newton step reads it.
    static let parameterIndex: [[(re: Int, im: Int?)]] = (0..<4).map { r in
        (0..<4).map { c in
            if r == c { return (r, nil) }
            let entry = offDiagonal.first { $0.0 == r && $0.1 == c }
            return entry.map { ($0.2, $0.3) } ?? (-1, nil)  // above the diagonal: never read
        }
    }

    /// Solves (H + λ·|diag H|)·δ = −g by Cholesky; nil if not positive definite (the exact
    /// Hessian can be indefinite far from the optimum: a larger λ then makes it definite).
    /// `a` (256 doubles) is scratch for the factor.
    static func dampedStep(
        _ h: UnsafeBufferPointer<Double>, _ g: SIMD16<Double>, lambda: Double, scratch a: UnsafeMutableBufferPointer<Double>
    ) -> SIMD16<Double>? {
        precondition(h.count >= 256 && a.count >= 256)
        for i in 0..<256 { a[i] = h[i] }
        for i in 0..<16 { a[i * 16 + i] = h[i * 16 + i] + lambda * abs(h[i * 16 + i]) + 1e-12 }
        // Cholesky A = L·Lᵀ in place (lower triangle).
        for c in 0..<16 {
            var d = a[c * 16 + c]
            for k in 0..<c { d -= a[c * 16 + k] * a[c * 16 + k] }
            guard d > 0 else { return nil }
            let l = d.squareRoot()
            a[c * 16 + c] = l
            for r in (c + 1)..<16 {
                var s = a[r * 16 + c]
                for k in 0..<c { s -= a[r * 16 + k] * a[c * 16 + k] }
                a[r * 16 + c] = s / l
            }
        }
        // L·y = −g, then Lᵀ·δ = y; solved in place in a plain buffer (SIMD lanes indexed by a
        // variable are slow to read and write one at a time).
        return withUnsafeTemporaryAllocation(of: Double.self, capacity: 16) { y in
            for i in 0..<16 {
                var s = -g[i]
                for k in 0..<i { s -= a[i * 16 + k] * y[k] }
                y[i] = s / a[i * 16 + i]
            }
            for i in stride(from: 15, through: 0, by: -1) {
                var s = y[i]
                for k in (i + 1)..<16 { s -= a[k * 16 + i] * y[k] }
                y[i] = s / a[i * 16 + i]
            }
            return SIMD16<Double>(UnsafeBufferPointer(y))
        }
    }

    /// Fits counts starting from `start` (parameters of T); returns the parameters and iterations.
    ///
    /// Damped Newton (Levenberg–Marquardt on the exact Hessian): it converges in a handful of
    /// iterations where first-order methods need hundreds, and the damping keeps it stable
    /// where the Hessian is indefinite or nearly singular.
    public func fit(counts: [Double], start: [Double]) -> (parameters: [Double], iterations: Int) {
        let scale = max(counts.reduce(0, +), 1)
        // Hessian, Cholesky factor and A on the stack: a fit allocates nothing per iteration.
        let (x, iterations, converged) = withBuffers(counts) { b in
            withUnsafeTemporaryAllocation(of: Double.self, capacity: 544) { scratch in
                let h = UnsafeMutableBufferPointer(rebasing: scratch[0..<256])
                let factor = UnsafeMutableBufferPointer(rebasing: scratch[256..<512])
                let a = UnsafeMutableBufferPointer(rebasing: scratch[512..<544])
                return newton(SIMD16(start), b, scale: scale, h: h, factor: factor, a: a)
            }
        }
        let parameters = (0..<16).map { x[$0] }
        // Newton steps can still stall on exactly singular problems (pure states from exact counts).
        if converged { return (parameters, iterations) }
        let (polished, more) = polish(counts: counts, start: parameters)
        return (polished, iterations + more)
    }

    /// Damped Newton (Levenberg–Marquardt on the exact Hessian): it converges in a handful of
    /// iterations where first-order methods need hundreds, and the damping keeps it stable
    /// where the Hessian is indefinite or nearly singular.
    private func newton(
        _ start: SIMD16<Double>, _ b: Buffers, scale: Double, h: UnsafeMutableBufferPointer<Double>,
        factor: UnsafeMutableBufferPointer<Double>, a: UnsafeMutableBufferPointer<Double>
    ) -> (SIMD16<Double>, Int, Bool) {
        var x = start
        var (f, g) = evaluate(x, b)
        var lambda = 1e-3
        var iteration = 0
        var quiet = 0
        var converged = false
        while iteration < maxIterations {
            iteration += 1
            hessian(x, b, into: h, scratch: a)
            var improved = false
            for _ in 0..<30 {
                if let delta = Self.dampedStep(UnsafeBufferPointer(h), g, lambda: lambda, scratch: factor) {
                    // Newton decrement gᵀF⁻¹g: the likelihood still to gain. Below 1e-10
                    // (in log-likelihood units, far under any statistical meaning) we are done.
                    if lambda <= 1e-2 && -(g * delta).sum() < 1e-10 {
                        converged = true
                        break
                    }
                    var trial = x + delta
                    var (fTrial, gTrial) = evaluate(trial, b)
                    if fTrial.isFinite && fTrial <= f {
                        // Where an eigenvalue of ρ heads for 0 the likelihood is quartic along
                        // that direction and a Newton step covers only a third of the way: try
                        // the whole way (3δ) too, and keep it if it is better.
                        let far = x + 3 * delta
                        let (fFar, gFar) = evaluate(far, b)
                        if fFar.isFinite && fFar < fTrial {
                            trial = far
                            fTrial = fFar
                            gTrial = gFar
                        }
                        let change = f - fTrial
                        x = trial
                        g = gTrial
                        f = fTrial
                        lambda = max(lambda / 5, 1e-4)
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
        return (x, iteration, converged)
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
