import Foundation
import HeraldCore
import HeraldNodeProtocol
import SwiftProtobuf
import Testing

/// The node protocol's tag batches: every block decodes to the tags it was made of, the
/// channel table costs the bits its channels need and no more, and a batch that does not hold
/// what it claims is refused with the reason, never decoded into other tags.
@Suite struct TagCodecTests {
    /// `n` tags at a mean spacing of `meanPs` over `channels`, from a fixed seed.
    static func block(_ n: Int, meanPs: Double, channels: [UInt8], seed: UInt64 = 1) -> TagBlock {
        var rng = SeededGenerator(seed: seed)
        var t: Int64 = 1_000
        var ts: [Int64] = [], cs: [UInt8] = []
        for _ in 0..<n {
            t += Int64(rng.exponential(rate: 1 / meanPs).rounded())
            ts.append(t)
            cs.append(channels[Int(rng.next() % UInt64(channels.count))])
        }
        return TagBlock(timestamps: ts, channels: cs, excluded: [ExcludedInterval(startPs: 5, stopPs: 9, reason: "test")])
    }

    static func roundTrip(_ block: TagBlock) throws -> TagBlock {
        var ts: [Int64] = [], cs: [UInt8] = [], excluded: [ExcludedInterval] = []
        for batch in try TagCodec.batches(block) {
            // Through the wire format, as a node sends it.
            let bytes: [UInt8] = try batch.serializedBytes()
            let decoded = try TagCodec.decode(try Herald_Node_V1_TagBatch(serializedBytes: bytes))
            ts += decoded.timestamps
            cs += decoded.channels
            excluded += decoded.excluded
        }
        return TagBlock(timestamps: ts, channels: cs, excluded: excluded)
    }

    @Test(arguments: [[UInt8(3)], [1, 2], [1, 2, 3, 4], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], [0, 17, 200, 255]])
    func everyChannelSetRoundTrips(channels: [UInt8]) throws {
        // More than one batch, with equal timestamps (Δt = 0) among them.
        let block = Self.block(150_000, meanPs: 3, channels: channels)
        let back = try Self.roundTrip(block)
        #expect(back.timestamps == block.timestamps)
        #expect(back.channels == block.channels)
        #expect(back.excluded == block.excluded)
    }

    @Test func stepsOfHoursTravelWithChannelBytes() throws {
        // Nine channels take four index bits; a step of 2⁵⁹ ps shifted by four does not fit
        // 63 bits: the batch goes wide.
        let ts: [Int64] = [0, 10, 20, 30, 40, 50, 60, 70, (1 << 59) + 70]
        let block = TagBlock(timestamps: ts, channels: [1, 2, 3, 4, 5, 6, 7, 8, 9])
        let batch = try TagCodec.encode(block)
        #expect(batch.channelTable.isEmpty && batch.channels.count == 9)
        let back = try TagCodec.decode(batch)
        #expect(back.timestamps == block.timestamps && back.channels == block.channels)
    }

    @Test func fourChannelsAt10MHzCostUnderThreeBytesATag() throws {
        // Mean step 100 ns = 10⁵ ps: Δt << 2 fits three varint bytes (21 bits) unless
        // Δt ≥ 2¹⁹ ps, which an exponential gap exceeds with probability e^(−5.24) ≈ 0.5 %.
        let block = Self.block(1 << 16, meanPs: 1e5, channels: [1, 2, 3, 4])
        let batch = try TagCodec.encode(block)
        let perTag = Double(batch.packed.count) / Double(block.count)
        #expect(perTag < 3.0, "\(perTag) bytes a tag")
        // One channel needs no index bits at all.
        let single = try TagCodec.encode(Self.block(1 << 16, meanPs: 1e5, channels: [2]))
        #expect(single.channelTable == Data([2]))
        #expect(Double(single.packed.count) / 65536 < perTag)
    }

    @Test func tagsOutOfOrderAreRefusedBeforeAnythingIsSent() {
        #expect(throws: NodeProtocolError.self) { try TagCodec.encode(TagBlock(timestamps: [10, 5], channels: [1, 1])) }
    }

    @Test func malformedBatchesAreRefusedWithTheReason() throws {
        let good = try TagCodec.encode(TagBlock(timestamps: [100, 200, 300], channels: [1, 2, 3]))
        func refusal(_ edit: (inout Herald_Node_V1_TagBatch) -> Void) -> String? {
            var b = good
            edit(&b)
            do {
                _ = try TagCodec.decode(b)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(refusal { $0.count = 6 }?.contains("cannot hold") == true)
        #expect(refusal { $0.count = 4 }?.contains("cut short") == true)
        #expect(refusal { $0.count = 2 }?.contains("bytes after the last tag") == true)
        #expect(refusal { $0.channelTable = Data() }?.contains("no channel table") == true)
        #expect(refusal { $0.channelTable = Data([3, 1, 2]) }?.contains("out of order") == true)
        // Three channels take two bits: index 3 is outside the table.
        #expect(refusal { $0.packed = Data([0x03, 0x03, 0x03]) }?.contains("beyond a table") == true)
        #expect(refusal { $0.channels = Data([1, 2, 3]) }?.contains("both") == true)
        #expect(refusal { $0.count = -1 } != nil)
        #expect(refusal { $0.firstPs = .max }?.contains("overflows") == true)
        // Eleven continuation bytes: no varint of 64 bits is that long.
        #expect(refusal { $0.packed = Data(repeating: 0xFF, count: 11) + Data([0, 0]) }?.contains("malformed") == true)
        #expect(refusal { $0.count = 0 }?.contains("no tags") == true)
    }
}
