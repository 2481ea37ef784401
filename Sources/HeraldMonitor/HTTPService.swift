import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// One Hummingbird application, run in a service group of its own so that stopping it is a
/// graceful shutdown (open connections closed cleanly), not a cancellation the server would
/// log as an error. The monitor and a node's metrics both run through it.
final class HTTPService: Sendable {
    private let running = Mutex<(run: Task<Void, Never>, group: ServiceGroup)?>(nil)

    /// Builds the application with the callback it must call once listening, starts it,
    /// and returns the port it got (useful with port 0).
    func start(
        _ what: String, logger: Logger, make: (@escaping @Sendable (any Channel) async -> Void) -> any Service
    ) async throws(MonitorError) -> Int {
        let (ready, readyContinuation) = AsyncStream.makeStream(of: Int?.self)
        let service = make { channel in
            readyContinuation.yield(channel.localAddress?.port)
            readyContinuation.finish()
        }
        let group = ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [], logger: logger))
        let failure = Mutex<String?>(nil)
        let task = Task {
            do { try await group.run() } catch {
                failure.withLock { $0 = "\(error)" }
                readyContinuation.finish()
            }
        }
        var port: Int?
        for await p in ready { port = p }
        guard let port else {
            await group.triggerGracefulShutdown()
            await task.value
            throw .bindFailed("\(what) could not listen: \(failure.withLock { $0 } ?? "no port")")
        }
        running.withLock { $0 = (task, group) }
        return port
    }

    /// Shuts down gracefully; a connection still open after `cutAfter` (a page that stopped
    /// reading) is cut.
    func stop(cutAfter: Duration = .seconds(2)) async {
        guard let r = running.withLock({ r -> (run: Task<Void, Never>, group: ServiceGroup)? in
            defer { r = nil }
            return r
        }) else { return }
        await r.group.triggerGracefulShutdown()
        let cutter = Task {
            try await Task.sleep(for: cutAfter)
            r.run.cancel()
        }
        await r.run.value
        cutter.cancel()
    }
}
