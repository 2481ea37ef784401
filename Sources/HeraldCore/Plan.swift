/// A validated experiment, ready for the sequencer: the *what*, with every value
/// already checked against the drivers' declarations. The sequencer owns the *how*.
public struct Plan: Sendable {
    public var name: String
    public var scriptPath: String
    public var scriptText: String
    public var devices: [DeviceConfig]
    public var steps: [PlanStep]

    public init(name: String, scriptPath: String, scriptText: String, devices: [DeviceConfig], steps: [PlanStep]) {
        self.name = name
        self.scriptPath = scriptPath
        self.scriptText = scriptText
        self.devices = devices
        self.steps = steps
    }

    /// Number of acquisitions the plan will perform, for progress and sizing.
    public var acquisitionCount: Int { steps.reduce(0) { $0 + $1.acquisitionCount } }
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

    public init(label: String, assignments: [Assignment], projection: (PolarizationLabel, PolarizationLabel)? = nil) {
        self.label = label
        self.assignments = assignments
        self.projection = projection
    }
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
public struct ArmChannels: Sendable, Hashable {
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
public struct TomographySpec: Sendable {
    public var sweep: String
    public var armA: ArmChannels
    public var armB: ArmChannels
    /// Full coincidence window in seconds: tags pair when |Δt| ≤ window/2.
    public var window: Double
    /// Per-channel delays in seconds, added to each channel's timestamps before pairing.
    public var delays: [Int: Double]
    /// Bell state fidelity is reported against, e.g. `phi+`.
    public var target: String
    /// Subtract the singles-based accidental estimate before inversion (default: keep).
    public var subtractAccidentals = false

    public init(
        sweep: String, armA: ArmChannels, armB: ArmChannels, window: Double, delays: [Int: Double] = [:],
        target: String = "phi+"
    ) {
        self.sweep = sweep
        self.armA = armA
        self.armB = armB
        self.window = window
        self.delays = delays
        self.target = target
    }

    /// The ordered channel pairs counted for every sweep point.
    public var channelPairs: [(Int, Int)] {
        let a = [armA.pass] + (armA.reflect.map { [$0] } ?? [])
        let b = [armB.pass] + (armB.reflect.map { [$0] } ?? [])
        return a.flatMap { x in b.map { y in (x, y) } }
    }
}

public indirect enum PlanStep: Sendable {
    case set([Assignment])
    case wait(Duration, location: SourceLocation?)
    case acquire(device: String, duration: Duration, location: SourceLocation?)
    case sweep(Sweep)
    case tomography(TomographySpec, location: SourceLocation?)

    var acquisitionCount: Int {
        switch self {
        case .acquire: return 1
        case .sweep(let s): return s.points.count * s.body.reduce(0) { $0 + $1.acquisitionCount }
        default: return 0
        }
    }
}
