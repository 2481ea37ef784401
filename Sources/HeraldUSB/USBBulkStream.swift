import CLibUSB
import Foundation
import Synchronization

/// Asynchronous bulk-IN streaming for high-rate devices: several transfers stay in
/// flight so the device never waits for the host, and each completed buffer is handed to
/// `consume` in place (no copy) on libusb's event thread, then resubmitted.
///
/// `consume` must be quick (decode and hand on); it sees the transfer's own buffer, valid
/// only during the call.
public final class USBBulkStream: @unchecked Sendable {  // state behind a Mutex; buffers owned by libusb transfers
    public typealias Consumer = @Sendable (UnsafeRawBufferPointer) -> Void

    /// Why the stream ended, if not by `cancelAndWait()`.
    public enum End: Sendable, Equatable {
        case running
        case cancelled
        case failed(USBError)

        public static func == (a: End, b: End) -> Bool {
            switch (a, b) {
            case (.running, .running), (.cancelled, .cancelled): return true
            case (.failed(let x), .failed(let y)): return x.code == y.code
            default: return false
            }
        }
    }

    let device: USBDeviceHandle
    let endpoint: UInt8
    let consume: Consumer
    private var transfers: [UnsafeMutablePointer<libusb_transfer>] = []
    private let state = Mutex<(inFlight: Int, stopping: Bool, end: End, bytes: Int)>((0, false, .running, 0))

    /// Prepares `count` transfers of `size` bytes each on `endpoint` (IN).
    public init(device: USBDeviceHandle, endpoint: UInt8, transfers count: Int = 8, size: Int = 16384, consume: @escaping Consumer) throws {
        self.device = device
        self.endpoint = endpoint
        self.consume = consume
        for _ in 0..<max(1, count) {
            guard let t = libusb_alloc_transfer(0) else {
                throw USBError(code: LIBUSB_ERROR_NO_MEM.rawValue, operation: "allocate transfer", device: device.identity)
            }
            let buffer = UnsafeMutablePointer<UInt8>.allocate(capacity: size)
            // Libusb frees the buffer with the transfer (LIBUSB_TRANSFER_FREE_BUFFER), so a
            // transfer that completes after we stop cannot touch freed memory.
            t.pointee.dev_handle = device.handle
            t.pointee.endpoint = endpoint
            t.pointee.type = UInt8(LIBUSB_TRANSFER_TYPE_BULK.rawValue)
            t.pointee.timeout = 0
            t.pointee.buffer = buffer
            t.pointee.length = Int32(size)
            t.pointee.flags = UInt8(LIBUSB_TRANSFER_FREE_BUFFER.rawValue)
            t.pointee.callback = { transfer in
                guard let transfer, let user = transfer.pointee.user_data else { return }
                Unmanaged<USBBulkStream>.fromOpaque(user).takeUnretainedValue().completed(transfer)
            }
            transfers.append(t)
        }
    }

    deinit {
        // Only transfers that are not in flight may be freed; cancelAndWait() ensures that.
        if state.withLock({ $0.inFlight }) == 0 { for t in transfers { libusb_free_transfer(t) } }
    }

    /// Bytes delivered so far.
    public var bytes: Int { state.withLock { $0.bytes } }
    public var end: End { state.withLock { $0.end } }

    /// Submits every transfer. The stream keeps itself alive until the last one returns.
    public func start() throws {
        try device.ensurePresent("start bulk stream")
        device.register(self)
        device.context.streamStarted()
        let me = Unmanaged.passRetained(self)
        for t in transfers {
            t.pointee.user_data = me.toOpaque()
            state.withLock { $0.inFlight += 1 }
            let rc = libusb_submit_transfer(t)
            if rc != 0 {
                let last = state.withLock { s -> Bool in
                    s.inFlight -= 1
                    s.stopping = true
                    if s.end == .running { s.end = .failed(USBError(code: rc, operation: "submit bulk transfer", device: device.identity)) }
                    return s.inFlight == 0
                }
                cancelInFlight()
                if last { finish(me) }
                throw USBError(code: rc, operation: "submit bulk transfer on endpoint \(hexByte(endpoint))", device: device.identity)
            }
        }
    }

    private func completed(_ t: UnsafeMutablePointer<libusb_transfer>) {
        let status = t.pointee.status
        if status == LIBUSB_TRANSFER_COMPLETED, t.pointee.actual_length > 0 {
            consume(UnsafeRawBufferPointer(start: t.pointee.buffer, count: Int(t.pointee.actual_length)))
            state.withLock { $0.bytes += Int(t.pointee.actual_length) }
        }
        let resubmit = state.withLock { s -> Bool in
            switch status {
            case LIBUSB_TRANSFER_COMPLETED, LIBUSB_TRANSFER_TIMED_OUT: break
            case LIBUSB_TRANSFER_CANCELLED: s.stopping = true
            default:
                s.stopping = true
                if s.end == .running {
                    let code = status == LIBUSB_TRANSFER_NO_DEVICE ? LIBUSB_ERROR_NO_DEVICE.rawValue
                        : status == LIBUSB_TRANSFER_STALL ? LIBUSB_ERROR_PIPE.rawValue
                        : status == LIBUSB_TRANSFER_OVERFLOW ? LIBUSB_ERROR_OVERFLOW.rawValue : LIBUSB_ERROR_IO.rawValue
                    s.end = .failed(USBError(code: code, operation: "bulk stream from endpoint \(hexByte(endpoint))", device: device.identity))
                }
            }
            return !s.stopping
        }
        if resubmit, libusb_submit_transfer(t) == 0 { return }
        let last = state.withLock { s -> Bool in
            s.inFlight -= 1
            if !s.stopping {  // resubmission failed
                s.stopping = true
                s.end = .failed(USBError(code: LIBUSB_ERROR_IO.rawValue, operation: "resubmit bulk transfer", device: device.identity))
            }
            return s.inFlight == 0
        }
        // This transfer is out of the loop: the others stop too (no-op for those already done).
        cancelInFlight()
        if status == LIBUSB_TRANSFER_NO_DEVICE { device.markGone() }
        if last, let user = t.pointee.user_data { finish(Unmanaged<USBBulkStream>.fromOpaque(user)) }
    }

    private func finish(_ me: Unmanaged<USBBulkStream>) {
        state.withLock { if $0.end == .running { $0.end = .cancelled } }
        device.unregister(self)
        device.context.streamStopped()
        me.release()
    }

    private func cancelInFlight() { for t in transfers { _ = libusb_cancel_transfer(t) } }

    func deviceGone() {
        state.withLock { s in
            s.stopping = true
            if s.end == .running {
                s.end = .failed(USBError(code: LIBUSB_ERROR_NO_DEVICE.rawValue, operation: "bulk stream", device: device.identity))
            }
        }
        cancelInFlight()
    }

    /// Cancels every transfer and waits (at most 2 s; libusb's event thread completes the
    /// cancellations) until none is in flight.
    public func cancelAndWait() {
        state.withLock { $0.stopping = true }
        cancelInFlight()
        let deadline = Date().addingTimeInterval(2)
        while state.withLock({ $0.inFlight }) > 0, Date() < deadline { usleep(1000) }
    }
}
