import HeraldCore
import SimulatedLab
import Synchronization

/// A temperature controller holding the pair source's crystal: its temperature moves the
/// pair rate along the crystal's phase-matching curve (sinc², see `phase_matching_*` in the
/// simulation block). With the output off the crystal sits at room temperature (295 K).
/// The temperature settles at once on the lab's clock; `stable` is true when it is at the setpoint.
public final class MockTemperatureController: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.tec", version: "0.1.0", summary: "Simulated crystal-oven temperature controller",
        kind: .temperatureController,
        properties: [
            PropertySpec("setpoint", .quantity(.temperature), range: 273.15...473.15, summary: "target temperature"),
            PropertySpec("temperature", .quantity(.temperature), settable: false, summary: "measured temperature"),
            PropertySpec("enabled", .bool, summary: "heater/TEC output on"),
            PropertySpec("stable", .bool, settable: false, summary: "at the setpoint"),
        ],
        isMock: true)

    static let room = 295.0
    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let state = Mutex((setpoint: 298.15, enabled: false))

    public init(config: DeviceConfig, lab: SimulatedLab) {
        name = config.name
        self.lab = lab
    }

    public func connect() async throws {
        try await lab.checkFault(device: name, operation: "connect")
        await apply()
    }

    func apply() async {
        let s = state.withLock { $0 }
        await lab.setCrystal(temperature: s.enabled ? s.setpoint : Self.room)
    }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        switch (property, value) {
        case ("setpoint", .quantity(let q)): state.withLock { $0.setpoint = q.value }
        case ("enabled", .bool(let on)): state.withLock { $0.enabled = on }
        default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
        await apply()
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}T?") }
        let s = state.withLock { $0 }
        switch property {
        case "setpoint": return .quantity(Quantity(s.setpoint, .temperature))
        case "enabled": return .bool(s.enabled)
        case "stable": return .bool(true)
        default: return .quantity(Quantity(s.enabled ? s.setpoint : Self.room, .temperature))
        }
    }

    /// Output off: an unattended oven must not keep heating.
    public func enterSafeState() async throws {
        state.withLock { $0.enabled = false }
        await apply()
        try await lab.checkFault(device: name, operation: "enter safe state")
    }

    public func disconnect() async {}
}
