/// The catalogue's tables, as migrations: each runs once, in order, on SQLite and on
/// PostgreSQL alike (the SQL is the subset both speak). Add a migration; never edit one
/// that has shipped, since catalogues in labs have already applied it.
///
/// - `runs`: one row per run, keyed by its uid. Times are seconds since 1970 (UTC).
/// - `run_tags`, `run_devices`, `run_figures`: what a run has several of. `run_figures` holds
///   every scalar value of every analysis entry, so `--where 'fidelity > 0.9'` is an index lookup.
enum CatalogueSchema {
    struct Migration {
        var id: String
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(
            id: "1-runs",
            statements: [
                """
                CREATE TABLE runs (
                    uid TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    script_path TEXT NOT NULL,
                    script_name TEXT NOT NULL,
                    script_revision TEXT,
                    script_dirty INTEGER,
                    description TEXT NOT NULL DEFAULT '',
                    operator TEXT,
                    sample TEXT,
                    parameters TEXT NOT NULL DEFAULT '{}',
                    overrides TEXT NOT NULL DEFAULT '{}',
                    nodes TEXT NOT NULL DEFAULT '[]',
                    host TEXT,
                    pid BIGINT,
                    herald_version TEXT NOT NULL DEFAULT '',
                    mock INTEGER NOT NULL DEFAULT 0,
                    started_at DOUBLE PRECISION NOT NULL,
                    stopped_at DOUBLE PRECISION,
                    status TEXT NOT NULL,
                    reason TEXT,
                    file_path TEXT NOT NULL,
                    file_size BIGINT
                )
                """,
                "CREATE INDEX runs_started_at ON runs (started_at)",
                "CREATE INDEX runs_name ON runs (name)",
                "CREATE INDEX runs_sample ON runs (sample)",
                "CREATE TABLE run_tags (uid TEXT NOT NULL REFERENCES runs (uid) ON DELETE CASCADE, tag TEXT NOT NULL, PRIMARY KEY (uid, tag))",
                "CREATE INDEX run_tags_tag ON run_tags (tag)",
                """
                CREATE TABLE run_devices (
                    uid TEXT NOT NULL REFERENCES runs (uid) ON DELETE CASCADE, device TEXT NOT NULL, driver TEXT NOT NULL, node TEXT,
                    PRIMARY KEY (uid, device))
                """,
                """
                CREATE TABLE run_figures (
                    uid TEXT NOT NULL REFERENCES runs (uid) ON DELETE CASCADE, entry TEXT NOT NULL, analysis TEXT NOT NULL,
                    name TEXT NOT NULL, value DOUBLE PRECISION NOT NULL, error DOUBLE PRECISION, PRIMARY KEY (uid, entry, name))
                """,
                "CREATE INDEX run_figures_name_value ON run_figures (name, value)",
            ]),
    ]

    /// The columns of `runs`, in the order the queries select them.
    static let runColumns: [(name: String, kind: SQLColumnKind)] = [
        ("uid", .text), ("name", .text), ("script_path", .text), ("script_revision", .text), ("script_dirty", .integer),
        ("description", .text), ("operator", .text), ("sample", .text), ("parameters", .text), ("overrides", .text),
        ("nodes", .text), ("host", .text), ("pid", .integer), ("herald_version", .text), ("mock", .integer),
        ("started_at", .real), ("stopped_at", .real), ("status", .text), ("reason", .text), ("file_path", .text),
        ("file_size", .integer),
    ]
}

/// How a selected column is read back.
public enum SQLColumnKind: Sendable {
    case text, real, integer
}
