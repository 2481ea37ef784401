import Foundation
import Synchronization

/// Every exchange with the simulated instruments of a run, in order: what each driver sent
/// and what its instrument answered. Tests assert the exact command sequence against it (as
/// PyMeasure's `expected_protocol` does); `herald run --mock --transcript FILE` writes it out.
public final class InstrumentTranscript: Sendable {
    public struct Entry: Sendable, Equatable, Codable {
        public enum Direction: String, Sendable, Codable {
            /// From the driver to the instrument.
            case sent
            /// From the instrument to the driver.
            case received
        }
        public var device: String
        public var direction: Direction
        public var text: String

        public init(device: String, direction: Direction, text: String) {
            self.device = device
            self.direction = direction
            self.text = text
        }
    }

    private let entries = Mutex<[Entry]>([])
    /// Beyond this the oldest half is dropped: a long run must not fill memory with its log.
    public let limit: Int

    public init(limit: Int = 1_000_000) { self.limit = limit }

    public func record(_ device: String, _ direction: Entry.Direction, _ text: String) {
        entries.withLock {
            if $0.count >= limit { $0.removeFirst(limit / 2) }
            $0.append(Entry(device: device, direction: direction, text: text))
        }
    }

    public var all: [Entry] { entries.withLock { $0 } }

    /// One JSON object per line: `{"device":"pump","direction":"sent","text":"OUTP ON"}`.
    public func jsonLines() -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return all.compactMap { (try? encoder.encode($0)).flatMap { String(data: $0, encoding: .utf8) } }.joined(separator: "\n")
            + "\n"
    }
}

/// Runs an async call on the simulated lab from a driver's blocking I/O thread. The drivers'
/// protocol code is synchronous (it runs on their own dispatch queue, as it does on libusb),
/// while the lab is an actor: the calling thread waits, which is safe because it is never a
/// thread of the cooperative pool.
func onLab<T: Sendable>(_ body: @escaping @Sendable () async throws -> T) throws -> T {
    let result = Mutex<Result<T, any Error>?>(nil)
    let done = DispatchSemaphore(value: 0)
    Task {
        let r: Result<T, any Error>
        do { r = .success(try await body()) } catch { r = .failure(error) }
        result.withLock { $0 = r }
        done.signal()
    }
    done.wait()
    guard let r = result.withLock({ $0 }) else { throw CancellationError() }
    return try r.get()
}
