import Foundation
import HeraldCore
import HeraldNode
import HeraldScript
import Logging
import SimulatedLab
import Yams

/// A node's configuration (`herald node serve --config node.yaml`): the node's name, where it
/// listens, its certificate, its audit log, and its devices, declared as in a script (drivers,
/// settings, limits, match, and `simulation:` for mocks).
public struct NodeHostConfig: Sendable {
    public var name: String
    public var host: String
    public var port: Int
    public var security: NodeSecurity
    public var auditPath: String?
    public var compiled: CompiledScript
    /// Other nodes this node's devices live on (a simulated world), connected and described.
    let upstream: NodeConnections
    /// `accept_nodes: true`: other nodes may control devices here (a simulated world).
    public var acceptsNodes = false

    /// Reads and validates a node configuration; paths in `tls:` and `audit:` are relative to
    /// it. Devices on other nodes (`node:`, with their `nodes:`) are described first, reached
    /// with this node's own certificate.
    public static func load(path: String, plaintextLoopback: Bool = false) async throws -> NodeHostConfig {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw NodeError("cannot read the node configuration \(path): \(error.localizedDescription)")
        }
        let folder = URL(fileURLWithPath: path).deletingLastPathComponent()
        func resolved(_ p: String) -> String { p.hasPrefix("/") ? p : folder.appendingPathComponent(p).path }
        // The node keys first (the compiler accepts them and leaves them to us).
        guard let root = try Yams.compose(yaml: text)?.mapping else { throw NodeError("\(path): not a mapping") }
        guard let name = root["node"]?.scalar?.string, !name.isEmpty else { throw NodeError("\(path): needs 'node: NAME'") }
        let listen = root["listen"]?.scalar?.string ?? "0.0.0.0:50051"
        guard let address = NodeAddress.parse(name: name, listen) else { throw NodeError("\(path): listen must be HOST:PORT, got '\(listen)'") }
        let security: NodeSecurity
        if let tls = root["tls"]?.mapping {
            guard let cert = tls["certificate"]?.scalar?.string, let key = tls["key"]?.scalar?.string, let ca = tls["ca"]?.scalar?.string else {
                throw NodeError("\(path): tls needs certificate, key and ca (issue them with `herald node issue`)")
            }
            security = .mutualTLS(certificate: resolved(cert), key: resolved(key), ca: resolved(ca))
        } else if plaintextLoopback {
            security = .plaintextLoopback
        } else {
            throw NodeError("\(path): a node serves over mutual TLS: give 'tls: {certificate, key, ca}' (or --plaintext-loopback, for loopback only)")
        }
        let audit = (root["audit"]?.scalar?.string).map { resolved($0) }
        let upstream = await NodeConnections.describe(ScriptCompiler.nodeAddresses(path: path), security: security)
        var compiler = Herald.compiler(registry: Herald.descriptorRegistry)
        compiler.extraTopLevelKeys = ["node", "listen", "tls", "audit", "accept_nodes"]
        compiler.nodeCatalogue = upstream.catalogue
        compiler.nodeProblems = upstream.problems
        let compiled: CompiledScript
        do {
            compiled = try compiler.compile(text: text, file: path)
        } catch {
            upstream.close()
            throw error
        }
        var config = NodeHostConfig(
            name: name, host: address.host, port: address.port, security: security, auditPath: audit, compiled: compiled,
            upstream: upstream)
        config.acceptsNodes = ["true", "yes"].contains(root["accept_nodes"]?.scalar?.string ?? "")
        return config
    }
}

extension Herald {
    /// Serves a node until cancelled: opens its devices (mocks on a simulated lab of `seed`),
    /// then the agent. `ready` gets the bound port.
    public static func serveNode(
        _ config: NodeHostConfig, seed: UInt64 = 0, logger: Logger = Logger(label: "herald.node"),
        agentReady: (@Sendable (NodeAgent) async throws -> Void)? = nil, ready: (@Sendable (Int) -> Void)? = nil
    ) async throws {
        let lab = SimulatedLab(
            parameters: try LabParameters(config.compiled.simulation), network: try NetworkParameters(config.compiled.network), seed: seed)
        let registry = registry(lab: lab)
        var devices: [any Device] = []
        for d in config.compiled.plan.devices {
            if let upstream = d.node {
                devices.append(try config.upstream.device(d, node: upstream))
                continue
            }
            guard let entry = registry.entry(d.driver) else { throw NodeError("node \(config.name): driver \(d.driver) is not available") }
            devices.append(try entry.make(d))
        }
        // This node's lease on the nodes its devices live on, held while it serves. A serving
        // node has no run to fail: when its link to them drops it keeps trying to get them
        // back (up to an hour), restoring what it had set, and its own commands wait meanwhile.
        try await config.upstream.takeLeases(length: .seconds(2), reconnectWithin: .seconds(3600))
        defer { config.upstream.close() }
        // Safe before serving: a node restarted after a crash must not leave its instruments as
        // the crashed run had them.
        for d in devices {
            do {
                try await d.connect()
                try await d.enterSafeState()
            } catch {
                logger.critical("node \(config.name): \(d.name) could not be put safe at start: \(error)")
            }
        }
        let audit = try config.auditPath.map { try AuditLog(path: $0) }
        let agent = NodeAgent(
            name: config.name, devices: devices, configs: config.compiled.plan.devices, acceptsNodes: config.acceptsNodes, audit: audit,
            logger: logger)
        try await agentReady?(agent)
        let server = try NodeServer(agent: agent, host: config.host, port: config.port, security: config.security)
        logger.notice("node \(config.name): serving \(devices.map(\.name).joined(separator: ", ")) on \(config.host):\(config.port)")
        try await server.serve(ready: ready)
    }
}
