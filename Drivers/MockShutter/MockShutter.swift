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
        try descriptor.check(property, value, device: name)
        if try await lab.checkFault(device: name, operation: "set \(property)") == .garbage {
            throw DeviceError(device: name, .invalidResponse, "set \(property): unreadable reply (injected fault)")
        }
        await lab.setShutter(open: value.bool ?? false)
    }

    public func get(_ property: String) async throws -> Value {
        guard property == "open" else { throw DeviceError(device: name, .unsupported, "no property \(property)") }
        if try await lab.checkFault(device: name, operation: "get \(property)") == .garbage { return .text("\u{FFFD}") }
        return .bool(await lab.shutterIsOpen)
    }

    /// Closed: the safe state of anything in a laser beam.
    public func enterSafeState() async throws {
        try await lab.checkFault(device: name, operation: "enter safe state")
        await lab.setShutter(open: false)
    }

    public func disconnect() async {}
}
