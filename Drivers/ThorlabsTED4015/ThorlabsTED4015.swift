import Foundation
import HeraldCore
import HeraldUSBProtocols
import USBInstrument

/// Thorlabs TED4015 TEC controller (crystal ovens, detector coolers), SCPI over USBTMC.
///
/// Commands from the TED4000 series manual: `UNIT:TEMPerature K`, `SOURce:TEMPerature[:SPOint]`,
/// `MEASure:TEMPerature?`, `OUTPut[:STATe]`, and the error queue. Checked against the
/// simulated controller (`--mock`), not yet against a physical unit. USB product id 0x8048;
/// check `herald devices`. `stable` is the driver's judgement: within `tolerance` of the setpoint.
/// Safe state: output off (an unattended oven must not keep heating).
public final class ThorlabsTED4015: Device, PresenceReporting, @unchecked Sendable {  // state in `session`
    public static let usb = USBIdentity(vendorID: 0x1313, productID: 0x8048, driver: "thorlabs.ted4015")

    public static let descriptor = DriverDescriptor(
        id: "thorlabs.ted4015", version: "0.1.0", summary: "Thorlabs TED4015 TEC / oven temperature controller (USBTMC)",
        kind: .temperatureController,
        properties: [
            PropertySpec("setpoint", .quantity(.temperature), range: 223...423, summary: "target temperature (SOUR:TEMP)"),
            PropertySpec("temperature", .quantity(.temperature), settable: false, summary: "MEAS:TEMP?"),
            PropertySpec("enabled", .bool, summary: "TEC output on/off (OUTP)"),
            PropertySpec("stable", .bool, settable: false, summary: "output on and within tolerance of the setpoint"),
        ],
        settings: [PropertySpec("tolerance", .quantity(.temperature), range: 1e-3...5, summary: "how close counts as stable (default 0.05 K)")]
    ).matched(by: [.usb])

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    let session: SCPISession
    let tolerance: Double

    public init(config: DeviceConfig, simulator: InstrumentSimulator? = nil) {
        name = config.name
        session = SCPISession(config: config, simulator: simulator)
        tolerance = config.settings["tolerance"]?.quantity?.value ?? 0.05
    }

    public var needsWallClock: Bool { !session.config.isSimulatedInstrument }
    public var answersWithoutWaiting: Bool { session.config.isSimulatedInstrument }

    public func connect() async throws {
        try await session.connect(defaults: Self.usb, model: ["TED4"], what: "a TED4000-series controller", setup: ["UNIT:TEMP K"])
    }

    public func set(_ property: String, to value: Value) async throws {
        try descriptor.check(property, value, device: name)
        let command: String
        switch (property, value) {
        case ("setpoint", .quantity(let q)): command = "SOUR:TEMP \(q.value)"
        case ("enabled", .bool(let on)): command = "OUTP \(on ? "ON" : "OFF")"
        default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
        try await session.run { try $0.checkedWrite(command) }
    }

    public func get(_ property: String) async throws -> Value {
        let tolerance = self.tolerance
        return try await session.run { c in
            switch property {
            case "setpoint": return .quantity(Quantity(try c.queryNumber("SOUR:TEMP?"), .temperature))
            case "temperature": return .quantity(Quantity(try c.queryNumber("MEAS:TEMP?"), .temperature))
            case "enabled": return .bool(try c.queryBool("OUTP?"))
            case "stable":
                let on = try c.queryBool("OUTP?")
                let t = try c.queryNumber("MEAS:TEMP?"), s = try c.queryNumber("SOUR:TEMP?")
                return .bool(on && abs(t - s) <= tolerance)
            default: throw DeviceError(device: self.name, .unsupported, "no property \(property)")
            }
        }
    }

    public func enterSafeState() async throws { try await session.run { try $0.checkedWrite("OUTP OFF") } }
    public func disconnect() async { await session.disconnect() }
    public func vanished() async -> DeviceError { await session.connection.vanished(device: name) }
}
