import CLibUSB

/// A libusb failure, with the libusb error name and what Herald was doing.
public struct USBError: Error, CustomStringConvertible, Sendable {
    public var code: Int32
    public var operation: String

    public var name: String { String(cString: libusb_error_name(code)) }
    public var description: String { "USB \(operation) failed: \(name) (\(code))" }
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
        func hex(_ v: UInt16) -> String {
            let s = String(v, radix: 16)
            return String(repeating: "0", count: max(0, 4 - s.count)) + s
        }
        let vp = "\(hex(vendorID)):\(hex(productID))"
        let path = "\(bus)-" + portPath.map(String.init).joined(separator: ".")
        return "\(vp) bus \(bus) address \(address) port \(path) class \(deviceClass)"
    }
}

/// Owns a libusb context; the only place Herald calls libusb.
public final class USBContext {
    private var context: OpaquePointer?

    public init() throws {
        var ctx: OpaquePointer?
        // Debian 12's libusb (1.0.26) has no libusb_init_context.
        let rc = libusb_init(&ctx)
        guard rc == 0 else { throw USBError(code: rc, operation: "libusb_init") }
        context = ctx
    }

    deinit { if let context { libusb_exit(context) } }

    /// Every device the OS exposes, with its descriptor fields.
    public func devices() throws -> [USBDeviceInfo] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let n = libusb_get_device_list(context, &list)
        guard n >= 0, let list else { throw USBError(code: Int32(n), operation: "libusb_get_device_list") }
        defer { libusb_free_device_list(list, 1) }
        var out: [USBDeviceInfo] = []
        for i in 0..<Int(n) {
            guard let dev = list[i] else { continue }
            var desc = libusb_device_descriptor()
            guard libusb_get_device_descriptor(dev, &desc) == 0 else { continue }
            var ports = [UInt8](repeating: 0, count: 8)
            let depth = libusb_get_port_numbers(dev, &ports, Int32(ports.count))
            out.append(
                USBDeviceInfo(
                    vendorID: desc.idVendor, productID: desc.idProduct, bus: libusb_get_bus_number(dev),
                    address: libusb_get_device_address(dev), portPath: Array(ports.prefix(max(0, Int(depth)))),
                    deviceClass: desc.bDeviceClass))
        }
        return out
    }
}
