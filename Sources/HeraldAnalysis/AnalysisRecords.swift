import HeraldCore

extension AnalysisRecord {
    /// The record of a tomography, as written to HDF5 and printed, wherever the counts came
    /// from (a run, or `herald analyze` recounting the raw tags).
    public static func tomography(
        _ result: TomographyResult, projections: Int, estimator: Estimator, target: BellState, sweep: String,
        windowPs: Int64, delaysPs: [Int: Int64], subtractAccidentals: Bool, extra: [String: String] = [:]
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
        p["window_s"] = seconds(windowPs)
        p["accidentals"] = subtractAccidentals ? "subtract" : "keep"
        p["delays_s"] = formatDelays(delaysPs)
        p["uncertainty_method"] = result.uncertaintyMethod
        p["target"] = target.rawValue
        p["projections"] = "\(projections)"
        return AnalysisRecord(
            name: "tomography", estimator: estimator == .linear ? "linear+closest-physical" : estimator.rawValue,
            parameters: p, values: values, uncertainties: errors,
            rhoReal: result.physical.elements.map(\.real), rhoImag: result.physical.elements.map(\.imaginary), notes: notes)
    }

    /// Channel delays as stored in the `delays_s` attribute: `channel:seconds` joined by commas.
    public static func formatDelays(_ delaysPs: [Int: Int64]) -> String {
        delaysPs.sorted { $0.key < $1.key }.map { "\($0.key):\(seconds($0.value))" }.joined(separator: ",")
    }

    /// Integer picoseconds as the seconds the `*_s` attributes hold (1000 ps → "1e-09").
    public static func seconds(_ ps: Int64) -> String { "\(Double(ps) * 1e-12)" }
}
