import Foundation
import HeraldUSBProtocols
import Synchronization

/// A serial port through the kernel's tty driver (`/dev/ttyUSB0`, `/dev/ttyACM0`, the stable
/// `/dev/serial/by-id/…` links, or a pseudo-terminal): raw 8N1 at a fixed rate, no flow
/// control, opened exclusively (TIOCEXCL) so a second program cannot interleave commands.
/// Reads wait with poll(2), so a timeout never blocks longer than asked.
public final class SerialPort: ByteLink, Sendable {
    public let path: String
    public let baud: Int
    public var identity: String { "serial \(path)" }
    private let fd: OwnedDescriptor

    /// The rates termios can set, by value.
    static let rates: [Int: speed_t] = [
        1200: speed_t(B1200), 2400: speed_t(B2400), 4800: speed_t(B4800), 9600: speed_t(B9600), 19200: speed_t(B19200),
        38400: speed_t(B38400), 57600: speed_t(B57600), 115_200: speed_t(B115200), 230_400: speed_t(B230400),
        460_800: speed_t(B460800), 921_600: speed_t(B921600),
    ]

    public init(path: String, baud: Int) throws(TransportError) {
        self.path = path
        self.baud = baud
        guard let speed = Self.rates[baud] else {
            throw TransportError(.failed, endpoint: path, "\(baud) Bd is not a standard rate (\(Self.rates.keys.sorted().map(String.init).joined(separator: ", ")))")
        }
        let opened = open(path, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        guard opened >= 0 else {
            let e = errno
            switch e {
            case ENOENT, ENXIO, ENODEV:
                throw TransportError(.notFound, endpoint: path, "no such serial port (is the instrument plugged in? `ls /dev/serial/by-id/` lists the ports)")
            case EACCES, EPERM:
                throw TransportError(.denied, endpoint: path, "permission denied (add your user to the 'dialout' group, then log in again)")
            case EBUSY:
                throw TransportError(.denied, endpoint: path, "the port is busy: another program has it open")
            default: throw TransportError(.failed, endpoint: path, "cannot open: \(TransportError.os(e))")
            }
        }
        var t = termios()
        guard tcgetattr(opened, &t) == 0 else {
            let e = errno
            Glibc.close(opened)
            throw TransportError(.failed, endpoint: path, "is not a serial port (\(TransportError.os(e)))")
        }
        cfmakeraw(&t)
        t.c_cflag |= tcflag_t(CLOCAL) | tcflag_t(CREAD)
        t.c_cflag &= ~(tcflag_t(CSTOPB) | tcflag_t(CRTSCTS))
        cfsetispeed(&t, speed)
        cfsetospeed(&t, speed)
        guard tcsetattr(opened, TCSANOW, &t) == 0 else {
            let e = errno
            Glibc.close(opened)
            throw TransportError(.failed, endpoint: path, "cannot set \(baud) Bd 8N1: \(TransportError.os(e))")
        }
        // Exclusive: a second `open` (another Herald, a terminal program) gets EBUSY.
        _ = ioctl(opened, UInt(TIOCEXCL))
        tcflush(opened, TCIOFLUSH)
        fd = OwnedDescriptor(opened)
    }

    public func close() { fd.close() }

    var descriptor: Int32 { fd.value }

    public func write(_ bytes: [UInt8], timeout: Duration) throws {
        try FileDescriptorIO.write(descriptor, bytes, timeout: timeout, endpoint: path, hungUp: "the serial port went away (unplugged?)")
    }

    public func read(timeout: Duration) throws -> [UInt8] {
        try FileDescriptorIO.read(descriptor, timeout: timeout, endpoint: path, hungUp: "the serial port went away (unplugged?)")
    }

    public func purge() throws {
        let d = descriptor
        guard d >= 0 else { throw TransportError(.gone, endpoint: path, "the port is closed") }
        tcflush(d, TCIOFLUSH)
    }
}

/// A descriptor a link owns: closed once, by `close()` or when the link goes.
final class OwnedDescriptor: Sendable {
    private let fd: Mutex<Int32>

    init(_ fd: Int32) { self.fd = Mutex(fd) }
    deinit { close() }

    var value: Int32 { fd.withLock { $0 } }

    func close() {
        fd.withLock {
            if $0 >= 0 { Glibc.close($0) }
            $0 = -1
        }
    }
}

/// poll(2)-bounded reads and writes on a non-blocking descriptor, shared by serial ports and
/// sockets: EOF, EIO and hang-ups are `.gone`, never an empty read that looks like silence.
enum FileDescriptorIO {
    static func milliseconds(_ d: Duration) -> Int32 {
        let ms = d.components.seconds * 1000 + d.components.attoseconds / 1_000_000_000_000_000
        return Int32(clamping: max(0, ms))
    }

    static func read(_ fd: Int32, timeout: Duration, endpoint: String, hungUp: String) throws(TransportError) -> [UInt8] {
        guard fd >= 0 else { throw TransportError(.gone, endpoint: endpoint, "closed") }
        var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(&p, 1, milliseconds(timeout))
        if ready < 0 {
            if errno == EINTR { return [] }
            throw TransportError(.failed, endpoint: endpoint, "poll: \(TransportError.os(errno))")
        }
        if ready == 0 { return [] }
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n > 0 { return Array(buffer[..<n]) }
        if n == 0 { throw TransportError(.gone, endpoint: endpoint, hungUp) }
        let e = errno
        if e == EAGAIN || e == EINTR {
            if p.revents & Int16(POLLHUP | POLLERR) != 0 { throw TransportError(.gone, endpoint: endpoint, hungUp) }
            return []
        }
        if e == EIO || e == ECONNRESET || e == ENXIO || e == ENODEV || e == EPIPE { throw TransportError(.gone, endpoint: endpoint, hungUp) }
        throw TransportError(.failed, endpoint: endpoint, "read: \(TransportError.os(e))")
    }

    static func write(_ fd: Int32, _ bytes: [UInt8], timeout: Duration, endpoint: String, hungUp: String) throws(TransportError) {
        guard fd >= 0 else { throw TransportError(.gone, endpoint: endpoint, "closed") }
        let deadline = ContinuousClock.now + timeout
        var sent = 0
        while sent < bytes.count {
            let n = bytes.withUnsafeBytes { raw in
                Glibc.send(fd, raw.baseAddress!.advanced(by: sent), raw.count - sent, Int32(MSG_NOSIGNAL))
            }
            // send(2) refuses a tty (ENOTSOCK): write(2) is the same call for it.
            let written = n >= 0 ? n : (errno == ENOTSOCK ? bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress!.advanced(by: sent), $0.count - sent) } : n)
            if written > 0 {
                sent += written
                continue
            }
            let e = errno
            if written < 0 && e != EAGAIN && e != EINTR {
                if e == EIO || e == EPIPE || e == ECONNRESET || e == ENXIO || e == ENODEV { throw TransportError(.gone, endpoint: endpoint, hungUp) }
                throw TransportError(.failed, endpoint: endpoint, "write: \(TransportError.os(e))")
            }
            let left = deadline - ContinuousClock.now
            guard left > .zero else { throw TransportError(.timeout, endpoint: endpoint, "could not send within \(timeout) (\(sent) of \(bytes.count) bytes)") }
            var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&p, 1, max(1, milliseconds(left)))
            if p.revents & Int16(POLLHUP | POLLERR) != 0 { throw TransportError(.gone, endpoint: endpoint, hungUp) }
        }
    }
}
