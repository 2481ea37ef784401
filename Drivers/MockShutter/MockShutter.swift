import HeraldCore
import SimulatedLab

/// A shutter in the pump beam of the simulated lab: closed, no pairs (dark counts remain).
public final class MockShutter: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.shutter", version: "0.1.0", summary: "Simulated pump-beam shutter",
        kind: .shutter,
        properties: [PropertySpec("open", .bool, summary: "beam passes when true")],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab

    public init(config: DeviceConfig, lab: SimulatedLab) {
        self.name = config.name
        self.lab = lab
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        await lab.setShutter(open: value.bool ?? false)
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}") }
        return .bool(await lab.shutterIsOpen)
    }

    /// Closed: the safe state of anything in a laser beam.
    public func enterSafeState() async throws {
        try await lab.checkFault(device: name, operation: "enter safe state")
        await lab.setShutter(open: false)
    }

    public func disconnect() async {}
}
