import CUDev
import Foundation

/// A USB device as udev describes it (sysfs attributes; no device I/O needed).
public struct UDevUSBDevice: Sendable, Hashable {
    public var sysPath: String
    public var bus: Int
    public var address: Int
    public var vendorID: UInt16
    public var productID: UInt16
    public var serial: String?
    public var manufacturer: String?
    public var product: String?
}

/// Owns a libudev context; the only place Herald calls libudev.
public final class UDev {
    private let udev: OpaquePointer

    public init() throws {
        guard let u = udev_new() else { throw USBError(code: -99, operation: "udev_new") }
        udev = u
    }

    deinit { udev_unref(udev) }

    /// Every USB device udev knows, or none when udev is unavailable (a container without /sys).
    public static func usbDevicesOrEmpty() -> [UDevUSBDevice] { (try? UDev())?.usbDevices() ?? [] }

    /// Every `usb_device` in sysfs, with its identifying attributes.
    public func usbDevices() -> [UDevUSBDevice] {
        guard let enumerate = udev_enumerate_new(udev) else { return [] }
        defer { udev_enumerate_unref(enumerate) }
        udev_enumerate_add_match_subsystem(enumerate, "usb")
        udev_enumerate_add_match_property(enumerate, "DEVTYPE", "usb_device")
        udev_enumerate_scan_devices(enumerate)
        var out: [UDevUSBDevice] = []
        var entry = udev_enumerate_get_list_entry(enumerate)
        while let e = entry {
            defer { entry = udev_list_entry_get_next(e) }
            guard let pathC = udev_list_entry_get_name(e),
                let device = udev_device_new_from_syspath(udev, pathC)
            else { continue }
            defer { udev_device_unref(device) }
            func attribute(_ name: String) -> String? {
                guard let v = udev_device_get_sysattr_value(device, name) else { return nil }
                return String(cString: v).trimmingTrailingWhitespace
            }
            guard let vid = attribute("idVendor").flatMap({ UInt16($0, radix: 16) }),
                let pid = attribute("idProduct").flatMap({ UInt16($0, radix: 16) })
            else { continue }
            out.append(
                UDevUSBDevice(
                    sysPath: String(cString: pathC), bus: attribute("busnum").flatMap { Int($0) } ?? 0,
                    address: attribute("devnum").flatMap { Int($0) } ?? 0, vendorID: vid, productID: pid,
                    serial: attribute("serial"), manufacturer: attribute("manufacturer"), product: attribute("product")))
        }
        return out
    }
}

extension String {
    var trimmingTrailingWhitespace: String {
        var s = Substring(self)
        while let last = s.last, last.isWhitespace { s = s.dropLast() }
        return String(s)
    }
}

/// Watches udev for USB devices leaving (a pulled cable, a powered-off instrument) on its
/// own thread, which blocks in poll() and so costs nothing while nothing happens.
final class UDevRemovalMonitor: @unchecked Sendable {  // the udev objects are used by the monitor thread only
    private let udev: OpaquePointer
    private let monitor: OpaquePointer

    init?() {
        guard let u = udev_new() else { return nil }
        guard let m = udev_monitor_new_from_netlink(u, "udev") else {
            udev_unref(u)
            return nil
        }
        udev_monitor_filter_add_match_subsystem_devtype(m, "usb", "usb_device")
        guard udev_monitor_enable_receiving(m) == 0 else {
            udev_monitor_unref(m)
            udev_unref(u)
            return nil
        }
        udev = u
        monitor = m
    }

    /// Calls `removed(bus, address)` for every USB device that leaves, from now on.
    func start(_ removed: @escaping @Sendable (Int, Int) -> Void) {
        let thread = Thread { [self] in
            var pfd = pollfd(fd: udev_monitor_get_fd(monitor), events: Int16(POLLIN), revents: 0)
            while true {
                guard poll(&pfd, 1, 1000) > 0, let device = udev_monitor_receive_device(monitor) else { continue }
                defer { udev_device_unref(device) }
                guard let action = udev_device_get_action(device), String(cString: action) == "remove" else { continue }
                func number(_ key: String) -> Int? { udev_device_get_property_value(device, key).flatMap { Int(String(cString: $0)) } }
                if let bus = number("BUSNUM"), let address = number("DEVNUM") { removed(bus, address) }
            }
        }
        thread.name = "herald.udev-monitor"
        thread.start()
    }
}
