import Foundation
import HeraldCore
import Testing

@testable import HeraldTTTR

/// The shared PicoQuant sample files: $HERALD_SHARED_DATA/picoquant, else ../shared/data beside
/// the repository, else /work/shared/data (where a fresh clone elsewhere finds them).
enum Samples {
    static let root: URL = {
        let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let candidates = [
            ProcessInfo.processInfo.environment["HERALD_SHARED_DATA"].map { URL(fileURLWithPath: $0) },
            repository.deletingLastPathComponent().appendingPathComponent("shared/data"),
            URL(fileURLWithPath: "/work/shared/data"),
        ].compactMap { $0 }.map { $0.appendingPathComponent("picoquant") }
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) } ?? candidates[0]
    }()
    static let ptu = ["hydraharp/v20_t2.ptu", "hydraharp/v20_t3.ptu", "hydraharp/v10_t3.ptu", "picoharp/v30_t2.ptu"]
    static func path(_ name: String) -> String { root.appendingPathComponent(name).path }
}

/// Builds small PTU files byte by byte, so each decoder rule can be tested in isolation.
struct PTUWriter {
    var bytes: [UInt8] = Array("PQTTTR\0\01.0.00\0\0".utf8)

    mutating func le<T: FixedWidthInteger>(_ v: T) { withUnsafeBytes(of: v.littleEndian) { bytes += $0 } }

    mutating func tag(_ name: String, _ type: UInt32, _ value: UInt64, index: Int32 = -1, payload: [UInt8] = []) {
        var ident = Array(name.utf8.prefix(32))
        ident += [UInt8](repeating: 0, count: 32 - ident.count)
        bytes += ident
        le(index)
        le(type)
        le(value)
        bytes += payload
    }

    static func file(recordType: UInt32, records: [UInt32], claimed: Int? = nil, global: Double = 1e-12) -> [UInt8] {
        var w = PTUWriter()
        w.tag("File_Comment", 0x4001_FFFF, 8, payload: Array("hello\0\0\0".utf8))
        w.tag("TTResultFormat_TTTRRecType", 0x1000_0008, UInt64(recordType))
        w.tag("TTResult_NumberOfRecords", 0x1000_0008, UInt64(claimed ?? records.count))
        w.tag("MeasDesc_GlobalResolution", 0x2000_0008, global.bitPattern)
        w.tag("MeasDesc_Resolution", 0x2000_0008, (25e-12).bitPattern)
        w.tag("File_CreatingTime", 0x2100_0008, (45000.5).bitPattern)
        w.tag("Header_End", 0xFFFF_0008, 0)
        for r in records { w.le(r) }
        return w.bytes
    }

    static func save(_ bytes: [UInt8], _ name: String = "t.ptu") throws -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-tttr-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let path = dir.appendingPathComponent(name).path
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        return path
    }
}

/// HydraHarp-style record: special bit, 6-bit channel, 25-bit time tag (T2).
func hhT2(special: Bool = false, channel: UInt32, tag: UInt32) -> UInt32 { (special ? 1 << 31 : 0) | channel << 25 | tag }
/// HydraHarp-style T3 record: special, channel (6), dtime (15), nsync (10).
func hhT3(special: Bool = false, channel: UInt32, dtime: UInt32, nsync: UInt32) -> UInt32 {
    (special ? 1 << 31 : 0) | channel << 25 | dtime << 10 | nsync
}

@Suite struct DecoderTests {
    func events(_ recordType: UInt32, _ records: [UInt32], chunk: Int = 1 << 20) throws -> (TimeTagFile, [TTTREvents]) {
        let file = try TimeTagFile.open(try PTUWriter.save(PTUWriter.file(recordType: recordType, records: records)))
        var all: [TTTREvents] = []
        try file.decode(chunkRecords: chunk) { all.append($0) }
        return (file, all)
    }

    /// HydraHarp V2 (and later) overflow records carry their count; V1 records are one each,
    /// with the V1 period 33 552 000 (PicoQuant's record appendix).
    @Test func hydraHarpT2OverflowsFollowTheVersion() throws {
        let records = [
            hhT2(channel: 2, tag: 100), hhT2(special: true, channel: 63, tag: 3), hhT2(channel: 0, tag: 5),
            hhT2(special: true, channel: 63, tag: 0), hhT2(special: true, channel: 4, tag: 7), hhT2(special: true, channel: 0, tag: 9),
            hhT2(channel: 1, tag: 6),
        ]
        let (v2, e2) = try events(0x0101_0204, records)
        #expect(v2.format?.overflowPeriod == 33_554_432)
        let period: Int64 = 33_554_432
        let expected: [Int64] = [100, 3 * period + 5, 4 * period + 6]
        #expect(e2[0].times == expected)
        #expect(e2[0].channels == [2, 0, 1])
        #expect(e2[0].overflowRecords == 2 && e2[0].overflows == 4)
        #expect(e2[0].markers.map(\.bits) == [4] && e2[0].markers[0].time == 4 * period + 7)
        #expect(e2[0].syncs == [4 * period + 9])
        let (_, e1) = try events(0x0001_0204, records)
        let v1Period: Int64 = 33_552_000
        let v1Expected: [Int64] = [100, v1Period + 5, 2 * v1Period + 6]
        #expect(e1[0].times == v1Expected)
    }

    @Test func hydraHarpT3KeepsSyncCountAndMicrotime() throws {
        let records = [
            hhT3(channel: 1, dtime: 300, nsync: 10), hhT3(special: true, channel: 63, dtime: 0, nsync: 2),
            hhT3(channel: 0, dtime: 7, nsync: 1), hhT3(special: true, channel: 2, dtime: 0, nsync: 5),
        ]
        let (file, e) = try events(0x0101_0304, records)
        #expect(e[0].times == [10, 2048 + 1] && e[0].dtimes == [300, 7] && e[0].channels == [1, 0])
        #expect(e[0].markers.count == 1 && e[0].markers[0].bits == 2 && e[0].markers[0].time == 2048 + 5)
        // Picoseconds: nsync × sync period + dtime × resolution (1 ps and 25 ps here).
        #expect(file.picoseconds(e[0], 1) == 2049 + 7 * 25)
        let (_, v1) = try events(0x0001_0304, records)
        #expect(v1[0].times[1] == 1024 + 1)
    }

    @Test func picoHarpT2AndT3() throws {
        // T2: 4-bit channel, 28-bit tag; channel 15 with low bits 0 is an overflow, else markers.
        let t2: [UInt32] = [1 << 28 | 500, 15 << 28, 2 << 28 | 7, 15 << 28 | 0x20 | 0x3]
        let (f2, e2) = try events(0x0001_0203, t2)
        #expect(e2[0].times == [500, 210_698_240 + 7] && e2[0].channels == [1, 2])
        #expect(e2[0].markers.map(\.bits) == [3])
        #expect(f2.tagBlock(e2[0]).channels == [2, 3])
        // T3: channel 4, dtime 12, nsync 16; overflow when dtime is 0.
        let t3: [UInt32] = [3 << 28 | 100 << 16 | 9, 15 << 28, 0 << 28 | 5 << 16 | 1]
        let (_, e3) = try events(0x0001_0303, t3)
        #expect(e3[0].times == [9, 65_536 + 1] && e3[0].dtimes == [100, 5] && e3[0].channels == [3, 0])
    }

    /// Overflow state carries across chunks: any chunking decodes the same.
    @Test func chunkingDoesNotChangeTheResult() throws {
        let path = Samples.path("hydraharp/v20_t2.ptu")
        let file = try TimeTagFile.open(path)
        let whole = try file.statistics()
        let small = try file.statistics(chunkRecords: 997)
        #expect(whole == small)
        #expect(whole.photons > 0)
    }

    @Test func swabianDumpsDecodeTagsOverflowsAndMissedEvents() throws {
        var bytes: [UInt8] = []
        func tag(_ type: UInt8, missed: UInt16 = 0, channel: Int32, time: Int64) {
            bytes += [type, 0]
            withUnsafeBytes(of: missed.littleEndian) { bytes += $0 }
            withUnsafeBytes(of: channel.littleEndian) { bytes += $0 }
            withUnsafeBytes(of: time.littleEndian) { bytes += $0 }
        }
        tag(0, channel: 1, time: 1000)
        tag(0, channel: -2, time: 1500)
        tag(2, channel: 0, time: 2000)
        tag(4, missed: 17, channel: 1, time: 2500)
        tag(3, channel: 0, time: 3000)
        tag(0, channel: 3, time: 4000)
        let file = try TimeTagFile.open(try PTUWriter.save(bytes, "run.dump"))
        #expect(file.container == .swabian && file.recordCount == 6)
        var blocks: [TagBlock] = []
        try file.decode { blocks.append(file.tagBlock($0)) }
        #expect(blocks[0].timestamps == [1000, 1500, 4000] && blocks[0].channels == [1, 102, 3])
        #expect(blocks[0].excluded == [ExcludedInterval(startPs: 2000, stopPs: 3000, reason: "overflow")])
        let s = try file.statistics()
        #expect(s.missedEvents == 17 && s.overflowRecords == 1 && s.lostIntervals == 1)
    }
}

@Suite struct BadFileTests {
    func failure(_ bytes: [UInt8], _ name: String = "t.ptu") throws -> TTTRFileError {
        let path = try PTUWriter.save(bytes, name)
        do {
            let file = try TimeTagFile.open(path)
            _ = try file.statistics()
        } catch let e as TTTRFileError {
            return e
        }
        Issue.record("no error for a bad file")
        return TTTRFileError(path: "", offset: -1, "")
    }

    @Test func eachProblemNamesItsByteOffset() throws {
        let good = PTUWriter.file(recordType: 0x0101_0204, records: [hhT2(channel: 1, tag: 5), hhT2(channel: 2, tag: 6)])
        var magic = good
        magic[0] = UInt8(ascii: "X")
        #expect(try failure(magic).offset == 0)
        #expect(try failure(magic).message.contains("magic"))

        let truncatedHeader = Array(good.prefix(100))
        let e1 = try failure(truncatedHeader)
        #expect(e1.message.contains("truncated") && e1.offset <= 100)

        let claimsMore = PTUWriter.file(recordType: 0x0101_0204, records: [hhT2(channel: 1, tag: 5)], claimed: 1000)
        let e2 = try failure(claimsMore)
        #expect(e2.message.contains("claims 1000 records") && e2.offset == claimsMore.count)

        // An unknown tag type: the type field of the second entry (16 + 48 + 8 payload + 36).
        var badType = good
        badType[16 + 48 + 8 + 36] = 0x77
        let e3 = try failure(badType)
        #expect(e3.offset == 16 + 48 + 8 + 36 && e3.message.contains("unknown type code"))

        // A string that claims a petabyte must fail before any allocation.
        var absurd = good
        for i in 0..<8 { absurd[16 + 40 + i] = 0xFF }
        absurd[16 + 40 + 7] = 0x03
        let e4 = try failure(absurd)
        #expect(e4.offset == 16 + 40 && e4.message.contains("more than a header can hold"))

        // A special record with channel 20: not defined by the specification.
        let undefined = PTUWriter.file(
            recordType: 0x0101_0204, records: [hhT2(channel: 1, tag: 5), hhT2(special: true, channel: 20, tag: 1)])
        let e5 = try failure(undefined)
        #expect(e5.offset == undefined.count - 4 && e5.message.contains("does not define"))

        let unknownFormat = PTUWriter.file(recordType: 0x0001_0209, records: [])
        #expect(try failure(unknownFormat).message.contains("not a TTTR format"))

        // A Swabian tag of type 9.
        var swabian = [UInt8](repeating: 0, count: 32)
        swabian[16] = 9
        let e6 = try failure(swabian, "x.dump")
        #expect(e6.offset == 16 && e6.message.contains("unknown tag type 9"))
    }

    /// Random corruption of a real file's header and first records: the reader may succeed or
    /// fail, but always with a TTTRFileError, never a crash or a runaway allocation.
    @Test(arguments: ["hydraharp/v20_t3.ptu", "hydraharp/v20.ht3", "timeharp/v50.t3r"])
    func fuzzedHeadersFailCleanly(sample: String) throws {
        let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Samples.path(sample))))
        var rng = SeededGenerator(seed: 8)
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-fuzz-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("f.ptu").path
        var outcomes = (ok: 0, failed: 0)
        let headerSize = try TimeTagFile.open(Samples.path(sample)).dataOffset
        for _ in 0..<300 {
            var bytes = Array(original.prefix(headerSize + 4096))
            for _ in 0..<Int.random(in: 1...8, using: &rng) {
                let at = Int.random(in: 0..<bytes.count, using: &rng)
                bytes[at] = UInt8.random(in: 0...255, using: &rng)
            }
            if Bool.random(using: &rng) { bytes = Array(bytes.prefix(Int.random(in: 0..<bytes.count, using: &rng))) }
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            do {
                let file = try TimeTagFile.open(path)
                _ = try file.statistics(chunkRecords: 256)
                outcomes.ok += 1
            } catch let e as TTTRFileError {
                #expect(e.offset >= 0 && e.offset <= bytes.count, "\(e)")
                outcomes.failed += 1
            }
        }
        #expect(outcomes.failed > 0)
    }
}

/// Legacy containers: the fixed binary headers and the TimeHarp 200 record.
@Suite struct LegacyContainerTests {
    @Test func truncatedLegacyHeadersNameTheMissingField() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-legacy-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        for sample in ["hydraharp/v20.ht3", "timeharp/v50.t3r"] {
            let original = [UInt8](try Data(contentsOf: URL(fileURLWithPath: Samples.path(sample))))
            let headerSize = try TimeTagFile.open(Samples.path(sample)).dataOffset
            let path = dir.appendingPathComponent("cut").path
            for length in stride(from: 22, to: headerSize, by: 13) {
                try Data(original.prefix(length)).write(to: URL(fileURLWithPath: path))
                do {
                    _ = try TimeTagFile.open(path)
                    Issue.record("\(sample) cut at \(length) bytes opened")
                } catch let e as TTTRFileError {
                    #expect(e.offset <= length && e.message.contains("truncated"), "\(e)")
                }
            }
        }
    }

    @Test func legacyFormatsWithoutASampleAreRefusedByName() throws {
        func refusal(_ ident: String, _ version: String) throws -> String {
            var bytes = Array(ident.utf8) + [UInt8](repeating: 0, count: 16 - ident.utf8.count) + Array(version.utf8)
            bytes += [UInt8](repeating: 0, count: 6 - version.utf8.count) + [UInt8](repeating: 0, count: 1000)
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("herald-\(UUID().uuidString).bin").path
            try Data(bytes).write(to: URL(fileURLWithPath: path))
            defer { try? FileManager.default.removeItem(atPath: path) }
            do {
                _ = try TimeTagFile.open(path)
                return "opened"
            } catch let e as TTTRFileError {
                return "byte \(e.offset): \(e.message)"
            }
        }
        // Containers with nothing to check them against are refused by name, saying what to do.
        let multi = try refusal("MultiHarp", "1.0")
        #expect(multi.hasPrefix("byte 0:") && multi.contains("a legacy MultiHarp container") && multi.contains(".ptu"), "\(multi)")
        let oldPico = try refusal("PicoHarp 300", "1.0")
        #expect(oldPico.contains("a legacy PicoHarp 300 container (format 1.0)"), "\(oldPico)")
        // A .pt3 (2.0) is decoded; one that is not in T3 mode is refused at its MeasurementMode.
        let histogram = try refusal("PicoHarp 300", "2.0")
        #expect(histogram.hasPrefix("byte 348:") && histogram.contains("MeasurementMode 0"), "\(histogram)")
    }

    /// Valid photons, an overflow (data bit 11) and a marker record, as PicoQuant's layout says.
    @Test func timeHarp200RecordsUnwrap() throws {
        func photon(tag: UInt32, data: UInt32, route: UInt32) -> UInt32 { 1 << 30 | route << 28 | data << 16 | tag }
        let records: [UInt32] = [
            photon(tag: 10, data: 300, route: 0), 0x800 << 16 | 5, 7 << 16 | 20, photon(tag: 3, data: 4095, route: 2),
        ]
        var decoder = RecordDecoder(format: .timeHarp200)
        var events = TTTREvents()
        records.withUnsafeBufferPointer { decoder.decode($0, into: &events) }
        #expect(events.times == [10, 65_536 + 3])
        #expect(events.channels == [0, 2])
        #expect(events.dtimes == [300, 4095])
        #expect(events.overflowRecords == 1)
        #expect(events.markers.count == 1 && events.markers[0].time == 65_536 + 20 && events.markers[0].bits == 7)
    }
}
