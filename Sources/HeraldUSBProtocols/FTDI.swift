import Foundation
import HeraldUSB
import Synchronization

/// An FTDI USB-serial bridge (FT232R/FT230X class), driven over libusb instead of the
/// kernel's ftdi_sio: vendor control requests for reset, purge, baud rate, line format,
/// flow control and latency timer; and on bulk IN, every max-packet-sized packet starts
/// with two status bytes (modem status, line status) that are stripped here and checked
/// for overrun, parity and framing errors.
///
/// Reference: FTDI AN232B-05 (baud divisors), AN232B-04 (latency timer); the request
/// numbers are those used by libftdi and Linux's ftdi_sio.
public final class FTDISerial: ByteLink, @unchecked Sendable {  // `usb` is thread-safe; counters behind a Mutex
    public let usb: USBDeviceHandle
    public var identity: String { usb.identity }
    let interface: Int
    let bulkIn: UInt8
    let bulkOut: UInt8
    let maxPacket: Int
    /// The last modem-status byte (CTS 0x10, DSR 0x20, RI 0x40, RLSD 0x80).
    public private(set) var modemStatus: UInt8 {
        get { status.withLock { $0 } }
        set { status.withLock { $0 = newValue } }
    }
    private let status = Mutex<UInt8>(0)

    enum Request: UInt8 {
        case reset = 0, modemControl = 1, setFlowControl = 2, setBaudRate = 3, setData = 4, pollModemStatus = 5
        case setLatencyTimer = 9, getLatencyTimer = 10
    }

    public init(_ usb: USBDeviceHandle, interface: Int = 0) throws {
        self.usb = usb
        guard let iface = try usb.interfaces().first(where: { $0.number == interface }),
            let inn = iface.endpoint(type: 2, input: true), let out = iface.endpoint(type: 2, input: false)
        else { throw ProtocolError(device: usb.identity, "has no bulk IN/OUT pair on interface \(interface) (not an FTDI bridge?)") }
        self.interface = interface
        bulkIn = inn.address
        bulkOut = out.address
        maxPacket = max(inn.maxPacketSize, 8)
        try usb.claim(interface: interface)
    }

    func vendor(_ request: Request, value: UInt16, index: UInt16 = 0) throws {
        try usb.control(requestType: 0x40, request: request.rawValue, value: value, index: index, timeout: .milliseconds(500))
    }

    /// The FT232R/FT230X divisor: 3 MHz over the baud rate, in eighths, with the three
    /// fractional bits encoded as the chip expects (AN232B-05). Returns (wValue, wIndex).
    public static func baudDivisor(_ baud: Int) -> (value: UInt16, index: UInt16, actual: Double) {
        let eighths = max(8, (3_000_000 * 8 + baud / 2) / max(1, baud))
        let integer = min(eighths >> 3, 0x3FFF)
        let fraction = eighths & 7
        let code: [Int] = [0, 3, 2, 4, 1, 5, 6, 7]
        var encoded = integer | code[fraction] << 14
        if integer == 1 && fraction == 0 { encoded = 0 }  // 3 MBd
        else if integer == 1 && fraction == 4 { encoded = 1 }  // 2 MBd
        return (UInt16(encoded & 0xFFFF), UInt16(encoded >> 16), 3_000_000 * 8 / Double(eighths))
    }

    /// Resets the bridge and sets the line: baud rate, 8 data bits, no parity, 1 stop bit,
    /// no flow control, and the latency timer (how long the chip holds a partial packet).
    public func configure(baud: Int, latency: Duration = .milliseconds(2)) throws {
        try vendor(.reset, value: 0)
        try purge()
        let d = Self.baudDivisor(baud)
        try vendor(.setBaudRate, value: d.value, index: d.index)
        try vendor(.setData, value: 0x0008)  // 8 bits, parity none (0 << 8), 1 stop bit (0 << 11)
        try vendor(.setFlowControl, value: 0)
        let ms = Int(latency.components.seconds * 1000 + latency.components.attoseconds / 1_000_000_000_000_000)
        try vendor(.setLatencyTimer, value: UInt16(min(255, max(1, ms))))
    }

    /// Purges the RX and TX buffers of the bridge.
    public func purge() throws {
        try vendor(.reset, value: 1)
        try vendor(.reset, value: 2)
    }

    public func write(_ bytes: [UInt8], timeout: Duration) throws {
        let sent = try usb.bulkWrite(endpoint: bulkOut, bytes, timeout: timeout)
        if sent != bytes.count {
            throw ProtocolError(device: identity, "wrote \(sent) of \(bytes.count) bytes", offset: sent, isTimeout: true)
        }
    }

    /// One bulk read; strips the two status bytes of each packet. A timeout is not an
    /// error here (the latency timer sends status-only packets when there is no data).
    public func read(timeout: Duration) throws -> [UInt8] {
        let raw: [UInt8]
        do {
            raw = try usb.bulkRead(endpoint: bulkIn, maxLength: maxPacket * 8, timeout: timeout)
        } catch let e as USBError where e.isTimeout {
            return []
        }
        return try Self.strip(raw, maxPacket: maxPacket, device: identity) { self.modemStatus = $0 }
    }

    /// Splits a bulk-IN transfer into packets and drops their two status bytes; a line
    /// error (overrun, parity, framing, break) is reported with its byte offset.
    public static func strip(_ raw: [UInt8], maxPacket: Int, device: String, status: (UInt8) -> Void = { _ in }) throws -> [UInt8] {
        var data: [UInt8] = []
        data.reserveCapacity(raw.count)
        var offset = 0
        while offset < raw.count {
            let end = min(raw.count, offset + maxPacket)
            guard end - offset >= 2 else {
                throw ProtocolError(device: device, "FTDI packet of \(end - offset) byte lacks its two status bytes", offset: offset)
            }
            status(raw[offset])
            let line = raw[offset + 1]
            if line & 0x1E != 0 {
                let what = line & 0x02 != 0 ? "overrun" : line & 0x04 != 0 ? "parity error" : line & 0x08 != 0 ? "framing error" : "break"
                throw ProtocolError(device: device, "serial line \(what) reported by the FTDI bridge", offset: offset + 1)
            }
            data += raw[(offset + 2)..<end]
            offset = end
        }
        return data
    }
}

/// A USB CDC-ACM serial device (a microcontroller with a virtual COM port) over libusb:
/// the bulk pipes of its data interface, and SET_LINE_CODING / SET_CONTROL_LINE_STATE on
/// its communication interface (USB CDC PSTN subclass 1.2, §6.3).
public final class CDCACMSerial: ByteLink, @unchecked Sendable {  // `usb` is thread-safe; no mutable state
    public let usb: USBDeviceHandle
    public var identity: String { usb.identity }
    let control: Int
    public let bulkIn: UInt8
    let bulkOut: UInt8
    let maxPacket: Int

    public init(_ usb: USBDeviceHandle) throws {
        self.usb = usb
        let interfaces = try usb.interfaces()
        guard let data = interfaces.first(where: { $0.interfaceClass == 0x0A }),
            let inn = data.endpoint(type: 2, input: true), let out = data.endpoint(type: 2, input: false)
        else { throw ProtocolError(device: usb.identity, "has no CDC data interface (class 0x0A) with bulk IN and OUT") }
        control = interfaces.first(where: { $0.interfaceClass == 0x02 })?.number ?? data.number
        bulkIn = inn.address
        bulkOut = out.address
        maxPacket = max(inn.maxPacketSize, 8)
        if control != data.number { try usb.claim(interface: control) }
        try usb.claim(interface: data.number)
    }

    /// Line coding (the device may ignore it: it is a virtual port) and DTR+RTS, which
    /// many firmwares need before they talk.
    public func configure(baud: Int = 115_200) throws {
        let b = UInt32(baud)
        let coding: [UInt8] = [UInt8(b & 0xFF), UInt8(b >> 8 & 0xFF), UInt8(b >> 16 & 0xFF), UInt8(b >> 24), 0, 0, 8]
        try usb.control(requestType: 0x21, request: 0x20, value: 0, index: UInt16(control), data: coding, timeout: .milliseconds(500))
        try usb.control(requestType: 0x21, request: 0x22, value: 0x03, index: UInt16(control), timeout: .milliseconds(500))
    }

    public func write(_ bytes: [UInt8], timeout: Duration) throws {
        let sent = try usb.bulkWrite(endpoint: bulkOut, bytes, timeout: timeout)
        if sent != bytes.count { throw ProtocolError(device: identity, "wrote \(sent) of \(bytes.count) bytes", offset: sent, isTimeout: true) }
    }

    public func read(timeout: Duration) throws -> [UInt8] {
        do {
            return try usb.bulkRead(endpoint: bulkIn, maxLength: maxPacket * 64, timeout: timeout)
        } catch let e as USBError where e.isTimeout {
            return []
        }
    }

    /// Drains what the device has already queued (there is no purge request in CDC-ACM).
    public func purge() throws {
        for _ in 0..<64 {
            if try read(timeout: .milliseconds(20)).isEmpty { return }
        }
    }
}
