import Foundation
import HeraldCore
import HeraldRunReader
import HeraldHDF5

/// The parts of Photon-HDF5 (photon-hdf5.org, version 0.5) that Herald writes outside
/// `/user`. Every official field carries its official description as a TITLE attribute,
/// and strings are fixed-length byte strings, because phconvert's validator (which reads
/// through PyTables) checks both.
enum PhotonHDF5 {
    static let formatVersion = "0.5"

    /// Official descriptions of the fields Herald writes, keyed by path.
    static let titles: [String: String] = [
        "/": "A file format for photon-counting detector based single-molecule spectroscopy experiments.",
        "/description": "A user-defined comment describing the data file.",
        "/acquisition_duration": "Measurement duration in seconds.",
        "/format_name": "Name of the file format.",
        "/format_version": "Version for the Photon-HDF5 format.",
        "/photon_data": "Group containing arrays of photon-data.",
        "/photon_data/timestamps": "Array of photon timestamps. Units specified in timestamps_units (defined in timestamps_specs/).",
        "/photon_data/detectors": "Array of pixel IDs for each timestamp.",
        "/photon_data/timestamps_specs": "Specifications for timestamps.",
        "/photon_data/timestamps_specs/timestamps_unit": "Value of 1-unit timestamp-increment in seconds.",
        "/identity": "Information about the Photon-HDF5 data file.",
        "/identity/creation_time": "Creation time of the current Photon-HDF5 file.",
        "/identity/software": "Name of the software used to create the current Photon-HDF5 file.",
        "/identity/software_version": "Version of the software used to create current the Photon-HDF5 file.",
        "/identity/format_name": "Name of the file format.",
        "/identity/format_version": "Version for the Photon-HDF5 format.",
        "/identity/format_url": "Official URL for the Photon-HDF5 format.",
        "/identity/filename": "Original file name of the current Photon-HDF5 file (i.e. file name at creation time).",
        "/identity/filename_full": "Original file name (with full path) of the current Photon-HDF5 file (i.e. full file name at creation time).",
        "/setup": "Information about the experimental setup.",
        "/setup/num_pixels": "Total number of detector pixels.",
        "/setup/num_spots": "Number of excitation (or detection) \"spots\" in the sample.",
        "/setup/num_spectral_ch": "Number of distinct spectral bands which are acquired.",
        "/setup/num_polarization_ch": "Number of distinct polarization states which are acquired.",
        "/setup/num_split_ch": "Number of distinct detection channels detecting the same spectral band and polarization. This value is > 1 when using a non-polarizing beam splitter.",
        "/setup/modulated_excitation": "True (i.e. 1) if there is any form of excitation modulation of excitation wavelength (as in us-ALEX or PAX) or polarization. This field is also True for pulse-interleaved excitation (PIE) or ns-ALEX measurements.",
        "/setup/lifetime": "True (i.e. 1) if the measurement includes a nanotimes array of photon arrival times with respect to a laser pulse (as in TCSPC measurements).",
        "/setup/excitation_alternated": "New in version 0.5. Indicates whether each excitation source is alternated (True, or 1) or not alternated (False, or 0).",
        "/setup/detectors": "Metadata relative to each detector's pixel. Each field is an array with size equal to the number of the detectors.",
        "/setup/detectors/id": "Detector IDs as they appear on /photon_data/detectors.",
        "/setup/detectors/counts": "Total number of counts detected by each detector.",
        "/photon_data/nanotimes": "TCSPC photon arrival time (nanotimes). Units and other specifications are in nanotimes_specs group.",
        "/photon_data/nanotimes_specs": "Group for nanotime-specific data.",
        "/photon_data/nanotimes_specs/tcspc_unit": "Value of 1-unit nanotime-increment in seconds (TCSPC bin size).",
        "/photon_data/nanotimes_specs/tcspc_num_bins": "Number of TCSPC bins.",
        "/photon_data/nanotimes_specs/tcspc_range": "TCSPC full-scale range in seconds.",
        "/identity/author": "Author of the current data file.",
        "/identity/author_affiliation": "Company or institution the author is affiliated with.",
        "/sample": "Information about the measured sample.",
        "/sample/sample_name": "A descriptive name for the sample.",
        "/sample/dye_names": "String containing a comma-separated list of dye or fluorophore names.",
        "/sample/buffer_name": "A descriptive name for the buffer.",
        "/setup/excitation_cw": "For each excitation source, this field indicates whether excitation is continuous wave (CW), True (i.e. 1), or pulsed, False (i.e. 0).",
        "/setup/excitation_wavelengths": "List of excitation wavelengths (center wavelength if broad-band) in increasing order (unit: meter).",
        "/setup/detection_wavelengths": "Reference wavelengths (units: meter) for each detected spectral band.",
        "/photon_data/measurement_specs": "Metadata necessary for interpretation of the particular type of measurement.",
        "/photon_data/measurement_specs/measurement_type": "Name of the measurement the data represents.",
        "/photon_data/measurement_specs/detectors_specs": "Mapping between the pixel IDs and the detection channels.",
        "/photon_data/measurement_specs/laser_repetition_rate": "Repetition rate of the pulsed excitation laser (in Hertz).",
        "/setup/laser_repetition_rates": "Repetition rates in Hz for each laser. CW lasers have a value of 0.",
        "/provenance": "Information about the original data file.",
        "/provenance/filename": "File name of the original data file before conversion to Photon-HDF5.",
        "/provenance/filename_full": "File name (with full path) of the original data file before conversion to Photon-HDF5.",
        "/provenance/creation_time": "Creation time of the original data file.",
        "/provenance/software": "Software used to save the original data file.",
        "/provenance/software_version": "Version of the software used to save the original data file.",
    ]

    static func title(_ location: H5Location) throws {
        if let t = titles[location.path] { try location.setAttribute("TITLE", fixed: t) }
    }

    /// Root fields, identity and the photon_data group, written when the file is created.
    /// `filename`: the name the file will have (default: the one it is written under).
    static func writeHeader(
        _ file: H5File, description: String, softwareVersion: String, createdAt: Date, filename: String? = nil
    ) throws {
        let name = URL(fileURLWithPath: filename ?? file.filename)
        try title(file)
        try title(try file.write("description", fixedString: description))
        try title(try file.write("acquisition_duration", scalar: 0.0))
        try title(try file.write("format_name", fixedString: "Photon-HDF5"))
        try title(try file.write("format_version", fixedString: formatVersion))
        let identity = try file.group("identity")
        try title(identity)
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        let fields = [
            ("creation_time", formatter.string(from: createdAt)), ("software", "Herald"),
            ("software_version", softwareVersion), ("format_name", "Photon-HDF5"), ("format_version", formatVersion),
            ("format_url", "http://photon-hdf5.org/"),
            ("filename", name.lastPathComponent), ("filename_full", name.standardizedFileURL.path),
        ]
        for (name, value) in fields { try title(try identity.write(name, fixedString: value)) }
    }

    /// /setup, from the detectors that actually produced tags. Written when the run stops
    /// (or by `herald recover`), because only then are the detectors known.
    /// Who made the file (Photon-HDF5's /identity/author and author_affiliation) and what was
    /// measured (/sample/sample_name): written as given, or "unspecified" on purpose, so a
    /// reader never mistakes an omission for a field Herald does not know about.
    static func writeAuthorship(_ file: H5File, author: String?, affiliation: String?, sample: String?) throws {
        let identity = try file.openGroup("identity")
        try title(try identity.write("author", fixedString: author ?? "unspecified"))
        try title(try identity.write("author_affiliation", fixedString: affiliation ?? "unspecified"))
        let group = try file.group("sample")
        try title(group)
        try title(try group.write("sample_name", fixedString: sample ?? "unspecified"))
        // Photon-HDF5's fluorescence fields; a photon-pair source has neither.
        try title(try group.write("dye_names", fixedString: "none (photon-pair source)"))
        try title(try group.write("buffer_name", fixedString: "none"))
    }

    /// The pump's and the detected photons' wavelengths, in metres; NaN when the script
    /// does not say (`meta: {excitation_wavelength: 405 nm, detection_wavelength: 810 nm}`).
    public struct Wavelengths: Sendable {
        public var excitation: Double?
        public var detection: Double?
        public init(excitation: Double? = nil, detection: Double? = nil) {
            self.excitation = excitation
            self.detection = detection
        }
    }

    /// `repetitionRate`: a pulsed source's rate in Hz (a T3 recording's sync rate); nil is CW.
    static func writeSetup(
        _ file: H5File, detectorCounts: [UInt8: Int64], lifetime: Bool = false, wavelengths: Wavelengths = .init(), repetitionRate: Double? = nil
    ) throws {
        guard !file.contains("setup") else { return }
        let setup = try file.group("setup")
        try title(setup)
        let ids = detectorCounts.keys.sorted()
        try title(try setup.write("num_pixels", scalar: Int64(ids.count)))
        try title(try setup.write("num_spots", scalar: Int64(1)))
        try title(try setup.write("num_spectral_ch", scalar: Int64(1)))
        // Each detector is its own channel: Herald records which polarization it projects
        // onto per setting under /user/herald/counts, not here.
        try title(try setup.write("num_polarization_ch", scalar: Int64(1)))
        try title(try setup.write("num_split_ch", scalar: Int64(max(1, ids.count))))
        try title(try setup.write("modulated_excitation", scalar: Int64(0)))
        try title(try setup.write("lifetime", scalar: Int64(lifetime ? 1 : 0)))
        try title(try setup.write("excitation_alternated", [UInt8(0)]))
        try title(try setup.write("excitation_cw", [UInt8(repetitionRate == nil ? 1 : 0)]))
        if let repetitionRate { try title(try setup.write("laser_repetition_rates", [repetitionRate])) }
        try title(try setup.write("excitation_wavelengths", [wavelengths.excitation ?? .nan]))
        try title(try setup.write("detection_wavelengths", [wavelengths.detection ?? .nan]))
        let detectors = try setup.group("detectors")
        try title(detectors)
        try title(try detectors.write("id", ids))
        try title(try detectors.write("counts", ids.map { detectorCounts[$0] ?? 0 }))
        // "generic": tags of detectors that are not a FRET pair; each detector is its own split channel.
        let photons = try file.openGroup("photon_data")
        if !photons.contains("measurement_specs") {
            let specs = try photons.group("measurement_specs")
            try title(specs)
            let type = try specs.write("measurement_type", fixedString: "generic")
            try title(type)
            // PyTables (phconvert's reader) hands a scalar string back as bytes only when told the
            // dataset holds a Python object, as phconvert's own writer marks it.
            try type.setAttribute("FLAVOR", fixed: "python")
            if let repetitionRate { try title(try specs.write("laser_repetition_rate", scalar: repetitionRate)) }
            let det = try specs.group("detectors_specs")
            try title(det)
            // The specification's text for split_ch<n>; phconvert compares titles exactly, with its own
            // ordinals (it spells the third "thrid").
            let nth = [1: "first", 2: "second", 3: "thrid", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth", 9: "ninth", 10: "tenth"]
            for (i, id) in ids.enumerated() {
                let field = try det.write("split_ch\(i + 1)", [id])
                let n = i + 1
                try field.setAttribute("TITLE", fixed: "Pixel IDs for the \(nth[n] ?? String(n)) channel split through a non-polarizing beam splitter.")
            }
        }
    }
}
