import Foundation
import HeraldCore
import SwiftProtobuf

// Herald's vocabulary to and from the node protocol's messages. Decoding is strict: a message
// that does not describe a valid value (an unknown dimension, a range with min > max) is an
// error naming what is wrong, never a guess.

/// A node message that does not decode to Herald's vocabulary.
public struct NodeProtocolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension Herald_Node_V1_Value {
    public init(_ value: Value) {
        self.init()
        switch value {
        case .bool(let b): flag = b
        case .quantity(let q): quantity = .with { $0.value = q.value; $0.dimension = q.dimension.rawValue }
        case .text(let s): text = s
        }
    }

    public func decoded() throws(NodeProtocolError) -> Value {
        switch kind {
        case .flag(let b): return .bool(b)
        case .text(let s): return .text(s)
        case .quantity(let q):
            guard let d = PhysicalDimension(rawValue: q.dimension) else { throw NodeProtocolError("unknown dimension '\(q.dimension)'") }
            guard q.value.isFinite else { throw NodeProtocolError("a quantity of \(q.value)") }
            return .quantity(Quantity(q.value, d))
        case nil: throw NodeProtocolError("a value with no kind")
        }
    }
}

extension Herald_Node_V1_PropertySpec {
    public init(_ spec: PropertySpec) {
        self.init()
        name = spec.name
        settable = spec.settable
        summary = spec.summary
        switch spec.type {
        case .bool: type = "bool"
        case .text: type = "text"
        case .choice(let options):
            type = "choice"
            choices = options
        case .quantity(let d):
            type = "quantity"
            dimension = d.rawValue
        }
        if let r = spec.range {
            ranged = true
            min = r.lowerBound
            max = r.upperBound
        }
    }

    public func decoded() throws(NodeProtocolError) -> PropertySpec {
        let t: PropertyType
        switch type {
        case "bool": t = .bool
        case "text": t = .text
        case "choice": t = .choice(choices)
        case "quantity":
            guard let d = PhysicalDimension(rawValue: dimension) else { throw NodeProtocolError("property \(name): unknown dimension '\(dimension)'") }
            t = .quantity(d)
        default: throw NodeProtocolError("property \(name): unknown type '\(type)'")
        }
        var range: ClosedRange<Double>?
        if ranged {
            guard min.isFinite, max.isFinite, min <= max else { throw NodeProtocolError("property \(name): range \(min)...\(max)") }
            range = min...max
        }
        return PropertySpec(name, t, range: range, settable: settable, summary: summary)
    }
}

extension Herald_Node_V1_DriverDescriptor {
    public init(_ d: DriverDescriptor) {
        self.init()
        id = d.id
        version = d.version
        summary = d.summary
        kind = d.kind.rawValue
        properties = d.properties.map(Herald_Node_V1_PropertySpec.init)
        settings = d.settings.map(Herald_Node_V1_PropertySpec.init)
        isMock = d.isMock
        origin = d.origin
        usesHardware = d.usesHardware
    }

    /// The descriptor, with `origin` saying which node serves it.
    public func decoded(node: String) throws(NodeProtocolError) -> DriverDescriptor {
        guard let k = DeviceKind(rawValue: kind) else { throw NodeProtocolError("driver \(id): unknown kind '\(kind)'") }
        var props: [PropertySpec] = []
        for p in properties { props.append(try p.decoded()) }
        var sets: [PropertySpec] = []
        for s in settings { sets.append(try s.decoded()) }
        return DriverDescriptor(
            id: id, version: version, summary: summary, kind: k, properties: props, settings: sets, isMock: isMock,
            usesHardware: usesHardware, origin: "node \(node) (\(origin))")
    }
}

extension Herald_Node_V1_DeviceFailure {
    public init(_ e: DeviceError) {
        self.init()
        kind = e.kind.rawValue
        detail = e.detail
    }

    /// The DeviceError, named by the device as the coordinator knows it.
    public func decoded(device: String, node: String) -> DeviceError {
        DeviceError(device: device, DeviceError.Kind(rawValue: kind) ?? .invalidResponse, "\(detail) (on node \(node))")
    }
}

extension Herald_Node_V1_Interval {
    public init(_ i: AcquisitionInterval) {
        self.init()
        startPs = i.startPs
        stopPs = i.stopPs
        tags = Int64(i.tags)
    }
}

/// Tags on the wire: each tag a varint of (Δt << b) | i, Δt from the previous tag (the first
/// from `first_ps`) and i its channel's index in the batch's table of b bits: 0 bits when one
/// channel is in use, 2 for four. At 10 M tags/s on four channels that is under 3 bytes a tag.
/// A batch with steps of hours, which would not fit the shift, sends its channels as bytes.
public enum TagCodec {
    /// Tags per batch: 64 k tags is about 200 kB on the wire, well under the message cap
    /// (smaller batches cost more in per-message overhead than they save in cache).
    public static let batchTags = 1 << 16

    /// Bits that index a table of `k` channels.
    static func indexBits(_ k: Int) -> Int { k <= 1 ? 0 : Int.bitWidth - (k - 1).leadingZeroBitCount }

    /// Throws for tags out of time order: a backwards step would wrap and shift every later tag.
    public static func encode(_ block: TagBlock, from start: Int = 0, count: Int? = nil) throws(NodeProtocolError) -> Herald_Node_V1_TagBatch {
        let end = min(block.count, start + (count ?? block.count))
        var batch = Herald_Node_V1_TagBatch()
        batch.count = Int32(end - start)
        guard end > start else { return batch }
        let first = block.timestamps[start]
        batch.firstPs = first
        // One pass for the order, the longest step and the channels in use.
        var backwards: Int?
        var longest: Int64 = 0
        var present = [Bool](repeating: false, count: 256)
        block.timestamps.withUnsafeBufferPointer { ts in
            block.channels.withUnsafeBufferPointer { cs in
                var previous = first
                for i in start..<end {
                    let step = ts[i] &- previous
                    guard ts[i] >= previous, step < 1 << 60 else {
                        backwards = i
                        return
                    }
                    longest = max(longest, step)
                    previous = ts[i]
                    present[Int(cs[i])] = true
                }
            }
        }
        if let i = backwards { throw NodeProtocolError("tag \(i) is out of time order (\(block.timestamps[i]) ps)") }
        let table = (0..<256).filter { present[$0] }.map { UInt8($0) }
        let bits = indexBits(table.count)
        // Steps are below 2⁶⁰, so only tables of more than eight channels can make a batch wide.
        let wide = bits > 3 && longest >= Int64(1) << (63 - bits)
        var index = [UInt8](repeating: 0, count: 256)
        for (i, c) in table.enumerated() { index[Int(c)] = UInt8(i) }
        // Written once into a buffer of the worst case (ten bytes a tag), then copied to its size:
        // faster here than measuring first.
        let n = end - start
        let bytes = [UInt8](unsafeUninitializedCapacity: n * 10) { out, written in
            var o = 0
            block.timestamps.withUnsafeBufferPointer { ts in
                block.channels.withUnsafeBufferPointer { cs in
                    index.withUnsafeBufferPointer { index in
                        var previous = first
                        for i in start..<end {
                            let delta = UInt64(ts[i] &- previous)
                            previous = ts[i]
                            var v = wide ? delta : (delta << bits) | UInt64(index[Int(cs[i])])
                            while v >= 0x80 {
                                out[o] = UInt8(truncatingIfNeeded: v) | 0x80
                                o += 1
                                v >>= 7
                            }
                            out[o] = UInt8(v)
                            o += 1
                        }
                    }
                }
            }
            written = o
        }
        batch.packed = Data(bytes)
        if wide { batch.channels = Data(block.channels[start..<end]) } else { batch.channelTable = Data(table) }
        return batch
    }

    /// A block as the batches that carry it, the first with its lost intervals (one empty batch
    /// for an empty block, so the intervals still travel).
    public static func batches(_ block: TagBlock) throws(NodeProtocolError) -> [Herald_Node_V1_TagBatch] {
        var out: [Herald_Node_V1_TagBatch] = []
        var start = 0
        repeat {
            var batch = try encode(block, from: start, count: batchTags)
            if start == 0 {
                batch.excluded = block.excluded.map { e in .with { $0.startPs = e.startPs; $0.stopPs = e.stopPs; $0.reason = e.reason } }
            }
            out.append(batch)
            start += batchTags
        } while start < block.count
        return out
    }

    /// Decodes a batch, refusing one whose bytes do not hold `count` tags in time order, or
    /// whose channel indices fall outside its table.
    public static func decode(_ batch: Herald_Node_V1_TagBatch) throws(NodeProtocolError) -> TagBlock {
        let n = Int(batch.count)
        guard n >= 0, n <= 4 * batchTags else { throw NodeProtocolError("a batch of \(batch.count) tags") }
        let excluded = batch.excluded.map { ExcludedInterval(startPs: $0.startPs, stopPs: $0.stopPs, reason: $0.reason) }
        if n == 0 {
            guard batch.packed.isEmpty else { throw NodeProtocolError("\(batch.packed.count) bytes in a batch of no tags") }
            return TagBlock(timestamps: [], channels: [], excluded: excluded)
        }
        // Every tag takes at least a byte: a batch claiming more tags than it has bytes is refused
        // before anything is allocated for them.
        guard batch.packed.count >= n else { throw NodeProtocolError("\(batch.packed.count) bytes cannot hold \(n) tags") }
        let wide = !batch.channels.isEmpty
        let table = [UInt8](batch.channelTable)
        let wideChannels = [UInt8](batch.channels)
        if wide {
            guard wideChannels.count == n else { throw NodeProtocolError("\(wideChannels.count) channel bytes for \(n) tags") }
            guard table.isEmpty else { throw NodeProtocolError("a batch with both a channel table and channel bytes") }
        } else {
            guard !table.isEmpty else { throw NodeProtocolError("a batch of \(n) tags with no channel table") }
            guard zip(table, table.dropFirst()).allSatisfy({ $0 < $1 }) else { throw NodeProtocolError("a channel table out of order") }
        }
        let bits = UInt64(indexBits(table.count))
        let mask = (UInt64(1) << bits) - 1
        var problem: String?
        var consumed = 0
        // Written in place (no zero fill first); a batch that fails leaves both arrays empty.
        var channels: [UInt8] = []
        let timestamps = [Int64](unsafeUninitializedCapacity: n) { ts, tsCount in
            channels = [UInt8](unsafeUninitializedCapacity: n) { cs, csCount in
                batch.packed.withUnsafeBytes { packed in
                    var offset = 0
                    var t = batch.firstPs
                    for i in 0..<n {
                        var v: UInt64
                        // Most tags are three bytes or fewer: read those without a loop.
                        if offset + 3 <= packed.count, packed[offset] < 0x80 {
                            v = UInt64(packed[offset])
                            offset += 1
                        } else if offset + 3 <= packed.count, packed[offset + 1] < 0x80 {
                            v = UInt64(packed[offset] & 0x7F) | UInt64(packed[offset + 1]) << 7
                            offset += 2
                        } else if offset + 3 <= packed.count, packed[offset + 2] < 0x80 {
                            v = UInt64(packed[offset] & 0x7F) | UInt64(packed[offset + 1] & 0x7F) << 7 | UInt64(packed[offset + 2]) << 14
                            offset += 3
                        } else {
                            v = 0
                            var shift: UInt64 = 0
                            while true {
                                // A tenth byte may carry only the 64th bit: more would be silently lost.
                                guard offset < packed.count, shift < 63 || (shift == 63 && packed[offset] <= 1) else {
                                    problem = "tag \(i) of \(n) is cut short or malformed"
                                    return
                                }
                                let b = packed[offset]
                                offset += 1
                                v |= UInt64(b & 0x7F) << shift
                                if b < 0x80 { break }
                                shift += 7
                            }
                        }
                        let delta = wide ? v : v >> bits
                        let slot = Int(v & mask)
                        guard wide || slot < table.count else {
                            problem = "tag \(i): channel index \(slot) beyond a table of \(table.count)"
                            return
                        }
                        guard delta < 1 << 62 else {
                            problem = "tag \(i): a step of \(delta) ps"
                            return
                        }
                        let (next, overflow) = t.addingReportingOverflow(Int64(delta))
                        guard !overflow else {
                            problem = "tag \(i): the time overflows"
                            return
                        }
                        t = next
                        ts[i] = t
                        cs[i] = wide ? wideChannels[i] : table[slot]
                    }
                    consumed = offset
                }
                csCount = problem == nil ? n : 0
            }
            tsCount = problem == nil ? n : 0
        }
        if let problem { throw NodeProtocolError(problem) }
        guard consumed == batch.packed.count else { throw NodeProtocolError("\(batch.packed.count - consumed) bytes after the last tag") }
        return TagBlock(timestamps: timestamps, channels: channels, excluded: excluded)
    }
}
