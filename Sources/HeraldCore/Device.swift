import Foundation

/// The kinds of instrument Herald knows how to sequence.
public enum DeviceKind: String, Sendable, Hashable, CaseIterable, Comparable {
    case laser
    case rotator
    case shutter
    case photonCounter = "photon-counter"
    case timeTagger = "time-tagger"
    /// A node's real-time attempt loop (FPGA or sequencer): the ``Entangler`` protocol.
    case entangler
    /// A node's qubit readout: the ``QubitReadout`` protocol.
    case qubitReadout = "qubit-readout"
    /// An optical switch between fibre spools: a link's length, for distance scans.
    case fibreSwitch = "fibre-switch"
    /// A translation stage or optical delay line: a position along its travel.
    case stage
    /// An optical power meter.
    case powerMeter = "power-meter"
    /// A temperature controller (a crystal oven, a TEC).
    case temperatureController = "temperature-controller"

    public static func < (a: DeviceKind, b: DeviceKind) -> Bool { a.rawValue < b.rawValue }
}

/// What a driver declares about itself, before any device is opened. Validation
/// checks scripts against this, so a script is rejected before hardware is touched.
public struct DriverDescriptor: Sendable {
    /// Stable identifier used in scripts, e.g. `mock.laser`.
    public var id: String
    public var version: String
    public var summary: String
    public var kind: DeviceKind
    /// Run-time properties the sequencer may set or read.
    public var properties: [PropertySpec]
    /// Open-time settings from the script's `settings:` block.
    public var settings: [PropertySpec]
    /// True for drivers backed by the simulated lab.
    public var isMock: Bool
    /// Where the driver came from (`built-in`, or a plugin path).
    public var origin: String
    /// False for drivers that need no instrument (replay of a recording): `--mock` keeps them.
    public var usesHardware: Bool
    /// How the driver finds its instrument: which `match:` forms a script may give it.
    public var matchedBy: Set<DeviceMatchKind> = [.name]
    /// False for a mock that models one special instrument of its kind (the network's
    /// analyser tagger, a fibre's polarisation controller): `--mock` never picks it to stand
    /// in for a real driver of that kind.
    public var standsInForKind = true
    /// A time tagger's detector inputs, numbered 1…channels, when the model fixes them:
    /// validation refuses analyses of channels beyond (nil: not known before it is opened).
    public var channels: Int?

    public init(
        id: String, version: String, summary: String, kind: DeviceKind, properties: [PropertySpec],
        settings: [PropertySpec] = [], isMock: Bool = false, usesHardware: Bool = true, origin: String = "built-in"
    ) {
        self.usesHardware = usesHardware && !isMock
        self.id = id
        self.version = version
        self.summary = summary
        self.kind = kind
        self.properties = properties
        self.settings = settings
        self.isMock = isMock
        self.origin = origin
    }

    /// The same descriptor, with `count` detector inputs.
    public func withChannels(_ count: Int) -> DriverDescriptor {
        var copy = self
        copy.channels = count
        return copy
    }

    /// The same descriptor, finding its instrument by these match forms.
    public func matched(by kinds: Set<DeviceMatchKind>) -> DriverDescriptor {
        var copy = self
        copy.matchedBy = kinds
        return copy
    }

    public func property(_ name: String) -> PropertySpec? { properties.first { $0.name == name } }
    public func setting(_ name: String) -> PropertySpec? { settings.first { $0.name == name } }

    /// Checks a `set` against the declared properties, as drivers do before touching the
    /// instrument: the engine checks too, but a driver must not trust its caller.
    public func check(_ property: String, _ value: Value, device: String) throws {
        guard let spec = self.property(property) else {
            throw DeviceError(device: device, .unsupported, "no property \(property) (driver \(id))")
        }
        guard spec.settable else { throw DeviceError(device: device, .rejected, "\(property) is read-only") }
        if let problem = spec.problem(with: value) {
            throw DeviceError(device: device, .rejected, "\(property): \(problem)")
        }
    }

    /// What this descriptor lacks of its kind's capability contract (empty when it honours it).
    public var contractProblems: [String] {
        var problems: [String] = []
        if id.isEmpty { problems.append("the driver id is empty") }
        for requirement in kind.contract {
            let found = requirement.alternatives.contains { want in
                guard let have = property(want.name) else { return false }
                return have.type == want.type && (!want.settable || have.settable)
            }
            if !found { problems.append("a \(kind.rawValue) must declare \(requirement.summary)") }
        }
        let names = properties.map(\.name)
        if Set(names).count != names.count { problems.append("a property is declared twice") }
        return problems
    }
}

/// One property a device kind must have, or one of several alternatives.
public struct CapabilityRequirement: Sendable {
    public var alternatives: [PropertySpec]
    public var summary: String
}

extension DeviceKind {
    /// The capability contract of the kind: properties every driver of the kind declares,
    /// so scripts, `--mock` and the conformance kit can rely on them whatever the driver.
    public var contract: [CapabilityRequirement] {
        func one(_ spec: PropertySpec) -> CapabilityRequirement {
            CapabilityRequirement(
                alternatives: [spec], summary: "'\(spec.name)' (\(spec.type)\(spec.settable ? ", settable" : ""))")
        }
        switch self {
        case .laser:
            return [
                one(PropertySpec("enabled", .bool)),
                CapabilityRequirement(
                    alternatives: [PropertySpec("power", .quantity(.power)), PropertySpec("current", .quantity(.current))],
                    summary: "a settable 'power' (W) or 'current' (A) setpoint"),
                one(PropertySpec("locked", .bool, settable: false)),
            ]
        case .rotator: return [one(PropertySpec("angle", .quantity(.angle)))]
        case .shutter: return [one(PropertySpec("open", .bool))]
        case .photonCounter:
            return [one(PropertySpec("gate", .quantity(.time))), one(PropertySpec("counts_1", .quantity(.dimensionless), settable: false))]
        case .timeTagger, .entangler, .qubitReadout: return []  // their protocols are their contract
        case .fibreSwitch: return [one(PropertySpec("length", .quantity(.length)))]
        case .stage: return [one(PropertySpec("position", .quantity(.length)))]
        case .powerMeter:
            return [one(PropertySpec("power", .quantity(.power), settable: false)), one(PropertySpec("wavelength", .quantity(.length)))]
        case .temperatureController:
            return [
                one(PropertySpec("setpoint", .quantity(.temperature))), one(PropertySpec("temperature", .quantity(.temperature), settable: false)),
                one(PropertySpec("enabled", .bool)),
            ]
        }
    }
}

/// The ways a driver can find its instrument.
public enum DeviceMatchKind: String, Sendable, Hashable, CaseIterable, Comparable {
    /// By USB vendor, product and serial (`match: {usb: …}`).
    case usb
    /// By a file (`match: {file: …}`, or a `file` setting).
    case file
    /// By name only: the driver finds its instrument itself (mocks, most plugins).
    case name
    /// By a serial-port path (`match: {serial: /dev/serial/by-id/…}`, or `ASRL…::INSTR`).
    case serial
    /// By a LAN address (`match: {tcp: host:5025}`, or `TCPIP0::host::5025::SOCKET`).
    case tcp

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
}

/// How a device is found: a USB identity, a file (recordings, replay), or by name only.
public enum DeviceMatch: Sendable, Equatable, CustomStringConvertible {
    case any
    case usb(vendor: UInt16, product: UInt16, serial: String?)
    case file(String)
    /// A serial port; `baud` nil means the driver's own rate (the instrument's fixed one).
    case serial(path: String, baud: Int?)
    /// A raw socket to a LAN instrument (SCPI instruments listen on 5025 by convention).
    case tcp(host: String, port: Int)
    /// `--mock` on a driver that has a simulated instrument: the real driver, talking to an
    /// in-process instrument on the simulated lab instead of a transport.
    case simulated

    /// The kind of match this is.
    public var kind: DeviceMatchKind {
        switch self {
        case .any, .simulated: return .name
        case .usb: return .usb
        case .file: return .file
        case .serial: return .serial
        case .tcp: return .tcp
        }
    }

    public var description: String {
        switch self {
        case .any: return "any"
        case .usb(let v, let p, let s):
            return String(v, radix: 16) + ":" + String(p, radix: 16) + (s.map { " serial \($0)" } ?? "")
        case .file(let f): return "file \(f)"
        case .serial(let path, let baud): return "serial \(path)" + (baud.map { " at \($0) Bd" } ?? "")
        case .tcp(let host, let port): return "tcp \(host):\(port)"
        case .simulated: return "simulated instrument"
        }
    }
}

/// A device as the script declares it.
public struct DeviceConfig: Sendable {
    /// How to find the instrument (ignored by simulated drivers).
    public var match: DeviceMatch = .any
    public var name: String
    public var driver: String
    public var settings: [String: Value]
    public var location: SourceLocation?
    /// The driver's properties with the script's `limits:` applied (ranges only ever narrow).
    /// The engine re-checks every value against these before calling the device.
    public var properties: [PropertySpec]
    /// Extra assignments run before the driver's own safe state (`safe:` in the script).
    public var safeState: [Assignment]
    /// Time allowed for one device call, and how often a timed-out call is retried.
    public var callTimeout: Duration
    public var retries: Int
    /// The node the device lives on (`node:` in the script); nil for a device of this host.
    public var node: String?

    public static let defaultCallTimeout = Duration.seconds(5)
    public static let defaultRetries = 1

    public init(
        name: String, driver: String, settings: [String: Value] = [:], location: SourceLocation? = nil,
        properties: [PropertySpec] = [], safeState: [Assignment] = [], callTimeout: Duration = defaultCallTimeout,
        retries: Int = defaultRetries
    ) {
        self.name = name
        self.driver = driver
        self.settings = settings
        self.location = location
        self.properties = properties
        self.safeState = safeState
        self.callTimeout = callTimeout
        self.retries = retries
    }
}

/// An open instrument. Only the sequencer calls these methods.
///
/// Drivers are reference types because they own a connection; they must be
/// safe to call from the sequencer's task (actors or internally locked classes).
public protocol Device: AnyObject, Sendable {
    var name: String { get }
    var descriptor: DriverDescriptor { get }
    func connect() async throws
    func set(_ property: String, to value: Value) async throws
    func get(_ property: String) async throws -> Value
    /// Puts the instrument in the state that is safe to leave unattended
    /// (laser off, shutter closed). Called on every exit path of a run.
    func enterSafeState() async throws
    func disconnect() async
    /// True if the device runs on wall-clock time, so the run must too. Simulated devices
    /// and fast replay do not, and let a run use a virtual clock.
    var needsWallClock: Bool { get }
    /// True if the device never waits on anything outside this process (a simulation, a
    /// file), so a slow answer means a busy machine, not a hung instrument. The engine then
    /// bounds its calls in real time only by a generous backstop, so that a loaded 2-core
    /// machine does not fail healthy runs; a simulated instrument that stops answering says
    /// so at once by throwing ``SimulatedHang``, which the engine reports as its timeout.
    var answersWithoutWaiting: Bool { get }
}

extension Device {
    public var needsWallClock: Bool { !descriptor.isMock }
    public var answersWithoutWaiting: Bool { descriptor.isMock }
}

/// Thrown by a simulated instrument that stops answering (an injected `timeout` or
/// `stall`): on the lab's clock the caller's timeout elapses at once, so the engine turns
/// this into the same timeout error a hung instrument gets, without waiting in real time.
public struct SimulatedHang: Error, Sendable {
    public init() {}
}

/// A device that can tell the engine it has gone (unplugged, powered off) between calls,
/// so a run stops within a second of the loss instead of at the device's next call.
public protocol PresenceReporting: Device {
    /// Returns when the instrument has gone, with the error that says so. The engine
    /// cancels the wait when the run ends; the return value is then ignored.
    func vanished() async -> DeviceError
}

/// A device whose link may drop and come back within a run: a device on a node whose script
/// entry says `on_loss: {reconnect_within: …}`. The engine waits for the link before each
/// acquisition slice and each attempt loop, and what an outage overlapped does not count: its
/// tags stay in the raw data, and a pause records the span, as with an interlock.
public protocol LinkReporting: Device {
    /// Whether this device's link is allowed to drop and come back (false: a loss fails the run).
    var reconnects: Bool { get }
    /// Outages of the link so far: a change across a slice means the slice overlapped one.
    var linkOutages: Int { get }
    /// What the link is, for the pause record ("node alice").
    var linkName: String { get }
    /// Returns at once while the link is up, or once it is back; throws when it is lost for good.
    func linkRestored() async throws
    /// After a call failed at `since`: waits until the link has shown whether it is up or down
    /// (a call can fail before the loss is noticed), then as ``linkRestored()``.
    func linkSettled(since: ContinuousClock.Instant) async throws
}

/// Time-tagged photon detection events: parallel arrays, so blocks go to HDF5
/// and into the coincidence counter without re-packing.
public struct TagBlock: Sendable, Equatable {
    /// Picoseconds since the start of the run's tag clock.
    public var timestamps: [Int64]
    /// Input channel of each tag (1-based, as printed on the instrument).
    public var channels: [UInt8]

    /// Intervals in which the tagger lost tags (buffer overflow, missed events), on the
    /// same clock. Tags inside them are incomplete, so analyses exclude the whole interval.
    public var excluded: [ExcludedInterval]

    public init(timestamps: [Int64] = [], channels: [UInt8] = [], excluded: [ExcludedInterval] = []) {
        precondition(timestamps.count == channels.count, "tag arrays must be parallel")
        self.timestamps = timestamps
        self.channels = channels
        self.excluded = excluded
    }

    public var count: Int { timestamps.count }

    /// Adds the number of tags on each channel to `counts`, indexed by channel (256 long).
    /// Called on every block by the counters and the recorder, so it runs through buffer
    /// pointers: a plain loop paid a bounds and uniqueness check per tag.
    public func countChannels(into counts: inout [Int]) {
        precondition(counts.count >= 256, "one counter per possible channel")
        counts.withUnsafeMutableBufferPointer { n in
            channels.withUnsafeBufferPointer { cs in
                for c in cs { n[Int(c)] &+= 1 }
            }
        }
    }
}

/// A stretch of the tag clock, [startPs, stopPs), in which the tagger reported lost tags.
public struct ExcludedInterval: Sendable, Equatable, Hashable {
    public var startPs: Int64
    public var stopPs: Int64
    /// Why, as the tagger reported it (e.g. "overflow", "missed events").
    public var reason: String

    public init(startPs: Int64, stopPs: Int64, reason: String = "overflow") {
        self.startPs = startPs
        self.stopPs = stopPs
        self.reason = reason
    }
}

/// The interval an acquisition covered on the tag clock, in picoseconds.
public struct AcquisitionInterval: Sendable, Equatable {
    public var startPs: Int64
    public var stopPs: Int64
    public var tags: Int

    public init(startPs: Int64, stopPs: Int64, tags: Int) {
        self.startPs = startPs
        self.stopPs = stopPs
        self.tags = tags
    }

    public var seconds: Double { Double(stopPs - startPs) * 1e-12 }
}

/// A streaming time tagger.
public protocol TimeTagger: Device {
    var channelCount: Int { get }
    /// Acquires for `duration`, handing tags to `deliver` in time order, block by block.
    func acquire(
        for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval
}

/// Several taggers acquiring one stretch together: an `acquire` step naming several devices.
public struct AcquisitionGroup: Sendable, Hashable {
    public var id: UUID
    public var members: [String]

    public init(id: UUID = UUID(), members: [String]) {
        self.id = id
        self.members = members
    }
}

/// A tagger that can start an acquisition together with others, on one start: the simulated
/// taggers of one lab, or taggers armed on a shared hardware start signal. Each still stamps
/// its own clock; the engine only promises that they cover the same stretch.
public protocol GroupAcquiringTagger: TimeTagger {
    func acquire(
        for duration: Duration, group: AcquisitionGroup, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval
}

/// How a driver is made from a script's device entry.
public struct DriverEntry: Sendable {
    public var descriptor: DriverDescriptor
    public var make: @Sendable (DeviceConfig) throws -> any Device
    /// True when the driver can run on an in-process simulated instrument: `--mock` then keeps
    /// this driver (with `match: .simulated`) instead of swapping in the mock of its kind.
    public var simulatesInstrument: Bool

    public init(descriptor: DriverDescriptor, simulatesInstrument: Bool = false, make: @escaping @Sendable (DeviceConfig) throws -> any Device) {
        self.descriptor = descriptor
        self.simulatesInstrument = simulatesInstrument
        self.make = make
    }
}

/// The drivers available to a run: built-ins registered at compile time.
public struct DriverRegistry: Sendable {
    public private(set) var entries: [String: DriverEntry] = [:]

    public init() {}

    public mutating func register(_ entry: DriverEntry) {
        entries[entry.descriptor.id] = entry
    }

    public func entry(_ id: String) -> DriverEntry? { entries[id] }

    public var descriptors: [DriverDescriptor] {
        entries.values.map(\.descriptor).sorted { $0.id < $1.id }
    }

    /// Why a fault cannot be injected into the device `name` of a plan (nil when it can):
    /// faults act on simulated devices only.
    /// `kind` is the fault's kind as written: `stall` and `overflow` are faults of a time
    /// tagger's stream and make no sense on other devices.
    public func faultTargetProblem(device name: String, kind: String? = nil, in devices: [DeviceConfig]) -> String? {
        guard let config = devices.first(where: { $0.name == name }) else {
            return "fault for unknown device '\(name)'; declared: \(devices.map(\.name).joined(separator: ", "))"
        }
        guard let descriptor = entry(config.driver)?.descriptor, descriptor.isMock else {
            return "faults can be injected only into simulated devices; '\(name)' uses \(config.driver) (run with --mock)"
        }
        if let kind, ["stall", "overflow"].contains(kind), descriptor.kind != .timeTagger {
            return "a \(kind) fault is a time tagger's; '\(name)' is a \(descriptor.kind.rawValue) (use disconnect, timeout or garbage)"
        }
        return nil
    }

    /// The simulated-lab driver standing in for a given kind, used by `--mock`.
    public func mock(for kind: DeviceKind) -> DriverEntry? {
        entries.values.filter { $0.descriptor.isMock && $0.descriptor.kind == kind && $0.descriptor.standsInForKind }
            .min { $0.descriptor.id < $1.descriptor.id }
    }
}
