import Foundation
import HeraldRunReader
import HeraldCore
import HeraldHDF5

/// What `herald recover` found and did.
public struct RecoveryReport: Sendable, Codable, Equatable {
    public var path: String
    /// The file was closed cleanly; nothing needed doing.
    public var alreadyComplete: Bool
    /// An earlier `herald recover` already restored it (when, ISO 8601); nothing needed doing.
    public var recoveredBefore: String? = nil
    /// Finished points whose counts were rebuilt from the live tables.
    public var countedPoints: Int = 0
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
        // A live run holds this lock: recovering under it would corrupt the file it is writing.
        let lock = try RunFileLock(path: path, purpose: "herald recover")
        defer { lock.release() }
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
            report.recoveredBefore = try run.stringAttribute("recovered_at")
            report.alreadyComplete = report.recoveredBefore == nil
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
        report.countedPoints = try rebuildCounts(herald)
        try DatasetUnits.label(herald)

        try run.setAttribute("exit_status", "incomplete")
        try run.setAttribute(
            "reason", "the runner stopped without closing the file; `herald recover` kept the \(n) tags flushed before it stopped")
        try run.setAttribute("tag_count", Int64(n))
        try run.setAttribute("recovered_at", ISO8601DateFormatter().string(from: Date()))
        return report
    }

    /// The counts table of every finished point, from the live count columns (the same rows
    /// a clean stop writes).
    static func rebuildCounts(_ herald: H5Group) throws -> Int {
        guard herald.contains("progress"), !herald.contains("counts") else { return 0 }
        let progress = try herald.openGroup("progress")
        guard progress.contains("counted_point") else { return 0 }  // written by Herald before 0.2 counts
        let names = try progress.dataset("sweep_names").readStrings()
        let labels = try PlannedLabels(progress, names)
        func ints(_ name: String) throws -> [Int64] { try progress.dataset(name).read(Int64.self) }
        func reals(_ name: String) throws -> [Double] { try progress.dataset(name).read(Double.self) }
        let cSweep = try ints("counted_sweep"), cPoint = try ints("counted_point"), cDuration = try reals("counted_duration_s")
        let cOuter = progress.contains("counted_outer_index") ? try ints("counted_outer_index") : []
        let outer = try OuterPoints(herald)
        var rows: [PointCounts] = []
        // Counted row ordinal → index in `rows` (rows of a sweep not in sweep_names are skipped).
        var position: [Int64: Int] = [:]
        for i in 0..<min(cSweep.count, cPoint.count, cDuration.count) {
            guard names.indices.contains(Int(cSweep[i])) else { continue }
            let name = names[Int(cSweep[i])], index = Int(cPoint[i])
            position[Int64(i)] = rows.count
            rows.append(
                PointCounts(
                    sweep: name, index: index, label: labels.label(name, index), duration: cDuration[i], singles: [:], pairs: [],
                    outer: outer.ref(of: name, cOuter.indices.contains(i) ? cOuter[i] : -1, labels: labels)))
        }
        let pRow = try ints("pair_row"), pA = try ints("pair_channel_a")
        let pB = try ints("pair_channel_b"), pProjection = try ints("pair_projection"), pN = try ints("pair_coincidences")
        let pAcc = try reals("pair_accidentals")
        let pairRows = [pRow.count, pA.count, pB.count, pProjection.count, pN.count, pAcc.count].min() ?? 0
        for i in 0..<pairRows {
            guard let r = position[pRow[i]] else { continue }  // its point's row was never flushed
            let a = Int(pA[i]), b = Int(pB[i])
            rows[r].pairs.append(
                PointCounts.Pair(
                    channelA: a, channelB: b, projection: ProjectionCode.decode(pProjection[i], channelA: a, channelB: b),
                    coincidences: Int(pN[i]), accidentals: pAcc[i]))
        }
        let sRow = try ints("singles_row"), sChannel = try ints("singles_channel"), sN = try ints("singles_count")
        for i in 0..<min(sRow.count, sChannel.count, sN.count) {
            guard let r = position[sRow[i]] else { continue }
            rows[r].singles[Int(sChannel[i])] = Int(sN[i])
        }
        try SummaryTables.writeCounts(rows, into: herald)
        return rows.count
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
        let labels = try PlannedLabels(progress, names)
        let outerIndex = progress.contains("point_outer_index") ? try column("point_outer_index") : []
        let outer = try OuterPoints(herald)
        var records: [SweepPointRecord] = []
        for (ordinal, name) in names.enumerated() {
            for i in 0..<rows where sweep[i] == Int64(ordinal) {
                let k = Int(index[i])
                records.append(SweepPointRecord(
                    sweep: name, index: k, label: labels.label(name, k), settings: [:],
                    startPs: start[i], stopPs: stop[i],
                    outer: outer.ref(of: name, outerIndex.indices.contains(i) ? outerIndex[i] : -1, labels: labels)))
            }
        }
        try SummaryTables.writeSweeps(records, into: herald, withSettings: false)
        let ps = try column("paused_start_ps"), pe = try column("paused_stop_ps")
        let n = min(ps.count, pe.count)
        _ = try SummaryTables.writePaused(start: Array(ps.prefix(n)), stop: Array(pe.prefix(n)), into: herald)
        return rows
    }
}

/// Each point's label as the engine gave it, from `progress/planned_labels` (read once per
/// data set): a sweep's planned label by index; a named acquisition, which has none, is
/// labelled with its name.
struct PlannedLabels {
    private let bySweep: [String: [String]]

    init(_ progress: H5Group, _ names: [String]) throws {
        let planned = try progress.openGroup("planned_labels")
        var bySweep: [String: [String]] = [:]
        for name in names where planned.contains(name) { bySweep[name] = try planned.dataset(name).readStrings() }
        self.bySweep = bySweep
    }

    func label(_ name: String, _ index: Int) -> String {
        guard let labels = bySweep[name] else { return name }
        return labels.indices.contains(index) ? labels[index] : ""
    }
}

/// Which sweep each data set runs inside, from the stored reduction plan, to name the
/// outer point of a recovered nested point.
struct OuterPoints {
    private var outerOf: [String: String] = [:]

    init(_ herald: H5Group) throws {
        guard herald.contains("reduction_plan"),
            let text = try herald.dataset("reduction_plan").readStrings().first,
            let plan = try? JSONDecoder().decode(ReductionPlan.self, from: Data(text.utf8))
        else { return }
        for d in plan.datasets { outerOf[d.name] = d.outer }
    }

    func ref(of dataset: String, _ index: Int64, labels: PlannedLabels) -> PointRef? {
        guard index >= 0, let outer = outerOf[dataset] else { return nil }
        return PointRef(sweep: outer, index: Int(index), label: labels.label(outer, Int(index)))
    }
}
