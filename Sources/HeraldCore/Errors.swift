/// A place in a script file, 1-based, as editors show it.
public struct SourceLocation: Sendable, Hashable, Codable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    public var description: String { "\(file):\(line):\(column)" }
}

/// A problem found in a script, before any device is touched.
public struct ScriptDiagnostic: Error, Sendable, Hashable, CustomStringConvertible {
    public var location: SourceLocation
    public var message: String

    public init(_ message: String, at location: SourceLocation) {
        self.message = message
        self.location = location
    }

    public var description: String { "\(location): error: \(message)" }
}

/// All the problems found in one script; validation reports every one, not only the first.
public struct ScriptErrors: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ScriptDiagnostic]
    public init(_ diagnostics: [ScriptDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// A failure while talking to a device. Always names the device, so a lab user
/// knows which cable to check.
public struct DeviceError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case notFound = "not found"
        case disconnected
        case timeout = "timed out"
        case invalidResponse = "answered garbage"
        case rejected = "rejected the request"
        case unsupported
        case endOfData = "reached the end of its recording"
    }

    public var device: String
    public var kind: Kind
    public var detail: String

    public init(device: String, _ kind: Kind, _ detail: String) {
        self.device = device
        self.kind = kind
        self.detail = detail
    }

    public var description: String { "device '\(device)' \(kind.rawValue): \(detail)" }
}

/// A plan step that did not complete (a wait that timed out, an analysis its data cannot
/// support), with the script location it came from.
public struct StepError: Error, CustomStringConvertible, Sendable {
    public var location: SourceLocation?
    public var message: String

    public init(location: SourceLocation?, message: String) {
        self.location = location
        self.message = message
    }

    public var description: String { (location.map { "\($0): " } ?? "") + message }
}
