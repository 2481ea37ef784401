import HeraldCore
import HeraldUSBProtocols
import S15TDC1
import Testing

/// The byte-level parts of the USB protocols, without a device: the TDC1 word decoder (the
/// streaming hot loop), FTDI packet stripping and baud divisors.
@Suite struct USBProtocolTests {
    static func words(_ values: [UInt32]) -> [UInt8] {
        values.flatMap { v in [UInt8(v & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v >> 16 & 0xFF), UInt8(v >> 24)] }
    }

    static func decode(_ bytes: [UInt8], chunks: [Int], stopPs: Int64 = .max, offset: Int64 = 0) -> ([TagBlock], Bool, TDC1Decoder.Problem?) {
        var d = TDC1Decoder(offsetPs: offset, stopPs: stopPs)
        var blocks: [TagBlock] = []
        var start = 0
        for n in chunks + [bytes.count] {
            let end = min(bytes.count, start + n)
            let (b, done, problem) = bytes[start..<end].withUnsafeBytes { d.decode($0) }
            blocks.append(b)
            if done || problem != nil { return (blocks, done, problem) }
            start = end
            if start >= bytes.count { break }
        }
        return (blocks, false, nil)
    }

    @Test("TDC1 words: 2 ns units, wrap every 2^27 units, patterns split per channel, words split across transfers")
    func tdc1Decoding() {
        let period: UInt32 = 1 << 27
        let stream = Self.words([
            (10 << 5) | 0b0001,  // channel 1 at 20 ns
            (11 << 5) | 0b0101,  // channels 1 and 3 together at 22 ns
            ((period - 1) << 5) | 0x10,  // idle word just before the wrap
            (5 << 5) | 0b1000,  // channel 4 after the wrap
        ])
        // Cut inside the second and fourth words: the decoder carries partial words.
        let (blocks, done, problem) = Self.decode(stream, chunks: [6, 7], offset: 1_000_000)
        #expect(problem == nil && !done)
        let ts = blocks.flatMap(\.timestamps), ch = blocks.flatMap(\.channels)
        #expect(ch == [1, 1, 3, 4])
        let afterWrap: Int64 = 1_000_000 + (Int64(period) + 5) * 2000
        let expected: [Int64] = [1_020_000, 1_022_000, 1_022_000, afterWrap]
        #expect(ts == expected)
    }

    @Test("TDC1 stream: stops at the gate, and time running backwards is garbage at its byte offset")
    func tdc1GateAndGarbage() {
        let gate = Self.words([(100 << 5) | 1, (600 << 5) | 2])
        let (blocks, done, _) = Self.decode(gate, chunks: [], stopPs: 1_000_000)  // 1 µs = 500 units
        #expect(done && blocks.flatMap(\.channels) == [1])
        let garbage = Self.words([(5000 << 5) | 1, (4000 << 5) | 1])
        let (_, _, problem) = Self.decode(garbage, chunks: [])
        #expect(problem?.offset == 4, "the second word, at byte 4")
        let empty = Self.words([(7 << 5) | 0])
        #expect(Self.decode(empty, chunks: []).2?.message.contains("no channel") == true)
    }

    @Test("FTDI: two status bytes stripped from every packet; line errors reported at their offset")
    func ftdiPackets() throws {
        // Packets of 8 bytes: status, status, then 6 data bytes (the last packet shorter).
        let raw: [UInt8] = [0x01, 0x60] + Array("0PO000".utf8) + [0x01, 0x60] + Array("00000\r".utf8) + [0x01, 0x60, 0x0A]
        let data = try FTDISerial.strip(raw, maxPacket: 8, device: "test")
        #expect(String(decoding: data, as: UTF8.self) == "0PO00000000\r\n")
        #expect(throws: ProtocolError.self) { try FTDISerial.strip([0x01, 0x62, 0x41], maxPacket: 64, device: "test") }
    }

    @Test("FTDI baud divisors follow AN232B-05 (9600 Bd is 0x4138)")
    func baudDivisors() {
        #expect(FTDISerial.baudDivisor(9600).value == 0x4138)
        #expect(FTDISerial.baudDivisor(115_200).value == 0x001A)
        #expect(FTDISerial.baudDivisor(3_000_000).value == 0)
        #expect(abs(FTDISerial.baudDivisor(9600).actual - 9600) < 1)
    }

    @Test("SCPI error-queue entries parse; anything else is not one")
    func scpiErrors() {
        #expect(SCPIError(parsing: "-113,\"Undefined header\"") == SCPIError(parsing: "-113, \"Undefined header\"\n"))
        #expect(SCPIError(parsing: "+0,\"No error\"")?.code == 0)
        #expect(SCPIError(parsing: "garbage") == nil)
    }
}
