import HeraldCore
import SimulatedLab
import Synchronization

/// A four-channel time tagger watching the simulated lab's detectors
/// (1: A pass, 2: A reflect, 3: B pass, 4: B reflect).
///
/// Its electronics are modelled after USB taggers: input delays per channel, a finite
/// resolution, and a buffer of `buffer` tags drained at `bandwidth` tags/s. When the tag
/// rate outruns the bandwidth the buffer fills, tags are dropped until it has drained, and
/// the dropped stretch is delivered as an overflow interval (as Swabian taggers report it).
public final class MockTimeTagger: TimeTagger {
    public static let channels = 4
    public static let descriptor = DriverDescriptor(
        id: "mock.timetagger", version: "0.2.0",
        summary: "Simulated 4-channel time tagger: delays, resolution, finite buffer and bandwidth",
        kind: .timeTagger,
        properties: [
            PropertySpec("rate", .quantity(.frequency), settable: false, summary: "total tag rate of the last acquisition")
        ]
            + (1...channels).map {
                PropertySpec("delay_\($0)", .quantity(.time), range: -100e-9...100e-9, summary: "input delay of channel \($0)")
            }
            + (1...channels).map {
                PropertySpec("trigger_level_\($0)", .quantity(.voltage), range: -2.5...2.5, summary: "trigger level of channel \($0)")
            },
        settings: [
            PropertySpec("resolution", .quantity(.time), range: 1e-12...1e-9, summary: "timestamp bin (default 1 ps)"),
            PropertySpec(
                "bandwidth", .quantity(.frequency), range: 1e3...1e10,
                summary: "sustained tags/s to the host (default unlimited)"),
            PropertySpec("buffer", .quantity(.dimensionless), range: 1...1e10, summary: "on-board buffer, tags (default 2^26)"),
        ],
        isMock: true)

    /// Tags are handed on in blocks of this size, as a USB tagger's driver would.
    static let blockSize = 1 << 16

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    public var channelCount: Int { Self.channels }
    private let lab: SimulatedLab
    private let state: Mutex<State>
    private let bandwidth: Double?
    private let capacity: Double
    private let resolutionPs: Int64

    struct State {
        var delaysPs = [Int64](repeating: 0, count: MockTimeTagger.channels)
        var triggerLevels = [Double](repeating: 0.5, count: MockTimeTagger.channels)
        var lastRate = 0.0
        var electronics = Electronics()
    }

    public init(config: DeviceConfig, lab: SimulatedLab) {
        self.name = config.name
        self.lab = lab
        self.bandwidth = config.settings["bandwidth"]?.quantity?.value
        self.capacity = config.settings["buffer"]?.quantity?.value ?? Double(1 << 26)
        self.resolutionPs = max(1, Int64(((config.settings["resolution"]?.quantity?.value ?? 1e-12) * 1e12).rounded()))
        self.state = Mutex(State())
    }

    public func connect() async throws { try await lab.checkFault(device: name, operation: "connect") }

    public func set(_ property: String, to value: Value) async throws {
        try await lab.checkWrite(device: name, descriptor: descriptor, property, value)
        guard let q = value.quantity?.value, let channel = Self.channel(of: property) else { return }
        state.withLock {
            if property.hasPrefix("delay_") {
                $0.delaysPs[channel - 1] = Int64((q * 1e12).rounded())
            } else {
                $0.triggerLevels[channel - 1] = q
            }
        }
    }

    public func get(_ property: String) async throws -> Value {
        if try await lab.readIsGarbled(device: name, descriptor: descriptor, property) {
            return .text("\u{FFFD}\u{1B}[0m#?")
        }
        return state.withLock { s in
            if property == "rate" { return .quantity(Quantity(s.lastRate, .frequency)) }
            let channel = Self.channel(of: property) ?? 1
            if property.hasPrefix("delay_") { return .quantity(Quantity(Double(s.delaysPs[channel - 1]) * 1e-12, .time)) }
            return .quantity(Quantity(s.triggerLevels[channel - 1], .voltage))
        }
    }

    static func channel(of property: String) -> Int? {
        guard let suffix = property.split(separator: "_").last, let c = Int(suffix), (1...channels).contains(c) else { return nil }
        return c
    }

    public func acquire(
        for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        try await lab.checkFault(device: name, operation: "acquire")
        // Simulate in 100 ms chunks, on the virtual clock too: tags stream out as a real
        // tagger's would, a cancelled acquisition keeps everything delivered so far, and
        // memory stays one chunk however long the acquisition.
        let chunk = min(duration, .milliseconds(100))
        let start = lab.nowPs
        let stop = start + picoseconds(duration)
        var remaining = duration
        var tags = 0
        let delays = state.withLock { $0.delaysPs }
        state.withLock { $0.electronics.begin(atPs: start) }
        while remaining > .zero {
            try Task.checkCancellation()
            let length = min(chunk, remaining)
            let chunkStart = lab.nowPs
            let chunkStop = chunkStart + picoseconds(length)
            let faultEnd = interruption(from: chunkStart, to: chunkStop)
            let observed = (faultEnd?.atPs ?? chunkStop) - chunkStart
            let clicks = try await lab.detect(duration: Duration(secondsComponent: 0, attosecondsComponent: observed * 1_000_000))
            var block = state.withLock { s in
                s.electronics.process(
                    clicks, delaysPs: delays, resolutionPs: resolutionPs, window: start..<stop,
                    bandwidth: bandwidth(atPs: chunkStart), capacity: capacity(atPs: chunkStart), final: remaining <= length || faultEnd != nil)
            }
            if let garbageAt = lab.faultStartPs(for: name, .garbage), garbageAt < chunkStop {
                // A garbled USB packet: a timestamp from before the acquisition, out of order.
                block.timestamps.append(start - 1_000_000)
                block.channels.append(1)
            }
            tags += block.count
            try await deliverInBlocks(block, deliver)
            if let faultEnd {
                if faultEnd.kind == .stall { throw SimulatedHang() }  // the tags before the stall were delivered
                let at = Double(faultEnd.atPs) * 1e-12
                throw DeviceError(device: name, .disconnected, "acquire: the device is gone at \(at) s (injected fault)")
            }
            remaining -= length
        }
        let interval = AcquisitionInterval(startPs: start, stopPs: stop, tags: tags)
        state.withLock { $0.lastRate = interval.seconds > 0 ? Double(interval.tags) / interval.seconds : 0 }
        return interval
    }

    /// A disconnect or stall that starts before the end of this chunk, and when.
    private func interruption(from: Int64, to: Int64) -> (kind: FaultSpec.Kind, atPs: Int64)? {
        for kind in [FaultSpec.Kind.disconnect, .stall] {
            if let at = lab.faultStartPs(for: name, kind), at < to { return (kind, max(at, from)) }
        }
        return nil
    }

    /// Under an overflow fault the saturated link's buffer holds 10 ms of its bandwidth, so
    /// the overflow shows at once whatever the configured buffer.
    private func capacity(atPs ps: Int64) -> Double {
        if let at = lab.faultStartPs(for: name, .overflow), ps >= at { return min(capacity, FaultSpec.overflowBandwidth * 0.01) }
        return capacity
    }

    private func bandwidth(atPs ps: Int64) -> Double? {
        if let at = lab.faultStartPs(for: name, .overflow), ps >= at { return FaultSpec.overflowBandwidth }
        return bandwidth
    }

    private func deliverInBlocks(_ all: TagBlock, _ deliver: @Sendable (TagBlock) async throws -> Void) async throws {
        var first = 0
        var excluded = all.excluded
        repeat {
            try Task.checkCancellation()
            let end = min(first + Self.blockSize, all.count)
            try await deliver(
                TagBlock(
                    timestamps: Array(all.timestamps[first..<end]), channels: Array(all.channels[first..<end]),
                    excluded: excluded))
            excluded = []
            first = end
        } while first < all.count
    }

    public func enterSafeState() async throws { try await lab.checkFault(device: name, operation: "enter safe state") }
    public func disconnect() async {}
}

/// The tagger's signal path after the detectors: delay, binning, and the buffer.
struct Electronics {
    /// Tags already delayed past the end of the previous chunk (``TagMerger`` keys, list = channel index).
    var carried: [Int64] = []
    /// Buffer fill, and the time it was last updated.
    var level = 0.0
    var levelAtPs: Int64 = 0
    /// Start of the overflow in progress, if the buffer is full.
    var overflowSince: Int64?

    /// A new acquisition: held-back tags belonged to the last one's window. The buffer
    /// keeps its fill, which drained between acquisitions at the link's rate.
    mutating func begin(atPs ps: Int64) {
        carried = []
        overflowSince = nil
        if levelAtPs == 0 { levelAtPs = ps }
    }

    /// Turns one chunk of detector clicks into delivered tags: channel delays and resolution,
    /// time order across chunks (a delayed tag may belong after the next chunk's first), the
    /// acquisition window, then the buffer. `final` flushes what was held back.
    mutating func process(
        _ clicks: DetectorClicks, delaysPs: [Int64], resolutionPs: Int64, window: Range<Int64>, bandwidth: Double?,
        capacity: Double, final: Bool
    ) -> TagBlock {
        var keys = carried
        keys.reserveCapacity(carried.count + clicks.count)
        for (index, times) in clicks.perDetector.enumerated() {
            let delay = delaysPs[index]
            for t in times {
                var shifted = t + delay
                if resolutionPs > 1 {
                    shifted = (shifted >= 0 ? shifted : shifted - resolutionPs + 1) / resolutionPs * resolutionPs
                }
                keys.append(TagMerger.key(shifted, list: index))
            }
        }
        keys.sort()
        // Anything at or after this time could still be preceded by a later chunk's tag.
        let settled = final ? Int64.max : clicks.stopPs + (delaysPs.min() ?? 0) - resolutionPs
        var cut = keys.count
        while cut > 0 && TagMerger.time(keys[cut - 1]) >= settled { cut -= 1 }
        carried = Array(keys[cut...])
        var block = TagBlock()
        block.timestamps.reserveCapacity(cut)
        block.channels.reserveCapacity(cut)
        let drainPerPs = (bandwidth ?? 0) * 1e-12
        for key in keys[..<cut] {
            let t = TagMerger.time(key)
            guard window.contains(t) else { continue }
            if bandwidth != nil {
                let emptyAt = levelAtPs + Int64((level / drainPerPs).rounded(.up))
                level = max(0, level - Double(t - levelAtPs) * drainPerPs)
                levelAtPs = t
                if let since = overflowSince {
                    // Dropping until the buffer has drained empty.
                    if t < emptyAt { continue }
                    block.excluded.append(ExcludedInterval(startPs: since, stopPs: emptyAt, reason: "overflow"))
                    overflowSince = nil
                }
                if level + 1 > capacity {
                    overflowSince = t
                    continue
                }
                level += 1
            }
            block.timestamps.append(t)
            block.channels.append(UInt8(TagMerger.list(key) + 1))
        }
        if let since = overflowSince, let bandwidth {
            // Still overflowing after the last tag: the buffer drains by itself, maybe in a later chunk.
            let emptyAt = levelAtPs + Int64((level / (bandwidth * 1e-12)).rounded(.up))
            let end = min(emptyAt, clicks.stopPs, window.upperBound)
            if end > since { block.excluded.append(ExcludedInterval(startPs: since, stopPs: end, reason: "overflow")) }
            overflowSince = final || emptyAt <= end ? nil : end
        }
        return block
    }
}
