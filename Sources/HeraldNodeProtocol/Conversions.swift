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

/// Tags on the wire: each tag a varint of (Δt << 3) | (channel − 1), Δt from the previous tag
/// (the first from `first_ps`); about 3 bytes a tag at 10 M tags/s. Channels above 8 are sent
/// as bytes beside the Δt varints.
public enum TagCodec {
    /// Tags per batch: 64 k tags is about 200 kB on the wire, well under the message cap.
    public static let batchTags = 1 << 16

    /// Throws for tags out of time order: a backwards step would wrap and shift every later tag.
    public static func encode(_ block: TagBlock, from start: Int = 0, count: Int? = nil) throws(NodeProtocolError) -> Herald_Node_V1_TagBatch {
        let end = min(block.count, start + (count ?? block.count))
        var batch = Herald_Node_V1_TagBatch()
        batch.count = Int32(end - start)
        guard end > start else { return batch }
        let wide = block.channels[start..<end].contains { $0 == 0 || $0 > 8 }
        var bytes: [UInt8] = []
        bytes.reserveCapacity((end - start) * 3)
        let first = block.timestamps[start]
        batch.firstPs = first
        var backwards: Int?
        block.timestamps.withUnsafeBufferPointer { ts in
            block.channels.withUnsafeBufferPointer { cs in
                var previous = first
                for i in start..<end {
                    guard ts[i] >= previous, ts[i] &- previous < 1 << 60 else {
                        backwards = i
                        return
                    }
                    let delta = UInt64(ts[i] - previous)
                    previous = ts[i]
                    var v = wide ? delta : (delta << 3) | UInt64(cs[i] &- 1)
                    while v >= 0x80 {
                        bytes.append(UInt8(v & 0x7F) | 0x80)
                        v >>= 7
                    }
                    bytes.append(UInt8(v))
                }
            }
        }
        if let i = backwards { throw NodeProtocolError("tag \(i) is out of time order (\(block.timestamps[i]) ps)") }
        batch.packed = Data(bytes)
        if wide { batch.channels = Data(block.channels[start..<end]) }
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

    /// Decodes a batch, refusing one whose bytes do not hold `count` tags in time order.
    public static func decode(_ batch: Herald_Node_V1_TagBatch) throws(NodeProtocolError) -> TagBlock {
        let n = Int(batch.count)
        guard n >= 0, n <= 4 * batchTags else { throw NodeProtocolError("a batch of \(batch.count) tags") }
        let wide = !batch.channels.isEmpty
        if wide && batch.channels.count != n { throw NodeProtocolError("\(batch.channels.count) channel bytes for \(n) tags") }
        var timestamps = [Int64](), channels = [UInt8]()
        timestamps.reserveCapacity(n)
        channels.reserveCapacity(n)
        let packed = [UInt8](batch.packed)
        var offset = 0
        var t = batch.firstPs
        for i in 0..<n {
            var v: UInt64 = 0, shift: UInt64 = 0
            while true {
                guard offset < packed.count, shift < 64 else { throw NodeProtocolError("tag \(i) of \(n) is cut short or malformed") }
                let b = packed[offset]
                offset += 1
                v |= UInt64(b & 0x7F) << shift
                if b < 0x80 { break }
                shift += 7
            }
            let delta = wide ? v : v >> 3
            guard delta < 1 << 62 else { throw NodeProtocolError("tag \(i): a step of \(delta) ps") }
            let (next, overflow) = t.addingReportingOverflow(Int64(delta))
            guard !overflow else { throw NodeProtocolError("tag \(i): the time overflows") }
            t = next
            timestamps.append(t)
            channels.append(wide ? batch.channels[batch.channels.startIndex + i] : UInt8(v & 7) + 1)
        }
        guard offset == packed.count else { throw NodeProtocolError("\(packed.count - offset) bytes after the last tag") }
        let excluded = batch.excluded.map { ExcludedInterval(startPs: $0.startPs, stopPs: $0.stopPs, reason: $0.reason) }
        return TagBlock(timestamps: timestamps, channels: channels, excluded: excluded)
    }
}
