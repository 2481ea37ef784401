import ComplexModule
import Foundation
import HeraldCore

/// The heralds of one `entangle` point, with its attempt totals.
struct EntanglementPoint: Sendable {
    var summary: EntanglementRecord?
    var heralds: [CompactHerald] = []
}

/// What the analysis needs of a herald, in 24 bytes rather than a `HeraldRecord`'s ≈ 430
/// (three arrays): the reducer keeps every herald of a data set until its analysis, and a day
/// at 200 heralds/s is 17 M of them.
struct CompactHerald: Sendable {
    var timePs: Int64
    var attempts: Int64
    var pattern: Int32
    var basis: (ReadoutBasis, ReadoutBasis)
    var outcome: (Int8, Int8)

    /// Nil for a herald that is not of a two-node link, which the analysis cannot use.
    init?(_ h: HeraldRecord) {
        guard h.bases.count == 2, h.outcomes.count == 2, let p = Int32(exactly: h.pattern),
            let a = Int8(exactly: h.outcomes[0]), let b = Int8(exactly: h.outcomes[1])
        else { return nil }
        timePs = h.timePs
        attempts = h.attempts
        pattern = p
        basis = (h.bases[0], h.bases[1])
        outcome = (a, b)
    }

    var patternIndex: Int { Int(pattern) }
    var parity: Int { Int(outcome.0) * Int(outcome.1) }
}

/// The `entanglement` analysis: what a lab reports of a heralded link.
///
/// - Attempts, attempt rate, success probability per attempt p = H/A (binomial σ =
///   √(p(1−p)/A)) and herald rate H/T (Poisson σ = √H/T), per pattern and together.
/// - Fidelity from the parity correlations of the same-basis readings: with p_b the fraction
///   of basis-b readings whose parity is the heralded state's,
///   F = (p_ZZ + p_XX + p_YY)/2 − ½ and σ_F² = ¼ Σ p_b(1−p_b)/n_b; the 95% interval combines
///   each basis's Wilson interval in quadrature.
/// - With the nine Pauli settings, the two-qubit state by Herald's tomography estimator, after
///   mapping every herald into the Ψ+ frame (a Ψ− herald differs by Z on the second qubit).
/// - CHSH S = √2(⟨XX⟩ − ⟨ZZ⟩) in the Ψ+ frame: the S of the settings A ∈ {Z, X},
///   B ∈ {(X∓Z)/√2} optimal for Ψ+, inferred from the measured correlators.
/// - Fidelity against time within the data (drift), in equal time bins.
enum EntanglementAnalysis {
    /// The parity ⟨σσ⟩ a Bell state has in basis b (b the same on both qubits).
    static func parity(_ state: BellState, _ b: ReadoutBasis) -> Int {
        switch (state, b) {
        case (.psiPlus, .z), (.psiMinus, _): return -1
        case (.psiPlus, _): return 1
        case (.phiPlus, .y): return -1
        case (.phiPlus, _): return 1
        case (.phiMinus, .x): return -1
        case (.phiMinus, _): return 1
        }
    }

    /// The sign flips on the second qubit's X and Y readings that take a Bell state to Ψ+.
    static func frameFlip(_ state: BellState, _ b: ReadoutBasis) -> Int {
        switch state {
        case .psiPlus: return 1
        case .psiMinus: return b == .z ? 1 : -1  // Z on qubit 2
        case .phiPlus: return b == .x ? 1 : -1  // X on qubit 2
        case .phiMinus: return b == .y ? 1 : -1  // Y on qubit 2 (up to phase)
        }
    }

    struct Parity {
        var correct = [0, 0, 0]
        var total = [0, 0, 0]

        mutating func add(_ h: CompactHerald, state: BellState) {
            guard h.basis.0 == h.basis.1 else { return }
            let b = h.basis.0
            total[b.index] += 1
            if h.parity == EntanglementAnalysis.parity(state, b) { correct[b.index] += 1 }
        }

        var complete: Bool { total.allSatisfy { $0 > 0 } }

        /// F, σ_F and the 95% interval, or nil without readings in all three bases.
        var fidelity: (f: Double, sigma: Double, low: Double, high: Double)? {
            guard complete else { return nil }
            var f = -0.5, v = 0.0, lo = 0.0, hi = 0.0
            for b in 0..<3 {
                let n = Double(total[b]), p = Double(correct[b]) / n
                f += p / 2
                let w = wilson(successes: correct[b], n: total[b], z: 1.96)
                // At p = 0 or 1 the delta method says 0: the Wilson width (as a 1σ) stands in.
                let variance = p * (1 - p) > 0 ? p * (1 - p) / n : pow((w.high - w.low) / (2 * 1.96), 2)
                v += variance / 4
                lo += pow((p - w.low) / 2, 2)
                hi += pow((w.high - p) / 2, 2)
            }
            return (f, v.squareRoot(), max(0, f - lo.squareRoot()), min(1, f + hi.squareRoot()))
        }
    }

    /// The Wilson score interval of a binomial proportion.
    static func wilson(successes k: Int, n: Int, z: Double) -> (low: Double, high: Double) {
        guard n > 0 else { return (0, 1) }
        let nn = Double(n), p = Double(k) / nn, z2 = z * z
        let centre = (p + z2 / (2 * nn)) / (1 + z2 / nn)
        let half = z / (1 + z2 / nn) * (p * (1 - p) / nn + z2 / (4 * nn * nn)).squareRoot()
        return (max(0, centre - half), min(1, centre + half))
    }

    static func run(_ spec: EntanglementAnalysisSpec, points: [EntanglementPoint]) throws -> AnalysisRecord {
        let heralds = points.flatMap(\.heralds)
        // In Double: a damaged file's attempt counts must not overflow a sum.
        let attempts = points.reduce(0.0) { $0 + Double($1.summary?.attempts ?? $1.heralds.reduce(0) { $0 &+ $1.attempts }) }
        let seconds = points.reduce(0.0) { $0 + ($1.summary?.seconds ?? 0) }
        var values: [String: Double] = [:], errors: [String: Double] = [:]
        var notes: [String] = []
        let a = attempts, t = seconds

        func rates(_ n: Int, _ figure: (Figure) -> Figure) {
            let h = Double(n)
            values[figure(.heralds).key] = h
            if a > 0 {
                let p = h / a
                values[figure(.successProbability).key] = p
                errors[figure(.successProbability).key] = (max(p * (1 - p), 1 / a) / a).squareRoot()
            }
            if t > 0 {
                values[figure(.heraldRate).key] = h / t
                errors[figure(.heraldRate).key] = max(h, 1).squareRoot() / t
            }
        }
        values[Figure.attempts.key] = a
        values[Figure.liveTime.key] = t
        if t > 0 {
            values[Figure.attemptRate.key] = a / t
        }
        values["timeouts"] = Double(points.reduce(0) { $0 + ($1.summary?.timeouts ?? 0) })
        // Together: the heralding patterns only (a HOM scan's same-polarisation coincidences
        // are counted per pattern, not as heralds).
        let heralding = Set(spec.patterns.indices.filter { spec.patterns[$0].state != nil })
        rates(heralds.reduce(0) { $0 + (heralding.contains($1.patternIndex) ? 1 : 0) }) { $0 }

        // Per pattern, and per heralded state.
        var byState: [BellState: Parity] = [:]
        var all = Parity()
        for (i, pattern) in spec.patterns.enumerated() {
            let mine = heralds.filter { $0.patternIndex == i }
            rates(mine.count) { .pattern(pattern.name, $0) }
            guard let state = pattern.state else { continue }
            var parity = Parity()
            for h in mine { parity.add(h, state: state) }
            for h in mine { all.add(h, state: state) }
            for h in mine { byState[state, default: Parity()].add(h, state: state) }
            if let f = parity.fidelity {
                values[Figure.pattern(pattern.name, .targetFidelity).key] = f.f
                errors[Figure.pattern(pattern.name, .targetFidelity).key] = f.sigma
            }
        }
        for (state, parity) in byState {
            if let f = parity.fidelity {
                values[Figure.fidelity(state).key] = f.f
                errors[Figure.fidelity(state).key] = f.sigma
            }
        }
        if let f = all.fidelity {
            values[Figure.targetFidelity.key] = f.f
            errors[Figure.targetFidelity.key] = f.sigma
            values[Figure.fidelityLow.key] = f.low
            values[Figure.fidelityHigh.key] = f.high
        } else if spec.patterns.contains(where: { $0.state != nil }) {
            notes.append("no fidelity: readings in ZZ, XX and YY are all needed (\(all.total[2]), \(all.total[0]), \(all.total[1]) heralds)")
        }

        // Correlators in the Ψ+ frame: E_ab = mean of (s_A · s_B · flip).
        var sum = [[Double]](repeating: [0, 0, 0], count: 3), n = [[Int]](repeating: [0, 0, 0], count: 3)
        var counts: [String: Double] = [:]
        for h in heralds {
            guard spec.patterns.indices.contains(h.patternIndex), let state = spec.patterns[h.patternIndex].state else { continue }
            let (ba, bb) = h.basis
            let sa = Int(h.outcome.0), sb = Int(h.outcome.1) * frameFlip(state, bb)
            sum[ba.index][bb.index] += Double(sa * sb)
            n[ba.index][bb.index] += 1
            counts["\(ba.rawValue)\(bb.rawValue)\(sa > 0 ? "+" : "-")\(sb > 0 ? "+" : "-")", default: 0] += 1
        }
        func correlator(_ x: ReadoutBasis, _ y: ReadoutBasis) -> (e: Double, variance: Double)? {
            let k = n[x.index][y.index]
            guard k > 0 else { return nil }
            let e = sum[x.index][y.index] / Double(k)
            return (e, max(1 - e * e, 1 / Double(k)) / Double(k))
        }
        if let xx = correlator(.x, .x), let zz = correlator(.z, .z) {
            let s = 2.0.squareRoot() * (xx.e - zz.e)
            values[Figure.chshS.key] = s
            let sigma = (2 * (xx.variance + zz.variance)).squareRoot()
            errors[Figure.chshS.key] = sigma
            values[Figure.violationSigma.key] = (abs(s) - 2) / sigma
        }

        var record = AnalysisRecord(
            name: "entanglement", estimator: "parity", parameters: [:], values: values, uncertainties: errors, notes: notes)
        record.parameters["patterns"] = spec.patterns.map { "\($0.name)=\($0.detectors.joined(separator: "+"))→\($0.state?.rawValue ?? "none")" }
            .joined(separator: ", ")
        record.parameters["bases"] = spec.bases.rawValue
        record.parameters["nodes"] = spec.nodes.joined(separator: ", ")

        // The remote state from all nine settings.
        if spec.bases == .pauli9 {
            var projections: [Projection] = []
            for x in ReadoutBasis.allCases {
                for y in ReadoutBasis.allCases {
                    for sx in [1, -1] {
                        for sy in [1, -1] {
                            let label = "\(x.rawValue)\(y.rawValue)\(sx > 0 ? "+" : "-")\(sy > 0 ? "+" : "-")"
                            projections.append(
                                Projection(
                                    label: label, a: eigenvector(x, sx), b: eigenvector(y, sy), counts: counts[label] ?? 0))
                        }
                    }
                }
            }
            let settingsSeen = (0..<3).allSatisfy { i in (0..<3).allSatisfy { n[i][$0] > 0 } }
            if settingsSeen {
                let result = try Tomography.reconstruct(projections, options: TomographyOptions(estimator: spec.estimator))
                record.estimator = spec.estimator.rawValue
                let rho = result.state
                record.rhoReal = (0..<4).flatMap { i in (0..<4).map { rho[i, $0].real } }
                record.rhoImag = (0..<4).flatMap { i in (0..<4).map { rho[i, $0].imaginary } }
                let f = Figure.fidelity(.psiPlus).key
                if let v = result.figures[f] {
                    record.values[Figure.mleFidelity.key] = v
                    record.uncertainties[Figure.mleFidelity.key] = result.uncertainties[f]
                }
                for figure in [Figure.concurrence, .purity, .maxCHSH] {
                    if let v = result.figures[figure.key] {
                        record.values[figure.key] = v
                        if let e = result.uncertainties[figure.key] { record.uncertainties[figure.key] = e }
                    }
                }
                record.notes.append("density matrix: \(spec.estimator.rawValue) estimate in the Ψ+ frame (Ψ− heralds mapped by Z on \(spec.nodes.last ?? "the second node"))")
            } else {
                record.notes.append("no density matrix: some of the nine settings have no herald yet")
            }
        }

        // Fidelity against time, in equal bins from the first point's start.
        if let first = points.compactMap({ $0.summary?.startPs }).min() ?? heralds.first?.timePs,
            let last = points.compactMap({ $0.summary?.stopPs }).max() ?? heralds.last?.timePs, last > first,
            spec.driftBins > 1, heralds.count >= 30 * spec.driftBins
        {
            let bins = spec.driftBins
            var parities = [Parity](repeating: Parity(), count: bins)
            for h in heralds {
                guard spec.patterns.indices.contains(h.patternIndex), let state = spec.patterns[h.patternIndex].state else { continue }
                // In Double and clamped before the conversion: a damaged file's times must not trap.
                let x = (Double(h.timePs) - Double(first)) / (Double(last) - Double(first)) * Double(bins)
                guard x.isFinite else { continue }
                let k = Int(max(0, min(Double(bins - 1), x.rounded(.down))))
                parities[k].add(h, state: state)
            }
            let width = (Double(last) - Double(first)) * 1e-12 / Double(bins)
            var time: [Double] = [], fid: [Double] = [], fidErr: [Double] = []
            for (k, p) in parities.enumerated() {
                time.append((Double(k) + 0.5) * width)
                let f = p.fidelity
                fid.append(f?.f ?? .nan)
                fidErr.append(f?.sigma ?? .nan)
            }
            record.series[Figure.elapsed.key] = time
            record.series[Figure.targetFidelity.key] = fid
            record.series[Figure.error(.targetFidelity).key] = fidErr
            record.labels = (0..<bins).map { "bin\($0)" }
        }
        return record
    }

    static func eigenvector(_ basis: ReadoutBasis, _ sign: Int) -> JonesVector {
        let r = 1 / 2.0.squareRoot()
        switch basis {
        case .z: return sign > 0 ? JonesVector(Complex(1), .zero) : JonesVector(.zero, Complex(1))
        case .x: return JonesVector(Complex(r), Complex(sign > 0 ? r : -r))
        case .y: return JonesVector(Complex(r), Complex(0, sign > 0 ? r : -r))
        }
    }

    // MARK: Fits across the outer sweep

    /// The fit of `spec.fit` across per-outer-point records, each with its swept value.
    static func fit(_ spec: EntanglementAnalysisSpec, _ rows: [(value: Double, record: AnalysisRecord)], unit: String) -> AnalysisRecord? {
        guard let kind = spec.fit, rows.count >= 3 else { return nil }
        var record = AnalysisRecord(name: "entanglement_fit", estimator: kind.rawValue, parameters: [:], values: [:], uncertainties: [:])
        record.parameters["fit"] = kind.rawValue
        record.series[Figure.sweptValue.key] = rows.map(\.value)
        switch kind {
        case .attenuation:
            // Weighted least squares of ln R against L: σ(ln R) = 1/√H.
            var pts: [(x: Double, y: Double, w: Double)] = []
            for r in rows {
                guard let h = r.record.values[Figure.heralds.key], h > 0, let rate = r.record.values[Figure.heraldRate.key] else { continue }
                pts.append((r.value, log(rate), h))
            }
            record.series[Figure.heraldRate.key] = rows.map { $0.record.values[Figure.heraldRate.key] ?? .nan }
            record.series[Figure.error(.heraldRate).key] = rows.map { $0.record.uncertainties[Figure.heraldRate.key] ?? .nan }
            guard pts.count >= 2, let line = weightedLine(pts) else { return record }
            // ln R = a + b·L (L in metres): α [dB/km] = −b · 1000 · 10 / ln 10.
            let scale = -1000 * 10 / log(10.0)
            record.values[Figure.attenuation.key] = line.b * scale
            record.uncertainties[Figure.attenuation.key] = abs(line.sb * scale)
            record.values[Figure.rateAtZero.key] = exp(line.a)
            record.uncertainties[Figure.rateAtZero.key] = exp(line.a) * line.sa
            record.values["chi2_per_dof"] = line.chi2 / Double(max(1, pts.count - 2))
        case .homDip, .homDipGaussian:
            // Of a point's N = N_s + N_h coincidences (same-polarisation, heralding), N_s is
            // binomial with q = r/(1 + r), r(δ) the dip: the fit maximises that likelihood (a χ²
            // on the ratios would give the empty points at the dip's centre almost no weight).
            var pts: [(x: Double, same: Double, herald: Double)] = []
            var ratios: [Double] = [], ratioErrors: [Double] = []
            for r in rows {
                var same = 0.0, herald = 0.0
                for p in spec.patterns {
                    let n = r.record.values[Figure.pattern(p.name, .heralds).key] ?? 0
                    if p.state == nil { same += n } else { herald += n }
                }
                ratios.append(herald > 0 ? same / herald : .nan)
                ratioErrors.append(herald > 0 ? same / herald * (1 / max(same, 1) + 1 / herald).squareRoot() : .nan)
                if herald > 0 { pts.append((r.value, same, herald)) }
            }
            record.series["ratio"] = ratios
            record.series["ratio_error"] = ratioErrors
            guard pts.count >= 4 else { return record }
            let gaussian = kind == .homDipGaussian
            func model(_ p: [Double], _ x: Double) -> Double {
                let u = (x - p[2]) / max(abs(p[3]), 1e-300)
                return p[0] * (1 - p[1] * (gaussian ? exp(-u * u) : exp(-abs(u))))
            }
            // −2 ln L; a visibility above 1 (a negative ratio) is impossible.
            func deviance(_ p: [Double]) -> Double {
                if p[1] > 1 || p[0] <= 0 { return .infinity }
                var d = 0.0
                for pt in pts {
                    let r = model(p, pt.x)
                    if r < 0 || (r == 0 && pt.same > 0) { return .infinity }
                    let q = r / (1 + r)
                    d -= 2 * ((pt.same > 0 ? pt.same * log(q) : 0) + pt.herald * log(1 - q))
                }
                return d
            }
            let xs = pts.map(\.x), span = (xs.max() ?? 1) - (xs.min() ?? 0)
            let far = pts.sorted { abs($0.x - (xs.min() ?? 0)) > abs($1.x - (xs.min() ?? 0)) }
            let edges = [pts.first, pts.last].compactMap { $0 }
            let a0 = edges.reduce(0) { $0 + $1.same / $1.herald } / Double(max(1, edges.count))
            let lowest = pts.min { $0.same / $0.herald < $1.same / $1.herald }
            _ = far
            let start = [max(a0, 1e-6), 0.9, lowest?.x ?? 0, span / 6]
            let best = NelderMead.minimise(deviance, start: start, scale: [a0 * 0.2 + 1e-6, 0.05, span / 10, span / 10])
            let names = ["hom_baseline", Figure.homVisibility.key, Figure.homCentre.key, Figure.homWidth.key]
            let scale = [a0 * 0.1 + 1e-6, 0.05, span / 20, span / 20]
            for (i, key) in names.enumerated() {
                record.values[key] = i == 3 ? abs(best[i]) : best[i]
                // Profile likelihood: the cusp of an exponential dip and the V ≤ 1 bound make the
                // deviance far from quadratic, so a Hessian would misstate the errors.
                if let e = NelderMead.profileError(deviance, at: best, parameter: i, scale: scale) { record.uncertainties[key] = e }
            }
            // The deviance against the saturated model, per degree of freedom: ≈ 1 for a good fit.
            var saturated = 0.0
            for pt in pts {
                let q = pt.same / (pt.same + pt.herald)
                saturated -= 2 * ((pt.same > 0 ? pt.same * log(q) : 0) + pt.herald * log(1 - q))
            }
            record.values["deviance_per_dof"] = (deviance(best) - saturated) / Double(max(1, pts.count - 4))
            record.parameters["unit"] = unit
        }
        return record
    }

    static func weightedLine(_ pts: [(x: Double, y: Double, w: Double)]) -> (a: Double, b: Double, sa: Double, sb: Double, chi2: Double)? {
        let sw = pts.reduce(0) { $0 + $1.w }, sx = pts.reduce(0) { $0 + $1.w * $1.x }, sy = pts.reduce(0) { $0 + $1.w * $1.y }
        let sxx = pts.reduce(0) { $0 + $1.w * $1.x * $1.x }, sxy = pts.reduce(0) { $0 + $1.w * $1.x * $1.y }
        let d = sw * sxx - sx * sx
        guard d > 0 else { return nil }
        let b = (sw * sxy - sx * sy) / d, a = (sy - b * sx) / sw
        let chi2 = pts.reduce(0) { $0 + $1.w * pow($1.y - a - b * $1.x, 2) }
        return (a, b, (sxx / d).squareRoot(), (sw / d).squareRoot(), chi2)
    }
}

/// Nelder–Mead minimisation and profile-likelihood errors: small fits (a dip's four
/// parameters) need nothing heavier.
enum NelderMead {
    static func minimise(_ f: ([Double]) -> Double, start: [Double], scale: [Double], iterations: Int = 4000) -> [Double] {
        let n = start.count
        var simplex = [start] + (0..<n).map { i in
            var p = start
            p[i] += scale[i]
            return p
        }
        var values = simplex.map(f)
        for _ in 0..<iterations {
            let order = values.indices.sorted { values[$0] < values[$1] }
            simplex = order.map { simplex[$0] }
            values = order.map { values[$0] }
            if abs(values[n] - values[0]) <= 1e-12 * (abs(values[0]) + 1e-12) { break }
            let centroid = (0..<n).map { j in simplex[0..<n].reduce(0) { $0 + $1[j] } / Double(n) }
            func along(_ t: Double) -> [Double] { (0..<n).map { centroid[$0] + t * (simplex[n][$0] - centroid[$0]) } }
            let reflected = along(-1), fr = f(reflected)
            if fr < values[0] {
                let expanded = along(-2), fe = f(expanded)
                if fe < fr { simplex[n] = expanded; values[n] = fe } else { simplex[n] = reflected; values[n] = fr }
            } else if fr < values[n - 1] {
                simplex[n] = reflected
                values[n] = fr
            } else {
                let contracted = along(fr < values[n] ? -0.5 : 0.5), fc = f(contracted)
                if fc < min(fr, values[n]) {
                    simplex[n] = contracted
                    values[n] = fc
                } else {
                    for i in 1...n {
                        simplex[i] = (0..<n).map { simplex[0][$0] + 0.5 * (simplex[i][$0] - simplex[0][$0]) }
                        values[i] = f(simplex[i])
                    }
                }
            }
        }
        return simplex[values.indices.min { values[$0] < values[$1] } ?? 0]
    }

    /// The 1σ error of parameter `i` from the profile of a deviance (−2 ln L): the offsets
    /// either side at which the deviance, minimised over the other parameters, has risen by 1,
    /// averaged (one side only where the other leaves the allowed region).
    static func profileError(_ f: ([Double]) -> Double, at best: [Double], parameter i: Int, scale: [Double]) -> Double? {
        let fmin = f(best)
        guard fmin.isFinite else { return nil }
        func profiled(_ value: Double) -> Double {
            var others = best
            others.remove(at: i)
            func g(_ q: [Double]) -> Double {
                var p = q
                p.insert(value, at: i)
                return f(p)
            }
            var start = best
            start[i] = value
            guard g(others).isFinite else { return .infinity }
            var s = scale
            s.remove(at: i)
            let m = minimise(g, start: others, scale: s, iterations: 1500)
            return g(m)
        }
        var sides: [Double] = []
        for sign in [1.0, -1.0] {
            var lo = 0.0, hi = scale[i]
            var rise = profiled(best[i] + sign * hi) - fmin
            var steps = 0
            while rise.isFinite && rise < 1 && steps < 40 {
                lo = hi
                hi *= 2
                rise = profiled(best[i] + sign * hi) - fmin
                steps += 1
            }
            guard steps < 40 else { continue }
            if !rise.isFinite {
                // Past the boundary: the profile cannot rise by 1 before it, on this side.
                if lo == 0 { continue }
            }
            for _ in 0..<40 {
                let mid = (lo + hi) / 2
                let r = profiled(best[i] + sign * mid) - fmin
                if r.isFinite && r < 1 { lo = mid } else { hi = mid }
            }
            let r = profiled(best[i] + sign * hi) - fmin
            if r.isFinite { sides.append(hi) }
        }
        return sides.isEmpty ? nil : sides.reduce(0, +) / Double(sides.count)
    }

    static func invert(_ m: [[Double]]) -> [[Double]]? {
        let n = m.count
        var a = m.enumerated().map { i, row in row + (0..<n).map { $0 == i ? 1.0 : 0 } }
        for c in 0..<n {
            guard let pivot = (c..<n).max(by: { abs(a[$0][c]) < abs(a[$1][c]) }), abs(a[pivot][c]) > 1e-300 else { return nil }
            a.swapAt(c, pivot)
            let d = a[c][c]
            a[c] = a[c].map { $0 / d }
            for r in 0..<n where r != c {
                let f = a[r][c]
                if f != 0 { a[r] = zip(a[r], a[c]).map { $0 - f * $1 } }
            }
        }
        return a.map { Array($0[n...]) }
    }
}
