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
    public enum Kind: String, Sendable, Codable {
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
    public enum Kind: String, Sendable, Codable {
        /// A value outside the device's declared limits reached the engine (re-checked before every call).
        case refusedByLimits = "refused by limits"
        /// `wait until` did not see its condition hold in time.
        case waitTimedOut = "wait timed out"
        /// An interlock did not clear within its timeout.
        case interlockTimedOut = "interlock timed out"
        /// The data cannot support the analysis (no signal above accidentals, say).
        case analysisFailed = "analysis failed"
        /// An `entangle` step's link stopped heralding (too many attempt loops timed out in a row).
        case entanglementStalled = "entanglement stalled"
    }

    public var kind: Kind
    public var location: SourceLocation?
    public var message: String

    public init(_ kind: Kind, location: SourceLocation?, message: String) {
        self.kind = kind
        self.location = location
        self.message = message
    }

    public var description: String { (location.map { "\($0): " } ?? "") + message }
}

/// Why a run did not succeed, in a form callers and tests match on (the run's `reason` is
/// the same for people).
public enum RunFailure: Sendable, Equatable {
    case device(String, DeviceError.Kind)
    case step(StepError.Kind, SourceLocation?)
    case store(StoreError.Kind)
    /// Stopped from outside (a signal), after the safe state.
    case cancelled
    case other

    public init(_ error: any Error) {
        switch error {
        case let e as DeviceError: self = .device(e.device, e.kind)
        case let e as StepError: self = .step(e.kind, e.location)
        case let e as StoreError: self = .store(e.kind)
        case is CancellationError: self = .cancelled
        default: self = .other
        }
    }
}

extension RunFailure: Codable {
    /// In JSON: `{"kind": "device", "device": "tagger", "error": "timed out"}`.
    private struct Coded: Codable {
        var kind: String
        var device: String?
        var error: String?
        var location: SourceLocation?
    }

    public func encode(to encoder: any Encoder) throws {
        let coded: Coded
        switch self {
        case .device(let name, let kind): coded = Coded(kind: "device", device: name, error: kind.rawValue)
        case .step(let kind, let location): coded = Coded(kind: "step", error: kind.rawValue, location: location)
        case .store(let kind): coded = Coded(kind: "store", error: kind.rawValue)
        case .cancelled: coded = Coded(kind: "cancelled")
        case .other: coded = Coded(kind: "other")
        }
        try coded.encode(to: encoder)
    }

    public init(from decoder: any Decoder) throws {
        let c = try Coded(from: decoder)
        switch c.kind {
        case "device":
            self = .device(c.device ?? "", c.error.flatMap(DeviceError.Kind.init(rawValue:)) ?? .invalidResponse)
        case "step": self = .step(c.error.flatMap(StepError.Kind.init(rawValue:)) ?? .analysisFailed, c.location)
        case "store": self = .store(c.error.flatMap(StoreError.Kind.init(rawValue:)) ?? .other)
        case "cancelled": self = .cancelled
        default: self = .other
        }
    }
}
