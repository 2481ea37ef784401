import Foundation
import GRDB
import Logging
import PostgresNIO

/// What the catalogue needs of a database: run the migrations, run statements in one
/// transaction, select rows. One thin wrapper per library (GRDB, postgres-nio).
protocol CatalogueBackend: Sendable {
    /// Applies the migrations not yet applied. Safe when several processes start at once.
    func migrate() async throws
    func transaction(_ statements: [SQLFragment]) async throws
    func select(_ query: SQLFragment, columns: [SQLColumnKind]) async throws -> [[SQLValue]]
    func close() async
}

/// The embedded default: a SQLite file through GRDB, in WAL mode so `herald runs` reads while
/// runs write, with a busy timeout so two runs registering at once wait for each other.
final class SQLiteBackend: CatalogueBackend {
    let pool: DatabasePool

    init(path: String) throws {
        try FileManager.default.createDirectory(
            at: URL(fileURLWithPath: path).deletingLastPathComponent(), withIntermediateDirectories: true)
        var config = Configuration()
        config.busyMode = .timeout(10)
        config.foreignKeysEnabled = true
        pool = try DatabasePool(path: path, configuration: config)
    }

    /// Opens the file on a thread of its own: opening and migrating wait for other processes'
    /// locks (up to the busy timeout), which must not hold one of the runner's few pool threads.
    static func open(path: String) async throws -> SQLiteBackend {
        try await offPool { try SQLiteBackend(path: path) }
    }

    func migrate() async throws {
        var migrator = DatabaseMigrator()
        for m in CatalogueSchema.migrations {
            let statements = m.statements
            migrator.registerMigration(m.id) { db in for s in statements { try db.execute(sql: s) } }
        }
        // GRDB's migrator runs each migration in an immediate transaction: a second process
        // waits, then finds it applied. It is synchronous, so it runs off the pool too.
        let pool = self.pool, ready = migrator
        try await offPool { try ready.migrate(pool) }
    }

    static func arguments(_ binds: [SQLValue]) -> StatementArguments {
        StatementArguments(
            binds.map { b -> DatabaseValue in
                switch b {
                case .text(let s): return s.databaseValue
                case .real(let d): return d.databaseValue
                case .integer(let i): return i.databaseValue
                case .null: return .null
                }
            })
    }

    func transaction(_ statements: [SQLFragment]) async throws {
        let prepared = statements.map { ($0.sql, Self.arguments($0.binds)) }
        try await pool.write { db in
            for (sql, args) in prepared { try db.execute(sql: sql, arguments: args) }
        }
    }

    func select(_ query: SQLFragment, columns: [SQLColumnKind]) async throws -> [[SQLValue]] {
        let sql = query.sql, args = Self.arguments(query.binds)
        return try await pool.read { db in
            try Row.fetchAll(db, sql: sql, arguments: args).map { row in
                columns.indices.map { i -> SQLValue in
                    switch row[i] as DatabaseValue? {
                    case .none: return .null
                    case .some(let v):
                        switch v.storage {
                        case .null: return .null
                        case .int64(let n): return columns[i] == .real ? .real(Double(n)) : .integer(n)
                        case .double(let d): return columns[i] == .integer ? .integer(Int64(d)) : .real(d)
                        case .string(let s): return .text(s)
                        case .blob: return .null
                        }
                    }
                }
            }
        }
    }

    func close() async { try? pool.close() }
}

/// Whether `error` is the database's own answer (a statement refused) rather than a failure to
/// reach it: SQLite's busy, locked, I/O, permission and open errors are the latter, as is any
/// PostgreSQL error that did not come from the server.
func backendAnswered(_ error: any Error) -> Bool {
    if let e = error as? DatabaseError {
        let unreachable: [ResultCode] = [.SQLITE_BUSY, .SQLITE_LOCKED, .SQLITE_CANTOPEN, .SQLITE_IOERR, .SQLITE_PERM, .SQLITE_READONLY, .SQLITE_FULL, .SQLITE_NOTADB, .SQLITE_CORRUPT]
        return !unreachable.contains(e.resultCode.primaryResultCode)
    }
    if let e = error as? PSQLError { return e.code == .server }
    return false
}

/// Runs blocking work on a thread of its own and awaits it.
func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// A lab-wide catalogue on PostgreSQL (postgres-nio). Every call is bounded in time: a server
/// that is down or unreachable fails the call (the run spools its record) instead of waiting.
final class PostgresBackend: CatalogueBackend {
    let client: PostgresClient
    let runner: Task<Void, Never>
    let logger: Logger
    let timeout: Duration

    init(_ location: CatalogueLocation.Postgres, timeout: Duration = .seconds(5)) {
        var config = PostgresClient.Configuration(
            host: location.host, port: location.port, username: location.user, password: location.password,
            database: location.database, tls: .disable)
        config.options.connectTimeout = .seconds(3)
        config.options.keepAliveBehavior = nil
        var logger = Logger(label: "herald.catalogue")
        logger.logLevel = .critical
        self.logger = logger
        let client = PostgresClient(configuration: config, backgroundLogger: logger)
        self.client = client
        self.timeout = timeout
        runner = Task { await client.run() }
    }

    /// `body`, or an error after the timeout (cancelling the wait for a connection).
    func bounded<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = self.timeout
        return try await withThrowingTaskGroup(of: T?.self) { group in
            group.addTask { try await body() }
            group.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { group.cancelAll() }
            guard let first = try await group.next(), let value = first else {
                throw CatalogueError.unreachable("PostgreSQL did not answer \(what) within \(timeout)")
            }
            return value
        }
    }

    static func bindings(_ binds: [SQLValue]) -> PostgresBindings {
        var b = PostgresBindings(capacity: binds.count)
        for v in binds {
            switch v {
            case .text(let s): b.append(s)
            case .real(let d): b.append(d)
            case .integer(let i): b.append(i)
            case .null: b.appendNull()
            }
        }
        return b
    }

    func migrate() async throws {
        let logger = self.logger, client = self.client
        try await bounded("the migrations") {
            try await client.withTransaction(logger: logger) { conn in
                // One migrating process at a time: the others wait here, then find the work done.
                try await conn.query("SELECT pg_advisory_xact_lock(7261034)", logger: logger)
                try await conn.query(
                    "CREATE TABLE IF NOT EXISTS herald_migrations (id TEXT PRIMARY KEY, applied_at DOUBLE PRECISION NOT NULL)", logger: logger)
                var applied: Set<String> = []
                for try await (id) in try await conn.query("SELECT id FROM herald_migrations", logger: logger).decode(String.self) {
                    applied.insert(id)
                }
                for m in CatalogueSchema.migrations where !applied.contains(m.id) {
                    for s in m.statements { try await conn.query(PostgresQuery(unsafeSQL: s), logger: logger) }
                    var b = PostgresBindings()
                    b.append(m.id)
                    b.append(Date().timeIntervalSince1970)
                    try await conn.query(PostgresQuery(unsafeSQL: "INSERT INTO herald_migrations (id, applied_at) VALUES ($1, $2)", binds: b), logger: logger)
                }
            }
        }
    }

    func transaction(_ statements: [SQLFragment]) async throws {
        let logger = self.logger, client = self.client
        let queries = statements.map { PostgresQuery(unsafeSQL: $0.numbered, binds: Self.bindings($0.binds)) }
        try await bounded("a write") {
            try await client.withTransaction(logger: logger) { conn in
                for q in queries { try await conn.query(q, logger: logger) }
            }
        }
    }

    func select(_ query: SQLFragment, columns: [SQLColumnKind]) async throws -> [[SQLValue]] {
        let client = self.client
        let q = PostgresQuery(unsafeSQL: query.numbered, binds: Self.bindings(query.binds))
        return try await bounded("a query") {
            var out: [[SQLValue]] = []
            for try await row in try await client.query(q) {
                let cells = Array(row)
                out.append(
                    try columns.indices.map { i -> SQLValue in
                        guard i < cells.count else { return .null }
                        switch columns[i] {
                        case .text: return SQLValue(try cells[i].decode(String?.self))
                        case .real: return SQLValue(try cells[i].decode(Double?.self))
                        case .integer: return SQLValue(try cells[i].decode(Int64?.self))
                        }
                    })
            }
            return out
        }
    }

    func close() async {
        runner.cancel()
        await runner.value
    }
}
