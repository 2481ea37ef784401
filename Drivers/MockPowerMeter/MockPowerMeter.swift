import HeraldCore
import SimulatedLab

/// An optical power meter on a pick-off of the pump: each reading is the pump's power while
/// it emits, with the lab's `power_meter_noise` (relative, Gaussian).
public final class MockPowerMeter: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.powermeter", version: "0.1.0", summary: "Simulated optical power meter on the pump",
        kind: .powerMeter,
        properties: [
            PropertySpec("power", .quantity(.power), settable: false, summary: "one reading"),
            PropertySpec("wavelength", .quantity(.length), range: 400e-9...1100e-9, summary: "correction wavelength"),
        ],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let wavelength = Mutex(405e-9)

    public init(config: DeviceConfig, lab: SimulatedLab) {
        name = config.name
        self.lab = lab
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        guard property == "wavelength", let q = value.quantity else { throw DeviceError(device: name, .rejected, "cannot set \(property)") }
        wavelength.withLock { $0 = q.value }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}E?") }
        if property == "wavelength" { return .quantity(Quantity(wavelength.withLock { $0 }, .length)) }
        return .quantity(Quantity(await lab.measurePumpPower(), .power))
    }

    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}

import Synchronization
