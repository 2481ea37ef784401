import CHDF5
import CZlib
import Dispatch

/// Shuffle + deflate, the filter pair stock h5py decodes with no plugin.
public struct DeflateSettings: Sendable, Equatable {
    /// zlib level 1…9; 1 is the fast one instruments need.
    public var level: Int32
    public init(level: Int32 = 1) { self.level = level }
}

/// Compresses whole chunks exactly as HDF5's shuffle and deflate filters would, so they can be
/// written with H5Dwrite_chunk and read back through the normal filter pipeline.
enum ChunkCodec {
    /// HDF5's shuffle: byte k of every element together, for k = 0…size−1.
    static func shuffle(_ input: UnsafeRawBufferPointer, elementSize: Int, into out: UnsafeMutableRawBufferPointer) {
        let n = input.count / elementSize
        guard let src = input.baseAddress, let dst = out.baseAddress else { return }
        if elementSize == 8 {
            // Hot loop: one unaligned 8-byte load per element, its bytes scattered to 8 planes.
            for i in 0..<n {
                let v = UInt64(littleEndian: src.loadUnaligned(fromByteOffset: i &* 8, as: UInt64.self))
                for k in 0..<8 { dst.storeBytes(of: UInt8(truncatingIfNeeded: v &>> UInt64(k &* 8)), toByteOffset: k &* n &+ i, as: UInt8.self) }
            }
            return
        }
        for k in 0..<elementSize {
            for i in 0..<n { dst.storeBytes(of: src.load(fromByteOffset: i * elementSize + k, as: UInt8.self), toByteOffset: k * n + i, as: UInt8.self) }
        }
    }

    static func compress(_ input: UnsafeRawBufferPointer, elementSize: Int, level: Int32) -> [UInt8] {
        var shuffled = [UInt8](repeating: 0, count: input.count)
        if elementSize > 1 {
            shuffled.withUnsafeMutableBytes { shuffle(input, elementSize: elementSize, into: $0) }
        } else {
            shuffled.withUnsafeMutableBytes { $0.copyMemory(from: input) }
        }
        var bound = compressBound(uLong(input.count))
        var out = [UInt8](repeating: 0, count: Int(bound))
        let status = out.withUnsafeMutableBufferPointer { dst in
            shuffled.withUnsafeBufferPointer { src in
                compress2(dst.baseAddress, &bound, src.baseAddress, uLong(src.count), level)
            }
        }
        precondition(status == Z_OK, "zlib compress2 cannot fail with a compressBound-sized buffer")
        out.removeSubrange(Int(bound)...)
        return out
    }

    /// Compresses `chunks` consecutive chunks of `chunkBytes` each, on all cores.
    static func compressChunks(_ data: UnsafeRawBufferPointer, chunkBytes: Int, elementSize: Int, level: Int32) -> [[UInt8]] {
        let count = data.count / chunkBytes
        let results = UnsafeMutableBufferPointer<[UInt8]>.allocate(capacity: count)
        results.initialize(repeating: [])
        defer { results.deallocate() }
        // Each iteration writes only its own slot of `results`.
        nonisolated(unsafe) let slots = results
        nonisolated(unsafe) let source = data
        DispatchQueue.concurrentPerform(iterations: count) { i in
            let chunk = UnsafeRawBufferPointer(rebasing: source[(i * chunkBytes)..<((i + 1) * chunkBytes)])
            slots[i] = compress(chunk, elementSize: elementSize, level: level)
        }
        return Array(results)
    }
}
