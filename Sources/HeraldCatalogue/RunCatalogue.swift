import Foundation

/// Why the catalogue could not do what was asked.
public enum CatalogueError: Error, CustomStringConvertible, Sendable, Equatable {
    /// The setting is not a catalogue Herald can open.
    case badLocation(String)
    /// The database could not be reached or used (down, connection refused, locked, unwritable).
    case unreachable(String)
    /// The database answered, with an error of its own (a statement it would not run).
    case refused(String)
    case noSuchRun(String)
    case ambiguous(String, [String])

    public var description: String {
        switch self {
        case .badLocation(let s): return s
        case .unreachable(let s): return "the run catalogue cannot be reached: \(s)"
        case .refused(let s): return "the run catalogue refused the request: \(s)"
        case .noSuchRun(let uid): return "no run '\(uid)' in the catalogue; `herald runs` lists them, `herald catalogue rebuild DIR` indexes files"
        case .ambiguous(let p, let uids): return "'\(p)' is the start of \(uids.count) runs (\(uids.prefix(4).joined(separator: ", "))…): give more of the uid"
        }
    }
}

/// Where the catalogue is: `HERALD_CATALOGUE` or `--catalogue`, as a path (SQLite), a
/// `postgres://user[:password]@host[:port]/database` URL, or `off`.
public enum CatalogueLocation: Sendable, Equatable, CustomStringConvertible {
    case sqlite(path: String)
    case postgres(Postgres)
    case off

    public struct Postgres: Sendable, Equatable {
        public var host: String
        public var port: Int
        public var user: String
        public var password: String?
        public var database: String
    }

    /// Herald's data folder: `HERALD_DATA_DIR`, else `$XDG_DATA_HOME/herald`, else `~/.local/share/herald`.
    public static func dataDirectory(_ env: [String: String] = ProcessInfo.processInfo.environment) -> String {
        if let d = env["HERALD_DATA_DIR"], !d.isEmpty { return d }
        if let x = env["XDG_DATA_HOME"], !x.isEmpty { return x + "/herald" }
        return (env["HOME"] ?? NSHomeDirectory()) + "/.local/share/herald"
    }

    /// The catalogue `--catalogue` (or, without it, `HERALD_CATALOGUE`) names; the SQLite file in the data folder by default.
    public static func configured(_ option: String? = nil, env: [String: String] = ProcessInfo.processInfo.environment) throws(CatalogueError) -> CatalogueLocation {
        if let text = option ?? env["HERALD_CATALOGUE"], !text.isEmpty { return try parse(text) }
        return .sqlite(path: dataDirectory(env) + "/catalogue.sqlite")
    }

    public static func parse(_ text: String) throws(CatalogueError) -> CatalogueLocation {
        if text == "off" || text == "none" { return .off }
        if text.hasPrefix("postgres://") || text.hasPrefix("postgresql://") {
            guard let url = URLComponents(string: text), let host = url.host, !host.isEmpty else {
                throw .badLocation("'\(text)' is not a PostgreSQL URL like postgres://herald@db.lab:5432/herald")
            }
            let database = String(url.path.drop { $0 == "/" })
            guard !database.isEmpty else { throw .badLocation("'\(text)' names no database: end it with /DATABASE, e.g. /herald") }
            return .postgres(Postgres(
                host: host, port: url.port ?? 5432, user: url.user ?? ProcessInfo.processInfo.environment["USER"] ?? "herald",
                password: url.password ?? ProcessInfo.processInfo.environment["PGPASSWORD"], database: database))
        }
        if text.contains("://") { throw .badLocation("'\(text)': a catalogue is a SQLite file path, a postgres:// URL, or off") }
        return .sqlite(path: text.hasPrefix("sqlite:") ? String(text.dropFirst(7)) : text)
    }

    /// As shown to users: the password left out.
    public var description: String {
        switch self {
        case .sqlite(let p): return p
        case .postgres(let p): return "postgres://\(p.user)@\(p.host):\(p.port)/\(p.database)"
        case .off: return "off"
        }
    }
}

/// The index of runs: register, update, query. The HDF5 files stay the record of truth.
public struct RunCatalogue: Sendable {
    let backend: any CatalogueBackend
    public let location: CatalogueLocation

    /// Opens (and migrates) the catalogue at `location`.
    public static func open(_ location: CatalogueLocation) async throws -> RunCatalogue {
        let backend: any CatalogueBackend
        switch location {
        case .off: throw CatalogueError.badLocation("the catalogue is off (HERALD_CATALOGUE=off)")
        case .sqlite(let path): backend = try await SQLiteBackend.open(path: path)
        case .postgres(let p): backend = PostgresBackend(p)
        }
        do {
            try await backend.migrate()
        } catch {
            await backend.close()
            throw Self.unreachable(error, location)
        }
        return RunCatalogue(backend: backend, location: location)
    }

    /// The error as callers branch on it: a database that answered with an error is `refused`
    /// (retrying later will not help), anything else `unreachable` (the record waits for it).
    static func unreachable(_ error: any Error, _ location: CatalogueLocation) -> CatalogueError {
        if let e = error as? CatalogueError { return e }
        let text = "\(location): \(String(describing: error).prefix(300))"
        return backendAnswered(error) ? .refused(text) : .unreachable(text)
    }

    public func close() async { await backend.close() }

    /// Registers or updates a run: its row and everything it has several of, in one transaction.
    public func save(_ r: CatalogueRecord) async throws { try await save([r]) }

    /// Registers or updates several runs in one transaction (a rebuild, a benchmark).
    public func save(_ records: [CatalogueRecord]) async throws {
        let statements = Self.statements(records)
        do { try await backend.transaction(statements) } catch { throw Self.unreachable(error, location) }
    }

    /// Refreshes the query planner's statistics (`ANALYZE`, on either database). After many
    /// runs arrive at once (a rebuild), a planner still using the statistics of an empty
    /// catalogue picks slow plans: 60 ms instead of 10 for a filtered query on PostgreSQL.
    public func refreshStatistics() async throws {
        do { try await backend.transaction([SQLFragment("ANALYZE")]) } catch { throw Self.unreachable(error, location) }
    }

    /// Rows per multi-row statement: 1000 runs of 22 columns stay under SQLite's 32 766 bound
    /// parameters and PostgreSQL's 65 535.
    static let rowsPerStatement = 1000

    /// The statements that write `records`: one upsert of their rows, then their tags, devices
    /// and figures replaced, each table as a few multi-row statements rather than a statement a
    /// row (on PostgreSQL every statement is a round trip). A uid given twice keeps its last record.
    static func statements(_ records: [CatalogueRecord]) -> [SQLFragment] {
        func json<T: Encodable>(_ v: T) -> String {
            let e = JSONEncoder()
            e.outputFormatting = [.sortedKeys]
            return (try? e.encode(v)).flatMap { String(data: $0, encoding: .utf8) } ?? "{}"
        }
        var latest: [String: Int] = [:]
        for (i, r) in records.enumerated() { latest[r.uid] = i }
        let unique = records.enumerated().filter { latest[$0.element.uid] == $0.offset }.map(\.element)
        guard !unique.isEmpty else { return [] }

        /// `INSERT INTO table (columns) VALUES (…), (…)` for `rows`, in chunks, with `suffix`.
        func inserts(_ table: String, _ columns: [String], _ rows: [[SQLValue]], suffix: String = "") -> [SQLFragment] {
            let tuple = "(" + Array(repeating: "?", count: columns.count).joined(separator: ", ") + ")"
            return stride(from: 0, to: rows.count, by: rowsPerStatement).map { start in
                let chunk = rows[start..<min(start + rowsPerStatement, rows.count)]
                return SQLFragment(
                    "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
                        + Array(repeating: tuple, count: chunk.count).joined(separator: ", ") + suffix,
                    chunk.flatMap { $0 })
            }
        }
        let columns = CatalogueSchema.runColumns.map(\.name) + ["script_name"]
        let runRows: [[SQLValue]] = unique.map { r in
            [
                .text(r.uid), .text(r.name), .text(r.scriptPath), SQLValue(r.scriptRevision), SQLValue(r.scriptDirty), .text(r.description),
                SQLValue(r.operatorName), SQLValue(r.sample), .text(json(r.parameters)), .text(json(r.overrides)), .text(json(r.nodes)),
                SQLValue(r.host), SQLValue(r.pid.map(Int64.init)), .text(r.heraldVersion), .integer(r.mock ? 1 : 0),
                .real(r.startedAt.timeIntervalSince1970), SQLValue(r.stoppedAt?.timeIntervalSince1970), .text(r.status.rawValue),
                SQLValue(r.reason), .text(r.filePath), SQLValue(r.fileSize), .text((r.scriptPath as NSString).lastPathComponent),
            ]
        }
        let updates = columns.dropFirst().map { "\($0) = excluded.\($0)" }.joined(separator: ", ")
        var statements = inserts("runs", columns, runRows, suffix: " ON CONFLICT (uid) DO UPDATE SET \(updates)")
        let uids = unique.map { SQLValue.text($0.uid) }
        for table in ["run_tags", "run_devices", "run_figures"] {
            for start in stride(from: 0, to: uids.count, by: rowsPerStatement) {
                let chunk = Array(uids[start..<min(start + rowsPerStatement, uids.count)])
                statements.append(
                    SQLFragment("DELETE FROM \(table) WHERE uid IN (" + Array(repeating: "?", count: chunk.count).joined(separator: ", ") + ")", chunk))
            }
        }
        var tags: [[SQLValue]] = [], devices: [[SQLValue]] = [], figures: [[SQLValue]] = []
        for r in unique {
            for tag in Set(r.tags).sorted() { tags.append([.text(r.uid), .text(tag)]) }
            var seenDevices: Set<String> = []
            for d in r.devices where seenDevices.insert(d.name).inserted {
                devices.append([.text(r.uid), .text(d.name), .text(d.driver), SQLValue(d.node)])
            }
            var seenFigures: Set<String> = []
            for f in r.figures where f.value.isFinite && seenFigures.insert(f.entry + "\u{0}" + f.name).inserted {
                figures.append([.text(r.uid), .text(f.entry), .text(f.analysis), .text(f.name), .real(f.value), SQLValue(f.error.flatMap { $0.isFinite ? $0 : nil })])
            }
        }
        statements += inserts("run_tags", ["uid", "tag"], tags)
        statements += inserts("run_devices", ["uid", "device", "driver", "node"], devices)
        statements += inserts("run_figures", ["uid", "entry", "analysis", "name", "value", "error"], figures)
        return statements
    }

    /// Runs matching `query`, newest first, each with its tags, devices and figures.
    public func runs(_ query: RunQuery) async throws -> [CatalogueRecord] {
        var select = SQLFragment("SELECT \(CatalogueSchema.runColumns.map { "runs." + $0.name }.joined(separator: ", ")) FROM runs")
            + query.condition + SQLFragment(" ORDER BY runs.started_at DESC, runs.uid")
        if let limit = query.limit { select = select + SQLFragment(" LIMIT ?", [.integer(Int64(limit))]) }
        let rows: [[SQLValue]]
        do { rows = try await backend.select(select, columns: CatalogueSchema.runColumns.map(\.kind)) } catch { throw Self.unreachable(error, location) }
        var records = rows.compactMap(Self.record)
        try await attachChildren(&records)
        return records
    }

    /// How many runs match (all of them, whatever the limit).
    public func count(_ query: RunQuery) async throws -> Int {
        var q = query
        q.limit = nil
        let rows = try await backend.select(SQLFragment("SELECT COUNT(*) FROM runs") + q.condition, columns: [.integer])
        if case .integer(let n)? = rows.first?.first { return Int(n) }
        return 0
    }

    /// The run whose uid is `prefix` or starts with it (at least 4 characters).
    public func run(_ prefix: String) async throws -> CatalogueRecord {
        let p = prefix.lowercased()
        guard p.count >= 4, p.allSatisfy({ $0.isHexDigit || $0 == "-" }) else { throw CatalogueError.noSuchRun(prefix) }
        // A prefix match by range, not LIKE: nothing in the uid is read as a pattern.
        let q = SQLFragment(
            "SELECT \(CatalogueSchema.runColumns.map { "runs." + $0.name }.joined(separator: ", ")) FROM runs WHERE lower(uid) >= ? AND lower(uid) < ? ORDER BY uid LIMIT 5",
            [.text(p), .text(p + "\u{10FFFF}")])
        var records = try await backend.select(q, columns: CatalogueSchema.runColumns.map(\.kind)).compactMap(Self.record)
        if let exact = records.first(where: { $0.uid.lowercased() == p }) { records = [exact] }
        guard !records.isEmpty else { throw CatalogueError.noSuchRun(prefix) }
        guard records.count == 1 else { throw CatalogueError.ambiguous(prefix, records.map(\.uid)) }
        try await attachChildren(&records)
        return records[0]
    }

    func attachChildren(_ records: inout [CatalogueRecord]) async throws {
        guard !records.isEmpty else { return }
        var index: [String: Int] = [:]
        for (i, r) in records.enumerated() { index[r.uid] = i }
        // In chunks: PostgreSQL takes at most 65 535 parameters per statement.
        for start in stride(from: 0, to: records.count, by: 500) {
            let uids = records[start..<min(start + 500, records.count)].map { SQLValue.text($0.uid) }
            let list = Array(repeating: "?", count: uids.count).joined(separator: ", ")
            for row in try await backend.select(SQLFragment("SELECT uid, tag FROM run_tags WHERE uid IN (\(list)) ORDER BY tag", uids), columns: [.text, .text]) {
                if case .text(let u) = row[0], case .text(let t) = row[1], let i = index[u] { records[i].tags.append(t) }
            }
            for row in try await backend.select(
                SQLFragment("SELECT uid, device, driver, node FROM run_devices WHERE uid IN (\(list)) ORDER BY device", uids), columns: [.text, .text, .text, .text])
            {
                if case .text(let u) = row[0], case .text(let d) = row[1], case .text(let drv) = row[2], let i = index[u] {
                    var node: String?
                    if case .text(let n) = row[3] { node = n }
                    records[i].devices.append(.init(name: d, driver: drv, node: node))
                }
            }
            for row in try await backend.select(
                SQLFragment("SELECT uid, entry, analysis, name, value, error FROM run_figures WHERE uid IN (\(list)) ORDER BY entry, name", uids),
                columns: [.text, .text, .text, .text, .real, .real])
            {
                if case .text(let u) = row[0], case .text(let e) = row[1], case .text(let a) = row[2], case .text(let n) = row[3],
                    case .real(let v) = row[4], let i = index[u]
                {
                    var err: Double?
                    if case .real(let x) = row[5] { err = x }
                    records[i].figures.append(.init(entry: e, analysis: a, name: n, value: v, error: err))
                }
            }
        }
    }

    static func record(_ row: [SQLValue]) -> CatalogueRecord? {
        func text(_ i: Int) -> String? { if case .text(let s) = row[i] { return s } else { return nil } }
        func real(_ i: Int) -> Double? {
            switch row[i] {
            case .real(let d): return d
            case .integer(let n): return Double(n)
            default: return nil
            }
        }
        func int(_ i: Int) -> Int64? {
            switch row[i] {
            case .integer(let n): return n
            case .real(let d): return Int64(exactly: d.rounded())
            default: return nil
            }
        }
        func decode<T: Decodable>(_ i: Int, _ fallback: T) -> T {
            text(i).flatMap { try? JSONDecoder().decode(T.self, from: Data($0.utf8)) } ?? fallback
        }
        guard row.count == CatalogueSchema.runColumns.count, let uid = text(0), let name = text(1), let path = text(2), let started = real(15),
            let status = text(17).flatMap(CatalogueRecord.Status.init(rawValue:))
        else { return nil }
        var r = CatalogueRecord(uid: uid, name: name, scriptPath: path, startedAt: Date(timeIntervalSince1970: started), status: status, filePath: text(19) ?? "")
        r.scriptRevision = text(3)
        r.scriptDirty = int(4).map { $0 != 0 }
        r.description = text(5) ?? ""
        r.operatorName = text(6)
        r.sample = text(7)
        r.parameters = decode(8, [:])
        r.overrides = decode(9, [:])
        r.nodes = decode(10, [])
        r.host = text(11)
        r.pid = int(12).map { Int($0) }
        r.heraldVersion = text(13) ?? ""
        r.mock = int(14).map { $0 != 0 } ?? false
        r.stoppedAt = real(16).map { Date(timeIntervalSince1970: $0) }
        r.reason = text(18)
        r.fileSize = int(20)
        return r
    }
}
