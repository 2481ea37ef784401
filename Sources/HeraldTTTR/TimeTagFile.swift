import Foundation
import HeraldCore

/// A time-tag recording on disk: a PicoQuant unified file (.ptu) or a Swabian Time Tagger
/// dump (16 bytes per tag). Records are decoded in chunks, so memory stays constant whatever
/// the file size.
public struct TimeTagFile: Sendable {
    public enum Container: String, Sendable {
        case ptu = "PicoQuant PTU"
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
        let header = try PTUHeader.parse(path: path) { offset, count in
            guard count > 0 else { return [] }
            try handle.seek(toOffset: UInt64(offset))
            return [UInt8](try handle.read(upToCount: count) ?? Data())
        }
        func tag(_ name: String) throws -> PTUTag {
            guard let t = header.tags.first(where: { $0.name == name }) else {
                throw TTTRFileError(path: path, offset: header.dataOffset, "the header has no '\(name)' tag, which every TTTR file must have")
            }
            return t
        }
        let typeTag = try tag("TTResultFormat_TTTRRecType")
        guard let code = typeTag.value.intValue, let format = RecordFormat(recordType: UInt32(truncatingIfNeeded: code)) else {
            throw TTTRFileError(
                path: path, offset: typeTag.offset,
                "record type \(typeTag.value.text) is not a TTTR format in PicoQuant's specification (histogram files are not time-tag data)")
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
        guard let global = header["MeasDesc_GlobalResolution"]?.doubleValue, global > 0, global.isFinite else {
            throw TTTRFileError(path: path, offset: header.dataOffset, "MeasDesc_GlobalResolution is missing or not positive")
        }
        var micro: Double?
        if format.mode == .t3 {
            guard let r = header["MeasDesc_Resolution"]?.doubleValue, r > 0, r.isFinite else {
                throw TTTRFileError(path: path, offset: header.dataOffset, "a T3 file needs a positive MeasDesc_Resolution")
            }
            micro = r * 1e12
        }
        return TimeTagFile(
            path: path, container: .ptu, header: header, format: format, recordCount: Int(claimed), dataOffset: header.dataOffset,
            recordSize: 4, timeUnitPs: global * 1e12, microtimeUnitPs: micro, warnings: warnings)
    }

    /// Decodes every record in order, handing `body` one chunk of events at a time (the
    /// events value is reused between calls). Stops at the first record the specification
    /// does not define, with its byte offset.
    public func decode(chunkRecords: Int = 1 << 16, _ body: (TTTREvents) throws -> Void) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else {
            throw TTTRFileError(path: path, offset: 0, "cannot open the file (no such file, or not readable)")
        }
        defer { try? handle.close() }
        var events = TTTREvents()
        var decoder = format.map { RecordDecoder(format: $0) }
        var swabian = SwabianDecoder()
        var done = 0
        let words = max(chunkRecords, 1) * recordSize / 4
        var buffer = [UInt32](repeating: 0, count: words)
        let fd = handle.fileDescriptor
        while done < recordCount {
            let n = min(recordCount - done, max(chunkRecords, 1))
            let wanted = n * recordSize
            // pread straight into the aligned word buffer: no intermediate Data, no copy.
            let got = buffer.withUnsafeMutableBytes { raw -> Int in
                var filled = 0
                while filled < wanted {
                    let r = pread(fd, raw.baseAddress! + filled, wanted - filled, off_t(dataOffset + done * recordSize + filled))
                    if r <= 0 { break }
                    filled += r
                }
                return filled
            }
            guard got == wanted else {
                throw TTTRFileError(
                    path: path, offset: dataOffset + done * recordSize + got, "the file ended early (it shrank while being read)")
            }
            events.removeAll()
            try buffer.withUnsafeBufferPointer { all in
                let words = UnsafeBufferPointer(rebasing: all[0..<(wanted / 4)])
                if var d = decoder {
                    d.decode(words, into: &events)
                    decoder = d
                } else {
                    try swabian.decode(words, into: &events, path: path, firstByte: dataOffset + done * recordSize)
                }
            }
            if let bad = events.firstInvalid {
                throw TTTRFileError(
                    path: path, offset: dataOffset + (done + bad) * recordSize,
                    "record 0x\(String(buffer[bad], radix: 16, uppercase: true)) is a special record the \(format?.name ?? "") format does not define")
            }
            try body(events)
            done += n
        }
    }

    /// Photon times in picoseconds (T3: sync count × sync period + micro-time × resolution),
    /// rounded to the nearest picosecond.
    public func picoseconds(_ events: TTTREvents, _ i: Int) -> Int64 {
        var t = Double(events.times[i]) * timeUnitPs
        if let micro = microtimeUnitPs { t += Double(events.dtimes[i]) * micro }
        return Int64(t.rounded())
    }

    /// The events of one chunk as a Herald tag block: channel = file channel + 1 (front-panel
    /// numbering; Swabian channels are kept as they are, falling edges as 100 + n), times in ps.
    public func tagBlock(_ events: TTTREvents) -> TagBlock {
        let exactUnit = timeUnitPs.rounded() == timeUnitPs && microtimeUnitPs == nil ? Int64(timeUnitPs) : nil
        let times: [Int64] =
            exactUnit.map { u in u == 1 ? events.times : events.times.map { $0 &* u } }
            ?? events.times.indices.map { picoseconds(events, $0) }
        let channels = container == .swabian ? events.channels : events.channels.map { $0 &+ 1 }
        let lost = events.lostIntervals.map { ExcludedInterval(startPs: $0.startPs, stopPs: $0.stopPs, reason: "overflow") }
        return TagBlock(timestamps: times, channels: channels, excluded: lost)
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
