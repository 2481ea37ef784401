/// A property value as scripts and drivers exchange it.
public enum Value: Sendable, Hashable, CustomStringConvertible {
    case bool(Bool)
    case quantity(Quantity)
    case text(String)

    public var description: String {
        switch self {
        case .bool(let b): return b ? "true" : "false"
        case .quantity(let q): return q.description
        case .text(let s): return s
        }
    }

    public var quantity: Quantity? {
        if case .quantity(let q) = self { return q }
        return nil
    }

    public var bool: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var text: String? {
        if case .text(let s) = self { return s }
        return nil
    }
}

/// What a property accepts.
public enum PropertyType: Sendable, Hashable, CustomStringConvertible {
    case bool
    case quantity(PhysicalDimension)
    case choice([String])
    case text

    public var description: String {
        switch self {
        case .bool: return "true or false"
        case .quantity(let d) where d == .dimensionless: return "a number"
        case .quantity(let d): return "a \(d) (\(Unit.examples(for: d)))"
        case .choice(let options): return "one of \(options.joined(separator: ", "))"
        case .text: return "text"
        }
    }
}

/// A property a driver declares: its name, type, allowed range (in SI units) and whether it can be set.
public struct PropertySpec: Sendable, Hashable {
    public var name: String
    public var type: PropertyType
    public var range: ClosedRange<Double>?
    public var settable: Bool
    public var summary: String

    public init(
        _ name: String, _ type: PropertyType, range: ClosedRange<Double>? = nil, settable: Bool = true,
        summary: String = ""
    ) {
        self.name = name
        self.type = type
        self.range = range
        self.settable = settable
        self.summary = summary
    }

    /// Whether a value is of this property's type (and dimension), whatever its range.
    public func accepts(typeOf value: Value) -> Bool {
        switch (type, value) {
        case (.bool, .bool), (.text, .text): return true
        case (.choice(let options), .text(let s)): return options.contains(s)
        case (.quantity(let d), .quantity(let q)): return q.dimension == d && q.value.isFinite
        default: return false
        }
    }

    /// Checks a value against the type and range; returns a human-readable problem or nil.
    public func problem(with value: Value) -> String? {
        switch (type, value) {
        case (.bool, .bool), (.text, .text): return nil
        case (.choice(let options), .text(let s)):
            return options.contains(s) ? nil : "'\(s)' is not \(type)"
        case (.quantity(let d), .quantity(let q)):
            guard q.dimension == d else {
                return "expected \(type), got a \(q.dimension) (\(q))"
            }
            if let range, !range.contains(q.value) {
                return "\(q) is outside the allowed range \(range.lowerBound)...\(range.upperBound) \(d.siUnit)"
            }
            return nil
        default:
            return "expected \(type), got '\(value)'"
        }
    }
}
