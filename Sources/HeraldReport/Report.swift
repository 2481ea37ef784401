import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldHDF5
import HeraldRunReader

/// `herald report`: one self-contained HTML file for a run, readable offline and easy to
/// attach to a logbook. Inline SVG, inline CSS, no script and nothing fetched.
///
/// It shows the run's metadata and status; every analysis with its figures and errors; ρ
/// (real and imaginary parts) as bars; the counts of every sweep point; each analysis's
/// per-point series against the swept value (or time), with its straight-line fits; the
/// cross-correlation histogram of every analysed pair from the raw tags; herald rates per
/// entangle point; and the run's time line with pauses and lost-data intervals marked.
public enum RunReportPage {
    /// Histograms read at most this many tags: enough for a clear peak, bounded time on a huge run.
    public static let histogramTagLimit = 20_000_000
    /// Bounds on what a stored plan may ask of a histogram: a 1 µs window, 1 s delays.
    static let maxWindowPs: Int64 = 1_000_000
    static let maxDelayPs: Int64 = 1_000_000_000_000

    public static func html(path: String) throws -> String {
        let summary = try RunFile.summary(path: path)
        let extra = try FileExtras(path: path)
        let plan = try? StoredRun(path: path)
        let reduction = plan?.plan
        plan?.close()
        var body = header(summary)
        body += analysesSection(summary)
        body += countsSection(summary)
        body += seriesSection(summary)
        if summary.tags > 0, extra.rawTags, let reduction {
            body += try histogramSection(path: path, plan: reduction)
        }
        body += timelineSection(summary, extra)
        return page(title: "\(summary.run["name"] ?? "run") · Herald report", body: body)
    }

    // MARK: sections

    static func header(_ s: RunSummary) -> String {
        let status = s.run["exit_status"] ?? "?"
        var rows: [(String, String)] = [
            ("status", status + ((s.run["reason"].map { $0.isEmpty ? "" : " (\($0))" }) ?? "")),
            ("run id", s.run["run_id"] ?? "?"), ("script", s.run["script_path"] ?? "?"),
            ("started", s.run["started_at"] ?? "?"), ("stopped", s.run["stopped_at"] ?? "?"),
            ("tags", "\(s.tags)"), ("acquisition", Display.quantity(s.acquisitionDurationS, unit: "s")),
            ("seed", s.run["seed"] ?? "–"), ("simulated", s.run["mock"] ?? "?"), ("Herald", s.run["herald_version"] ?? "?"),
            ("file", s.path), ("schema", s.schemaVersion),
        ]
        if let recovered = s.run["recovered_at"] { rows.append(("recovered", recovered)) }
        let table = rows.map { "<tr><th>\(esc($0.0))</th><td data-key=\"\(esc($0.0))\">\(esc($0.1))</td></tr>" }.joined()
        return """
            <header><h1>\(esc(s.run["name"] ?? "run"))</h1><span class="status \(esc(status))" id="status">\(esc(status.uppercased()))</span></header>
            <section><h2>Run</h2><table class="meta">\(table)</table></section>
            """
    }

    static func analysesSection(_ s: RunSummary) -> String {
        guard !s.analyses.isEmpty else { return "<section><h2>Analyses</h2><p class=\"muted\">none in this file</p></section>" }
        var out = "<section><h2>Analyses</h2>"
        for a in s.analyses {
            let swept = a.parameters["swept_unit"] ?? ""
            let outer = a.outer.map { " at \($0.sweep)[\($0.index)] \($0.label)" } ?? ""
            out += "<h3>\(esc(a.name)) of \(esc(a.parameters["sweep"] ?? "?"))\(esc(outer)) <span class=\"muted\">\(esc(a.estimator)) · entry \(esc(a.entry))</span></h3>"
            out += "<table class=\"figures\" data-entry=\"\(esc(a.entry))\"><tr><th>figure</th><th>key</th><th>value</th></tr>"
            for key in a.values.keys.sorted() {
                guard let v = a.values[key] else { continue }
                let figure = Figure(key: key)
                let e = a.uncertainties[key]
                out += "<tr class=\"figure\" data-key=\"\(esc(key))\" data-value=\"\(r(v))\"\(e.map { " data-error=\"\(r($0))\"" } ?? "")><td>\(esc(figure?.title ?? key))</td><td class=\"muted\">\(esc(key))</td><td>\(esc(Display.measured(v, e, unit: figure?.unit(swept: swept) ?? "1")))</td></tr>"
            }
            out += "</table>"
            let n = Int(Double(a.rhoReal.count).squareRoot())
            if n > 0, n * n == a.rhoReal.count, a.rhoImag.count == a.rhoReal.count {
                let basis = n == 4 ? ["HH", "HV", "VH", "VV"] : (0..<n).map { "\($0)" }
                out += SVGMatrixBars(title: "Re ρ (\(a.entry))", part: "real", values: a.rhoReal, basis: basis, id: "rho-real-\(a.entry)").render()
                out += SVGMatrixBars(title: "Im ρ (\(a.entry))", part: "imag", values: a.rhoImag, basis: basis, id: "rho-imag-\(a.entry)").render()
            }
        }
        return out + "</section>"
    }

    /// Coincidences of every detector pair at every point of each sweep.
    static func countsSection(_ s: RunSummary) -> String {
        guard !s.counts.isEmpty else { return "" }
        var out = "<section><h2>Counts per point</h2>"
        var groups: [String: [RunSummary.CountRow]] = [:]
        var order: [String] = []
        for row in s.counts {
            let key = row.sweep + (row.outer.map { " @ \($0.sweep)[\($0.index)]" } ?? "")
            if groups[key] == nil { order.append(key) }
            groups[key, default: []].append(row)
        }
        for (n, key) in order.enumerated() {
            let rows = groups[key] ?? []
            // One pass: a damaged table with many pairs must not make this quadratic.
            var pairs: [String] = [], byPair: [String: [RunSummary.CountRow]] = [:]
            for row in rows {
                let pair = "\(row.channelA)-\(row.channelB)"
                if byPair[pair] == nil {
                    guard pairs.count < 64 else { continue }
                    pairs.append(pair)
                }
                byPair[pair, default: []].append(row)
            }
            let series = pairs.map { pair in
                let rs = byPair[pair] ?? []
                return SVGPlot.Series(name: pair, x: rs.map { Double($0.point) }, y: rs.map { Double($0.coincidences) }, errors: rs.map { Double(max(0, $0.coincidences)).squareRoot() })
            }
            let plot = SVGPlot(title: "\(key): coincidences per point (±√N)", xLabel: "point", yLabel: "coincidences", series: series, id: "counts-\(n)")
            out += "<figure class=\"counts\" data-sweep=\"\(esc(key))\">" + plot.render() + "</figure>"
            var labels: [Int: String] = [:]
            for row in rows { labels[row.point] = row.label }
            out += "<p class=\"muted small\">points: " + labels.keys.sorted().map { "\($0) \(esc(labels[$0] ?? ""))" }.joined(separator: " · ") + "</p>"
        }
        return out + "</section>"
    }

    /// Each analysis's per-point series, one plot per unit, with straight-line fits drawn.
    static func seriesSection(_ s: RunSummary) -> String {
        var out = ""
        for a in s.analyses where !a.series.isEmpty {
            let swept = a.parameters["swept_unit"] ?? ""
            // A correlation's series are bins against τ; the others points against the swept value or time.
            let xKey = [Figure.sweptValue, .elapsed, .delay].map(\.key).first { a.series[$0] != nil }
            let xs = xKey.flatMap { a.series[$0] }
            let xLabel =
                xKey == Figure.sweptValue.key ? "swept value (\(Display.unitText(swept).isEmpty ? "1" : Display.unitText(swept)))"
                : xKey == Figure.delay.key ? "τ (s), bin lower edge" : xKey == nil ? "point" : "lab time (s)"
            var byUnit: [String: [SVGPlot.Series]] = [:]
            var units: [String] = []
            for key in a.series.keys.sorted() where key != xKey && !key.hasSuffix("_error") {
                guard let y = a.series[key], !y.isEmpty else { continue }
                let x = xs.flatMap { $0.count == y.count ? $0 : nil } ?? y.indices.map(Double.init)
                let unit = Figure(key: key)?.unit(swept: swept) ?? "1"
                if byUnit[unit] == nil { units.append(unit) }
                byUnit[unit, default: []].append(
                    .init(name: key, x: x, y: y, errors: xKey == Figure.delay.key ? nil : a.series[key + "_error"], steps: xKey == Figure.delay.key))
                // A straight-line fit of this series, when the analysis made one.
                if case .coincidenceRate(let p, let q)? = Figure(key: key), let m = a.values[Figure.slope(p, q).key],
                    let c = a.values[Figure.intercept(p, q).key], let lo = x.min(), let hi = x.max()
                {
                    byUnit[unit, default: []].append(.init(name: key + " fit", x: [lo, hi], y: [c + m * lo, c + m * hi], line: true))
                }
            }
            guard !units.isEmpty else { continue }
            out += "<h3>\(esc(a.name)) (\(esc(a.entry)))\(xKey == Figure.delay.key ? "" : " per point")</h3>"
            for (k, unit) in units.enumerated() {
                let plot = SVGPlot(
                    title: "\(a.name): \(Display.unitText(unit).isEmpty ? "values" : Display.unitText(unit))", xLabel: xLabel,
                    yLabel: Display.unitText(unit), series: byUnit[unit] ?? [], id: "series-\(a.entry)-\(k)")
                out += "<figure class=\"series-plot\" data-entry=\"\(esc(a.entry))\">" + plot.render() + "</figure>"
            }
        }
        return out.isEmpty ? "" : "<section><h2>Per-point results</h2>" + out + "</section>"
    }

    /// Δt = t_b − t_a of every analysed pair within ±10 windows, in bins of a tenth of the
    /// window, from the raw tags (the run's channel delays applied as the counts did).
    static func histogramSection(path: String, plan: ReductionPlan) throws -> String {
        var specs: [(pair: ChannelPair, windowPs: Int64, delays: [Int: Int64])] = []
        for analysis in plan.analyses {
            // The plan comes from the file: a window or delay no run could have used (a damaged
            // or crafted file) leaves the histogram out rather than overflow or scan forever.
            guard let c = analysis.counting, (1...maxWindowPs).contains(c.windowPs),
                c.delaysPs.values.allSatisfy({ abs($0) <= maxDelayPs })
            else { continue }
            for p in c.pairs where !specs.contains(where: { $0.pair == p }) && specs.count < 64 { specs.append((p, c.windowPs, c.delaysPs)) }
        }
        guard !specs.isEmpty else { return "" }
        let channels = Set(specs.flatMap { [$0.pair.a, $0.pair.b] })
        let stream = try RunTagStream(path: path)
        var times: [Int: [Int64]] = [:]
        var read = 0
        while read < histogramTagLimit, let block = try stream.next() {
            read += block.count
            for (t, c) in zip(block.timestamps, block.channels) where channels.contains(Int(c)) { times[Int(c), default: []].append(t) }
        }
        var out = "<section><h2>Cross-correlation histograms</h2><p class=\"muted small\">from the first \(read) raw tags; Δt = t(b) − t(a) with the run's channel delays; the shaded band is the coincidence window</p>"
        for (n, spec) in specs.enumerated() {
            let bin = max(1, spec.windowPs / 10), range = bin * 100
            let h = CrossCorrelation.histogram(
                a: (times[spec.pair.a] ?? []).map { $0 + (spec.delays[spec.pair.a] ?? 0) },
                b: (times[spec.pair.b] ?? []).map { $0 + (spec.delays[spec.pair.b] ?? 0) }, rangePs: range, binPs: bin)
            let centres = h.indices.map { (Double(Int64($0) * bin - range) + Double(bin) / 2) * 1e-3 }
            let plot = SVGPlot(
                title: "pair \(spec.pair.a)-\(spec.pair.b)", xLabel: "Δt (ns)", yLabel: "pairs per \(Display.quantity(Double(bin) * 1e-12, unit: "s")) bin",
                series: [.init(name: "\(spec.pair.a)-\(spec.pair.b)", x: centres, y: h.map(Double.init), steps: true)],
                bands: [.init(from: -Double(spec.windowPs) / 2e3, to: Double(spec.windowPs) / 2e3, kind: "window")], id: "histogram-\(n)")
            out += "<figure class=\"histogram\" data-pair=\"\(spec.pair.a)-\(spec.pair.b)\" data-bin-ps=\"\(bin)\" data-range-ps=\"\(range)\">" + plot.render() + "</figure>"
        }
        return out + "</section>"
    }

    /// Points over lab time, herald rates per entangle point, pauses and lost intervals.
    static func timelineSection(_ s: RunSummary, _ x: FileExtras) -> String {
        var series: [SVGPlot.Series] = []
        for (name, spans) in x.sweepSpans.sorted(by: { $0.key < $1.key }) {
            series.append(.init(name: "\(name) point", x: spans.map { (Double($0.start) + Double($0.stop)) * 0.5e-12 }, y: spans.indices.map(Double.init)))
        }
        let bands = x.pauses.map { SVGPlot.Band(from: Double($0.0) * 1e-12, to: Double($0.1) * 1e-12, kind: "pause") }
            + x.lost.map { SVGPlot.Band(from: Double($0.0) * 1e-12, to: Double($0.1) * 1e-12, kind: "lost") }
        var out = "<section><h2>Time line</h2>"
        out += SVGPlot(title: "points over lab time (red: paused, grey: lost data)", xLabel: "lab time (s)", yLabel: "point", series: series, bands: bands, id: "timeline").render()
        for (name, points) in x.heraldPoints.sorted(by: { $0.key < $1.key }) {
            let rates = points.map { p -> (Double, Double, Double) in
                let seconds = (Double(p.stop) - Double(p.start)) * 1e-12, n = Double(max(0, p.heralds))
                return ((Double(p.start) + Double(p.stop)) * 0.5e-12, seconds > 0 ? n / seconds : 0, seconds > 0 ? n.squareRoot() / seconds : 0)
            }
            out += SVGPlot(
                title: "\(name): herald rate per entangle point (±√N)", xLabel: "lab time (s)", yLabel: "heralds/s",
                series: [.init(name: "herald rate", x: rates.map(\.0), y: rates.map(\.1), errors: rates.map(\.2))], bands: bands, id: "heralds-\(name)").render()
        }
        if !x.pauses.isEmpty || !x.lost.isEmpty {
            out += "<table class=\"intervals\"><tr><th>interval</th><th>from (s)</th><th>to (s)</th><th>why</th></tr>"
            for (i, p) in x.pauses.enumerated() {
                out += "<tr class=\"pause\"><td>pause</td><td>\(r(Double(p.0) * 1e-12))</td><td>\(r(Double(p.1) * 1e-12))</td><td>\(esc(x.pauseReasons.indices.contains(i) ? x.pauseReasons[i] : ""))</td></tr>"
            }
            for l in x.lost { out += "<tr class=\"lost\"><td>lost</td><td>\(r(Double(l.0) * 1e-12))</td><td>\(r(Double(l.1) * 1e-12))</td><td>\(esc(l.2))</td></tr>" }
            out += "</table>"
        }
        return out + "</section>"
    }

    static func page(title: String, body: String) -> String {
        """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>\(esc(title))</title><link rel="icon" href="data:,">
        <meta name="generator" content="herald \(esc(HeraldReportInfo.generator))">
        <style>
        body{font:14px/1.45 system-ui,sans-serif;max-width:1000px;margin:0 auto;padding:0 16px 40px;color:#1d2330}
        header{display:flex;gap:16px;align-items:baseline;border-bottom:2px solid #1d2330;margin-bottom:8px}
        h1{font-size:22px} h2{font-size:16px;margin:22px 0 6px;color:#51607a;text-transform:uppercase;letter-spacing:.04em} h3{font-size:14px;margin:14px 0 4px}
        .status{font-weight:700;padding:2px 8px;border-radius:4px;color:#fff;background:#455a64}.status.success{background:#2e7d32}.status.failed,.status.aborted{background:#c62828}
        table{border-collapse:collapse} td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
        .muted{color:#7a8499}.small{font-size:12px} figure{margin:8px 0} svg{width:100%;height:auto;max-width:900px}
        @media print{section{break-inside:avoid}}
        </style></head><body>
        \(body)
        <footer class="muted small">Written by herald report from \(esc(HeraldReportInfo.generator)); every plotted number is in its mark's data-value attribute.</footer>
        </body></html>

        """
    }
}

enum HeraldReportInfo {
    static let generator = "the run file"
}

/// What the summary does not carry: sweep spans, pauses, lost intervals, entangle points.
struct FileExtras {
    var sweepSpans: [String: [(start: Int64, stop: Int64)]] = [:]
    var pauses: [(Int64, Int64)] = []
    var pauseReasons: [String] = []
    var lost: [(Int64, Int64, String)] = []
    var heraldPoints: [String: [(start: Int64, stop: Int64, heralds: Int64)]] = [:]
    var rawTags = true

    init(path: String) throws {
        let file = try RunFile.open(path)
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        let run = try herald.openGroup("run")
        rawTags = (try run.stringAttribute("raw_tags") ?? "recorded") == "recorded"
        func ints(_ g: H5Group, _ name: String) throws -> [Int64] { g.contains(name) ? try g.dataset(name).read(Int64.self) : [] }
        if herald.contains("sweeps") {
            let sweeps = try herald.openGroup("sweeps")
            for name in try sweeps.childNames() {
                let g = try sweeps.openGroup(name)
                sweepSpans[name] = zip(try ints(g, "start_ps"), try ints(g, "stop_ps")).map { ($0, $1) }
            }
        }
        if herald.contains("paused") {
            let g = try herald.openGroup("paused")
            pauses = zip(try ints(g, "start_ps"), try ints(g, "stop_ps")).map { ($0, $1) }
            if g.contains("interlock") {
                let names = try g.dataset("interlock").readStrings()
                let conditions = g.contains("condition") ? try g.dataset("condition").readStrings() : []
                pauseReasons = names.indices.map { names[$0] + (conditions.indices.contains($0) ? " (\(conditions[$0]))" : "") }
            }
        }
        if herald.contains("lost") {
            let g = try herald.openGroup("lost")
            let reasons = g.contains("reason") ? try g.dataset("reason").readStrings() : []
            lost = zip(try ints(g, "start_ps"), try ints(g, "stop_ps")).enumerated().map { ($1.0, $1.1, reasons.indices.contains($0) ? reasons[$0] : "") }
        }
        if herald.contains("heralds") {
            let root = try herald.openGroup("heralds")
            for name in try root.childNames() where root.kind(of: name) == .group {
                let g = try root.openGroup(name)
                guard g.contains("points") else { continue }
                let p = try g.openGroup("points")
                let start = try ints(p, "start_ps"), stop = try ints(p, "stop_ps"), heralds = try ints(p, "heralds")
                let n = min(start.count, stop.count, heralds.count)
                heraldPoints[name] = (0..<n).map { (start[$0], stop[$0], heralds[$0]) }
            }
        }
    }
}

/// The Δt histogram of two sorted tag lists: counts of pairs with b − a in each bin of
/// [−range, range). Two pointers: each `a` scans only the `b`s within range of it.
enum CrossCorrelation {
    static func histogram(a: [Int64], b: [Int64], rangePs: Int64, binPs: Int64) -> [Int] {
        let bins = Int(2 * rangePs / binPs)
        var h = [Int](repeating: 0, count: max(0, bins))
        guard bins > 0 else { return h }
        var lo = 0
        for t in a {
            while lo < b.count && b[lo] < t - rangePs { lo += 1 }
            var k = lo
            while k < b.count && b[k] < t + rangePs {
                let bin = Int((b[k] - t + rangePs) / binPs)
                if bin >= 0 && bin < bins { h[bin] += 1 }
                k += 1
            }
        }
        return h
    }
}
