import Foundation
import HeraldCore
import HeraldUSBProtocols
import USBInstrument

/// Newport SMC100CC/PP single-axis motion controller with a linear stage (an optical delay
/// line), over RS-232 — the kernel's serial port, usually a USB-serial adapter at
/// /dev/serial/by-id/…, 57600 Bd 8N1 — or a serial-to-LAN server's TCP socket.
///
/// Protocol from the SMC100 user manual: `<address><command>[value]` ended by CR LF, with
/// address 1–31. `VE` (version), `TS` (error bits and controller state; READY is 32–35, NOT
/// REFERENCED 0A–11), `OR` (home search), `PA` (move absolute, stage units: mm), `TP` (position),
/// `TE` (last command error, `@` for none), `SL?`/`SR?` (software limits). A move returns once
/// the state is READY again. Checked against the simulated controller (`--mock`) and a
/// pseudo-terminal responder, not yet against a physical unit.
public final class NewportSMC100: Device, @unchecked Sendable {  // link state touched only on `io`
    public static let descriptor = DriverDescriptor(
        id: "newport.smc100", version: "0.1.0", summary: "Newport SMC100 motion controller with a linear stage (RS-232)",
        kind: .stage,
        properties: [
            PropertySpec("position", .quantity(.length), range: -0.3...0.3, summary: "stage position (PA/TP); set returns when the move is done"),
            PropertySpec("homed", .bool, summary: "set true to search home (OR); true once referenced"),
        ],
        settings: [
            PropertySpec("address", .quantity(.dimensionless), range: 1...31, summary: "controller address (default 1)"),
            PropertySpec("passes", .quantity(.dimensionless), range: 1...8, summary: "beam passes over the stage (for --mock's simulated lab; default 2)"),
        ]
    ).matched(by: [.serial, .tcp])

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    let config: DeviceConfig
    let address: String
    let io: InstrumentQueue
    let timeout: Duration
    let connection: InstrumentConnection
    private var link: (any ByteLink)?
    private var lines = LineReader()
    private var travel: ClosedRange<Double> = -300...300  // mm, read from the controller

    public init(config: DeviceConfig, simulator: InstrumentSimulator? = nil) {
        name = config.name
        self.config = config
        address = String(Int(config.settings["address"]?.quantity?.value ?? 1))
        io = InstrumentQueue(device: config.name)
        timeout = config.callTimeout * 0.8
        connection = InstrumentConnection(simulator: simulator)
    }

    public var needsWallClock: Bool { !config.isSimulatedInstrument }
    public var answersWithoutWaiting: Bool { config.isSimulatedInstrument }

    func send(_ command: String) throws {
        guard let link else { throw DeviceError(device: name, .disconnected, "not connected") }
        try link.write(Array((address + command + "\r\n").utf8), timeout: .seconds(1))
    }

    /// Sends a query and returns its value: the reply must echo the address and command.
    func query(_ command: String) throws -> String {
        guard let link else { throw DeviceError(device: name, .disconnected, "not connected") }
        try send(command)
        let raw = try lines.readLine(from: link, timeout: .seconds(1))
        guard let text = String(bytes: raw, encoding: .ascii) else {
            throw ProtocolError(device: link.identity, "answer to \(command) is not text", offset: 0)
        }
        let head = address + String(command.prefix(2))
        guard text.hasPrefix(head) else {
            throw ProtocolError(device: link.identity, "answer to \(address)\(command) is '\(text.prefix(30))', not \(head)…", offset: 0)
        }
        return String(text.dropFirst(head.count)).trimmingCharacters(in: .whitespaces)
    }

    /// The controller state from `TS` (the last two characters; four hex error bits first).
    func state() throws -> (errors: Int, state: String) {
        let ts = try query("TS")
        guard ts.count == 6, let bits = Int(ts.prefix(4), radix: 16) else {
            throw ProtocolError(device: name, "malformed TS reply '\(ts)'", offset: 3)
        }
        return (bits, String(ts.suffix(2)))
    }

    static func isReady(_ s: String) -> Bool { ["32", "33", "34", "35"].contains(s) }
    static func isUnreferenced(_ s: String) -> Bool { ["0A", "0B", "0C", "0D", "0E", "0F", "10", "11"].contains(s) }

    /// After a command: its error (`TE`), then waits while the controller is busy.
    func settle(_ command: String) throws {
        let te = try query("TE")
        if te != "@" { throw DeviceError(device: name, .rejected, "\(command): controller error '\(te)' (see the SMC100 manual's TE codes)") }
        let deadline = ContinuousClock.now + timeout
        while true {
            let s = try state()
            if Self.isReady(s.state) { return }
            if Self.isUnreferenced(s.state) { throw DeviceError(device: name, .rejected, "\(command): the stage is not referenced (set homed: true first)") }
            guard ContinuousClock.now < deadline else { throw DeviceError(device: name, .timeout, "\(command): still moving (state \(s.state)) after \(timeout)") }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    public func connect() async throws {
        try await io.run(name) { [self] in
            let l = try connection.byteLink(config, defaults: USBIdentity(vendorID: 0, productID: 0, driver: Self.descriptor.id), baud: 57_600) { _ in
                throw DeviceError(device: name, .unsupported, "the SMC100 is reached through a serial port or a socket, not libusb")
            }
            link = l
            lines.reset()
            let version = try query("VE")
            guard version.uppercased().contains("SMC") else {
                throw ProtocolError(device: l.identity, "VE answered '\(version.prefix(40))', not an SMC100 controller")
            }
            if let lo = Double(try query("SL?")), let hi = Double(try query("SR?")), lo < hi { travel = lo...hi }
        }
    }

    public func set(_ property: String, to value: Value) async throws {
        try descriptor.check(property, value, device: name)
        try await io.run(name) { [self] in
            switch (property, value) {
            case ("position", .quantity(let q)):
                let mm = q.value * 1000
                guard travel.contains(mm) else {
                    throw DeviceError(device: name, .rejected, "position \(mm) mm is outside the stage's travel \(travel.lowerBound)…\(travel.upperBound) mm")
                }
                try send("PA" + String(format: "%.6f", mm))
                try settle("PA")
            case ("homed", .bool(true)):
                try send("OR")
                try settle("OR")
            case ("homed", .bool(false)): break
            default: throw DeviceError(device: name, .rejected, "cannot set \(property) to \(value)")
            }
        }
    }

    public func get(_ property: String) async throws -> Value {
        try await io.run(name) { [self] in
            switch property {
            case "position":
                let text = try query("TP")
                guard let mm = Double(text), mm.isFinite else { throw ProtocolError(device: name, "TP answered '\(text.prefix(20))'", offset: 3) }
                return .quantity(Quantity(mm / 1000, .length))
            case "homed": return .bool(!Self.isUnreferenced(try state().state))
            default: throw DeviceError(device: name, .unsupported, "no property \(property)")
            }
        }
    }

    /// A stage has no hazardous state; a move in progress is stopped (`ST`).
    public func enterSafeState() async throws {
        try await io.run(name) { [self] in if link != nil { try send("ST") } }
    }

    public func disconnect() async {
        _ = try? await io.run(name) { [self] in
            link = nil
            connection.close()
        }
    }
}
