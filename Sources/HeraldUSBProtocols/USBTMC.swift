import Foundation
import HeraldUSB
import Synchronization

/// USBTMC (USB Test & Measurement Class 1.0) with the USB488 subclass, over libusb: the
/// bulk message headers, bTag sequencing, EOM and term-char handling, capabilities, and
/// recovery after a timeout (abort the bulk transfer, INITIATE_CLEAR, clear halts) so a
/// timed-out instrument answers the next query instead of returning the stale reply.
///
/// Reference: USB Test and Measurement Class Specification 1.0 (usb.org), §3 (bulk
/// messages) and §4 (class requests); USB488 subclass specification 1.0.
public final class USBTMCLink: MessageLink, @unchecked Sendable {  // `usb` is thread-safe; mutable state behind a Mutex
    public let usb: USBDeviceHandle
    public var identity: String { usb.identity }
    let interface: Int
    let bulkOut: UInt8
    let bulkIn: UInt8
    let maxPacket: Int
    public let isUSB488: Bool
    private let lastTag = Mutex<UInt8>(0)
    /// Largest reply accepted.
    public var maxReply = 1 << 20

    enum MsgID: UInt8 {
        case devDepMsgOut = 1
        case requestDevDepMsgIn = 2
    }

    enum Request: UInt8 {
        case initiateAbortBulkOut = 1, checkAbortBulkOutStatus = 2, initiateAbortBulkIn = 3, checkAbortBulkInStatus = 4
        case initiateClear = 5, checkClearStatus = 6, getCapabilities = 7, indicatorPulse = 64
        case readStatusByte = 128
    }

    static let statusSuccess: UInt8 = 0x01
    static let statusPending: UInt8 = 0x02

    /// Finds the USBTMC interface (class 0xFE, subclass 3) and claims it.
    public init(_ usb: USBDeviceHandle) throws {
        self.usb = usb
        guard let tmc = try usb.interfaces().first(where: { $0.interfaceClass == 0xFE && $0.subclass == 3 }),
            let out = tmc.endpoint(type: 2, input: false), let inn = tmc.endpoint(type: 2, input: true)
        else {
            throw ProtocolError(device: usb.identity, "has no USBTMC interface (class 0xFE subclass 3 with bulk IN and OUT)")
        }
        interface = tmc.number
        bulkOut = out.address
        bulkIn = inn.address
        maxPacket = max(inn.maxPacketSize, 64)
        isUSB488 = tmc.protocolCode == 1
        try usb.claim(interface: interface)
    }

    /// bTag runs 1…255 and never 0 (§3.2).
    func nextTag() -> UInt8 {
        lastTag.withLock { t in
            t = t == 255 ? 1 : t + 1
            return t
        }
    }

    static func header(_ id: MsgID, tag: UInt8, size: Int, attributes: UInt8, termChar: UInt8 = 0) -> [UInt8] {
        let n = UInt32(size)
        return [id.rawValue, tag, ~tag, 0, UInt8(n & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 24), attributes, termChar, 0, 0]
    }

    /// Sends one message (DEV_DEP_MSG_OUT with EOM), padded to a 4-byte boundary.
    public func send(_ message: [UInt8], timeout: Duration) throws {
        let tag = nextTag()
        var transfer = Self.header(.devDepMsgOut, tag: tag, size: message.count, attributes: 0x01) + message
        transfer += [UInt8](repeating: 0, count: (4 - transfer.count % 4) % 4)
        do {
            try clearingStall("bulk-OUT endpoint") { try usb.bulkWrite(endpoint: bulkOut, transfer, timeout: timeout) }
        } catch let e as USBError where e.isTimeout {
            try? abortBulkOut(tag: tag)
            throw ProtocolError(device: identity, "write timed out after \(timeout); transfer aborted", isTimeout: true)
        }
    }

    /// A stalled endpoint is cleared (its halt, then the device) and reported as a protocol
    /// error, which the engine retries like garbage.
    func clearingStall<T>(_ endpoint: String, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as USBError where e.isStall {
            try? clear()
            throw ProtocolError(device: identity, "\(endpoint) stalled; halt cleared and device cleared")
        }
    }

    /// Requests and reads one reply, across as many transfers as it takes to see EOM.
    public func receive(timeout: Duration) throws -> [UInt8] { try receive(timeout: timeout, termChar: nil) }

    public func receive(timeout: Duration, termChar: UInt8?) throws -> [UInt8] {
        var reply: [UInt8] = []
        while true {
            let tag = nextTag()
            let want = maxReply - reply.count
            let request = Self.header(
                .requestDevDepMsgIn, tag: tag, size: want, attributes: termChar == nil ? 0 : 0x02, termChar: termChar ?? 0)
            try clearingStall("bulk-OUT endpoint (read request)") {
                try usb.bulkWrite(endpoint: bulkOut, request, timeout: timeout)
            }
            let (data, eom) = try readMessage(tag: tag, timeout: timeout)
            reply += data
            if eom { return reply }
            if reply.count >= maxReply {
                throw ProtocolError(device: identity, "reply longer than \(maxReply) bytes", offset: reply.count)
            }
        }
    }

    /// Reads the DEV_DEP_MSG_IN answer to request `tag`: header checks, then the payload,
    /// which may span several bulk transfers.
    func readMessage(tag: UInt8, timeout: Duration) throws -> ([UInt8], Bool) {
        let chunk = (maxReply + 12 + maxPacket - 1) / maxPacket * maxPacket
        var first: [UInt8]
        do {
            first = try clearingStall("bulk-IN endpoint") {
                try usb.bulkRead(endpoint: bulkIn, maxLength: min(chunk, 64 * 1024), timeout: timeout)
            }
        } catch let e as USBError where e.isTimeout {
            try? recover(abortingIn: tag)
            throw ProtocolError(device: identity, "no reply within \(timeout); aborted the transfer and cleared the device", isTimeout: true)
        }
        func fail(_ message: String, at offset: Int) -> ProtocolError {
            try? recover(abortingIn: tag)
            return ProtocolError(device: identity, message + "; cleared the device", offset: offset)
        }
        guard first.count >= 12 else { throw fail("short packet: \(first.count) bytes, less than a USBTMC header", at: first.count) }
        guard first[0] == MsgID.requestDevDepMsgIn.rawValue else {
            throw fail("malformed header: MsgID \(first[0]), expected 2 (DEV_DEP_MSG_IN)", at: 0)
        }
        guard first[1] == tag else { throw fail("wrong bTag \(first[1]) in reply, expected \(tag)", at: 1) }
        guard first[2] == ~tag else { throw fail("malformed header: bTagInverse \(first[2]) is not the inverse of bTag \(tag)", at: 2) }
        let size = Int(first[4]) | Int(first[5]) << 8 | Int(first[6]) << 16 | Int(first[7]) << 24
        guard size <= maxReply else { throw fail("header announces \(size) bytes, more than the \(maxReply) requested", at: 4) }
        let eom = first[8] & 0x01 != 0
        var payload = Array(first.dropFirst(12))
        while payload.count < size {
            let more: [UInt8]
            do {
                more = try usb.bulkRead(endpoint: bulkIn, maxLength: min(chunk, 64 * 1024), timeout: timeout)
            } catch let e as USBError where e.isTimeout {
                throw fail("reply cut short: \(payload.count) of \(size) announced bytes arrived", at: 12 + payload.count)
            }
            if more.isEmpty { throw fail("reply cut short: \(payload.count) of \(size) announced bytes arrived", at: 12 + payload.count) }
            payload += more
        }
        return (Array(payload.prefix(size)), eom)
    }

    // MARK: Class requests (§4)

    /// What the interface supports (GET_CAPABILITIES, §4.2.1.8).
    public struct Capabilities: Sendable, Equatable {
        public var bcdUSBTMC: UInt16
        public var indicatorPulse: Bool
        public var talkOnly: Bool
        public var listenOnly: Bool
        public var termChar: Bool
        /// USB488: bcdUSB488, and whether it accepts REN/GTL/LLO and TRIGGER.
        public var bcdUSB488: UInt16
        public var remoteLocal: Bool
        public var trigger: Bool
    }

    public func capabilities(timeout: Duration = .seconds(1)) throws -> Capabilities {
        let r = try usb.control(
            requestType: 0xA1, request: Request.getCapabilities.rawValue, value: 0, index: UInt16(interface), length: 0x18,
            timeout: timeout)
        guard r.count >= 0x18, r[0] == Self.statusSuccess else {
            throw ProtocolError(device: identity, "GET_CAPABILITIES answered \(r.count) bytes, status \(r.first ?? 0)", offset: 0)
        }
        return Capabilities(
            bcdUSBTMC: UInt16(r[2]) | UInt16(r[3]) << 8, indicatorPulse: r[4] & 0x04 != 0, talkOnly: r[4] & 0x02 != 0,
            listenOnly: r[4] & 0x01 != 0, termChar: r[5] & 0x01 != 0, bcdUSB488: UInt16(r[12]) | UInt16(r[13]) << 8,
            remoteLocal: r[14] & 0x02 != 0, trigger: r[14] & 0x01 != 0)
    }

    /// USB488 READ_STATUS_BYTE: the IEEE 488.2 status byte, through the control pipe.
    public func readStatusByte(timeout: Duration = .seconds(1)) throws -> UInt8 {
        let tag = UInt8.random(in: 2...127)
        let r = try usb.control(
            requestType: 0xA1, request: Request.readStatusByte.rawValue, value: UInt16(tag), index: UInt16(interface), length: 3,
            timeout: timeout)
        guard r.count >= 3, r[0] == Self.statusSuccess, r[1] == tag else {
            throw ProtocolError(device: identity, "READ_STATUS_BYTE answered \(r)", offset: 0)
        }
        return r[2]
    }

    /// Polls a CHECK_* request until the device stops answering STATUS_PENDING (bounded).
    func poll(_ request: Request, type: UInt8, index: UInt16, length: Int) throws {
        for _ in 0..<20 {
            let r = try usb.control(requestType: type, request: request.rawValue, value: 0, index: index, length: length, timeout: .milliseconds(500))
            if r.first != Self.statusPending { return }
            usleep(20_000)
        }
        throw ProtocolError(device: identity, "\(request) still pending after 20 polls")
    }

    /// After a failed read: abort the bulk-IN transfer, flush what the device still sends,
    /// then clear the interface (§4.2.1.4–4.2.1.7) so the next exchange starts clean.
    public func recover(abortingIn tag: UInt8) throws {
        let r = try usb.control(
            requestType: 0xA2, request: Request.initiateAbortBulkIn.rawValue, value: UInt16(tag), index: UInt16(bulkIn), length: 2,
            timeout: .milliseconds(500))
        if r.first == Self.statusSuccess {
            for _ in 0..<16 {  // flush until a short or empty packet
                guard let data = try? usb.bulkRead(endpoint: bulkIn, maxLength: maxPacket, timeout: .milliseconds(50)),
                    data.count == maxPacket
                else { break }
            }
            try poll(.checkAbortBulkInStatus, type: 0xA2, index: UInt16(bulkIn), length: 8)
        }
        try clear()
    }

    func abortBulkOut(tag: UInt8) throws {
        let r = try usb.control(
            requestType: 0xA2, request: Request.initiateAbortBulkOut.rawValue, value: UInt16(tag), index: UInt16(bulkOut), length: 2,
            timeout: .milliseconds(500))
        if r.first == Self.statusSuccess { try poll(.checkAbortBulkOutStatus, type: 0xA2, index: UInt16(bulkOut), length: 8) }
        try clear()
    }

    /// INITIATE_CLEAR, CHECK_CLEAR_STATUS, then clear the halt on bulk-OUT (§4.2.1.6).
    public func clear() throws {
        _ = try usb.control(requestType: 0xA1, request: Request.initiateClear.rawValue, value: 0, index: UInt16(interface), length: 1, timeout: .milliseconds(500))
        try poll(.checkClearStatus, type: 0xA1, index: UInt16(interface), length: 2)
        try usb.clearHalt(endpoint: bulkOut)
        try? usb.clearHalt(endpoint: bulkIn)
    }
}
