import ArgumentParser
import Foundation
import HeraldCatalogue
import HeraldCore

/// `--catalogue`: which run catalogue a command uses.
struct CatalogueOptions: ParsableArguments {
    @Option(
        help: ArgumentHelp(
            "The run catalogue: a SQLite file, postgres://USER@HOST[:PORT]/DATABASE for a lab-wide one, or off (default: $HERALD_CATALOGUE, else catalogue.sqlite in Herald's data folder).",
            valueName: "location"))
    var catalogue: String?

    var location: CatalogueLocation {
        get throws {
            do { return try CatalogueLocation.configured(catalogue) } catch { throw ValidationError("\(error)") }
        }
    }

    func validate() throws { _ = try location }

    /// Opens the catalogue and sends it the records that were waiting for it.
    func open() async throws -> RunCatalogue {
        let location = try self.location
        guard location != .off else { throw ValidationError("the run catalogue is off (--catalogue or HERALD_CATALOGUE); set it to a SQLite file or a postgres:// URL") }
        let catalogue: RunCatalogue
        do { catalogue = try await RunCatalogue.open(location) } catch { throw CatalogueFailure(message: "\(error)") }
        do {
            let (sent, problems) = try await PendingRecords().flush(into: catalogue)
            if sent > 0 { FileHandle.standardError.write(Data("catalogue: \(sent) record\(sent == 1 ? "" : "s") kept while it was unreachable now written\n".utf8)) }
            for p in problems { FileHandle.standardError.write(Data("catalogue: \(p)\n".utf8)) }
        } catch {
            FileHandle.standardError.write(Data("catalogue: waiting records not written yet: \(error)\n".utf8))
        }
        return catalogue
    }

    /// Each argument as a file: itself if it is one, else the file of the run whose uid it is (or starts).
    func resolve(_ items: [String]) async throws -> [String] {
        var out: [String] = []
        var catalogue: RunCatalogue?
        defer { if let catalogue { Task { await catalogue.close() } } }
        for item in items {
            if FileManager.default.fileExists(atPath: item) || item.hasSuffix(".h5") || item.contains("/") {
                out.append(item)
                continue
            }
            if catalogue == nil { catalogue = try await open() }
            guard let c = catalogue else { continue }
            do { out.append(try await c.run(item).filePath) } catch { throw CatalogueFailure(message: "\(item): \(error)") }
        }
        return out
    }
}

struct CatalogueFailure: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

struct Runs: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Find past runs in the run catalogue.",
        discussion: """
            Every run is registered when it starts and updated when it stops (status, file, size and every \
            analysis figure). A run killed before it stopped shows as incomplete until `herald recover` closes \
            its file. See docs/catalogue.md.
            """,
        subcommands: [List.self, Show.self], defaultSubcommand: List.self)

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List runs, newest first.",
            discussion: """
                --where takes conditions joined by and, or, not and parentheses: FIELD OP VALUE with OP one of \
                = != < <= > >=. Fields: any analysis figure (fidelity, concurrence, S, g2_0, herald_rate, …), \
                name, sample, operator, status, host, revision, uid, started, stopped, size, dirty, mock, tag, \
                driver, node, device. Values are numbers, words, 'quoted text', dates (2026-11-01, \
                2026-11-01T14:30) or ages (7d). Example: --where "fidelity > 0.9 and sample = 'NV-7'".
                """)

        @OptionGroup var catalogue: CatalogueOptions
        @Option(help: "Runs started since: a date (2026-11-01), a time (2026-11-01T14:30) or an age (24h, 7d).") var since: String?
        @Option(help: "Runs of this script (its name, or its file name).") var script: String?
        @Option(help: "Runs on this sample.") var sample: String?
        @Option(help: "Runs with this tag.") var tag: String?
        @Option(help: "Runs that ended so: success, failed, aborted, incomplete, running.") var status: String?
        @Option(name: .customLong("where"), help: "A condition on the runs' figures and fields, e.g. 'fidelity > 0.9'.") var condition: String?
        @Option(help: "At most this many (0: all).") var limit: Int = 50
        @Flag(help: "Print JSON.") var json = false

        func query() throws -> RunQuery {
            var q = RunQuery(script: script, sample: sample, tag: tag, limit: limit > 0 ? limit : nil)
            if let since {
                guard let d = CatalogueTime.parse(since) else { throw ValidationError("--since takes a date like 2026-11-01, a time like 2026-11-01T14:30, or an age like 7d; got '\(since)'") }
                q.since = d
            }
            if let status {
                guard CatalogueRecord.Status(rawValue: status) != nil else {
                    throw ValidationError("--status is one of \(CatalogueRecord.Status.allCases.map(\.rawValue).joined(separator: ", ")); got '\(status)'")
                }
                q.status = status
            }
            if let condition {
                do { q.filter = try RunFilter.parse(condition) } catch { throw ValidationError("\(error)\n  \(condition)\n  \(String(repeating: " ", count: max(0, error.column - 1)))^") }
            }
            guard limit >= 0 else { throw ValidationError("--limit is 0 (all) or more") }
            return q
        }

        func validate() throws { _ = try query() }

        func run() async throws {
            let q = try query()
            let c = try await catalogue.open()
            let runs: [CatalogueRecord]
            let total: Int
            do {
                runs = try await c.runs(q)
                total = runs.count < (q.limit ?? Int.max) ? runs.count : try await c.count(q)
            } catch {
                await c.close()
                throw CatalogueFailure(message: "\(error)")
            }
            await c.close()
            if json { return try printJSON(runs.map(RunJSON.init)) }
            guard !runs.isEmpty else {
                print("no runs match in \(c.location)")
                return
            }
            let f = DateFormatter()
            f.dateFormat = "yyyy-MM-dd HH:mm"
            f.locale = Locale(identifier: "en_US_POSIX")
            var rows = [["uid", "started", "script", "sample", "status", "figures", "file"]]
            for r in runs {
                rows.append([
                    String(r.uid.prefix(8)), f.string(from: r.startedAt), r.name, r.sample ?? "", r.displayStatus, headline(r),
                    (r.filePath as NSString).lastPathComponent,
                ])
            }
            let widths = rows[0].indices.map { i in rows.map { $0[i].count }.max() ?? 0 }
            for row in rows {
                print(row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }.joined(separator: "  "))
            }
            if total > runs.count { print("(\(runs.count) of \(total) runs; --limit 0 lists all)") }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show one run: its script, parameters, devices, status, file and figures.")
        @OptionGroup var catalogue: CatalogueOptions
        @Argument(help: "The run's uid, or its first characters (at least 4).") var uid: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            let c = try await catalogue.open()
            let r: CatalogueRecord
            do { r = try await c.run(uid) } catch {
                await c.close()
                throw CatalogueFailure(message: "\(error)")
            }
            await c.close()
            if json { return try printJSON(RunJSON(r)) }
            let iso = ISO8601DateFormatter()
            print("run \(r.uid)")
            print("  script:     \(r.name) (\(r.scriptPath))" + (r.scriptRevision.map { " at \($0)\(r.scriptDirty == true ? " with local changes" : "")" } ?? ""))
            if !r.description.isEmpty { print("  about:      \(r.description)") }
            print("  status:     \(r.displayStatus)" + (r.reason.map { $0.isEmpty ? "" : " (\($0))" } ?? ""))
            print("  started:    \(iso.string(from: r.startedAt))" + (r.stoppedAt.map { ", stopped \(iso.string(from: $0))" } ?? ""))
            print("  file:       \(r.filePath)" + (r.fileSize.map { " (\(ByteCountFormatter.string(fromByteCount: $0, countStyle: .file)))" } ?? ""))
            if let o = r.operatorName { print("  operator:   \(o)") }
            if let s = r.sample { print("  sample:     \(s)") }
            if !r.tags.isEmpty { print("  tags:       \(r.tags.joined(separator: ", "))") }
            print("  host:       \(r.host ?? "?")\(r.mock ? " (simulated lab)" : ""), herald \(r.heraldVersion)")
            if !r.nodes.isEmpty { print("  nodes:      \(r.nodes.joined(separator: ", "))") }
            if !r.parameters.isEmpty {
                print("  parameters: " + r.parameters.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)\(r.overrides[$0.key] != nil ? " (--set)" : "")" }.joined(separator: ", "))
            }
            for d in r.devices { print("  device:     \(d.name): \(d.driver)\(d.node.map { " on \($0)" } ?? "")") }
            var entry = ""
            for f in r.figures {
                if f.entry != entry {
                    entry = f.entry
                    print("  \(f.entry):")
                }
                let unit = Figure(key: f.name)?.unit() ?? "1"
                print("    \(f.name): \(Display.measured(f.value, f.error, unit: unit))")
            }
        }
    }
}

/// The figures `herald runs` shows in its table: the first of these each run has.
func headline(_ r: CatalogueRecord) -> String {
    let keys = ["fidelity", "concurrence", "S", "g2_0", "herald_rate", "g2_at_zero", "peak_position"]
    return keys.compactMap { k in r.figure(k).map { "\(k) \(Display.measured($0.value, $0.error, unit: Figure(key: k)?.unit() ?? "1"))" } }
        .prefix(3).joined(separator: ", ")
}

/// A run as `--json` prints it: times as ISO 8601, the status as shown.
struct RunJSON: Encodable {
    var uid, name, scriptPath, status, startedAt, filePath: String
    var scriptRevision: String?
    var scriptDirty: Bool?
    var description: String
    var operatorName, sample, stoppedAt, reason, host: String?
    var tags: [String]
    var parameters, overrides: [String: String]
    var nodes: [String]
    var devices: [CatalogueRecord.DeviceEntry]
    var fileSize: Int64?
    var figures: [CatalogueRecord.FigureEntry]
    var mock: Bool
    var heraldVersion: String

    init(_ r: CatalogueRecord) {
        let iso = ISO8601DateFormatter()
        uid = r.uid
        name = r.name
        scriptPath = r.scriptPath
        status = r.displayStatus
        startedAt = iso.string(from: r.startedAt)
        filePath = r.filePath
        scriptRevision = r.scriptRevision
        scriptDirty = r.scriptDirty
        description = r.description
        operatorName = r.operatorName
        sample = r.sample
        stoppedAt = r.stoppedAt.map { iso.string(from: $0) }
        reason = r.reason
        host = r.host
        tags = r.tags
        parameters = r.parameters
        overrides = r.overrides
        nodes = r.nodes
        devices = r.devices
        fileSize = r.fileSize
        figures = r.figures
        mock = r.mock
        heraldVersion = r.heraldVersion
    }
}

struct CatalogueCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "catalogue", abstract: "Look after the run catalogue: where it is, and rebuilding it from the files.",
        subcommands: [Rebuild.self, Info.self])

    struct Rebuild: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Index every Herald run file under a folder, replacing what the catalogue held for those runs.",
            discussion: "The files are the record of truth: a lost or stale catalogue is made again from them. Files a crash left unreadable are listed; `herald recover` them first.")
        @OptionGroup var catalogue: CatalogueOptions
        @Argument(help: "The folder of run files (searched recursively).") var directory: String
        @Flag(help: "Print JSON.") var json = false

        func run() async throws {
            var isDir: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDir), isDir.boolValue else {
                throw ValidationError("\(directory) is not a folder")
            }
            let c = try await catalogue.open()
            let report: RunCatalogue.RebuildReport
            do { report = try await c.rebuild(directory) } catch {
                await c.close()
                throw CatalogueFailure(message: "\(error)")
            }
            await c.close()
            if json { return try printJSON(report) }
            print("indexed \(report.indexed.count) run file\(report.indexed.count == 1 ? "" : "s") from \(directory) into \(c.location)")
            for (path, why) in report.skipped.sorted(by: { $0.key < $1.key }) { print("  skipped \(path): \(why)") }
        }
    }

    struct Info: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Where the catalogue is, how many runs it holds, and how many records wait for it.")
        @OptionGroup var catalogue: CatalogueOptions

        func run() async throws {
            let location = try catalogue.location
            print("catalogue: \(location)")
            guard location != .off else { return }
            print("waiting records: \(PendingRecords().count(for: location))")
            let c = try await catalogue.open()
            let n = try await c.count(RunQuery())
            await c.close()
            print("runs: \(n)")
        }
    }
}
