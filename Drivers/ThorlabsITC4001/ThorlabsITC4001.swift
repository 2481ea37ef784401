import Foundation
import HeraldCore
import HeraldUSB
import HeraldUSBProtocols
import USBInstrument

/// Thorlabs ITC4001 laser-diode and TEC controller (ITC4000 series), over USBTMC with SCPI.
///
/// Commands from the ITC4000 Series Operation Manual (Thorlabs, "SCPI commands" chapter):
/// `OUTPut[1][:STATe]` laser output, `SOURce[1]:CURRent[:LEVel][:IMMediate][:AMPLitude]` and
/// `SOURce[1]:CURRent:LIMit[:AMPLitude]` setpoint and limit, `OUTPut2[:STATe]` TEC output,
/// `SOURce2:TEMPerature[:SPOint]` with `UNIT:TEMPerature K`, `MEASure:CURRent?` and
/// `MEASure:TEMPerature?`, `OUTPut:PROTection:KEYLock:TRIPped?` and
/// `OUTPut:PROTection:INTLock:TRIPped?`, and the error queue `SYSTem:ERRor?`. Checked here
/// against the emulated instrument in Tests/USBEmulation, not yet against a physical unit.
///
/// Every write is followed by `SYST:ERR?`, so a command the controller refused (a current
/// above the limit, output on with the key lock open) is an error, not a silent no-op.
/// Safe state: laser output off; the TEC stays on (switching it off can condense water on the diode).
public final class ThorlabsITC4001: Device, @unchecked Sendable {  // link touched only on `io`
    public static let usb = USBIdentity(vendorID: 0x1313, productID: 0x804A, driver: "thorlabs.itc4001")

    public static let descriptor = DriverDescriptor(
        id: "thorlabs.itc4001", version: "0.1.0", summary: "Thorlabs ITC4001 laser diode / TEC controller (USBTMC, SCPI)",
        kind: .laser,
        properties: [
            PropertySpec("enabled", .bool, summary: "laser output on/off (OUTP)"),
            PropertySpec("current", .quantity(.current), range: 0...1, summary: "laser-diode current setpoint (SOUR:CURR)"),
            PropertySpec("current_limit", .quantity(.current), range: 0...1, summary: "hardware current limit (SOUR:CURR:LIM)"),
            PropertySpec("tec_enabled", .bool, summary: "TEC output on/off (OUTP2)"),
            PropertySpec("temperature_setpoint", .quantity(.temperature), range: 273...343, summary: "TEC setpoint (SOUR2:TEMP)"),
            PropertySpec("measured_current", .quantity(.current), settable: false, summary: "MEAS:CURR?"),
            PropertySpec("temperature", .quantity(.temperature), settable: false, summary: "MEAS:TEMP?"),
            PropertySpec("keylock_tripped", .bool, settable: false, summary: "key switch open: output cannot turn on"),
            PropertySpec("interlock_tripped", .bool, settable: false, summary: "interlock circuit open"),
            PropertySpec("locked", .bool, settable: false, summary: "emitting with no protection tripped"),
        ]
    ).matched(by: [.usb])

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    let config: DeviceConfig
    let io: InstrumentQueue
    let timeout: Duration
    private var scpi: SCPIClient?
    private let connection: InstrumentConnection

    /// `simulator` is the in-process instrument `--mock` puts under this driver.
    public init(config: DeviceConfig, simulator: InstrumentSimulator? = nil) {
        name = config.name
        self.config = config
        io = InstrumentQueue(device: config.name)
        connection = InstrumentConnection(simulator: simulator)
        // A query must fail inside the engine's deadline so the USBTMC recovery runs first.
        timeout = min(.seconds(2), config.callTimeout * 0.4)
    }

    public var needsWallClock: Bool { !config.isSimulatedInstrument }
    public var answersWithoutWaiting: Bool { config.isSimulatedInstrument }

    public func connect() async throws {
        try await io.run(name) { [self] in
            // The ITC4000 series has USB (USBTMC) only: `match:` is USB, or `--mock`'s simulated unit.
            let link = try connection.messageLink(config, defaults: Self.usb, baud: 115_200) { try USBTMCLink($0) }
            let client = SCPIClient(link, timeout: timeout)
            let idn = try client.query("*IDN?")
            guard idn.uppercased().contains("ITC4") else {
                throw ProtocolError(device: link.identity, "*IDN? answered '\(idn.prefix(60))', not an ITC4000-series controller")
            }
            try client.write("*CLS")
            try client.checkedWrite("UNIT:TEMP K")
            scpi = client
        }
    }

    func client() throws -> SCPIClient {
        guard let scpi else { throw DeviceError(device: name, .disconnected, "not connected") }
        return scpi
    }

    public func set(_ property: String, to value: Value) async throws {
        try descriptor.check(property, value, device: name)
        let command: String
        switch (property, value) {
        case ("enabled", .bool(let on)): command = "OUTP \(on ? "ON" : "OFF")"
        case ("tec_enabled", .bool(let on)): command = "OUTP2 \(on ? "ON" : "OFF")"
        case ("current", .quantity(let q)): command = "SOUR:CURR \(q.value)"
        case ("current_limit", .quantity(let q)): command = "SOUR:CURR:LIM \(q.value)"
        case ("temperature_setpoint", .quantity(let q)): command = "SOUR2:TEMP \(q.value)"
        default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
        }
        try await io.run(name) { [self] in try client().checkedWrite(command) }
    }

    public func get(_ property: String) async throws -> Value {
        try await io.run(name) { [self] in
            let c = try client()
            switch property {
            case "enabled": return .bool(try c.queryBool("OUTP?"))
            case "tec_enabled": return .bool(try c.queryBool("OUTP2?"))
            case "current": return .quantity(Quantity(try c.queryNumber("SOUR:CURR?"), .current))
            case "current_limit": return .quantity(Quantity(try c.queryNumber("SOUR:CURR:LIM?"), .current))
            case "temperature_setpoint": return .quantity(Quantity(try c.queryNumber("SOUR2:TEMP?"), .temperature))
            case "measured_current": return .quantity(Quantity(try c.queryNumber("MEAS:CURR?"), .current))
            case "temperature": return .quantity(Quantity(try c.queryNumber("MEAS:TEMP?"), .temperature))
            case "keylock_tripped": return .bool(try c.queryBool("OUTP:PROT:KEYL:TRIP?"))
            case "interlock_tripped": return .bool(try c.queryBool("OUTP:PROT:INTL:TRIP?"))
            case "locked":
                let on = try c.queryBool("OUTP?")
                let key = try c.queryBool("OUTP:PROT:KEYL:TRIP?")
                let interlock = try c.queryBool("OUTP:PROT:INTL:TRIP?")
                return .bool(on && !key && !interlock)
            default: throw DeviceError(device: name, .unsupported, "no property \(property)")
            }
        }
    }

    public func enterSafeState() async throws {
        try await io.run(name) { [self] in try client().checkedWrite("OUTP OFF") }
    }

    public func disconnect() async {
        _ = try? await io.run(name) { [self] in
            scpi = nil
            connection.close()
        }
    }
}

extension ThorlabsITC4001: PresenceReporting {
    public func vanished() async -> DeviceError { await connection.vanished(device: name) }
}
