import Foundation
import HeraldCore

/// A table of tomography counts read from CSV: a header row with at least `setting,counts`
/// and optionally `duration_s,singles_a,singles_b,window_ns` (for accidentals), and
/// `scale` (relative intensity × efficiency of that projection) and `crosstalk_a`,
/// `crosstalk_b` (each arm's analyser crosstalk probability, see `Projection.crosstalkA`).
public struct CountsTable: Sendable {
    public var projections: [Projection]
    public var scales: [Double]?

    public struct ParseError: Error, CustomStringConvertible, Sendable {
        public var file: String
        public var line: Int
        public var column: Int
        public var message: String
        public var description: String { "\(file):\(line):\(column): error: \(message)" }
    }

    /// - Parameter swapCircular: read R as (H+iV)/√2 and L as (H−iV)/√2 (the opposite convention).
    public static func parse(_ text: String, file: String, swapCircular: Bool = false) throws -> CountsTable {
        // split, not components(separatedBy: .newlines), which is quadratic in the text's
        // length on Linux (3 600 rows took 10 s). "\r\n" is one Character, so one break.
        var lines = text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated().map {
            ($0 + 1, String($1))
        }
        lines.removeAll { $0.1.trimmingCharacters(in: .whitespaces).isEmpty || $0.1.hasPrefix("#") }
        guard let (headerLine, header) = lines.first else {
            throw ParseError(file: file, line: 1, column: 1, message: "empty file; expected a header row 'setting,counts'")
        }
        let names = header.split(separator: ",", omittingEmptySubsequences: false).map {
            $0.trimmingCharacters(in: .whitespaces).lowercased()
        }
        func column(_ name: String) -> Int? { names.firstIndex(of: name) }
        guard let settingColumn = column("setting"), let countsColumn = column("counts") else {
            throw ParseError(
                file: file, line: headerLine, column: 1,
                message: "the header must name at least 'setting' and 'counts' columns (got \(names.joined(separator: ",")))")
        }
        let optional = ["duration_s", "singles_a", "singles_b", "window_ns", "scale", "crosstalk_a", "crosstalk_b"]
        let known = Set(["setting", "counts"] + optional)
        if let unknown = names.first(where: { !known.contains($0) }) {
            throw ParseError(
                file: file, line: headerLine, column: (names.firstIndex(of: unknown) ?? 0) + 1,
                message: "unknown column '\(unknown)'; columns are setting, counts, \(optional.joined(separator: ", "))")
        }
        var projections: [Projection] = []
        var scales: [Double] = []
        for (lineNumber, line) in lines.dropFirst() {
            if line.contains("\"") {
                throw ParseError(file: file, line: lineNumber, column: 1, message: "quoted fields are not supported")
            }
            let fields = line.split(separator: ",", omittingEmptySubsequences: false).map {
                $0.trimmingCharacters(in: .whitespaces)
            }
            guard fields.count == names.count else {
                throw ParseError(
                    file: file, line: lineNumber, column: 1,
                    message: "\(fields.count) fields, the header has \(names.count)")
            }
            func number(_ name: String) throws -> Double? {
                guard let c = column(name), !fields[c].isEmpty else { return nil }
                guard let v = Double(fields[c]), v.isFinite, v >= 0 else {
                    let col = fields[..<c].reduce(1) { $0 + $1.count + 1 }
                    throw ParseError(
                        file: file, line: lineNumber, column: col,
                        message: "\(name) must be a non-negative number, got '\(fields[c])'")
                }
                return v
            }
            let setting = fields[settingColumn].uppercased()
            let letters = setting.compactMap { PolarizationLabel(rawValue: String($0)) }
            guard setting.count == 2, letters.count == 2 else {
                let col = fields[..<settingColumn].reduce(1) { $0 + $1.count + 1 }
                throw ParseError(
                    file: file, line: lineNumber, column: col,
                    message: "setting must be two letters from H, V, D, A, R, L (photon A first), got '\(fields[settingColumn])'")
            }
            func convention(_ l: PolarizationLabel) -> PolarizationLabel {
                guard swapCircular else { return l }
                return l == .R ? .L : l == .L ? .R : l
            }
            guard let counts = try number("counts") else {
                throw ParseError(file: file, line: lineNumber, column: countsColumn + 1, message: "counts is missing")
            }
            _ = countsColumn
            var accidentals = 0.0
            if let t = try number("duration_s"), let sa = try number("singles_a"), let sb = try number("singles_b"),
                let w = try number("window_ns"), t > 0
            {
                accidentals = sa * sb * w * 1e-9 / t
            }
            var projection = Projection(convention(letters[0]), convention(letters[1]), counts: counts, accidentals: accidentals)
            for (name, keyPath) in [("crosstalk_a", \Projection.crosstalkA), ("crosstalk_b", \Projection.crosstalkB)] {
                guard let epsilon = try number(name) else { continue }
                guard epsilon < 0.5 else {
                    throw ParseError(
                        file: file, line: lineNumber, column: (column(name) ?? 0) + 1,
                        message: "\(name) must be below 0.5 (a probability of the wrong port), got \(epsilon)")
                }
                projection[keyPath: keyPath] = epsilon
            }
            projections.append(projection)
            scales.append(try number("scale") ?? 1)
        }
        guard !projections.isEmpty else {
            throw ParseError(file: file, line: headerLine, column: 1, message: "no rows after the header")
        }
        return CountsTable(projections: projections, scales: scales.allSatisfy { $0 == 1 } ? nil : scales)
    }
}
