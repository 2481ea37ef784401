import CHDF5
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An HDF5 call that failed, with the object it was acting on.
public struct HDF5Error: Error, CustomStringConvertible, Sendable {
    public var operation: String
    public var object: String
    /// What libhdf5's error stack said, innermost first (empty when it said nothing).
    public var detail: String

    public init(operation: String, object: String, detail: String = "") {
        self.operation = operation
        self.object = object
        self.detail = detail
    }

    /// A libhdf5 call that failed, with the calling thread's error stack: only right after
    /// that call (the stack is the last failed call's, so a check of Herald's own would
    /// otherwise carry a stale one).
    static func libraryFailure(_ operation: String, _ object: String) -> HDF5Error {
        var buffer = [CChar](repeating: 0, count: 1000)
        herald_h5e_describe(&buffer)
        return HDF5Error(operation: operation, object: object, detail: String(cString: buffer))
    }

    public var description: String { "HDF5 \(operation) failed for '\(object)'" + (detail.isEmpty ? "" : " (\(detail))") }
}

@inline(__always)
func check(_ status: herr_t, _ operation: String, _ object: String) throws {
    if status < 0 { throw HDF5Error.libraryFailure(operation, object) }
}

@inline(__always)
func checkID(_ id: hid_t, _ operation: String, _ object: String) throws -> hid_t {
    if id < 0 { throw HDF5Error.libraryFailure(operation, object) }
    return id
}

/// Element types that map to a native HDF5 type.
public protocol HDF5Scalar: Numeric {
    static var nativeType: hid_t { get }
}

extension Int64: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_int64() } }
extension UInt64: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_uint64() } }
extension Int32: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_int32() } }
extension UInt32: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_uint32() } }
extension UInt16: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_uint16() } }
extension UInt8: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_uint8() } }
extension Int8: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_int8() } }
extension Double: HDF5Scalar { public static var nativeType: hid_t { herald_h5t_native_double() } }

/// Owns one HDF5 identifier and closes it exactly once, on `close()` or deinit.
final class Handle {
    private(set) var id: hid_t
    private let closer: (hid_t) -> herr_t

    init(_ id: hid_t, closer: @escaping (hid_t) -> herr_t) {
        self.id = id
        self.closer = closer
    }

    func close() {
        if id >= 0 { _ = closer(id) }
        id = -1
    }

    /// Forgets the identifier without closing it (see ``H5Location/abandon()``).
    func abandon() { id = -1 }

    deinit { close() }
}

/// Shared behaviour of files, groups and datasets: attributes and a name for errors.
public class H5Location {
    let handle: Handle
    public let path: String

    init(handle: Handle, path: String) {
        self.handle = handle
        self.path = path
    }

    var id: hid_t { handle.id }

    /// Writes (or replaces) a UTF-8 variable-length string attribute; h5py reads it as `str`.
    ///
    /// Each one is also kept, as `name=value`, in the fixed-length array attribute
    /// ``textMirror``, which is what Herald itself reads back: variable-length data lives in
    /// HDF5's global heap, and libhdf5 1.10 crashes or hangs on a damaged heap reference
    /// instead of failing. Users keep `str` attributes in h5py.
    public func setAttribute(_ name: String, _ value: String) throws {
        let type = try StringType.variableUTF8()
        try replaceScalarAttribute(name, type: type.id) { attr in
            try value.withCString { cstr in
                var pointer: UnsafePointer<CChar>? = cstr
                try check(H5Awrite(attr, type.id, &pointer), "H5Awrite", "\(path)@\(name)")
            }
        }
        var entries = try mirroredStrings() ?? []
        entries.removeAll { $0.hasPrefix(name + "=") }
        entries.append(name + "=" + value)
        try setAttribute(Self.textMirror, fixedArray: entries)
    }

    /// The attribute holding Herald's fixed-length copy of every string attribute it wrote.
    public static let textMirror = "herald_text_attributes"

    /// Writes (or replaces) a 1-D fixed-length UTF-8 string array attribute.
    func setAttribute(_ name: String, fixedArray values: [String]) throws {
        let (width, buffer) = FixedStrings.pack(values)
        let type = try StringType.fixed(width, utf8: true)
        let space = try dataspace([hsize_t(values.count)], name)
        defer { H5Sclose(space) }
        try deleteAttributeIfPresent(name)
        let attr = try checkID(
            H5Acreate2(id, name, type.id, space, herald_h5p_default(), herald_h5p_default()), "H5Acreate2", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        try check(H5Awrite(attr, type.id, buffer), "H5Awrite", "\(path)@\(name)")
    }

    /// Writes (or replaces) a fixed-length byte-string attribute (h5py reads `bytes`);
    /// PyTables reads these, so Photon-HDF5's TITLE attributes use them.
    public func setAttribute(_ name: String, fixed value: String) throws {
        let bytes = Array(value.utf8)
        let type = try StringType.fixed(bytes.count)
        try replaceScalarAttribute(name, type: type.id) { attr in
            try check(H5Awrite(attr, type.id, bytes.isEmpty ? [UInt8(0)] : bytes), "H5Awrite", "\(path)@\(name)")
        }
    }

    /// Creates scalar attribute `name` of `type` (replacing any old one) and hands it to `write`.
    private func replaceScalarAttribute(_ name: String, type: hid_t, _ write: (hid_t) throws -> Void) throws {
        let space = try checkID(H5Screate(H5S_SCALAR), "H5Screate", name)
        defer { H5Sclose(space) }
        try deleteAttributeIfPresent(name)
        let attr = try checkID(
            H5Acreate2(id, name, type, space, herald_h5p_default(), herald_h5p_default()), "H5Acreate2", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        try write(attr)
    }

    /// Writes (or replaces) a numeric scalar attribute.
    public func setAttribute<T: HDF5Scalar>(_ name: String, _ value: T) throws {
        try setAttribute(name, [value], shape: [])
    }

    /// Writes (or replaces) a numeric array attribute; an empty shape means scalar.
    public func setAttribute<T: HDF5Scalar>(_ name: String, _ values: [T], shape: [Int]? = nil) throws {
        let dims = (shape ?? [values.count]).map { hsize_t($0) }
        let space = try dataspace(dims, name)
        defer { H5Sclose(space) }
        try deleteAttributeIfPresent(name)
        let attr = try checkID(
            H5Acreate2(id, name, T.nativeType, space, herald_h5p_default(), herald_h5p_default()), "H5Acreate2",
            "\(path)@\(name)")
        defer { H5Aclose(attr) }
        try values.withUnsafeBufferPointer { buf in
            try check(H5Awrite(attr, T.nativeType, buf.baseAddress), "H5Awrite", "\(path)@\(name)")
        }
    }

    private func deleteAttributeIfPresent(_ name: String) throws {
        if H5Aexists(id, name) > 0 { try check(H5Adelete(id, name), "H5Adelete", "\(path)@\(name)") }
    }

    /// Drops this handle without closing it. After a failed write (disk full) HDF5's caches
    /// hold entries it can no longer write, and closing them can crash inside libhdf5; the
    /// file on disk is still consistent as of its last successful SWMR flush, which
    /// `herald recover` restores. The process must then exit without HDF5's atexit cleanup
    /// touching the identifier (the wrapper disables it, see `herald_h5_init`).
    public func abandon() { handle.abandon() }

    func childPath(_ name: String) -> String { path == "/" ? "/" + name : path + "/" + name }
}

func dataspace(_ dims: [hsize_t], _ name: String, max: [hsize_t]? = nil) throws -> hid_t {
    if dims.isEmpty { return try checkID(H5Screate(H5S_SCALAR), "H5Screate", name) }
    var d = dims
    if var m = max {
        return try checkID(H5Screate_simple(Int32(d.count), &d, &m), "H5Screate_simple", name)
    }
    return try checkID(H5Screate_simple(Int32(d.count), &d, nil), "H5Screate_simple", name)
}

/// A group: creates children (groups and datasets).
public class H5Group: H5Location {
    /// Opens the child group `name`, creating it if needed.
    public func group(_ name: String) throws -> H5Group {
        let full = childPath(name)
        let gid: hid_t
        if HDF5ReadWatchdog.watched("H5Lexists", full, { H5Lexists(id, name, herald_h5p_default()) }) > 0 {
            gid = try checkID(HDF5ReadWatchdog.watched("H5Gopen2", full) { H5Gopen2(id, name, herald_h5p_default()) }, "H5Gopen2", full)
        } else {
            gid = try checkID(
                H5Gcreate2(id, name, herald_h5p_default(), try CompactStorage.groupCreation(), herald_h5p_default()),
                "H5Gcreate2", full)
        }
        return H5Group(handle: Handle(gid, closer: H5Gclose), path: full)
    }

    public func contains(_ name: String) -> Bool {
        HDF5ReadWatchdog.watched("H5Lexists", "\(path)/\(name)") { H5Lexists(id, name, herald_h5p_default()) } > 0
    }

    /// Writes a whole numeric array as a contiguous dataset with the given shape.
    @discardableResult
    public func write<T: HDF5Scalar>(_ name: String, _ values: [T], shape: [Int]? = nil) throws -> H5Dataset {
        let dims = (shape ?? [values.count]).map { hsize_t($0) }
        let full = childPath(name)
        let space = try dataspace(dims, full)
        defer { H5Sclose(space) }
        let did = try checkID(
            H5Dcreate2(
                id, name, T.nativeType, space, herald_h5p_default(), herald_h5p_default(), herald_h5p_default()),
            "H5Dcreate2", full)
        let ds = H5Dataset(handle: Handle(did, closer: H5Dclose), path: full)
        if !values.isEmpty {
            try values.withUnsafeBufferPointer { buf in
                try check(
                    H5Dwrite(did, T.nativeType, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buf.baseAddress),
                    "H5Dwrite", full)
            }
        }
        return ds
    }

    /// Writes a numeric scalar dataset.
    @discardableResult
    public func write<T: HDF5Scalar>(_ name: String, scalar value: T) throws -> H5Dataset {
        try write(name, [value], shape: [])
    }

    /// Writes a scalar variable-length UTF-8 string dataset (h5py: `.asstr()[()]`).
    @discardableResult
    public func write(_ name: String, string value: String) throws -> H5Dataset {
        try write(name, strings: [value], shape: [])
    }

    /// Writes a scalar fixed-length byte string (numpy `S<n>`; h5py returns `bytes`).
    @discardableResult
    public func write(_ name: String, fixedString value: String) throws -> H5Dataset {
        let bytes = Array(value.utf8)
        let type = try StringType.fixed(bytes.count)
        let full = childPath(name)
        let space = try dataspace([], full)
        defer { H5Sclose(space) }
        let did = try checkID(
            H5Dcreate2(id, name, type.id, space, herald_h5p_default(), herald_h5p_default(), herald_h5p_default()),
            "H5Dcreate2", full)
        let ds = H5Dataset(handle: Handle(did, closer: H5Dclose), path: full)
        let padded = bytes.isEmpty ? [UInt8(0)] : bytes
        try check(H5Dwrite(did, type.id, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), padded), "H5Dwrite", full)
        return ds
    }

    /// Writes an array of strings as fixed-length, null-padded UTF-8 (numpy `S<n>`, as wide
    /// as the longest), which h5py (`.asstr()`), PyTables, MATLAB's `h5read` and HDFView all
    /// read. Variable-length strings would live in HDF5's global heap: PyTables cannot read
    /// those datasets, and libhdf5 1.10 crashes (not fails) on a damaged heap reference.
    @discardableResult
    public func write(_ name: String, strings values: [String], shape: [Int]? = nil) throws -> H5Dataset {
        let (width, buffer) = FixedStrings.pack(values)
        let type = try StringType.fixed(width, utf8: true)
        let dims = (shape ?? [values.count]).map { hsize_t($0) }
        let full = childPath(name)
        let space = try dataspace(dims, full)
        defer { H5Sclose(space) }
        let did = try checkID(
            H5Dcreate2(id, name, type.id, space, herald_h5p_default(), herald_h5p_default(), herald_h5p_default()),
            "H5Dcreate2", full)
        let ds = H5Dataset(handle: Handle(did, closer: H5Dclose), path: full)
        guard !values.isEmpty else { return ds }
        try check(H5Dwrite(did, type.id, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buffer), "H5Dwrite", full)
        return ds
    }

    /// Writes complex numbers as the compound type {r, i} of float64, which h5py reads as complex128.
    @discardableResult
    public func write(_ name: String, complexReal real: [Double], imag: [Double], shape: [Int]) throws -> H5Dataset {
        precondition(real.count == imag.count)
        let type = try checkID(H5Tcreate(H5T_COMPOUND, 16), "H5Tcreate", name)
        defer { H5Tclose(type) }
        try check(H5Tinsert(type, "r", 0, herald_h5t_native_double()), "H5Tinsert", name)
        try check(H5Tinsert(type, "i", 8, herald_h5t_native_double()), "H5Tinsert", name)
        let full = childPath(name)
        let space = try dataspace(shape.map { hsize_t($0) }, full)
        defer { H5Sclose(space) }
        let did = try checkID(
            H5Dcreate2(id, name, type, space, herald_h5p_default(), herald_h5p_default(), herald_h5p_default()),
            "H5Dcreate2", full)
        let ds = H5Dataset(handle: Handle(did, closer: H5Dclose), path: full)
        var interleaved = [Double](repeating: 0, count: real.count * 2)
        for k in real.indices {
            interleaved[2 * k] = real[k]
            interleaved[2 * k + 1] = imag[k]
        }
        try interleaved.withUnsafeBufferPointer { buf in
            try check(
                H5Dwrite(did, type, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buf.baseAddress),
                "H5Dwrite", full)
        }
        return ds
    }

    /// Creates a 1-D, chunked, unlimited dataset that grows by `append`.
    ///
    /// With `compression`, full chunks are shuffled and deflated on all cores and written with
    /// H5Dwrite_chunk, bypassing HDF5's single-threaded filter pipeline; the file declares the
    /// same shuffle + deflate filters, so any HDF5 reader decodes it. `cacheBytes` sizes the
    /// dataset's chunk cache (nil: HDF5's default of 1 MiB).
    public func appendable<T: HDF5Scalar>(
        _ name: String, of: T.Type, chunk: Int, compression: DeflateSettings? = nil, cacheBytes: Int? = nil
    ) throws -> H5AppendableDataset<T> {
        let full = childPath(name)
        let space = try dataspace([0], full, max: [herald_h5s_unlimited()])
        defer { H5Sclose(space) }
        let dcpl = try checkID(H5Pcreate(herald_h5p_dataset_create()), "H5Pcreate", full)
        defer { H5Pclose(dcpl) }
        var chunkDims = [hsize_t(chunk)]
        try check(H5Pset_chunk(dcpl, 1, &chunkDims), "H5Pset_chunk", full)
        if let compression {
            if MemoryLayout<T>.size > 1 { try check(H5Pset_shuffle(dcpl), "H5Pset_shuffle", full) }
            try check(H5Pset_deflate(dcpl, UInt32(compression.level)), "H5Pset_deflate", full)
        }
        let dapl = try checkID(H5Pcreate(herald_h5p_dataset_access()), "H5Pcreate", full)
        defer { H5Pclose(dapl) }
        if let cacheBytes {
            // 521 slots: a prime well above the chunks that fit, as the HDF5 guide advises.
            try check(H5Pset_chunk_cache(dapl, 521, cacheBytes, 0.75), "H5Pset_chunk_cache", full)
        }
        let did = try checkID(
            H5Dcreate2(id, name, T.nativeType, space, herald_h5p_default(), dcpl, dapl), "H5Dcreate2", full)
        return H5AppendableDataset<T>(
            handle: Handle(did, closer: H5Dclose), path: full, chunk: chunk, compression: compression)
    }
}

/// A dataset already written in full.
public class H5Dataset: H5Location {}

/// A growable 1-D dataset. Appends extend it and write the new slab.
public final class H5AppendableDataset<T: HDF5Scalar>: H5Dataset {
    /// Elements appended so far (including any not yet written; see ``writeTail()``).
    public var count: Int { compression == nil ? written : written + pending.count }
    let chunk: Int
    let compression: DeflateSettings?
    /// Compressed mode: elements before `written` are in full chunks on disk (or in a tail
    /// already written through the pipeline); `pending` holds the current partial chunk.
    /// Uncompressed: everything up to `written` is on disk; `pending` is a copy of the
    /// partial last chunk, for rewriting it whole.
    private var written = 0
    private var chunkBase = 0
    private var pending: [T] = []

    init(handle: Handle, path: String, chunk: Int, compression: DeflateSettings?) {
        self.chunk = chunk
        self.compression = compression
        super.init(handle: handle, path: path)
    }

    public func append(_ values: [T]) throws {
        try values.withUnsafeBufferPointer { try append($0) }
    }

    public func append(_ values: UnsafeBufferPointer<T>) throws {
        guard !values.isEmpty else { return }
        if compression == nil { return try appendRaw(values) }
        pending.append(contentsOf: values)
        let full = pending.count / chunk
        guard full > 0 else { return }
        try pending.withUnsafeBytes { raw in
            let bytes = UnsafeRawBufferPointer(rebasing: raw[0..<(full * chunk * MemoryLayout<T>.size)])
            let chunks = ChunkCodec.compressChunks(
                bytes, chunkBytes: chunk * MemoryLayout<T>.size, elementSize: MemoryLayout<T>.size,
                level: compression?.level ?? 1)
            var size = [hsize_t(chunkBase + full * chunk)]
            if size[0] > hsize_t(try extent) { try check(H5Dset_extent(id, &size), "H5Dset_extent", path) }
            for (i, c) in chunks.enumerated() {
                var offset = [hsize_t(chunkBase + i * chunk)]
                try check(H5Dwrite_chunk(id, herald_h5p_default(), 0, &offset, c.count, c), "H5Dwrite_chunk", path)
            }
        }
        pending.removeFirst(full * chunk)
        chunkBase += full * chunk
        written = chunkBase
    }

    /// Uncompressed: whole chunks go straight to the file with direct chunk writes (no chunk
    /// cache, no selection machinery: the fastest path libhdf5 has), from the caller's buffer
    /// when they line up. Every element is written at once, as before: a partial last chunk
    /// through the normal path, kept in memory too, and rewritten whole once it fills.
    private func appendRaw(_ values: UnsafeBufferPointer<T>) throws {
        var input = values
        if !pending.isEmpty {
            let take = min(chunk - pending.count, input.count)
            let head = UnsafeBufferPointer(rebasing: input[0..<take])
            pending.append(contentsOf: head)
            input = UnsafeBufferPointer(rebasing: input[take...])
            if pending.count == chunk {
                try pending.withUnsafeBufferPointer { try writeRawChunks($0, at: chunkBase) }
                pending.removeAll(keepingCapacity: true)
                chunkBase += chunk
            } else {
                try writeSlab(head, at: chunkBase + pending.count - take, advance: false)
            }
        }
        let full = input.count / chunk * chunk
        if full > 0 {
            try writeRawChunks(UnsafeBufferPointer(rebasing: input[0..<full]), at: chunkBase)
            chunkBase += full
        }
        let rest = UnsafeBufferPointer(rebasing: input[full...])
        if !rest.isEmpty {
            try writeSlab(rest, at: chunkBase, advance: false)
            pending.append(contentsOf: rest)
        }
        written = chunkBase + pending.count
    }

    /// Whole chunks (`values.count` a multiple of `chunk`) starting at element `start`.
    private func writeRawChunks(_ values: UnsafeBufferPointer<T>, at start: Int) throws {
        guard let base = values.baseAddress, !values.isEmpty else { return }
        var size = [hsize_t(start + values.count)]
        if size[0] > hsize_t(try extent) { try check(H5Dset_extent(id, &size), "H5Dset_extent", path) }
        let chunkBytes = chunk * MemoryLayout<T>.size
        let raw = UnsafeRawPointer(base)
        for k in 0..<(values.count / chunk) {
            var offset = [hsize_t(start + k * chunk)]
            try check(
                H5Dwrite_chunk(id, herald_h5p_default(), 0, &offset, chunkBytes, raw + k * chunkBytes), "H5Dwrite_chunk", path)
        }
    }

    /// Writes the partial last chunk through the filter pipeline, so a flush makes every
    /// appended element durable; the chunk is rewritten whole once it fills.
    public func writeTail() throws {
        guard compression != nil, !pending.isEmpty else { return }
        try pending.withUnsafeBufferPointer { try writeSlab($0, at: chunkBase, advance: false) }
        written = chunkBase
    }

    private func writeSlab(_ values: UnsafeBufferPointer<T>, at start: Int, advance: Bool = true) throws {
        guard let base = values.baseAddress, values.count > 0 else { return }
        var newSize = [hsize_t(start + values.count)]
        if newSize[0] > hsize_t(try extent) { try check(H5Dset_extent(id, &newSize), "H5Dset_extent", path) }
        let fileSpace = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(fileSpace) }
        var offset = [hsize_t(start)]
        var n = [hsize_t(values.count)]
        try check(H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &offset, nil, &n, nil), "H5Sselect_hyperslab", path)
        let memSpace = try checkID(H5Screate_simple(1, &n, nil), "H5Screate_simple", path)
        defer { H5Sclose(memSpace) }
        try check(H5Dwrite(id, T.nativeType, memSpace, fileSpace, herald_h5p_default(), base), "H5Dwrite", path)
        if advance { written = start + values.count }
    }
}

/// An open HDF5 file. Closing flushes it; the handle is also closed on deinit.
public final class H5File: H5Group {
    /// Creates a new file, replacing any file at `path` only if `overwrite` is set.
    ///
    /// `swmr` creates it in the HDF5 1.10 format that single-writer/multiple-reader access
    /// needs (stock h5py ≥ 2.5 reads it); call ``startSWMRWrite()`` once the layout exists.
    public static func create(_ path: String, overwrite: Bool = false, swmr: Bool = false) throws -> H5File {
        herald_h5e_silence()
        let flags = overwrite ? herald_h5f_acc_trunc() : herald_h5f_acc_excl()
        let fapl = try checkID(H5Pcreate(herald_h5p_file_access()), "H5Pcreate", path)
        defer { H5Pclose(fapl) }
        if swmr {
            try check(H5Pset_libver_bounds(fapl, herald_h5f_libver_v110(), herald_h5f_libver_latest()), "H5Pset_libver_bounds", path)
        }
        // Strong close: closing the file closes every object still open in it. With the default
        // (weak) degree, one object a Swift reference still held kept a SWMR file open behind
        // its close, so the same process could not open it again (a recount right after a run).
        try check(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), "H5Pset_fclose_degree", path)
        let fid = try checkID(H5Fcreate(path, flags, try CompactStorage.fileCreation(), fapl), "H5Fcreate", path)
        closeOnExec(fid)
        return H5File(handle: Handle(fid, closer: H5Fclose), path: "/", filename: path)
    }

    /// libhdf5 opens its file without O_CLOEXEC: a child process started meanwhile (a test's
    /// helper, a plugin's tool) would inherit the descriptor, and with it the file's lock,
    /// and an open of the same file here could fail until that child exits.
    static func closeOnExec(_ fid: hid_t) {
        var handle: UnsafeMutableRawPointer?
        guard H5Fget_vfd_handle(fid, herald_h5p_default(), &handle) >= 0, let handle else { return }
        let fd = handle.assumingMemoryBound(to: Int32.self).pointee
        let flags = fcntl(fd, F_GETFD)
        if fd >= 0, flags >= 0 { _ = fcntl(fd, F_SETFD, flags | FD_CLOEXEC) }
    }

    public enum Mode: Sendable {
        case readOnly
        /// Read-only while a SWMR writer appends: dataset sizes grow on ``H5Dataset/refresh()``.
        case swmrRead
        case readWrite
        /// Read-write on a file whose writer died: clears the superblock's "open for writing"
        /// mark and raises the stored end-of-allocation to the real end of file, so that closing
        /// never truncates data written after the last superblock update.
        case recover
    }

    /// Opens an existing file.
    public static func open(_ path: String, mode: Mode = .readOnly) throws -> H5File {
        herald_h5e_silence()
        let fapl = try checkID(H5Pcreate(herald_h5p_file_access()), "H5Pcreate", path)
        defer { H5Pclose(fapl) }
        let flags: UInt32
        switch mode {
        case .readOnly: flags = herald_h5f_acc_rdonly()
        case .swmrRead: flags = herald_h5f_acc_rdonly() | herald_h5f_acc_swmr_read()
        case .readWrite: flags = herald_h5f_acc_rdwr()
        case .recover:
            flags = herald_h5f_acc_rdwr()
            try check(herald_h5p_set_clear_status_flags(fapl), "H5Pset(clear_status_flags)", path)
        }
        // Strong close here too: an object a Swift reference still holds must not keep the
        // file open behind its close (the next open in this process would then fail).
        try check(H5Pset_fclose_degree(fapl, H5F_CLOSE_STRONG), "H5Pset_fclose_degree", path)
        let fid = try checkID(HDF5ReadWatchdog.watched("H5Fopen", path) { H5Fopen(path, flags, fapl) }, "H5Fopen", path)
        closeOnExec(fid)
        let file = H5File(handle: Handle(fid, closer: H5Fclose), path: "/", filename: path)
        if mode == .recover { try check(H5Fincrement_filesize(fid, 0), "H5Fincrement_filesize", path) }
        return file
    }

    public let filename: String

    init(handle: Handle, path: String, filename: String) {
        self.filename = filename
        super.init(handle: handle, path: path)
    }

    /// Switches to single-writer/multiple-reader mode: readers may open the file while it is
    /// written, and every flush leaves a consistent file. No objects can be created after this.
    public func startSWMRWrite() throws {
        try check(H5Fstart_swmr_write(id), "H5Fstart_swmr_write", filename)
    }

    /// Pushes buffered data to disk so a crash loses at most what came after.
    public func flush() throws {
        try check(H5Fflush(id, H5F_SCOPE_GLOBAL), "H5Fflush", filename)
    }

    public func close() { handle.close() }
}

/// A variable-length UTF-8 string type, closed when released.
struct StringType {
    let handle: Handle
    var id: hid_t { handle.id }

    static func variableUTF8() throws -> StringType {
        let t = try checkID(H5Tcopy(herald_h5t_c_s1()), "H5Tcopy", "string type")
        let h = Handle(t, closer: H5Tclose)
        try check(H5Tset_size(t, herald_h5t_variable()), "H5Tset_size", "string type")
        try check(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset", "string type")
        return StringType(handle: h)
    }

    /// A fixed-length, null-padded ASCII string (numpy `S<n>`), which PyTables and
    /// therefore phconvert require for Photon-HDF5's string fields.
    static func fixed(_ length: Int, utf8: Bool = false) throws -> StringType {
        let t = try checkID(H5Tcopy(herald_h5t_c_s1()), "H5Tcopy", "string type")
        let h = Handle(t, closer: H5Tclose)
        try check(H5Tset_size(t, max(1, length)), "H5Tset_size", "string type")
        try check(H5Tset_strpad(t, H5T_STR_NULLPAD), "H5Tset_strpad", "string type")
        if utf8 { try check(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset", "string type") }
        return StringType(handle: h)
    }
}

/// Links and attributes kept in their object's header ("compact"), never in HDF5's dense
/// storage (a fractal heap indexed by a v2 B-tree), which HDF5 switches to past 8 links or 8
/// attributes. libhdf5 1.10 crashes (frees a bad pointer) listing a damaged dense group, where
/// a damaged compact one fails with an error; Herald's groups and attribute sets are small,
/// so compact costs nothing. Every HDF5 reader handles both.
enum CompactStorage {
    /// Up to 1000 links or attributes stay compact (HDF5 requires min_dense ≤ max_compact + 1).
    static let maxCompact: UInt32 = 1000

    /// A group creation property list (released when the process ends: one per process).
    nonisolated(unsafe) private static var group: hid_t = -1
    nonisolated(unsafe) private static var file: hid_t = -1
    private static let lock = NSLock()

    static func groupCreation() throws -> hid_t {
        lock.lock()
        defer { lock.unlock() }
        if group < 0 { group = try make(herald_h5p_group_create()) }
        return group
    }

    static func fileCreation() throws -> hid_t {
        lock.lock()
        defer { lock.unlock() }
        if file < 0 { file = try make(herald_h5p_file_create()) }
        return file
    }

    private static func make(_ cls: hid_t) throws -> hid_t {
        let plist = try checkID(H5Pcreate(cls), "H5Pcreate", "compact storage")
        try check(H5Pset_link_phase_change(plist, maxCompact, maxCompact), "H5Pset_link_phase_change", "compact storage")
        try check(H5Pset_attr_phase_change(plist, maxCompact, maxCompact), "H5Pset_attr_phase_change", "compact storage")
        return plist
    }
}

/// Fixed-length, null-padded string arrays as HDF5 stores them: one buffer of equal-width
/// cells. Used by every fixed-length string write and read, datasets and attributes alike.
enum FixedStrings {
    /// The cell width (the longest value in bytes, at least 1) and the packed buffer (at least
    /// one cell, so an empty array still has storage to point at).
    static func pack(_ values: [String]) -> (width: Int, buffer: [UInt8]) {
        let encoded = values.map { Array($0.utf8) }
        let width = max(1, encoded.map(\.count).max() ?? 1)
        var buffer = [UInt8](repeating: 0, count: width * max(1, values.count))
        for (i, bytes) in encoded.enumerated() { buffer.replaceSubrange((i * width)..<(i * width + bytes.count), with: bytes) }
        return (width, buffer)
    }

    /// `count` cells of `width` bytes, each cut at its first NUL.
    static func unpack(_ buffer: [UInt8], count: Int, width: Int) -> [String] {
        (0..<count).map { i in String(decoding: buffer[(i * width)..<((i + 1) * width)].prefix { $0 != 0 }, as: UTF8.self) }
    }
}
