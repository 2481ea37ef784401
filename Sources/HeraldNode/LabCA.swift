import Crypto
import Foundation
import SwiftASN1
import X509

/// The lab's certificate authority: `herald node ca init` makes it, `herald node issue` signs
/// node and client certificates with it. Every certificate carries its role in the subject's
/// organisational unit (controller or observer; nodes are `node`), and nodes and clients trust
/// only this CA: a certificate from any other CA is refused at the TLS handshake.
public struct LabCA: Sendable {
    public let directory: URL
    public var certificatePath: String { directory.appendingPathComponent("ca.cert.pem").path }
    var keyPath: String { directory.appendingPathComponent("ca.key.pem").path }

    public init(directory: String) {
        self.directory = URL(fileURLWithPath: directory)
    }

    /// Makes a new CA in `directory` (refused if one is there). The key file is mode 0600.
    @discardableResult
    public static func create(directory: String, name: String = "Herald lab CA", validDays: Int = 3650) throws -> LabCA {
        let ca = LabCA(directory: directory)
        try FileManager.default.createDirectory(at: ca.directory, withIntermediateDirectories: true)
        guard !FileManager.default.fileExists(atPath: ca.keyPath) else {
            throw NodeError("a CA already exists in \(directory); its key is \(ca.keyPath)")
        }
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            CommonName(name)
            OrganizationName("Herald")
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(validDays) * 86_400),
            issuer: subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            }, issuerPrivateKey: .init(key))
        try write(key.pemRepresentation, to: ca.keyPath, secret: true)
        try write(try certificate.serializeAsPEM().pemString, to: ca.certificatePath, secret: false)
        return ca
    }

    /// Issues a certificate for `name` with `role` (controller, observer or node), valid for the
    /// given host names and IP addresses (a node's address; clients need none), into
    /// `<out>/<name>.cert.pem` and `<out>/<name>.key.pem`.
    @discardableResult
    public func issue(name: String, role: String, hosts: [String] = [], out: String, validDays: Int = 825) throws
        -> (certificate: String, key: String)
    {
        guard ["controller", "observer", "node"].contains(role) else {
            throw NodeError("role must be controller, observer or node, not '\(role)'")
        }
        let caKey = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: keyPath, encoding: .utf8))
        let caCert = try Certificate(pemEncoded: String(contentsOfFile: certificatePath, encoding: .utf8))
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            CommonName(name)
            OrganizationalUnitName(role)
            OrganizationName("Herald")
        }
        var names: [GeneralName] = []
        for host in hosts {
            if let ip = IPAddressBytes(host) { names.append(.ipAddress(ASN1OctetString(contentBytes: ArraySlice(ip)))) } else {
                names.append(.dnsName(host))
            }
        }
        let now = Date()
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(Double(validDays) * 86_400),
            issuer: caCert.subject, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([.serverAuth, .clientAuth])
                if !names.isEmpty { SubjectAlternativeNames(names) }
            }, issuerPrivateKey: .init(caKey))
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        let certPath = URL(fileURLWithPath: out).appendingPathComponent("\(name).cert.pem").path
        let keyPath = URL(fileURLWithPath: out).appendingPathComponent("\(name).key.pem").path
        try Self.write(try certificate.serializeAsPEM().pemString, to: certPath, secret: false)
        try Self.write(key.pemRepresentation, to: keyPath, secret: true)
        return (certPath, keyPath)
    }

    static func write(_ text: String, to path: String, secret: Bool) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: secret ? [.posixPermissions: 0o600] : nil)
        else { throw NodeError("cannot write \(path)") }
    }
}

/// An IPv4 or IPv6 address as bytes, or nil for a host name.
func IPAddressBytes(_ text: String) -> [UInt8]? {
    var v4 = in_addr()
    if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
    var v6 = in6_addr()
    if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
    return nil
}
