import HeraldCore
import HeraldHDF5

/// The `units` attribute of every numeric dataset Herald writes under /user/herald, so an
/// analyst in h5py, MATLAB or HDFView never has to guess what a number is in. Set once the
/// file is out of SWMR (attributes cannot be added during it): by a clean stop, by
/// `herald recover`, and for each entry `herald analyze` appends.
enum DatasetUnits {
    /// Labels every numeric dataset below `herald` that has no `units` yet.
    static func label(_ herald: H5Group) throws { try walk(herald, path: [], swept: "") }

    private static func walk(_ group: H5Group, path: [String], swept: String) throws {
        var swept = swept
        // An analysis entry's fit is per unit of its swept quantity.
        if path.count == 2, path[0] == "analysis", let s = try group.stringAttribute("swept_unit") { swept = s }
        for name in try group.childNames() {
            switch group.kind(of: name) {
            case .group:
                try walk(try group.openGroup(name), path: path + [name], swept: swept)
            case .numericDataset:
                let dataset = try group.dataset(name)
                guard !dataset.hasAttribute("units") else { continue }
                try dataset.setAttribute("units", unit(of: name, in: path, swept: swept))
            default:
                continue
            }
        }
    }

    /// Names Herald gives its datasets: times end in `_ps` or `_s`; counts are counts;
    /// indices, channels, codes and flags are pure numbers ("1"). Figures of merit take theirs
    /// from the figure table.
    static func unit(of name: String, in path: [String], swept: String) -> String {
        if path.first == "analysis", let parent = path.last, ["values", "uncertainties", "series"].contains(parent),
            let figure = Figure(key: name)
        {
            return figure.unit(swept: swept)
        }
        if name.hasSuffix("_ps") { return "ps" }
        if name.hasSuffix("_s") { return "s" }
        if counts.contains(name) { return "counts" }
        return "1"
    }

    static let counts: Set<String> = [
        "coincidences", "accidentals", "singles", "pair_coincidences", "pair_accidentals", "singles_count",
    ]
}
