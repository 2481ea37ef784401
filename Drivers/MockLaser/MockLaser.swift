import HeraldCore
import SimulatedLab

/// A pump laser in the simulated lab. Its power sets the pair rate.
public final class MockLaser: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.laser", version: "0.1.0", summary: "Simulated CW pump laser (pair rate ∝ power)",
        kind: .laser,
        properties: [
            PropertySpec("enabled", .bool, summary: "emission on/off"),
            PropertySpec("power", .quantity(.power), range: 0...0.5, summary: "optical output power"),
            PropertySpec("wavelength", .quantity(.length), range: 350e-9...1100e-9, settable: false),
            PropertySpec("locked", .bool, settable: false, summary: "emitting and frequency-locked"),
        ],
        settings: [PropertySpec("wavelength", .quantity(.length), range: 350e-9...1100e-9)],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let wavelength: Quantity

    public init(config: DeviceConfig, lab: SimulatedLab) {
        self.name = config.name
        self.lab = lab
        self.wavelength = config.settings["wavelength"]?.quantity ?? Quantity(405e-9, .length)
    }

    public func connect() async throws {}

    public func set(_ property: String, to value: Value) async throws {
        switch (property, value) {
        case ("enabled", .bool(let on)): await lab.setPump(enabled: on)
        case ("power", .quantity(let q)) where q.dimension == .power: await lab.setPump(power: q.value)
        default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
    }

    public func get(_ property: String) async throws -> Value {
        let pump = await lab.pump
        switch property {
        case "enabled": return .bool(pump.enabled)
        case "power": return .quantity(Quantity(pump.power, .power))
        case "wavelength": return .quantity(wavelength)
        case "locked": return .bool(await lab.pumpLocked)
        default: throw DeviceError(device: name, .unsupported, "no property \(property)")
        }
    }

    public func enterSafeState() async throws { await lab.setPump(enabled: false) }
    public func disconnect() async {}
}
