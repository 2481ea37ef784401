import Foundation
import HeraldUSB

/// A message link to an instrument: one `send` is one command, one `receive` one reply.
/// USBTMC is message-based; serial links frame replies by a terminator (`LineReader`).
public protocol MessageLink: AnyObject, Sendable {
    /// The instrument, for error messages (`1313:804a serial M00412345 (bus 1 address 7)`).
    var identity: String { get }
    func send(_ message: [UInt8], timeout: Duration) throws
    func receive(timeout: Duration) throws -> [UInt8]
}

/// A byte stream to an instrument (USB-serial bridges): writes, and reads of whatever arrived.
public protocol ByteLink: AnyObject, Sendable {
    var identity: String { get }
    func write(_ bytes: [UInt8], timeout: Duration) throws
    /// Returns the bytes that arrived within `timeout` (possibly none).
    func read(timeout: Duration) throws -> [UInt8]
    /// Drops what the bridge and the device have buffered.
    func purge() throws
}

/// A reply that broke the instrument's protocol, with where it broke.
public struct ProtocolError: Error, CustomStringConvertible, Sendable {
    public var device: String
    public var message: String
    /// Byte offset in the reply (or transfer) where the problem was found, when it is known.
    public var offset: Int?
    /// True when no reply came in time (the link recovered, so the next call may succeed).
    public var isTimeout: Bool

    public init(device: String, _ message: String, offset: Int? = nil, isTimeout: Bool = false) {
        self.device = device
        self.message = message
        self.offset = offset
        self.isTimeout = isTimeout
    }

    public var description: String { "\(device): \(message)" + (offset.map { " (at byte \($0))" } ?? "") }
}

/// Frames a byte stream into terminated lines, keeping what follows a terminator for the
/// next line. Not thread-safe: each driver owns one and calls it from its serial queue.
public struct LineReader: Sendable {
    public var terminator: [UInt8]
    /// Longest line accepted: a device that streams garbage without terminators is an error, not a hang.
    public var maxLength: Int
    var pending: [UInt8] = []

    public init(terminator: [UInt8] = [13, 10], maxLength: Int = 4096) {
        self.terminator = terminator
        self.maxLength = maxLength
    }

    /// Reads until a terminator (returned without it) or until `timeout` passes.
    public mutating func readLine(from link: any ByteLink, timeout: Duration) throws -> [UInt8] {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let end = find(terminator, in: pending) {
                let line = Array(pending[..<end])
                pending.removeFirst(end + terminator.count)
                return line
            }
            if pending.count > maxLength {
                let seen = pending.count
                pending.removeAll()
                throw ProtocolError(device: link.identity, "no line terminator in \(seen) bytes: the device is sending garbage", offset: seen)
            }
            let left = deadline - ContinuousClock.now
            if left <= .zero {
                let partial = pending.count
                pending.removeAll()
                throw ProtocolError(
                    device: link.identity,
                    partial == 0 ? "no reply within \(timeout)" : "reply cut short: \(partial) bytes and no terminator within \(timeout)",
                    offset: partial == 0 ? nil : partial, isTimeout: true)
            }
            pending += try link.read(timeout: min(left, .milliseconds(100)))
        }
    }

    /// Forgets buffered bytes (after a purge or an aborted exchange).
    public mutating func reset() { pending.removeAll() }

    func find(_ needle: [UInt8], in hay: [UInt8]) -> Int? {
        guard !needle.isEmpty, hay.count >= needle.count else { return nil }
        for i in 0...(hay.count - needle.count) where hay[i] == needle[0] {
            if needle.count == 1 || Array(hay[i..<(i + needle.count)]) == needle { return i }
        }
        return nil
    }
}
