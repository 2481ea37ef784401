import HeraldCore
import SimulatedLab
import Synchronization

/// A gated four-channel photon counter on the simulated lab's detectors (the kind of
/// counting module that answers "counts in the last gate" rather than streaming tags).
///
/// Reading `counts_N` or `rate_N` counts one gate of `gate` lab time on every channel and
/// returns channel N's result, as a `COUNTS?`-style query does on such instruments.
public final class MockCounter: Device {
    public static let channels = 4
    public static let descriptor = DriverDescriptor(
        id: "mock.counter", version: "0.1.0", summary: "Simulated gated 4-channel photon counter",
        kind: .photonCounter,
        properties: [PropertySpec("gate", .quantity(.time), range: 1e-3...60, summary: "counting gate per reading")]
            + (1...channels).map {
                PropertySpec("counts_\($0)", .quantity(.dimensionless), settable: false, summary: "counts of channel \($0) in one gate")
            }
            + (1...channels).map {
                PropertySpec("rate_\($0)", .quantity(.frequency), settable: false, summary: "count rate of channel \($0) over one gate")
            },
        isMock: true)

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    private let lab: SimulatedLab
    private let gate = Mutex(0.1)

    public init(config: DeviceConfig, lab: SimulatedLab) {
        self.name = config.name
        self.lab = lab
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        if let q = value.quantity?.value { gate.withLock { $0 = q } }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) { return .text("\u{FFFD}OVF") }
        let seconds = gate.withLock { $0 }
        if property == "gate" { return .quantity(.seconds(seconds)) }
        let channel = property.split(separator: "_").last.flatMap { Int($0) } ?? 1
        let clicks = try await lab.detect(duration: .seconds(seconds))
        let n = Double(clicks.perDetector[channel - 1].count)
        return property.hasPrefix("rate_") ? .quantity(Quantity(n / seconds, .frequency)) : .quantity(Quantity(n, .dimensionless))
    }

    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}
