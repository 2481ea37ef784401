import Foundation
import HeraldCore
import HeraldUSBProtocols
import Synchronization
import USBInstrument

/// Thorlabs PM100-series optical power meter console (PM100D, PM100USB, PM400), SCPI over
/// USBTMC, or over a raw SCPI socket for consoles and gateways on the LAN.
///
/// Commands from the PM100D SCPI reference: `SENSe:CORRection:WAVelength` (nm),
/// `SENSe:POWer:DC:RANGe:AUTO`, `CONFigure:POWer`, `MEASure:POWer?` (W), and the error
/// queue `SYSTem:ERRor?`. Checked against the simulated console (`--mock`) and a loopback
/// SCPI responder, not yet against a physical unit. USB product id 0x8078 is the PM100D's;
/// others differ, so check `herald devices` and give `match:`.
public final class ThorlabsPM100: Device, PresenceReporting, @unchecked Sendable {  // state in `session`
    public static let usb = USBIdentity(vendorID: 0x1313, productID: 0x8078, driver: "thorlabs.pm100")

    public static let descriptor = DriverDescriptor(
        id: "thorlabs.pm100", version: "0.1.0", summary: "Thorlabs PM100-series power meter (USBTMC or SCPI socket)",
        kind: .powerMeter,
        properties: [
            PropertySpec("power", .quantity(.power), settable: false, summary: "one reading (MEAS:POW?)"),
            PropertySpec("wavelength", .quantity(.length), range: 185e-9...25e-6, summary: "correction wavelength (SENS:CORR:WAV)"),
        ]
    ).matched(by: [.usb, .tcp])

    public let name: String
    /// The registry's descriptor, with the wavelength range of the sensor found at connect.
    public var descriptor: DriverDescriptor {
        var d = Self.descriptor
        if let r = sensorRange.withLock({ $0 }), let i = d.properties.firstIndex(where: { $0.name == "wavelength" }) { d.properties[i].range = r }
        return d
    }
    let session: SCPISession
    /// The connected sensor's correction range (`SENS:CORR:WAV? MIN` / `MAX`), in metres.
    private let sensorRange = Mutex<ClosedRange<Double>?>(nil)

    public init(config: DeviceConfig, simulator: InstrumentSimulator? = nil) {
        name = config.name
        session = SCPISession(config: config, simulator: simulator)
    }

    public var needsWallClock: Bool { !session.config.isSimulatedInstrument }
    public var answersWithoutWaiting: Bool { session.config.isSimulatedInstrument }

    public func connect() async throws {
        try await session.connect(defaults: Self.usb, model: ["PM100", "PM400", "PM5020"], what: "a PM100-series power meter", setup: ["CONF:POW", "SENS:POW:RANG:AUTO ON"])
        // Each sensor corrects over its own band (S120C 400–1100 nm, S122C 700–1800 nm).
        let range = try await session.run { c -> ClosedRange<Double> in
            let lo = try c.queryNumber("SENS:CORR:WAV? MIN"), hi = try c.queryNumber("SENS:CORR:WAV? MAX")
            guard lo > 0, hi > lo else { throw ProtocolError(device: c.link.identity, "the sensor's wavelength range \(lo)…\(hi) nm is not a range", offset: 0) }
            return (lo * 1e-9)...(hi * 1e-9)
        }
        sensorRange.withLock { $0 = range }
    }

    public func set(_ property: String, to value: Value) async throws {
        try descriptor.check(property, value, device: name)
        guard property == "wavelength", let q = value.quantity else { throw DeviceError(device: name, .rejected, "cannot set \(property)") }
        let nm = (q.value * 1e9 * 1000).rounded() / 1000
        try await session.run { try $0.checkedWrite("SENS:CORR:WAV \(nm)") }
    }

    public func get(_ property: String) async throws -> Value {
        try await session.run { c in
            switch property {
            case "power":
                let w = try c.queryNumber("MEAS:POW?")
                // A reading beyond any sensor's range is an overload marker, not a power.
                guard w > -1, w < 1e3 else { throw ProtocolError(device: c.link.identity, "MEAS:POW? answered \(w) W: the sensor is saturated or absent", offset: 0) }
                return .quantity(Quantity(w, .power))
            case "wavelength": return .quantity(Quantity(try c.queryNumber("SENS:CORR:WAV?") * 1e-9, .length))
            default: throw DeviceError(device: self.name, .unsupported, "no property \(property)")
            }
        }
    }

    /// A power meter has no hazardous state.
    public func enterSafeState() async throws {}
    public func disconnect() async { await session.disconnect() }
    public func vanished() async -> DeviceError { await session.connection.vanished(device: name) }
}
