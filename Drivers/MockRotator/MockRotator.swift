import HeraldCore
import SimulatedLab

/// A motorized rotation mount holding one waveplate of one arm's analyzer.
public final class MockRotator: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.rotator", version: "0.1.0", summary: "Simulated waveplate rotation mount",
        kind: .rotator,
        properties: [PropertySpec("angle", .quantity(.angle), range: -360...360, summary: "fast-axis angle")],
        settings: [
            PropertySpec("arm", .choice(Arm.allCases.map(\.rawValue)), summary: "which photon's analyzer"),
            PropertySpec("plate", .choice(Waveplate.allCases.map(\.rawValue)), summary: "waveplate in the mount"),
        ],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let arm: Arm
    private let plate: Waveplate

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
    }

    public func connect() async throws {}

    public func set(_ property: String, to value: Value) async throws {
        guard property == "angle", let q = value.quantity, q.dimension == .angle else {
            throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
        await lab.setAngle(q.value, arm: arm, plate: plate)
    }

    public func get(_ property: String) async throws -> Value {
        guard property == "angle" else { throw DeviceError(device: name, .unsupported, "no property \(property)") }
        return .quantity(.degrees(await lab.angle(arm: arm, plate: plate)))
    }

    /// A rotation mount has no hazardous state; leaving it where it is is safe.
    public func enterSafeState() async throws {}
    public func disconnect() async {}
}
