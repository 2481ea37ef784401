import HeraldCore

extension AnalysisRecord {
    /// The record of a tomography, as written to HDF5 and printed, wherever the counts came
    /// from (a run, or `herald analyze` recounting the raw tags).
    public static func tomography(
        _ result: TomographyResult, projections: Int, estimator: Estimator, target: BellState, sweep: String,
        window: Double, delays: [Int: Double], subtractAccidentals: Bool, extra: [String: String] = [:]
    ) -> AnalysisRecord {
        var notes: [String] = []
        if result.linearMinEigenvalue < 0 {
            notes.append(
                "linear inversion was unphysical (smallest eigenvalue \(result.linearMinEigenvalue)); "
                    + "figures of merit use the closest physical state")
        }
        var values = result.figures
        values[figure: .targetFidelity] = result.figures[figure: .fidelity(target)]
        values[figure: .intensity] = result.intensity
        values[figure: .linearMinEigenvalue] = result.linearMinEigenvalue
        var errors = result.uncertainties
        errors[figure: .targetFidelity] = result.uncertainties[figure: .fidelity(target)]
        var p = extra
        p["sweep"] = sweep
        p["window_s"] = "\(window)"
        p["accidentals"] = subtractAccidentals ? "subtract" : "keep"
        p["delays_s"] = formatDelays(delays)
        p["uncertainty_method"] = result.uncertaintyMethod
        p["target"] = target.rawValue
        p["projections"] = "\(projections)"
        return AnalysisRecord(
            name: "tomography", estimator: estimator == .linear ? "linear+closest-physical" : estimator.rawValue,
            parameters: p, values: values, uncertainties: errors,
            rhoReal: result.physical.elements.map(\.real), rhoImag: result.physical.elements.map(\.imaginary), notes: notes)
    }

    /// Channel delays as stored in the `delays_s` attribute: `channel:seconds` joined by commas.
    public static func formatDelays(_ delays: [Int: Double]) -> String {
        delays.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ",")
    }

    /// The inverse of ``formatDelays(_:)``; malformed items are skipped.
    public static func parseDelays(_ text: String) -> [Int: Double] {
        var out: [Int: Double] = [:]
        for item in text.split(separator: ",") {
            let kv = item.split(separator: ":")
            if kv.count == 2, let c = Int(kv[0]), let d = Double(kv[1]) { out[c] = d }
        }
        return out
    }
}
