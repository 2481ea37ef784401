import Foundation
import HeraldCatalogue
import Testing

/// A private PostgreSQL server (Debian's `postgresql` binaries) in a folder of its own, on a
/// free loopback port, that a test can stop and start again. `make test` installs the package.
final class PostgresServer: @unchecked Sendable {
    let directory: URL
    let port: Int
    let bin: String

    init() throws {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        guard let version = versions.compactMap(Int.init).max() else {
            throw CatalogueTestError("no PostgreSQL server binaries under /usr/lib/postgresql: `make test-deps` installs Debian's postgresql")
        }
        bin = "/usr/lib/postgresql/\(version)/bin"
        directory = URL(fileURLWithPath: "/tmp/herald-pg-\(UUID().uuidString.prefix(8))")
        port = InstrumentTransportTests.freePort()
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        // initdb refuses to run as root: the cluster belongs to the postgres user then.
        if getuid() == 0 { _ = try runProcessBlocking("chown", ["postgres:postgres", directory.path]) }
        let r = try asOwner(bin + "/initdb", ["-D", directory.path + "/data", "-A", "trust", "-U", "herald", "--no-sync"])
        guard r.status == 0 else { throw CatalogueTestError("initdb: \(r.stderr)") }
        try start()
        let c = try asOwner(bin + "/createdb", ["-h", "127.0.0.1", "-p", "\(port)", "-U", "herald", "herald"])
        guard c.status == 0 else { throw CatalogueTestError("createdb: \(c.stderr)") }
    }

    /// Runs a server command as the cluster's owner, its output to a file rather than a pipe:
    /// the server it starts inherits the output, and a pipe held by it never ends.
    func asOwner(_ command: String, _ arguments: [String]) throws -> ProcessResult {
        let log = directory.appendingPathComponent("command-\(UUID().uuidString.prefix(6)).log")
        _ = FileManager.default.createFile(atPath: log.path, contents: nil)
        let handle = try FileHandle(forWritingTo: log)
        defer { try? handle.close() }
        let p = Process()
        // Through bash (multi-digit descriptors), closing every descriptor but 0-2 first: the server that pg_ctl
        // starts outlives it, and would otherwise hold the descriptors this test process's
        // children were given (Foundation's own end-of-child socket among them), so their
        // ends would never be seen and their waits would hang.
        let closing = ["/bin/bash", "-c", #"for f in /proc/self/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] 2>/dev/null && eval "exec $n>&-"; done; exec "$0" "$@""#, command]
        p.executableURL = URL(fileURLWithPath: getuid() == 0 ? "/usr/sbin/runuser" : "/bin/bash")
        p.arguments = getuid() == 0 ? ["-u", "postgres", "--"] + closing + arguments : Array(closing.dropFirst()) + arguments
        p.standardInput = FileHandle.nullDevice
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        p.waitUntilExit()
        let text = (try? String(contentsOf: log, encoding: .utf8)) ?? ""
        return ProcessResult(status: p.terminationStatus, stdout: text, stderr: text)
    }

    var location: String { "postgres://herald@127.0.0.1:\(port)/herald" }

    func start() throws {
        let r = try asOwner(
            bin + "/pg_ctl",
            ["-D", directory.path + "/data", "-l", directory.path + "/log", "-w", "-o", "-p \(port) -k \(directory.path) -c listen_addresses=127.0.0.1 -c fsync=off", "start"])
        guard r.status == 0 else { throw CatalogueTestError("pg_ctl start: \(r.stdout)\(r.stderr)") }
    }

    func stop() throws {
        let r = try asOwner(bin + "/pg_ctl", ["-D", directory.path + "/data", "-w", "-m", "immediate", "stop"])
        guard r.status == 0 else { throw CatalogueTestError("pg_ctl stop: \(r.stderr)") }
    }

    func remove() {
        try? stop()
        try? FileManager.default.removeItem(at: directory)
    }
}

struct CatalogueTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The run catalogue, the same suite on the embedded SQLite file and on a real PostgreSQL
/// server: registration by real `herald run` processes, queries, a killed run that `herald
/// recover` closes, rebuilding from a folder of files, two writers at once, a catalogue that
/// goes away mid-run, and injection attempts through `--where` and through metadata.
@Suite(.serialized) struct CatalogueTests {
    enum Backend: String, CaseIterable, CustomTestStringConvertible {
        case sqlite, postgres
        var testDescription: String { rawValue }
    }

    /// A catalogue of one kind in a folder of its own, and `herald` run against it.
    final class Bench: @unchecked Sendable {
        let dir: URL
        let server: PostgresServer?
        let location: String

        init(_ backend: Backend) throws {
            dir = try Paths.temporaryDirectory()
            switch backend {
            case .sqlite:
                server = nil
                location = dir.appendingPathComponent("catalogue.sqlite").path
            case .postgres:
                let s = try PostgresServer()
                server = s
                location = s.location
            }
        }

        /// Made on a thread of its own: initdb and pg_ctl are waited for synchronously.
        static func make(_ backend: Backend) async throws -> Bench {
            try await onThread { try Bench(backend) }
        }

        deinit {
            server?.remove()
            try? FileManager.default.removeItem(at: dir)
        }

        func herald(_ arguments: [String], catalogue: String? = nil) async throws -> ProcessResult {
            try await runProcess("env", ["HERALD_CATALOGUE=\(catalogue ?? location)", "HERALD_DATA_DIR=\(dir.path)/data", Paths.herald.path] + arguments)
        }

        func run(_ script: String, _ name: String, _ extra: [String] = []) async throws -> String {
            let out = dir.appendingPathComponent(name).path
            let r = try await herald(
                ["run", Paths.root.appendingPathComponent("Experiments/\(script)").path, "--mock", "--seed", "3", "--out", out] + extra)
            #expect(r.status == 0, "\(r.stderr)")
            return out
        }

        /// Starts `herald run --mock --realtime ARGUMENTS` against this catalogue and returns
        /// once the run has registered (a readiness wait, not a deadline on how fast), with
        /// the process, its stderr and the runs listed then.
        func startRegistered(_ arguments: [String]) async throws -> (Process, Pipe, [[String: Any]]) {
            let p = Process()
            p.executableURL = Paths.herald
            p.arguments = ["run", "--mock", "--realtime"] + arguments
            p.environment = ProcessInfo.processInfo.environment.merging(["HERALD_CATALOGUE": location, "HERALD_DATA_DIR": dir.path + "/data"]) { _, new in new }
            let err = Pipe()
            p.standardOutput = FileHandle.nullDevice
            p.standardError = err
            try p.run()
            var registered: [[String: Any]] = []
            for _ in 0..<600 where registered.isEmpty {
                try await Task.sleep(for: .milliseconds(100))
                registered = try await runs()
            }
            return (p, err, registered)
        }

        func runs(_ arguments: [String] = []) async throws -> [[String: Any]] {
            let r = try await herald(["runs", "--json", "--limit", "0"] + arguments)
            #expect(r.status == 0, "\(r.stderr)")
            return (try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [[String: Any]]) ?? []
        }
    }

    static func figure(_ run: [String: Any], _ name: String) -> Double? {
        (run["figures"] as? [[String: Any]])?.first { $0["name"] as? String == name }?["value"] as? Double
    }

    /// Each run is registered with what it was and what it gave; the queries find it by them.
    @Test(arguments: Backend.allCases) func runsAreRegisteredAndFoundByWhatTheyWereAndGave(_ backend: Backend) async throws {
        let b = try await Bench.make(backend)
        let bell = try await b.run(
            "bell-tomography.yaml", "bell.h5", ["--set", "integration=50ms", "--meta", "sample=NV-7", "--meta", "operator=Ada", "--meta", "tags=calib,night"])
        _ = try await b.run("delay-calibration.yaml", "delay.h5", ["--set", "integration=50ms"])
        let all = try await b.runs()
        #expect(all.count == 2, "\(all)")
        let r = try #require(all.first { $0["name"] as? String == "bell-tomography" })
        #expect(r["sample"] as? String == "NV-7" && r["operatorName"] as? String == "Ada")
        #expect(r["tags"] as? [String] == ["calib", "night"])
        #expect(r["status"] as? String == "success")
        #expect((r["overrides"] as? [String: String]) == ["integration": "50ms"])
        #expect((r["parameters"] as? [String: String])?["integration"] == "50ms")
        #expect(r["filePath"] as? String == bell)
        let size = try #require(r["fileSize"] as? Int)
        #expect(Int64(size) == (try FileManager.default.attributesOfItem(atPath: bell)[.size] as? NSNumber)?.int64Value)
        #expect((r["devices"] as? [[String: Any]])?.count == 6)
        // The figures are the file's own analysis values.
        let fidelity = try #require(Self.figure(r, "fidelity"))
        let inFile = try await runProcess(Paths.python, ["-c", "import h5py,sys; print(h5py.File(sys.argv[1])['user/herald/analysis/000_tomography/values/fidelity'][()])", bell])
        #expect(abs(fidelity - (Double(inFile.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1)) < 1e-12, "\(inFile.stdout)")

        #expect(try await b.runs(["--where", "fidelity > 0.5"]).map { $0["name"] as? String } == ["bell-tomography"])
        #expect(try await b.runs(["--where", "fidelity > 0.999"]).isEmpty)
        #expect(try await b.runs(["--where", "not fidelity > 0.5 and status = success"]).map { $0["name"] as? String } == ["delay-calibration"])
        #expect(try await b.runs(["--where", "tag = night or sample = 'nobody'"]).count == 1)
        #expect(try await b.runs(["--where", "driver = mock.laser"]).count == 2)
        #expect(try await b.runs(["--script", "delay-calibration.yaml"]).count == 1)
        #expect(try await b.runs(["--sample", "NV-7"]).count == 1)
        #expect(try await b.runs(["--since", "1h"]).count == 2)
        #expect(try await b.runs(["--since", "2999-01-01"]).isEmpty)
        #expect(try await b.runs(["--tag", "calib"]).count == 1)

        let uid = try #require(r["uid"] as? String)
        let show = try await b.herald(["runs", "show", String(uid.prefix(8))])
        #expect(show.status == 0 && show.stdout.contains("sample:     NV-7") && show.stdout.contains("integration=50ms (--set)"), "\(show.stdout)\(show.stderr)")
        // analyze and report take uids, and several runs at once.
        let other = try #require(all.first { $0["name"] as? String == "delay-calibration" }?["uid"] as? String)
        let analyzed = try await b.herald(["analyze", String(uid.prefix(8)), other, "--json"])
        #expect(analyzed.status == 0, "\(analyzed.stderr)")
        let summaries = try #require(try JSONSerialization.jsonObject(with: Data(analyzed.stdout.utf8)) as? [[String: Any]])
        #expect(summaries.count == 2)
        let report = try await b.herald(["report", uid])
        #expect(report.status == 0 && FileManager.default.fileExists(atPath: String(bell.dropLast(3)) + ".html"), "\(report.stderr)")
        let unknown = try await b.herald(["runs", "show", "ffffffff"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no run 'ffffffff'"), "\(unknown.stderr)")
    }

    /// A run killed with SIGKILL stays `running` in the catalogue, which shows it as
    /// incomplete (its process is gone); `herald recover` closes the file and the record.
    @Test(arguments: Backend.allCases) func aKilledRunShowsIncompleteAndRecoverUpdatesIt(_ backend: Backend) async throws {
        let b = try await Bench.make(backend)
        let out = b.dir.appendingPathComponent("killed.h5").path
        let (p, _, registered) = try await b.startRegistered(
            [Paths.root.appendingPathComponent("Experiments/bell-tomography.yaml").path, "--out", out, "--set", "integration=2s"])
        #expect(registered.first?["status"] as? String == "running", "\(registered)")
        kill(p.processIdentifier, SIGKILL)
        await waitForExit(p)
        let killed = try await b.runs()
        #expect(killed.first?["status"] as? String == "incomplete", "\(killed)")
        #expect(killed.first?["stoppedAt"] == nil)

        let recover = try await b.herald(["recover", out])
        #expect(recover.status == 0, "\(recover.stderr)")
        let recovered = try #require(try await b.runs().first)
        #expect(recovered["status"] as? String == "incomplete")
        #expect(recovered["stoppedAt"] as? String != nil && recovered["fileSize"] as? Int != nil, "\(recovered)")
        #expect(try await b.runs(["--status", "incomplete"]).count == 1)
    }

    /// The files are the record of truth: a new, empty catalogue rebuilt from the folder holds
    /// the same runs with the same figures; a file that is not a Herald run is named and skipped.
    @Test(arguments: Backend.allCases) func aCatalogueIsRebuiltFromAFolderOfFiles(_ backend: Backend) async throws {
        let b = try await Bench.make(.sqlite)
        let files = b.dir.appendingPathComponent("runs")
        try FileManager.default.createDirectory(at: files, withIntermediateDirectories: true)
        _ = try await b.run("bell-tomography.yaml", "runs/a.h5", ["--set", "integration=50ms", "--meta", "sample=S1"])
        _ = try await b.run("g2-hbt.yaml", "runs/nested/b.h5", ["--set", "integration=50ms"])
        try Data("not HDF5".utf8).write(to: files.appendingPathComponent("junk.h5"))
        let original = try await b.runs()

        let target = try await Bench.make(backend)
        let rebuilt = try await target.herald(["catalogue", "rebuild", files.path, "--json"])
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(rebuilt.stdout.utf8)) as? [String: Any])
        #expect((report["indexed"] as? [String])?.count == 2)
        #expect((report["skipped"] as? [String: String])?.keys.contains { $0.hasSuffix("junk.h5") } == true, "\(report)")
        let again = try await target.runs()
        #expect(Set(again.compactMap { $0["uid"] as? String }) == Set(original.compactMap { $0["uid"] as? String }))
        for r in original {
            let twin = try #require(again.first { $0["uid"] as? String == r["uid"] as? String })
            for key in ["name", "sample", "status", "filePath", "startedAt", "stoppedAt"] {
                #expect(String(describing: twin[key] ?? "nil") == String(describing: r[key] ?? "nil"), "\(key)")
            }
            #expect(twin["overrides"] as? [String: String] == r["overrides"] as? [String: String])
            let figures = { (x: [String: Any]) in Set(((x["figures"] as? [[String: Any]]) ?? []).map { "\($0["entry"] ?? "") \($0["name"] ?? "") \($0["value"] ?? "")" }) }
            #expect(figures(twin) == figures(r))
        }
        // Rebuilding twice changes nothing.
        _ = try await target.herald(["catalogue", "rebuild", files.path])
        #expect(try await target.runs().count == 2)
    }

    /// Two runs at once, each registering and updating, and sixty records saved from two
    /// catalogue connections at once: every one is there.
    @Test(arguments: Backend.allCases) func twoWritersAtOnceLoseNoRecord(_ backend: Backend) async throws {
        let b = try await Bench.make(backend)
        async let one = b.run("g2-hbt.yaml", "one.h5", ["--set", "integration=50ms"])
        async let two = b.run("g2-hbt.yaml", "two.h5", ["--set", "integration=50ms"])
        _ = try await (one, two)
        let runs = try await b.runs()
        #expect(runs.count == 2 && runs.allSatisfy { $0["status"] as? String == "success" }, "\(runs)")

        let location = try CatalogueLocation.parse(b.location)
        let a = try await RunCatalogue.open(location), c = try await RunCatalogue.open(location)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<60 {
                group.addTask {
                    var r = CatalogueRecord(
                        uid: "00000000-0000-0000-0000-\(String(format: "%012d", i))", name: "writer-\(i % 2)", scriptPath: "/x.yaml",
                        startedAt: Date(), status: .success, filePath: "/x\(i).h5")
                    r.figures = [.init(entry: "000_g2", analysis: "g2", name: "g2_0", value: Double(i) / 100)]
                    try await (i % 2 == 0 ? a : c).save(r)
                }
            }
            try await group.waitForAll()
        }
        #expect(try await a.count(RunQuery()) == 62)
        #expect(try await c.count(RunQuery(filter: try RunFilter.parse("g2_0 < 0.3 and name = writer-0"))) == 15)
        await a.close()
        await c.close()
    }

    /// A batch larger than one multi-row statement holds, with one uid given twice: every run
    /// is there once, as its last record says, with its figures and tags.
    @Test(arguments: Backend.allCases) func aLargeBatchIsSavedWholeAndAUidGivenTwiceKeepsItsLastRecord(_ backend: Backend) async throws {
        let b = try await Bench.make(backend)
        let c = try await RunCatalogue.open(try CatalogueLocation.parse(b.location))
        var records = (0..<2500).map { i in
            var r = CatalogueRecord(
                uid: String(format: "00000000-0000-4000-8000-%012d", i), name: "batch", scriptPath: "/x.yaml",
                startedAt: Date(timeIntervalSince1970: 1_780_000_000 + Double(i)), status: .success, filePath: "/x\(i).h5")
            r.tags = i % 2 == 0 ? ["even"] : []
            r.figures = [.init(entry: "000_g2", analysis: "g2", name: "g2_0", value: Double(i) / 2500)]
            return r
        }
        var again = records[7]
        again.sample = "second"
        records.append(again)
        try await c.save(records)
        #expect(try await c.count(RunQuery()) == 2500)
        #expect(try await c.count(RunQuery(filter: try RunFilter.parse("tag = even"))) == 1250)
        #expect(try await c.count(RunQuery(filter: try RunFilter.parse("g2_0 >= 0.5"))) == 1250)
        #expect(try await c.run(records[7].uid).sample == "second")
        await c.close()
    }

    /// The catalogue goes away mid-run: the run goes on to success with its file whole, the
    /// record waits, and the first command that reaches the catalogue again writes it.
    @Test(arguments: Backend.allCases) func aCatalogueThatGoesAwayNeverStopsARun(_ backend: Backend) async throws {
        let b = try await Bench.make(backend)
        // SQLite: a catalogue path that cannot be created (its folder is a file) until it is removed.
        let blocker = b.dir.appendingPathComponent("blocked")
        let location = backend == .sqlite ? blocker.path + "/catalogue.sqlite" : b.location
        if backend == .sqlite { try Data().write(to: blocker) }
        let out = b.dir.appendingPathComponent("r.h5").path
        let script = Paths.root.appendingPathComponent("Experiments/g2-hbt.yaml").path
        if backend == .sqlite {
            let r = try await b.herald(["run", script, "--mock", "--out", out, "--set", "integration=50ms"], catalogue: location)
            #expect(r.status == 0, "\(r.stderr)")
            #expect(r.stderr.contains("the record is kept"), "\(r.stderr)")
        } else {
            // PostgreSQL: up when the run registers, stopped while it acquires.
            let (p, err, registered) = try await b.startRegistered([script, "--out", out, "--set", "integration=3s"])
            #expect(registered.first?["status"] as? String == "running", "\(registered)")
            if let server = b.server { try await onThread { try server.stop() } }
            let stderr = await readToEndAndWait(p, err)
            #expect(p.terminationStatus == 0, "\(stderr)")
            #expect(stderr.contains("the record is kept"), "\(stderr)")
        }
        #expect(FileManager.default.fileExists(atPath: out))
        let pending = try await b.herald(["catalogue", "info"], catalogue: location)
        #expect(pending.stdout.contains("waiting records: 1"), "\(pending.stdout)\(pending.stderr)")

        if backend == .sqlite {
            try FileManager.default.removeItem(at: blocker)
        } else {
            if let server = b.server { try await onThread { try server.start() } }
        }
        let listed = try await b.herald(["runs", "--json"], catalogue: location)
        #expect(listed.status == 0, "\(listed.stderr)")
        let runs = (try JSONSerialization.jsonObject(with: Data(listed.stdout.utf8)) as? [[String: Any]]) ?? []
        #expect(runs.count == 1 && runs.first?["status"] as? String == "success", "\(runs)")
        #expect(listed.stderr.contains("1 record kept while it was unreachable now written"), "\(listed.stderr)")
        let after = try await b.herald(["catalogue", "info"], catalogue: location)
        #expect(after.stdout.contains("waiting records: 0") && after.stdout.contains("runs: 1"), "\(after.stdout)")
    }

    /// SQL in `--where` is refused or compared as data; SQL in metadata is stored as text.
    @Test(arguments: Backend.allCases) func injectionIsRefusedOrStoredAsPlainData(_ backend: Backend) async throws {
        let b = try await Bench.make(backend)
        let evil = "x'); DROP TABLE runs; --"
        _ = try await b.run("g2-hbt.yaml", "e.h5", ["--set", "integration=50ms", "--meta", "sample=\(evil)", "--meta", "operator=\"; DELETE FROM run_figures; --"])
        // Compared as data: a quoted value is one value, whatever it holds.
        #expect(try await b.runs(["--where", "sample = 'x'' OR 1=1 --'"]).isEmpty)
        #expect(try await b.runs(["--where", "sample = 'x''); DROP TABLE runs; --'"]).count == 1)
        // Refused at their column: SQL is not the language of --where.
        for (text, column) in [("fidelity > 0; DROP TABLE runs", 13), ("1 = 1", 1), ("sample = x OR 1=1", 15), ("uid = '' UNION SELECT", 10)] {
            let r = try await b.herald(["runs", "--where", text])
            #expect(r.status != 0 && r.stderr.contains("column \(column)"), "\(text): \(r.stderr)")
        }
        // The largest filter the parser lets through (32 deep, 200 conditions) is one the
        // database's own parser takes too.
        let extreme = String(repeating: "(", count: 32) + "fidelity > 0.5" + String(repeating: ")", count: 32) + " or "
            + Array(repeating: "g2_0 < 0.1", count: 199).joined(separator: " or ")
        #expect(try await b.runs(["--where", extreme]).count == 1)
        let still = try await b.runs()
        #expect(still.count == 1 && still.first?["sample"] as? String == evil, "\(still)")
        #expect(still.first?["operatorName"] as? String == "\"; DELETE FROM run_figures; --")
        #expect((still.first?["figures"] as? [[String: Any]])?.isEmpty == false)
    }

    /// Two thousand mutated `--where` texts: none crashes; each is refused at a column inside
    /// it or becomes SQL whose every value is a bound parameter. Pathological nesting and
    /// length are refused at their column, not by exhausting a stack.
    @Test func mutatedAndPathologicalWhereTextsNeverCrash() async throws {
        try await onThread {
            let seeds = [
                "fidelity > 0.9 and sample = 'NV-7'", "(S >= 2.5 or g2_0 < 0.05) and not status = failed",
                "started > 2026-11-01 and tag = calib", "started > 7d or size < 1000000", "uid = 'ab' and driver != mock.laser",
            ]
            let alphabet = Array("()'\"=<>!;-_. 0123456789abcdefgnorstuxSDT:%*/")
            var g = SystemRandomNumberGenerator()
            var refused = 0
            for i in 0..<2000 {
                var chars = Array(seeds[i % seeds.count])
                for _ in 0..<Int.random(in: 1...4, using: &g) {
                    guard !chars.isEmpty else { break }
                    let at = Int.random(in: 0..<chars.count, using: &g)
                    switch Int.random(in: 0..<4, using: &g) {
                    case 0: chars.remove(at: at)
                    case 1: chars.insert(alphabet.randomElement(using: &g) ?? "(", at: at)
                    case 2: chars[at] = alphabet.randomElement(using: &g) ?? "'"
                    default: chars.insert(chars[at], at: at)
                    }
                }
                let text = String(chars)
                do {
                    let sql = try RunFilter.parse(text).sql
                    // Every value is a parameter: as many placeholders as binds, and no quote or
                    // statement separator of the text's own in the SQL.
                    #expect(sql.sql.filter { $0 == "?" }.count == sql.binds.count, "\(text): \(sql.sql)")
                    #expect(!sql.sql.contains("'") && !sql.sql.contains(";") && !sql.sql.contains("--"), "\(text): \(sql.sql)")
                } catch let error as RunFilterError {
                    refused += 1
                    #expect(error.column >= 1 && error.column <= text.count + 1, "\(text): \(error)")
                }
            }
            #expect(refused > 500, "most mutations are not valid filters (\(refused) refused)")
        }
        let deep = String(repeating: "(", count: 100_000) + "fidelity > 0.9"
        #expect(throws: RunFilterError.self) { try RunFilter.parse(deep) }
        do { _ = try RunFilter.parse(deep) } catch { #expect(error.column == 33 && error.message.contains("nested"), "\(error)") }
        let nots = String(repeating: "not ", count: 50_000) + "fidelity > 0.9"
        do { _ = try RunFilter.parse(nots) } catch { #expect(error.column == 129 && error.message.contains("nested"), "\(error)") }
        let long = Array(repeating: "fidelity > 0.5", count: 5000).joined(separator: " and ")
        do {
            _ = try RunFilter.parse(long)
            Issue.record("5000 conditions accepted")
        } catch { #expect(error.message.contains("more than 200 conditions") && error.column == 200 * 19 + 1, "\(error)") }
        // At the bounds, it parses and stays one statement with its parameters.
        let wide = Array(repeating: "fidelity > 0.5", count: 200).joined(separator: " or ")
        #expect(try RunFilter.parse(wide).sql.binds.count == 400)
    }

    /// A catalogue the database answers with an error (here a file whose tables are not the
    /// schema its migration log claims) is reported as refused, with the database's words, not
    /// as unreachable.
    @Test func aCatalogueThatAnswersWithAnErrorIsRefusedNotUnreachable() async throws {
        let b = try await Bench.make(.sqlite)
        let made = try await runProcess(
            Paths.python,
            ["-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute('create table grdb_migrations (identifier text primary key)'); c.execute(\"insert into grdb_migrations values ('1-runs')\"); c.execute('create table runs (uid text)'); c.commit()", b.location])
        #expect(made.status == 0, "\(made.stderr)")
        let r = try await b.herald(["runs"])
        #expect(r.status != 0 && r.stderr.contains("refused the request") && r.stderr.contains("no such column"), "\(r.stderr)")
        #expect(!r.stderr.contains("cannot be reached"))
    }

    /// The parser's answers: what it accepts, and where it points when it refuses.
    @Test func whereExpressionsAreParsedAndChecked() throws {
        #expect(try RunFilter.parse("fidelity > 0.9") == .compare(.figure("fidelity"), .greater, .number(0.9)))
        #expect(try RunFilter.parse("(S >= 2.5 or g2_0 < 0.05) and not status = failed").sql.binds.count == 5)
        _ = try RunFilter.parse("fidelity_psi- > 0.5 and herald_rate.psi+ > 1")
        for (text, column, fragment) in [
            ("fidelty > 0.9", 1, "unknown field 'fidelty'"), ("fidelity >", 11, "expected a value"), ("fidelity > high", 12, "is a number"),
            ("sample = 'open", 10, "never closed"), ("(fidelity > 1", 1, "never closed"), ("started > yesterday", 11, "is a time"),
            ("tag > a", 7, "compare it with = or !="), ("fidelity ~ 1", 10, "unexpected '~'"), ("", 1, "expected a condition"),
        ] {
            do {
                _ = try RunFilter.parse(text)
                Issue.record("accepted '\(text)'")
            } catch {
                #expect(error.column == column && error.message.contains(fragment), "\(text): \(error)")
            }
        }
        // Values never reach the SQL text.
        let f = try RunFilter.parse("sample = 'a''; DROP TABLE runs' and fidelity > 0.5")
        #expect(!f.sql.sql.contains("DROP") && f.sql.binds.contains(.text("a'; DROP TABLE runs")))
    }
}
