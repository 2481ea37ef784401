import Foundation
import HeraldCore
import HeraldUSB
import HeraldTransports
import HeraldUSBProtocols
import Synchronization

/// What the USB instrument drivers share: one serial queue per instrument for libusb's
/// blocking calls (each bounded by its own timeout), the script's `match:` turned into a
/// USB match, and USB/protocol failures turned into the engine's DeviceError kinds.
public final class InstrumentQueue: Sendable {
    let queue: DispatchQueue

    public init(device: String) { queue = DispatchQueue(label: "herald.usb.\(device)") }

    /// Runs `body` on the instrument's queue; errors come back as DeviceErrors naming `device`.
    public func run<T: Sendable>(_ device: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            queue.async { c.resume(with: Result { try body() }.mapError { deviceError($0, device: device) }) }
        }
    }
}

/// Maps transport and protocol failures to what the engine acts on: a timeout is retried,
/// garbage is retried, a vanished device fails the run at once.
public func deviceError(_ error: Error, device: String) -> Error {
    switch error {
    case let e as DeviceError: return e
    case let e as USBError where e.isGone: return DeviceError(device: device, .disconnected, e.description)
    case let e as USBError where e.isTimeout: return DeviceError(device: device, .timeout, e.description)
    case let e as USBError where e.isNotFound: return DeviceError(device: device, .notFound, e.description)
    case let e as USBError: return DeviceError(device: device, .disconnected, e.description)
    case let e as ProtocolError: return DeviceError(device: device, e.isTimeout ? .timeout : .invalidResponse, e.description)
    case let e as SCPIRejection: return DeviceError(device: device, .rejected, e.description)
    case let e as TransportError:
        switch e.kind {
        case .notFound, .denied: return DeviceError(device: device, .notFound, e.description)
        case .gone, .failed: return DeviceError(device: device, .disconnected, e.description)
        case .timeout: return DeviceError(device: device, .timeout, e.description)
        }
    default: return error
    }
}

extension DeviceConfig {
    /// The USB device a script's `match:` names, or the driver's default vendor and product.
    public func usbMatch(defaultVendor: UInt16, defaultProduct: UInt16) -> USBMatch {
        if case .usb(let v, let p, let s) = match { return USBMatch(vendorID: v, productID: p, serial: s) }
        return USBMatch(vendorID: defaultVendor, productID: defaultProduct)
    }
}

/// A USB identity a driver claims, for `herald devices`.
public struct USBIdentity: Sendable, Hashable {
    public var vendorID: UInt16
    public var productID: UInt16
    public var driver: String

    public init(vendorID: UInt16, productID: UInt16, driver: String) {
        self.vendorID = vendorID
        self.productID = productID
        self.driver = driver
    }
}

/// The USB device one instrument driver has open: opened on connect, closed on
/// disconnect, and what the driver's `PresenceReporting` waits on.
public final class USBConnection: Sendable {
    private let handle = Mutex<USBDeviceHandle?>(nil)

    public init() {}

    /// Opens the device `match` names through the process's libusb context.
    public func open(_ match: USBMatch) throws -> USBDeviceHandle {
        let usb = try USBContext.shared().open(match)
        handle.withLock { $0 = usb }
        return usb
    }

    public func close() { handle.withLock { $0?.close(); $0 = nil } }

    /// True once the open device has been unplugged.
    public var isGone: Bool { handle.withLock { $0?.isGone ?? false } }

    /// Waits until the open device is unplugged; with none open, until the wait is cancelled.
    public func vanished(device: String) async -> DeviceError {
        guard let usb = handle.withLock({ $0 }) else {
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            return DeviceError(device: device, .disconnected, "not connected")
        }
        await withTaskCancellationHandler {
            await usb.waitUntilGone()
        } onCancel: {
            usb.cancelGoneWaiters()
        }
        return DeviceError(device: device, .disconnected, "\(usb.identity) was unplugged")
    }
}

/// The link an in-process simulated instrument offers its driver under `--mock`.
public enum SimulatedLink: Sendable {
    case message(any MessageLink)
    case bytes(any ByteLink)
}

/// Makes the simulated instrument for a device (the runner binds it to the simulated lab).
public typealias InstrumentSimulator = @Sendable (DeviceConfig) throws -> SimulatedLink

/// How a driver reaches its instrument, from the device's `match:`: USB (the driver builds
/// its protocol link on the opened device), a serial port, a TCP socket, or — under `--mock`
/// — an in-process simulated instrument. The driver's protocol code above the link is the
/// same for all of them.
public final class InstrumentConnection: Sendable {
    public let usb = USBConnection()
    private let open = Mutex<(any ByteLink)?>(nil)
    let simulator: InstrumentSimulator?

    public init(simulator: InstrumentSimulator? = nil) { self.simulator = simulator }

    /// A message link (SCPI): USBTMC over USB (`overUSB`), lines over serial and TCP.
    public func messageLink(
        _ config: DeviceConfig, defaults: USBIdentity, baud: Int, overUSB: (USBDeviceHandle) throws -> any MessageLink
    ) throws -> any MessageLink {
        switch config.match {
        case .simulated:
            switch try simulated(config) {
            case .message(let m): return m
            case .bytes(let b): return LineMessageLink(b)
            }
        case .serial, .tcp: return LineMessageLink(try stream(config, baud: baud))
        default: return try overUSB(usb.open(config.usbMatch(defaultVendor: defaults.vendorID, defaultProduct: defaults.productID)))
        }
    }

    /// A byte stream: a USB-serial bridge over USB (`overUSB`), or the kernel's serial port,
    /// a TCP socket (a serial-to-LAN server), or the simulated instrument.
    public func byteLink(
        _ config: DeviceConfig, defaults: USBIdentity, baud: Int, overUSB: (USBDeviceHandle) throws -> any ByteLink
    ) throws -> any ByteLink {
        switch config.match {
        case .simulated:
            guard case .bytes(let b) = try simulated(config) else {
                throw DeviceError(device: config.name, .unsupported, "the simulated \(config.driver) offers no byte stream")
            }
            return b
        case .serial, .tcp: return try stream(config, baud: baud)
        default: return try overUSB(usb.open(config.usbMatch(defaultVendor: defaults.vendorID, defaultProduct: defaults.productID)))
        }
    }

    func simulated(_ config: DeviceConfig) throws -> SimulatedLink {
        guard let simulator else { throw DeviceError(device: config.name, .unsupported, "driver \(config.driver) has no simulated instrument") }
        return try simulator(config)
    }

    func stream(_ config: DeviceConfig, baud: Int) throws -> any ByteLink {
        let link: any ByteLink
        switch config.match {
        case .serial(let path, let rate): link = try SerialPort(path: path, baud: rate ?? baud)
        case .tcp(let host, let port): link = try TCPSocket(host: host, port: port)
        default: throw DeviceError(device: config.name, .unsupported, "\(config.match) is not a serial port or socket")
        }
        open.withLock { $0 = link }
        return link
    }

    /// Closes whatever is open.
    public func close() {
        usb.close()
        open.withLock {
            ($0 as? SerialPort)?.close()
            ($0 as? TCPSocket)?.close()
            $0 = nil
        }
    }

    public var isGone: Bool { usb.isGone }

    /// USB devices report their unplugging; a serial port or socket is found gone at its next
    /// exchange, so this waits (until cancelled) for those.
    public func vanished(device: String) async -> DeviceError { await usb.vanished(device: device) }
}

extension DeviceConfig {
    /// True when `--mock` put an in-process simulated instrument under the real driver.
    public var isSimulatedInstrument: Bool { match == .simulated }
}

/// What a SCPI instrument driver shares, whatever the transport: the serial queue, the link
/// (USBTMC over USB, lines over a socket or serial port, or the simulated instrument), the
/// `*IDN?` check at connect, and every write checked against the error queue.
public final class SCPISession: @unchecked Sendable {  // `client` touched only on `io`
    public let config: DeviceConfig
    public let io: InstrumentQueue
    public let connection: InstrumentConnection
    let timeout: Duration
    private var client: SCPIClient?

    public init(config: DeviceConfig, simulator: InstrumentSimulator?) {
        self.config = config
        io = InstrumentQueue(device: config.name)
        connection = InstrumentConnection(simulator: simulator)
        // A query must fail inside the engine's deadline so the link's recovery runs first.
        timeout = min(.seconds(2), config.callTimeout * 0.4)
    }

    /// Opens the link, checks `*IDN?` names the model (`model` is part of the answer, as
    /// `ITC4`, `PM100`, `TED4`), clears the status and runs `setup` (each checked).
    public func connect(defaults: USBIdentity, model: [String], what: String, setup: [String]) async throws {
        try await io.run(config.name) { [self] in
            let link = try connection.messageLink(config, defaults: defaults, baud: 115_200) { try USBTMCLink($0) }
            let c = SCPIClient(link, timeout: timeout)
            let idn = try c.query("*IDN?")
            guard model.contains(where: { idn.uppercased().contains($0) }) else {
                throw ProtocolError(device: link.identity, "*IDN? answered '\(idn.prefix(60))', not \(what)")
            }
            try c.write("*CLS")
            for command in setup { try c.checkedWrite(command) }
            client = c
        }
    }

    /// Runs `body` with the connected client on the instrument's queue.
    public func run<T: Sendable>(_ body: @escaping @Sendable (SCPIClient) throws -> T) async throws -> T {
        try await io.run(config.name) { [self] in
            guard let client else { throw DeviceError(device: config.name, .disconnected, "not connected") }
            return try body(client)
        }
    }

    public func disconnect() async {
        _ = try? await io.run(config.name) { [self] in
            client = nil
            connection.close()
        }
    }
}
