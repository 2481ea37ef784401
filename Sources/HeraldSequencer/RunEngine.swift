import Foundation
import HeraldAnalysis
import HeraldCore
import Logging

/// Executes a plan against open devices and emits typed run events.
///
/// The engine owns *how* a plan runs: ordering, the tag-to-setting bookkeeping,
/// analysis at the point the script asks for it, and — on any failure or
/// cancellation — the safe state of every device, before the run-stop event that
/// lets the store close its file cleanly. Only the engine touches devices.
public final class RunEngine: Sendable {
    public let plan: Plan
    let devices: [String: any Device]
    let order: [String]
    let clock: any Clock<Duration>
    let sinks: [any RunEventSink]
    let logger: Logger

    public init(
        plan: Plan, devices: [String: any Device], clock: any Clock<Duration>, sinks: [any RunEventSink],
        logger: Logger = Logger(label: "herald.sequencer")
    ) {
        self.plan = plan
        self.devices = devices
        self.order = plan.devices.map(\.name)
        self.clock = clock
        self.sinks = sinks
        self.logger = logger
    }

    /// Runs the plan to completion, failure or cancellation. Never throws: how the
    /// run ended is in the returned stop record (and in the last event).
    public func run(start: RunStart) async -> RunStop {
        var state = RunState(plan: plan)
        var status = ExitStatus.success
        var reason: String?
        do {
            try await emit(.runStarted(start))
            for name in order {
                guard let device = devices[name] else { throw DeviceError(device: name, .notFound, "not opened") }
                try await device.connect()
            }
            for (index, step) in plan.steps.enumerated() {
                try Task.checkCancellation()
                try await emit(.stepStarted(index: index, summary: step.summary))
                try await execute(step, state: &state)
            }
        } catch is CancellationError {
            status = .aborted
            reason = "cancelled by the user"
        } catch {
            status = Task.isCancelled ? .aborted : .failed
            reason = String(describing: error)
        }
        if status != .success {
            logger.error("run \(status.rawValue): \(reason ?? "")")
            await safeStop()
        }
        for name in order.reversed() { await devices[name]?.disconnect() }
        let stop = RunStop(status: status, reason: reason, stoppedAt: Date(), tagCount: state.tagCount)
        do {
            try await emit(.runStopped(stop))
        } catch {
            logger.error("a consumer failed while closing the run: \(error)")
        }
        return stop
    }

    /// Puts every device in its safe state, even if some fail: one failing device
    /// must not leave another's laser on.
    func safeStop() async {
        for name in order {
            guard let device = devices[name] else { continue }
            do {
                try await device.enterSafeState()
                logger.notice("\(name): safe state")
            } catch {
                logger.critical("\(name): could not enter its safe state: \(error)")
            }
        }
    }

    func emit(_ event: RunEvent) async throws {
        for sink in sinks { try await sink.handle(event) }
    }

    func device(_ name: String) throws -> any Device {
        guard let d = devices[name] else { throw DeviceError(device: name, .notFound, "not part of this run") }
        return d
    }

    func apply(_ assignments: [Assignment]) async throws {
        for a in assignments {
            try Task.checkCancellation()
            try await device(a.device).set(a.property, to: a.value)
        }
    }

    func execute(_ step: PlanStep, state: inout RunState) async throws {
        switch step {
        case .set(let assignments):
            try await apply(assignments)
        case .wait(let duration, _):
            try await clock.sleep(for: duration)
        case .acquire(let name, let duration, _):
            guard let tagger = try device(name) as? any TimeTagger else {
                throw DeviceError(device: name, .unsupported, "is not a time tagger")
            }
            let collector = state.point?.collector
            let sinks = self.sinks
            let counter = TagCounter()
            let interval = try await tagger.acquire(for: duration) { block in
                collector?.add(block)
                counter.add(block.count)
                for sink in sinks { try await sink.handle(.tags(device: name, block)) }
            }
            state.tagCount += counter.value
            state.point?.cover(interval)
        case .sweep(let sweep):
            let spec = state.countingSpecs[sweep.name]
            for (index, point) in sweep.points.enumerated() {
                try Task.checkCancellation()
                try await emit(.sweepPointStarted(sweep: sweep.name, index: index, of: sweep.points.count, label: point.label))
                try await apply(point.assignments)
                let outer = state.point
                state.point = PointContext(spec: spec)
                for inner in sweep.body { try await execute(inner, state: &state) }
                guard let finished = state.point else { continue }
                state.point = outer
                let settings = Dictionary(
                    point.assignments.map { ("\($0.device).\($0.property)", $0.value.description) },
                    uniquingKeysWith: { _, b in b })
                let record = SweepPointRecord(
                    sweep: sweep.name, index: index, label: point.label, settings: settings,
                    startPs: finished.startPs ?? 0, stopPs: finished.stopPs ?? 0)
                try await emit(.sweepPointFinished(record))
                if let spec, let counts = finished.counts(spec: spec, sweep: sweep.name, index: index, point: point) {
                    state.counts[sweep.name, default: []].append((point, counts))
                    try await emit(.counts(counts))
                }
            }
        case .tomography(let spec, _):
            let record = try tomography(spec, counts: state.counts[spec.sweep] ?? [])
            try await emit(.analysis(record))
        }
    }

    func tomography(_ spec: TomographySpec, counts: [(SweepPoint, PointCounts)]) throws -> AnalysisRecord {
        var projections: [Projection] = []
        for (point, pc) in counts {
            guard let (la, lb) = point.projection else { continue }
            for pair in pc.pairs {
                let a = pair.channelA == spec.armA.pass ? la : la.orthogonal
                let b = pair.channelB == spec.armB.pass ? lb : lb.orthogonal
                projections.append(
                    Projection(a, b, counts: Double(pair.coincidences), accidentals: pair.accidentals))
            }
        }
        let result = try Tomography.reconstruct(projections, accidentals: spec.subtractAccidentals ? .subtract : .keep)
        var notes: [String] = []
        if result.linearMinEigenvalue < 0 {
            notes.append(
                "linear inversion was unphysical (smallest eigenvalue \(result.linearMinEigenvalue)); "
                    + "figures of merit use the closest physical state")
        }
        var values = result.figures
        values["fidelity"] = result.figures["fidelity_" + spec.target]
        values["intensity"] = result.intensity
        values["linear_min_eigenvalue"] = result.linearMinEigenvalue
        var errors = result.uncertainties
        errors["fidelity"] = result.uncertainties["fidelity_" + spec.target]
        return AnalysisRecord(
            name: "tomography", estimator: "linear+closest-physical",
            parameters: [
                "sweep": spec.sweep, "window_s": "\(spec.window)", "target": spec.target,
                "accidentals": spec.subtractAccidentals ? "subtract" : "keep",
                "projections": "\(projections.count)",
                "delays_s": spec.delays.sorted { $0.key < $1.key }.map { "\($0.key):\($0.value)" }.joined(separator: ","),
            ],
            values: values, uncertainties: errors,
            rhoReal: result.physical.elements.map(\.real), rhoImag: result.physical.elements.map(\.imaginary),
            notes: notes)
    }
}

/// Mutable bookkeeping of one run, owned by the engine's task.
struct RunState {
    var tagCount = 0
    var point: PointContext?
    var counts: [String: [(SweepPoint, PointCounts)]] = [:]
    /// Sweeps whose points must be coincidence-counted, and how.
    let countingSpecs: [String: TomographySpec]

    init(plan: Plan) {
        var specs: [String: TomographySpec] = [:]
        func scan(_ steps: [PlanStep]) {
            for s in steps {
                switch s {
                case .tomography(let spec, _): specs[spec.sweep] = spec
                case .sweep(let sweep): scan(sweep.body)
                default: break
                }
            }
        }
        scan(plan.steps)
        countingSpecs = specs
    }
}

/// Per-sweep-point state: the interval covered and the tags of the counted channels.
struct PointContext {
    var startPs: Int64?
    var stopPs: Int64?
    var seconds = 0.0
    let collector: ChannelCollector?

    init(spec: TomographySpec?) {
        if let spec {
            let channels = Set(spec.channelPairs.flatMap { [$0.0, $0.1] })
            collector = ChannelCollector(channels: channels)
        } else {
            collector = nil
        }
    }

    mutating func cover(_ interval: AcquisitionInterval) {
        startPs = min(startPs ?? interval.startPs, interval.startPs)
        stopPs = max(stopPs ?? interval.stopPs, interval.stopPs)
        seconds += interval.seconds
    }

    func counts(spec: TomographySpec, sweep: String, index: Int, point: SweepPoint) -> PointCounts? {
        guard let collector else { return nil }
        let counter = CoincidenceCounter(window: spec.window, delays: spec.delays)
        let tags = collector.snapshot()
        var shifted: [Int: [Int64]] = [:]
        for (channel, times) in tags {
            let d = counter.delaysPs[channel] ?? 0
            shifted[channel] = d == 0 ? times : times.map { $0 + d }
        }
        var pairs: [PointCounts.Pair] = []
        for (ca, cb) in spec.channelPairs {
            let a = shifted[ca] ?? [], b = shifted[cb] ?? []
            let la = point.projection.map { ca == spec.armA.pass ? $0.a : $0.a.orthogonal }
            let lb = point.projection.map { cb == spec.armB.pass ? $0.b : $0.b.orthogonal }
            pairs.append(
                PointCounts.Pair(
                    channelA: ca, channelB: cb, projection: (la?.rawValue ?? "?") + (lb?.rawValue ?? "?"),
                    coincidences: counter.count(a, b), accidentals: counter.accidentals(a.count, b.count, seconds: seconds)))
        }
        return PointCounts(
            sweep: sweep, index: index, label: point.label, duration: seconds,
            singles: tags.mapValues(\.count), pairs: pairs)
    }
}
