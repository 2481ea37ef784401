import Foundation
import HeraldCore
import Parsing

/// Arithmetic with units in script values: `$theta / 2`, `2 * $theta`, `$p0 + 2 mW`,
/// `-($a - 10 deg)`. Parsed by swift-parsing into a tree, then evaluated against the script's
/// parameters and the sweep variable of the point; every error carries the offset in the text
/// where it is, so the diagnostic lands on the right column.
///
/// Dimensions: `+` and `−` need the same dimension on both sides; `*` and `/` need one side
/// dimensionless (Herald's quantities have no compound units), except a quantity over one of
/// its own dimension, which is a plain number.
indirect enum Expression: Sendable, Equatable {
    case literal(Quantity, at: Int)
    case variable(String, at: Int)
    case negate(Expression, at: Int)
    case binary(Character, Expression, Expression, at: Int)

    /// Where the expression starts in its text.
    var offset: Int {
        switch self {
        case .literal(_, let at), .variable(_, let at), .negate(_, let at): return at
        case .binary(_, let l, _, _): return l.offset
        }
    }

    /// True for text that is an expression rather than a literal value or a bare `$name`.
    static func looksLikeExpression(_ text: String) -> Bool {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasPrefix("$") && t.dropFirst().allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" || $0 == "{" || $0 == "}" }) {
            return false
        }
        if Quantity.parse(t) != nil { return false }
        return t.contains("$") || t.contains(where: { "*/()".contains($0) }) || t.contains(" + ") || t.contains(" - ")
    }
}

/// Why an expression was refused: what, and where in its text (0-based character offset).
struct ExpressionError: Error, Equatable {
    var message: String
    var offset: Int
}

// MARK: Parsing

/// expression := term (("+" | "-") term)* ; term := factor (("*" | "/") factor)* ;
/// factor := "-" factor | "(" expression ")" | "$" name | number unit?
struct ExpressionParser: Parser {
    func parse(_ input: inout Substring) throws -> Expression {
        var lhs = try TermParser().parse(&input)
        while true {
            try blanks.parse(&input)
            guard let op = input.first, op == "+" || op == "-" else { return lhs }
            let at = position(input)
            input.removeFirst()
            try blanks.parse(&input)
            let rhs = try TermParser().parse(&input)
            lhs = .binary(op, lhs, rhs, at: at)
        }
    }
}

struct TermParser: Parser {
    func parse(_ input: inout Substring) throws -> Expression {
        var lhs = try FactorParser().parse(&input)
        while true {
            try blanks.parse(&input)
            guard let op = input.first, op == "*" || op == "/" else { return lhs }
            let at = position(input)
            input.removeFirst()
            try blanks.parse(&input)
            let rhs = try FactorParser().parse(&input)
            lhs = .binary(op, lhs, rhs, at: at)
        }
    }
}

struct FactorParser: Parser {
    func parse(_ input: inout Substring) throws -> Expression {
        try blanks.parse(&input)
        let at = position(input)
        guard let first = input.first else { throw ExpressionError(message: "a value is missing at the end", offset: at) }
        switch first {
        case "-":
            input.removeFirst()
            return .negate(try FactorParser().parse(&input), at: at)
        case "(":
            try "(".parse(&input)
            let inner = try ExpressionParser().parse(&input)
            try blanks.parse(&input)
            guard input.first == ")" else { throw ExpressionError(message: "')' expected to close the '(' at column \(at + 1)", offset: position(input)) }
            try ")".parse(&input)
            return inner
        case "$":
            input.removeFirst()
            let braced = input.first == "{"
            if braced { input.removeFirst() }
            let name = try Prefix<Substring> { $0.isLetter || $0.isNumber || $0 == "_" }.parse(&input)
            if braced {
                guard input.first == "}" else { throw ExpressionError(message: "'}' expected after ${\(name)", offset: position(input)) }
                input.removeFirst()
            }
            guard !name.isEmpty else { throw ExpressionError(message: "a parameter or sweep variable name is expected after '$'", offset: at + 1) }
            return .variable(String(name), at: at)
        default:
            let saved = input
            guard let number = try? Double.parser(of: Substring.self).parse(&input), number.isFinite else {
                input = saved
                throw ExpressionError(message: "a number, '$name' or '(' is expected, not '\(first)'", offset: at)
            }
            try blanks.parse(&input)
            let unit = try Prefix<Substring> { $0.isLetter || $0 == "µ" || $0 == "°" || $0 == "%" }.parse(&input)
            guard let q = Quantity.parse(unit.isEmpty ? String(number) : "\(number) \(unit)") else {
                throw ExpressionError(message: "unknown unit '\(unit)'", offset: at)
            }
            return .literal(q, at: at)
        }
    }
}

/// Spaces and tabs between the parts of an expression.
private var blanks: Prefix<Substring> { Prefix { $0 == " " || $0 == "\t" } }

/// The character offset of `input`'s start in the text it was cut from.
private func position(_ input: Substring) -> Int {
    input.base.distance(from: input.base.startIndex, to: input.startIndex)
}

extension Expression {
    /// Parses the whole of `text` (trailing text is an error, at its place).
    static func parse(_ text: String) -> Result<Expression, ExpressionError> {
        var input = text[...]
        do {
            let e = try ExpressionParser().parse(&input)
            try blanks.parse(&input)
            if let extra = input.first {
                return .failure(ExpressionError(message: "unexpected '\(extra)' (an operator + − * / is expected between values)", offset: position(input)))
            }
            return .success(e)
        } catch let e as ExpressionError {
            return .failure(e)
        } catch {
            return .failure(ExpressionError(message: "not an expression", offset: position(input)))
        }
    }

    /// The value, with `variables` (parameters and the sweep variable) bound; `lookup` gives a
    /// name's quantity or nil when it is not defined.
    func evaluate(_ lookup: (String) -> Quantity?) -> Result<Quantity, ExpressionError> {
        switch self {
        case .literal(let q, _): return .success(q)
        case .variable(let name, let at):
            guard let q = lookup(name) else { return .failure(ExpressionError(message: "'$\(name)' is not a parameter or a sweep variable here", offset: at)) }
            return .success(q)
        case .negate(let e, _):
            return e.evaluate(lookup).map { Quantity(-$0.value, $0.dimension) }
        case .binary(let op, let l, let r, let at):
            let lv: Quantity, rv: Quantity
            switch l.evaluate(lookup) {
            case .success(let q): lv = q
            case .failure(let e): return .failure(e)
            }
            switch r.evaluate(lookup) {
            case .success(let q): rv = q
            case .failure(let e): return .failure(e)
            }
            let result: Quantity
            switch op {
            case "+", "-":
                guard lv.dimension == rv.dimension else {
                    return .failure(ExpressionError(message: "cannot \(op == "+" ? "add" : "subtract") a \(rv.dimension) \(op == "+" ? "to" : "from") a \(lv.dimension) (\(rv) and \(lv))", offset: at))
                }
                result = Quantity(op == "+" ? lv.value + rv.value : lv.value - rv.value, lv.dimension)
            case "*":
                guard lv.dimension == .dimensionless || rv.dimension == .dimensionless else {
                    return .failure(ExpressionError(message: "\(lv.dimension) × \(rv.dimension) has no unit in Herald: one side must be a plain number", offset: at))
                }
                result = Quantity(lv.value * rv.value, lv.dimension == .dimensionless ? rv.dimension : lv.dimension)
            default:
                guard rv.value != 0 else { return .failure(ExpressionError(message: "division by zero", offset: at)) }
                if lv.dimension == rv.dimension {
                    result = Quantity(lv.value / rv.value, .dimensionless)
                } else if rv.dimension == .dimensionless {
                    result = Quantity(lv.value / rv.value, lv.dimension)
                } else {
                    return .failure(ExpressionError(message: "\(lv.dimension) ÷ \(rv.dimension) has no unit in Herald: divide by a plain number or a \(lv.dimension)", offset: at))
                }
            }
            guard result.value.isFinite else { return .failure(ExpressionError(message: "the result is not a finite number", offset: at)) }
            return .success(result)
        }
    }
}
