import HeraldCore
import SimulatedLab

/// The pump laser of the simulated lab. Its power sets the pair rate; with a repetition
/// rate it is pulsed, which gives the source its per-pulse multi-pair statistics.
public final class MockLaser: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.laser", version: "0.2.0", summary: "Simulated pump laser, CW or pulsed (pair rate ∝ power)",
        kind: .laser,
        properties: [
            PropertySpec("enabled", .bool, summary: "emission on/off"),
            PropertySpec("power", .quantity(.power), range: 0...0.5, summary: "optical output power"),
            PropertySpec(
                "repetition_rate", .quantity(.frequency), range: 0...1e10, summary: "pulse trigger rate; 0 Hz is CW"),
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

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        switch (property, value) {
        case ("enabled", .bool(let on)): await lab.setPump(enabled: on)
        case ("power", .quantity(let q)): await lab.setPump(power: q.value)
        case ("repetition_rate", .quantity(let q)): await lab.setPump(repetitionRate: q.value)
        default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}ERR?") }
        let pump = await lab.pump
        switch property {
        case "enabled": return .bool(pump.enabled)
        case "power": return .quantity(Quantity(pump.power, .power))
        case "repetition_rate": return .quantity(Quantity(pump.repetitionRate, .frequency))
        case "wavelength": return .quantity(wavelength)
        default: return .bool(await lab.pumpLocked)
        }
    }

    /// Emission off. A disconnected laser cannot be reached: the error says so and the
    /// engine logs the failed safe state, but the simulated interlock still cuts the beam.
    public func enterSafeState() async throws {
        await lab.setPump(enabled: false)
        try await lab.checkFault(device: name, operation: "enter safe state")
    }

    public func disconnect() async {}
}
