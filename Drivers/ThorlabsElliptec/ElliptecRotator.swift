import Foundation
import HeraldCore
import HeraldUSB
import HeraldUSBProtocols
import USBInstrument

/// Thorlabs Elliptec ELL14 rotation mount (and the ELL14K kit), over its FTDI USB-serial
/// interface board, driven through libusb.
///
/// Protocol: Thorlabs "Elliptec Resonant Piezo Motor Communications Protocol" (ELLx
/// protocol manual): 9600 Bd 8N1, commands `<address><cmd>[data]` with a hex address
/// 0–F, replies terminated by CR LF. `in` (information: motor type, serial, travel and
/// pulses per unit, read from the device rather than assumed), `ho0` (home), `ma<8 hex>`
/// (absolute move, signed 32-bit pulses), `gp` (position), each answered by `PO<8 hex>`
/// once the move ends, or by `GS<code>` with an error status. Checked against the emulated
/// mount in Tests/USBEmulation, not yet against a physical unit.
public final class ElliptecRotator: Device, @unchecked Sendable {  // link state touched only on `io`
    public static let usb = USBIdentity(vendorID: 0x0403, productID: 0x6015, driver: "thorlabs.ell14")

    public static let descriptor = DriverDescriptor(
        id: "thorlabs.ell14", version: "0.1.0", summary: "Thorlabs Elliptec ELL14 rotation mount (FTDI serial)",
        kind: .rotator,
        properties: [
            PropertySpec("angle", .quantity(.angle), range: -360...360, summary: "fast-axis angle; set returns when the move is done"),
            PropertySpec("homed", .bool, summary: "set true to home (angle 0 at the index mark)"),
            PropertySpec("pulses_per_revolution", .quantity(.dimensionless), settable: false, summary: "read from the mount (in)"),
        ],
        settings: [
            PropertySpec("address", .quantity(.dimensionless), range: 0...15, summary: "bus address of the mount (default 0)"),
            PropertySpec("arm", .choice(["a", "b"]), summary: "which photon's analyzer (for --mock's simulated lab)"),
            PropertySpec("plate", .choice(["qwp", "hwp"]), summary: "waveplate in the mount (for --mock's simulated lab)"),
        ]
    ).matched(by: [.usb, .serial, .tcp])

    /// ELLx status codes (`GS`), from the protocol manual.
    static let statusText: [Int: String] = [
        1: "communication time-out", 2: "mechanical time-out", 3: "command error or not supported",
        4: "value out of range", 5: "module isolated", 6: "module out of isolation", 7: "initialising error",
        8: "thermal error", 9: "busy", 10: "sensor error", 11: "motor error", 12: "out of range", 13: "over current",
    ]

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    let config: DeviceConfig
    let address: Character
    let io: InstrumentQueue
    let timeout: Duration
    private var serial: (any ByteLink)?
    private var lines = LineReader()
    private var pulsesPerRevolution = 0
    /// The last angle set, so a read-back is given on the same branch (−22.5°, not 337.5°).
    private var lastSetpoint = 0.0
    /// Homed in this session (the mount itself does not report it).
    private var isHomed = false
    private let connection: InstrumentConnection

    /// `simulator` is the in-process mount `--mock` puts under this driver.
    public init(config: DeviceConfig, simulator: InstrumentSimulator? = nil) {
        name = config.name
        self.config = config
        connection = InstrumentConnection(simulator: simulator)
        let a = Int(config.settings["address"]?.quantity?.value ?? 0)
        address = Character(String(min(15, max(0, a)), radix: 16, uppercase: true))
        io = InstrumentQueue(device: config.name)
        timeout = config.callTimeout * 0.8
    }

    public var needsWallClock: Bool { !config.isSimulatedInstrument }
    public var answersWithoutWaiting: Bool { config.isSimulatedInstrument }

    public func connect() async throws {
        try await io.run(name) { [self] in
            // Over USB through libusb's FTDI path; as /dev/ttyUSB* (ftdi_sio) through the serial port.
            let link = try connection.byteLink(config, defaults: Self.usb, baud: 9600) { usb in
                let ftdi = try FTDISerial(usb)
                try ftdi.configure(baud: 9600, latency: .milliseconds(2))
                return ftdi
            }
            serial = link
            lines.reset()
            let info = try exchange("in", expect: "IN")
            // type(2) serial(8) year(4) firmware(2) hardware(2) travel(4) pulses per unit(8)
            guard info.count >= 30, let type = Int(info.prefix(2), radix: 16), let ppr = Int(info.suffix(8), radix: 16), ppr > 0 else {
                throw ProtocolError(device: link.identity, "malformed information reply '\(info)'", offset: 3)
            }
            guard type == 14 || type == 0x0E else {
                throw ProtocolError(device: link.identity, "motor type \(type) at address \(address) is not an ELL14 rotation mount")
            }
            pulsesPerRevolution = ppr
        }
    }

    /// Sends one command and reads replies until the one that answers it: `PO…` (or
    /// `expect`), or a `GS` status that is an error.
    func exchange(_ command: String, expect: String) throws -> String {
        guard let serial else { throw DeviceError(device: name, .disconnected, "not connected") }
        try serial.write(Array((String(address) + command).utf8), timeout: .seconds(1))
        let deadline = ContinuousClock.now + timeout
        while true {
            let raw = try lines.readLine(from: serial, timeout: max(.milliseconds(1), deadline - ContinuousClock.now))
            guard let text = String(bytes: raw, encoding: .ascii), text.count >= 3 else {
                throw ProtocolError(device: serial.identity, "unreadable reply to \(command): \(raw.prefix(16).map { String($0, radix: 16) })", offset: 0)
            }
            guard text.first == address else {
                throw ProtocolError(device: serial.identity, "reply '\(text.prefix(20))' is from address \(text.prefix(1)), not \(address)", offset: 0)
            }
            let code = String(text.dropFirst().prefix(2)), body = String(text.dropFirst(3))
            if code == "GS" {
                guard let status = Int(body, radix: 16) else {
                    throw ProtocolError(device: serial.identity, "malformed status reply '\(text)'", offset: 3)
                }
                if status == 0 || status == 9 { continue }  // OK or busy: the real answer follows
                throw DeviceError(device: name, .rejected, "\(command): mount reports \(Self.statusText[status] ?? "status \(status)")")
            }
            guard code == expect else {
                throw ProtocolError(device: serial.identity, "expected \(expect) in reply to \(command), got '\(text.prefix(20))'", offset: 1)
            }
            return body
        }
    }

    func position(_ body: String) throws -> Double {
        guard body.count == 8, let raw = UInt32(body, radix: 16) else {
            throw ProtocolError(device: name, "malformed position '\(body)'", offset: 3)
        }
        let degrees = Double(Int32(bitPattern: raw)) * 360 / Double(pulsesPerRevolution)
        // Same branch as the setpoint: the mount reports 0…360, scripts use −360…360.
        return degrees + 360 * ((lastSetpoint - degrees) / 360).rounded()
    }

    public func set(_ property: String, to value: Value) async throws {
        try descriptor.check(property, value, device: name)
        try await io.run(name) { [self] in
            switch (property, value) {
            case ("angle", .quantity(let q)):
                let wrapped = (q.value.truncatingRemainder(dividingBy: 360) + 360).truncatingRemainder(dividingBy: 360)
                let pulses = UInt32(bitPattern: Int32((wrapped / 360 * Double(pulsesPerRevolution)).rounded()))
                lastSetpoint = q.value
                _ = try position(exchange("ma" + hex8(pulses), expect: "PO"))
            case ("homed", .bool(true)):
                lastSetpoint = 0
                _ = try position(exchange("ho0", expect: "PO"))
                isHomed = true
            case ("homed", .bool(false)): isHomed = false
            default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
            }
        }
    }

    public func get(_ property: String) async throws -> Value {
        try await io.run(name) { [self] in
            switch property {
            case "angle": return .quantity(.degrees(try position(exchange("gp", expect: "PO"))))
            case "homed": return .bool(isHomed)
            case "pulses_per_revolution": return .quantity(Quantity(Double(pulsesPerRevolution), .dimensionless))
            default: throw DeviceError(device: name, .unsupported, "no property \(property)")
            }
        }
    }

    /// A rotation mount has no hazardous state: it stays where it is. An unplugged one says
    /// so, rather than reporting a safe state it cannot know.
    public func enterSafeState() async throws {
        if connection.isGone { throw DeviceError(device: name, .disconnected, "\(config.match) was unplugged") }
    }

    public func disconnect() async {
        _ = try? await io.run(name) { [self] in
            serial = nil
            connection.close()
        }
    }
}

extension ElliptecRotator: PresenceReporting {
    public func vanished() async -> DeviceError { await connection.vanished(device: name) }
}

func hex8(_ v: UInt32) -> String {
    let s = String(v, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 8 - s.count)) + s
}
