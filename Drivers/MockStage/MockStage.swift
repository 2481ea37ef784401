import HeraldCore
import SimulatedLab
import Synchronization

/// A motorised translation stage carrying a retroreflector in photon B's path: its position
/// changes that photon's path length by `passes` times the move, so arrival times shift and,
/// with the lab's beam splitter (`simulation: {interferometer: hom}`), two-photon
/// interference traces a Hong–Ou–Mandel dip. Moves are instant on the lab's clock.
public final class MockStage: Device {
    public static let descriptor = DriverDescriptor(
        id: "mock.stage", version: "0.1.0", summary: "Simulated translation stage / optical delay line in photon B's path",
        kind: .stage,
        properties: [
            PropertySpec("position", .quantity(.length), range: 0...0.025, summary: "stage position; set returns when the move is done"),
            PropertySpec("homed", .bool, summary: "set true to home (position 0)"),
            PropertySpec("delay", .quantity(.time), settable: false, summary: "photon B's extra delay from the stage"),
        ],
        settings: [
            PropertySpec("passes", .quantity(.dimensionless), range: 1...8, summary: "times the beam crosses the stage's travel (2 for a retroreflector; default 2)"),
        ],
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let passes: Int
    private let position = Mutex(0.0)

    public init(config: DeviceConfig, lab: SimulatedLab) {
        name = config.name
        self.lab = lab
        passes = Int(config.settings["passes"]?.quantity?.value ?? 2)
    }

    public func connect() async throws {
        try await lab.checkFault(device: name, operation: "connect")
        await lab.setStage(position: position.withLock { $0 }, passes: passes)
    }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        let target: Double
        switch (property, value) {
        case ("position", .quantity(let q)): target = q.value
        case ("homed", .bool(true)): target = 0
        case ("homed", .bool(false)): return
        default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
        position.withLock { $0 = target }
        await lab.setStage(position: target, passes: passes)
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}?") }
        switch property {
        case "homed": return .bool(true)
        case "delay": return .quantity(Quantity(await lab.photonDelay, .time))
        default: return .quantity(Quantity(position.withLock { $0 }, .length))
        }
    }

    /// A stage has no hazardous state: it stays where it is.
    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}
