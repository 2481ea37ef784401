import Foundation
import HeraldCore
import Synchronization

/// A run as it goes, digested from its events into one ``LiveSnapshot``: progress, rates,
/// pauses, per-point results, analyses, heralds and node health.
///
/// It is a consumer like the recorder, and it must never slow the run: each event does a
/// constant amount of work under a lock (a tag block costs one pass over its channel bytes),
/// and readers (the terminal line, the monitor's page, `/metrics`) take snapshots on their
/// own schedule. A reader that looks less often than the run changes sees fewer updates,
/// never a stalled run: updates are dropped, tags never.
public final class LiveRun: RunEventSink {
    /// The longest trace kept: beyond it neighbouring bins merge, so the whole run stays in view.
    public static let maxTracePoints = 512
    /// Singles are binned over this much lab time at first (bins double as the trace grows).
    public static let initialBinSeconds = 0.1

    private let state: Mutex<LiveState>
    private let wallStart: ContinuousClock.Instant

    public init() {
        state = Mutex(LiveState())
        wallStart = .now
    }

    /// Bumped by every event that changes what a reader would show.
    public var version: Int { state.withLock { $0.version } }

    /// The run's state alone, without copying a snapshot.
    public var runState: LiveSnapshot.State { state.withLock { $0.snapshot.state } }

    /// What the run looks like now.
    public func snapshot() -> LiveSnapshot {
        let elapsed = ContinuousClock.now - wallStart
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
        return state.withLock { $0.snapshot(wallSeconds: seconds) }
    }

    public func handle(_ event: RunEvent) async throws { state.withLock { $0.apply(event) } }
}

/// The digest's mutable side: everything under one lock, updated in O(1) per event (a tag
/// block in O(block)).
struct LiveState {
    var version = 0
    var snapshot = LiveSnapshot()
    var channelCounts = [Int](repeating: 0, count: 256)
    /// Per tagger: the open singles bin (its start in lab ps and counts per channel).
    var openBins: [String: (startPs: Int64, counts: [Int])] = [:]
    var binPs: [String: Int64] = [:]
    var lastStopPs: Int64 = 0
    var pairKeys: Set<String> = []
    /// The node each remote device lives on, from the run's device records.
    var nodeDevices: [String: String] = [:]
    var acquiredByDevice: [String: Double] = [:]

    mutating func apply(_ event: RunEvent) {
        switch event {
        case .runStarted(let start):
            let plan = start.plan
            snapshot.run = .init(
                name: plan.name, runID: start.runID.uuidString, script: plan.scriptPath, mock: start.mock, seed: start.seed,
                startedAt: ISO8601DateFormatter().string(from: start.startedAt), heraldVersion: start.heraldVersion,
                devices: start.devices.map { .init(name: $0.name, driver: $0.driver) },
                interlocks: plan.interlocks.map { .init(name: $0.name, condition: $0.condition.description, ok: true) })
            nodeDevices = Dictionary(start.devices.compactMap { r in r.settings["node"].map { (r.name, $0) } }) { a, _ in a }
            snapshot.nodes = plan.nodes.map { .init(name: $0.name, address: "\($0.host):\($0.port)", up: true, detail: "leased") }
            snapshot.state = .running
            snapshot.plannedSeconds = plan.acquisitionSeconds
            snapshot.pointsTotal = LiveState.points(in: plan.steps)
            // The pairs the script analyses, in script order, each traced per point.
            for analysis in ReductionPlan(plan: plan).analyses {
                for pair in analysis.counting?.pairs ?? [] where !pairKeys.contains("\(pair.a)-\(pair.b)") {
                    pairKeys.insert("\(pair.a)-\(pair.b)")
                    snapshot.pairs.append(.init(a: pair.a, b: pair.b))
                }
            }
        case .stepStarted(_, let summary):
            snapshot.step = summary
        case .sweepPointStarted(let sweep, let index, let count, let label):
            snapshot.point = .init(sweep: sweep, index: index, of: count, label: label)
        case .tags(let device, let block):
            guard let first = block.timestamps.first, let last = block.timestamps.last else { return }
            snapshot.tags += block.count
            addSingles(device: device, block: block, firstPs: first, lastPs: last)
            // Not a version bump of its own: tags come thousands of times a second, and the
            // binned traces change only when a bin closes (which bumps it).
            return
        case .sweepPointFinished(let record):
            snapshot.pointsDone += 1
            lastStopPs = max(lastStopPs, record.stopPs)
        case .acquired(let a):
            lastStopPs = max(lastStopPs, a.stopPs)
            // Live time from the acquisitions (a nested sweep's outer point spans its inner
            // ones, so points would count it twice); a group's taggers each report the same stretch.
            acquiredByDevice[a.device, default: 0] += a.seconds.isFinite ? max(0, a.seconds) : 0
            snapshot.acquiredSeconds = acquiredByDevice.values.max() ?? 0
            // A singles bin ends with its acquisition, so it never spans a waveplate move or a pause.
            closeBin(device: a.device, atPs: a.stopPs)
        case .counts(let c):
            addCounts(c)
        case .analysis(let a):
            snapshot.analyses.removeAll { $0.name == a.name && $0.outer == a.outer?.label }
            snapshot.analyses.append(LiveSnapshot.Analysis(a))
            if let key = a.values.keys.sorted().first(where: { $0.hasPrefix("fidelity") }) {
                snapshot.entanglement.fidelity = a.values[key]
                snapshot.entanglement.fidelityError = a.uncertainties[key]
                snapshot.entanglement.fidelityTarget = String(key.dropFirst("fidelity".count).drop { $0 == "_" })
            }
        case .herald:
            snapshot.entanglement.heralds += 1
        case .entangled(let r):
            let seconds = r.seconds
            snapshot.entanglement.attempts += r.attempts
            snapshot.entanglement.timeouts += r.timeouts
            if seconds > 0 {
                snapshot.entanglement.rate.append(
                    .init(t: Double(r.stopPs) * 1e-12, value: Double(r.heralds) / seconds, error: Double(r.heralds).squareRoot() / seconds))
            }
            lastStopPs = max(lastStopPs, r.stopPs)
        case .recorded: break
        case .pauseStarted(let p):
            snapshot.state = .paused
            snapshot.pause = .init(interlock: p.interlock, condition: p.condition, startS: Double(p.startPs) * 1e-12, stopS: nil)
            setInterlock(p.interlock, ok: false)
            setNode(p.interlock, up: false, detail: p.condition)
        case .pause(let p):
            snapshot.pauses.append(
                .init(interlock: p.interlock, condition: p.condition, startS: Double(p.startPs) * 1e-12, stopS: Double(p.stopPs) * 1e-12))
            if snapshot.pause?.interlock == p.interlock || snapshot.pause == nil {
                snapshot.pause = nil
                if snapshot.state == .paused { snapshot.state = .running }
            }
            setInterlock(p.interlock, ok: p.resumed)
            setNode(p.interlock, up: p.resumed, detail: p.resumed ? "reconnected" : p.condition)
        case .log(let line):
            snapshot.log.append(line)
            if snapshot.log.count > 50 { snapshot.log.removeFirst(snapshot.log.count - 50) }
        case .runStopped(let stop):
            snapshot.state = .stopped
            snapshot.status = stop.status.rawValue
            snapshot.reason = stop.reason
            snapshot.tags = max(snapshot.tags, stop.tagCount)
            if case .device(let device, _)? = stop.failure, let node = nodeDevices[device] {
                setNode(node, up: false, detail: stop.reason ?? "failed")
            }
            for key in openBins.keys.sorted() { closeBin(device: key, atPs: lastStopPs) }
        case .streamDeclared, .analysisRequested, .clocks:
            return
        }
        version += 1
    }


    private mutating func setInterlock(_ name: String, ok: Bool) {
        guard let i = snapshot.run?.interlocks.firstIndex(where: { $0.name == name }) else { return }
        snapshot.run?.interlocks[i].ok = ok
    }

    /// A link outage pauses the run under the links' names, which are the nodes'.
    private mutating func setNode(_ links: String, up: Bool, detail: String) {
        for name in links.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            guard let i = snapshot.nodes.firstIndex(where: { $0.name == name }) else { continue }
            snapshot.nodes[i].up = up
            snapshot.nodes[i].detail = detail
        }
    }

    private mutating func addSingles(device: String, block: TagBlock, firstPs: Int64, lastPs: Int64) {
        let width = binPs[device] ?? Int64(LiveRun.initialBinSeconds * 1e12)
        binPs[device] = width
        // A block is counted into the bin it starts in: blocks are short beside a bin, so
        // this places each tag within one block's span of its true bin. A bin ends where the
        // next one begins, so no stretch of time is left out of the rates.
        if let open = openBins[device], firstPs >= (open.startPs > Int64.max - width ? Int64.max : open.startPs + width) || firstPs < open.startPs {
            closeBin(device: device, atPs: firstPs)
        }
        if openBins[device] == nil { openBins[device] = (startPs: firstPs, counts: [Int](repeating: 0, count: 256)) }
        block.countChannels(into: &channelCounts)
        if var open = openBins[device] {
            for (channel, n) in channelCounts.enumerated() where n > 0 {
                open.counts[channel] += n
                channelCounts[channel] = 0
            }
            openBins[device] = open
        }
        let span = (Double(lastPs) - Double(firstPs)) * 1e-12
        if span > 0 { snapshot.tagRate = Double(block.count) / span }
    }

    /// Ends a tagger's open singles bin at `atPs`: one trace point per channel it saw.
    private mutating func closeBin(device: String, atPs: Int64) {
        guard let open = openBins[device] else { return }
        openBins[device] = nil
        let seconds = (Double(atPs) - Double(open.startPs)) * 1e-12
        guard seconds > 0 else { return }
        let mid = (Double(open.startPs) + Double(atPs)) * 0.5e-12
        var full = false
        for (channel, n) in open.counts.enumerated() where n > 0 {
            let index: Int
            if let i = snapshot.singles.firstIndex(where: { $0.device == device && $0.channel == channel }) {
                index = i
            } else {
                snapshot.singles.append(.init(device: device, channel: channel))
                snapshot.singles.sort { ($0.device, $0.channel) < ($1.device, $1.channel) }
                guard let i = snapshot.singles.firstIndex(where: { $0.device == device && $0.channel == channel }) else { continue }
                index = i
            }
            snapshot.singles[index].trace.append(.init(t: mid, value: Double(n) / seconds, error: Double(n).squareRoot() / seconds))
            if snapshot.singles[index].trace.count > LiveRun.maxTracePoints { full = true }
        }
        // Every trace of the tagger merges at once and its bins widen once (not once per
        // channel), capped at a day so the width can never overflow.
        if full {
            for i in snapshot.singles.indices where snapshot.singles[i].device == device {
                snapshot.singles[i].trace = LiveSnapshot.Sample.merged(snapshot.singles[i].trace)
            }
            binPs[device] = min((binPs[device] ?? 0) * 2, 86_400_000_000_000_000)
        }
        version += 1
    }

    private mutating func addCounts(_ c: PointCounts) {
        guard c.duration > 0 else { return }
        let t = Double(lastStopPs) * 1e-12
        var row = LiveSnapshot.PointResult(
            sweep: c.sweep, index: c.index, label: c.label, outer: c.outer?.label, duration: c.duration, rates: [:])
        for pair in c.pairs {
            let key = "\(pair.channelA)-\(pair.channelB)"
            let rate = Double(pair.coincidences) / c.duration, error = Double(pair.coincidences).squareRoot() / c.duration
            row.rates[key] = .init(t: t, value: rate, error: error)
            if let i = snapshot.pairs.firstIndex(where: { $0.a == pair.channelA && $0.b == pair.channelB }) {
                snapshot.pairs[i].trace.append(.init(t: t, value: rate, error: error))
                snapshot.pairs[i].coincidences += pair.coincidences
                if snapshot.pairs[i].trace.count > LiveRun.maxTracePoints {
                    snapshot.pairs[i].trace = LiveSnapshot.Sample.merged(snapshot.pairs[i].trace)
                }
            }
        }
        for (channel, n) in c.singles { row.singles["\(channel)"] = Double(n) / c.duration }
        snapshot.results.append(row)
        if snapshot.results.count > 4 * LiveRun.maxTracePoints { snapshot.results.removeFirst() }
    }

    /// Sweep points (and named acquisitions) the plan will finish: what "point k of n" counts.
    static func points(in steps: [PlanStep]) -> Int {
        steps.reduce(0) { total, step in
            switch step {
            case .sweep(let s): return total + s.points.count * (1 + points(in: s.body))
            case .acquire(_, _, _?, _), .entangle: return total + 1
            default: return total
            }
        }
    }

    func snapshot(wallSeconds: Double) -> LiveSnapshot {
        var s = snapshot
        s.version = version
        s.wallSeconds = wallSeconds
        // By points where the plan has them (a point's span includes any pause in it, so
        // lab time would overrun the plan), else by lab time acquired against planned.
        if s.state != .stopped, s.pointsTotal > 0, s.pointsDone > 0 {
            s.etaSeconds = wallSeconds * Double(max(0, s.pointsTotal - s.pointsDone)) / Double(s.pointsDone)
        } else if s.acquiredSeconds > 0, s.plannedSeconds > s.acquiredSeconds, s.state != .stopped {
            s.etaSeconds = wallSeconds * (s.plannedSeconds - s.acquiredSeconds) / s.acquiredSeconds
        } else if s.state == .stopped {
            s.etaSeconds = 0
        }
        return s
    }
}

/// One moment of a run, as the terminal line, the monitor's page and `/metrics` show it.
/// Times `t` are lab seconds on the run's tag clock; rates are per second with their 1σ
/// counting (Poisson) error √n / T.
public struct LiveSnapshot: Sendable, Codable, Equatable {
    public enum State: String, Sendable, Codable { case starting, running, paused, stopped }

    public struct RunInfo: Sendable, Codable, Equatable {
        public var name, runID, script: String
        public var mock: Bool
        public var seed: UInt64?
        public var startedAt, heraldVersion: String
        public var devices: [Device]
        public var interlocks: [Interlock]
    }

    public struct Device: Sendable, Codable, Equatable {
        public var name, driver: String
    }

    public struct Interlock: Sendable, Codable, Equatable {
        public var name, condition: String
        public var ok: Bool
    }

    public struct Point: Sendable, Codable, Equatable {
        public var sweep: String
        public var index, of: Int
        public var label: String
    }

    public struct Pause: Sendable, Codable, Equatable {
        public var interlock, condition: String
        public var startS: Double
        /// nil while it lasts.
        public var stopS: Double?
    }

    public struct Sample: Sendable, Codable, Equatable {
        public var t, value, error: Double

        /// Neighbours merged pairwise (mean time and rate, errors combined): half the points.
        static func merged(_ samples: [Sample]) -> [Sample] {
            stride(from: 0, to: samples.count, by: 2).map { i in
                guard i + 1 < samples.count else { return samples[i] }
                let a = samples[i], b = samples[i + 1]
                return Sample(
                    t: (a.t + b.t) / 2, value: (a.value + b.value) / 2,
                    error: (a.error * a.error + b.error * b.error).squareRoot() / 2)
            }
        }
    }

    public struct ChannelTrace: Sendable, Codable, Equatable {
        public var device: String
        public var channel: Int
        public var trace: [Sample] = []
    }

    public struct PairTrace: Sendable, Codable, Equatable {
        public var a, b: Int
        /// `1-3`, as the file's pair columns and the analyses name it.
        public var name: String
        public var coincidences = 0
        /// One sample per point: its coincidences over its live time.
        public var trace: [Sample] = []

        init(a: Int, b: Int) {
            self.a = a
            self.b = b
            name = "\(a)-\(b)"
        }
    }

    /// One finished point: coincidence rates per pair ("1-3") and singles rates per channel.
    public struct PointResult: Sendable, Codable, Equatable {
        public var sweep: String
        public var index: Int
        public var label: String
        public var outer: String?
        public var duration: Double
        public var rates: [String: Sample]
        public var singles: [String: Double] = [:]
    }

    public struct Analysis: Sendable, Codable, Equatable {
        public var name, estimator: String
        public var outer: String?
        public var values: [String: Double]
        public var uncertainties: [String: Double]
        /// ρ row-major, real and imaginary parts, `dimension` × `dimension` (empty for other analyses).
        public var rhoReal, rhoImag: [Double]
        public var dimension: Int
        public var series: [String: [Double]]
        public var labels: [String]

        init(_ a: AnalysisRecord) {
            name = a.name
            estimator = a.estimator
            outer = a.outer?.label
            values = a.values.filter { $0.value.isFinite }
            uncertainties = a.uncertainties.filter { $0.value.isFinite }
            rhoReal = a.rhoReal
            rhoImag = a.rhoImag
            dimension = Int(Double(a.rhoReal.count).squareRoot().rounded())
            series = a.series.mapValues { $0.map { $0.isFinite ? $0 : 0 } }
            labels = a.labels
        }
    }

    public struct Entanglement: Sendable, Codable, Equatable {
        public var heralds = 0
        public var attempts: Int64 = 0
        public var timeouts = 0
        /// Heralds per second, one sample per `entangle` point.
        public var rate: [Sample] = []
        public var fidelity: Double?
        public var fidelityError: Double?
        public var fidelityTarget: String?
    }

    public struct NodeHealth: Sendable, Codable, Equatable {
        public var name, address: String
        public var up: Bool
        public var detail: String
    }

    public var version = 0
    public var run: RunInfo?
    public var state = State.starting
    public var status: String?
    public var reason: String?
    public var step: String?
    public var point: Point?
    public var pointsDone = 0
    public var pointsTotal = 0
    public var acquiredSeconds = 0.0
    public var plannedSeconds = 0.0
    public var wallSeconds = 0.0
    public var etaSeconds: Double?
    public var tags = 0
    /// The rate of the latest tag block, all channels.
    public var tagRate = 0.0
    /// The pause in force, if any.
    public var pause: Pause?
    public var pauses: [Pause] = []
    public var singles: [ChannelTrace] = []
    public var pairs: [PairTrace] = []
    public var results: [PointResult] = []
    public var analyses: [Analysis] = []
    public var entanglement = Entanglement()
    public var nodes: [NodeHealth] = []
    public var log: [String] = []

    public init() {}
}
