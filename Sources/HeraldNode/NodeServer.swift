import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HeraldCore
import Logging

/// How a node is reached and how it proves who it is.
public enum NodeSecurity: Sendable {
    /// Mutual TLS with the lab CA: this side's certificate and key, and the CA that signed the other side's.
    case mutualTLS(certificate: String, key: String, ca: String)
    /// No TLS, no roles: allowed only on loopback, and only when asked for by name.
    case plaintextLoopback
}

/// The largest message a node accepts or sends: 4 MiB (a tag batch is about 200 kB).
public let nodeMaxMessageBytes = 4 << 20

/// Serves a node agent on a port until cancelled, checking its lease ten times a second.
public struct NodeServer: Sendable {
    public let agent: NodeAgent
    public let host: String
    public let port: Int
    public let security: NodeSecurity

    public init(agent: NodeAgent, host: String, port: Int, security: NodeSecurity) throws {
        if case .plaintextLoopback = security, !["127.0.0.1", "::1", "localhost"].contains(host) {
            throw NodeError("plaintext is for loopback only (127.0.0.1 or ::1), not \(host): issue certificates with `herald node issue`")
        }
        self.agent = agent
        self.host = host
        self.port = port
        self.security = security
    }

    var transportSecurity: HTTP2ServerTransport.Posix.TransportSecurity {
        switch security {
        case .plaintextLoopback: return .plaintext
        case .mutualTLS(let cert, let key, let ca):
            return .mTLS(certificateChain: [.file(path: cert, format: .pem)], privateKey: .file(path: key, format: .pem)) {
                $0.trustRoots = .certificates([.file(path: ca, format: .pem)])
                $0.clientCertificateVerification = .noHostnameVerification
            }
        }
    }

    /// Serves until the task is cancelled; `ready` gets the bound port (useful with port 0).
    public func serve(ready: (@Sendable (Int) -> Void)? = nil) async throws {
        var config = HTTP2ServerTransport.Posix.Config.defaults
        config.rpc.maxRequestPayloadSize = nodeMaxMessageBytes
        let transport = HTTP2ServerTransport.Posix(
            address: .ipv4(host: host, port: port), transportSecurity: transportSecurity, config: config)
        let service = NodeService(agent: agent, plaintext: { if case .plaintextLoopback = security { return true } else { return false } }())
        let server = GRPCServer(transport: transport, services: [service])
        try await withThrowingDiscardingTaskGroup { group in
            group.addTask { try await server.serve() }
            group.addTask {
                if let address = try await transport.listeningAddress.ipv4 { ready?(address.port) }
            }
            group.addTask {
                while !Task.isCancelled {
                    try await Task.sleep(for: .milliseconds(100))
                    await agent.checkLease()
                }
            }
        }
    }
}
