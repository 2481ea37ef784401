import Foundation
import HeraldCore
import HeraldUSBProtocols
import Synchronization

/// A SCPI instrument in process: a message link whose commands go to `execute`, with the
/// IEEE 488.2 error queue (`SYST:ERR?`), `*CLS` and a reply queue, as the real instruments
/// keep them. Subclasses answer their own command set.
public class SimulatedSCPIInstrument: MessageLink, @unchecked Sendable {  // state behind a Mutex
    public let device: String
    public let transcript: InstrumentTranscript
    public var identity: String { "simulated \(model) (\(device))" }
    let model: String
    private let state = Mutex<(replies: [String], errors: [String])>(([], []))

    init(device: String, model: String, transcript: InstrumentTranscript) {
        self.device = device
        self.model = model
        self.transcript = transcript
    }

    public func send(_ message: [UInt8], timeout: Duration) throws {
        let text = String(decoding: message, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
        for command in text.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) }) where !command.isEmpty {
            transcript.record(device, .sent, command)
            let upper = command.uppercased()
            if upper == "*CLS" {
                state.withLock { $0.errors = [] }
            } else if upper.hasPrefix("SYST:ERR") || upper.hasPrefix("SYSTEM:ERROR") {
                let next = state.withLock { $0.errors.isEmpty ? "+0,\"No error\"" : $0.errors.removeFirst() }
                reply(next)
            } else {
                try execute(upper, original: command)
            }
        }
    }

    public func receive(timeout: Duration) throws -> [UInt8] {
        guard let next = state.withLock({ $0.replies.isEmpty ? nil : $0.replies.removeFirst() }) else {
            throw ProtocolError(device: identity, "no reply within \(timeout) (the query was not understood)", isTimeout: true)
        }
        transcript.record(device, .received, next)
        return Array((next + "\n").utf8)
    }

    func reply(_ text: String) { state.withLock { $0.replies.append(text) } }
    func queueError(_ entry: String) { state.withLock { $0.errors.append(entry) } }

    /// Answers one command (upper-cased; `original` as sent). Unknown ones queue -113.
    func execute(_ command: String, original: String) throws { queueError("-113,\"Undefined header\"") }

    /// The number after a command's header (`SOUR:CURR 0.05` → 0.05), or nil (queues -104).
    func argument(_ command: String) -> Double? {
        guard let space = command.firstIndex(of: " "), let v = Double(command[command.index(after: space)...].trimmingCharacters(in: .whitespaces)),
            v.isFinite
        else {
            queueError("-104,\"Data type error\"")
            return nil
        }
        return v
    }

    /// SCPI short and long forms: `matches(c, "SOUR", "CURR")` accepts SOUR:CURR and SOURCE:CURRENT.
    func header(_ command: String) -> String {
        String(command.prefix { $0 != " " && $0 != "?" })
    }

    static func format(_ v: Double) -> String { String(format: "%.6E", v) }
}
