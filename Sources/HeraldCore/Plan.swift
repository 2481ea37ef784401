import Foundation

/// A validated experiment, ready for the sequencer: the *what*, with every value
/// already checked against the drivers' declarations. The sequencer owns the *how*.
public struct Plan: Sendable {
    public var name: String
    public var scriptPath: String
    public var scriptText: String
    public var devices: [DeviceConfig]
    public var steps: [PlanStep]
    /// Parameter values as used (after `--set`), for the record.
    public var parameters: [String: ScriptParameter] = [:]
    /// Conditions that must hold while acquiring; a violation pauses the acquisition.
    public var interlocks: [Interlock] = []
    /// The files the script included, as read: with the script text, all a run needs to be
    /// reproduced from its file alone.
    public var includedFiles: [IncludedFile] = []
    /// Who ran it, on what, and from which revision of the script (`meta:`, `--meta`, and
    /// what the runner finds out itself).
    public var metadata = RunMetadata()
    /// The script's `description:`.
    public var description = ""
    /// The simulated network the script describes (`simulation.network`), for the record.
    public var network: NetworkDescription?
    /// The hosts whose node agents serve some of the devices (`nodes:`).
    public var nodes: [NodeAddress] = []
    /// How several taggers' clocks map to one time base (`clocks:`); nil with one tagger.
    public var clocks: ClocksSpec?

    public init(name: String, scriptPath: String, scriptText: String, devices: [DeviceConfig], steps: [PlanStep]) {
        self.name = name
        self.scriptPath = scriptPath
        self.scriptText = scriptText
        self.devices = devices
        self.steps = steps
    }

    /// Total requested acquisition time, for progress estimates.
    public var acquisitionSeconds: Double { steps.reduce(0) { $0 + $1.acquisitionSeconds } }

    /// Number of acquisitions the plan will perform, for progress and sizing.
    public var acquisitionCount: Int { steps.reduce(0) { $0 + $1.acquisitionCount } }

    /// What `herald validate` estimates of a run's length: acquisitions and fixed waits, the
    /// longest the conditional waits may add, and whether a step runs until an outcome
    /// (an `entangle` until its heralds) and so cannot be estimated.
    public var estimatedDuration: (seconds: Double, conditionalUpTo: Double, open: Bool) {
        func walk(_ steps: [PlanStep], times: Double) -> (Double, Double, Bool) {
            var s = 0.0, c = 0.0, open = false
            for step in steps {
                switch step {
                case .acquire(_, let d, _, _), .wait(let d, _): s += times * d.seconds
                case .waitUntil(_, let t, _, _): c += times * t.seconds
                case .entangle(let e, _):
                    if let t = e.stop.timePs { s += times * Double(t) * 1e-12 } else { open = true }
                case .sweep(let sw):
                    let (a, b, o) = walk(sw.body, times: times * Double(sw.points.count))
                    s += a
                    c += b
                    open = open || o
                default: break
                }
            }
            return (s, c, open)
        }
        let (s, c, o) = walk(steps, times: 1)
        return (s, c, o)
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) * 1e-18 }
}

/// What a run records about itself beside the data: from the script's (or lab file's)
/// `meta:` and `herald run --meta`, and found by the runner (the script's git revision, the host).
public struct RunMetadata: Sendable, Equatable {
    public var operatorName: String?
    public var affiliation: String?
    public var sample: String?
    public var tags: [String] = []
    /// The pump's wavelength and the detected photons' (Photon-HDF5's /setup), in metres.
    public var excitationWavelength: Double?
    public var detectionWavelength: Double?
    /// Any other `key=value` given.
    public var extra: [String: String] = [:]
    /// The commit of the script's git repository, and whether the script or its includes
    /// differ from it; nil when the script is not in a repository (or git is not installed).
    public var scriptRevision: String?
    public var scriptDirty: Bool?
    public var host: String?
    /// The `--set name=value` overrides the run was given (already in the plan's parameters).
    public var overrides: [String: String] = [:]

    public init() {}

    /// Applies one `key=value` (from `--meta`): the known keys by name, anything else kept as text.
    /// Returns what is wrong with it, if anything.
    public mutating func apply(_ key: String, _ value: String) -> String? {
        switch key {
        case "operator", "author": operatorName = value
        case "affiliation", "author_affiliation": affiliation = value
        case "sample": sample = value
        case "tags": tags = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        case "excitation_wavelength", "detection_wavelength":
            guard let q = Quantity.parse(value), q.dimension == .length, q.value > 0 else { return "\(key) is a wavelength like 405 nm, got '\(value)'" }
            if key == "excitation_wavelength" { excitationWavelength = q.value } else { detectionWavelength = q.value }
        default:
            guard !key.isEmpty, key.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" || $0 == "-" }) else {
                return "a metadata key is letters, digits, '_' and '-', got '\(key)'"
            }
            extra[key] = value
        }
        return nil
    }
}

/// A script parameter as a run used it: the text as written (or given to `--set`), and the
/// typed value it means (a quantity in SI units, a flag, or text).
public struct ScriptParameter: Sendable, Equatable {
    public var text: String
    public var value: Value

    public init(text: String) {
        self.text = text
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        if let b = Bool(trimmed) {
            value = .bool(b)
        } else if let q = Quantity.parse(trimmed) {
            value = .quantity(q)
        } else {
            value = .text(text)
        }
    }
}

/// A file a script included, as it was when the script was compiled.
public struct IncludedFile: Sendable, Equatable {
    /// As written relative to the including file, for people.
    public var path: String
    public var resolvedPath: String
    public var text: String

    public init(path: String, resolvedPath: String, text: String) {
        self.path = path
        self.resolvedPath = resolvedPath
        self.text = text
    }
}

/// One assignment of a value to a device property.
public struct Assignment: Sendable {
    public var device: String
    public var property: String
    public var value: Value
    public var location: SourceLocation?

    public init(device: String, property: String, value: Value, location: SourceLocation? = nil) {
        self.device = device
        self.property = property
        self.value = value
        self.location = location
    }
}

/// One point of a sweep: a label (e.g. `HD`), the assignments made before the body runs,
/// and, for tomography sweeps, the projected states of each arm.
public struct SweepPoint: Sendable {
    public var label: String
    public var assignments: [Assignment]
    public var projection: (a: PolarizationLabel, b: PolarizationLabel)?
    /// The swept quantity at this point, for sweeps over one property.
    public var value: Quantity?

    public init(
        label: String, assignments: [Assignment], projection: (PolarizationLabel, PolarizationLabel)? = nil,
        value: Quantity? = nil
    ) {
        self.label = label
        self.assignments = assignments
        self.projection = projection
        self.value = value
    }
}

/// The CHSH analyzer settings: linear polarizer angles a, a′ for photon A and b, b′ for B,
/// in the order S = E(a,b) − E(a,b′) + E(a′,b) + E(a′,b′).
public enum CHSHSettings {
    public static let angles: [(a: Double, b: Double)] = [(0, 22.5), (0, 67.5), (45, 22.5), (45, 67.5)]
    public static let signs: [Double] = [1, -1, 1, 1]
}

public struct Sweep: Sendable {
    public var name: String
    public var points: [SweepPoint]
    public var body: [PlanStep]

    public init(name: String, points: [SweepPoint], body: [PlanStep]) {
        self.name = name
        self.points = points
        self.body = body
    }
}

/// Which detector channels see each arm's analyzer outputs.
public struct ArmChannels: Sendable, Hashable, Codable {
    /// Channel behind the PBS transmitted port.
    public var pass: Int
    /// Channel behind the reflected port, if detected.
    public var reflect: Int?

    public init(pass: Int, reflect: Int? = nil) {
        self.pass = pass
        self.reflect = reflect
    }
}

/// Coincidence and tomography parameters for an analysis step.
public struct TomographySpec: Sendable, Codable, Equatable {
    public var sweep: String
    public var armA: ArmChannels
    public var armB: ArmChannels
    /// Full coincidence window in integer picoseconds, like the tags: tags pair when |Δt| ≤ window/2.
    public var windowPs: Int64
    /// Per-channel delays in picoseconds, added to each channel's timestamps before pairing.
    public var delaysPs: [Int: Int64]
    /// The Bell state fidelity is reported against.
    public var target: BellState
    /// Subtract the singles-based accidental estimate before inversion (default: keep).
    public var subtractAccidentals = false
    public var estimator = Estimator.linear
    /// Monte-Carlo resamples for error bars (0: delta method).
    public var monteCarlo = 0

    public init(
        sweep: String, armA: ArmChannels, armB: ArmChannels, windowPs: Int64, delaysPs: [Int: Int64] = [:],
        target: BellState = .phiPlus
    ) {
        self.sweep = sweep
        self.armA = armA
        self.armB = armB
        self.windowPs = windowPs
        self.delaysPs = delaysPs
        self.target = target
    }

    /// The states a detector pair projects onto at an analyzer setting: the pass port sees the
    /// setting's state, the reflect port its orthogonal partner.
    public func projectedStates(
        channelA: Int, channelB: Int, setting: (a: PolarizationLabel, b: PolarizationLabel)
    ) -> (PolarizationLabel, PolarizationLabel) {
        (channelA == armA.pass ? setting.a : setting.a.orthogonal, channelB == armB.pass ? setting.b : setting.b.orthogonal)
    }

    /// The ordered channel pairs counted for every sweep point.
    public var channelPairs: [(Int, Int)] {
        let a = [armA.pass] + (armA.reflect.map { [$0] } ?? [])
        let b = [armB.pass] + (armB.reflect.map { [$0] } ?? [])
        return a.flatMap { x in b.map { y in (x, y) } }
    }
}

/// A requirement checked while acquiring (Bluesky calls these suspenders): while it does
/// not hold, acquisition pauses; the paused interval is recorded and excluded from the
/// counts; if it does not clear within `timeout`, the run fails (and goes to safe state).
public struct Interlock: Sendable {
    public var name: String
    public var condition: Condition
    public var timeout: Duration
    public var location: SourceLocation?

    public init(name: String, condition: Condition, timeout: Duration, location: SourceLocation?) {
        self.name = name
        self.condition = condition
        self.timeout = timeout
        self.location = location
    }
}

/// How coincidences are counted for one data set (a sweep or a named acquisition).
public struct CountingSpec: Sendable, Equatable, Codable {
    public var pairs: [ChannelPair]
    /// Full coincidence window in integer picoseconds: tags pair when |Δt| ≤ window/2.
    public var windowPs: Int64
    /// Per-channel delays in picoseconds.
    public var delaysPs: [Int: Int64]

    public init(pairs: [ChannelPair], windowPs: Int64, delaysPs: [Int: Int64]) {
        self.pairs = pairs
        self.windowPs = windowPs
        self.delaysPs = delaysPs
    }

    public var channels: Set<Int> { Set(pairs.flatMap { [$0.a, $0.b] }) }
}

public struct ChannelPair: Sendable, Hashable, Codable {
    public var a: Int
    public var b: Int
    public init(_ a: Int, _ b: Int) {
        self.a = a
        self.b = b
    }
}

/// Analysis steps. Each names the data set (sweep or named acquisition) it reads.
public enum AnalysisStep: Sendable {
    /// Two-qubit tomography of a tomography sweep.
    case tomography(TomographySpec)
    /// CHSH S from the four angle pairs of a `chsh` sweep, both PBS ports of each arm detected.
    case chsh(dataset: String, armA: ArmChannels, armB: ArmChannels, counting: CountingSpec)
    /// Heralded g2(0) = N_h·N_h12 / (N_h1·N_h2), herald channel h and the two HBT outputs.
    case heraldedG2(dataset: String, herald: Int, signals: (Int, Int), windowPs: Int64)
    /// Singles and coincidence rates of every point of a data set, with a fit of each pair's
    /// rate against the swept quantity when it has one (a line unless `fit` says otherwise).
    case rates(dataset: String, counting: CountingSpec, fit: RateFit = .linear)
    /// Heralded remote entanglement of an `entangle` data set: rates, fidelities, the remote state.
    case entanglement(EntanglementAnalysisSpec)
    /// The histogram of t_b − t_a over a data set: g2(τ) for two detectors of one beam, a
    /// cross-correlation otherwise; normalised by the singles, with the peak located.
    case correlation(CorrelationAnalysisSpec)

    public var dataset: String {
        switch self {
        case .tomography(let t): return t.sweep
        case .chsh(let d, _, _, _), .heraldedG2(let d, _, _, _), .rates(let d, _, _): return d
        case .entanglement(let e): return e.dataset
        case .correlation(let c): return c.dataset
        }
    }

    /// The analysis counts tags (every kind but `entanglement`, which reads heralds).
    public var countsTags: Bool {
        if case .entanglement = self { return false }
        return true
    }

    public var name: String {
        switch self {
        case .tomography: return "tomography"
        case .chsh: return "chsh"
        case .heraldedG2: return "g2"
        case .rates: return "rates"
        case .entanglement: return "entanglement"
        case .correlation: return "correlation"
        }
    }

    /// Channels whose tags the data set must keep for this analysis.
    public var channels: Set<Int> {
        switch self {
        case .tomography(let t): return Set(t.channelPairs.flatMap { [$0.0, $0.1] })
        case .chsh(_, let a, let b, _):
            return Set([a.pass, b.pass] + [a.reflect, b.reflect].compactMap { $0 })
        case .heraldedG2(_, let h, let s, _): return [h, s.0, s.1]
        case .rates(_, let c, _): return c.channels
        case .entanglement: return []
        case .correlation(let c): return [c.channelA, c.channelB]
        }
    }

    /// Rates report every channel of the tagger, not only those in its pairs.
    public var needsAllChannels: Bool {
        if case .rates = self { return true }
        return false
    }

    /// The channel pairs counted for every point, with their window.
    public var counting: CountingSpec? {
        switch self {
        case .tomography(let t):
            return CountingSpec(pairs: t.channelPairs.map { ChannelPair($0.0, $0.1) }, windowPs: t.windowPs, delaysPs: t.delaysPs)
        case .chsh(_, _, _, let c), .rates(_, let c, _): return c
        case .heraldedG2(_, let h, let s, let w):
            return CountingSpec(pairs: [ChannelPair(h, s.0), ChannelPair(h, s.1)], windowPs: w, delaysPs: [:])
        case .entanglement: return nil  // heralds come from the entangler, not from counting tags
        case .correlation: return nil  // a histogram of its own, with its own delays, not the pair counts
        }
    }
}

public indirect enum PlanStep: Sendable {
    case set([Assignment])
    case wait(Duration, location: SourceLocation?)
    /// Polls `condition` every `poll` until it holds; fails the run after `timeout`.
    case waitUntil(Condition, timeout: Duration, poll: Duration, location: SourceLocation?)
    /// `name` makes a single acquisition a data set of its own (one point) for analysis.
    /// Several devices acquire together, started as one group; the first is the points' time base.
    case acquire(devices: [String], duration: Duration, name: String?, location: SourceLocation?)
    case sweep(Sweep)
    case analysis(AnalysisStep, location: SourceLocation?)
    /// Runs a link's attempt loop until the stop condition, measuring the nodes on each herald.
    case entangle(EntangleSpec, location: SourceLocation?)
    /// Reads each (device, property) and records the value in the point it runs in.
    case record([Assignment], location: SourceLocation?)

    var acquisitionCount: Int {
        switch self {
        case .acquire: return 1
        case .sweep(let s): return s.points.count * s.body.reduce(0) { $0 + $1.acquisitionCount }
        default: return 0
        }
    }

    var acquisitionSeconds: Double {
        switch self {
        case .acquire(_, let d, _, _): return Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18
        case .sweep(let s): return Double(s.points.count) * s.body.reduce(0) { $0 + $1.acquisitionSeconds }
        case .entangle(let e, _): return e.stop.timePs.map { Double($0) * 1e-12 } ?? 0
        default: return 0
        }
    }
}

/// What a `correlation` analysis histograms: Δ = (t_b + d_b) − (t_a + d_a) in bins of
/// `binPs` over [−range, +range), summed over the data set's points (per outer point when
/// the data set is a nested sweep).
public struct CorrelationAnalysisSpec: Sendable, Codable, Hashable {
    public var dataset: String
    public var channelA: Int
    public var channelB: Int
    public var binPs: Int64
    public var rangePs: Int64
    public var delaysPs: [Int: Int64]

    public init(dataset: String, channelA: Int, channelB: Int, binPs: Int64, rangePs: Int64, delaysPs: [Int: Int64] = [:]) {
        self.dataset = dataset
        self.channelA = channelA
        self.channelB = channelB
        self.binPs = binPs
        self.rangePs = rangePs
        self.delaysPs = delaysPs
    }
}

/// What an `entanglement` analysis reads and fits.
public struct EntanglementAnalysisSpec: Sendable, Codable, Equatable {
    public var dataset: String
    /// The link's nodes, in the order of each herald's readings.
    public var nodes: [String]
    public var patterns: [HeraldPattern]
    public var bases: BasisSet
    /// For the nine-setting state of the remote qubits.
    public var estimator: Estimator
    /// Time bins of the fidelity-against-time series (drift within a point).
    public var driftBins: Int
    /// A fit across the outer sweep's points.
    public var fit: EntanglementFit?

    public init(
        dataset: String, nodes: [String], patterns: [HeraldPattern], bases: BasisSet, estimator: Estimator = .mle,
        driftBins: Int = 10, fit: EntanglementFit? = nil
    ) {
        self.dataset = dataset
        self.nodes = nodes
        self.patterns = patterns
        self.bases = bases
        self.estimator = estimator
        self.driftBins = driftBins
        self.fit = fit
    }
}

/// What a `rates` analysis fits to each pair's coincidence rate against the swept quantity.
public enum RateFit: String, Sendable, Codable, CaseIterable {
    /// A straight line (pair rate ∝ pump power): slope and intercept.
    case linear
    /// A Gaussian dip, as a Hong–Ou–Mandel delay scan gives: r(x) = A·(1 − V·e^{−(x−c)²/w²}).
    case dip
    /// A phase-matching curve, as a crystal-temperature scan gives: r(x) = A·sinc²(π(x−c)/w) + B,
    /// zero first at c ± w.
    case phaseMatching = "phase-matching"
    /// A polarisation fringe against an analyser angle in degrees: r(θ) = A·(1 + V·cos 2(θ − φ)),
    /// V the visibility (max − min)/(max + min) and φ the angle of the maximum.
    case fringe
}

/// Fits of an entanglement data set across the points of the sweep around it.
public enum EntanglementFit: String, Sendable, Codable, CaseIterable {
    /// Herald rate against fibre length: ln R = ln R₀ − (α ln10 / 10⁴)·L, α in dB/km.
    case attenuation
    /// Same-polarisation coincidences against emission delay: a Hong–Ou–Mandel dip with an
    /// exponential (spontaneous-emission) flank, r(δ) = A·(1 − V·e^{−|δ−c|/w}).
    case homDip = "hom-dip"
    /// The same dip for Gaussian photons: r(δ) = A·(1 − V·e^{−(δ−c)²/w²}).
    case homDipGaussian = "hom-dip-gaussian"
}

/// A node as a script's `nodes:` block names it: where its agent listens.
public struct NodeAddress: Sendable, Hashable, Codable {
    public var name: String
    public var host: String
    public var port: Int
    public var location: SourceLocation?
    /// `on_loss:` — nil (`fail`, the default) fails the run at the node's first loss; a
    /// duration (`{reconnect_within: 30 s}`) is how long the coordinator tries to get it back.
    public var reconnectWithin: Duration?

    public init(name: String, host: String, port: Int, location: SourceLocation? = nil, reconnectWithin: Duration? = nil) {
        self.name = name
        self.host = host
        self.port = port
        self.location = location
        self.reconnectWithin = reconnectWithin
    }

    public var address: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// `host:port` (or `[v6]:port`), or nil.
    public static func parse(name: String, _ text: String, location: SourceLocation? = nil) -> NodeAddress? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (1...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, host.allSatisfy({ $0.isLetter || $0.isNumber || ".-:".contains($0) }) else { return nil }
        return NodeAddress(name: name, host: host, port: port, location: location)
    }
}

/// What the nodes of a multi-node script serve, fetched before the script is compiled:
/// node name → device name → the driver descriptor there.
public typealias NodeCatalogue = [String: [String: DriverDescriptor]]
