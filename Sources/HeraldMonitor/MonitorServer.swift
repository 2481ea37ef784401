import Foundation
import HeraldLive
import Hummingbird
import HummingbirdWebSocket
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// Where the monitor listens and who may read it.
public struct MonitorConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// Required on every request when the monitor listens beyond loopback (`?token=` or
    /// `Authorization: Bearer`); optional on loopback.
    public var token: String?
    /// How often a page's feed looks for a new snapshot. Slower clients see fewer updates.
    public var pushInterval: Duration

    public init(host: String, port: Int, token: String? = nil, pushInterval: Duration = .milliseconds(250)) {
        self.host = host
        self.port = port
        self.token = token
        self.pushInterval = pushInterval
    }

    /// `127.0.0.1:8080`, `[::1]:8080`, `0.0.0.0:8080` or `:8080` (loopback).
    public init(parsing text: String, token: String?) throws(MonitorError) {
        var host = "127.0.0.1", portText = Substring(text)
        if let colon = text.lastIndex(of: ":") {
            let h = text[..<colon]
            if !h.isEmpty { host = h.hasPrefix("[") && h.hasSuffix("]") ? String(h.dropFirst().dropLast()) : String(h) }
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw .badAddress("'\(text)' is not HOST:PORT (for example 127.0.0.1:8080)")
        }
        self.init(host: host, port: port, token: token)
        try check()
    }

    /// An address literal of this machine's loopback (or `localhost`): a name that merely
    /// starts with `127.` is not one.
    public var isLoopback: Bool { Self.isLoopback(host) }

    static func isLoopback(_ host: String) -> Bool {
        if host == "::1" || host == "localhost" { return true }
        let parts = host.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts[0] == "127" && parts.allSatisfy { UInt8($0) != nil }
    }

    /// A monitor beyond loopback without a token would show the run to anyone on the network.
    public func check() throws(MonitorError) {
        if !isLoopback && (token ?? "").isEmpty {
            throw .tokenRequired("the monitor on \(host) is reachable beyond this machine: give it --monitor-token (or HERALD_MONITOR_TOKEN)")
        }
        if let token, !token.isEmpty, token.count < 16 {
            throw .tokenRequired("--monitor-token must be at least 16 characters")
        }
    }
}

public enum MonitorError: Error, CustomStringConvertible, Equatable {
    case badAddress(String)
    case tokenRequired(String)
    case bindFailed(String)

    public var description: String {
        switch self {
        case .badAddress(let s), .tokenRequired(let s), .bindFailed(let s): return s
        }
    }
}

/// The live monitor: the page (`/`), its feed (`/ws`, one JSON ``LiveSnapshot`` per change),
/// the snapshot on demand (`/state.json`) and Prometheus metrics (`/metrics`).
///
/// Read-only by construction: every route is a GET that reads the ``LiveRun``; nothing on
/// the server can reach a device. Each page's feed runs on its own task and takes
/// snapshots at its own pace, so a slow or stalled browser costs the run nothing.
public final class MonitorServer: Sendable {
    public let live: LiveRun
    public let metrics: RunMetrics
    private let configuration: MonitorConfiguration
    private let service = HTTPService()
    private let logger: Logger

    public init(live: LiveRun, configuration: MonitorConfiguration, logger: Logger = Logger(label: "herald.monitor")) {
        self.live = live
        self.metrics = RunMetrics()
        self.configuration = configuration
        self.logger = logger
    }

    /// Starts listening; returns the port it got (useful with port 0).
    public func start() async throws(MonitorError) -> Int {
        let router = Router(context: BasicWebSocketRequestContext.self)
        router.add(middleware: TokenMiddleware(token: configuration.token, loopback: configuration.isLoopback))
        let live = self.live, metrics = self.metrics, interval = configuration.pushInterval
        router.get("/") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(string: MonitorPage.html)))
        }
        router.get("/state.json") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "application/json", .cacheControl: "no-store"],
                body: .init(byteBuffer: ByteBuffer(bytes: try MonitorServer.encode(live.snapshot()))))
        }
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: metrics.exposition(live.snapshot()))))
        }
        router.ws("/ws") { _, _ in .upgrade([:]) } onUpgrade: { inbound, outbound, _ in
            // The page sends nothing that matters: its messages are read and dropped, so
            // the only thing it can do is close.
            let reader = Task { for try await _ in inbound {} }
            defer { reader.cancel() }
            var sent = -1
            while !Task.isCancelled {
                let version = live.version
                if version != sent {
                    // Versions passed over between two looks are updates this page never saw.
                    if sent >= 0 && version > sent + 1 { metrics.dropped(version - sent - 1) }
                    sent = version
                    let snapshot = live.snapshot()
                    let text = String(decoding: try MonitorServer.encode(snapshot), as: UTF8.self)
                    try await outbound.write(.text(text))
                    if snapshot.state == .stopped { break }
                }
                try await Task.sleep(for: interval)
            }
        }
        let address = "\(configuration.host):\(configuration.port)"
        let logger = quietLogger()
        return try await service.start("the monitor on \(address)", logger: logger) { onRunning in
            Application(
                router: router, server: .http1WebSocketUpgrade(webSocketRouter: router),
                configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "herald"),
                onServerRunning: onRunning, logger: logger)
        }
    }

    /// Stops listening; open pages get the final snapshot first if they were keeping up.
    public func stop() async { await service.stop() }

    static func encode(_ snapshot: LiveSnapshot) throws -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return Array(try encoder.encode(snapshot))
    }

    /// Hummingbird logs every connection at info; the run's log is the user's, not the server's.
    private func quietLogger() -> Logger {
        var l = logger
        l.logLevel = .warning
        return l
    }
}

/// Who may read: every request carries the token when one is set, `?token=` (how a browser
/// opens the page and its feed) or `Authorization: Bearer` (how Prometheus scrapes).
///
/// Without a token (loopback only) a web page on another site could still reach the monitor
/// through the user's browser: a request from another origin (the `Origin` header), or one
/// that named a host other than a loopback address (DNS rebinding), is refused.
struct TokenMiddleware<Context: RequestContext>: RouterMiddleware {
    let token: String?
    var loopback = true

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let authority = request.head.authority ?? ""
        if let origin = request.headers[.origin], origin != "null" {
            let originAuthority = origin.split(separator: "/", omittingEmptySubsequences: true).dropFirst().first.map(String.init) ?? ""
            guard originAuthority.lowercased() == authority.lowercased() else { return Self.refusal(.forbidden, "another site's page may not read this monitor\n") }
        }
        if loopback && (token ?? "").isEmpty {
            var host = Substring(authority)
            if host.hasPrefix("["), let close = host.firstIndex(of: "]") { host = host[host.index(after: host.startIndex)..<close] }
            else if let colon = host.lastIndex(of: ":") { host = host[..<colon] }
            guard MonitorConfiguration.isLoopback(String(host).lowercased()) else {
                return Self.refusal(.forbidden, "this monitor answers only to a loopback address, not '\(host)'\n")
            }
        }
        guard let token, !token.isEmpty else { return try await next(request, context) }
        let given = request.uri.queryParameters.get("token")
            ?? request.headers[.authorization].flatMap { $0.hasPrefix("Bearer ") ? String($0.dropFirst(7)) : nil }
        guard let given, Self.same(given, token) else {
            return Self.refusal(.unauthorized, "this monitor needs its token: open it with ?token=…\n")
        }
        return try await next(request, context)
    }

    static func refusal(_ status: HTTPResponse.Status, _ text: String) -> Response {
        Response(
            status: status, headers: [.contentType: "text/plain", .wwwAuthenticate: "Bearer"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// Compares in time that does not depend on where the strings differ.
    static func same(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var diff = UInt8(x.count == y.count ? 0 : 1)
        for i in 0..<max(x.count, y.count) { diff |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0) }
        return diff == 0
    }
}
