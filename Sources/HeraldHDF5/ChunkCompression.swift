import CHDF5
import CLibDeflate
import Dispatch
import Foundation

/// Shuffle + deflate, the filter pair stock h5py decodes with no plugin.
public struct DeflateSettings: Sendable, Equatable {
    /// Deflate level 1…9 (zlib's scale; readers need nothing but zlib); 1 is the fast one
    /// instruments need.
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

    /// One chunk, shuffled, then deflated into a zlib stream (what HDF5's deflate filter
    /// writes and inflates). libdeflate rather than zlib: its level 1 is about twice as fast
    /// on whole buffers, at a similar ratio.
    static func compress(
        _ input: UnsafeRawBufferPointer, elementSize: Int, with compressor: OpaquePointer, scratch: inout [UInt8]
    ) -> [UInt8] {
        if scratch.count < input.count { scratch = [UInt8](repeating: 0, count: input.count) }
        scratch.withUnsafeMutableBytes { shuffled in
            if elementSize > 1 {
                shuffle(input, elementSize: elementSize, into: shuffled)
            } else {
                UnsafeMutableRawBufferPointer(rebasing: shuffled[..<input.count]).copyMemory(from: input)
            }
        }
        let bound = libdeflate_zlib_compress_bound(compressor, input.count)
        var out = [UInt8](repeating: 0, count: bound)
        let written = out.withUnsafeMutableBytes { dst in
            scratch.withUnsafeBytes { src in
                libdeflate_zlib_compress(compressor, src.baseAddress, input.count, dst.baseAddress, bound)
            }
        }
        // libdeflate returns 0 only when the output does not fit, which the bound rules out.
        precondition(written > 0, "libdeflate_zlib_compress cannot fail with a bound-sized buffer")
        out.removeSubrange(written...)
        return out
    }

    /// Compresses consecutive chunks of `chunkBytes` each, on all cores. A compressor holds
    /// its own hash tables and is not thread-safe, so each worker allocates one and takes
    /// every `workers`-th chunk.
    static func compressChunks(_ data: UnsafeRawBufferPointer, chunkBytes: Int, elementSize: Int, level: Int32) -> [[UInt8]] {
        let count = data.count / chunkBytes
        let workers = min(count, ProcessInfo.processInfo.activeProcessorCount)
        let results = UnsafeMutableBufferPointer<[UInt8]>.allocate(capacity: count)
        results.initialize(repeating: [])
        defer {
            results.deinitialize()
            results.deallocate()
        }
        // Each worker writes only its own slots of `results`.
        nonisolated(unsafe) let slots = results
        nonisolated(unsafe) let source = data
        DispatchQueue.concurrentPerform(iterations: workers) { w in
            guard let compressor = libdeflate_alloc_compressor(level) else {
                preconditionFailure("libdeflate_alloc_compressor(\(level)) failed: out of memory or a level outside 0…12")
            }
            defer { libdeflate_free_compressor(compressor) }
            var scratch: [UInt8] = []
            for i in stride(from: w, to: count, by: workers) {
                let chunk = UnsafeRawBufferPointer(rebasing: source[(i * chunkBytes)..<((i + 1) * chunkBytes)])
                slots[i] = compress(chunk, elementSize: elementSize, with: compressor, scratch: &scratch)
            }
        }
        return Array(results)
    }
}
