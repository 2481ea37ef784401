import Foundation
import HeraldCore
import HeraldUSB
import HeraldUSBProtocols
import Synchronization
import USBInstrument

/// S-Fifteen Instruments TDC1 four-channel time-stamp unit and coincidence counter, a
/// USB CDC-ACM device driven through libusb.
///
/// Protocol as published by S-Fifteen (Timestamp_TDC1 wiki and the pyS15 library,
/// S15lib/instruments/usb_counter_fpga.py): text commands ended by CR LF and chained with
/// `;` — `*IDN?`, `NIM`/`TTL` input levels, `time <ms>` gate, `singles`, `pairs`,
/// `timestamp`, `counts?`, `abort`. In timestamp mode the unit streams 32-bit
/// little-endian words: bits 31–5 a time in 2 ns units that wraps every 2^27 units
/// (268 ms), bit 4 set for a word that is not a detection, bits 3–0 the pattern of
/// channels that fired together. A wrap is seen as a time that goes backwards, so the
/// stream must carry a word at least every half period; the emulated unit sends bit-4
/// words when idle, which this driver assumes of the real one (not yet checked on hardware).
///
/// USB identity: real units enumerate as CDC-ACM; the default vendor/product here is the
/// emulator's (Microchip's CDC class ids). Check `herald devices` and give `match:` in the script.
public final class S15TDC1: TimeTagger, @unchecked Sendable {  // link state touched only on `io`
    public static let usb = USBIdentity(vendorID: 0x04D8, productID: 0x000A, driver: "s15.tdc1")

    public static let descriptor = DriverDescriptor(
        id: "s15.tdc1", version: "0.1.0", summary: "S-Fifteen TDC1 time-stamp unit, 4 channels, 2 ns (USB CDC-ACM)",
        kind: .timeTagger,
        properties: [
            PropertySpec("level", .choice(["NIM", "TTL"]), summary: "input logic level"),
            PropertySpec("resolution", .quantity(.time), settable: false, summary: "time-stamp unit (2 ns)"),
        ],
        settings: [PropertySpec("level", .choice(["NIM", "TTL"]), summary: "input logic level at connect (default NIM)")]
    ).matched(by: [.usb, .serial]).withChannels(4)

    static let unitPs: Int64 = 2000
    static let period: Int64 = 1 << 27

    public let name: String
    public var descriptor: DriverDescriptor { Self.descriptor }
    public var channelCount: Int { 4 }
    let config: DeviceConfig
    let io: InstrumentQueue
    let initialLevel: String
    private var serial: (any ByteLink)?
    private var lines = LineReader()
    private var level = "NIM"
    private let connection: InstrumentConnection
    /// Where the next acquisition starts on the run's tag clock: the unit restarts its
    /// clock with every `timestamp` command, Herald's clock runs on.
    private let clockOffsetPs = Mutex<Int64>(0)

    /// `simulator` is the in-process unit `--mock` puts under this driver.
    public init(config: DeviceConfig, simulator: InstrumentSimulator? = nil) {
        name = config.name
        self.config = config
        io = InstrumentQueue(device: config.name)
        connection = InstrumentConnection(simulator: simulator)
        initialLevel = config.settings["level"]?.text ?? "NIM"
    }

    public var needsWallClock: Bool { !config.isSimulatedInstrument }
    public var answersWithoutWaiting: Bool { config.isSimulatedInstrument }

    func command(_ text: String) throws {
        guard let serial else { throw DeviceError(device: name, .disconnected, "not connected") }
        try serial.write(Array((text + "\r\n").utf8), timeout: .seconds(1))
    }

    func query(_ text: String) throws -> String {
        guard let serial else { throw DeviceError(device: name, .disconnected, "not connected") }
        try command(text)
        let raw = try lines.readLine(from: serial, timeout: .seconds(1))
        guard let reply = String(bytes: raw, encoding: .ascii) else {
            throw ProtocolError(device: serial.identity, "answer to \(text) is not text", offset: 0)
        }
        return reply.trimmingCharacters(in: .whitespaces)
    }

    public func connect() async throws {
        try await io.run(name) { [self] in
            // Over USB through libusb's CDC-ACM path; as /dev/ttyACM* (cdc_acm) through the serial port.
            let link = try connection.byteLink(config, defaults: Self.usb, baud: 115_200) { usb in
                let acm = try CDCACMSerial(usb)
                try acm.configure()
                return acm
            }
            serial = link
            try command("abort")  // a unit left streaming by a crashed program stops first
            try link.purge()
            lines.reset()
            let idn = try query("*IDN?")
            guard idn.contains("TDC1") else {
                throw ProtocolError(device: link.identity, "*IDN? answered '\(idn.prefix(60))', not a TDC1")
            }
            try command(initialLevel)
            level = initialLevel
        }
    }

    public func set(_ property: String, to value: Value) async throws {
        try descriptor.check(property, value, device: name)
        guard property == "level", let text = value.text else { throw DeviceError(device: name, .rejected, "cannot set \(property)") }
        try await io.run(name) { [self] in
            try command(text)
            let now = try query("level?")
            guard now.uppercased().hasPrefix(text) else {
                throw ProtocolError(device: name, "level is '\(now)' after setting \(text)", offset: 0)
            }
            level = text
        }
    }

    public func get(_ property: String) async throws -> Value {
        switch property {
        case "resolution": return .quantity(Quantity(Double(Self.unitPs) * 1e-12, .time))
        case "level":
            return try await io.run(name) { [self] in
                let reply = try query("level?").uppercased()
                guard let l = ["NIM", "TTL"].first(where: { reply.hasPrefix($0) }) else {
                    throw ProtocolError(device: name, "level? answered '\(reply.prefix(20))'", offset: 0)
                }
                return .text(l)
            }
        default: throw DeviceError(device: name, .unsupported, "no property \(property)")
        }
    }

    /// Streams time stamps for `duration` of the unit's own clock: the gate is set on the
    /// unit (`time`), the words arrive through asynchronous bulk transfers, and the
    /// acquisition ends when the unit's clock passes the gate (or its stream goes quiet).
    public func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        let durationPs = duration.components.seconds * 1_000_000_000_000 + duration.components.attoseconds / 1_000_000
        let offset = clockOffsetPs.withLock { $0 }
        let (blocks, sink) = AsyncThrowingStream<TagBlock, Error>.makeStream()
        let decoder = Mutex(TDC1Decoder(offsetPs: offset, stopPs: durationPs))
        let device = name
        let stream: any WordStream = try await io.run(name) { [self] in
            guard let serial else { throw DeviceError(device: name, .disconnected, "not connected") }
            let ms = max(1, durationPs / 1_000_000_000)
            let consume: @Sendable (UnsafeRawBufferPointer) -> Void = { bytes in
                let (block, done, problem) = decoder.withLock { d in d.decode(bytes) }
                if let problem { sink.finish(throwing: ProtocolError(device: device, problem.message, offset: problem.offset)) }
                if !block.timestamps.isEmpty { sink.yield(block) }
                if done { sink.finish() }
            }
            // Asynchronous bulk transfers when libusb has the unit; otherwise a reader on the link.
            let s: any WordStream
            if let acm = serial as? CDCACMSerial {
                s = try USBBulkStream(device: acm.usb, endpoint: acm.bulkIn, transfers: 8, size: 16384, consume: consume)
            } else {
                s = ByteLinkStream(serial, consume: consume)
            }
            try s.start()
            try command("time \(ms <= 65_000 ? ms : 0);timestamp;counts?")
            return s
        }
        let watchdog = Task { [stream] in
            // The unit stops streaming at the end of its gate; if no word passes the gate
            // (no light, no idle words), the acquisition ends on wall-clock time.
            guard (try? await Task.sleep(for: duration + .milliseconds(500))) != nil else { return }
            if let e = stream.failure { return sink.finish(throwing: e) }
            // Never a silent short acquisition: the unit's clock must pass the gate.
            let reached = decoder.withLock { $0.lastPs } / 1_000_000_000
            sink.finish(throwing: DeviceError(
                device: device, .timeout,
                "the time-stamp stream stopped at \(reached) ms of the \(durationPs / 1_000_000_000) ms gate (the unit stalled or lost words)"))
        }
        let ending = Task { [stream] in
            while stream.isRunning, !Task.isCancelled { try? await Task.sleep(for: .milliseconds(20)) }
            if let e = stream.failure { sink.finish(throwing: e) }
        }
        defer {
            watchdog.cancel()
            ending.cancel()
        }
        var tags = 0
        do {
            try await withTaskCancellationHandler {
                for try await block in blocks {
                    tags += block.count
                    try await deliver(block)
                }
            } onCancel: {
                sink.finish()
            }
        } catch {
            await stop(stream)
            throw deviceError(error, device: name)
        }
        await stop(stream)
        if let e = stream.failure { throw deviceError(e, device: name) }
        try Task.checkCancellation()
        clockOffsetPs.withLock { $0 = offset + durationPs }
        return AcquisitionInterval(startPs: offset, stopPs: offset + durationPs, tags: tags)
    }

    /// Cancels the transfers, stops the unit streaming and drops what it still sends.
    func stop(_ stream: any WordStream) async {
        stream.cancelAndWait()
        _ = try? await io.run(name) { [self] in
            try command("abort")
            try serial?.purge()
            lines.reset()
        }
    }

    /// No hazardous state; an acquisition in progress is stopped.
    public func enterSafeState() async throws {
        try await io.run(name) { [self] in
            if serial != nil { try command("abort") }
        }
    }

    public func disconnect() async {
        _ = try? await io.run(name) { [self] in
            serial = nil
            connection.close()
        }
    }
}

extension S15TDC1: PresenceReporting {
    public func vanished() async -> DeviceError { await connection.vanished(device: name) }
}

/// Where the unit's time-stamp words come from while it streams.
protocol WordStream: AnyObject, Sendable {
    func start() throws
    /// True until the stream fails or is cancelled.
    var isRunning: Bool { get }
    /// Why the stream broke, if it did.
    var failure: (any Error)? { get }
    func cancelAndWait()
}

extension USBBulkStream: WordStream {
    var isRunning: Bool { end == .running }
    var failure: (any Error)? {
        if case .failed(let e) = end { return e }
        return nil
    }
}

/// Reads a byte link on its own thread while the unit streams (a serial port, or the
/// simulated unit), handing each read to the decoder as USB transfers are.
final class ByteLinkStream: WordStream, @unchecked Sendable {  // state behind a Mutex
    let link: any ByteLink
    let consume: @Sendable (UnsafeRawBufferPointer) -> Void
    private let state = Mutex<(started: Bool, running: Bool, stopping: Bool, failure: (any Error)?)>((false, false, false, nil))
    private let done = DispatchSemaphore(value: 0)

    init(_ link: any ByteLink, consume: @escaping @Sendable (UnsafeRawBufferPointer) -> Void) {
        self.link = link
        self.consume = consume
    }

    func start() throws {
        state.withLock {
            $0.started = true
            $0.running = true
        }
        let thread = Thread { [self] in
            defer { done.signal() }
            while !state.withLock({ $0.stopping }) {
                do {
                    let bytes = try link.read(timeout: .milliseconds(50))
                    if !bytes.isEmpty { bytes.withUnsafeBytes { consume($0) } }
                } catch {
                    state.withLock {
                        $0.failure = error
                        $0.running = false
                    }
                    return
                }
            }
            state.withLock { $0.running = false }
        }
        thread.name = "herald.tdc1.stream"
        thread.start()
    }

    var isRunning: Bool { state.withLock { $0.running } }
    var failure: (any Error)? { state.withLock { $0.failure } }

    func cancelAndWait() {
        // The reader thread signals once; a second cancel must not wait for it again.
        let started = state.withLock { s -> Bool in
            s.stopping = true
            defer { s.started = false }
            return s.started
        }
        if started { _ = done.wait(timeout: .now() + 2) }
    }
}

/// Decodes the TDC1's 32-bit time-stamp words into tags on the run's clock: unwraps the
/// 2^27-unit period, splits simultaneous-channel patterns into one tag per channel, keeps
/// a word split across transfers, and rejects a stream whose time runs backwards by less
/// than half a period (garbage, not a wrap).
public struct TDC1Decoder: Sendable {
    public struct Problem: Sendable, Equatable {
        public var message: String
        public var offset: Int
    }

    let offsetPs: Int64
    let stopPs: Int64
    var carry: [UInt8] = []
    var periods: Int64 = 0
    var previous: Int64 = -1
    /// The unit's clock at the last word, in ps since the acquisition started.
    public private(set) var lastPs: Int64 = 0
    /// Bytes decoded so far (for error offsets).
    public private(set) var consumed = 0
    public private(set) var finished = false

    public init(offsetPs: Int64, stopPs: Int64) {
        self.offsetPs = offsetPs
        self.stopPs = stopPs
    }

    /// Decodes one transfer. Returns its tags, whether the gate end was passed, and a problem.
    public mutating func decode(_ bytes: UnsafeRawBufferPointer) -> (TagBlock, Bool, Problem?) {
        var timestamps: [Int64] = []
        var channels: [UInt8] = []
        timestamps.reserveCapacity(bytes.count / 4 + 1)
        channels.reserveCapacity(bytes.count / 4 + 1)
        var index = 0
        func word(at i: Int) -> UInt32 {
            UInt32(bytes[i]) | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2]) << 16 | UInt32(bytes[i + 3]) << 24
        }
        var pendingWord: UInt32?
        if !carry.isEmpty {
            let need = 4 - carry.count
            if bytes.count < need {
                carry += bytes
                return (TagBlock(), finished, nil)
            }
            let w = carry + Array(bytes.prefix(need))
            pendingWord = UInt32(w[0]) | UInt32(w[1]) << 8 | UInt32(w[2]) << 16 | UInt32(w[3]) << 24
            carry = []
            index = need
        }
        var problem: Problem?
        while !finished {
            let w: UInt32
            if let p = pendingWord {
                w = p
                pendingWord = nil
            } else {
                guard index + 4 <= bytes.count else { break }
                w = word(at: index)
                index += 4
            }
            let at = consumed + index - 4
            let t = Int64(w >> 5)
            if previous >= 0 && t < previous {
                if previous - t < Self.halfPeriod {
                    problem = Problem(message: "time stamps run backwards (\(previous) then \(t), in 2 ns units): garbage in the stream", offset: at)
                    finished = true
                    break
                }
                periods += 1
            }
            previous = t
            let ps = (periods * (1 << 27) + t) * 2000
            lastPs = ps
            if ps >= stopPs {
                finished = true
                break
            }
            if w & 0x10 != 0 { continue }  // not a detection: keeps the wrap count honest
            let pattern = w & 0x0F
            if pattern == 0 {
                problem = Problem(message: "a detection word with no channel set: garbage in the stream", offset: at)
                finished = true
                break
            }
            for ch in 0..<4 where pattern & (1 << ch) != 0 {
                timestamps.append(offsetPs + ps)
                channels.append(UInt8(ch + 1))
            }
        }
        if !finished && index < bytes.count { carry = Array(bytes[index...]) }
        consumed += bytes.count
        return (TagBlock(timestamps: timestamps, channels: channels), finished, problem)
    }

    static let halfPeriod: Int64 = 1 << 26
}
