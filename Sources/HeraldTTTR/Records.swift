/// T2 records carry absolute time tags; T3 records carry a sync count and a micro-time.
public enum TTTRMode: String, Sendable {
    case t2 = "T2"
    case t3 = "T3"
}

/// A TTTR record format from PicoQuant's record appendix, identified by the header's
/// `TTResultFormat_TTTRRecType`.
public struct RecordFormat: Sendable, Equatable {
    enum Layout: Sendable, Equatable {
        /// PicoHarp 300: 4-bit channel, 28-bit time (T2) or 12-bit dtime + 16-bit nsync (T3).
        case picoHarp
        /// HydraHarp V1: special bit, 6-bit channel; an overflow record is always one overflow.
        case hydraHarpV1
        /// HydraHarp V2, TimeHarp 260, MultiHarp, PicoHarp 330: as V1, but an overflow record
        /// carries its number of overflows (0 meaning 1).
        case hydraHarpV2
        /// TimeHarp 200 (.t3r): 16-bit time tag, 12-bit data, 2-bit route, valid bit. Invalid
        /// records are an overflow (data bit 11) or markers (data bits 0–2).
        case timeHarp200
    }

    public let recordType: UInt32
    public let name: String
    public let mode: TTTRMode
    let layout: Layout
    /// How far the time tag (T2) or sync count (T3) advances per overflow.
    public let overflowPeriod: Int64

    /// The TimeHarp 200's T3 record (legacy .t3r files, which predate record-type codes). Its
    /// "sync count" is the 100 ns TTTR clock, and its channel the routing input.
    public static let timeHarp200 = RecordFormat(
        recordType: 0, name: "TimeHarp 200 (.t3r)", mode: .t3, layout: .timeHarp200, overflowPeriod: 65_536)

    private init(recordType: UInt32, name: String, mode: TTTRMode, layout: Layout, overflowPeriod: Int64) {
        self.recordType = recordType
        self.name = name
        self.mode = mode
        self.layout = layout
        self.overflowPeriod = overflowPeriod
    }

    /// The format of a record-type code, or nil for codes the specification does not define.
    /// TimeHarp 260 codes occur with version byte 0x00 (PTU files) and 0x01 (the appendix).
    public init?(recordType: UInt32) {
        self.recordType = recordType
        let hardware = recordType & 0xFF, modeByte = (recordType >> 8) & 0xFF
        let format = (recordType >> 16) & 0xFF, version = recordType >> 24
        guard format == 0x01, modeByte == 2 || modeByte == 3 else { return nil }
        mode = modeByte == 2 ? .t2 : .t3
        switch (hardware, version) {
        case (0x03, 0x00):
            name = "PicoHarp 300"
            layout = .picoHarp
            overflowPeriod = mode == .t2 ? 210_698_240 : 65_536
        case (0x04, 0x00):
            name = "HydraHarp 400 (V1)"
            layout = .hydraHarpV1
            overflowPeriod = mode == .t2 ? 33_552_000 : 1024
        case (0x04, 0x01):
            name = "HydraHarp 400 (V2)"
            layout = .hydraHarpV2
            overflowPeriod = mode == .t2 ? 33_554_432 : 1024
        case (0x05, 0x00), (0x05, 0x01):
            name = "TimeHarp 260 N"
            layout = .hydraHarpV2
            overflowPeriod = mode == .t2 ? 33_554_432 : 1024
        case (0x06, 0x00), (0x06, 0x01):
            name = "TimeHarp 260 P"
            layout = .hydraHarpV2
            overflowPeriod = mode == .t2 ? 33_554_432 : 1024
        case (0x07, 0x00):
            name = "MultiHarp / PicoHarp 330"
            layout = .hydraHarpV2
            overflowPeriod = mode == .t2 ? 33_554_432 : 1024
        default:
            return nil
        }
    }
}

/// Decoded events of a run of records. Photons are in `times`/`channels` (and `dtimes` in T3);
/// markers and (T2) sync events, which are rare, are listed apart.
public struct TTTREvents: Sendable {
    /// Unwrapped time tags (T2, in units of the global resolution) or sync counts (T3).
    public var times: [Int64] = []
    /// The record's channel field: 0-based input channel.
    public var channels: [UInt8] = []
    /// T3 only: micro-time since the sync, in units of the resolution.
    public var dtimes: [UInt16] = []
    /// Marker records: unwrapped time (as `times`) and the marker bits.
    public var markers: [(time: Int64, bits: UInt8)] = []
    /// T2 sync records (HydraHarp-style formats): unwrapped times.
    public var syncs: [Int64] = []
    /// Overflow records and the overflows they stand for.
    public var overflowRecords = 0
    public var overflows: Int64 = 0
    /// Index (within the decoded run) of the first record the specification does not define.
    public var firstInvalid: Int?
    /// Swabian only: intervals in which the tagger lost data (overflow begin … end), in ps.
    public var lostIntervals: [(startPs: Int64, stopPs: Int64)] = []
    /// Swabian only: events the tagger reported as missed.
    public var missedEvents = 0

    public init() {}

    mutating func removeAll() {
        times.removeAll(keepingCapacity: true)
        channels.removeAll(keepingCapacity: true)
        dtimes.removeAll(keepingCapacity: true)
        markers.removeAll(keepingCapacity: true)
        syncs.removeAll(keepingCapacity: true)
        overflowRecords = 0
        overflows = 0
        firstInvalid = nil
        lostIntervals.removeAll()
        missedEvents = 0
    }
}

/// Unwraps a stream of 32-bit records; keeps the overflow accumulator between calls, so a
/// file can be decoded in chunks of any size with the same result.
public struct RecordDecoder: Sendable {
    public let format: RecordFormat
    /// Accumulated overflow offset, in time-tag (T2) or sync (T3) units.
    public private(set) var base: Int64 = 0

    public init(format: RecordFormat) { self.format = format }

    /// Decodes little-endian records into `events`, replacing its photon arrays and appending
    /// to its lists of rare records.
    public mutating func decode(_ records: UnsafeBufferPointer<UInt32>, into events: inout TTTREvents) {
        var special = Special()
        let t3 = format.mode == .t3
        var count = 0
        var dtimes: [UInt16] = []
        // Photon arrays are filled through raw buffers: appends cost a capacity check each,
        // and this loop runs at hundreds of millions of records per second.
        events.channels = [UInt8](unsafeUninitializedCapacity: records.count) { channels, channelCount in
            events.times = [Int64](unsafeUninitializedCapacity: records.count) { times, timeCount in
                if t3 {
                    dtimes = [UInt16](unsafeUninitializedCapacity: records.count) { micro, microCount in
                        count = decodeT3(records, times, channels, micro, &special)
                        microCount = count
                    }
                } else {
                    count = decodeT2(records, times, channels, &special)
                }
                timeCount = count
            }
            channelCount = count
        }
        events.dtimes = dtimes
        events.markers += special.markers
        events.syncs += special.syncs
        events.overflowRecords += special.overflowRecords
        events.overflows += special.overflows
        if let bad = special.firstInvalid, events.firstInvalid == nil { events.firstInvalid = bad }
    }

    /// The rare records of one run, collected apart from the photons.
    struct Special {
        var markers: [(time: Int64, bits: UInt8)] = []
        var syncs: [Int64] = []
        var overflowRecords = 0
        var overflows: Int64 = 0
        var firstInvalid: Int?
    }

    private mutating func decodeT2(
        _ r: UnsafeBufferPointer<UInt32>, _ times: UnsafeMutableBufferPointer<Int64>, _ channels: UnsafeMutableBufferPointer<UInt8>,
        _ s: inout Special
    ) -> Int {
        let period = format.overflowPeriod
        var base = self.base
        var n = 0
        if format.layout == .picoHarp {
            // 4-bit channel, 28-bit tag; channel 15 is special: low 4 bits 0 = overflow, else markers.
            for i in 0..<r.count {
                let record = UInt32(littleEndian: r[i])
                let channel = record >> 28
                let tag = Int64(record & 0x0FFF_FFFF)
                if channel != 15 {
                    times[n] = base &+ tag
                    channels[n] = UInt8(truncatingIfNeeded: channel)
                    n &+= 1
                } else if record & 0xF == 0 {
                    base &+= period
                    s.overflowRecords += 1
                    s.overflows += 1
                } else {
                    s.markers.append((base &+ tag, UInt8(record & 0xF)))
                }
            }
        } else {
            // Special bit, 6-bit channel, 25-bit tag. Special channel 63 = overflow (V1: one;
            // later formats: the tag counts them, 0 meaning 1), 0 = sync, 1…15 = markers.
            // Photons and overflows interleave at random in files with sparse light, so a
            // branch between them mispredicts on every switch. Both are handled with masks:
            // every record's tag is stored and the write index advances only for photons.
            // Syncs, markers and invalid records are rare and take a (predictable) branch.
            let v1 = format.layout == .hydraHarpV1
            var overflowRecords: Int64 = 0
            var overflows: Int64 = 0
            // Raw pointers: the buffers hold r.count elements and n never passes i.
            guard let out = times.baseAddress, let chans = channels.baseAddress, let input = r.baseAddress else { return 0 }
            for i in 0..<r.count {
                let record = UInt32(littleEndian: input[i])
                let tag = Int64(record & 0x01FF_FFFF)
                out[n] = base &+ tag
                chans[n] = UInt8(truncatingIfNeeded: (record >> 25) & 0x3F)
                n &+= Int(~record >> 31)
                // 1 for an overflow record (special bit and channel 63), else 0.
                let overflow = Int64(((record >> 25) &+ 1) >> 7)
                let k: Int64 = v1 ? 1 : tag &+ (((tag &- 1) >> 63) & 1)
                let mask = 0 &- overflow
                base &+= (period &* k) & mask
                overflowRecords &+= overflow
                overflows &+= k & mask
                if record >> 31 != 0 && overflow == 0 {
                    let channel = (record >> 25) & 0x3F
                    if channel == 0 {
                        s.syncs.append(base &+ tag)
                    } else if channel <= 15 {
                        s.markers.append((base &+ tag, UInt8(channel)))
                    } else if s.firstInvalid == nil {
                        s.firstInvalid = i
                    }
                }
            }
            s.overflowRecords += Int(overflowRecords)
            s.overflows += overflows
        }
        self.base = base
        return n
    }

    private mutating func decodeT3(
        _ r: UnsafeBufferPointer<UInt32>, _ times: UnsafeMutableBufferPointer<Int64>, _ channels: UnsafeMutableBufferPointer<UInt8>,
        _ dtimes: UnsafeMutableBufferPointer<UInt16>, _ s: inout Special
    ) -> Int {
        let period = format.overflowPeriod
        var base = self.base
        var n = 0
        if format.layout == .timeHarp200 {
            for i in 0..<r.count {
                let record = UInt32(littleEndian: r[i])
                let tag = Int64(record & 0xFFFF)
                let data = UInt16((record >> 16) & 0xFFF)
                if record & 0x4000_0000 != 0 {
                    times[n] = base &+ tag
                    channels[n] = UInt8(truncatingIfNeeded: (record >> 28) & 0x3)
                    dtimes[n] = data
                    n &+= 1
                } else if data & 0x800 != 0 {
                    base &+= period
                    s.overflowRecords += 1
                    s.overflows += 1
                } else {
                    s.markers.append((base &+ tag, UInt8(data & 0x7)))
                }
            }
        } else if format.layout == .picoHarp {
            // 4-bit channel, 12-bit dtime, 16-bit nsync; channel 15: dtime 0 = overflow, else markers.
            for i in 0..<r.count {
                let record = UInt32(littleEndian: r[i])
                let channel = record >> 28
                let dtime = UInt16((record >> 16) & 0xFFF)
                let nsync = Int64(record & 0xFFFF)
                if channel != 15 {
                    times[n] = base &+ nsync
                    channels[n] = UInt8(truncatingIfNeeded: channel)
                    dtimes[n] = dtime
                    n &+= 1
                } else if dtime == 0 {
                    base &+= period
                    s.overflowRecords += 1
                    s.overflows += 1
                } else {
                    s.markers.append((base &+ nsync, UInt8(dtime & 0xF)))
                }
            }
        } else {
            // Special bit, 6-bit channel, 15-bit dtime, 10-bit nsync. Special channel 63 =
            // overflow (V1: one; later: nsync counts them, 0 meaning 1), 1…15 = markers.
            // Branch-free between photons and overflows, as in T2. The overflow lines repeat
            // T2's on purpose: a shared @inline(__always) helper returning a tuple measured
            // 7 % slower (405–410 against 436–447 M records/s).
            let v1 = format.layout == .hydraHarpV1
            var overflowRecords: Int64 = 0
            var overflows: Int64 = 0
            guard let out = times.baseAddress, let chans = channels.baseAddress, let micro = dtimes.baseAddress,
                let input = r.baseAddress
            else { return 0 }
            for i in 0..<r.count {
                let record = UInt32(littleEndian: input[i])
                let nsync = Int64(record & 0x3FF)
                out[n] = base &+ nsync
                chans[n] = UInt8(truncatingIfNeeded: (record >> 25) & 0x3F)
                micro[n] = UInt16(truncatingIfNeeded: (record >> 10) & 0x7FFF)
                n &+= Int(~record >> 31)
                let overflow = Int64(((record >> 25) &+ 1) >> 7)
                let k: Int64 = v1 ? 1 : nsync &+ (((nsync &- 1) >> 63) & 1)
                let mask = 0 &- overflow
                base &+= (period &* k) & mask
                overflowRecords &+= overflow
                overflows &+= k & mask
                if record >> 31 != 0 && overflow == 0 {
                    let channel = (record >> 25) & 0x3F
                    if channel >= 1 && channel <= 15 {
                        s.markers.append((base &+ nsync, UInt8(channel)))
                    } else if s.firstInvalid == nil {
                        s.firstInvalid = i
                    }
                }
            }
            s.overflowRecords += Int(overflowRecords)
            s.overflows += overflows
        }
        self.base = base
        return n
    }
}
