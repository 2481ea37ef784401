import ArgumentParser
import Foundation
import HeraldMonitor
import Logging
import HeraldCore
import HeraldNode
import HeraldRunner
import Synchronization

struct NodeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Serve this host's devices to a coordinator, and manage the lab's certificates.",
        discussion: "See docs/nodes.md.",
        subcommands: [NodeServe.self, NodeWatch.self, NodeCA.self, NodeIssue.self])
}

struct NodeServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve the devices of a node configuration over gRPC with mutual TLS.",
        discussion: """
            Prints "listening on PORT" when ready. The coordinator holding the node's lease controls its \
            devices; if its beats stop for the lease's length, every device goes to its safe state. \
            Every command is written to the audit log.
            """)

    @Option(name: .long, help: "The node configuration (YAML).") var config: String
    @Option(name: .long, help: "Random seed of the simulated lab behind mock devices.") var seed: UInt64 = 0
    @Flag(name: .long, help: "No TLS: for a node on 127.0.0.1 only.") var plaintextLoopback = false
    @Option(name: .long, help: "Serve Prometheus /metrics at HOST:PORT (loopback unless told otherwise).") var metrics: String?
    @Option(name: .customLong("metrics-token"), help: "The token /metrics requires (Authorization: Bearer); needed beyond loopback. Default: $HERALD_MONITOR_TOKEN.")
    var metricsToken: String?

    var metricsConfiguration: MonitorConfiguration? {
        get throws {
            guard let metrics else { return nil }
            do {
                return try MonitorConfiguration(parsing: metrics, token: metricsToken ?? ProcessInfo.processInfo.environment["HERALD_MONITOR_TOKEN"])
            } catch { throw ValidationError("--metrics: \(error)") }
        }
    }

    func validate() throws { _ = try metricsConfiguration }

    func run() async throws {
        bootstrapLogging(verbose: false)
        let logger = Logger(label: "herald.node")
        let host = try await NodeHostConfig.load(path: config, plaintextLoopback: plaintextLoopback)
        let metricsConfiguration = try metricsConfiguration
        let server = Mutex<MetricsServer?>(nil)
        defer { if let s = server.withLock({ $0 }) { Task { await s.stop() } } }
        try await Herald.serveNode(host, seed: seed, agentReady: { agent in
            guard let metricsConfiguration else { return }
            let figures = NodeMetrics()
            let s = MetricsServer(configuration: metricsConfiguration) {
                let st = await agent.stats
                return figures.exposition(
                    .init(node: st.name, devices: st.devices, leaseHolders: st.leaseHolders, commands: st.commands, tagsStreamed: st.tagsStreamed))
            }
            let port = try await s.start()
            server.withLock { $0 = s }
            logger.notice("node \(host.name): metrics at http://\(metricsConfiguration.host):\(port)/metrics")
        }) { port in
            // Unbuffered, so a supervisor (or a test) reading the pipe sees it at once.
            FileHandle.standardOutput.write(Data("listening on \(port)\n".utf8))
        }
    }
}

struct NodeWatch: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "watch",
        abstract: "Print what a node does as it happens: every command it executes, and its lease events.",
        discussion: """
            An observer's certificate is enough (`herald node issue --role observer`): watching controls \
            nothing. One line an event: time, who, what, device and result; --json prints the audit log's JSON.
            """)

    @Argument(help: "The node's HOST:PORT.") var address: String
    @OptionGroup var client: NodeClientOptions
    @Option(name: .long, help: "Stop after this many events.") var count: Int?
    @Flag(name: .long, help: "One JSON object a line, as in the node's audit log.") var json = false

    func run() async throws {
        guard let target = NodeAddress.parse(name: address, address) else { throw ValidationError("the node's address is HOST:PORT, got '\(address)'") }
        guard let security = try client.security else { throw ValidationError("give a certificate (--cert, --key, --ca), or --plaintext-loopback") }
        let node = try RemoteNode(name: address, host: target.host, port: target.port, security: security)
        defer { node.close() }
        let limit = count
        let json = self.json
        let seen = Counter()
        try await mappingErrors {
            try await node.watch { entry, dropped in
                if dropped > 0 { FileHandle.standardError.write(Data("(\(dropped) events dropped: this watcher fell behind)\n".utf8)) }
                FileHandle.standardOutput.write(Data((json ? entry.jsonLine : entry.textLine).utf8))
                let n = seen.increment()
                return limit.map { n < $0 } ?? true
            }
        }
    }
}

/// A count shared with a @Sendable closure.
final class Counter: Sendable {
    private let value = Mutex(0)
    func increment() -> Int { value.withLock { $0 += 1; return $0 } }
}

extension AuditEntry {
    var textLine: String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return "\(f.string(from: time))  \(who)  \(what)\(device.isEmpty ? "" : "  " + device)  \(result)\n"
    }

    var jsonLine: String {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let fields: [String: String] = ["time": f.string(from: time), "who": who, "what": what, "device": device, "result": result]
        guard let data = try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys]) else { return "{}\n" }
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}

struct NodeCA: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ca", abstract: "Make the lab's certificate authority (ca.cert.pem, ca.key.pem).")

    @Argument(help: "init") var action: String
    @Option(name: .long, help: "Where the CA lives.") var dir: String
    @Option(name: .long, help: "The CA's name.") var name = "Herald lab CA"

    func run() throws {
        guard action == "init" else { throw ValidationError("the only action is 'init'") }
        let ca = try LabCA.create(directory: dir, name: name)
        print("CA certificate: \(ca.certificatePath)")
    }
}

struct NodeIssue: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "issue", abstract: "Issue a node, controller or observer certificate signed by the lab CA.")

    @Option(name: .long, help: "The CA's folder (herald node ca init).") var ca: String
    @Option(name: .long, help: "Who the certificate is for (a node's or a person's name).") var name: String
    @Option(name: .long, help: "node, controller or observer.") var role: String
    @Option(name: .long, help: "A host name or IP address the node is reached at (repeatable; nodes only).") var host: [String] = []
    @Option(name: .long, help: "Where to write NAME.cert.pem and NAME.key.pem.") var out: String

    func run() throws {
        let (cert, key) = try LabCA(directory: ca).issue(name: name, role: role, hosts: host, out: out)
        print("certificate: \(cert)\nkey: \(key)")
    }
}
