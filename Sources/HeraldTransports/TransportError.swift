import Foundation

/// A serial port or socket that could not be opened, or stopped working.
/// Callers branch on `kind`: a missing port is a set-up error, a port that went away mid-run
/// is a lost instrument.
public struct TransportError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Nothing at that path or address (never plugged in, wrong name, nothing listening).
        case notFound
        /// The port is there but this user may not open it (or another program holds it).
        case denied
        /// It was open and went away: unplugged, hung up, connection closed.
        case gone
        /// No answer in time (a connect that never completed, a write that never drained).
        case timeout
        /// Anything else the OS refused.
        case failed
    }

    public var kind: Kind
    /// The port or address (`/dev/ttyUSB0`, `192.168.1.20:5025`).
    public var endpoint: String
    public var message: String

    public init(_ kind: Kind, endpoint: String, _ message: String) {
        self.kind = kind
        self.endpoint = endpoint
        self.message = message
    }

    public var description: String { "\(endpoint): \(message)" }

    /// The OS's words for `errno`.
    static func os(_ code: Int32) -> String { String(cString: strerror(code)) }
}
