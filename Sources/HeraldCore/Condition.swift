/// A comparison of a device property with a value, e.g. `pump.locked == true` or
/// `tagger.rate > 1 kHz`. Used by `wait: {until: …}` and by interlocks.
public struct Condition: Sendable, Hashable, CustomStringConvertible {
    public enum Comparison: String, Sendable, CaseIterable {
        case equal = "==", notEqual = "!=", lessOrEqual = "<=", greaterOrEqual = ">=", less = "<", greater = ">"
    }

    public var device: String
    public var property: String
    public var comparison: Comparison
    public var value: Value

    public init(device: String, property: String, comparison: Comparison, value: Value) {
        self.device = device
        self.property = property
        self.comparison = comparison
        self.value = value
    }

    public var description: String { "\(device).\(property) \(comparison.rawValue) \(value)" }

    /// Splits `device.property OP value` into its parts; nil if it has no comparison operator.
    public static func split(_ text: String) -> (target: String, comparison: Comparison, value: String)? {
        // Two-character operators first, so `<=` is not read as `<`.
        for op in [Comparison.equal, .notEqual, .lessOrEqual, .greaterOrEqual, .less, .greater] {
            if let r = text.range(of: op.rawValue) {
                let lhs = text[..<r.lowerBound].trimmingCharacters(in: .whitespaces)
                let rhs = text[r.upperBound...].trimmingCharacters(in: .whitespaces)
                guard !lhs.isEmpty, !rhs.isEmpty else { return nil }
                return (lhs, op, rhs)
            }
        }
        return nil
    }

    /// Whether `actual` satisfies the condition. Values of another type never do.
    public func holds(for actual: Value) -> Bool {
        switch (actual, value) {
        case (.quantity(let a), .quantity(let b)) where a.dimension == b.dimension:
            switch comparison {
            case .equal: return a.value == b.value
            case .notEqual: return a.value != b.value
            case .less: return a.value < b.value
            case .lessOrEqual: return a.value <= b.value
            case .greater: return a.value > b.value
            case .greaterOrEqual: return a.value >= b.value
            }
        case (.bool(let a), .bool(let b)):
            return comparison == .equal ? a == b : comparison == .notEqual ? a != b : false
        case (.text(let a), .text(let b)):
            return comparison == .equal ? a == b : comparison == .notEqual ? a != b : false
        default:
            return false
        }
    }
}

import Foundation
