import CLibUSB
import Foundation
import Synchronization

/// A libusb failure: the libusb error name, what Herald was doing, and to which device.
public struct USBError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var operation: String
    /// The device's identity (`1313:804a serial M00412345`), when there is one.
    public var device: String?

    public init(code: Int32, operation: String, device: String? = nil) {
        self.code = code
        self.operation = operation
        self.device = device
    }

    public var name: String { String(cString: libusb_error_name(code)) }
    /// The device has gone (unplugged, powered off, or reset by the kernel).
    public var isGone: Bool { code == LIBUSB_ERROR_NO_DEVICE.rawValue }
    public var isTimeout: Bool { code == LIBUSB_ERROR_TIMEOUT.rawValue }
    /// The endpoint halted (stalled); clearing the halt recovers it.
    public var isStall: Bool { code == LIBUSB_ERROR_PIPE.rawValue }
    /// No device matched (or the handle's device is not there).
    public var isNotFound: Bool { code == LIBUSB_ERROR_NOT_FOUND.rawValue }

    public var description: String {
        let hint: String
        switch code {
        case LIBUSB_ERROR_ACCESS.rawValue:
            hint = " (no permission to open the device: install docs/udev/70-herald.rules, see docs/usb.md)"
        case LIBUSB_ERROR_BUSY.rawValue: hint = " (another program has claimed the interface)"
        case LIBUSB_ERROR_NO_DEVICE.rawValue: hint = " (the device was unplugged or powered off)"
        default: hint = ""
        }
        return "USB \(operation)\(device.map { " on \($0)" } ?? "") failed: \(name)\(hint)"
    }
}

/// Identity of an attached USB device, as `herald devices` prints it.
public struct USBDeviceInfo: Sendable, Hashable, CustomStringConvertible {
    public var vendorID: UInt16
    public var productID: UInt16
    public var bus: UInt8
    public var address: UInt8
    public var portPath: [UInt8]
    public var deviceClass: UInt8

    public var description: String {
        let path = "\(bus)-" + portPath.map(String.init).joined(separator: ".")
        return "\(hex4(vendorID)):\(hex4(productID)) bus \(bus) address \(address) port \(path) class \(deviceClass)"
    }
}

func hex4(_ v: UInt16) -> String {
    let s = String(v, radix: 16)
    return String(repeating: "0", count: max(0, 4 - s.count)) + s
}

/// Which device to open: vendor and product, and optionally the serial number (read from
/// udev's sysfs, so matching needs no string-descriptor requests).
public struct USBMatch: Sendable, Hashable, CustomStringConvertible {
    public var vendorID: UInt16
    public var productID: UInt16
    public var serial: String?

    public init(vendorID: UInt16, productID: UInt16, serial: String? = nil) {
        self.vendorID = vendorID
        self.productID = productID
        self.serial = serial
    }

    public var description: String { "\(hex4(vendorID)):\(hex4(productID))" + (serial.map { " serial \($0)" } ?? "") }
}

/// Owns a libusb context; the only place Herald calls libusb (with USBDeviceHandle and
/// USBBulkStream). One per process (`shared`). A thread runs libusb's event loop while a
/// bulk stream is active; a udev monitor thread reports devices that leave.
public final class USBContext: @unchecked Sendable {  // libusb contexts are thread-safe
    let context: OpaquePointer
    private let activeStreams = Atomic<Int>(0)
    /// Open handles (keyed by libusb_device pointer), so a udev removal reaches its handle.
    private let open = Mutex<[UInt: WeakHandle]>([:])
    private let removalMonitorStarted = Mutex<Bool>(false)

    struct WeakHandle: @unchecked Sendable { weak var handle: USBDeviceHandle? }

    public init() throws {
        var ctx: OpaquePointer?
        // Debian 12's libusb (1.0.26) has no libusb_init_context.
        let rc = libusb_init(&ctx)
        guard rc == 0, let ctx else { throw USBError(code: rc, operation: "libusb_init") }
        context = ctx
    }

    deinit { libusb_exit(context) }

    private static let sharedContext = Mutex<Result<USBContext, USBError>?>(nil)

    /// The process's context, created on first use.
    public static func shared() throws -> USBContext {
        try sharedContext.withLock { slot in
            if let slot { return try slot.get() }
            let made: Result<USBContext, USBError> = Result { try USBContext() }.mapError {
                $0 as? USBError ?? USBError(code: -99, operation: "libusb_init")
            }
            slot = made
            return try made.get()
        }
    }

    /// Every device the OS exposes, with its descriptor fields.
    public func devices() throws -> [USBDeviceInfo] {
        try withDeviceList { list in list.compactMap(Self.info) }
    }

    static func info(_ dev: OpaquePointer) -> USBDeviceInfo? {
        var desc = libusb_device_descriptor()
        guard libusb_get_device_descriptor(dev, &desc) == 0 else { return nil }
        var ports = [UInt8](repeating: 0, count: 8)
        let depth = libusb_get_port_numbers(dev, &ports, Int32(ports.count))
        return USBDeviceInfo(
            vendorID: desc.idVendor, productID: desc.idProduct, bus: libusb_get_bus_number(dev),
            address: libusb_get_device_address(dev), portPath: Array(ports.prefix(max(0, Int(depth)))),
            deviceClass: desc.bDeviceClass)
    }

    func withDeviceList<T>(_ body: ([OpaquePointer]) throws -> T) throws -> T {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = libusb_get_device_list(context, &list)
        guard n >= 0, let list else { throw USBError(code: Int32(n), operation: "libusb_get_device_list") }
        defer { libusb_free_device_list(list, 1) }
        return try body((0..<Int(n)).compactMap { list[$0] })
    }

    /// Opens the device that `match` names. With no serial, exactly one device may match.
    public func open(_ match: USBMatch) throws -> USBDeviceHandle {
        let serials = match.serial == nil ? [] : UDev.usbDevicesOrEmpty()
        let handle: USBDeviceHandle = try withDeviceList { list in
            var candidates: [(OpaquePointer, USBDeviceInfo)] = []
            for dev in list {
                guard let info = Self.info(dev), info.vendorID == match.vendorID, info.productID == match.productID else { continue }
                if let serial = match.serial {
                    let found = serials.first { $0.bus == Int(info.bus) && $0.address == Int(info.address) }
                    guard found?.serial == serial else { continue }
                }
                candidates.append((dev, info))
            }
            guard let (dev, info) = candidates.first else {
                throw USBError(code: LIBUSB_ERROR_NOT_FOUND.rawValue, operation: "find device", device: match.description)
            }
            if candidates.count > 1 {
                throw USBError(
                    code: LIBUSB_ERROR_OVERFLOW.rawValue,
                    operation: "find device (\(candidates.count) match; give a serial in the script's match:)",
                    device: match.description)
            }
            var raw: OpaquePointer?
            let rc = libusb_open(dev, &raw)
            guard rc == 0, let raw else { throw USBError(code: rc, operation: "open", device: match.description) }
            let identity = match.description + " (bus \(info.bus) address \(info.address))"
            return USBDeviceHandle(context: self, handle: raw, device: dev, identity: identity, info: info)
        }
        open.withLock { $0[UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(handle.device)))] = WeakHandle(handle: handle) }
        watchRemovals()
        return handle
    }

    func forget(_ handle: USBDeviceHandle) {
        _ = open.withLock { $0.removeValue(forKey: UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(handle.device)))) }
    }

    /// Removal events come from a udev monitor (libusb's own hotplug would need a thread
    /// polling libusb's event loop all the time): the handle of the device that left is
    /// marked gone, which fails its calls and streams at once and wakes `waitUntilGone()`.
    private func watchRemovals() {
        let first = removalMonitorStarted.withLock { started in
            defer { started = true }
            return !started
        }
        guard first, let monitor = UDevRemovalMonitor() else { return }
        monitor.start { [self] bus, address in
            let handles = open.withLock { $0.values.compactMap(\.handle) }
            for h in handles where Int(h.info.bus) == bus && Int(h.info.address) == address { h.markGone() }
        }
    }

    /// Asynchronous transfers complete inside libusb's event loop: a thread runs it while
    /// at least one stream is active, and ends when the last one stops.
    func streamStarted() {
        guard activeStreams.add(1, ordering: .acquiringAndReleasing).oldValue == 0 else { return }
        let thread = Thread { [self] in
            while activeStreams.load(ordering: .acquiring) > 0 {
                var tv = timeval(tv_sec: 0, tv_usec: 50_000)
                _ = libusb_handle_events_timeout_completed(context, &tv, nil)
            }
        }
        // A previous thread may still be finishing its last 50 ms wait; two in the loop are harmless.
        thread.name = "herald.usb-events"
        thread.start()
    }

    func streamStopped() { activeStreams.subtract(1, ordering: .acquiringAndReleasing) }
}
