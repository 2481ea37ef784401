import Foundation
import Synchronization

/// Why a run is being stopped from outside (a signal), set before its task is cancelled,
/// so the file's `reason` says what stopped it.
public final class StopRequest: Sendable {
    private let stored = Mutex<String?>(nil)
    public init() {}
    public func request(_ reason: String) { stored.withLock { if $0 == nil { $0 = reason } } }
    public var reason: String? { stored.withLock { $0 } }
}

/// How a run ended.
public enum ExitStatus: String, Sendable, Codable {
    case success
    case failed
    case aborted
}

/// Identity of a device as it took part in a run.
public struct DeviceRecord: Sendable, Codable, Equatable {
    public var name: String
    public var driver: String
    public var driverVersion: String
    public var settings: [String: String]

    public init(name: String, driver: String, driverVersion: String, settings: [String: String]) {
        self.name = name
        self.driver = driver
        self.driverVersion = driverVersion
        self.settings = settings
    }
}

public struct RunStart: Sendable {
    public var runID: UUID
    public var plan: Plan
    public var devices: [DeviceRecord]
    public var seed: UInt64?
    public var mock: Bool
    public var startedAt: Date
    public var heraldVersion: String

    public init(
        runID: UUID, plan: Plan, devices: [DeviceRecord], seed: UInt64?, mock: Bool, startedAt: Date,
        heraldVersion: String
    ) {
        self.runID = runID
        self.plan = plan
        self.devices = devices
        self.seed = seed
        self.mock = mock
        self.startedAt = startedAt
        self.heraldVersion = heraldVersion
    }
}

/// One row of the sweep table: which setting was in force over which interval of the tag stream.
public struct SweepPointRecord: Sendable, Equatable {
    public var sweep: String
    public var index: Int
    public var label: String
    public var settings: [String: String]
    public var startPs: Int64
    public var stopPs: Int64
    /// The point of the enclosing sweep this point ran inside, for nested sweeps.
    public var outer: PointRef?

    public init(
        sweep: String, index: Int, label: String, settings: [String: String], startPs: Int64, stopPs: Int64,
        outer: PointRef? = nil
    ) {
        self.sweep = sweep
        self.index = index
        self.label = label
        self.settings = settings
        self.startPs = startPs
        self.stopPs = stopPs
        self.outer = outer
    }
}

/// Names one point of a data set: the outer point of a nested sweep's point or analysis.
/// One property read by a `record` step: which, what it read, and in which point (nil at top level).
public struct RecordedReading: Sendable, Equatable {
    public var device: String
    public var property: String
    public var value: Value
    public var point: PointRef?
    /// The tag clock when it was read (the end of the last acquisition).
    public var timePs: Int64

    public init(device: String, property: String, value: Value, point: PointRef?, timePs: Int64) {
        self.device = device
        self.property = property
        self.value = value
        self.point = point
        self.timePs = timePs
    }
}

public struct PointRef: Sendable, Hashable, Codable {
    public var sweep: String
    public var index: Int
    public var label: String

    public init(sweep: String, index: Int, label: String) {
        self.sweep = sweep
        self.index = index
        self.label = label
    }
}

/// One stretch of the tag stream a tagger acquired. `counted` is false for a stretch that
/// overlapped an interlock violation: its tags stay in the raw data, not in the counts.
public struct AcquisitionRecord: Sendable, Equatable {
    public var device: String
    public var startPs: Int64
    public var stopPs: Int64
    public var counted: Bool

    public init(device: String, startPs: Int64, stopPs: Int64, counted: Bool) {
        self.device = device
        self.startPs = startPs
        self.stopPs = stopPs
        self.counted = counted
    }

    public var seconds: Double { Double(stopPs - startPs) * 1e-12 }
}

/// Coincidences counted for one sweep point.
public struct PointCounts: Sendable, Equatable {
    public struct Pair: Sendable, Equatable {
        public var channelA: Int
        public var channelB: Int
        /// Projected states (transmitted or reflected port) of this detector pair.
        public var projection: String
        public var coincidences: Int
        /// Accidentals expected from the singles: S_a·S_b·window / T.
        public var accidentals: Double

        public init(channelA: Int, channelB: Int, projection: String, coincidences: Int, accidentals: Double) {
            self.channelA = channelA
            self.channelB = channelB
            self.projection = projection
            self.coincidences = coincidences
            self.accidentals = accidentals
        }
    }

    public var sweep: String
    public var index: Int
    public var label: String
    /// Live time: the counted acquisitions of the point, in seconds.
    public var duration: Double
    public var singles: [Int: Int]
    public var pairs: [Pair]
    /// The enclosing sweep's point, for a point of a nested sweep.
    public var outer: PointRef?

    public init(
        sweep: String, index: Int, label: String, duration: Double, singles: [Int: Int], pairs: [Pair], outer: PointRef? = nil
    ) {
        self.sweep = sweep
        self.index = index
        self.label = label
        self.duration = duration
        self.singles = singles
        self.pairs = pairs
        self.outer = outer
    }
}

/// The result of an analysis step, in a form any consumer can record.
public struct AnalysisRecord: Sendable, Equatable {
    public var name: String
    public var estimator: String
    public var parameters: [String: String]
    /// Figures of merit, e.g. `fidelity_phi+`, `concurrence`.
    public var values: [String: Double]
    /// One-standard-deviation uncertainties of `values`, same keys.
    public var uncertainties: [String: Double]
    /// Density matrix, row-major, real and imaginary parts (empty for other analyses).
    public var rhoReal: [Double]
    public var rhoImag: [Double]
    public var notes: [String]
    /// Per-point tables (e.g. `rate_1` per sweep point), each as long as the data set.
    public var series: [String: [Double]] = [:]
    /// For an analysis of a nested sweep: the outer point whose inner points it analysed.
    public var outer: PointRef?
    /// The label of each point the `series` run over.
    public var labels: [String] = []

    public init(
        name: String, estimator: String, parameters: [String: String], values: [String: Double],
        uncertainties: [String: Double], rhoReal: [Double] = [], rhoImag: [Double] = [], notes: [String] = []
    ) {
        self.name = name
        self.estimator = estimator
        self.parameters = parameters
        self.values = values
        self.uncertainties = uncertainties
        self.rhoReal = rhoReal
        self.rhoImag = rhoImag
        self.notes = notes
    }
}

/// An interval during which an interlock paused acquisition. Tags in [startPs, stopPs)
/// stay in the raw data but are excluded from counts and analysis.
public struct PauseRecord: Sendable, Equatable {
    public var interlock: String
    public var condition: String
    public var startPs: Int64
    public var stopPs: Int64
    /// False when the condition never cleared and the run failed.
    public var resumed: Bool

    public init(interlock: String, condition: String, startPs: Int64, stopPs: Int64, resumed: Bool) {
        self.interlock = interlock
        self.condition = condition
        self.startPs = startPs
        self.stopPs = stopPs
        self.resumed = resumed
    }
}

public struct RunStop: Sendable {
    public var status: ExitStatus
    public var reason: String?
    /// What failed, typed (nil on success).
    public var failure: RunFailure?
    public var stoppedAt: Date
    public var tagCount: Int

    public init(status: ExitStatus, reason: String?, failure: RunFailure? = nil, stoppedAt: Date, tagCount: Int) {
        self.status = status
        self.reason = reason
        self.failure = failure
        self.stoppedAt = stoppedAt
        self.tagCount = tagCount
    }
}

/// What the events of one stream carry: each field with its type and unit. Emitted once
/// per stream before its first event, so a consumer that knows nothing of the engine (a
/// live monitor, a remote node) can interpret them; the recorder stores them too.
public struct StreamDescriptor: Sendable, Equatable, Codable {
    public struct Field: Sendable, Equatable, Codable {
        public var name: String
        /// `int64`, `uint8`, `float64`, `bool` or `text`.
        public var type: String
        /// As the HDF5 `units` attribute spells it ("1" for a pure number).
        public var unit: String

        public init(_ name: String, _ type: String, unit: String) {
            self.name = name
            self.type = type
            self.unit = unit
        }
    }

    /// `tags/<device>`, `points`, `acquisitions`, `pauses`, `counts`, `analyses`.
    public var stream: String
    /// Who emits it: a device, the engine or the reducer.
    public var source: String
    public var fields: [Field]

    public init(stream: String, source: String, fields: [Field]) {
        self.stream = stream
        self.source = source
        self.fields = fields
    }

    /// The engine's streams for a plan: tags of each tagger, points, acquisitions, pauses.
    public static func engineStreams(taggers: [String], entangles: Bool = false) -> [StreamDescriptor] {
        let heralds = StreamDescriptor(
            stream: "heralds", source: "engine",
            fields: [
                Field("dataset", "text", unit: "1"), Field("time", "int64", unit: "ps"), Field("pattern", "int64", unit: "1"),
                Field("attempts", "int64", unit: "1"), Field("basis", "int64", unit: "1 (per node: 0 X, 1 Y, 2 Z)"),
                Field("outcome", "int64", unit: "1 (per node: ±1)"), Field("counts", "int64", unit: "counts (per node)"),
            ])
        return (entangles ? [heralds] : []) + taggers.map {
            StreamDescriptor(
                stream: "tags/\($0)", source: $0,
                fields: [Field("timestamp", "int64", unit: "ps"), Field("channel", "uint8", unit: "1")])
        } + [
            StreamDescriptor(
                stream: "points", source: "engine",
                fields: [
                    Field("sweep", "text", unit: "1"), Field("index", "int64", unit: "1"), Field("label", "text", unit: "1"),
                    Field("start", "int64", unit: "ps"), Field("stop", "int64", unit: "ps"), Field("outer_index", "int64", unit: "1"),
                ]),
            StreamDescriptor(
                stream: "acquisitions", source: "engine",
                fields: [
                    Field("device", "text", unit: "1"), Field("start", "int64", unit: "ps"), Field("stop", "int64", unit: "ps"),
                    Field("counted", "bool", unit: "1"),
                ]),
            StreamDescriptor(
                stream: "pauses", source: "engine",
                fields: [Field("interlock", "text", unit: "1"), Field("start", "int64", unit: "ps"), Field("stop", "int64", unit: "ps")]),
        ]
    }

    /// The reducer's clocks stream, in a run with several taggers.
    public static let clocksStream = StreamDescriptor(
        stream: "clocks", source: "reducer",
        fields: [
            Field("tagger", "text", unit: "1"), Field("offset", "float64", unit: "ps"), Field("drift", "float64", unit: "1"),
            Field("knots", "int64, float64", unit: "ps (local time, offset)"),
        ])

    /// The reducer's streams: per-point counts and analysis results.
    public static let reducerStreams: [StreamDescriptor] = [
        StreamDescriptor(
            stream: "counts", source: "reducer",
            fields: [
                Field("sweep", "text", unit: "1"), Field("index", "int64", unit: "1"), Field("duration", "float64", unit: "s"),
                Field("coincidences", "int64", unit: "counts"), Field("accidentals", "float64", unit: "counts"),
                Field("singles", "int64", unit: "counts"),
            ]),
        StreamDescriptor(
            stream: "analyses", source: "reducer",
            fields: [Field("name", "text", unit: "1"), Field("values", "float64", unit: "per figure (Figure.unit)")]),
    ]
}

/// The typed documents a run emits, in order. The engine emits what happened at the
/// devices (points, tags, acquisitions, pauses, analysis requests); the run reducer adds
/// what they mean (counts, analyses). Consumers (HDF5 writer, progress display, live
/// monitors) subscribe to these; none of them touches a device.
public enum RunEvent: Sendable {
    case runStarted(RunStart)
    /// What a stream's events carry; before that stream's first event.
    case streamDeclared(StreamDescriptor)
    case stepStarted(index: Int, summary: String)
    case sweepPointStarted(sweep: String, index: Int, of: Int, label: String)
    case tags(device: String, TagBlock)
    case sweepPointFinished(SweepPointRecord)
    /// A stretch a tagger acquired, after its interlock check: its tags precede it.
    case acquired(AcquisitionRecord)
    /// The plan reached an analysis step: the reducer answers with `.analysis` events.
    case analysisRequested(AnalysisStep, location: SourceLocation?)
    case counts(PointCounts)
    case analysis(AnalysisRecord)
    /// One herald of an `entangle` step, with the nodes' readings.
    case herald(HeraldRecord)
    /// An `entangle` point ended: its attempts, heralds and timeouts.
    case entangled(EntanglementRecord)
    /// An interlock was found violated (or a link lost): acquisition waits from here. The
    /// record's `stopPs` is its start; the matching `.pause` follows when it clears.
    case pauseStarted(PauseRecord)
    /// A pause that ended (`resumed`) or that the run died in.
    case pause(PauseRecord)
    /// The clocks a run with several taggers follows (`clocks:`), as known at the end of a
    /// point: each tagger's model with its knots so far. The latest supersedes the earlier.
    case clocks([ClockModel])
    /// A `record` step's reading of one property, in the point it was read in.
    case recorded(RecordedReading)
    case log(String)
    case runStopped(RunStop)
}

/// Something that consumes run events. Called in order, from the sequencer's task.
public protocol RunEventSink: AnyObject, Sendable {
    func handle(_ event: RunEvent) async throws
}
