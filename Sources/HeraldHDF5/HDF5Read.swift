import CHDF5
import Foundation

/// Reading side of the wrapper: opening existing objects, listing children, reading
/// datasets and attributes. Types convert on read (HDF5 converts integers and floats).
extension H5Group {
    /// Opens an existing child group; fails naming the path if it is missing.
    public func openGroup(_ name: String) throws -> H5Group {
        let full = childPath(name)
        guard contains(name) else { throw HDF5Error(operation: "open (no such group)", object: full) }
        let gid = try checkID(H5Gopen2(id, name, herald_h5p_default()), "H5Gopen2", full)
        return H5Group(handle: Handle(gid, closer: H5Gclose), path: full)
    }

    /// Opens an existing dataset; fails naming the path if it is missing.
    public func dataset(_ name: String) throws -> H5Dataset {
        let full = childPath(name)
        guard contains(name) else { throw HDF5Error(operation: "open (no such dataset)", object: full) }
        let did = try checkID(H5Dopen2(id, name, herald_h5p_default()), "H5Dopen2", full)
        return H5Dataset(handle: Handle(did, closer: H5Dclose), path: full)
    }

    /// Names of the links in this group, in name order.
    public func childNames() throws -> [String] {
        var info = H5G_info_t()
        try check(H5Gget_info(id, &info), "H5Gget_info", path)
        var names: [String] = []
        for i in 0..<info.nlinks {
            let n = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, nil, 0, herald_h5p_default())
            guard n >= 0 else { throw HDF5Error(operation: "H5Lget_name_by_idx", object: path) }
            var buffer = [CChar](repeating: 0, count: Int(n) + 1)
            _ = H5Lget_name_by_idx(id, ".", H5_INDEX_NAME, H5_ITER_INC, i, &buffer, buffer.count, herald_h5p_default())
            names.append(String(decoding: buffer.prefix(Int(n)).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return names
    }
}

extension H5Location {
    public func hasAttribute(_ name: String) -> Bool { H5Aexists(id, name) > 0 }

    /// A string attribute, fixed-length or variable-length; nil if absent.
    public func stringAttribute(_ name: String) throws -> String? {
        guard hasAttribute(name) else { return nil }
        let attr = try checkID(H5Aopen(id, name, herald_h5p_default()), "H5Aopen", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        let type = try checkID(H5Aget_type(attr), "H5Aget_type", "\(path)@\(name)")
        defer { H5Tclose(type) }
        guard H5Tget_class(type) == H5T_STRING else {
            throw HDF5Error(operation: "read as string (attribute is not a string)", object: "\(path)@\(name)")
        }
        if H5Tis_variable_str(type) > 0 {
            var pointer: UnsafeMutablePointer<CChar>?
            try check(H5Aread(attr, type, &pointer), "H5Aread", "\(path)@\(name)")
            defer { free(pointer) }
            return pointer.map { String(cString: $0) } ?? ""
        }
        var buffer = [UInt8](repeating: 0, count: H5Tget_size(type))
        try check(H5Aread(attr, type, &buffer), "H5Aread", "\(path)@\(name)")
        return String(decoding: buffer.prefix { $0 != 0 }, as: UTF8.self)
    }

    /// A numeric scalar attribute converted to `T`; nil if absent.
    public func attribute<T: HDF5Scalar>(_ name: String, as: T.Type) throws -> T? {
        guard hasAttribute(name) else { return nil }
        let attr = try checkID(H5Aopen(id, name, herald_h5p_default()), "H5Aopen", "\(path)@\(name)")
        defer { H5Aclose(attr) }
        var values = [T](repeating: T.zero, count: 1)
        let space = try checkID(H5Aget_space(attr), "H5Aget_space", "\(path)@\(name)")
        defer { H5Sclose(space) }
        guard H5Sget_simple_extent_npoints(space) == 1 else {
            throw HDF5Error(operation: "read as scalar (attribute has several values)", object: "\(path)@\(name)")
        }
        try values.withUnsafeMutableBufferPointer { buf in
            try check(H5Aread(attr, T.nativeType, buf.baseAddress), "H5Aread", "\(path)@\(name)")
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
            var dims = [hsize_t](repeating: 0, count: Int(rank))
            H5Sget_simple_extent_dims(space, &dims, nil)
            return Int(dims[0])
        }
    }

    /// Re-reads the dataset's metadata so a SWMR reader sees appended elements.
    public func refresh() throws { try check(H5Drefresh(id), "H5Drefresh", path) }

    /// Every element, flattened, converted to `T`.
    public func read<T: HDF5Scalar>(_: T.Type) throws -> [T] {
        let space = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(space) }
        let n = Int(H5Sget_simple_extent_npoints(space))
        guard n > 0 else { return [] }
        return try Self.filled(count: n) { buf in
            try check(H5Dread(id, T.nativeType, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), buf), "H5Dread", path)
        }
    }

    /// Elements [offset, offset + count) of a 1-D dataset.
    public func read<T: HDF5Scalar>(_: T.Type, offset: Int, count: Int) throws -> [T] {
        guard count > 0 else { return [] }
        let fileSpace = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(fileSpace) }
        var start = [hsize_t(offset)], n = [hsize_t(count)]
        try check(H5Sselect_hyperslab(fileSpace, H5S_SELECT_SET, &start, nil, &n, nil), "H5Sselect_hyperslab", path)
        let memSpace = try checkID(H5Screate_simple(1, &n, nil), "H5Screate_simple", path)
        defer { H5Sclose(memSpace) }
        return try Self.filled(count: count) { buf in
            try check(H5Dread(id, T.nativeType, memSpace, fileSpace, herald_h5p_default(), buf), "H5Dread", path)
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

    /// Every element of a string dataset, fixed-length or variable-length.
    public func readStrings() throws -> [String] {
        let type = try checkID(H5Dget_type(id), "H5Dget_type", path)
        defer { H5Tclose(type) }
        guard H5Tget_class(type) == H5T_STRING else {
            throw HDF5Error(operation: "read as strings (dataset is not a string)", object: path)
        }
        let space = try checkID(H5Dget_space(id), "H5Dget_space", path)
        defer { H5Sclose(space) }
        let n = Int(H5Sget_simple_extent_npoints(space))
        guard n > 0 else { return [] }
        if H5Tis_variable_str(type) > 0 {
            var pointers = [UnsafeMutablePointer<CChar>?](repeating: nil, count: n)
            try check(H5Dread(id, type, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), &pointers), "H5Dread", path)
            defer { _ = H5Dvlen_reclaim(type, space, herald_h5p_default(), &pointers) }
            return pointers.map { $0.map { String(cString: $0) } ?? "" }
        }
        let size = H5Tget_size(type)
        var buffer = [UInt8](repeating: 0, count: n * size)
        try check(H5Dread(id, type, herald_h5s_all(), herald_h5s_all(), herald_h5p_default(), &buffer), "H5Dread", path)
        return (0..<n).map { i in String(decoding: buffer[(i * size)..<((i + 1) * size)].prefix { $0 != 0 }, as: UTF8.self) }
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
