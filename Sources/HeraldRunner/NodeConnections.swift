import Foundation
import HeraldCore
import HeraldNode

/// The coordinator's connections to a script's nodes: described before the script compiles,
/// leased for the run, released (or abandoned, if the coordinator dies) after it.
final class NodeConnections: Sendable {
    let connected: [String: RemoteNode]
    let catalogue: NodeCatalogue
    let channels: [String: [String: Int]]
    let streaming: [String: Set<String>]
    let problems: [String: String]
    let addresses: [String: String]

    init(
        connected: [String: RemoteNode] = [:], catalogue: NodeCatalogue = [:], channels: [String: [String: Int]] = [:],
        streaming: [String: Set<String>] = [:], problems: [String: String] = [:], addresses: [String: String] = [:]
    ) {
        self.streaming = streaming
        self.connected = connected
        self.catalogue = catalogue
        self.channels = channels
        self.problems = problems
        self.addresses = addresses
    }

    /// Connects to every node and asks what it serves. A node that cannot be reached or
    /// described gets a problem, reported at its `nodes:` entry by the compiler.
    static func describe(_ addresses: [NodeAddress], security: NodeSecurity?) async -> NodeConnections {
        var connected: [String: RemoteNode] = [:], catalogue: NodeCatalogue = [:], channels: [String: [String: Int]] = [:]
        var streaming: [String: Set<String>] = [:]
        var problems: [String: String] = [:], where_: [String: String] = [:]
        for a in addresses {
            where_[a.name] = a.address
            guard let security else {
                problems[a.name] = "the script has nodes: give this coordinator's certificate (--cert, --key, --ca), or --plaintext-loopback"
                continue
            }
            do {
                let node = try RemoteNode(name: a.name, host: a.host, port: a.port, security: security)
                let devices = try await node.describe()
                connected[a.name] = node
                catalogue[a.name] = Dictionary(devices.map { ($0.name, $0.descriptor) }, uniquingKeysWith: { x, _ in x })
                channels[a.name] = Dictionary(devices.map { ($0.name, $0.channels) }, uniquingKeysWith: { x, _ in x })
                streaming[a.name] = Set(devices.filter(\.streams).map(\.name))
            } catch {
                problems[a.name] = "cannot be described: \(error)"
            }
        }
        return NodeConnections(
            connected: connected, catalogue: catalogue, channels: channels, streaming: streaming, problems: problems, addresses: where_)
    }

    func address(_ node: String) -> String { addresses[node] ?? "?" }

    /// The remote device for a compiled device entry on `node`.
    func device(_ config: DeviceConfig, node: String) throws -> RemoteDevice {
        guard let remote = connected[node] else { throw DeviceError(device: config.name, .notFound, "node \(node) is not connected") }
        // The compiler names node drivers `node:<node>/<device on the node>`.
        let remoteName = config.driver.split(separator: "/", maxSplits: 1).last.map(String.init) ?? config.name
        guard let descriptor = catalogue[node]?[remoteName] else {
            throw DeviceError(device: config.name, .notFound, "node \(node) serves no device '\(remoteName)'")
        }
        return remoteDevice(
            name: config.name, remote: remoteName, descriptor: descriptor, channels: channels[node]?[remoteName] ?? 0,
            streams: streaming[node]?.contains(remoteName) ?? false, node: remote, timeout: config.callTimeout)
    }

    /// Takes every node's lease, with each node's `on_loss:` policy from the compiled script.
    func takeLeases(length: Duration, policies: [NodeAddress] = [], reconnectWithin: Duration? = nil) async throws {
        for p in policies { connected[p.name]?.reconnectWithin = p.reconnectWithin }
        if let reconnectWithin { connected.values.forEach { $0.reconnectWithin = reconnectWithin } }
        for (name, node) in connected.sorted(by: { $0.key < $1.key }) {
            do {
                try await node.takeLease(length: length)
            } catch {
                releaseLeases()
                throw NodeError("node \(name) (\(address(name))): \(error)")
            }
        }
    }

    func releaseLeases() { connected.values.forEach { $0.release() } }

    func close() { connected.values.forEach { $0.close() } }
}
