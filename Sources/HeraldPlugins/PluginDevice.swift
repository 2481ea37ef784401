import Dispatch
#if canImport(Glibc)
import Glibc
#endif
import HeraldCore
import HeraldPluginABI
import Synchronization

/// One device of a plugin driver: the Swift `Device` face of the C table.
///
/// The C calls block, so each device owns a serial queue and the async methods suspend
/// on it: the sequencer's timeouts keep working, and a cancelled task asks the plugin to
/// stop through `cancel()`.
class PluginDevice: Device, @unchecked Sendable {
    let name: String
    let descriptor: DriverDescriptor
    let driver: herald_driver_v1
    /// The plugin's device pointer; touched only on `queue`, except by `cancel`.
    let handle: UnsafeMutableRawPointer
    let queue: DispatchQueue

    init(name: String, descriptor: DriverDescriptor, driver: herald_driver_v1, settings: [String: Value]) throws {
        self.name = name
        self.descriptor = descriptor
        self.driver = driver
        self.queue = DispatchQueue(label: "herald.plugin.\(descriptor.id).\(name)")
        var error = herald_error()
        guard let open = driver.open else { throw DeviceError(device: name, .unsupported, "plugin driver \(descriptor.id) has no open()") }
        let json = PluginJSON.encode(settings: settings)
        guard let handle = open(name, json, &error) else {
            throw DeviceError(device: name, .rejected, "could not open: \(Self.message(&error))")
        }
        self.handle = handle
    }

    deinit { driver.close?(handle) }

    var needsWallClock: Bool { true }

    static func message(_ error: inout herald_error) -> String {
        withUnsafeBytes(of: &error.message) { raw in
            let bytes = raw.bindMemory(to: UInt8.self)
            let end = bytes.firstIndex(of: 0) ?? bytes.count
            let text = String(decoding: bytes[..<end], as: UTF8.self)
            return text.isEmpty ? "no message from the plugin" : text
        }
    }

    /// Maps a plugin status to the sequencer's error kinds, naming this device.
    func check(_ status: herald_status, _ error: inout herald_error, _ what: String) throws {
        let kind: DeviceError.Kind
        switch status {
        case HERALD_OK: return
        case HERALD_CANCELLED: throw CancellationError()
        case HERALD_NOT_FOUND: kind = .notFound
        case HERALD_DISCONNECTED: kind = .disconnected
        case HERALD_TIMEOUT: kind = .timeout
        case HERALD_INVALID_RESPONSE: kind = .invalidResponse
        case HERALD_REJECTED: kind = .rejected
        case HERALD_UNSUPPORTED: kind = .unsupported
        default: kind = .invalidResponse
        }
        throw DeviceError(device: name, kind, "\(what): \(Self.message(&error))")
    }

    /// Runs a blocking plugin call on the device's queue; cancellation reaches the plugin.
    ///
    /// A driver clears its cancel flag when a call starts (the example does), so a cancel
    /// that lands just before the queue reaches the call would be lost and the call would
    /// run its full length. So: a call cancelled before it starts is not made, and a cancel
    /// is repeated every 10 ms until the call it was meant for has returned.
    func blocking<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        let handle = SendablePointer(handle)
        let cancel = driver.cancel
        let call = CallState()
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { continuation in
                queue.async {
                    guard call.begin() else { return continuation.resume(throwing: CancellationError()) }
                    let result = Result { try body() }
                    call.end()
                    continuation.resume(with: result)
                }
            }
        } onCancel: {
            guard call.requestCancel(), let cancel else { return }
            // Repeated on a timer, and only while this call is the one running: checked and sent
            // under the call's lock, so a cancel never lands on the next call on the queue.
            let timer = DispatchSource.makeTimerSource(queue: .global())
            timer.schedule(deadline: .now(), repeating: .milliseconds(10))
            timer.setEventHandler {
                if !call.cancelIfRunning({ cancel(handle.pointer) }) { timer.cancel() }
            }
            timer.resume()
        }
    }

    func connect() async throws {
        try await blocking { [self] in
            var error = herald_error()
            guard let connect = driver.connect else { return }
            try check(connect(handle, &error), &error, "connect")
        }
    }

    func set(_ property: String, to value: Value) async throws {
        let json = PluginJSON.encode(value)
        try await blocking { [self] in
            var error = herald_error()
            guard let set = driver.set else { throw DeviceError(device: name, .unsupported, "set is not implemented") }
            try check(set(handle, property, json, &error), &error, "set \(property)")
        }
    }

    func get(_ property: String) async throws -> Value {
        try await blocking { [self] in
            var error = herald_error()
            guard let get = driver.get else { throw DeviceError(device: name, .unsupported, "get is not implemented") }
            var buffer = [CChar](repeating: 0, count: 4096)
            try check(get(handle, property, &buffer, buffer.count, &error), &error, "get \(property)")
            buffer[buffer.count - 1] = 0
            let json = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            guard let value = PluginJSON.decode(json) else {
                throw DeviceError(device: name, .invalidResponse, "get \(property): the plugin returned '\(json)', not a value")
            }
            return value
        }
    }

    func enterSafeState() async throws {
        try await blocking { [self] in
            var error = herald_error()
            guard let safe = driver.safe_state else {
                throw DeviceError(device: name, .unsupported, "the plugin has no safe_state(); it cannot be made safe")
            }
            try check(safe(handle, &error), &error, "enter safe state")
        }
    }

    func disconnect() async {}
}

struct SendablePointer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    init(_ pointer: UnsafeMutableRawPointer) { self.pointer = pointer }
}

/// A plugin time tagger: the C `acquire` streams blocks through a callback on the plugin's
/// thread; they are handed to the sequencer in order through an AsyncStream.
final class PluginTimeTagger: PluginDevice, TimeTagger, @unchecked Sendable {
    let channelCount: Int

    init(name: String, descriptor: DriverDescriptor, driver: herald_driver_v1, settings: [String: Value], channels: Int) throws {
        self.channelCount = channels
        try super.init(name: name, descriptor: descriptor, driver: driver, settings: settings)
    }

    /// What the C callback sees through its context pointer.
    final class Sink: Sendable {
        let continuation: AsyncStream<TagBlock>.Continuation
        let stopped = Atomic(false)
        init(_ c: AsyncStream<TagBlock>.Continuation) { continuation = c }
    }

    func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        guard driver.acquire != nil else { throw DeviceError(device: name, .unsupported, "the plugin has no acquire()") }
        let (stream, continuation) = AsyncStream<TagBlock>.makeStream()
        let sink = Sink(continuation)
        let durationPs = picoseconds(duration)
        let call = Task { [self] () throws -> AcquisitionInterval in
            defer { continuation.finish() }
            return try await blocking { [self] in
                var error = herald_error()
                var start: Int64 = 0, stop: Int64 = 0
                let context = Unmanaged.passUnretained(sink).toOpaque()
                let status = withExtendedLifetime(sink) {
                    driver.acquire?(handle, durationPs, pluginTagSink, context, &start, &stop, &error) ?? HERALD_UNSUPPORTED
                }
                try check(status, &error, "acquire")
                return AcquisitionInterval(startPs: start, stopPs: stop, tags: 0)
            }
        }
        var delivered = 0
        do {
            try await withTaskCancellationHandler {
                for await block in stream {
                    try await deliver(block)
                    delivered += block.count
                }
            } onCancel: {
                call.cancel()
            }
        } catch {
            // The consumer failed: stop the plugin, wait for it, report the consumer's error.
            sink.stopped.store(true, ordering: .relaxed)
            call.cancel()
            _ = try? await call.value
            throw error
        }
        var interval = try await call.value
        interval.tags = delivered
        return interval
    }
}

/// The C callback: copies a block out of the plugin's buffers. Returns non-zero to ask
/// the plugin to stop (the consumer failed or the tags were not in order).
private let pluginTagSink: herald_tag_sink = { context, timestamps, channels, count in
    guard let context else { return 1 }
    let sink = Unmanaged<PluginTimeTagger.Sink>.fromOpaque(context).takeUnretainedValue()
    if sink.stopped.load(ordering: .relaxed) { return 1 }
    guard count > 0 else { return 0 }
    guard let timestamps, let channels else { return 1 }
    let block = TagBlock(
        timestamps: Array(UnsafeBufferPointer(start: timestamps, count: count)),
        channels: Array(UnsafeBufferPointer(start: channels, count: count)))
    sink.continuation.yield(block)
    return 0
}

/// Where one plugin call stands, for cancelling it without losing the cancel.
final class CallState: Sendable {
    private struct State {
        var cancelRequested = false
        var started = false
        var over = false
    }
    private let state = Mutex(State())

    /// False if the call was cancelled before it began: it must not be made.
    func begin() -> Bool {
        state.withLock { s in
            if s.cancelRequested {
                s.over = true
                return false
            }
            s.started = true
            return true
        }
    }

    func end() { state.withLock { $0.over = true } }

    /// Runs `send` (the plugin's cancel) if the call has started and not returned, under the
    /// lock `end()` takes; false once the call is over, when the repeating should stop.
    func cancelIfRunning(_ send: () -> Void) -> Bool {
        state.withLock { s in
            if s.over { return false }
            if s.started { send() }
            return true
        }
    }

    /// True if the plugin must be told (the call has not yet returned).
    func requestCancel() -> Bool {
        state.withLock { s in
            s.cancelRequested = true
            return !s.over
        }
    }

    var isOver: Bool { state.withLock { $0.over } }
}
