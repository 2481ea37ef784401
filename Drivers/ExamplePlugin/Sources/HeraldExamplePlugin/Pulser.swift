import CHeraldPlugin
import Foundation
import Synchronization

/// `example.pulser`: a two-channel time tagger fed by its own test signal, as taggers'
/// built-in test generators are: channel 1 ticks at `rate`, channel 2 follows each tick
/// after `delay`. Acquisitions take real time and stream one block per 10 ms, so it shows
/// the streaming half of the ABI: the sink callback, cancellation, and the tag clock.
final class Pulser: ExampleDevice, @unchecked Sendable {
    struct State {
        var rate = 1000.0
        var delayPs: Int64 = 10_000
        /// The tag clock: picoseconds of acquisition so far (it advances only while acquiring).
        var clockPs: Int64 = 0
    }
    let state = Mutex(State())

    static let descriptor = """
        {"id": "example.pulser", "version": "1.0.0", "kind": "time-tagger", "channels": 2,
         "summary": "Example plugin: a 2-channel tagger on its built-in test signal",
         "properties": [
           {"name": "rate", "type": "quantity", "dimension": "frequency", "min": 1, "max": 1e7,
            "summary": "test-signal rate of channel 1"},
           {"name": "delay", "type": "quantity", "dimension": "time", "min": 0, "max": 1e-6,
            "summary": "channel 2 lags channel 1 by this"}]}
        """

    static func valueJSON(_ device: Pulser, _ name: String) -> String? {
        let s = device.state.withLock { $0 }
        switch name {
        case "rate": return "{\"quantity\": \(s.rate), \"dimension\": \"frequency\"}"
        case "delay": return "{\"quantity\": \(Double(s.delayPs) * 1e-12), \"dimension\": \"time\"}"
        default: return nil
        }
    }

    nonisolated(unsafe) static let table = herald_driver_v1(
        descriptor_json: UnsafePointer(strdup(descriptor)!),
        open: { name, _, _ in
            Unmanaged.passRetained(Pulser(name: name.map { String(cString: $0) } ?? "pulser")).toOpaque()
        },
        connect: { _, _ in HERALD_OK },
        set: { pointer, property, value, error in
            guard let device = Pulser.from(pointer), let property else { return fail(error, HERALD_REJECTED, "no device") }
            switch String(cString: property) {
            case "rate":
                guard let v = JSONValue.quantity(value, "frequency"), (1...1e7).contains(v) else {
                    return fail(error, HERALD_REJECTED, "rate must be a frequency from 1 Hz to 10 MHz")
                }
                device.state.withLock { $0.rate = v }
            case "delay":
                guard let v = JSONValue.quantity(value, "time"), (0...1e-6).contains(v) else {
                    return fail(error, HERALD_REJECTED, "delay must be a time from 0 to 1 µs")
                }
                device.state.withLock { $0.delayPs = Int64((v * 1e12).rounded()) }
            case let other:
                return fail(error, HERALD_UNSUPPORTED, "no property \(other)")
            }
            return HERALD_OK
        },
        get: { pointer, property, out, capacity, error in
            guard let device = Pulser.from(pointer), let property else { return fail(error, HERALD_REJECTED, "no device") }
            guard let json = Pulser.valueJSON(device, String(cString: property)) else {
                return fail(error, HERALD_UNSUPPORTED, "no property \(String(cString: property))")
            }
            return JSONValue.write(json, to: out, capacity: capacity) ? HERALD_OK : fail(error, HERALD_REJECTED, "buffer too small")
        },
        safe_state: { _, _ in HERALD_OK },  // a tagger has no hazardous state
        acquire: { pointer, durationPs, sink, context, startPs, stopPs, error in
            guard let device = Pulser.from(pointer), let sink else { return fail(error, HERALD_REJECTED, "no device") }
            device.cancelled.store(false, ordering: .relaxed)
            let s = device.state.withLock { $0 }
            let periodPs = Int64((1e12 / s.rate).rounded())
            let start = s.clockPs, stop = s.clockPs + durationPs
            var next = (start + periodPs - 1) / periodPs * periodPs  // first tick at or after start
            var sliceStart = start
            var echoes: [Int64] = []  // channel-2 echoes not yet due
            var times: [Int64] = [], channels: [UInt8] = []
            while sliceStart < stop {
                let sliceStop = min(stop, sliceStart + 10_000_000_000)  // 10 ms of tag clock
                guard device.sleep(seconds: Double(sliceStop - sliceStart) * 1e-12) else {
                    device.state.withLock { $0.clockPs = sliceStart }
                    return fail(error, HERALD_CANCELLED, "cancelled")
                }
                // This slice's ticks, and echoes (of this or earlier slices) that fall in it;
                // an echo past the slice end waits for its slice, so blocks stay in time order.
                var events: [(Int64, UInt8)] = []
                while next < sliceStop {
                    events.append((next, 1))
                    if next + s.delayPs < stop { echoes.append(next + s.delayPs) }
                    next += periodPs
                }
                let due = echoes.filter { $0 < sliceStop }
                echoes.removeAll { $0 < sliceStop }
                events += due.map { ($0, 2) }
                events.sort { $0.0 < $1.0 || ($0.0 == $1.0 && $0.1 < $1.1) }
                times = events.map(\.0)
                channels = events.map(\.1)
                if !times.isEmpty, sink(context, times, channels, times.count) != 0 {
                    device.state.withLock { $0.clockPs = sliceStop }
                    return fail(error, HERALD_CANCELLED, "the host stopped the acquisition")
                }
                sliceStart = sliceStop
            }
            device.state.withLock { $0.clockPs = stop }
            startPs?.pointee = start
            stopPs?.pointee = stop
            return HERALD_OK
        },
        cancel: { pointer in Pulser.from(pointer)?.cancelled.store(true, ordering: .relaxed) },
        close: { pointer in
            guard let pointer else { return }
            Unmanaged<Pulser>.fromOpaque(pointer).release()
        })
}
