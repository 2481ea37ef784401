import Foundation
import Synchronization

/// libhdf5 1.10 can loop forever on some damaged object headers (found by fuzzing run files:
/// `H5Lexists` → `H5G__obj_lookup` → `H5O_protect`), and a call into the library cannot be
/// cancelled. The watchdog turns that into an error: every call that reads an object header
/// or data is timed, and once one has run longer than the limit, `onHang` is told which call
/// on which object (the CLI prints it and exits, since the stuck thread cannot be freed).
public enum HDF5ReadWatchdog {
    struct Call {
        var operation: String
        var object: String
        var since: ContinuousClock.Instant
    }

    struct State {
        var calls: [Int: Call] = [:]
        var next = 0
        var armed = false
    }

    static let state = Mutex(State())

    /// Starts watching, once per process: a call still running after `limit` is reported to
    /// `onHang` with a message naming it (the call, the object, the time).
    public static func arm(limit: Duration, onHang: @escaping @Sendable (String) -> Void) {
        let first = state.withLock { s -> Bool in
            defer { s.armed = true }
            return !s.armed
        }
        guard first else { return }
        let period = max(min(limit / 4, .seconds(1)), .milliseconds(10))
        let thread = Thread {
            while true {
                Thread.sleep(forTimeInterval: Double(period.components.seconds) + Double(period.components.attoseconds) * 1e-18)
                let now = ContinuousClock.now
                let stuck = state.withLock { s in s.calls.values.filter { now - $0.since > limit }.min { $0.since < $1.since } }
                if let stuck {
                    onHang(
                        "libhdf5 has not returned from \(stuck.operation) on '\(stuck.object)' for \(now - stuck.since) "
                            + "(limit \(limit)): the file is damaged in a way that makes the library loop, or cannot be read at all "
                            + "(a pipe, a hung network file system); nothing was changed")
                    return
                }
            }
        }
        thread.name = "HDF5 read watchdog"
        thread.start()
    }

    /// Runs one library call, timed while the watchdog is armed.
    @inline(__always)
    static func watched<T>(_ operation: String, _ object: @autoclosure () -> String, _ body: () throws -> T) rethrows -> T {
        let token = state.withLock { s -> Int? in
            guard s.armed else { return nil }
            s.next += 1
            return s.next
        }
        guard let token else { return try body() }
        let call = Call(operation: operation, object: object(), since: .now)
        state.withLock { $0.calls[token] = call }
        defer { _ = state.withLock { $0.calls.removeValue(forKey: token) } }
        return try body()
    }

    /// For tests: a "call" that takes as long as `body`, watched like a library call.
    public static func simulateCall<T>(_ operation: String, object: String, _ body: () throws -> T) rethrows -> T {
        try watched(operation, object, body)
    }
}
