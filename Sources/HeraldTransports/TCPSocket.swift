import Foundation
import HeraldUSBProtocols
import Synchronization

/// A TCP connection to a LAN instrument's raw socket (SCPI instruments listen on port 5025
/// by convention): connected within a timeout, Nagle off (commands are small and wait for
/// their answers), keep-alive on so a cable pulled mid-run is noticed.
public final class TCPSocket: ByteLink, Sendable {
    public let host: String
    public let port: Int
    public var identity: String { "tcp \(host):\(port)" }
    private let fd: OwnedDescriptor

    public init(host: String, port: Int, timeout: Duration = .seconds(3)) throws(TransportError) {
        self.host = host
        self.port = port
        let endpoint = "\(host):\(port)"
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, String(port), &hints, &list)
        guard status == 0, let first = list else {
            throw TransportError(.notFound, endpoint: endpoint, "cannot resolve host '\(host)' (\(String(cString: gai_strerror(status))))")
        }
        defer { freeaddrinfo(list) }
        var lastError = TransportError(.notFound, endpoint: endpoint, "no address to connect to")
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let a = candidate {
            candidate = a.pointee.ai_next
            let s = socket(a.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            guard s >= 0 else { continue }
            var one: Int32 = 1
            setsockopt(s, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            setsockopt(s, SOL_SOCKET, SO_KEEPALIVE, &one, socklen_t(MemoryLayout<Int32>.size))
            if connect(s, a.pointee.ai_addr, a.pointee.ai_addrlen) == 0 {
                fd = OwnedDescriptor(s)
                return
            }
            guard errno == EINPROGRESS else {
                lastError = Self.connectError(errno, endpoint: endpoint)
                Glibc.close(s)
                continue
            }
            var p = pollfd(fd: s, events: Int16(POLLOUT), revents: 0)
            let ready = poll(&p, 1, FileDescriptorIO.milliseconds(timeout))
            var soError: Int32 = 0
            var length = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(s, SOL_SOCKET, SO_ERROR, &soError, &length)
            if ready > 0 && soError == 0 {
                fd = OwnedDescriptor(s)
                return
            }
            lastError = ready == 0
                ? TransportError(.notFound, endpoint: endpoint, "no answer within \(timeout) (is the instrument on, and on this network?)")
                : Self.connectError(soError, endpoint: endpoint)
            Glibc.close(s)
        }
        throw lastError
    }

    static func connectError(_ code: Int32, endpoint: String) -> TransportError {
        switch code {
        case ECONNREFUSED: return TransportError(.notFound, endpoint: endpoint, "connection refused: nothing listens on that port (SCPI raw sockets are usually 5025)")
        case EHOSTUNREACH, ENETUNREACH: return TransportError(.notFound, endpoint: endpoint, "host unreachable: \(TransportError.os(code))")
        default: return TransportError(.failed, endpoint: endpoint, "cannot connect: \(TransportError.os(code))")
        }
    }

    public func close() { fd.close() }

    var descriptor: Int32 { fd.value }

    public func write(_ bytes: [UInt8], timeout: Duration) throws {
        try FileDescriptorIO.write(descriptor, bytes, timeout: timeout, endpoint: "\(host):\(port)", hungUp: "the instrument closed the connection")
    }

    public func read(timeout: Duration) throws -> [UInt8] {
        try FileDescriptorIO.read(descriptor, timeout: timeout, endpoint: "\(host):\(port)", hungUp: "the instrument closed the connection")
    }

    /// Drops whatever has arrived and not been read.
    public func purge() throws {
        while try !read(timeout: .zero).isEmpty {}
    }
}

/// A message link over a byte stream, for SCPI over serial ports and sockets: a message is
/// one line, ended by `terminator` (LF for SCPI; a trailing CR is dropped from replies).
public final class LineMessageLink: MessageLink, @unchecked Sendable {  // reader behind a Mutex
    public let stream: any ByteLink
    public var identity: String { stream.identity }
    private let reader: Mutex<LineReader>

    public init(_ stream: any ByteLink, terminator: [UInt8] = [10]) {
        self.stream = stream
        reader = Mutex(LineReader(terminator: terminator))
    }

    public func send(_ message: [UInt8], timeout: Duration) throws {
        try stream.write(message, timeout: timeout)
    }

    public func receive(timeout: Duration) throws -> [UInt8] {
        var line = try reader.withLock { r in try r.readLine(from: stream, timeout: timeout) }
        if line.last == 13 { line.removeLast() }
        return line
    }
}
