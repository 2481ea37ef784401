import CHDF5
import Foundation

/// Reading side of the wrapper: opening existing objects, listing children, reading
/// datasets and attributes. Types convert on read (HDF5 converts integers and floats).
extension H5Group {
    /// Opens an existing child group; fails naming the path if it is missing.
    public func openGroup(_ name: String) throws -> H5Group {
        let full = childPath(name)
        guard contains(name) else { throw HDF5Error(operation: "open (no such group)", object: full) }
        let gid = try checkID(HDF5ReadWatchdog.watched("H5Gopen2", full) { H5Gopen2(id, name, herald_h5p_default()) }, "H5Gopen2", full)
        return H5Group(handle: Handle(gid, closer: H5Gclose), path: full)
    }

    /// Opens an existing dataset; fails naming the path if it is missing.
    public func dataset(_ name: String) throws -> H5Dataset {
        let full = childPath(name)
        guard contains(name) else { throw HDF5Error(operation: "open (no such dataset)", object: full) }
        let did = try checkID(HDF5ReadWatchdog.watched("H5Dopen2", full) { H5Dopen2(id, name, herald_h5p_default()) }, "H5Dopen2", full)
        return H5Dataset(handle: Handle(did, closer: H5Dclose), path: full)
    }

    /// Names of the links in this group, in name order.
    public func childNames() throws -> [String] {
        var info = H5G_info_t()
        try check(HDF5ReadWatchdog.watched("H5Gget_info", path) { H5Gget_info(id, &info) }, "H5Gget_info", path)
        var names: [String] = []
        for i in 0..<info.nlinks {
            let n = HDF5ReadWatchdog.watched("H5Lget_name_by_idx", path) { H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, herald_h5p_default()) }
            guard n >= 0 else { throw HDF5Error(operation: "H5Lget_name_by_idx", object: path) }
            var buffer = [CChar](repeating: 0, count: Int(n) + 1)
            _ = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buffer, buffer.count, herald_h5p_default())
            names.append(String(decoding: buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return names
    }
}

extension H5Location {
    /// Bounds on what a read allocates, so a damaged file's sizes fail with an error
    /// naming the object instead of exhausting memory: 2³⁰ elements (8 GiB of int64) in one
    /// read (tags are read in blocks), 64 MiB for one fixed-length string.
    public static let maxElements = 1 << 30
    static let maxStringBytes = 64 << 20

    /// The number of elements of a dataspace, checked against ``maxElements``.
    func elementCount(_ space: hid_t) throws -> Int {
        let n = H5Sget_simple_extent_npoints(space)
        guard n >= 0 else { throw HDF5Error(operation: "H5Sget_simple_extent_npoints", object: path) }
        guard n <= Int64(Self.maxElements) else {
            throw HDF5Error(operation: "read (\(n) elements claimed; the file is damaged or too large to read at once)", object: path)
        }
        return Int(n)
    }

    public func hasAttribute(_ name: String) -> Bool { HDF5ReadWatchdog.watched("H5Aexists", "\(path)@\(name)") { H5Aexists(id, name) } > 0 }

    /// A string attribute; nil if absent. Where Herald wrote the object (``textMirror``
    /// present) the value comes from the fixed-length copy, never from the global heap; a
    /// variable-length attribute is read directly only in files without one (Herald before
    /// schema 0.3, other software), which a damaged heap can still crash inside libhdf5.
    public func stringAttribute(_ name: String) throws -> String? {
        if name != Self.textMirror, let mirrored = try mirroredStrings(),
            let entry = mirrored.first(where: { $0.hasPrefix(name + "=") })
        {
            return String(entry.dropFirst(name.count + 1))
        }
        // Not mirrored: a file from before schema 0.3 (where `herald recover` may since have
        // added a mirror holding only its own attributes), or another program's attribute.
        return try readStringAttribute(name)
    }

    /// The fixed-length `name=value` copies of this object's string attributes, if it has them.
    func mirroredStrings() throws -> [String]? {
        guard hasAttribute(Self.textMirror) else { return nil }
        let name = Self.textMirror
        let attr = try checkID(HDF5ReadWatchdog.watched("H5Aopen", "\(path)@\(name)") { H5Aopen(id, name, herald_h5p_default()) }, "H5Aopen", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        let fileType = try checkID(H5Aget_type(attr), "H5Aget_type", "\(path)@\(name)")
        defer { H5Tclose(fileType) }
        guard H5Tget_class(fileType) == H5T_STRING, H5Tis_variable_str(fileType) == 0 else {
            throw HDF5Error(operation: "read (\(name) is not a fixed-length string array; the file is damaged)", object: path)
        }
        let type = try checkID(H5Tget_native_type(fileType, H5T_DIR_ASCEND), "H5Tget_native_type", "\(path)@\(name)")
        defer { H5Tclose(type) }
        let space = try checkID(H5Aget_space(attr), "H5Aget_space", "\(path)@\(name)")
        defer { H5Sclose(space) }
        let n = try elementCount(space), size = H5Tget_size(type)
        guard size > 0, size <= Self.maxStringBytes, n <= Self.maxStringBytes / size else {
            throw HDF5Error(operation: "read (\(name): \(n) strings of \(size) bytes claimed)", object: path)
        }
        guard n > 0 else { return [] }
        var buffer = [UInt8](repeating: 0, count: n * size)
        try check(HDF5ReadWatchdog.watched("H5Aread", "\(path)@\(name)") { H5Aread(attr, type, &buffer) }, "H5Aread", "\(path)@\(name)")
        return FixedStrings.unpack(buffer, count: n, width: size)
    }

    /// Reads a string attribute as stored (fixed-length or variable-length).
    func readStringAttribute(_ name: String) throws -> String? {
        guard hasAttribute(name) else { return nil }
        let attr = try checkID(HDF5ReadWatchdog.watched("H5Aopen", "\(path)@\(name)") { H5Aopen(id, name, herald_h5p_default()) }, "H5Aopen", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        let fileType = try checkID(H5Aget_type(attr), "H5Aget_type", "\(path)@\(name)")
        defer { H5Tclose(fileType) }
        guard H5Tget_class(fileType) == H5T_STRING else {
            throw HDF5Error(operation: "read as string (attribute is not a string)", object: "\(path)@\(name)")
        }
        // Read through the memory form of the type: handing HDF5 the file type as the memory
        // type makes it lay variable-length strings out as on disk, and a damaged heap
        // reference then crashes in memcpy instead of failing (h5py does the same).
        let type = try checkID(H5Tget_native_type(fileType, H5T_DIR_ASCEND), "H5Tget_native_type", "\(path)@\(name)")
        defer { H5Tclose(type) }
        // One value is read into room for one: a damaged file whose attribute claims more
        // elements would otherwise have HDF5 write past the buffer.
        let space = try checkID(H5Aget_space(attr), "H5Aget_space", "\(path)@\(name)")
        defer { H5Sclose(space) }
        guard H5Sget_simple_extent_npoints(space) == 1 else {
            throw HDF5Error(operation: "read as string (attribute is not a single value)", object: "\(path)@\(name)")
        }
        if H5Tis_variable_str(type) > 0 {
            var pointer: UnsafeMutablePointer<CChar>?
            try check(HDF5ReadWatchdog.watched("H5Aread", "\(path)@\(name)") { H5Aread(attr, type, &pointer) }, "H5Aread", "\(path)@\(name)")
            defer { free(pointer) }
            return pointer.map { String(cString: $0) } ?? ""
        }
        let size = H5Tget_size(type)
        guard size > 0, size <= Self.maxStringBytes else {
            throw HDF5Error(operation: "read as string (implausible string size \(size))", object: "\(path)@\(name)")
        }
        var buffer = [UInt8](repeating: 0, count: size)
        try check(HDF5ReadWatchdog.watched("H5Aread", "\(path)@\(name)") { H5Aread(attr, type, &buffer) }, "H5Aread", "\(path)@\(name)")
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// A numeric scalar attribute converted to `T`; nil if absent.
    public func attribute<T: HDF5Scalar>(_ name: String, as: T.Type) throws -> T? {
        guard hasAttribute(name) else { return nil }
        let attr = try checkID(HDF5ReadWatchdog.watched("H5Aopen", "\(path)@\(name)") { H5Aopen(id, name, herald_h5p_default()) }, "H5Aopen", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        var values = [T](repeating: T.zero, count: 1)
        let space = try checkID(H5Aget_space(attr), "H5Aget_space", "\(path)@\(name)")
        defer { H5Sclose(space) }
        guard H5Sget_simple_extent_npoints(space) == 1 else {
            throw HDF5Error(operation: "read as scalar (attribute has several values)", object: "\(path)@\(name)")
        }
        try values.withUnsafeMutableBufferPointer { buf in
            try check(HDF5ReadWatchdog.watched("H5Aread", "\(path)@\(name)") { H5Aread(attr, T.nativeType, buf.baseAddress) }, "H5Aread", "\(path)@\(name)")
        }
        return values[0]
    }
}

extension H5Dataset {
    /// Length of the first dimension as stored in the file (1 for a scalar).
    public var extent: Int {
        get throws {
            let space = try checkID(H5Dget_space(id), "H5Dget_space", path)
            defer { H5Sclose(space) }
            let rank = H5Sget_simple_extent_ndims(space)
            guard rank > 0 else { return 1 }
            guard rank <= 32 else { throw HDF5Error(operation: "extent (rank \(rank))", object: path) }
            var dims = [hsize_t](repeating: 0, count: Int(rank))
            guard H5Sget_simple_extent_dims(space, &dims, nil) >= 0, dims[0] <= hsize_t(Int.max / 16) else {
                throw HDF5Error(operation: "extent (damaged dataspace)", object: path)
            }
            return Int(dims[0])
        }
    }

    /// Re-reads the dataset's metadata so a SWMR reader sees appended elements.
    public func refresh() throws { try check(H5Drefresh(id), "H5Drefresh", path) }

    /// Every element, flattened, converted to `T`.
    public func read<T: HDF5Scalar>(_: T.Type) throws -> [T] {
        let space = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(space) }
        let n = try elementCount(space)
        guard n > 0 else { return [] }
        return try Self.filled(count: n) { buf in
            try check(HDF5ReadWatchdog.watched("H5Dread", path) { H5Dread(id, T.nativeType, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buf) }, "H5Dread", path)
        }
    }

    /// Elements [offset, offset + count) of a 1-D dataset.
    public func read<T: HDF5Scalar>(_: T.Type, offset: Int, count: Int) throws -> [T] {
        guard count > 0 else { return [] }
        guard offset >= 0, count <= Self.maxElements else {
            throw HDF5Error(operation: "read of \(count) elements at \(offset)", object: path)
        }
        let fileSpace = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t(offset)], n = [hsize_t(count)]
        try check(H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &n, nil), "H5Sselect_hyperslab", path)
        let memSpace = try checkID(H5Screate_simple(1, &n, nil), "H5Screate_simple", path)
        defer { H5Sclose(memSpace) }
        return try Self.filled(count: count) { buf in
            try check(HDF5ReadWatchdog.watched("H5Dread", path) { H5Dread(id, T.nativeType, memSpace, fileSpace, herald_h5p_default(), buf) }, "H5Dread", path)
        }
    }

    /// An array of `count` scalars written by `read` straight into uninitialised storage.
    /// Zero-filling first went through generic value witnesses one element at a time (this
    /// generic code is not specialised across modules), which cost more than the read itself.
    /// Safe because HDF5 scalars are trivial types; on error nothing is kept.
    static func filled<T: HDF5Scalar>(count: Int, _ read: (UnsafeMutableRawPointer?) throws -> Void) throws -> [T] {
        try [T](unsafeUninitializedCapacity: count) { buf, initialized in
            initialized = 0
            try read(UnsafeMutableRawPointer(buf.baseAddress))
            initialized = count
        }
    }

    /// Every element of a complex dataset (a compound of float members `r` and `i`, as h5py
    /// and Herald write complex128), flattened: the real and imaginary parts.
    public func readComplex(limit: Int = 1 << 29) throws -> (real: [Double], imag: [Double]) {
        let fileType = try checkID(H5Dget_type(id), "H5Dget_type", path)
        defer { H5Tclose(fileType) }
        guard H5Tget_class(fileType) == H5T_COMPOUND, H5Tget_nmembers(fileType) == 2,
            H5Tget_member_index(fileType, "r") >= 0, H5Tget_member_index(fileType, "i") >= 0,
            H5Tget_member_class(fileType, UInt32(H5Tget_member_index(fileType, "r"))) == H5T_FLOAT,
            H5Tget_member_class(fileType, UInt32(H5Tget_member_index(fileType, "i"))) == H5T_FLOAT
        else { throw HDF5Error(operation: "read as complex (not a compound of float r and i)", object: path) }
        let memType = try checkID(H5Tcreate(H5T_COMPOUND, 16), "H5Tcreate", path)
        defer { H5Tclose(memType) }
        try check(H5Tinsert(memType, "r", 0, herald_h5t_native_double()), "H5Tinsert", path)
        try check(H5Tinsert(memType, "i", 8, herald_h5t_native_double()), "H5Tinsert", path)
        let space = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(space) }
        let n = try elementCount(space)
        guard n > 0 else { return ([], []) }
        guard n <= min(limit, Self.maxElements / 2) else { throw HDF5Error(operation: "read as complex (\(n) elements, more than \(limit))", object: path) }
        let interleaved: [Double] = try Self.filled(count: 2 * n) { buf in
            try check(
                HDF5ReadWatchdog.watched("H5Dread", path) { H5Dread(id, memType, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buf) },
                "H5Dread", path)
        }
        return (stride(from: 0, to: 2 * n, by: 2).map { interleaved[$0] }, stride(from: 1, to: 2 * n, by: 2).map { interleaved[$0] })
    }

    /// Every element of a string dataset, fixed-length or variable-length.
    public func readStrings() throws -> [String] {
        let fileType = try checkID(H5Dget_type(id), "H5Dget_type", path)
        defer { H5Tclose(fileType) }
        guard H5Tget_class(fileType) == H5T_STRING else {
            throw HDF5Error(operation: "read as strings (dataset is not a string)", object: path)
        }
        // The memory form of the type (see stringAttribute).
        let type = try checkID(H5Tget_native_type(fileType, H5T_DIR_ASCEND), "H5Tget_native_type", path)
        defer { H5Tclose(type) }
        let space = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(space) }
        let n = try elementCount(space)
        guard n > 0 else { return [] }
        if H5Tis_variable_str(type) > 0 {
            try GlobalHeapCheck.references(of: self, count: n)
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
            try check(HDF5ReadWatchdog.watched("H5Dread", path) { H5Dread(id, type, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), &pointers) }, "H5Dread", path)
            defer { _ = H5Dvlen_reclaim(type, space, herald_h5p_default(), &pointers) }
            return pointers.map { $0.map { String(cString: $0) } ?? "" }
        }
        let size = H5Tget_size(type)
        guard size > 0, size <= Self.maxStringBytes, n <= Self.maxStringBytes / size else {
            throw HDF5Error(operation: "read as strings (\(n) strings of \(size) bytes claimed)", object: path)
        }
        var buffer = [UInt8](repeating: 0, count: n * size)
        try check(HDF5ReadWatchdog.watched("H5Dread", path) { H5Dread(id, type, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), &buffer) }, "H5Dread", path)
        return FixedStrings.unpack(buffer, count: n, width: size)
    }
}

extension H5Dataset {
    /// Overwrites every element of an existing dataset (same count), e.g. a scalar placeholder.
    public func overwrite<T: HDF5Scalar>(_ values: [T]) throws {
        try values.withUnsafeBufferPointer { buf in
            try check(H5Dwrite(id, T.nativeType, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buf.baseAddress), "H5Dwrite", path)
        }
    }

    /// Shrinks or grows a chunked 1-D dataset to `count` elements.
    public func setExtent(_ count: Int) throws {
        var size = [hsize_t(count)]
        try check(H5Dset_extent(id, &size), "H5Dset_extent", path)
    }
}

/// Checks the global-heap references of a variable-length string dataset against the file
/// before libhdf5 follows them. HDF5 1.10 (Debian 12's) trusts them: a damaged reference
/// crashes it in memcpy instead of failing, which 6 of 900 corrupted run files did. Herald
/// now writes fixed-length strings; this guards files written before (schema 0.2) and any
/// other file's variable-length strings.
///
/// Follows the HDF5 file format specification (version 2/3 superblocks with 8-byte
/// addresses and lengths, as HDF5 1.10 writes): a contiguous dataset's elements are
/// {length: u32, collection address: u64, object index: u32}; a collection starts with
/// "GCOL", version 1, and its size, then objects {index: u16, refcount: u16, reserved: u32,
/// size: u64, data padded to 8 bytes}.
enum GlobalHeapCheck {
    static func references(of dataset: H5Dataset, count n: Int) throws {
        func damaged(_ why: String) -> HDF5Error {
            HDF5Error(operation: "read (variable-length strings: \(why); the file is damaged)", object: dataset.path)
        }
        let offset = H5Dget_offset(dataset.id)
        guard offset != UInt64.max else {
            // Compact or chunked storage: the descriptors are not in one place to check.
            throw HDF5Error(operation: "read (variable-length strings not stored contiguously; not read, to be safe)", object: dataset.path)
        }
        guard H5Dget_storage_size(dataset.id) == UInt64(n) * 16 else { throw damaged("storage size does not match \(n) elements") }
        let nameLength = H5Fget_name(dataset.id, nil, 0)
        guard nameLength > 0 else { throw damaged("no file name") }
        var name = [CChar](repeating: 0, count: Int(nameLength) + 1)
        _ = H5Fget_name(dataset.id, &name, name.count)
        let path = String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard let file = FileHandle(forReadingAtPath: path) else { throw damaged("cannot reopen \(path)") }
        defer { try? file.close() }
        let fileSize = (try? file.seekToEnd()).map { Int($0) } ?? 0
        func bytes(_ at: UInt64, _ count: Int) throws -> [UInt8] {
            guard at <= UInt64(fileSize), count >= 0, Int(at) + count <= fileSize else {
                throw damaged("a reference points beyond the end of the file")
            }
            try file.seek(toOffset: at)
            let data = try file.read(upToCount: count) ?? Data()
            guard data.count == count else { throw damaged("short read") }
            return [UInt8](data)
        }
        func u(_ b: [UInt8], _ o: Int, _ width: Int) -> UInt64 {
            var v: UInt64 = 0
            for k in 0..<width { v |= UInt64(b[o + k]) << (8 * UInt64(k)) }
            return v
        }
        let descriptors = try bytes(UInt64(offset), n * 16)
        // Objects of each collection: index → (data start, size), parsed once.
        var collections: [UInt64: [UInt64: (UInt64, UInt64)]] = [:]
        for i in 0..<n {
            let length = u(descriptors, i * 16, 4), address = u(descriptors, i * 16 + 4, 8), index = u(descriptors, i * 16 + 12, 4)
            if length == 0 && address == 0 { continue }  // a null string
            if collections[address] == nil {
                let header = try bytes(address, 16)
                guard header[0..<4].elementsEqual(Array("GCOL".utf8)), header[4] == 1 else { throw damaged("no heap collection at \(address)") }
                let size = u(header, 8, 8)
                guard size >= 16, size <= UInt64(fileSize), address + size <= UInt64(fileSize) else {
                    throw damaged("heap collection at \(address) overruns the file")
                }
                let body = try bytes(address, Int(size))
                var objects: [UInt64: (UInt64, UInt64)] = [:]
                var p = 16
                while p + 16 <= body.count {
                    let objectIndex = u(body, p, 2), objectSize = u(body, p + 8, 8)
                    let padded = (objectSize + 7) & ~7
                    guard objectSize <= UInt64(body.count), UInt64(p + 16) + padded <= UInt64(body.count) || objectIndex == 0 else {
                        throw damaged("heap object \(objectIndex) at \(address) overruns its collection")
                    }
                    if objectIndex == 0 { break }  // free space: the rest of the collection
                    objects[objectIndex] = (address + UInt64(p + 16), objectSize)
                    p += 16 + Int(padded)
                }
                collections[address] = objects
            }
            guard let object = collections[address]?[index] else { throw damaged("element \(i) names heap object \(index) that does not exist") }
            guard object.1 >= length else { throw damaged("element \(i) is longer than its heap object") }
        }
    }
}

/// What a link in a group names, for walking a file.
public enum H5ChildKind: Sendable, Equatable {
    case group
    /// Integers, floats, or compounds of them (complex numbers).
    case numericDataset
    case stringDataset
    case other
}

extension H5Group {
    /// What the child `name` is; `.other` if it is missing or cannot be opened.
    public func kind(of name: String) -> H5ChildKind {
        guard contains(name) else { return .other }
        let oid = HDF5ReadWatchdog.watched("H5Oopen", "\(path)/\(name)") { H5Oopen(id, name, herald_h5p_default()) }
        guard oid >= 0 else { return .other }
        defer { H5Oclose(oid) }
        switch H5Iget_type(oid) {
        case H5I_GROUP: return .group
        case H5I_DATASET:
            let type = H5Dget_type(oid)
            guard type >= 0 else { return .other }
            defer { H5Tclose(type) }
            switch H5Tget_class(type) {
            case H5T_INTEGER, H5T_FLOAT, H5T_COMPOUND: return .numericDataset
            case H5T_STRING: return .stringDataset
            default: return .other
            }
        default: return .other
        }
    }

    /// Opens any child object (group or dataset) as a location, to set its attributes.
    public func location(_ name: String) throws -> H5Location {
        switch kind(of: name) {
        case .group: return try openGroup(name)
        default: return try dataset(name)
        }
    }
}
