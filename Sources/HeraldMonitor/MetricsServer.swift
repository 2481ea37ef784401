import Hummingbird
import Logging
import NIOCore
import Prometheus
import ServiceLifecycle
import Synchronization

/// `/metrics` alone, for `herald node serve --metrics`: Prometheus text from `exposition`
/// at each scrape, behind the same token rule as the run monitor (required beyond loopback).
public final class MetricsServer: Sendable {
    private let configuration: MonitorConfiguration
    private let exposition: @Sendable () async -> String
    private let service = HTTPService()

    public init(configuration: MonitorConfiguration, exposition: @escaping @Sendable () async -> String) {
        self.configuration = configuration
        self.exposition = exposition
    }

    /// Starts listening; returns the port it got.
    public func start() async throws(MonitorError) -> Int {
        let router = Router()
        router.add(middleware: TokenMiddleware(token: configuration.token, loopback: configuration.isLoopback))
        let exposition = self.exposition
        router.get("/metrics") { _, _ in
            Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(string: await exposition())))
        }
        var quiet = Logger(label: "herald.metrics")
        quiet.logLevel = .warning
        let configuration = self.configuration
        return try await service.start("metrics on \(configuration.host):\(configuration.port)", logger: quiet) { onRunning in
            Application(
                router: router, configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: "herald"),
                onServerRunning: onRunning, logger: quiet)
        }
    }

    public func stop() async { await service.stop() }
}

/// A node's figures for Prometheus: up, its devices, live leases, commands and tags served.
public final class NodeMetrics: Sendable {
    public struct Figures: Sendable {
        public var node: String
        public var devices: [String]
        public var leaseHolders: [String]
        public var commands: Int
        public var tagsStreamed: Int

        public init(node: String, devices: [String], leaseHolders: [String], commands: Int, tagsStreamed: Int) {
            self.node = node
            self.devices = devices
            self.leaseHolders = leaseHolders
            self.commands = commands
            self.tagsStreamed = tagsStreamed
        }
    }

    private let registry = PrometheusCollectorRegistry()
    private let totals = CounterTotals()

    public init() {}

    public func exposition(_ f: Figures) -> String {
        let node = [("node", f.node)]
        registry.makeGauge(name: "herald_node_up", labels: node, help: "1 while the node agent serves.").set(to: 1.0)
        registry.makeGauge(name: "herald_node_devices", labels: node, help: "Devices the node serves.").set(to: Double(f.devices.count))
        registry.makeGauge(name: "herald_node_leases", labels: node, help: "Controllers holding a live lease.").set(to: Double(f.leaseHolders.count))
        for (name, total, help) in [
            ("herald_node_commands_total", f.commands, "Session commands the node executed."),
            ("herald_node_tags_streamed_total", f.tagsStreamed, "Time tags the node streamed to coordinators."),
        ] {
            totals.advance(registry.makeCounter(name: name, labels: node, help: help), key: name, to: Int64(total))
        }
        return registry.emitToString()
    }
}
