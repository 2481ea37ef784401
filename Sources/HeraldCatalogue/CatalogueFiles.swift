import Foundation
import HeraldHDF5
import HeraldRunReader

extension CatalogueRecord {
    /// The record of a run file, read from the file alone (what `herald catalogue rebuild`
    /// and `herald recover` write): identity, script, metadata, devices, status and every
    /// analysis value.
    public init(file path: String) throws {
        let summary = try RunFile.summary(path: path)
        let file = try RunFile.open(path)
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        let iso = ISO8601DateFormatter()
        let run = summary.run
        guard let uid = run["run_id"]?.lowercased(), !uid.isEmpty else { throw CatalogueError.badLocation("\(path): the file has no run_id") }
        let status = Status(rawValue: run["exit_status"] ?? "") ?? .incomplete
        self.init(
            uid: uid, name: run["name"] ?? "", scriptPath: run["script_path"] ?? "",
            startedAt: run["started_at"].flatMap { iso.date(from: $0) } ?? Date(timeIntervalSince1970: 0), status: status,
            filePath: URL(fileURLWithPath: path).standardizedFileURL.path)
        stoppedAt = run["stopped_at"].flatMap { iso.date(from: $0) } ?? run["recovered_at"].flatMap { iso.date(from: $0) }
        reason = run["reason"].flatMap { $0.isEmpty ? nil : $0 }
        heraldVersion = run["herald_version"] ?? ""
        mock = run["mock"] == "true"
        let runGroup = try herald.openGroup("run")
        pid = try runGroup.attribute("writer_pid", as: Int64.self).map { Int($0) }
        if herald.contains("metadata") {
            let m = try herald.openGroup("metadata")
            func attr(_ k: String) throws -> String? { try m.stringAttribute(k).flatMap { $0.isEmpty ? nil : $0 } }
            operatorName = try attr("operator")
            sample = try attr("sample")
            tags = (try attr("tags") ?? "").split(separator: ",").map(String.init)
            description = try attr("description") ?? ""
            host = try attr("host")
            scriptRevision = try attr("script_revision")
            scriptDirty = try attr("script_dirty").flatMap(Bool.init)
            let d = JSONDecoder()
            parameters = try attr("parameters").flatMap { try? d.decode([String: String].self, from: Data($0.utf8)) } ?? [:]
            overrides = try attr("overrides").flatMap { try? d.decode([String: String].self, from: Data($0.utf8)) } ?? [:]
        }
        if parameters.isEmpty, herald.contains("parameters") {
            // Files from before the metadata held them: the attributes named by the quantity datasets.
            let p = try herald.openGroup("parameters")
            for k in try p.childNames() { if let v = try p.stringAttribute(k) { parameters[k] = v } }
        }
        if herald.contains("nodes") { nodes = try herald.openGroup("nodes").childNames() }
        if herald.contains("devices") {
            let g = try herald.openGroup("devices")
            devices = try g.childNames().map { name in
                let d = try g.openGroup(name)
                return DeviceEntry(name: name, driver: try d.stringAttribute("driver") ?? "", node: try d.stringAttribute("setting_node"))
            }
        }
        fileSize = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value
        figures = summary.analyses.flatMap { a in
            a.values.sorted { $0.key < $1.key }.map { FigureEntry(entry: a.entry, analysis: a.name, name: $0.key, value: $0.value, error: a.uncertainties[$0.key]) }
        }
    }
}

extension RunCatalogue {
    /// What `rebuild` did: the files indexed, and each file it could not read with why.
    public struct RebuildReport: Sendable, Codable {
        public var indexed: [String] = []
        public var skipped: [String: String] = [:]
    }

    /// Indexes every Herald run file under `directory` (recursively), replacing what the
    /// catalogue held for those runs. Files that are not Herald runs, or that a crash left
    /// unreadable (`herald recover` them first), are reported and skipped.
    public func rebuild(_ directory: String) async throws -> RebuildReport {
        var report = RebuildReport()
        guard let walker = FileManager.default.enumerator(atPath: directory) else {
            throw CatalogueError.badLocation("\(directory): no such folder")
        }
        var paths: [String] = []
        while let item = walker.nextObject() as? String {
            if item.hasSuffix(".h5") || item.hasSuffix(".hdf5") { paths.append(directory + "/" + item) }
        }
        for path in paths.sorted() {
            do {
                let r = try CatalogueRecord(file: path)
                try await save(r)
                report.indexed.append(path)
            } catch let e as CatalogueError where { if case .unreachable = e { return true } else { return false } }() {
                throw e
            } catch {
                report.skipped[path] = "\(error)"
            }
        }
        if !report.indexed.isEmpty { try await refreshStatistics() }
        return report
    }
}
