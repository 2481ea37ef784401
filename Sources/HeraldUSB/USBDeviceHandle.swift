import CLibUSB
import Foundation
import Synchronization

/// An open USB device: claim interfaces, then bulk and control transfers, each with a
/// timeout. Every error names the device and the libusb error. Once the device has gone
/// (hotplug removal or a transfer answered ENODEV), every call fails at once.
public final class USBDeviceHandle: @unchecked Sendable {  // libusb handles are thread-safe
    /// `1313:804a serial M00412345 (bus 1 address 7)`
    public let identity: String
    public let info: USBDeviceInfo
    let handle: OpaquePointer
    let device: OpaquePointer
    unowned let context: USBContext
    private let state = Mutex<State>(State())

    struct State {
        var gone = false
        var closed = false
        var claimed: [Int32] = []
        var goneWaiters: [CheckedContinuation<Void, Never>] = []
        var streams: [ObjectIdentifier: USBBulkStream] = [:]
    }

    init(context: USBContext, handle: OpaquePointer, device: OpaquePointer, identity: String, info: USBDeviceInfo) {
        self.context = context
        self.handle = handle
        self.device = libusb_ref_device(device)
        self.identity = identity
        self.info = info
        // Linux: a kernel driver (cdc_acm, ftdi_sio, usbtmc) bound to the interface is
        // detached on claim and re-attached on release, so the OS tools still work afterwards.
        _ = libusb_set_auto_detach_kernel_driver(handle, 1)
    }

    deinit {
        close()
        libusb_unref_device(device)
    }

    /// True once the device has been unplugged.
    public var isGone: Bool { state.withLock { $0.gone } }

    func markGone() {
        let (waiters, streams) = state.withLock { s -> ([CheckedContinuation<Void, Never>], [USBBulkStream]) in
            s.gone = true
            defer { s.goneWaiters = [] }
            return (s.goneWaiters, Array(s.streams.values))
        }
        for stream in streams { stream.deviceGone() }
        for w in waiters { w.resume() }
    }

    /// Returns when the device has gone (at once if it already has).
    public func waitUntilGone() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                // Checked under the lock: a cancellation handler that wakes waiters takes it too.
                if s.gone || Task.isCancelled { return true }
                s.goneWaiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Wakes `waitUntilGone()` callers without the device having gone (their wait was cancelled).
    public func cancelGoneWaiters() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            defer { s.goneWaiters = [] }
            return s.goneWaiters
        }
        for w in waiters { w.resume() }
    }

    func check(_ rc: Int32, _ operation: @autoclosure () -> String) throws {
        guard rc < 0 else { return }
        if rc == LIBUSB_ERROR_NO_DEVICE.rawValue { markGone() }
        throw USBError(code: rc, operation: operation(), device: identity)
    }

    func ensurePresent(_ operation: @autoclosure () -> String) throws {
        let (gone, closed) = state.withLock { ($0.gone, $0.closed) }
        if gone { throw USBError(code: LIBUSB_ERROR_NO_DEVICE.rawValue, operation: operation(), device: identity) }
        if closed { throw USBError(code: LIBUSB_ERROR_NO_DEVICE.rawValue, operation: operation() + " (handle closed)", device: identity) }
    }

    /// Claims an interface (detaching a kernel driver bound to it).
    public func claim(interface: Int) throws {
        try ensurePresent("claim interface \(interface)")
        try check(libusb_claim_interface(handle, Int32(interface)), "claim interface \(interface)")
        state.withLock { $0.claimed.append(Int32(interface)) }
    }

    /// Writes all of `data` to a bulk OUT endpoint; returns the bytes the device accepted.
    @discardableResult
    public func bulkWrite(endpoint: UInt8, _ data: [UInt8], timeout: Duration) throws -> Int {
        try ensurePresent("bulk write to endpoint \(hexByte(endpoint))")
        var copy = data
        var sent: Int32 = 0
        let rc = copy.withUnsafeMutableBufferPointer {
            libusb_bulk_transfer(handle, endpoint, $0.baseAddress, Int32($0.count), &sent, Self.milliseconds(timeout))
        }
        try check(rc, "bulk write of \(data.count) bytes to endpoint \(hexByte(endpoint))")
        return Int(sent)
    }

    /// Reads one bulk IN transfer of at most `maxLength` bytes (a short packet ends it).
    public func bulkRead(endpoint: UInt8, maxLength: Int, timeout: Duration) throws -> [UInt8] {
        try ensurePresent("bulk read from endpoint \(hexByte(endpoint))")
        var buffer = [UInt8](repeating: 0, count: maxLength)
        var got: Int32 = 0
        let rc = buffer.withUnsafeMutableBufferPointer {
            libusb_bulk_transfer(handle, endpoint, $0.baseAddress, Int32($0.count), &got, Self.milliseconds(timeout))
        }
        try check(rc, "bulk read from endpoint \(hexByte(endpoint))")
        return Array(buffer.prefix(Int(got)))
    }

    /// A control transfer. Device-to-host requests (bit 7 of `requestType`) return up to
    /// `length` bytes; host-to-device requests send `data`.
    @discardableResult
    public func control(
        requestType: UInt8, request: UInt8, value: UInt16, index: UInt16, data: [UInt8] = [], length: Int = 0,
        timeout: Duration
    ) throws -> [UInt8] {
        let what = "control request \(request) (type \(hexByte(requestType)))"
        try ensurePresent(what)
        let input = requestType & 0x80 != 0
        var buffer = input ? [UInt8](repeating: 0, count: length) : data
        let rc = buffer.withUnsafeMutableBufferPointer {
            libusb_control_transfer(
                handle, requestType, request, value, index, $0.baseAddress, UInt16($0.count), Self.milliseconds(timeout))
        }
        try check(rc, what)
        return input ? Array(buffer.prefix(Int(rc))) : []
    }

    /// Clears a halt (stall) on an endpoint, as protocols do after an aborted transfer.
    public func clearHalt(endpoint: UInt8) throws {
        try ensurePresent("clear halt")
        try check(libusb_clear_halt(handle, endpoint), "clear halt on endpoint \(hexByte(endpoint))")
    }

    /// The endpoints of the active configuration's interfaces, for protocol layers that
    /// find their bulk pipes by interface class.
    public func interfaces() throws -> [USBInterfaceInfo] {
        try ensurePresent("read configuration descriptor")
        var config: UnsafeMutablePointer<libusb_config_descriptor>?
        try check(libusb_get_active_config_descriptor(device, &config), "read configuration descriptor")
        guard let config else { return [] }
        defer { libusb_free_config_descriptor(config) }
        var out: [USBInterfaceInfo] = []
        for i in 0..<Int(config.pointee.bNumInterfaces) {
            let interface = config.pointee.interface[i]
            for a in 0..<Int(interface.num_altsetting) {
                let alt = interface.altsetting[a]
                let endpoints = (0..<Int(alt.bNumEndpoints)).map { e -> USBEndpointInfo in
                    let ep = alt.endpoint[e]
                    return USBEndpointInfo(
                        address: ep.bEndpointAddress, attributes: ep.bmAttributes, maxPacketSize: Int(ep.wMaxPacketSize))
                }
                out.append(
                    USBInterfaceInfo(
                        number: Int(alt.bInterfaceNumber), interfaceClass: alt.bInterfaceClass,
                        subclass: alt.bInterfaceSubClass, protocolCode: alt.bInterfaceProtocol, endpoints: endpoints))
            }
        }
        return out
    }

    /// Releases claimed interfaces and closes the handle. Safe to call twice.
    public func close() {
        let (first, claimed, streams) = state.withLock { s -> (Bool, [Int32], [USBBulkStream]) in
            if s.closed { return (false, [], []) }
            s.closed = true
            defer { s.claimed = []; s.streams = [:] }
            return (true, s.claimed, Array(s.streams.values))
        }
        guard first else { return }
        for stream in streams { stream.cancelAndWait() }
        for i in claimed { _ = libusb_release_interface(handle, i) }
        context.forget(self)
        libusb_close(handle)
    }

    func register(_ stream: USBBulkStream) { state.withLock { $0.streams[ObjectIdentifier(stream)] = stream } }
    func unregister(_ stream: USBBulkStream) { _ = state.withLock { $0.streams.removeValue(forKey: ObjectIdentifier(stream)) } }

    static func milliseconds(_ d: Duration) -> UInt32 {
        let (s, atto) = d.components
        return UInt32(clamping: max(1, s * 1000 + atto / 1_000_000_000_000_000))
    }
}

/// One interface (alternate setting) of the active configuration.
public struct USBInterfaceInfo: Sendable, Hashable {
    public var number: Int
    public var interfaceClass: UInt8
    public var subclass: UInt8
    public var protocolCode: UInt8
    public var endpoints: [USBEndpointInfo]

    /// The first endpoint of a transfer type (2 bulk, 3 interrupt) in one direction.
    public func endpoint(type: UInt8, input: Bool) -> USBEndpointInfo? {
        endpoints.first { $0.attributes & 0x03 == type && ($0.address & 0x80 != 0) == input }
    }
}

public struct USBEndpointInfo: Sendable, Hashable {
    public var address: UInt8
    public var attributes: UInt8
    public var maxPacketSize: Int
}

func hexByte(_ b: UInt8) -> String { "0x" + (b < 16 ? "0" : "") + String(b, radix: 16) }
