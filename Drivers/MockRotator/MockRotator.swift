import HeraldCore
import SimulatedLab
import Synchronization

/// A motorized rotation mount holding one waveplate of one arm's analyzer. Moves take
/// lab time (|Δθ| / speed, the way an Elliptec or K10CR1 mount moves), and `set` returns
/// when the move is complete.
public final class MockRotator: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.rotator", version: "0.2.0", summary: "Simulated waveplate rotation mount",
        kind: .rotator,
        properties: [
            PropertySpec("angle", .quantity(.angle), range: -360...360, summary: "fast-axis angle; set returns when the move is done"),
            PropertySpec("homed", .bool, summary: "set true to home (angle 0 at the index mark); false forgets the reference"),
            PropertySpec("moving", .bool, settable: false, summary: "false once a move is complete (set returns then)"),
        ],
        settings: [
            PropertySpec("arm", .choice(Arm.allCases.map(\.rawValue)), summary: "which photon's analyzer"),
            PropertySpec("plate", .choice(Waveplate.allCases.map(\.rawValue)), summary: "waveplate in the mount"),
            PropertySpec("speed", .quantity(.dimensionless), range: 0...1e6, summary: "degrees per second (0: instant; default 0)"),
        ],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let arm: Arm
    private let plate: Waveplate
    private let speed: Double
    private let homed = Mutex(true)

    public init(config: DeviceConfig, lab: SimulatedLab) throws {
        self.name = config.name
        self.lab = lab
        guard let armText = config.settings["arm"]?.text, let arm = Arm(rawValue: armText) else {
            throw DeviceError(device: config.name, .rejected, "setting 'arm' must be one of a, b")
        }
        guard let plateText = config.settings["plate"]?.text, let plate = Waveplate(rawValue: plateText) else {
            throw DeviceError(device: config.name, .rejected, "setting 'plate' must be one of qwp, hwp")
        }
        self.arm = arm
        self.plate = plate
        self.speed = config.settings["speed"]?.quantity?.value ?? 0
        lab.mount(plate, arm: arm)
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        let target: Double
        switch value {
        case .quantity(let q): target = q.value
        case .bool(true): target = 0
        default:
            homed.withLock { $0 = false }
            return
        }
        let from = await lab.angle(arm: arm, plate: plate)
        if speed > 0 { try await lab.advance(by: .seconds(abs(target - from) / speed)) }
        await lab.setAngle(target, arm: arm, plate: plate)
        if property == "homed" { homed.withLock { $0 = true } }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}0x??") }
        if property == "homed" { return .bool(homed.withLock { $0 }) }
        if property == "moving" { return .bool(false) }
        return .quantity(.degrees(await lab.angle(arm: arm, plate: plate)))
    }

    /// A rotation mount has no hazardous state; leaving it where it is is safe.
    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}
