import CHeraldPlugin
import Foundation
import Synchronization

// The plugin's entry point and its table of drivers. Everything crossing the ABI is C:
// strings are NUL-terminated, devices are opaque pointers to Swift objects.

/// Strings handed to Herald must outlive every call, so they are allocated once.
private func cString(_ s: String) -> UnsafePointer<CChar> { UnsafePointer(strdup(s)!) }

nonisolated(unsafe) private let drivers: UnsafeMutablePointer<herald_driver_v1> = {
    let table = UnsafeMutablePointer<herald_driver_v1>.allocate(capacity: 2)
    table[0] = Shutter.table
    table[1] = Pulser.table
    return table
}()

nonisolated(unsafe) private let plugin: UnsafeMutablePointer<herald_plugin_v1> = {
    let p = UnsafeMutablePointer<herald_plugin_v1>.allocate(capacity: 1)
    p.initialize(
        to: herald_plugin_v1(
            abi_version: HERALD_PLUGIN_ABI_VERSION, name: cString("herald-example"), version: cString("1.0.0"),
            driver_count: 2, drivers: UnsafePointer(drivers)))
    return p
}()

@_cdecl("herald_plugin_entry")
public func heraldPluginEntry() -> UnsafePointer<herald_plugin_v1>? { UnsafePointer(plugin) }

// MARK: Helpers shared by the drivers

/// A device object behind the opaque pointer Herald holds.
class ExampleDevice: @unchecked Sendable {
    let name: String
    /// Set by `cancel` from any thread; checked by blocking calls.
    let cancelled = Atomic(false)
    init(name: String) { self.name = name }

    static func from(_ pointer: UnsafeMutableRawPointer?) -> Self? {
        pointer.map { Unmanaged<Self>.fromOpaque($0).takeUnretainedValue() }
    }

    /// Sleeps in short slices so `cancel` takes effect within 10 ms.
    func sleep(seconds: Double) -> Bool {
        var left = seconds
        while left > 0 {
            if cancelled.load(ordering: .relaxed) { return false }
            let slice = min(left, 0.01)
            usleep(useconds_t(slice * 1e6))
            left -= slice
        }
        return !cancelled.load(ordering: .relaxed)
    }
}

func fail(_ error: UnsafeMutablePointer<herald_error>?, _ status: herald_status, _ message: String) -> herald_status {
    if let error {
        withUnsafeMutableBytes(of: &error.pointee.message) { raw in
            let bytes = Array(message.utf8.prefix(raw.count - 1))
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
    }
    return status
}

/// Values cross as {"bool": …} | {"quantity": …, "dimension": …} | {"text": …}.
enum JSONValue {
    static func parse(_ text: UnsafePointer<CChar>?) -> [String: Any]? {
        guard let text else { return nil }
        return try? JSONSerialization.jsonObject(with: Data(String(cString: text).utf8)) as? [String: Any]
    }

    static func bool(_ text: UnsafePointer<CChar>?) -> Bool? { parse(text)?["bool"] as? Bool }

    static func quantity(_ text: UnsafePointer<CChar>?, _ dimension: String) -> Double? {
        guard let object = parse(text), object["dimension"] as? String == dimension else { return nil }
        return (object["quantity"] as? NSNumber)?.doubleValue
    }

    static func write(_ json: String, to out: UnsafeMutablePointer<CChar>?, capacity: Int) -> Bool {
        guard let out, json.utf8.count < capacity else { return false }
        _ = json.withCString { strcpy(out, $0) }
        return true
    }
}
