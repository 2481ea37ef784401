import Foundation
import HeraldCore
import Testing

@testable import HeraldTTTR

/// Header numbers that used to crash or mislead: each is refused with its byte offset, or
/// read the way PicoQuant's software meant it.
@Suite struct HeaderBoundsTests {
    @Test(arguments: [1e200, 1e300, 2.0, 0.0, -1e-12, Double.nan, Double.infinity, 1e-16])
    func globalResolutionOutsideAFemtosecondToASecondIsRefused(global: Double) throws {
        let path = try PTUWriter.save(PTUWriter.file(recordType: 0x0101_0204, records: [hhT2(channel: 1, tag: 5)], global: global))
        do {
            _ = try TimeTagFile.open(path)
            Issue.record("a global resolution of \(global) s was accepted")
        } catch let e as TTTRFileError {
            #expect(e.description.contains("MeasDesc_GlobalResolution"), "\(e)")
            // The offset of the tag itself: after the 16-byte preamble, File_Comment (48 bytes and
            // 8 of text) and two 48-byte tags.
            #expect(e.description.contains("\(16 + 56 + 48 + 48)"), "\(e)")
        }
    }

    /// Huge but in-range times clamp instead of trapping on the way to Int64 picoseconds.
    @Test func clampedConversionNeverTraps() {
        #expect(Int64(clampingRounded: 1e300) == .max)
        #expect(Int64(clampingRounded: -1e300) == .min)
        #expect(Int64(clampingRounded: .nan) == 0)
        #expect(Int64(clampingRounded: 9.3e18) == .max)
        #expect(Int64(clampingRounded: 2.5) == 3)
        #expect(Int64(clampingRounded: -2.5) == -3)
    }

    /// `MeasDesc_AcquisitionTime = 0` (an open-ended PicoHarp measurement) is no duration:
    /// callers fall back to the photons' span.
    @Test func zeroAcquisitionTimeIsNoDuration() throws {
        var w = PTUWriter()
        w.tag("TTResultFormat_TTTRRecType", 0x1000_0008, 0x0101_0204)
        w.tag("TTResult_NumberOfRecords", 0x1000_0008, 1)
        w.tag("MeasDesc_GlobalResolution", 0x2000_0008, (1e-12).bitPattern)
        w.tag("MeasDesc_AcquisitionTime", 0x1000_0008, 0)
        w.tag("Header_End", 0xFFFF_0008, 0)
        w.le(hhT2(channel: 1, tag: 5))
        let file = try TimeTagFile.open(try PTUWriter.save(w.bytes))
        #expect(file.recordedDuration == nil)
    }

    /// File_CreatingTime written as a plain float (tyFloat8) in any of the units PicoQuant
    /// software has used: all read as the same day, 2024-03-01.
    @Test(arguments: [
        45352.5,  // days since 1899-12-30
        45352.5 * 86_400,  // seconds since 1899-12-30
        45352.5 + 109_205,  // days since 1601-01-01 (1601 → 1899-12-30 is 109 205 days)
        (45352.5 + 109_205) * 86_400,  // seconds since 1601-01-01
    ])
    func creationTimeAsAPlainFloat(value: Double) throws {
        let date = try #require(PTUValue.float(value).date)
        let f = ISO8601DateFormatter()
        #expect(f.string(from: date).hasPrefix("2024-03-01"), "\(value) read as \(f.string(from: date))")
    }
}
