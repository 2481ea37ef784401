import HeraldCore

extension AnalysisRecord {
    /// The record of a tomography, as written to HDF5 and printed, wherever the counts came
    /// from (a run, or `herald analyze` recounting the raw tags).
    public static func tomography(
        _ result: TomographyResult, projections: Int, estimator: Estimator, target: String, parameters: [String: String]
    ) -> AnalysisRecord {
        var notes: [String] = []
        if result.linearMinEigenvalue < 0 {
            notes.append(
                "linear inversion was unphysical (smallest eigenvalue \(result.linearMinEigenvalue)); "
                    + "figures of merit use the closest physical state")
        }
        var values = result.figures
        values["fidelity"] = result.figures["fidelity_" + target]
        values["intensity"] = result.intensity
        values["linear_min_eigenvalue"] = result.linearMinEigenvalue
        var errors = result.uncertainties
        errors["fidelity"] = result.uncertainties["fidelity_" + target]
        var p = parameters
        p["uncertainty_method"] = result.uncertaintyMethod
        p["target"] = target
        p["projections"] = "\(projections)"
        return AnalysisRecord(
            name: "tomography", estimator: estimator == .linear ? "linear+closest-physical" : estimator.rawValue,
            parameters: p, values: values, uncertainties: errors,
            rhoReal: result.physical.elements.map(\.real), rhoImag: result.physical.elements.map(\.imaginary), notes: notes)
    }
}
