import Foundation
import HeraldCore

/// Records a catalogue could not take when they were written, kept as JSON files until it can
/// (the next `herald run`, `herald runs` or `herald catalogue` that reaches it sends them).
/// A catalogue that cannot be reached never stops a run.
public struct PendingRecords: Sendable {
    public let directory: String

    public init(directory: String = CatalogueLocation.dataDirectory() + "/catalogue-pending") {
        self.directory = directory
    }

    func key(_ location: CatalogueLocation) -> String {
        // One folder per catalogue, so a record waits for the catalogue it was meant for.
        let text = location.description
        var h: UInt64 = 1_469_598_103_934_665_603
        for b in text.utf8 { h = (h ^ UInt64(b)) &* 1_099_511_628_211 }
        return String(h, radix: 16)
    }

    public func keep(_ record: CatalogueRecord, for location: CatalogueLocation) throws {
        let dir = directory + "/" + key(location)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let e = JSONEncoder()
        e.dateEncodingStrategy = .secondsSince1970
        try e.encode(record).write(to: URL(fileURLWithPath: dir + "/" + record.uid + ".json"), options: .atomic)
    }

    public func count(for location: CatalogueLocation) -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + key(location))) ?? []).filter { $0.hasSuffix(".json") }.count
    }

    /// Sends every waiting record to `catalogue`; returns how many went. One that is unreadable is left, named in `problems`.
    @discardableResult
    public func flush(into catalogue: RunCatalogue) async throws -> (sent: Int, problems: [String]) {
        let dir = directory + "/" + key(catalogue.location)
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
        let d = JSONDecoder()
        d.dateDecodingStrategy = .secondsSince1970
        var sent = 0
        var problems: [String] = []
        for f in files {
            let path = dir + "/" + f
            guard let data = FileManager.default.contents(atPath: path), let record = try? d.decode(CatalogueRecord.self, from: data) else {
                problems.append("\(path): not a catalogue record; left in place")
                continue
            }
            try await catalogue.save(record)
            try? FileManager.default.removeItem(atPath: path)
            sent += 1
        }
        return (sent, problems)
    }
}

/// Registers a run in the catalogue when it starts and updates it when it stops, as a
/// consumer of the run's events. The run never waits for the database: records go to a
/// writer task, and whatever it cannot write is kept in ``PendingRecords``.
public actor CatalogueSink: RunEventSink {
    let location: CatalogueLocation
    let pending: PendingRecords
    let outputPath: String
    var record: CatalogueRecord?
    var writer: Task<Void, Never>?
    var catalogue: RunCatalogue?
    var opened = false
    /// What went wrong, for the runner to log (never thrown into the run).
    public private(set) var problems: [String] = []

    public init(location: CatalogueLocation, outputPath: String, pending: PendingRecords = PendingRecords()) {
        self.location = location
        self.outputPath = outputPath
        self.pending = pending
    }

    public func handle(_ event: RunEvent) async throws {
        switch event {
        case .runStarted(let s):
            var r = CatalogueRecord(
                uid: s.runID.uuidString.lowercased(), name: s.plan.name, scriptPath: s.plan.scriptPath, startedAt: s.startedAt,
                status: .running, filePath: URL(fileURLWithPath: outputPath).standardizedFileURL.path)
            let m = s.plan.metadata
            r.scriptRevision = m.scriptRevision
            r.scriptDirty = m.scriptDirty
            r.description = s.plan.description
            r.operatorName = m.operatorName
            r.sample = m.sample
            r.tags = m.tags
            r.parameters = s.plan.parameters.mapValues(\.text)
            r.overrides = m.overrides
            r.nodes = s.plan.nodes.map(\.name)
            r.devices = s.devices.map { .init(name: $0.name, driver: $0.driver, node: $0.settings["node"]) }
            r.host = m.host ?? ProcessInfo.processInfo.hostName
            r.pid = Int(ProcessInfo.processInfo.processIdentifier)
            r.heraldVersion = s.heraldVersion
            r.mock = s.mock
            record = r
            submit(r)
        case .analysis(let a):
            guard record != nil else { return }
            let entry = String(format: "%03d_%@", record?.figures.map(\.entry).uniqueCount ?? 0, a.name)
            for (k, v) in a.values.sorted(by: { $0.key < $1.key }) {
                record?.figures.append(.init(entry: entry, analysis: a.name, name: k, value: v, error: a.uncertainties[k]))
            }
            if a.values.isEmpty { record?.figures.append(.init(entry: entry, analysis: a.name, name: "entries", value: 1)) }
        case .runStopped(let stop):
            guard var r = record else { return }
            r.figures.removeAll { $0.name == "entries" }
            r.status = CatalogueRecord.Status(rawValue: stop.status.rawValue) ?? .failed
            r.stoppedAt = stop.stoppedAt
            r.reason = stop.reason
            r.fileSize = (try? FileManager.default.attributesOfItem(atPath: outputPath)[.size] as? NSNumber)?.int64Value
            record = r
            submit(r)
        default:
            break
        }
    }

    /// Queues `r` behind what is already being written (so the stop never overtakes the start).
    func submit(_ r: CatalogueRecord) {
        let previous = writer
        writer = Task {
            await previous?.value
            await self.write(r)
        }
    }

    func write(_ r: CatalogueRecord) async {
        do {
            if !opened {
                opened = true
                catalogue = try await RunCatalogue.open(location)
                if let c = catalogue { try await pending.flush(into: c) }
            }
            guard let c = catalogue else { throw CatalogueError.unreachable("\(location) could not be opened") }
            try await c.save(r)
        } catch {
            problems.append("\(error)")
            do { try pending.keep(r, for: location) } catch { problems.append("could not keep the record for later either: \(error)") }
        }
    }

    /// Waits for the writes to finish (at most `limit`) and closes the catalogue. Returns the
    /// problems met. A write still waiting after `limit` (a database held by someone else) has
    /// its record kept for later, so the runner exits on time and nothing is lost.
    public func finish(limit: Duration = .seconds(15)) async -> [String] {
        let writer = self.writer
        let done = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await writer?.value; return true }
            group.addTask { try? await Task.sleep(for: limit); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !done, let r = record {
            problems.append("the catalogue did not answer within \(limit)")
            try? pending.keep(r, for: location)
        }
        if done { await catalogue?.close() }
        catalogue = nil
        return problems
    }
}

extension Array where Element: Hashable {
    var uniqueCount: Int { Set(self).count }
}
