import HeraldCore

/// An analysis as the CLI prints it, from a run report or from a file.
struct AnalysisView {
    var name: String
    var estimator: String
    var parameters: [String: String]
    var values: [String: Double]
    var uncertainties: [String: Double]
    var series: [String: [Double]]
    var labels: [String]
    var outer: PointRef?
    var notes: [String] = []
    /// ρ of a tomography, row-major; empty for other analyses.
    var rhoReal: [Double] = []
    var rhoImag: [Double] = []

    /// The figures a run's summary shows first for each kind (every figure with `all`).
    static let headline: [String: [Figure]] = [
        "tomography": [.targetFidelity, .concurrence, .purity],
        "chsh": [.chshS, .violationSigma],
        "g2": [.g2Zero],
        "correlation": [.g2AtZero, .peakPosition, .peakWidth, .peakSignificance, .delayCorrection],
        "entanglement": [
            .attempts, .attemptRate, .successProbability, .heraldRate, .fidelity(.psiPlus), .fidelity(.psiMinus), .targetFidelity,
            .fidelityLow, .fidelityHigh, .mleFidelity, .chshS,
        ],
        "entanglement_fit": [.attenuation, .rateAtZero, .homVisibility, .homWidth, .homCentre],
    ]

    func lines(all: Bool) -> [String] {
        let swept = parameters["swept_unit"] ?? ""
        let outerText = outer.map { " at \($0.sweep)[\($0.index)] \($0.label)" } ?? ""
        var out = ["\(name) of \(parameters["sweep"] ?? "?")\(outerText) (\(estimator)):"]
        func line(_ key: String) -> String? {
            guard let v = values[key] else { return nil }
            let figure = Figure(key: key)
            return "  \(all ? key : figure?.title ?? key): "
                + Display.measured(v, uncertainties[key], unit: figure?.unit(swept: swept) ?? "1")
        }
        if !all, let headline = Self.headline[name] {
            out += headline.compactMap { line($0.key) }
        } else {
            out += values.keys.sorted().compactMap(line)
        }
        // A histogram's bins are thousands of rows: `herald correlate` or the file shows them.
        if name != "correlation" { out += perPoint(swept: swept) }
        out += rho()
        out += notes.map { "  note: \($0)" }
        return out
    }

    /// ρ as two matrices, real and imaginary parts, in the basis the tomography used.
    func rho() -> [String] {
        let n = Int(Double(rhoReal.count).squareRoot())
        guard n > 0, n * n == rhoReal.count, rhoImag.count == rhoReal.count else { return [] }
        let basis = n == 4 ? ["HH", "HV", "VH", "VV"] : (0..<n).map { "\($0)" }
        var out: [String] = []
        for (title, part) in [("Re ρ", rhoReal), ("Im ρ", rhoImag)] {
            out.append("  \(title):")
            out.append("          " + basis.map { String(repeating: " ", count: max(0, 7 - $0.count)) + $0 }.joined(separator: " "))
            for i in 0..<n {
                let row = (0..<n).map { String(format: "%+.4f", part[i * n + $0]) }.joined(separator: " ")
                out.append("    \(basis[i].padding(toLength: 4, withPad: " ", startingAt: 0))  " + row)
            }
        }
        return out
    }

    /// Per-point values of the series (rates per sweep point, CHSH correlations per setting).
    func perPoint(swept: String) -> [String] {
        let keys = series.keys.filter { !$0.hasSuffix("_error") && $0 != Figure.sweptValue.key }.sorted()
        guard let n = keys.first.flatMap({ series[$0]?.count }), n > 0 else { return [] }
        let sweptValues = series[figure: .sweptValue]
        let scale = sweptValues?.map(abs).max()
        var out = ["  per point:"]
        for i in 0..<n {
            var name = labels.indices.contains(i) ? labels[i] : "\(i)"
            if let v = sweptValues, v.indices.contains(i) { name = Display.quantity(v[i], unit: swept, scale: scale) }
            let cells = keys.compactMap { key -> String? in
                guard let column = series[key], column.indices.contains(i) else { return nil }
                let unit = Figure(key: key)?.unit(swept: swept) ?? "1"
                return "\(key) " + Display.measured(column[i], series[key + "_error"].flatMap { $0.indices.contains(i) ? $0[i] : nil }, unit: unit)
            }
            out.append("    \(name): " + cells.joined(separator: ", "))
        }
        return out
    }
}
