import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldRunReader
import HeraldStore

extension Herald {
    /// What to change when recounting a stored run; nil and empty keep the run's own.
    public struct RecountOptions: Sendable {
        /// Full coincidence window, integer picoseconds like the tags.
        public var windowPs: Int64?
        /// Per-channel delays in picoseconds; channels not listed keep the run's delay.
        public var delaysPs: [Int: Int64]
        /// Tomography estimator.
        public var estimator: Estimator?

        public init(windowPs: Int64? = nil, delaysPs: [Int: Int64] = [:], estimator: Estimator? = nil) {
            self.windowPs = windowPs
            self.delaysPs = delaysPs
            self.estimator = estimator
        }
    }

    /// One analysis a recount added to the file.
    public struct RecountEntry: Sendable {
        public var entry: String
        public var record: AnalysisRecord
        /// The recounted points of the analysed data set (for a nested sweep: of its outer point).
        public var counts: [PointCounts]
    }

    /// Replays a stored run's events through the run reducer (the same code that counted and
    /// analysed it live) with the options applied, and appends every analysis it produces as
    /// a new entry under /user/herald/analysis; the run's own entries are never changed.
    public static func recount(path: String, _ options: RecountOptions = .init()) async throws -> [RecountEntry] {
        // Held from the first read to the last write: a file a live run is writing is refused,
        // naming the process, rather than read half-written.
        let lock = try RunFileLock(path: path, purpose: "herald analyze")
        defer { lock.release() }
        let stored = try StoredRun(path: path)
        let plan = stored.plan.recounted(windowPs: options.windowPs, delaysPs: options.delaysPs, estimator: options.estimator)
        guard !plan.analyses.isEmpty else {
            stored.close()
            throw StoreError(path: path, "the run's script has no analysis step to recompute", kind: .invalidFile)
        }
        let collector = RecountCollector()
        let reducer = RunReducer(plan: plan, downstream: [collector])
        do {
            try await stored.replay(analyses: plan.analyses) { try await reducer.handle($0) }
        } catch {
            stored.close()
            throw error
        }
        stored.close()
        let counts = await collector.counts
        let records = await collector.analyses.map { r in
            var r = r
            r.parameters["recounted_from"] = "raw tags, replayed through the run reducer (herald analyze)"
            return r
        }
        // Each analysis beside the points it was computed from (one outer point's, when nested).
        let perRecord = records.map { r in counts.filter { $0.sweep == r.parameters["sweep"] && $0.outer == r.outer } }
        let entries = try RunAnalysisAppender.append(records, counts: perRecord, to: path, holding: lock)
        return zip(zip(entries, records), perRecord).map { RecountEntry(entry: $0.0, record: $0.1, counts: $1) }
    }
}

/// Keeps what the reducer produced during a recount.
actor RecountCollector: RunEventSink {
    var analyses: [AnalysisRecord] = []
    var counts: [PointCounts] = []

    func handle(_ event: RunEvent) async throws {
        switch event {
        case .analysis(let a): analyses.append(a)
        case .counts(let c): counts.append(c)
        default: break
        }
    }
}
