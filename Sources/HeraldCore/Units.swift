import Foundation

/// The physical dimension of a quantity. Herald checks dimensions, not unit
/// spellings, so `1500 ms` and `1.5 s` are the same duration.
public enum PhysicalDimension: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case dimensionless
    case time
    case frequency
    case current
    case power
    case length
    case angle
    case temperature
    case voltage

    public var description: String { rawValue }

    /// The SI unit that values of this dimension are stored in.
    public var siUnit: String {
        switch self {
        case .dimensionless: return ""
        case .time: return "s"
        case .frequency: return "Hz"
        case .current: return "A"
        case .power: return "W"
        case .length: return "m"
        case .angle: return "deg"  // angles are kept in degrees: that is how mounts are driven
        case .temperature: return "K"
        case .voltage: return "V"
        }
    }
}

/// A number with a dimension, stored in the dimension's SI unit (degrees for angles).
public struct Quantity: Sendable, Hashable, CustomStringConvertible {
    public var value: Double
    public var dimension: PhysicalDimension

    public init(_ value: Double, _ dimension: PhysicalDimension) {
        self.value = value
        self.dimension = dimension
    }

    public static func seconds(_ v: Double) -> Quantity { Quantity(v, .time) }
    public static func degrees(_ v: Double) -> Quantity { Quantity(v, .angle) }

    public var description: String {
        dimension == .dimensionless ? "\(value)" : "\(value) \(dimension.siUnit)"
    }

    /// Parses `"10 s"`, `"1.5ns"`, `"45 mA"`, `"22.5 deg"`, or a bare number.
    /// Returns nil when the text is not a number followed by a known unit.
    public static func parse(_ text: String) -> Quantity? {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { return nil }
        // Split at the first character that cannot belong to a floating-point literal.
        var numberEnd = trimmed.startIndex
        var previous: Character = " "
        for (offset, ch) in trimmed.enumerated() {
            let isNumeric = ch.isNumber || ch == "." || ch == "+" || ch == "-"
                || ((ch == "e" || ch == "E") && previous.isNumber && offset + 1 < trimmed.count
                    && Self.isExponentContinuation(trimmed, after: offset))
            if !isNumeric { break }
            previous = ch
            numberEnd = trimmed.index(after: numberEnd)
        }
        guard let number = Double(trimmed[..<numberEnd]), number.isFinite else { return nil }
        let unit = trimmed[numberEnd...].trimmingCharacters(in: .whitespaces)
        guard let (dimension, scale) = Unit.table[unit] else { return nil }
        return Quantity(number * scale, dimension)
    }

    private static func isExponentContinuation(_ s: String, after offset: Int) -> Bool {
        let rest = s.dropFirst(offset + 1)
        guard let next = rest.first else { return false }
        if next.isNumber { return true }
        if next == "+" || next == "-", let digit = rest.dropFirst().first { return digit.isNumber }
        return false
    }
}

/// Known unit spellings and their scale to the SI unit of their dimension.
public enum Unit {
    public static let table: [String: (PhysicalDimension, Double)] = {
        var t: [String: (PhysicalDimension, Double)] = [
            "": (.dimensionless, 1), "%": (.dimensionless, 0.01), "ppm": (.dimensionless, 1e-6), "ppb": (.dimensionless, 1e-9),
        ]
        let prefixes: [(String, Double)] = [
            ("p", 1e-12), ("n", 1e-9), ("u", 1e-6), ("µ", 1e-6), ("m", 1e-3), ("", 1), ("k", 1e3),
            ("M", 1e6), ("G", 1e9),
        ]
        for (p, f) in prefixes {
            t[p + "s"] = (.time, f)
            t[p + "Hz"] = (.frequency, f)
            t[p + "A"] = (.current, f)
            t[p + "W"] = (.power, f)
            t[p + "m"] = (.length, f)
            t[p + "V"] = (.voltage, f)
        }
        t["min"] = (.time, 60)
        t["h"] = (.time, 3600)
        t["cps"] = (.frequency, 1)
        t["deg"] = (.angle, 1)
        t["°"] = (.angle, 1)
        t["rad"] = (.angle, 180 / Double.pi)
        t["K"] = (.temperature, 1)
        t["mK"] = (.temperature, 1e-3)
        return t
    }()

    /// A short list of accepted spellings for a dimension, for error messages.
    public static func examples(for dimension: PhysicalDimension) -> String {
        switch dimension {
        case .dimensionless: return "a plain number"
        case .time: return "ps, ns, us, ms, s, min"
        case .frequency: return "Hz, kHz, MHz"
        case .current: return "uA, mA, A"
        case .power: return "uW, mW, W"
        case .length: return "nm, um, mm, m"
        case .angle: return "deg, rad"
        case .temperature: return "K, mK"
        case .voltage: return "mV, V"
        }
    }
}

/// Whole picoseconds in a Duration (attoseconds truncated): the unit of every tag clock.
public func picoseconds(_ d: Duration) -> Int64 {
    let (s, atto) = d.components
    return s * 1_000_000_000_000 + atto / 1_000_000
}

extension Int64 {
    /// `self + other`, saturating at the range's ends: times from files and devices must not
    /// trap the arithmetic done on them.
    @inlinable
    public func saturatingAdd(_ other: Int64) -> Int64 {
        let (sum, overflow) = addingReportingOverflow(other)
        return overflow ? (other > 0 ? .max : .min) : sum
    }

    /// The nearest Int64 to `value`, clamped to the representable range (NaN gives 0). For
    /// numbers that come from files and devices: `Int64(_:)` traps outside the range.
    @inlinable
    public init(clampingRounded value: Double) {
        let r = value.rounded()
        if r.isNaN {
            self = 0
        } else if r >= 9.223_372_036_854_775_807e18 {
            self = .max
        } else if r <= -9.223_372_036_854_775_808e18 {
            self = .min
        } else {
            self = Int64(r)
        }
    }
}
