import CHeraldPlugin
import Foundation
import Synchronization

/// `example.shutter`: a beam shutter. A real driver would send its controller's serial
/// commands here; this example keeps the state in memory and waits the transit time, so it
/// runs anywhere and shows every part of the ABI a non-streaming device needs.
final class Shutter: ExampleDevice, @unchecked Sendable {
    let transitTime: Double
    let isOpen = Mutex(false)
    let connected = Atomic(false)

    init(name: String, transitTime: Double) {
        self.transitTime = transitTime
        super.init(name: name)
    }

    static let descriptor = """
        {"id": "example.shutter", "version": "1.0.0", "kind": "shutter",
         "summary": "Example plugin: a beam shutter with a transit time (state kept in memory)",
         "properties": [{"name": "open", "type": "bool", "summary": "beam passes when true"}],
         "settings": [{"name": "transit_time", "type": "quantity", "dimension": "time", "min": 0, "max": 1,
                       "summary": "time to open or close (default 10 ms)"}]}
        """

    nonisolated(unsafe) static let table = herald_driver_v1(
        descriptor_json: UnsafePointer(strdup(descriptor)!),
        open: { name, settings, error in
            var transit = 0.01
            if let object = JSONValue.parse(settings), let t = object["transit_time"] as? [String: Any] {
                guard t["dimension"] as? String == "time", let v = (t["quantity"] as? NSNumber)?.doubleValue, (0...1).contains(v) else {
                    _ = fail(error, HERALD_REJECTED, "transit_time must be a time from 0 to 1 s")
                    return nil
                }
                transit = v
            }
            let device = Shutter(name: name.map { String(cString: $0) } ?? "shutter", transitTime: transit)
            return Unmanaged.passRetained(device).toOpaque()
        },
        connect: { pointer, _ in
            Shutter.from(pointer)?.connected.store(true, ordering: .relaxed)
            return HERALD_OK
        },
        set: { pointer, property, value, error in
            guard let device = Shutter.from(pointer) else { return fail(error, HERALD_REJECTED, "no device") }
            guard let property, String(cString: property) == "open" else {
                return fail(error, HERALD_UNSUPPORTED, "no property \(property.map { String(cString: $0) } ?? "")")
            }
            guard let open = JSONValue.bool(value) else { return fail(error, HERALD_REJECTED, "open takes true or false") }
            device.cancelled.store(false, ordering: .relaxed)
            guard device.sleep(seconds: device.transitTime) else { return fail(error, HERALD_CANCELLED, "cancelled") }
            device.isOpen.withLock { $0 = open }
            return HERALD_OK
        },
        get: { pointer, property, out, capacity, error in
            guard let device = Shutter.from(pointer) else { return fail(error, HERALD_REJECTED, "no device") }
            guard let property, String(cString: property) == "open" else {
                return fail(error, HERALD_UNSUPPORTED, "no property \(property.map { String(cString: $0) } ?? "")")
            }
            let open = device.isOpen.withLock { $0 }
            return JSONValue.write("{\"bool\": \(open)}", to: out, capacity: capacity)
                ? HERALD_OK : fail(error, HERALD_REJECTED, "value buffer too small")
        },
        safe_state: { pointer, error in
            guard let device = Shutter.from(pointer) else { return fail(error, HERALD_REJECTED, "no device") }
            device.isOpen.withLock { $0 = false }  // closed: safe whatever happened before
            return HERALD_OK
        },
        acquire: nil,
        cancel: { pointer in Shutter.from(pointer)?.cancelled.store(true, ordering: .relaxed) },
        close: { pointer in
            guard let pointer else { return }
            Unmanaged<Shutter>.fromOpaque(pointer).release()
        })
}
