import Foundation
import HeraldCore

/// A time-tag recording on disk: a PicoQuant unified file (.ptu) or a Swabian Time Tagger
/// dump (16 bytes per tag). Records are decoded in chunks, so memory stays constant whatever
/// the file size.
public struct TimeTagFile: Sendable {
    public enum Container: String, Sendable {
        case ptu = "PicoQuant PTU"
        case legacy = "PicoQuant legacy container"
        case swabian = "Swabian Time Tagger dump"
    }

    public let path: String
    public let container: Container
    public let header: PTUHeader?
    public let format: RecordFormat?
    /// Records to decode (from the header for PTU, from the file size for Swabian dumps).
    public let recordCount: Int
    /// Byte offset of the first record.
    public let dataOffset: Int
    public let recordSize: Int
    /// Picoseconds per unit of `TTTREvents.times`: the global resolution (T2) or the sync
    /// period (T3); 1 for Swabian dumps.
    public let timeUnitPs: Double
    /// T3 only: picoseconds per micro-time bin.
    public let microtimeUnitPs: Double?
    /// Notes on oddities that did not stop decoding (extra bytes after the records, say).
    public let warnings: [String]

    public var mode: TTTRMode { format?.mode ?? .t2 }

    /// How long the measurement ran, in s, as the header records it: TTResult_StopAfter (the
    /// time actually measured, which is shorter when it was stopped early), else
    /// MeasDesc_AcquisitionTime (the time asked for). Nil for Swabian dumps.
    /// A value of 0 (PicoHarp software writes `MeasDesc_AcquisitionTime = 0` for open-ended
    /// measurements), or one that is not a finite positive number, counts as absent, so
    /// callers fall back to the photons' span.
    public var recordedDuration: Double? {
        func positive(_ key: String) -> Double? {
            guard let ms = header?[key]?.doubleValue, ms.isFinite, ms > 0, ms < 1e12 else { return nil }
            return ms * 1e-3
        }
        return positive("TTResult_StopAfter") ?? positive("MeasDesc_AcquisitionTime")
    }

    /// Opens a file. Swabian dumps have no magic number: they are recognised by the
    /// extension `.dump` or `.ttdump`, or by `swabian: true`.
    public static func open(_ path: String, swabian: Bool? = nil) throws -> TimeTagFile {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw TTTRFileError(path: path, offset: 0, "cannot open the file (no such file, or not readable)")
        }
        defer { try? handle.close() }
        let size = Int(try handle.seekToEnd())
        let isSwabian = swabian ?? ["dump", "ttdump"].contains((path as NSString).pathExtension.lowercased())
        if isSwabian {
            var warnings: [String] = []
            if size % 16 != 0 {
                warnings.append("the last \(size % 16) bytes are not a whole 16-byte tag and were ignored (truncated file)")
            }
            return TimeTagFile(
                path: path, container: .swabian, header: nil, format: nil, recordCount: size / 16, dataOffset: 0, recordSize: 16,
                timeUnitPs: 1, microtimeUnitPs: nil, warnings: warnings)
        }
        let readHeader: (Int, Int) throws -> [UInt8] = { offset, count in
            guard count > 0 else { return [] }
            try handle.seek(toOffset: UInt64(offset))
            return [UInt8](try handle.read(upToCount: count) ?? Data())
        }
        let header: PTUHeader
        let format: RecordFormat
        func tag(_ name: String) throws -> PTUTag {
            guard let t = header.tags.first(where: { $0.name == name }) else {
                throw TTTRFileError(path: path, offset: header.dataOffset, "the header has no '\(name)' tag, which every TTTR file must have")
            }
            return t
        }
        if let legacy = try LegacyHeader.parse(path: path, read: readHeader) {
            (header, format) = legacy
        } else {
            header = try PTUHeader.parse(path: path, read: readHeader)
            let typeTag = try tag("TTResultFormat_TTTRRecType")
            guard let code = typeTag.value.intValue, let f = RecordFormat(recordType: UInt32(truncatingIfNeeded: code)) else {
                throw TTTRFileError(
                    path: path, offset: typeTag.offset,
                    "record type \(typeTag.value.text) is not a TTTR format in PicoQuant's specification (histogram files are not time-tag data)")
            }
            format = f
        }
        let countTag = try tag("TTResult_NumberOfRecords")
        guard let claimed = countTag.value.intValue, claimed >= 0 else {
            throw TTTRFileError(path: path, offset: countTag.offset, "TTResult_NumberOfRecords is \(countTag.value.text), not a count")
        }
        let available = (size - header.dataOffset) / 4
        guard claimed <= available else {
            throw TTTRFileError(
                path: path, offset: header.dataOffset + available * 4,
                "the header claims \(claimed) records but the file ends after \(available); the file is truncated")
        }
        var warnings: [String] = []
        if available > claimed || (size - header.dataOffset) % 4 != 0 {
            warnings.append("\(size - header.dataOffset - Int(claimed) * 4) bytes after the last record were ignored")
        }
        // Bounds keep every timestamp within Int64 picoseconds: real instruments resolve
        // between about 1 fs (a sub-ps bin) and 1 s (a slow sync period).
        let resolutionTag = header.tags.first { $0.name == "MeasDesc_GlobalResolution" }
        guard let global = resolutionTag?.value.doubleValue, global.isFinite, global >= 1e-15, global <= 1 else {
            throw TTTRFileError(
                path: path, offset: resolutionTag?.offset ?? header.dataOffset,
                "MeasDesc_GlobalResolution is \(resolutionTag?.value.text ?? "missing"); expected a time resolution between 1e-15 s and 1 s")
        }
        var micro: Double?
        if format.mode == .t3 {
            let tag = header.tags.first { $0.name == "MeasDesc_Resolution" }
            guard let r = tag?.value.doubleValue, r.isFinite, r >= 1e-15, r <= 1 else {
                throw TTTRFileError(
                    path: path, offset: tag?.offset ?? header.dataOffset,
                    "a T3 file needs a MeasDesc_Resolution between 1e-15 s and 1 s, got \(tag?.value.text ?? "none")")
            }
            micro = r * 1e12
        }
        return TimeTagFile(
            path: path, container: header.tags.first?.name == "Ident" ? .legacy : .ptu, header: header, format: format, recordCount: Int(claimed), dataOffset: header.dataOffset,
            recordSize: 4, timeUnitPs: global * 1e12, microtimeUnitPs: micro, warnings: warnings)
    }

    /// Decodes every record in order, handing `body` one chunk of events at a time (the
    /// events value is reused between calls). Stops at the first record the specification
    /// does not define, with its byte offset.
    public func decode(chunkRecords: Int = 1 << 16, _ body: (TTTREvents) throws -> Void) throws {
        let reader = try TimeTagReader(self, chunkRecords: chunkRecords)
        var events = TTTREvents()
        while try reader.next(into: &events) { try body(events) }
    }

    /// Photon times in picoseconds (T3: sync count × sync period + micro-time × resolution),
    /// rounded to the nearest picosecond.
    public func picoseconds(_ events: TTTREvents, _ i: Int) -> Int64 {
        var t = Double(events.times[i]) * timeUnitPs
        if let micro = microtimeUnitPs { t += Double(events.dtimes[i]) * micro }
        return Int64(clampingRounded: t)
    }

    /// The events of one chunk as a Herald tag block: channel = file channel + 1 (front-panel
    /// numbering; Swabian channels are kept as they are, falling edges as 100 + n), times in ps.
    ///
    /// With `markers`, the events a replayed instrument would also report are merged in by
    /// time: T2 sync-input events as channel 0 and marker inputs 1–4 as channels 201–204.
    public func tagBlock(_ events: TTTREvents, markers: Bool = false) -> TagBlock {
        let exactUnit = timeUnitPs.rounded() == timeUnitPs && microtimeUnitPs == nil ? Int64(timeUnitPs) : nil
        let times: [Int64] =
            exactUnit.map { u in u == 1 ? events.times : events.times.map { $0 &* u } }
            ?? events.times.indices.map { picoseconds(events, $0) }
        let channels = container == .swabian ? events.channels : events.channels.map { $0 &+ 1 }
        let lost = events.lostIntervals.map { ExcludedInterval(startPs: $0.startPs, stopPs: $0.stopPs, reason: "overflow") }
        var block = TagBlock(timestamps: times, channels: channels, excluded: lost)
        guard markers, !events.markers.isEmpty || !events.syncs.isEmpty else { return block }
        func ps(_ t: Int64) -> Int64 { Int64(clampingRounded: Double(t) * timeUnitPs) }
        var extra: [(Int64, UInt8)] = events.syncs.map { (ps($0), 0) }
        for m in events.markers {
            for bit in 0..<4 where m.bits & (1 << bit) != 0 { extra.append((ps(m.time), UInt8(201 + bit))) }
        }
        block.timestamps += extra.map(\.0)
        block.channels += extra.map(\.1)
        block.sortByTime()
        return block
    }
}

extension TagBlock {
    /// Puts tags in time order, keeping the order of equal times (a stable sort). Cheap when the
    /// block is already sorted, which is the common case.
    public mutating func sortByTime() {
        guard zip(timestamps, timestamps.dropFirst()).contains(where: { $0 > $1 }) else { return }
        let order = timestamps.indices.sorted { (timestamps[$0], $0) < (timestamps[$1], $1) }
        timestamps = order.map { timestamps[$0] }
        channels = order.map { channels[$0] }
    }
}

/// Pulls a file's records one chunk at a time, for consumers that decide when they want more
/// (the replay driver) rather than being handed everything (`TimeTagFile.decode`). Holds the
/// open file and the unwrapping state; memory is one chunk, whatever the file size.
public final class TimeTagReader {
    public let file: TimeTagFile
    private let handle: FileHandle
    private var decoder: RecordDecoder?
    private var swabian = SwabianDecoder()
    private var buffer: [UInt32]
    private let chunkRecords: Int
    /// Records decoded so far.
    public private(set) var recordsRead = 0

    public init(_ file: TimeTagFile, chunkRecords: Int = 1 << 16) throws {
        guard let handle = FileHandle(forReadingAtPath: file.path) else {
            throw TTTRFileError(path: file.path, offset: 0, "cannot open the file (no such file, or not readable)")
        }
        self.file = file
        self.handle = handle
        self.decoder = file.format.map { RecordDecoder(format: $0) }
        self.chunkRecords = max(chunkRecords, 1)
        self.buffer = [UInt32](repeating: 0, count: self.chunkRecords * file.recordSize / 4)
    }

    deinit { try? handle.close() }

    /// How far the instrument's clock had run by the last record read, in ps: the overflow
    /// count (PicoQuant), which keeps running when no photons arrive. Nil for Swabian dumps.
    public var clockPs: Int64? {
        decoder.map { Int64(clampingRounded: Double($0.base) * file.timeUnitPs) }
    }

    /// Replaces `events` with the next chunk's; false once every record has been read.
    public func next(into events: inout TTTREvents) throws -> Bool {
        let path = file.path, recordSize = file.recordSize
        guard recordsRead < file.recordCount else { return false }
        let n = min(file.recordCount - recordsRead, chunkRecords)
        let wanted = n * recordSize
        let firstByte = file.dataOffset + recordsRead * recordSize
        let fd = handle.fileDescriptor
        // pread straight into the aligned word buffer: no intermediate Data, no copy.
        let got = buffer.withUnsafeMutableBytes { raw -> Int in
            guard let base = raw.baseAddress else { return 0 }
            var filled = 0
            while filled < wanted {
                let r = pread(fd, base + filled, wanted - filled, off_t(firstByte + filled))
                if r <= 0 { break }
                filled += r
            }
            return filled
        }
        guard got == wanted else {
            throw TTTRFileError(path: path, offset: firstByte + got, "the file ended early (it shrank while being read)")
        }
        events.removeAll()
        try buffer.withUnsafeBufferPointer { all in
            let words = UnsafeBufferPointer(rebasing: all[0..<(wanted / 4)])
            if decoder != nil {
                decoder?.decode(words, into: &events)
            } else {
                try swabian.decode(words, into: &events, path: path, firstByte: firstByte)
            }
        }
        if let bad = events.firstInvalid {
            throw TTTRFileError(
                path: path, offset: firstByte + bad * recordSize,
                "record 0x\(String(buffer[bad], radix: 16, uppercase: true)) is a special record the \(file.format?.name ?? "") format does not define")
        }
        recordsRead += n
        return true
    }
}

/// The Swabian Time Tagger's 16-byte tag: type (u8), reserved (u8), missed events (u16),
/// channel (i32), time (i64 ps), little-endian. Types: 0 time tag, 1 error, 2 overflow
/// begin, 3 overflow end, 4 missed events.
struct SwabianDecoder {
    var overflowStart: Int64?

    mutating func decode(_ words: UnsafeBufferPointer<UInt32>, into e: inout TTTREvents, path: String, firstByte: Int) throws {
        let tags = words.count / 4
        e.times.reserveCapacity(e.times.count + tags)
        e.channels.reserveCapacity(e.channels.count + tags)
        for k in 0..<tags {
            let w0 = UInt32(littleEndian: words[4 * k])
            let type = w0 & 0xFF
            let missed = Int(w0 >> 16)
            let channel = Int32(bitPattern: UInt32(littleEndian: words[4 * k + 1]))
            let time = Int64(bitPattern: UInt64(UInt32(littleEndian: words[4 * k + 2])) | UInt64(UInt32(littleEndian: words[4 * k + 3])) << 32)
            switch type {
            case 0:
                guard let c = Self.channel(channel) else {
                    throw TTTRFileError(path: path, offset: firstByte + 16 * k + 4, "channel \(channel) is outside ±99")
                }
                e.times.append(time)
                e.channels.append(c)
            case 1:
                throw TTTRFileError(path: path, offset: firstByte + 16 * k, "the tagger recorded an error event at \(time) ps")
            case 2:
                overflowStart = overflowStart ?? time
                e.overflowRecords += 1
            case 3:
                e.lostIntervals.append((overflowStart ?? time, time))
                overflowStart = nil
            case 4:
                e.missedEvents += missed
            default:
                throw TTTRFileError(path: path, offset: firstByte + 16 * k, "unknown tag type \(type) (expected 0–4)")
            }
        }
    }

    /// Rising edges keep their number; falling edges (negative numbers) become 100 + n.
    static func channel(_ c: Int32) -> UInt8? {
        if c >= 0 && c < 100 { return UInt8(c) }
        if c < 0 && c > -100 { return UInt8(100 - c) }
        return nil
    }
}
