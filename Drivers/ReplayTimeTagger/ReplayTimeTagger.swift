import Foundation
import HeraldCore
import HeraldRunReader
import HeraldTTTR

/// A time tagger whose "inputs" are a recording: a PicoQuant file (.ptu), a Swabian Time
/// Tagger dump (.dump/.ttdump) or a Herald run file (.h5). A script that names it instead of
/// a real tagger reruns its acquisition and analysis steps on yesterday's data, no hardware.
///
/// The tag clock is the recording's: acquisitions take consecutive stretches of file time
/// (a Herald run's own acquisitions are followed, so its gaps are skipped and the same script
/// sees the same tags). Data is played as fast as the run consumes it, or, with
/// `realtime: true`, no faster than it was recorded.
public actor ReplayTimeTagger: TimeTagger {
    public static let descriptor = DriverDescriptor(
        id: "replay.timetagger", version: "0.1.0",
        summary: "Replays a recording (PicoQuant .ptu, Swabian dump, Herald run .h5) as a time tagger",
        kind: .timeTagger,
        properties: [
            PropertySpec("rate", .quantity(.frequency), settable: false, summary: "tag rate of the last acquisition"),
            PropertySpec("position", .quantity(.time), settable: false, summary: "file time replayed so far"),
            PropertySpec("length", .quantity(.time), settable: false, summary: "the recording's length as its header states it"),
        ],
        settings: [
            PropertySpec("file", .text, summary: "the recording; relative paths are looked up beside the script, then in the working directory"),
            PropertySpec("format", .text, summary: "auto (default: by extension), ptu, swabian or herald"),
            PropertySpec("realtime", .bool, summary: "deliver tags no faster than they were recorded (default false)"),
            PropertySpec(
                "loop", .bool,
                summary: "when the recording ends, play it again shifted by its length (default false): soak tests and long-run benchmarks"),
        ], usesHardware: false)
        .matched(by: [.file])

    public enum Format: String, Sendable, CaseIterable { case ptu, swabian, herald }

    public nonisolated let name: String
    public nonisolated var descriptor: DriverDescriptor { Self.descriptor }
    public nonisolated let channelCount: Int
    public nonisolated let path: String
    public nonisolated let format: Format
    public nonisolated let realtime: Bool
    public nonisolated let loop: Bool

    private var source: (any ReplaySource)?
    /// Tags read from the source but not delivered yet (they lie beyond the last acquisition).
    private var pending = TagBlock()
    private var pendingExcluded: [ExcludedInterval] = []
    private var sourceDone = false
    /// File time (ps) up to which the recording has been replayed.
    private var cursor: Int64 = 0
    private var lastTime: Int64?
    private var tagsDelivered = 0
    private var lastRate = 0.0

    /// Checks the settings and that the file exists; the file is opened by `connect`.
    public init(config: DeviceConfig) throws {
        name = config.name
        let requested = config.settings["file"]?.text ?? {
            if case .file(let f) = config.match { return f }
            return nil
        }()
        guard let requested, !requested.isEmpty else {
            throw DeviceError(
                device: config.name, .notFound,
                "replay.timetagger needs the recording: settings: {file: path} or match: {file: path}")
        }
        path = try Self.resolve(requested, script: config.location?.file, device: config.name)
        let formatText = config.settings["format"]?.text ?? "auto"
        if formatText == "auto" {
            switch (path as NSString).pathExtension.lowercased() {
            case "ptu": format = .ptu
            case "dump", "ttdump": format = .swabian
            case "h5", "hdf5": format = .herald
            case let ext:
                throw DeviceError(
                    device: config.name, .unsupported,
                    "cannot tell the format of \(path) from '.\(ext)'; set format: ptu, swabian or herald")
            }
        } else if let f = Format(rawValue: formatText) {
            format = f
        } else {
            throw DeviceError(
                device: config.name, .unsupported, "format '\(formatText)' is not one of auto, ptu, swabian, herald")
        }
        realtime = config.settings["realtime"]?.bool ?? false
        loop = config.settings["loop"]?.bool ?? false
        channelCount = format == .ptu ? 64 : 256
    }

    /// What `herald validate` checks of a replay without running it: the settings, that the
    /// recording exists, and that it opens as the format says (its header read, nothing
    /// replayed), so a missing or unreadable recording is found before any device moves.
    public static func preflight(config: DeviceConfig) async throws {
        let tagger = try ReplayTimeTagger(config: config)
        try await tagger.connect()
        await tagger.disconnect()
    }

    /// A relative path is looked up beside the script first (as includes are), then in the
    /// working directory.
    static func resolve(_ requested: String, script: String?, device: String) throws -> String {
        if requested.hasPrefix("/") {
            guard FileManager.default.fileExists(atPath: requested) else {
                throw DeviceError(device: device, .notFound, "recording \(requested) does not exist")
            }
            return requested
        }
        var tried: [String] = []
        if let script {
            let beside = ((script as NSString).deletingLastPathComponent as NSString).appendingPathComponent(requested)
            tried.append(beside)
        }
        tried.append(requested)
        guard let found = tried.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw DeviceError(device: device, .notFound, "recording '\(requested)' not found (looked for \(tried.joined(separator: " and ")))")
        }
        return found
    }

    public func connect() async throws {
        let (path, format) = (self.path, self.format)
        let open: @Sendable () throws -> any ReplaySource = {
            switch format {
            case .ptu, .swabian: try PicoQuantSource(file: try TimeTagFile.open(path, swabian: format == .swabian))
            case .herald: try HeraldRunSource(stream: try RunTagStream(path: path))
            }
        }
        do {
            source = loop ? try LoopingSource(open: open) : try open()
        } catch let e as DeviceError {
            throw e
        } catch is NoRawTagsError {
            throw DeviceError(device: name, .unsupported, "cannot replay \(path): the run stored no raw tags (recorded with --no-raw-tags)")
        } catch {
            throw DeviceError(device: name, .invalidResponse, "cannot replay \(path): \(error)")
        }
        pending = TagBlock()
        pendingExcluded = []
        sourceDone = false
        cursor = source?.startPs ?? 0
        lastTime = nil
    }

    public func set(_ property: String, to value: Value) async throws {
        throw DeviceError(device: name, .unsupported, "no settable property \(property)")
    }

    public func get(_ property: String) async throws -> Value {
        switch property {
        case "rate": return .quantity(Quantity(lastRate, .frequency))
        case "position": return .quantity(Quantity(Double(cursor) * 1e-12, .time))
        case "length":
            guard let end = source?.statedLengthPs else {
                throw DeviceError(device: name, .unsupported, "\(path) does not state its length (Swabian dumps end with their last tag)")
            }
            return .quantity(Quantity(Double(end) * 1e-12, .time))
        default: throw DeviceError(device: name, .unsupported, "no property \(property)")
        }
    }

    /// Delivers the next `duration` of file time. If the recording ends first, what it had is
    /// delivered and the call fails with `endOfData`, so nothing read is lost.
    public func acquire(
        for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> AcquisitionInterval {
        guard let source else { throw DeviceError(device: name, .disconnected, "acquire before connect") }
        let lengthPs = picoseconds(duration)
        // Follow a Herald run's acquisitions: skip the gap to the next one, and refuse to read
        // past its end (those tags were never recorded, so the counts would be wrong).
        if let segment = source.acquisition(containingOrAfter: cursor) {
            if cursor < segment.startPs { cursor = segment.startPs }
            if cursor + lengthPs > segment.stopPs {
                throw DeviceError(
                    device: name, .rejected,
                    "the recording's acquisition at \(Self.seconds(segment.startPs)) s lasted "
                        + "\(Self.seconds(segment.stopPs - segment.startPs)) s; this acquisition asks for "
                        + "\(Self.seconds(lengthPs)) s from \(Self.seconds(cursor)) s. Replay it with a script whose acquisitions match the recording")
            }
        }
        let start = cursor, stop = cursor + lengthPs
        let wallStart = ContinuousClock.now
        // In real time, hand on 100 ms of file time at a time, each no earlier than it was recorded.
        let step: Int64 = realtime ? 100_000_000_000 : lengthPs
        var delivered = 0
        var windowStart = start
        while windowStart < stop {
            try Task.checkCancellation()
            let windowStop = min(stop, windowStart + max(step, 1))
            delivered += try await deliverWindow(source, from: windowStart, to: windowStop, deliver: deliver)
            if realtime {
                try await Task.sleep(until: wallStart + .nanoseconds((windowStop - start) / 1000), clock: .continuous)
            }
            windowStart = windowStop
            cursor = windowStop
            if sourceDone && pending.count == 0, case let end = max(source.endPs ?? 0, (lastTime ?? -1) + 1), windowStop > end {
                cursor = end
                tagsDelivered += delivered
                throw DeviceError(
                    device: name, .endOfData,
                    "\(path) ends at \(Self.seconds(end)) s of file time; the acquisition from \(Self.seconds(start)) s "
                        + "asked for \(Self.seconds(lengthPs)) s (the \(delivered) tags up to the end were delivered)")
            }
        }
        tagsDelivered += delivered
        let interval = AcquisitionInterval(startPs: start, stopPs: stop, tags: delivered)
        lastRate = interval.seconds > 0 ? Double(delivered) / interval.seconds : 0
        return interval
    }

    /// Delivers every tag with from ≤ t < to, pulling blocks from the source as needed.
    private func deliverWindow(
        _ source: any ReplaySource, from: Int64, to: Int64, deliver: @Sendable (TagBlock) async throws -> Void
    ) async throws -> Int {
        var delivered = 0
        while true {
            if pending.count == 0 && !sourceDone {
                if let block = try pull(source) {
                    pending = block
                    pendingExcluded += block.excluded
                } else {
                    sourceDone = true
                }
                continue
            }
            // Tags before the window were skipped over (a gap between a run's acquisitions).
            let skip = Self.partition(pending.timestamps, below: from)
            let cut = Self.partition(pending.timestamps, below: to)
            let excluded = takeExcluded(from: from, to: to)
            if cut > skip || !excluded.isEmpty {
                let out = TagBlock(
                    timestamps: Array(pending.timestamps[skip..<cut]), channels: Array(pending.channels[skip..<cut]),
                    excluded: excluded)
                try await deliver(out)
                delivered += out.count
            }
            if cut < pending.count {
                pending = TagBlock(
                    timestamps: Array(pending.timestamps[cut...]), channels: Array(pending.channels[cut...]))
                return delivered
            }
            pending = TagBlock()
            if sourceDone { return delivered }
        }
    }

    private func pull(_ source: any ReplaySource) throws -> TagBlock? {
        let block: TagBlock?
        do { block = try source.next() } catch {
            throw DeviceError(device: name, .invalidResponse, "\(error)")
        }
        guard let block else { return nil }
        if let first = block.timestamps.first, let last = lastTime, first < last {
            throw DeviceError(
                device: name, .invalidResponse,
                "\(path): tag \(tagsDelivered + pending.count) at \(first) ps comes before the previous one (\(last) ps); the recording is not in time order")
        }
        if let t = block.timestamps.last { lastTime = t }
        return block
    }

    /// Lost-data intervals overlapping [from, to), clipped to it; the part after `to` is kept.
    private func takeExcluded(from: Int64, to: Int64) -> [ExcludedInterval] {
        var out: [ExcludedInterval] = []
        var keep: [ExcludedInterval] = []
        for e in pendingExcluded {
            if e.stopPs > from && e.startPs < to {
                out.append(ExcludedInterval(startPs: max(e.startPs, from), stopPs: min(e.stopPs, to), reason: e.reason))
            }
            if e.stopPs > to { keep.append(e) }
        }
        pendingExcluded = keep
        return out
    }

    /// Index of the first timestamp ≥ t (timestamps are sorted).
    static func partition(_ times: [Int64], below t: Int64) -> Int { times.firstIndex(notBelow: t) }

    static func seconds(_ ps: Int64) -> String { String(format: "%.6g", Double(ps) * 1e-12) }

    /// Replay has no hardware to make safe.
    public func enterSafeState() async throws {}

    public func disconnect() async {
        source = nil
        pending = TagBlock()
    }
}

/// Where replayed tags come from: blocks in time order, and the recording's extent.
protocol ReplaySource: AnyObject {
    /// File time the replay starts at.
    var startPs: Int64 { get }
    /// File time the recording ends at, if known (a file source may know only once read).
    var endPs: Int64? { get }
    /// The length the recording's header states, if any.
    var statedLengthPs: Int64? { get }
    func next() throws -> TagBlock?
    /// The recorded acquisition containing `t`, or the next one after it (Herald runs only).
    func acquisition(containingOrAfter t: Int64) -> (startPs: Int64, stopPs: Int64)?
}

/// A PicoQuant or Swabian file, decoded a chunk at a time.
final class PicoQuantSource: ReplaySource {
    let file: TimeTagFile
    let reader: TimeTagReader
    var events = TTTREvents()
    /// T3: tags of the chunk's last sync period, held back because the next chunk may hold
    /// tags of the same period with smaller micro-times.
    var carry = TagBlock()
    let startPs: Int64 = 0
    /// Known once every record is read: the instrument clock's last overflow (the header's
    /// times are in whole ms, and MeasDesc_AcquisitionTime is the time asked for).
    var endPs: Int64? { finished ? reader.clockPs : nil }
    let statedLengthPs: Int64?
    var finished = false

    init(file: TimeTagFile) throws {
        self.file = file
        reader = try TimeTagReader(file)
        statedLengthPs = file.recordedDuration.map { Int64(clampingRounded: $0 * 1e12) }
    }

    func next() throws -> TagBlock? {
        guard try reader.next(into: &events) else {
            finished = true
            guard carry.count > 0 else { return nil }
            defer { carry = TagBlock() }
            return carry
        }
        var block = file.tagBlock(events, markers: true)
        if carry.count > 0 {
            block = TagBlock(
                timestamps: carry.timestamps + block.timestamps, channels: carry.channels + block.channels,
                excluded: block.excluded)
            carry = TagBlock()
        }
        block.sortByTime()
        if file.mode == .t3, let lastSync = events.times.last {
            let threshold = Int64(clampingRounded: Double(lastSync) * file.timeUnitPs)
            let cut = ReplayTimeTagger.partition(block.timestamps, below: threshold)
            carry = TagBlock(timestamps: Array(block.timestamps[cut...]), channels: Array(block.channels[cut...]))
            block = TagBlock(
                timestamps: Array(block.timestamps[..<cut]), channels: Array(block.channels[..<cut]),
                excluded: block.excluded)
        }
        return block
    }

    func acquisition(containingOrAfter t: Int64) -> (startPs: Int64, stopPs: Int64)? { nil }
}

/// A Herald run file: its tags, and the acquisitions they were taken in.
final class HeraldRunSource: ReplaySource {
    let stream: RunTagStream
    let startPs: Int64
    let endPs: Int64?
    var statedLengthPs: Int64? { endPs.map { $0 - startPs } }

    init(stream: RunTagStream) throws {
        self.stream = stream
        startPs = stream.acquisitions.first?.startPs ?? 0
        endPs = stream.acquisitions.last?.stopPs
    }

    func next() throws -> TagBlock? { try stream.next() }

    func acquisition(containingOrAfter t: Int64) -> (startPs: Int64, stopPs: Int64)? {
        stream.acquisitions.first { $0.stopPs > t }
    }
}

/// Plays a recording again and again, each pass shifted by the recording's length, so a
/// short recording stands in for an acquisition of any length (soak tests, memory benchmarks).
final class LoopingSource: ReplaySource {
    let open: () throws -> any ReplaySource
    private var pass: any ReplaySource
    /// Added to every time of the current pass.
    private var offset: Int64 = 0
    private var lastTag: Int64?
    let startPs: Int64
    /// Never ends.
    var endPs: Int64? { nil }
    /// One pass.
    var statedLengthPs: Int64? { pass.statedLengthPs }

    init(open: @escaping () throws -> any ReplaySource) throws {
        self.open = open
        pass = try open()
        startPs = pass.startPs
    }

    func next() throws -> TagBlock? {
        if let block = try pass.next() { return shifted(block) }
        // The pass ended: its length is known now (a file source learns it by reading to the end).
        guard let lastTag else { return nil }  // an empty recording: nothing to loop
        // Shift by the recording's length, and always past the last tag delivered.
        let afterLast = lastTag + 1 - startPs
        offset = pass.endPs.map { max(offset + $0 - startPs, afterLast) } ?? afterLast
        pass = try open()
        return try pass.next().map(shifted)
    }

    private func shifted(_ block: TagBlock) -> TagBlock {
        var out = block
        if offset != 0 {
            let offset = self.offset
            out.timestamps.withUnsafeMutableBufferPointer { ts in
                for i in ts.indices { ts[i] &+= offset }
            }
            out.excluded = block.excluded.map { ExcludedInterval(startPs: $0.startPs + offset, stopPs: $0.stopPs + offset, reason: $0.reason) }
        }
        if let last = out.timestamps.last { lastTag = last }
        return out
    }

    /// A Herald run's acquisitions, pass after pass. A pass ends with its last acquisition
    /// and the next begins with its first, so the two join into one stretch (a recording of
    /// one acquisition becomes one endless acquisition).
    func acquisition(containingOrAfter t: Int64) -> (startPs: Int64, stopPs: Int64)? {
        guard let end = pass.endPs, let first = pass.acquisition(containingOrAfter: .min) else { return nil }
        let length = end - startPs
        // `t` is in the current pass, or already in the next one (not pulled yet).
        var base = offset
        var found = pass.acquisition(containingOrAfter: t - base)
        if found == nil {
            base += length
            found = first
        }
        guard let a = found else { return nil }
        let stop = a.stopPs < end ? a.stopPs + base : first.stopPs == end ? .max : first.stopPs + base + length
        return (a.startPs + base, stop)
    }
}

extension ReplayTimeTagger {
    /// Fast replay needs no wall clock, so a script of mocks and replay runs on virtual time.
    public nonisolated var needsWallClock: Bool { realtime }
    /// A recording read from disk never hangs; a slow block is a slow disk or a busy machine.
    public nonisolated var answersWithoutWaiting: Bool { !realtime }
}
