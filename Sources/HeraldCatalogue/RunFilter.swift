import Foundation
import HeraldCore

/// A `--where` expression, parsed and checked: every field is one the catalogue knows and
/// every value is of that field's kind. It becomes SQL only through ``SQLFragment``, with
/// each value a bound parameter: the user's text is never part of the SQL.
///
///     fidelity > 0.9 and sample = 'NV-7'
///     (S >= 2.5 or g2_0 < 0.05) and not status = failed
///     started >= 2026-11-01 and tag = calibration
public indirect enum RunFilter: Sendable, Equatable {
    case and(RunFilter, RunFilter)
    case or(RunFilter, RunFilter)
    case not(RunFilter)
    case compare(Field, Comparison, Value)

    public enum Comparison: String, Sendable, Equatable, CaseIterable {
        case equal = "=", notEqual = "!=", less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="
    }

    public enum Value: Sendable, Equatable {
        case number(Double)
        case text(String)
    }

    /// What a name in an expression refers to.
    public enum Field: Sendable, Equatable {
        /// A column of the runs table, by what it holds.
        case text(String), time(String), number(String), flag(String)
        /// A run's tag, a device's driver or node (one of several per run).
        case tag, driver, node, device
        /// A headline figure of any of the run's analyses (`fidelity`, `S`, `g2_0`, …).
        case figure(String)

        /// The names users write, and the column each is.
        static let columns: [String: Field] = [
            "uid": .text("uid"), "name": .text("name"), "script": .text("name"), "script_path": .text("script_path"),
            "sample": .text("sample"), "operator": .text("operator"), "status": .text("status"), "host": .text("host"),
            "revision": .text("script_revision"), "description": .text("description"), "file": .text("file_path"),
            "started": .time("started_at"), "stopped": .time("stopped_at"), "size": .number("file_size"),
            "dirty": .flag("script_dirty"), "mock": .flag("mock"), "tag": .tag, "driver": .driver, "node": .node, "device": .device,
        ]
    }
}

/// Why a `--where` expression was refused, with the column (1-based) it points at.
public struct RunFilterError: Error, CustomStringConvertible, Sendable, Equatable {
    public var column: Int
    public var message: String
    public var description: String { "--where, column \(column): \(message)" }
}

extension RunFilter {
    /// Parses and checks `text`. Throws ``RunFilterError`` naming the column of the first problem.
    public static func parse(_ text: String) throws(RunFilterError) -> RunFilter {
        var p = FilterParser(tokens: try FilterLexer.tokens(text), end: text.count + 1)
        let f = try p.orExpression()
        if let t = p.peek { throw RunFilterError(column: t.column, message: "unexpected '\(t.text)' after a complete expression; join conditions with 'and' or 'or'") }
        return f
    }
}

struct FilterToken: Equatable {
    enum Kind: Equatable { case word, number, string, op, open, close }
    var kind: Kind
    var text: String
    var column: Int
}

enum FilterLexer {
    static func tokens(_ text: String) throws(RunFilterError) -> [FilterToken] {
        let chars = Array(text)
        var out: [FilterToken] = []
        var i = 0
        func isWordStart(_ c: Character) -> Bool { c.isLetter || c == "_" }
        func isWord(_ c: Character) -> Bool { c.isLetter || c.isNumber || "_.+-:".contains(c) }
        while i < chars.count {
            let c = chars[i], column = i + 1
            if c.isWhitespace { i += 1; continue }
            if c == "(" || c == ")" {
                out.append(FilterToken(kind: c == "(" ? .open : .close, text: String(c), column: column))
                i += 1
            } else if "<>=!".contains(c) {
                var op = String(c)
                if i + 1 < chars.count, chars[i + 1] == "=" { op.append("="); i += 1 }
                i += 1
                if op == "==" { op = "=" }
                guard RunFilter.Comparison(rawValue: op) != nil else {
                    throw RunFilterError(column: column, message: "'\(op)' is not a comparison; use =, !=, <, <=, >, >=")
                }
                out.append(FilterToken(kind: .op, text: op, column: column))
            } else if c == "'" || c == "\"" {
                // A quoted value; the quote doubled stands for itself ('O''Brien').
                var s = ""
                i += 1
                var closed = false
                while i < chars.count {
                    if chars[i] == c {
                        if i + 1 < chars.count, chars[i + 1] == c { s.append(c); i += 2; continue }
                        closed = true
                        i += 1
                        break
                    }
                    s.append(chars[i])
                    i += 1
                }
                guard closed else { throw RunFilterError(column: column, message: "the quote opened here is never closed") }
                out.append(FilterToken(kind: .string, text: s, column: column))
            } else if c.isNumber || ((c == "-" || c == "+" || c == ".") && i + 1 < chars.count && (chars[i + 1].isNumber || chars[i + 1] == ".")) {
                // A number, or a date (2026-11-01, 2026-11-01T10:00): digits with -, :, T, ., e.
                var s = String(c)
                i += 1
                while i < chars.count, chars[i].isNumber || "-+.:eETZ".contains(chars[i]) { s.append(chars[i]); i += 1 }
                out.append(FilterToken(kind: Double(s) != nil ? .number : .string, text: s, column: column))
            } else if isWordStart(c) {
                var s = ""
                while i < chars.count, isWord(chars[i]) { s.append(chars[i]); i += 1 }
                out.append(FilterToken(kind: .word, text: s, column: column))
            } else {
                throw RunFilterError(column: column, message: "unexpected '\(c)'; a condition is FIELD OP VALUE, e.g. fidelity > 0.9")
            }
        }
        return out
    }
}

struct FilterParser {
    var tokens: [FilterToken]
    /// The column just past the text, for "expected … at the end".
    var end: Int
    var index = 0
    /// Parentheses and `not`s open at this point, and the conditions so far: both bounded, so a
    /// pathological expression is refused at its column instead of exhausting the stack here,
    /// in the SQL it becomes, or in the database's own parser (SQLite stops at depth 1000).
    var depth = 0
    var conditions = 0
    static let maxDepth = 32
    static let maxConditions = 200

    var peek: FilterToken? { index < tokens.count ? tokens[index] : nil }
    mutating func next() -> FilterToken? {
        defer { index += 1 }
        return peek
    }
    func isKeyword(_ t: FilterToken?, _ k: String) -> Bool { t?.kind == .word && t?.text.lowercased() == k }

    mutating func orExpression() throws(RunFilterError) -> RunFilter {
        var f = try andExpression()
        while isKeyword(peek, "or") {
            index += 1
            f = .or(f, try andExpression())
        }
        return f
    }

    mutating func andExpression() throws(RunFilterError) -> RunFilter {
        var f = try unary()
        while isKeyword(peek, "and") {
            index += 1
            f = .and(f, try unary())
        }
        return f
    }

    mutating func unary() throws(RunFilterError) -> RunFilter {
        guard let t = peek else { throw RunFilterError(column: end, message: "expected a condition (FIELD OP VALUE, e.g. fidelity > 0.9) at the end") }
        if isKeyword(t, "not") || t.kind == .open {
            guard depth < Self.maxDepth else {
                throw RunFilterError(column: t.column, message: "nested more than \(Self.maxDepth) deep (parentheses and not); write it flatter")
            }
        }
        if isKeyword(t, "not") {
            index += 1
            depth += 1
            defer { depth -= 1 }
            return .not(try unary())
        }
        if t.kind == .open {
            index += 1
            depth += 1
            defer { depth -= 1 }
            let f = try orExpression()
            guard let close = next(), close.kind == .close else {
                throw RunFilterError(column: t.column, message: "the parenthesis opened here is never closed")
            }
            return f
        }
        return try comparison()
    }

    mutating func comparison() throws(RunFilterError) -> RunFilter {
        guard let name = next() else { throw RunFilterError(column: end, message: "expected a field") }
        conditions += 1
        guard conditions <= Self.maxConditions else {
            throw RunFilterError(column: name.column, message: "more than \(Self.maxConditions) conditions; narrow the query with --since, --sample or --script instead")
        }
        guard name.kind == .word else {
            throw RunFilterError(column: name.column, message: "expected a field (sample, started, fidelity, …), got '\(name.text)'")
        }
        let field = try Self.field(name)
        guard let op = next() else { throw RunFilterError(column: end, message: "expected a comparison after '\(name.text)'") }
        guard op.kind == .op, let comparison = RunFilter.Comparison(rawValue: op.text) else {
            throw RunFilterError(column: op.column, message: "expected =, !=, <, <=, > or >= after '\(name.text)', got '\(op.text)'")
        }
        guard let v = next(), [.word, .number, .string].contains(v.kind) else {
            throw RunFilterError(column: peekColumn(), message: "expected a value after '\(op.text)'")
        }
        return .compare(field, comparison, try Self.value(v, for: field, name: name.text, comparison: comparison))
    }

    func peekColumn() -> Int { index - 1 < tokens.count && index >= 1 ? tokens[index - 1].column : end }

    static func field(_ t: FilterToken) throws(RunFilterError) -> RunFilter.Field {
        if let f = RunFilter.Field.columns[t.text.lowercased()] { return f }
        // Anything else is a figure, and must be one Herald reports.
        if Figure(key: t.text) != nil { return .figure(t.text) }
        let known = RunFilter.Field.columns.keys.sorted() + ["fidelity", "concurrence", "S", "g2_0", "herald_rate", "…"]
        throw RunFilterError(column: t.column, message: "unknown field '\(t.text)'; fields are \(known.joined(separator: ", ")) (any figure an analysis reports)")
    }

    static func value(_ t: FilterToken, for field: RunFilter.Field, name: String, comparison: RunFilter.Comparison) throws(RunFilterError) -> RunFilter.Value {
        switch field {
        case .figure, .number:
            guard t.kind == .number, let v = Double(t.text), v.isFinite else {
                throw RunFilterError(column: t.column, message: "'\(name)' is a number; got '\(t.text)'")
            }
            return .number(v)
        case .time:
            guard let date = CatalogueTime.parse(t.text) else {
                throw RunFilterError(column: t.column, message: "'\(name)' is a time like 2026-11-01, 2026-11-01T14:30 or 7d (ago); got '\(t.text)'")
            }
            return .number(date.timeIntervalSince1970)
        case .flag:
            guard let b = Bool(t.text.lowercased()) else { throw RunFilterError(column: t.column, message: "'\(name)' is true or false; got '\(t.text)'") }
            guard comparison == .equal || comparison == .notEqual else {
                throw RunFilterError(column: t.column, message: "'\(name)' is true or false: compare it with = or !=")
            }
            return .number(b ? 1 : 0)
        case .text: return .text(t.text)
        case .tag, .driver, .node, .device:
            guard comparison == .equal || comparison == .notEqual else {
                throw RunFilterError(column: t.column, message: "a run has several of '\(name)': compare it with = or !=")
            }
            return .text(t.text)
        }
    }
}

/// Times as `--since` and `--where` take them: a date, a date and time (local unless it ends
/// in Z), or an age (`30m`, `24h`, `7d`: that long before now).
public enum CatalogueTime {
    public static func parse(_ text: String, now: Date = Date()) -> Date? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if let unit = t.last, let n = Double(t.dropLast()), n >= 0, n.isFinite {
            let scale: Double? = ["s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604_800][String(unit)]
            if let scale { return now.addingTimeInterval(-n * scale) }
        }
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        for (format, utc) in [
            ("yyyy-MM-dd'T'HH:mm:ss'Z'", true), ("yyyy-MM-dd'T'HH:mm'Z'", true), ("yyyy-MM-dd'T'HH:mm:ss", false),
            ("yyyy-MM-dd'T'HH:mm", false), ("yyyy-MM-dd", false),
        ] {
            f.dateFormat = format
            f.timeZone = utc ? TimeZone(identifier: "UTC") : TimeZone.current
            if let d = f.date(from: t) { return d }
        }
        return nil
    }
}
