import Foundation
import HeraldCore
import HeraldHDF5

/// A recorded run read back as the events the run reducer consumed while it ran: each
/// point of a data set, its acquisitions (counted or not) with their tags, then the analysis
/// requests. Replaying these through the reducer is how `herald analyze` recounts, so live
/// results and recounts are one code path.
public struct StoredRun {
    public let path: String
    /// The reducer's view of the plan, as the run stored it.
    public let plan: ReductionPlan

    private let file: H5File
    /// Opened where needed, not kept: an open group keeps the file open after `close()`.
    private var herald: H5Group { get throws { try file.openGroup("user").openGroup("herald") } }

    /// Opens `path` read-only. Fails naming the file if it has no stored plan (recorded
    /// before schema 0.4) or stored no raw tags.
    public init(path: String) throws {
        self.path = path
        file = try RunFile.open(path)
        do {
            let herald = try file.openGroup("user").openGroup("herald")
            guard herald.contains("reduction_plan") else {
                throw StoreError(
                    path: path,
                    "has no /user/herald/reduction_plan (recorded by Herald before schema 0.4), so its analyses cannot be "
                        + "replayed; its stored counts and analyses are still readable with `herald analyze FILE`",
                    kind: .invalidFile)
            }
            let text = try herald.dataset("reduction_plan").readStrings().first ?? ""
            do {
                plan = try JSONDecoder().decode(ReductionPlan.self, from: Data(text.utf8))
            } catch {
                throw StoreError(path: "\(path): /user/herald/reduction_plan", "is not a readable plan (\(error))", kind: .invalidFile)
            }
        } catch {
            file.close()
            throw error
        }
    }

    public func close() { file.close() }

    /// Feeds `handle` the events of every data set an analysis reads, then one analysis
    /// request for each of `analyses` (the stored plan's steps, or those of a recount), in order.
    public func replay(
        analyses: [AnalysisStep], maxTags: Int = 1 << 20, into handle: (RunEvent) async throws -> Void
    ) async throws {
        let tags = try TagReader(file)
        try tags.verifyTimeOrder()
        // A run with several taggers: each other tagger's own tags, clock and lost intervals.
        var others: [String: (tags: TagReader, lost: [ExcludedInterval])] = [:]
        for t in plan.clocks?.taggers ?? [] {
            let reader = try TagReader(file, tagger: t.name)
            try reader.verifyTimeOrder()
            others[t.name] = (reader, try storedLost(tagger: t.name))
        }
        let acquisitions = try storedAcquisitions()
        let lost = try storedLost()
        if plan.clocks != nil {
            try await replayInOrder(acquisitions, tags: tags, lost: lost, others: others, maxTags: maxTags, into: handle)
            for step in analyses { try await handle(.analysisRequested(step, location: nil)) }
            return
        }
        let analysed = Set(analyses.map(\.dataset))
        for dataset in plan.datasets where analysed.contains(dataset.name) {
            if let entangled = try storedHeralds(dataset) {
                for (point, heralds) in entangled {
                    for h in heralds { try await handle(.herald(h)) }
                    try await handle(.entangled(point))
                }
                continue
            }
            let points = try storedPoints(dataset)
            for p in points {
                try await handle(.sweepPointStarted(sweep: dataset.name, index: p.index, of: dataset.points.count, label: p.label))
                for a in acquisitions where a.startPs >= p.startPs && a.stopPs <= p.stopPs && a.stopPs > a.startPs {
                    try await replay(a, tags, lost, maxTags: maxTags, into: handle)
                }
                try await handle(.sweepPointFinished(p))
            }
        }
        for step in analyses { try await handle(.analysisRequested(step, location: nil)) }
    }

    /// One acquisition's tags, a block at a time (a long acquisition is never all in memory), then its record.
    private func replay(
        _ a: AcquisitionRecord, _ tags: TagReader, _ lost: [ExcludedInterval], maxTags: Int, into handle: (RunEvent) async throws -> Void
    ) async throws {
        let overlapping = lost.filter { $0.stopPs > a.startPs && $0.startPs < a.stopPs }
        let range = try tags.indices(from: a.startPs, to: a.stopPs)
        var offset = range.lowerBound
        repeat {
            var block = try tags.block(at: offset..<min(range.upperBound, offset + max(1, maxTags)))
            if offset == range.lowerBound { block.excluded = overlapping }
            offset += block.count
            if block.count > 0 || !block.excluded.isEmpty { try await handle(.tags(device: a.device, block)) }
        } while offset < range.upperBound
        try await handle(.acquired(a))
    }

    /// A run with several taggers, replayed as it ran: every acquisition in the order recorded
    /// (the other taggers' stretches of a slice follow the reference's, each in its own clock),
    /// with every point's start and end where they fell. The merged stream follows the clocks
    /// through the marks of all of them, and settles at the same points, so the recount sees
    /// the same merged tags as the run.
    private func replayInOrder(
        _ acquisitions: [AcquisitionRecord], tags: TagReader, lost: [ExcludedInterval], others: [String: (tags: TagReader, lost: [ExcludedInterval])],
        maxTags: Int, into handle: (RunEvent) async throws -> Void
    ) async throws {
        enum Mark { case finish(SweepPointRecord, Int), start(SweepPointRecord, Int, Int), acquisition(Int) }
        var marks: [(time: Int64, rank: Int, mark: Mark)] = []
        func depth(_ d: ReductionPlan.Dataset) -> Int {
            var n = 0, outer = d.outer
            while let o = outer, n < 64 { n += 1; outer = plan.dataset(o)?.outer }
            return n
        }
        for dataset in plan.datasets {
            let level = depth(dataset)
            for p in try storedPoints(dataset) {
                guard p.stopPs > p.startPs else {
                    // A point that acquired nothing: where it fell is not recorded; its (empty) counts are the same anywhere.
                    marks.append((p.startPs, 500, .start(p, dataset.points.count, level)))
                    marks.append((p.startPs, 501, .finish(p, level)))
                    continue
                }
                // At one instant: ends (inner first), then starts (outer first), then acquisitions.
                marks.append((p.stopPs, -100 - level, .finish(p, level)))
                marks.append((p.startPs, 100 + level, .start(p, dataset.points.count, level)))
            }
        }
        for (i, a) in acquisitions.enumerated() where others[a.device] == nil { marks.append((a.startPs, 1000, .acquisition(i))) }
        marks.sort { ($0.time, $0.rank) < ($1.time, $1.rank) }
        for m in marks {
            switch m.mark {
            case .finish(let p, _): try await handle(.sweepPointFinished(p))
            case .start(let p, let of, _): try await handle(.sweepPointStarted(sweep: p.sweep, index: p.index, of: of, label: p.label))
            case .acquisition(let i):
                try await replay(acquisitions[i], tags, lost, maxTags: maxTags, into: handle)
                var j = i + 1
                while j < acquisitions.count, let other = others[acquisitions[j].device] {
                    try await replay(acquisitions[j], other.tags, other.lost, maxTags: maxTags, into: handle)
                    j += 1
                }
            }
        }
    }

    /// The points of a data set from `sweeps/<name>`, with their outer points.
    func storedPoints(_ dataset: ReductionPlan.Dataset) throws -> [SweepPointRecord] {
        let herald = try self.herald
        guard herald.contains("sweeps"), try herald.openGroup("sweeps").contains(dataset.name) else { return [] }
        let g = try herald.openGroup("sweeps").openGroup(dataset.name)
        let index = try g.dataset("index").read(Int64.self)
        let label = try g.dataset("label").readStrings()
        let start = try g.dataset("start_ps").read(Int64.self), stop = try g.dataset("stop_ps").read(Int64.self)
        let outer = g.contains("outer_index") ? try g.dataset("outer_index").read(Int64.self) : []
        guard label.count == index.count, start.count == index.count, stop.count == index.count,
            outer.isEmpty || outer.count == index.count
        else {
            throw StoreError(path: "\(path): sweeps/\(dataset.name)", "columns differ in length; the file is damaged", kind: .invalidFile)
        }
        let outerPoints = dataset.outer.flatMap { plan.dataset($0)?.points } ?? []
        var out: [SweepPointRecord] = []
        for i in index.indices {
            // 2⁶⁰ ps is 13 days: beyond it the counter's arithmetic could overflow.
            guard start[i] <= stop[i], start[i].magnitude < 1 << 60, stop[i].magnitude < 1 << 60 else {
                throw StoreError(
                    path: "\(path): sweeps/\(dataset.name)",
                    "point \(index[i]) covers [\(start[i]), \(stop[i])) ps, which no run can; the file is damaged", kind: .invalidFile)
            }
            var ref: PointRef?
            if let name = dataset.outer, !outer.isEmpty, outer[i] >= 0 {
                let k = Int(outer[i])
                ref = PointRef(sweep: name, index: k, label: outerPoints.indices.contains(k) ? outerPoints[k].label : "")
            }
            out.append(SweepPointRecord(
                sweep: dataset.name, index: Int(index[i]), label: label[i], settings: [:], startPs: start[i], stopPs: stop[i],
                outer: ref))
        }
        return out
    }

    /// The points and heralds of an `entangle` data set (`heralds/<name>`), or nil when the data
    /// set is not one. Heralds belong to points in order: each point row says how many it had.
    func storedHeralds(_ dataset: ReductionPlan.Dataset) throws -> [(EntanglementRecord, [HeraldRecord])]? {
        let herald = try self.herald
        guard herald.contains("heralds"), try herald.openGroup("heralds").contains(dataset.name) else { return nil }
        let g = try herald.openGroup("heralds").openGroup(dataset.name)
        let place = "\(path): /user/herald/heralds/\(dataset.name)"
        let nodes = (try g.stringAttribute("nodes") ?? "").split(separator: ",").map(String.init)
        let time = try g.dataset("time_ps").read(Int64.self), pattern = try g.dataset("pattern").read(Int64.self)
        let attempts = try g.dataset("attempts").read(Int64.self)
        var bases: [[Int64]] = [], outcomes: [[Int64]] = [], counts: [[Int64]] = []
        for n in nodes {
            let ng = try g.openGroup(n)
            bases.append(try ng.dataset("basis").read(Int64.self))
            outcomes.append(try ng.dataset("outcome").read(Int64.self))
            counts.append(try ng.dataset("counts").read(Int64.self))
        }
        let p = try g.openGroup("points")
        let start = try p.dataset("start_ps").read(Int64.self), stop = try p.dataset("stop_ps").read(Int64.self)
        let pointAttempts = try p.dataset("attempts").read(Int64.self), pointHeralds = try p.dataset("heralds").read(Int64.self)
        let timeouts = try p.dataset("timeouts").read(Int64.self), outer = try p.dataset("outer_index").read(Int64.self)
        let cycle = Int64(clampingRounded: ((try g.attribute("cycle_s", as: Double.self)) ?? 0) * 1e12)
        // 2⁶⁰ ps is 13 days: beyond it the analysis' arithmetic could overflow, as for sweeps.
        func sane(_ t: Int64) -> Bool { t.magnitude < 1 << 60 }
        // A crash can leave the last row short: read only what every column has.
        let rows = ([time.count, pattern.count, attempts.count] + bases.map(\.count) + outcomes.map(\.count) + counts.map(\.count)).min() ?? 0
        let pointRows = [start.count, stop.count, pointAttempts.count, pointHeralds.count, timeouts.count, outer.count].min() ?? 0
        let outerPoints = dataset.outer.flatMap { plan.dataset($0)?.points } ?? []
        var out: [(EntanglementRecord, [HeraldRecord])] = []
        var next = 0
        for i in 0..<pointRows {
            guard sane(start[i]), sane(stop[i]), start[i] <= stop[i] else {
                throw StoreError(path: place, "point \(i) covers [\(start[i]), \(stop[i])) ps, which no run can; the file is damaged", kind: .invalidFile)
            }
            guard pointHeralds[i] >= 0, pointHeralds[i] <= Int64(rows - next) else {
                throw StoreError(path: place, "point \(i) claims \(pointHeralds[i]) heralds beyond the \(rows) stored; the file is damaged", kind: .invalidFile)
            }
            var ref: PointRef?
            if let name = dataset.outer, outer[i] >= 0 {
                let k = Int(outer[i])
                ref = PointRef(sweep: name, index: k, label: outerPoints.indices.contains(k) ? outerPoints[k].label : "")
            }
            var heralds: [HeraldRecord] = []
            for (k, j) in (next..<(next + Int(pointHeralds[i]))).enumerated() {
                guard sane(time[j]) else {
                    throw StoreError(path: place, "herald \(j) is at \(time[j]) ps, which no run reaches; the file is damaged", kind: .invalidFile)
                }
                let b = bases.map { ReadoutBasis(index: Int($0[j])) }
                guard b.allSatisfy({ $0 != nil }) else {
                    throw StoreError(path: place, "herald \(j) has a basis code outside 0–2; the file is damaged", kind: .invalidFile)
                }
                heralds.append(
                    HeraldRecord(
                        dataset: dataset.name, index: k, timePs: time[j], pattern: Int(pattern[j]), attempts: attempts[j],
                        bases: b.compactMap { $0 }, outcomes: outcomes.map { Int($0[j]) }, counts: counts.map { Int($0[j]) }, outer: ref))
            }
            next += Int(pointHeralds[i])
            out.append(
                (EntanglementRecord(
                    dataset: dataset.name, startPs: start[i], stopPs: stop[i], attempts: pointAttempts[i], heralds: Int(pointHeralds[i]),
                    timeouts: Int(timeouts[i]), cyclePs: cycle, outer: ref), heralds))
        }
        // Heralds after the last finished point: the point a crash or failure cut short. They
        // are kept as a point of their own, spanning its heralds (its attempts after the last
        // herald and its timeouts were never recorded).
        let heraldOuter = try g.dataset("outer_index").read(Int64.self)
        if next < rows {
            var heralds: [HeraldRecord] = []
            for j in next..<rows {
                let b = bases.map { ReadoutBasis(index: Int($0[j])) }
                guard sane(time[j]), b.allSatisfy({ $0 != nil }) else {
                    throw StoreError(path: place, "herald \(j) is damaged (time \(time[j]) ps)", kind: .invalidFile)
                }
                var ref: PointRef?
                if let name = dataset.outer, heraldOuter.indices.contains(j), heraldOuter[j] >= 0 {
                    let k = Int(heraldOuter[j])
                    ref = PointRef(sweep: name, index: k, label: outerPoints.indices.contains(k) ? outerPoints[k].label : "")
                }
                heralds.append(
                    HeraldRecord(
                        dataset: dataset.name, index: j - next, timePs: time[j], pattern: Int(pattern[j]), attempts: attempts[j],
                        bases: b.compactMap { $0 }, outcomes: outcomes.map { Int($0[j]) }, counts: counts.map { Int($0[j]) }, outer: ref))
            }
            let first = heralds.first?.timePs ?? 0, last = heralds.last?.timePs ?? 0
            out.append(
                (EntanglementRecord(
                    dataset: dataset.name, startPs: first, stopPs: last.saturatingAdd(cycle),
                    attempts: heralds.reduce(0) { $0 &+ max(0, $1.attempts) }, heralds: heralds.count, timeouts: 0, cyclePs: cycle,
                    outer: heralds.first?.outer), heralds))
        }
        return out
    }

    /// Every acquisition of the run, with whether it counted (`acquisitions/`).
    func storedAcquisitions() throws -> [AcquisitionRecord] {
        let herald = try self.herald
        guard herald.contains("acquisitions") else {
            throw StoreError(path: "\(path): /user/herald/acquisitions", "is missing; the file is damaged", kind: .invalidFile)
        }
        let g = try herald.openGroup("acquisitions")
        let start = try g.dataset("start_ps").read(Int64.self), stop = try g.dataset("stop_ps").read(Int64.self)
        let counted = try g.dataset("counted").read(UInt8.self)
        let device = try g.dataset("device").read(Int64.self)
        let names = try g.dataset("device_names").readStrings()
        let n = min(start.count, stop.count, counted.count, device.count)
        return (0..<n).compactMap { i in
            guard start[i] <= stop[i], start[i].magnitude < 1 << 60, stop[i].magnitude < 1 << 60 else { return nil }
            let d = Int(device[i])
            return AcquisitionRecord(
                device: names.indices.contains(d) ? names[d] : "tagger", startPs: start[i], stopPs: stop[i], counted: counted[i] != 0)
        }
    }

    func storedLost(tagger: String? = nil) throws -> [ExcludedInterval] {
        var g = try self.herald
        if let tagger { g = try g.openGroup("taggers").openGroup(tagger) }
        guard g.contains("lost") else { return [] }
        g = try g.openGroup("lost")
        let start = try g.dataset("start_ps").read(Int64.self), stop = try g.dataset("stop_ps").read(Int64.self)
        let reason = try g.dataset("reason").readStrings()
        return try zip(start, stop).enumerated().map { i, s in
            // 2⁶⁰ ps is 13 days: beyond it a clock's correction could overflow.
            guard s.0 <= s.1, s.0.magnitude < 1 << 60, s.1.magnitude < 1 << 60 else {
                throw StoreError(
                    path: "\(path): \(tagger.map { "taggers/\($0)/" } ?? "")lost", "interval \(i) [\(s.0), \(s.1)) ps is not one a run records; the file is damaged",
                    kind: .invalidFile)
            }
            return ExcludedInterval(startPs: s.0, stopPs: s.1, reason: reason.indices.contains(i) ? reason[i] : "lost")
        }
    }
}

extension TagReader {
    /// The indices of the tags with start ≤ t < stop (the tags are in time order: checked first).
    func indices(from start: Int64, to stop: Int64) throws -> Range<Int> {
        let lo = try lowerBound(start), hi = try lowerBound(stop)
        guard hi >= lo else { throw StoreError(path: path + "/timestamps", "not in time order near element \(hi)", kind: .invalidFile) }
        return lo..<hi
    }

    func block(at range: Range<Int>) throws -> TagBlock {
        TagBlock(
            timestamps: try timestamps.read(Int64.self, offset: range.lowerBound, count: range.count),
            channels: try detectors.read(UInt8.self, offset: range.lowerBound, count: range.count))
    }
}
