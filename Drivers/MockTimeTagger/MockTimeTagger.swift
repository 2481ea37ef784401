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
///
/// Its own clock (`clock_offset`, `clock_drift`, `clock_wander`) stamps every tag, and a sync
/// source (`sync: white_rabbit` or `gps`) puts a mark on `sync_channel` at every whole lab
/// second: the clocks of several taggers, with the truth known to the tests (``TaggerClock``).
/// `inputs` says which detectors it watches (default all four; channel = detector number).
public final class MockTimeTagger: GroupAcquiringTagger {
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
            PropertySpec("inputs", .text, summary: "the detectors it watches, e.g. \"3,4\" (default all four)"),
            PropertySpec("clock_offset", .quantity(.time), range: -1...1, summary: "its clock's offset from lab time"),
            PropertySpec("clock_drift", .quantity(.dimensionless), range: -1e-3...1e-3, summary: "its clock's frequency error (1 ppm)"),
            PropertySpec("clock_wander", .quantity(.time), range: 0...1e-6, summary: "random walk of its clock's offset, σ after 1 s"),
            PropertySpec(
                "sync", .text, summary: "sync marks every second: \(TaggerClock.Sync.allCases.map(\.rawValue).joined(separator: ", ")) (default none)"),
            PropertySpec("sync_channel", .quantity(.dimensionless), range: 1...8, summary: "the channel of the sync marks"),
            PropertySpec("sync_jitter", .quantity(.time), range: 0...1e-6, summary: "the marks' jitter (default 10 ps WR, 1 ns GPS)"),
        ],
        isMock: true).withChannels(channels)

    /// Tags are handed on in blocks of this size, as a USB tagger's driver would.
    static let blockSize = 1 << 16

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    public var channelCount: Int { max(Self.channels, clock.syncChannel) }
    private let lab: SimulatedLab
    /// Detector indices (0-based) it watches.
    private let inputs: [Int]
    public let clock: TaggerClock
    private let state: Mutex<State>
    private let bandwidth: Double?
    private let capacity: Double
    private let resolutionPs: Int64

    struct State {
        var delaysPs = [Int64](repeating: 0, count: MockTimeTagger.channels)
        var triggerLevels = [Double](repeating: 0.5, count: MockTimeTagger.channels)
        var lastRate = 0.0
        var electronics = Electronics()
        var walk: TaggerClock.Walk
    }

    public init(config: DeviceConfig, lab: SimulatedLab) throws {
        self.name = config.name
        self.lab = lab
        let clock = try TaggerClock(settings: config.settings, name: config.name, labSeed: lab.seed)
        self.clock = clock
        let inputsText = config.settings["inputs"]?.text ?? "1,2,3,4"
        var inputs: [Int] = []
        for word in inputsText.split(whereSeparator: { $0 == "," || $0 == " " }) {
            guard let d = Int(word), (1...Self.channels).contains(d), !inputs.contains(d - 1) else {
                throw DeviceError(
                    device: config.name, .rejected, "inputs '\(inputsText)': '\(word)' is not one of the detectors 1–4 (each once)")
            }
            inputs.append(d - 1)
        }
        guard !inputs.isEmpty else { throw DeviceError(device: config.name, .rejected, "inputs '\(inputsText)' names no detector") }
        if clock.sync != .none, inputs.contains(clock.syncChannel - 1) {
            throw DeviceError(device: config.name, .rejected, "sync_channel \(clock.syncChannel) is also a detector input")
        }
        self.inputs = inputs.sorted()
        self.bandwidth = config.settings["bandwidth"]?.quantity?.value
        self.capacity = config.settings["buffer"]?.quantity?.value ?? Double(1 << 26)
        self.resolutionPs = max(1, Int64(((config.settings["resolution"]?.quantity?.value ?? 1e-12) * 1e12).rounded()))
        self.state = Mutex(State(walk: TaggerClock.Walk(seed: clock.seed)))
        lab.registerTagger(config.name)
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
        try await acquire(for: duration, group: nil, deliver: deliver)
    }

    public func acquire(
        for duration: Duration, group: AcquisitionGroup, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        // Only the members on this lab share its photons and wait for each other; alone here
        // (the others remote, or real), it acquires as it would by itself.
        try await acquire(for: duration, group: lab.membersHere(group) > 1 ? group : nil, deliver: deliver)
    }

    private func acquire(
        for duration: Duration, group: AcquisitionGroup?, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        try await lab.checkFault(device: name, operation: "acquire")
        // Simulate in 100 ms chunks, on the virtual clock too: tags stream out as a real
        // tagger's would, a cancelled acquisition keeps everything delivered so far, and
        // memory stays one chunk however long the acquisition.
        let chunk = min(duration, .milliseconds(100))
        var start = lab.nowPs
        if let group {
            start = try await lab.joinGroup(group.id, members: lab.membersHere(group), member: name)
        }
        defer {
            if let group { Task { [lab, name] in await lab.leaveGroup(group.id, member: name) } }
        }
        let stop = start + picoseconds(duration)
        var remaining = duration
        var tags = 0
        var at = start
        let delays = state.withLock { $0.delaysPs } + [Int64](repeating: 0, count: 8 - Self.channels)
        let (localStart, localStop) = state.withLock { ($0.local(start, clock), $0.local(stop, clock)) }
        state.withLock { $0.electronics.begin(atPs: localStart) }
        while remaining > .zero {
            try Task.checkCancellation()
            let length = min(chunk, remaining)
            let chunkStart = at
            let chunkStop = chunkStart + picoseconds(length)
            let faultEnd = interruption(from: chunkStart, to: chunkStop)
            let observedStop = faultEnd?.atPs ?? chunkStop
            let clicks: DetectorClicks
            if let group {
                clicks = try await lab.groupClicks(group.id, member: name, fromPs: chunkStart, toPs: observedStop)
            } else {
                clicks = try await lab.detect(duration: Duration(secondsComponent: 0, attosecondsComponent: (observedStop - chunkStart) * 1_000_000))
            }
            var block = state.withLock { s in
                let seen = s.stamp(clicks, inputs: inputs, clock: clock)
                return s.electronics.process(
                    seen, delaysPs: delays, resolutionPs: resolutionPs, window: localStart..<localStop,
                    bandwidth: bandwidth(atPs: chunkStart), capacity: capacity(atPs: chunkStart), final: remaining <= length || faultEnd != nil)
            }
            if let garbageAt = lab.faultStartPs(for: name, .garbage), garbageAt < chunkStop {
                // A garbled USB packet: a timestamp from before the acquisition, out of order.
                block.timestamps.append(localStart - 1_000_000)
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
            at = chunkStop
        }
        let interval = AcquisitionInterval(startPs: localStart, stopPs: localStop, tags: tags)
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

extension MockTimeTagger.State {
    mutating func local(_ ps: Int64, _ clock: TaggerClock) -> Int64 { clock.isIdeal ? ps : clock.local(ps, walk: &walk) }

    /// What this tagger's inputs see of the lab's clicks, stamped by its clock, with the sync
    /// marks of every whole lab second in the chunk (list index = channel − 1).
    mutating func stamp(_ clicks: DetectorClicks, inputs: [Int], clock: TaggerClock) -> DetectorClicks {
        var lists = [[Int64]](repeating: [], count: max(4, clock.syncChannel))
        for d in inputs where d < clicks.perDetector.count {
            lists[d] = clock.isIdeal ? clicks.perDetector[d] : clicks.perDetector[d].map { clock.local($0, walk: &walk) }
        }
        if clock.sync != .none {
            // Mark k is the edge at lab second k, moved by the source's jitter (clamped at 6σ).
            // The jitter is drawn from k, so a
            // mark near a chunk's or an acquisition's edge falls in exactly one of them.
            let second: Int64 = 1_000_000_000_000
            let margin = Int64((6 * clock.syncJitterPs).rounded(.up))
            var k = max(0, (clicks.startPs - margin + second - 1) / second)
            var marks: [Int64] = []
            while k * second - margin < clicks.stopPs {
                var draw = SeededGenerator(seed: clock.seed ^ (UInt64(k) &* 0x9E37_79B9_7F4A_7C15))
                let jitter = clock.syncJitterPs > 0 ? clock.syncJitterPs * max(-6, min(6, draw.gaussian())) : 0
                let edge = k * second + Int64(jitter.rounded())
                if edge >= clicks.startPs && edge < clicks.stopPs { marks.append(local(edge, clock)) }
                k += 1
            }
            lists[clock.syncChannel - 1] = marks
        }
        return DetectorClicks(startPs: local(clicks.startPs, clock), stopPs: local(clicks.stopPs, clock), perDetector: lists)
    }
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
