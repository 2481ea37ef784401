import Foundation
import HeraldCore
import HeraldHDF5

/// What `herald recover` found and did.
public struct RecoveryReport: Sendable, Codable, Equatable {
    public var path: String
    /// The file was closed cleanly; nothing needed doing.
    public var alreadyComplete: Bool
    public var tags: Int
    /// Elements dropped from the longer of timestamps/detectors so the two stay parallel.
    public var unpairedTagsDropped: Int
    public var sweepPoints: Int
    public var firstPs: Int64?
    public var lastPs: Int64?
}

/// Makes the file of a runner that died (kill -9, power loss) readable by stock HDF5 tools
/// again, keeping every tag that was flushed, and marks the run incomplete.
///
/// The recorder writes in SWMR mode, so the file on disk is consistent as of the last
/// flush. What is left to repair: the superblock's "open for writing" mark (cleared, as
/// `h5clear -s` does), the stored end of allocation (raised to the real end of file first,
/// as `h5clear --increment` does; without that, closing would truncate the file), and the
/// summary Herald writes only on a clean stop, rebuilt here from the live progress tables.
public enum RunRecovery {
    public static func recover(path: String) throws -> RecoveryReport {
        let file = try RunFile.open(
            path, mode: .recover,
            unreadable: "HDF5 cannot open this file even with its write mark cleared; it is not a Herald file "
                + "or its first flush never happened, so there are no tags to recover")
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        let run = try herald.openGroup("run")
        let photons = try file.openGroup("photon_data")
        let ts = try photons.dataset("timestamps"), det = try photons.dataset("detectors")
        var report = RecoveryReport(
            path: path, alreadyComplete: false, tags: 0, unpairedTagsDropped: 0, sweepPoints: 0, firstPs: nil, lastPs: nil)
        let nTs = try ts.extent, nDet = try det.extent
        let n = min(nTs, nDet)
        report.tags = n
        if try run.stringAttribute("exit_status") != "running" {
            report.alreadyComplete = true
            return report
        }
        // Tags and channels are appended together but may be flushed at different moments.
        if nTs != nDet {
            try (nTs > n ? ts : det).setExtent(n)
            report.unpairedTagsDropped = abs(nTs - nDet)
        }
        var counts = [Int64](repeating: 0, count: 256)
        let block = 1 << 20
        for offset in stride(from: 0, to: n, by: block) {
            for c in try det.read(UInt8.self, offset: offset, count: min(block, n - offset)) { counts[Int(c)] += 1 }
        }
        if n > 0 {
            report.firstPs = try ts.read(Int64.self, offset: 0, count: 1).first
            report.lastPs = try ts.read(Int64.self, offset: n - 1, count: 1).first
        }
        if let f = report.firstPs, let l = report.lastPs {
            try file.dataset("acquisition_duration").overwrite([Double(l - f) * 1e-12])
        }
        var perDetector: [UInt8: Int64] = [:]
        for (c, k) in counts.enumerated() where k > 0 { perDetector[UInt8(c)] = k }
        try PhotonHDF5.writeSetup(file, detectorCounts: perDetector)
        report.sweepPoints = try rebuildSweeps(herald)

        try run.setAttribute("exit_status", "incomplete")
        try run.setAttribute(
            "reason", "the runner stopped without closing the file; `herald recover` kept the \(n) tags flushed before it stopped")
        try run.setAttribute("tag_count", Int64(n))
        try run.setAttribute("recovered_at", ISO8601DateFormatter().string(from: Date()))
        return report
    }

    /// Sweep tables and paused intervals from the live progress datasets.
    static func rebuildSweeps(_ herald: H5Group) throws -> Int {
        guard herald.contains("progress"), !herald.contains("sweeps") else { return 0 }
        let progress = try herald.openGroup("progress")
        let names = try progress.dataset("sweep_names").readStrings()
        func column(_ name: String) throws -> [Int64] { try progress.dataset(name).read(Int64.self) }
        let sweep = try column("point_sweep"), index = try column("point_index")
        let start = try column("point_start_ps"), stop = try column("point_stop_ps")
        let rows = min(sweep.count, index.count, start.count, stop.count)
        let planned = try progress.openGroup("planned_labels")
        var records: [SweepPointRecord] = []
        for (ordinal, name) in names.enumerated() {
            let labels = planned.contains(name) ? try planned.dataset(name).readStrings() : []
            for i in 0..<rows where sweep[i] == Int64(ordinal) {
                let k = Int(index[i])
                records.append(SweepPointRecord(
                    sweep: name, index: k, label: labels.indices.contains(k) ? labels[k] : "", settings: [:],
                    startPs: start[i], stopPs: stop[i]))
            }
        }
        try SummaryTables.writeSweeps(records, into: herald, withSettings: false)
        let ps = try column("paused_start_ps"), pe = try column("paused_stop_ps")
        let n = min(ps.count, pe.count)
        _ = try SummaryTables.writePaused(start: Array(ps.prefix(n)), stop: Array(pe.prefix(n)), into: herald)
        return rows
    }
}
