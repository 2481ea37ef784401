import Foundation
import Synchronization

/// One command a node executed (or refused): who, what, when, and the result.
public struct AuditEntry: Sendable, Codable, Equatable {
    public var time: Date
    public var who: String
    public var what: String
    public var device: String
    public var result: String
}

/// The node's audit log: one JSON object a line, written per command, so the log of a node
/// process that dies (killed, crashed) is complete up to its last command: the kernel holds
/// what was written. It is synced to disk at most once a second, for power loss: a sync per
/// command would cost more than the command on a lab PC's disk.
public final class AuditLog: Sendable {
    public let path: String
    private struct Writer {
        var handle: FileHandle
        var encoder: JSONEncoder
        var lastSync: ContinuousClock.Instant
    }
    private let writer: Mutex<Writer>

    public init(path: String) throws {
        self.path = path
        if !FileManager.default.fileExists(atPath: path) {
            guard FileManager.default.createFile(atPath: path, contents: nil) else {
                throw NodeError("cannot create the audit log \(path)")
            }
        }
        guard let h = FileHandle(forWritingAtPath: path) else { throw NodeError("cannot open the audit log \(path) for writing") }
        _ = try? h.seekToEnd()
        let encoder = JSONEncoder()
        let f = Self.formatter()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var c = encoder.singleValueContainer()
            try c.encode(f.string(from: date))
        }
        encoder.outputFormatting = [.sortedKeys]
        writer = Mutex(Writer(handle: h, encoder: encoder, lastSync: .now))
    }

    /// ISO 8601 with milliseconds: the log is how a lease's expiry is timed.
    static func formatter() -> ISO8601DateFormatter {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return f
    }

    public func append(_ entry: AuditEntry) {
        // A full or failing disk must not stop the node: the entry is lost, the node goes on.
        writer.withLock { w in
            guard var line = try? w.encoder.encode(entry) else { return }
            line.append(0x0A)
            try? w.handle.write(contentsOf: line)
            if ContinuousClock.now - w.lastSync >= .seconds(1) {
                try? w.handle.synchronize()
                w.lastSync = .now
            }
        }
    }

    /// Every entry so far (for tests and `herald node audit`).
    public static func read(_ path: String) throws -> [AuditEntry] {
        let decoder = JSONDecoder()
        let f = formatter()
        decoder.dateDecodingStrategy = .custom { decoder in
            let text = try decoder.singleValueContainer().decode(String.self)
            guard let date = f.date(from: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: decoder.codingPath, debugDescription: "not a time: \(text)"))
            }
            return date
        }
        let text = try String(contentsOfFile: path, encoding: .utf8)
        return try text.split(separator: "\n").map { try decoder.decode(AuditEntry.self, from: Data($0.utf8)) }
    }
}

/// A node failed to start or to reach another.
public struct NodeError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
