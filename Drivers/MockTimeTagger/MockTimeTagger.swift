import HeraldCore
import Synchronization
import SimulatedLab

/// A four-channel time tagger watching the simulated lab's detectors
/// (1: A pass, 2: A reflect, 3: B pass, 4: B reflect).
public final class MockTimeTagger: TimeTagger {
    public static let descriptor = DriverDescriptor(
        id: "mock.timetagger", version: "0.1.0", summary: "Simulated 4-channel time tagger, 1 ps resolution",
        kind: .timeTagger,
        properties: [
            PropertySpec("rate", .quantity(.frequency), settable: false, summary: "total tag rate of the last acquisition")
        ],
        settings: [], isMock: true)

    /// Tags are handed on in blocks of this size, as a USB tagger's driver would.
    static let blockSize = 1 << 16

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    public var channelCount: Int { 4 }
    private let lab: SimulatedLab
    private let lastRate = Mutex(0.0)

    public init(config: DeviceConfig, lab: SimulatedLab) {
        self.name = config.name
        self.lab = lab
    }

    public func connect() async throws {}

    public func set(_ property: String, to value: Value) async throws {
        throw DeviceError(device: name, .unsupported, "no settable property \(property)")
    }

    public func get(_ property: String) async throws -> Value {
        guard property == "rate" else { throw DeviceError(device: name, .unsupported, "no property \(property)") }
        return .quantity(Quantity(lastRate.withLock { $0 }, .frequency))
    }

    public func acquire(
        for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        // Simulate in 100 ms chunks, on the virtual clock too: tags stream out as a real
        // tagger's would, a cancelled acquisition keeps everything delivered so far, and
        // memory stays one chunk however long the acquisition.
        let chunk = min(duration, .milliseconds(100))
        var remaining = duration
        var start: Int64?
        var stop: Int64 = 0
        var tags = 0
        while remaining > .zero {
            try Task.checkCancellation()
            let length = min(chunk, remaining)
            let (all, interval) = try await lab.acquire(duration: length)
            start = start ?? interval.startPs
            stop = interval.stopPs
            tags += interval.tags
            var first = 0
            while first < all.count {
                try Task.checkCancellation()
                let end = min(first + Self.blockSize, all.count)
                try await deliver(
                    TagBlock(timestamps: Array(all.timestamps[first..<end]), channels: Array(all.channels[first..<end])))
                first = end
            }
            remaining -= length
        }
        let interval = AcquisitionInterval(startPs: start ?? stop, stopPs: stop, tags: tags)
        lastRate.withLock { $0 = interval.seconds > 0 ? Double(interval.tags) / interval.seconds : 0 }
        return interval
    }

    public func enterSafeState() async throws {}
    public func disconnect() async {}
}
