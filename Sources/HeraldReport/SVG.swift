import Foundation

/// Inline SVG charts for the report: no script, no fonts or files from outside. Every mark
/// carries the number it plots (`data-x`, `data-value`, `data-error`) inside a `<g>` naming
/// its series (`data-series`), so a reader, or a test, can take the numbers back out.
struct SVGPlot {
    struct Series {
        var name: String
        var x: [Double]
        var y: [Double]
        var errors: [Double]? = nil
        /// Drawn as a line through the points (a fit) instead of marks.
        var line = false
        /// Drawn as histogram steps.
        var steps = false
    }

    struct Band {
        var from, to: Double
        var kind: String  // "pause", "lost"
    }

    var title: String
    var xLabel: String
    var yLabel: String
    var series: [Series] = []
    var bands: [Band] = []
    var id: String

    static let palette = ["#1976d2", "#c62828", "#2e7d32", "#f9a825", "#6a1b9a", "#00838f", "#ef6c00", "#5d4037"]

    func render(width: Double = 640, height: Double = 300) -> String {
        let left = 70.0, right = 150.0, top = 28.0, bottom = 44.0
        var xs: [Double] = series.flatMap(\.x)
        for b in bands { xs += [b.from, b.to] }
        xs = xs.filter(\.isFinite)
        var ys: [Double] = [0]
        for s in series {
            for (k, y) in s.y.enumerated() {
                let e: Double = s.errors.flatMap { $0.indices.contains(k) ? $0[k] : nil } ?? 0
                ys += [y - e, y + e]
            }
        }
        ys = ys.filter(\.isFinite)
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" id=\"\(esc(id))\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" aria-label=\"\(esc(title))\">"
        out += "<text x=\"\(f(left))\" y=\"16\" font-size=\"13\" font-weight=\"600\">\(esc(title))</text>"
        guard let x0r = xs.min(), let x1r = xs.max(), let y0r = ys.min(), let y1r = ys.max() else {
            return out + "<text x=\"\(f(width / 2))\" y=\"\(f(height / 2))\" text-anchor=\"middle\" fill=\"#888\">no data</text></svg>"
        }
        let x0 = x0r, x1 = x1r > x0r ? x1r : x0r + 1
        let pad = (y1r - y0r) * 0.05
        let y0: Double = y0r < 0 ? y0r - pad : 0
        let y1: Double = y1r > y0r ? y1r + pad : y0r + 1
        let pw = width - left - right, ph = height - top - bottom
        func X(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * pw }
        func Y(_ y: Double) -> Double { top + ph - (y - y0) / (y1 - y0) * ph }
        for b in bands {
            let a = X(max(x0, b.from)), e = X(min(x1, b.to))
            out += "<rect class=\"band \(b.kind)\" data-from=\"\(r(b.from))\" data-to=\"\(r(b.to))\" x=\"\(f(a))\" y=\"\(f(top))\" width=\"\(f(max(1, e - a)))\" height=\"\(f(ph))\" fill=\"\(b.kind == "pause" ? "#ffcdd2" : "#cfd8dc")\"><title>\(b.kind) \(r(b.from))–\(r(b.to))</title></rect>"
        }
        // Axes with five ticks each.
        out += "<g class=\"axes\" stroke=\"#888\" fill=\"none\"><line x1=\"\(f(left))\" y1=\"\(f(top + ph))\" x2=\"\(f(left + pw))\" y2=\"\(f(top + ph))\"/><line x1=\"\(f(left))\" y1=\"\(f(top))\" x2=\"\(f(left))\" y2=\"\(f(top + ph))\"/></g>"
        for k in 0...4 {
            let xv = x0 + (x1 - x0) * Double(k) / 4, yv = y0 + (y1 - y0) * Double(k) / 4
            out += "<text x=\"\(f(X(xv)))\" y=\"\(f(top + ph + 14))\" font-size=\"10\" text-anchor=\"middle\">\(tick(xv))</text>"
            out += "<text x=\"\(f(left - 4))\" y=\"\(f(Y(yv) + 3))\" font-size=\"10\" text-anchor=\"end\">\(tick(yv))</text>"
        }
        out += "<text x=\"\(f(left + pw / 2))\" y=\"\(f(height - 8))\" font-size=\"11\" text-anchor=\"middle\">\(esc(xLabel))</text>"
        out += "<text transform=\"translate(14 \(f(top + ph / 2))) rotate(-90)\" font-size=\"11\" text-anchor=\"middle\">\(esc(yLabel))</text>"
        for (i, s) in series.enumerated() {
            let c = Self.palette[i % Self.palette.count]
            out += "<g class=\"series\" data-series=\"\(esc(s.name))\" data-kind=\"\(s.line ? "fit" : s.steps ? "histogram" : "points")\" stroke=\"\(c)\" fill=\"\(c)\">"
            let pts = zip(s.x, s.y).filter { $0.0.isFinite && $0.1.isFinite }
            if s.line || s.steps {
                let path = s.steps
                    ? pts.map { "\(f(X($0.0))),\(f(Y($0.1)))" }.joined(separator: " ")
                    : pts.map { "\(f(X($0.0))),\(f(Y($0.1)))" }.joined(separator: " ")
                out += "<polyline fill=\"none\" stroke-width=\"1.5\" points=\"\(path)\"/>"
            }
            for (k, p) in zip(s.x, s.y).enumerated() where p.0.isFinite && p.1.isFinite {
                let e = s.errors.flatMap { $0.indices.contains(k) ? $0[k] : nil }
                if let e, e > 0, e.isFinite {
                    out += "<line stroke-width=\"1\" x1=\"\(f(X(p.0)))\" x2=\"\(f(X(p.0)))\" y1=\"\(f(Y(p.1 - e)))\" y2=\"\(f(Y(p.1 + e)))\"/>"
                }
                let attributes = "class=\"mark\" data-x=\"\(r(p.0))\" data-value=\"\(r(p.1))\"" + (e.map { " data-error=\"\(r($0))\"" } ?? "")
                if s.line || s.steps {
                    out += "<circle \(attributes) cx=\"\(f(X(p.0)))\" cy=\"\(f(Y(p.1)))\" r=\"0\" stroke=\"none\"/>"
                } else {
                    out += "<circle \(attributes) cx=\"\(f(X(p.0)))\" cy=\"\(f(Y(p.1)))\" r=\"2.5\" stroke=\"none\"/>"
                }
            }
            out += "<text x=\"\(f(left + pw + 8))\" y=\"\(f(top + 10 + 14 * Double(i)))\" font-size=\"11\" stroke=\"none\">\(esc(s.name))</text></g>"
        }
        return out + "</svg>"
    }
}

/// ρ as a bar chart: one bar per element, in row-major order, labelled by its row and column state.
struct SVGMatrixBars {
    var title: String
    var part: String  // "real", "imag"
    var values: [Double]
    var basis: [String]
    var id: String

    func render() -> String {
        let n = basis.count
        let width = 640.0, height = 240.0, left = 66.0, top = 26.0, bottom = 52.0
        let ph = height - top - bottom, pw = width - left - 10
        let m = max(values.map(abs).max() ?? 0, 1e-12)
        let scale = m > 0.5 ? 1.0 : m > 0.1 ? 0.5 : m * 1.2
        let zero = top + ph / 2
        let bw = pw / Double(max(1, values.count))
        var out = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"rho\" id=\"\(esc(id))\" data-part=\"\(part)\" viewBox=\"0 0 \(f(width)) \(f(height))\" role=\"img\" aria-label=\"\(esc(title))\">"
        out += "<text x=\"\(f(left))\" y=\"16\" font-size=\"13\" font-weight=\"600\">\(esc(title))</text>"
        out += "<line x1=\"\(f(left))\" x2=\"\(f(left + pw))\" y1=\"\(f(zero))\" y2=\"\(f(zero))\" stroke=\"#888\"/>"
        for v in [scale, scale / 2, -scale / 2, -scale] {
            out += "<text x=\"\(f(left - 4))\" y=\"\(f(zero - v / scale * ph / 2 + 3))\" font-size=\"10\" text-anchor=\"end\">\(tick(v))</text>"
        }
        for (k, v) in values.enumerated() {
            let i = k / max(1, n), j = k % max(1, n)
            let h = v / scale * ph / 2
            let x = left + Double(k) * bw
            let label = n > 0 ? "\(basis[i]),\(basis[j])" : "\(k)"
            out += "<rect class=\"mark\" data-row=\"\(i)\" data-col=\"\(j)\" data-value=\"\(r(v))\" x=\"\(f(x + 1))\" y=\"\(f(h >= 0 ? zero - h : zero))\" width=\"\(f(max(1, bw - 2)))\" height=\"\(f(abs(h)))\" fill=\"\(v >= 0 ? "#1976d2" : "#c62828")\"><title>ρ[\(label)] = \(String(format: "%+.4f", v))</title></rect>"
            out += "<text transform=\"translate(\(f(x + bw / 2 + 3)) \(f(top + ph + 6))) rotate(60)\" font-size=\"9\">\(esc(label))</text>"
        }
        return out + "</svg>"
    }
}

/// Numbers in attributes: the shortest text that reads back to the same double.
func r(_ v: Double) -> String { v.isFinite ? "\(v)" : "nan" }
func f(_ v: Double) -> String { v.isFinite ? String(format: "%.2f", v) : "0" }
func tick(_ v: Double) -> String {
    let a = abs(v)
    if a == 0 { return "0" }
    if a >= 1e5 || a < 1e-3 { return String(format: "%.2g", v) }
    return String(format: "%.4g", v)
}

func esc(_ s: String) -> String {
    var out = ""
    for c in s {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.append(c)
        }
    }
    return out
}
