import Foundation
import HeraldCore
import HeraldUSB
import HeraldUSBProtocols
import Synchronization

/// What the USB instrument drivers share: one serial queue per instrument for libusb's
/// blocking calls (each bounded by its own timeout), the script's `match:` turned into a
/// USB match, and USB/protocol failures turned into the engine's DeviceError kinds.
public final class InstrumentQueue: Sendable {
    let queue: DispatchQueue

    public init(device: String) { queue = DispatchQueue(label: "herald.usb.\(device)") }

    /// Runs `body` on the instrument's queue; errors come back as DeviceErrors naming `device`.
    public func run<T: Sendable>(_ device: String, _ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, Error>) in
            queue.async { c.resume(with: Result { try body() }.mapError { deviceError($0, device: device) }) }
        }
    }
}

/// Maps transport and protocol failures to what the engine acts on: a timeout is retried,
/// garbage is retried, a vanished device fails the run at once.
public func deviceError(_ error: Error, device: String) -> Error {
    switch error {
    case let e as DeviceError: return e
    case let e as USBError where e.isGone: return DeviceError(device: device, .disconnected, e.description)
    case let e as USBError where e.isTimeout: return DeviceError(device: device, .timeout, e.description)
    case let e as USBError where e.isNotFound: return DeviceError(device: device, .notFound, e.description)
    case let e as USBError: return DeviceError(device: device, .disconnected, e.description)
    case let e as ProtocolError: return DeviceError(device: device, e.isTimeout ? .timeout : .invalidResponse, e.description)
    case let e as SCPIRejection: return DeviceError(device: device, .rejected, e.description)
    default: return error
    }
}

extension DeviceConfig {
    /// The USB device a script's `match:` names, or the driver's default vendor and product.
    public func usbMatch(defaultVendor: UInt16, defaultProduct: UInt16) -> USBMatch {
        if case .usb(let v, let p, let s) = match { return USBMatch(vendorID: v, productID: p, serial: s) }
        return USBMatch(vendorID: defaultVendor, productID: defaultProduct)
    }
}

/// A USB identity a driver claims, for `herald devices`.
public struct USBIdentity: Sendable, Hashable {
    public var vendorID: UInt16
    public var productID: UInt16
    public var driver: String

    public init(vendorID: UInt16, productID: UInt16, driver: String) {
        self.vendorID = vendorID
        self.productID = productID
        self.driver = driver
    }
}

/// The USB device one instrument driver has open: opened on connect, closed on
/// disconnect, and what the driver's `PresenceReporting` waits on.
public final class USBConnection: Sendable {
    private let handle = Mutex<USBDeviceHandle?>(nil)

    public init() {}

    /// Opens the device `match` names through the process's libusb context.
    public func open(_ match: USBMatch) throws -> USBDeviceHandle {
        let usb = try USBContext.shared().open(match)
        handle.withLock { $0 = usb }
        return usb
    }

    public func close() { handle.withLock { $0?.close(); $0 = nil } }

    /// True once the open device has been unplugged.
    public var isGone: Bool { handle.withLock { $0?.isGone ?? false } }

    /// Waits until the open device is unplugged; with none open, until the wait is cancelled.
    public func vanished(device: String) async -> DeviceError {
        guard let usb = handle.withLock({ $0 }) else {
            while !Task.isCancelled { try? await Task.sleep(for: .seconds(3600)) }
            return DeviceError(device: device, .disconnected, "not connected")
        }
        await withTaskCancellationHandler {
            await usb.waitUntilGone()
        } onCancel: {
            usb.cancelGoneWaiters()
        }
        return DeviceError(device: device, .disconnected, "\(usb.identity) was unplugged")
    }
}
