import Foundation

/// One entry of an instrument's SCPI error queue (`SYSTem:ERRor?` → `-113,"Undefined header"`).
public struct SCPIError: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: Int
    public var message: String
    public var description: String { "\(code), \"\(message)\"" }

    /// Parses `<code>,"<message>"`; nil when the text is not an error-queue entry.
    public init?(parsing text: String) {
        let trimmed = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard let comma = trimmed.firstIndex(of: ","), let code = Int(trimmed[..<comma].trimmingCharacters(in: .whitespaces)) else { return nil }
        self.code = code
        self.message = trimmed[trimmed.index(after: comma)...].trimmingCharacters(in: CharacterSet(charactersIn: " \""))
    }
}

/// A command the instrument refused: what it queued in its error queue.
public struct SCPIRejection: Error, Sendable, CustomStringConvertible {
    public var device: String
    public var command: String
    public var errors: [SCPIError]
    public var description: String {
        "\(device) refused '\(command)': " + errors.map(\.description).joined(separator: "; ")
    }
}

/// SCPI (IEEE 488.2) commands over a message link: writes, queries with typed answers, and
/// the error queue, which every write checks so a rejected command is never silent.
public struct SCPIClient: Sendable {
    public let link: any MessageLink
    public var timeout: Duration

    public init(_ link: any MessageLink, timeout: Duration = .seconds(2)) {
        self.link = link
        self.timeout = timeout
    }

    public func write(_ command: String) throws {
        try link.send(Array((command + "\n").utf8), timeout: timeout)
    }

    public func query(_ command: String) throws -> String {
        try write(command)
        let bytes = try link.receive(timeout: timeout)
        guard let text = String(bytes: bytes, encoding: .utf8), !text.contains("\u{FFFD}") else {
            throw ProtocolError(device: link.identity, "answer to \(command) is not text (\(bytes.count) bytes)", offset: 0)
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    public func queryNumber(_ command: String) throws -> Double {
        let text = try query(command)
        guard let value = Double(text), value.isFinite else {
            throw ProtocolError(device: link.identity, "answer to \(command) is not a number: '\(text.prefix(40))'", offset: 0)
        }
        return value
    }

    /// SCPI booleans: `1`/`0`, `ON`/`OFF`.
    public func queryBool(_ command: String) throws -> Bool {
        switch try query(command).uppercased() {
        case "1", "ON": return true
        case "0", "OFF": return false
        case let other: throw ProtocolError(device: link.identity, "answer to \(command) is not a boolean: '\(other.prefix(40))'", offset: 0)
        }
    }

    /// Drains the error queue (at most 32 entries: a queue that never empties is a fault).
    public func errors() throws -> [SCPIError] {
        var out: [SCPIError] = []
        for _ in 0..<32 {
            let text = try query("SYST:ERR?")
            guard let e = SCPIError(parsing: text) else {
                throw ProtocolError(device: link.identity, "SYST:ERR? answered '\(text.prefix(40))', not an error-queue entry", offset: 0)
            }
            if e.code == 0 { return out }
            out.append(e)
        }
        return out
    }

    /// Writes a command and fails if the instrument queued an error for it.
    public func checkedWrite(_ command: String) throws {
        try write(command)
        let queued = try errors()
        if !queued.isEmpty { throw SCPIRejection(device: link.identity, command: command, errors: queued) }
    }
}
