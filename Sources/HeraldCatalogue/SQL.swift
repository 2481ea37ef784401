import Foundation

/// A value bound to a statement's parameter: the only way user text reaches the database.
public enum SQLValue: Sendable, Equatable {
    case text(String)
    case real(Double)
    case integer(Int64)
    case null

    init(_ s: String?) { self = s.map { .text($0) } ?? .null }
    init(_ d: Double?) { self = d.map { .real($0) } ?? .null }
    init(_ i: Int64?) { self = i.map { .integer($0) } ?? .null }
    init(_ b: Bool?) { self = b.map { .integer($0 ? 1 : 0) } ?? .null }
}

/// SQL with `?` for each parameter, and the parameters. Both catalogues take the same
/// fragments; PostgreSQL's numbered placeholders are made from the `?`s at the end, which is
/// sound because no SQL text here ever holds a `?` of its own: every value is a parameter.
public struct SQLFragment: Sendable, Equatable {
    public var sql: String
    public var binds: [SQLValue]

    public init(_ sql: String, _ binds: [SQLValue] = []) {
        self.sql = sql
        self.binds = binds
    }

    /// `$1, $2, …` in place of the `?`s, for PostgreSQL.
    public var numbered: String {
        var n = 0
        var out = ""
        for c in sql {
            if c == "?" {
                n += 1
                out += "$\(n)"
            } else {
                out.append(c)
            }
        }
        return out
    }

    static func + (l: SQLFragment, r: SQLFragment) -> SQLFragment { SQLFragment(l.sql + r.sql, l.binds + r.binds) }
}

extension RunFilter {
    /// The operands of the AND (or OR) chain this node heads, left to right.
    func chain(and: Bool) -> [RunFilter] {
        var out: [RunFilter] = []
        var pending: [RunFilter] = [self]
        while let f = pending.popLast() {
            switch (f, and) {
            case (.and(let l, let r), true), (.or(let l, let r), false): pending += [r, l]
            default: out.append(f)
            }
        }
        return out
    }

    /// The condition on `runs` this filter means, with every value bound.
    public var sql: SQLFragment {
        switch self {
        // A chain of ANDs (or ORs) is one flat group: nested pairwise, 150 conditions would be
        // 150 parentheses deep, past SQLite's parser stack.
        case .and, .or:
            let isAnd: Bool
            if case .and = self { isAnd = true } else { isAnd = false }
            let parts = chain(and: isAnd).map(\.sql)
            var out = SQLFragment("(")
            for (i, p) in parts.enumerated() { out = out + (i == 0 ? p : SQLFragment(isAnd ? " AND " : " OR ") + p) }
            return out + SQLFragment(")")
        case .not(let f): return SQLFragment("(NOT ") + f.sql + SQLFragment(")")
        case .compare(let field, let op, let value):
            let bound: SQLValue
            switch value {
            case .number(let d): bound = .real(d)
            case .text(let s): bound = .text(s)
            }
            // Column names come from Field's fixed table, operators from Comparison's cases.
            let sqlOp = op == .notEqual ? "<>" : op.rawValue
            switch field {
            case .text(let c), .time(let c), .number(let c), .flag(let c):
                return SQLFragment("(runs.\(c) IS NOT NULL AND runs.\(c) \(sqlOp) ?)", [bound])
            case .figure(let name):
                return SQLFragment("runs.uid IN (SELECT uid FROM run_figures WHERE name = ? AND value \(sqlOp) ?)", [.text(name), bound])
            case .tag, .driver, .node, .device:
                let (table, column) = field == .tag ? ("run_tags", "tag") : ("run_devices", field == .driver ? "driver" : field == .node ? "node" : "device")
                let membership = "runs.uid \(op == .equal ? "IN" : "NOT IN") (SELECT uid FROM \(table) WHERE \(column) = ?)"
                return SQLFragment(membership, [bound])
            }
        }
    }
}

/// What `herald runs` asks for: its options, each a condition, all of which must hold.
public struct RunQuery: Sendable, Equatable {
    public var since: Date?
    public var until: Date?
    /// The script's name, or the end of its path.
    public var script: String?
    public var sample: String?
    public var tag: String?
    public var status: String?
    public var filter: RunFilter?
    /// Newest first, at most this many (nil: all).
    public var limit: Int?

    public init(
        since: Date? = nil, until: Date? = nil, script: String? = nil, sample: String? = nil, tag: String? = nil, status: String? = nil,
        filter: RunFilter? = nil, limit: Int? = nil
    ) {
        self.since = since
        self.until = until
        self.script = script
        self.sample = sample
        self.tag = tag
        self.status = status
        self.filter = filter
        self.limit = limit
    }

    /// The WHERE clause (or nothing), every value bound.
    public var condition: SQLFragment {
        var parts: [SQLFragment] = []
        if let since { parts.append(SQLFragment("runs.started_at >= ?", [.real(since.timeIntervalSince1970)])) }
        if let until { parts.append(SQLFragment("runs.started_at < ?", [.real(until.timeIntervalSince1970)])) }
        if let script {
            // The name as written, or the path's last component with or without .yaml.
            parts.append(SQLFragment("(runs.name = ? OR runs.script_name = ? OR runs.script_name = ?)", [.text(script), .text(script), .text(script + ".yaml")]))
        }
        if let sample { parts.append(SQLFragment("runs.sample = ?", [.text(sample)])) }
        if let tag { parts.append(SQLFragment("runs.uid IN (SELECT uid FROM run_tags WHERE tag = ?)", [.text(tag)])) }
        if let status { parts.append(SQLFragment("runs.status = ?", [.text(status)])) }
        if let filter { parts.append(filter.sql) }
        guard !parts.isEmpty else { return SQLFragment("") }
        return parts.dropFirst().reduce(SQLFragment(" WHERE ") + parts[0]) { $0 + SQLFragment(" AND ") + $1 }
    }
}
