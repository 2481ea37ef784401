#if canImport(Glibc)
    import Glibc
#endif

/// Large buffers written once, backed by 2 MiB pages where the kernel allows it (transparent
/// huge pages in `madvise` mode, Debian's default): filling a fresh gigabyte otherwise faults
/// in a quarter of a million 4 KiB pages, a quarter of a 10⁸-tag merge's time.
enum HugePages {
    /// Advises the 2 MiB-aligned interior of a buffer not yet touched; small buffers and other
    /// systems are left alone. Only advice: the buffer is correct either way.
    static func advise<T>(_ buffer: UnsafeMutableBufferPointer<T>) {
        #if os(Linux)
            let bytes = buffer.count * MemoryLayout<T>.stride
            guard let base = buffer.baseAddress, bytes >= 8 << 20 else { return }
            let huge: UInt = 2 << 20
            let address = UInt(bitPattern: base)
            let start = (address + huge - 1) & ~(huge - 1), end = (address + UInt(bytes)) & ~(huge - 1)
            guard end > start, let p = UnsafeMutableRawPointer(bitPattern: start) else { return }
            _ = madvise(p, Int(end - start), MADV_HUGEPAGE)
        #endif
    }
}
