/// The vocabulary of heralded remote entanglement: links between quantum nodes, the
/// entangler devices that run each node's attempt loop, qubit readout, and the heralds
/// they report. Shared by the script compiler, the engine, the reducer and the drivers.

/// A qubit measurement basis: the Pauli operator a node measures its qubit in.
public enum ReadoutBasis: String, Sendable, Hashable, Codable, CaseIterable {
    case x = "X", y = "Y", z = "Z"

    /// Index in the stored `basis` columns (0 = X, 1 = Y, 2 = Z).
    public var index: Int {
        switch self {
        case .x: return 0
        case .y: return 1
        case .z: return 2
        }
    }

    public init?(index: Int) {
        switch index {
        case 0: self = .x
        case 1: self = .y
        case 2: self = .z
        default: return nil
        }
    }
}

/// The sets of basis pairs a node pair may measure in, one pair per herald in turn.
public enum BasisSet: String, Sendable, Hashable, Codable, CaseIterable {
    /// ZZ, XX, YY: enough for the fidelity to Ψ± from the parity correlations.
    case parity = "parity"
    /// All nine Pauli pairs: full two-qubit tomography of the remote state.
    case pauli9 = "pauli-9"

    public var settings: [(a: ReadoutBasis, b: ReadoutBasis)] {
        switch self {
        case .parity: return [(.z, .z), (.x, .x), (.y, .y)]
        case .pauli9: return ReadoutBasis.allCases.flatMap { a in ReadoutBasis.allCases.map { b in (a, b) } }
        }
    }
}

/// One node of a link as the script declares it: its entangler and its qubit readout.
public struct LinkNode: Sendable, Hashable, Codable {
    public var name: String
    public var entangler: String
    public var readout: String

    public init(name: String, entangler: String, readout: String) {
        self.name = name
        self.entangler = entangler
        self.readout = readout
    }
}

/// A photonic link (the `links:` block): two nodes whose photons meet at a Bell-state
/// analyser, whose detectors a time tagger records.
public struct LinkConfig: Sendable, Hashable, Codable {
    public var name: String
    /// The two nodes; the first one's entangler is the master that runs the attempt loop.
    public var nodes: [LinkNode]
    public var tagger: String
    /// Detector names (as patterns use them) to tagger channels.
    public var detectors: [String: Int]

    public init(name: String, nodes: [LinkNode], tagger: String, detectors: [String: Int]) {
        self.name = name
        self.nodes = nodes
        self.tagger = tagger
        self.detectors = detectors
    }
}

/// A coincidence of detectors that heralds an entangled pair, and the state it heralds.
public struct HeraldPattern: Sendable, Hashable, Codable {
    public var name: String
    /// Detector names, as the link declares them.
    public var detectors: [String]
    /// Their tagger channels, in the same order.
    public var channels: [Int]
    /// The Bell state of the remote qubits this pattern heralds (Ψ+ or Ψ− for the usual
    /// polarisation analyser); nil for a pattern that is counted but heralds nothing
    /// (the same-polarisation coincidences of a Hong–Ou–Mandel scan).
    public var state: BellState?

    public init(name: String, detectors: [String], channels: [Int], state: BellState?) {
        self.name = name
        self.detectors = detectors
        self.channels = channels
        self.state = state
    }
}

/// When an `entangle` step stops: after so many heralds, after so much lab time, or at the
/// first of both.
public struct EntangleStop: Sendable, Hashable, Codable {
    public var heralds: Int?
    public var timePs: Int64?

    public init(heralds: Int? = nil, timePs: Int64? = nil) {
        self.heralds = heralds
        self.timePs = timePs
    }
}

/// What an `entangle` step asks of a link: the attempt loop's timing, the herald patterns,
/// when to stop, and what the nodes measure on each herald.
public struct EntangleSpec: Sendable, Hashable, Codable {
    /// The data set the heralds form (`/user/herald/<name>`).
    public var name: String
    public var link: LinkConfig
    /// Length of one attempt (excitation, emission, detection window).
    public var cyclePs: Int64
    /// The detection window, relative to the excitation (after the nodes' fibre delays are
    /// equalised, as an entangler's timing does).
    public var windowStartPs: Int64
    public var windowLengthPs: Int64
    public var patterns: [HeraldPattern]
    /// One attempt loop gives up after this much time without a herald (Oxford's
    /// entangler-core times out in time, not in loop count); the engine re-arms it.
    public var timeoutPs: Int64
    public var stop: EntangleStop
    public var bases: BasisSet
    /// The run fails after this many timeouts in a row: a link that stopped heralding.
    public var maxConsecutiveTimeouts: Int

    public init(
        name: String, link: LinkConfig, cyclePs: Int64, windowStartPs: Int64, windowLengthPs: Int64, patterns: [HeraldPattern],
        timeoutPs: Int64, stop: EntangleStop, bases: BasisSet, maxConsecutiveTimeouts: Int = 100
    ) {
        self.name = name
        self.link = link
        self.cyclePs = cyclePs
        self.windowStartPs = windowStartPs
        self.windowLengthPs = windowLengthPs
        self.patterns = patterns
        self.timeoutPs = timeoutPs
        self.stop = stop
        self.bases = bases
        self.maxConsecutiveTimeouts = maxConsecutiveTimeouts
    }

    /// What each node's entangler is configured with.
    public var entanglerConfiguration: EntanglerConfiguration {
        EntanglerConfiguration(
            link: link.name, nodes: link.nodes.map(\.name), cyclePs: cyclePs, windowStartPs: windowStartPs,
            windowLengthPs: windowLengthPs, patterns: patterns.map(\.channels), timeoutPs: timeoutPs)
    }
}

/// The settings of a node's real-time entangler (the FPGA or sequencer that runs the
/// attempt loop): the same on every node of the link.
public struct EntanglerConfiguration: Sendable, Hashable, Codable {
    public var link: String
    public var nodes: [String]
    public var cyclePs: Int64
    public var windowStartPs: Int64
    public var windowLengthPs: Int64
    /// Each pattern as tagger channels that must all click (and no other) in one window.
    public var patterns: [[Int]]
    public var timeoutPs: Int64

    public init(
        link: String, nodes: [String], cyclePs: Int64, windowStartPs: Int64, windowLengthPs: Int64, patterns: [[Int]],
        timeoutPs: Int64
    ) {
        self.link = link
        self.nodes = nodes
        self.cyclePs = cyclePs
        self.windowStartPs = windowStartPs
        self.windowLengthPs = windowLengthPs
        self.patterns = patterns
        self.timeoutPs = timeoutPs
    }
}

/// What one run of the attempt loop ended with.
public enum EntanglerOutcome: Sendable, Equatable {
    /// A herald: the start of the attempt that heralded (on the tag clock), the index of the
    /// pattern that fired, and how many attempts this loop made, the heralding one included.
    case herald(timePs: Int64, pattern: Int, attempts: Int64)
    /// No herald before the timeout: the attempts made and the time the loop stopped.
    case timedOut(attempts: Int64, stopPs: Int64)
}

/// A node's real-time entangler. The engine configures every node of a link, then runs the
/// master's loop once per herald; the loop's timing never passes through software.
public protocol Entangler: Device {
    func configure(_ configuration: EntanglerConfiguration) async throws
    /// Runs the attempt loop from now until a herald or the configured timeout.
    func runAttemptLoop() async throws -> EntanglerOutcome
}

/// One qubit measurement: the outcome (+1 bright, −1 dark) and the fluorescence counts
/// the threshold decided it from.
public struct QubitMeasurement: Sendable, Equatable {
    public var outcome: Int
    public var counts: Int

    public init(outcome: Int, counts: Int) {
        self.outcome = outcome
        self.counts = counts
    }
}

/// A node's qubit readout: rotates into the basis and detects fluorescence.
public protocol QubitReadout: Device {
    func measure(in basis: ReadoutBasis) async throws -> QubitMeasurement
}

/// A tagger that streams continuously while another device (an entangler) sets the pace:
/// the engine collects what it has recorded since the last collection.
public protocol StreamingTagger: TimeTagger {
    func collect() async throws -> (TagBlock, AcquisitionInterval)
}

/// One herald as the run records it (`/user/herald/<dataset>`).
public struct HeraldRecord: Sendable, Equatable {
    public var dataset: String
    /// Herald number within its point, from 0.
    public var index: Int
    public var timePs: Int64
    public var pattern: Int
    /// Attempts since the previous herald of the point (or its start), this one included.
    public var attempts: Int64
    /// Per node of the link, in its order.
    public var bases: [ReadoutBasis]
    public var outcomes: [Int]
    public var counts: [Int]
    public var outer: PointRef?

    public init(
        dataset: String, index: Int, timePs: Int64, pattern: Int, attempts: Int64, bases: [ReadoutBasis], outcomes: [Int],
        counts: [Int], outer: PointRef? = nil
    ) {
        self.dataset = dataset
        self.index = index
        self.timePs = timePs
        self.pattern = pattern
        self.attempts = attempts
        self.bases = bases
        self.outcomes = outcomes
        self.counts = counts
        self.outer = outer
    }
}

/// The attempt totals of one `entangle` point, emitted when it ends.
public struct EntanglementRecord: Sendable, Equatable {
    public var dataset: String
    public var startPs: Int64
    public var stopPs: Int64
    /// Every attempt made, including those of loops that timed out and those after the last herald.
    public var attempts: Int64
    public var heralds: Int
    public var timeouts: Int
    public var cyclePs: Int64
    public var outer: PointRef?

    public init(
        dataset: String, startPs: Int64, stopPs: Int64, attempts: Int64, heralds: Int, timeouts: Int, cyclePs: Int64,
        outer: PointRef? = nil
    ) {
        self.dataset = dataset
        self.startPs = startPs
        self.stopPs = stopPs
        self.attempts = attempts
        self.heralds = heralds
        self.timeouts = timeouts
        self.cyclePs = cyclePs
        self.outer = outer
    }

    /// In Double: a damaged file's times must not overflow the subtraction.
    public var seconds: Double { (Double(stopPs) - Double(startPs)) * 1e-12 }
}

/// The simulated network as a script's `simulation.network` block writes it: each section's
/// validated values with their places, so the simulation's physical checks can point at them.
public struct NetworkSection: Sendable, Equatable {
    public var name: String
    public var values: [String: Value]
    public var location: SourceLocation
    public var valueLocations: [String: SourceLocation]

    public init(name: String, values: [String: Value], location: SourceLocation, valueLocations: [String: SourceLocation] = [:]) {
        self.name = name
        self.values = values
        self.location = location
        self.valueLocations = valueLocations
    }

    public func quantity(_ key: String) -> Double? { values[key]?.quantity?.value }
    public func text(_ key: String) -> String? { values[key]?.text }
    public func place(_ key: String) -> SourceLocation { valueLocations[key] ?? location }
}

public struct NetworkLinkSection: Sendable, Equatable {
    public var name: String
    public var location: SourceLocation
    /// One fibre per node of the link, named by the node.
    public var fibres: [NetworkSection]
    public var analyser: NetworkSection

    public init(name: String, location: SourceLocation, fibres: [NetworkSection], analyser: NetworkSection) {
        self.name = name
        self.location = location
        self.fibres = fibres
        self.analyser = analyser
    }
}

public struct NetworkDescription: Sendable, Equatable {
    public var nodes: [NetworkSection]
    public var links: [NetworkLinkSection]

    public init(nodes: [NetworkSection] = [], links: [NetworkLinkSection] = []) {
        self.nodes = nodes
        self.links = links
    }

    public var isEmpty: Bool { nodes.isEmpty && links.isEmpty }
}

/// What a `simulation.network` block may contain, section by section, and the physical
/// checks beyond type and range (unknown nodes, a wavelength the fibre model lacks).
public struct NetworkSchema: Sendable {
    public var node: [PropertySpec]
    public var fibre: [PropertySpec]
    public var analyser: [PropertySpec]
    public var check: @Sendable (NetworkDescription) -> [ScriptDiagnostic]

    public init(
        node: [PropertySpec], fibre: [PropertySpec], analyser: [PropertySpec],
        check: @escaping @Sendable (NetworkDescription) -> [ScriptDiagnostic]
    ) {
        self.node = node
        self.fibre = fibre
        self.analyser = analyser
        self.check = check
    }
}
