import Foundation
import HeraldCore

/// Fits of a pair's coincidence counts against a swept quantity: a Gaussian dip (a
/// Hong–Ou–Mandel delay scan) or a sinc² phase-matching curve (a crystal-temperature scan).
///
/// The counts of each point are Poisson with mean r(x)·t, so the fit maximises that
/// likelihood (a χ² on rates would give the empty points at a dip's centre almost no
/// weight). Errors are from the profile likelihood (Δ(−2 ln L) = 1); the deviance against
/// the saturated model, per degree of freedom, is reported beside them (≈ 1 for a good fit).
enum ScanFit {
    static func fit(_ model: RateFit, x: [Double], counts n: [Double], durations t: [Double], pair p: ChannelPair, into record: inout AnalysisRecord) {
        let pts = zip(x, zip(n, t)).filter { $0.1.1 > 0 }.map { (x: $0.0, n: $0.1.0, t: $0.1.1) }
        guard pts.count >= 5, let lo = pts.map(\.x).min(), let hi = pts.map(\.x).max(), hi > lo else {
            record.notes.append("\(model.rawValue) fit of \(p.a),\(p.b) needs at least 5 points across the scan")
            return
        }
        let span = hi - lo
        let rates = pts.map { $0.n / $0.t }
        let suffix = "_\(p.a)_\(p.b)"
        let curve: ([Double], Double) -> Double
        var start: [Double]
        var scale: [Double]
        let names: [String]
        switch model {
        case .linear: return
        case .dip:
            // p = [baseline A, visibility V, centre c, width w]
            curve = { q, x in
                let u = (x - q[2]) / max(abs(q[3]), 1e-300)
                return q[0] * (1 - q[1] * exp(-u * u))
            }
            let edge = ((rates.first ?? 0) + (rates.last ?? 0)) / 2
            let lowest = pts.indices.min { rates[$0] < rates[$1] } ?? 0
            start = [max(edge, 1e-9), edge > 0 ? min(0.99, max(0.05, 1 - rates[lowest] / edge)) : 0.5, pts[lowest].x, span / 6]
            scale = [start[0] * 0.1 + 1e-9, 0.05, span / 20, span / 20]
            names = ["dip_baseline", "dip_visibility", "dip_centre", "dip_width"]
        case .fringe:
            // p = [mean rate A, visibility V, phase φ (degrees)]
            curve = { q, x in q[0] * (1 + q[1] * cos(2 * (x - q[2]) * .pi / 180)) }
            let hi = rates.max() ?? 0, lo = rates.min() ?? 0
            let peak = pts.indices.max { rates[$0] < rates[$1] } ?? 0
            start = [max((hi + lo) / 2, 1e-9), hi + lo > 0 ? min(0.99, (hi - lo) / (hi + lo)) : 0.5, pts[peak].x]
            scale = [start[0] * 0.05 + 1e-9, 0.05, 5]
            names = ["fringe_rate", "fringe_visibility", "fringe_phase"]
        case .phaseMatching:
            // p = [peak above background A, centre c, first-zero half-width w, background B]
            curve = { q, x in
                let u = Double.pi * (x - q[1]) / max(abs(q[2]), 1e-300)
                let s = abs(u) < 1e-9 ? 1 : sin(u) / u
                return q[0] * s * s + q[3]
            }
            let highest = pts.indices.max { rates[$0] < rates[$1] } ?? 0
            let floor = rates.min() ?? 0
            start = [max(rates[highest] - floor, 1e-9), pts[highest].x, span / 4, max(floor, 0)]
            scale = [start[0] * 0.1 + 1e-9, span / 20, span / 20, start[0] * 0.02 + 1e-9]
            names = ["peak_rate", "peak_centre", "peak_width", "peak_background"]
        }
        // −2 ln L up to a constant; a rate below zero (or a visibility above 1) is impossible.
        func deviance(_ q: [Double]) -> Double {
            if model == .dip && (q[1] > 1 || q[0] <= 0) { return .infinity }
            if model == .fringe && (abs(q[1]) > 1 || q[0] <= 0) { return .infinity }
            if model == .phaseMatching && (q[0] < 0 || q[3] < 0) { return .infinity }
            var d = 0.0
            for pt in pts {
                let mu = curve(q, pt.x) * pt.t
                if mu < 0 || (mu == 0 && pt.n > 0) { return .infinity }
                d += 2 * (mu - (pt.n > 0 ? pt.n * log(mu) : 0))
            }
            return d
        }
        var best = NelderMead.minimise(deviance, start: start, scale: scale)
        if model == .fringe {
            // One fringe, three spellings: keep V ≥ 0 and the phase within one period.
            if best[1] < 0 {
                best[1] = -best[1]
                best[2] += 90
            }
            best[2] = (best[2].truncatingRemainder(dividingBy: 180) + 180).truncatingRemainder(dividingBy: 180)
        }
        for (i, name) in names.enumerated() {
            let value = (model == .dip && i == 3) || (model == .phaseMatching && i == 2) ? abs(best[i]) : best[i]
            record.values[name + suffix] = value
            if let e = NelderMead.profileError(deviance, at: best, parameter: i, scale: scale) { record.uncertainties[name + suffix] = e }
        }
        var saturated = 0.0
        for pt in pts where pt.n > 0 { saturated += 2 * (pt.n - pt.n * log(pt.n)) }
        record.values["deviance_per_dof" + suffix] = (deviance(best) - saturated) / Double(max(1, pts.count - names.count))
        record.series["fitted_rate" + suffix] = x.map { curve(best, $0) }
    }
}
