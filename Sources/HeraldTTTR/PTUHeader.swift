import Foundation

/// A value of a PicoQuant tagged header entry (the tag types of PicoQuant's
/// "apx_tagtypes" appendix).
public enum PTUValue: Sendable, Equatable {
    case empty
    case bool(Bool)
    case int(Int64)
    case bitSet(UInt64)
    case color(UInt64)
    case float(Double)
    /// Days since 1899-12-30 (a Delphi TDateTime), as stored.
    case dateTime(Double)
    case floatArray([Double])
    case ansiString(String)
    case wideString(String)
    /// Binary blobs are skipped, not loaded: only their length is kept.
    case binaryBlob(length: Int)

    /// A display form for `herald inspect`.
    public var text: String {
        switch self {
        case .empty: return "(empty)"
        case .bool(let b): return b ? "true" : "false"
        case .int(let i): return String(i)
        case .bitSet(let b): return "0x" + String(b, radix: 16)
        case .color(let c): return "color 0x" + String(c, radix: 16)
        case .float(let f): return "\(f)"
        case .dateTime: return date.map { ISO8601DateFormatter().string(from: $0) } ?? "invalid date"
        case .floatArray(let a): return "[\(a.count) floats]"
        case .ansiString(let s), .wideString(let s): return s
        case .binaryBlob(let n): return "<\(n) bytes of binary data>"
        }
    }

    /// The date of a `.dateTime` value, or of a plain float holding one (some PicoQuant
    /// software writes `File_CreatingTime` as tyFloat8: days or seconds since 1899-12-30 or
    /// 1601-01-01). A float is read in the first of those ways that lands between 1980 and
    /// 2200; nil if none does.
    public var date: Date? {
        // Seconds from each epoch to the Unix epoch: 1899-12-30 (Delphi TDateTime) is 25 569
        // days before it, 1601-01-01 (Windows FILETIME) 134 774 days.
        let delphi = 25_569.0 * 86_400, windows = 134_774.0 * 86_400
        switch self {
        case .dateTime(let days):
            guard days.isFinite, abs(days) < 1e7 else { return nil }
            return Date(timeIntervalSince1970: days * 86_400 - delphi)
        case .float(let v):
            guard v.isFinite, v > 0 else { return nil }
            let plausible = (315_532_800.0)...(7_258_118_400.0)  // 1980-01-01 ... 2200-01-01
            for unix in [v * 86_400 - delphi, v - delphi, v * 86_400 - windows, v - windows] where plausible.contains(unix) {
                return Date(timeIntervalSince1970: unix)
            }
            return nil
        default:
            return nil
        }
    }

    public var intValue: Int64? {
        switch self {
        case .int(let i): return i
        case .bitSet(let b), .color(let b): return Int64(bitPattern: b)
        case .bool(let b): return b ? 1 : 0
        default: return nil
        }
    }

    public var doubleValue: Double? {
        switch self {
        case .float(let f), .dateTime(let f): return f
        case .int(let i): return Double(i)
        default: return nil
        }
    }
}

/// One header entry: a name, an array index (−1 for scalars) and a value.
public struct PTUTag: Sendable, Equatable {
    public var name: String
    public var index: Int32
    public var value: PTUValue
    /// Byte offset of the entry in the file, for error messages.
    public var offset: Int
}

/// The tagged header of a PicoQuant unified file (.ptu).
public struct PTUHeader: Sendable {
    public var version: String
    public var tags: [PTUTag]
    /// Byte offset of the first TTTR record.
    public var dataOffset: Int

    /// The first tag named `name` (with `index`, if given).
    public subscript(_ name: String, index: Int32? = nil) -> PTUValue? {
        tags.first { $0.name == name && (index == nil || $0.index == index) }?.value
    }

    static let magic = Array("PQTTTR".utf8)

    /// Type codes from PicoQuant's tag-type appendix.
    enum TypeCode: UInt32 {
        case empty = 0xFFFF_0008
        case bool = 0x0000_0008
        case int = 0x1000_0008
        case bitSet = 0x1100_0008
        case color = 0x1200_0008
        case float = 0x2000_0008
        case dateTime = 0x2100_0008
        case floatArray = 0x2001_FFFF
        case ansiString = 0x4001_FFFF
        case wideString = 0x4002_FFFF
        case binaryBlob = 0xFFFF_FFFF
    }

    /// Headers are kilobytes; anything claiming more is corrupt, and must not be allocated.
    static let maximumPayload = 64 << 20

    /// Parses the header from the start of a file through `read`, which returns up to `count`
    /// bytes at an offset (fewer only at the end of the file).
    public static func parse(path: String, read: (Int, Int) throws -> [UInt8]) throws -> PTUHeader {
        var offset = 0
        func take(_ count: Int, _ what: String) throws -> [UInt8] {
            let bytes = try read(offset, count)
            guard bytes.count == count else {
                throw TTTRFileError(
                    path: path, offset: offset,
                    "file ends inside the header (\(what): needed \(count) bytes, \(bytes.count) left); the file is truncated")
            }
            offset += count
            return bytes
        }
        let probe = try read(0, 22)
        guard probe.count >= 6, Array(probe[0..<6]) == magic else {
            throw TTTRFileError(path: path, offset: 0, "not a PicoQuant unified file: the magic is not 'PQTTTR'")
        }
        let head = try take(16, "magic and version")
        let version = cString(head[8..<16])
        var tags: [PTUTag] = []
        while true {
            let start = offset
            let entry = try take(48, "tag entry")
            let name = cString(entry[0..<32])
            let index = Int32(bitPattern: le32(entry, 32))
            let code = le32(entry, 36)
            let raw = le64(entry, 40)
            guard let type = TypeCode(rawValue: code) else {
                throw TTTRFileError(path: path, offset: start + 36, "tag '\(name)' has unknown type code 0x\(String(code, radix: 16, uppercase: true))")
            }
            let value: PTUValue
            switch type {
            case .empty: value = .empty
            case .bool: value = .bool(raw != 0)
            case .int: value = .int(Int64(bitPattern: raw))
            case .bitSet: value = .bitSet(raw)
            case .color: value = .color(raw)
            case .float: value = .float(Double(bitPattern: raw))
            case .dateTime: value = .dateTime(Double(bitPattern: raw))
            case .floatArray, .ansiString, .wideString, .binaryBlob:
                guard raw <= UInt64(maximumPayload) else {
                    throw TTTRFileError(
                        path: path, offset: start + 40, "tag '\(name)' claims \(raw) bytes of data, more than a header can hold; the file is corrupt")
                }
                let length = Int(raw)
                if type == .binaryBlob {
                    let skipped = try read(offset + length - 1, length > 0 ? 1 : 0)
                    guard length == 0 || skipped.count == 1 else {
                        throw TTTRFileError(path: path, offset: offset, "file ends inside the \(length)-byte blob of tag '\(name)'")
                    }
                    offset += length
                    value = .binaryBlob(length: length)
                } else {
                    let payload = try take(length, "data of tag '\(name)'")
                    switch type {
                    case .floatArray:
                        guard length % 8 == 0 else {
                            throw TTTRFileError(path: path, offset: start + 40, "float array '\(name)' has \(length) bytes, not a multiple of 8")
                        }
                        value = .floatArray(stride(from: 0, to: length, by: 8).map { Double(bitPattern: le64(payload, $0)) })
                    case .ansiString:
                        value = .ansiString(cString(payload[...]))
                    default:
                        let units = stride(from: 0, to: length - 1, by: 2).map { UInt16(payload[$0]) | UInt16(payload[$0 + 1]) << 8 }
                        value = .wideString(String(decoding: units.prefix { $0 != 0 }, as: UTF16.self))
                    }
                }
            }
            tags.append(PTUTag(name: name, index: index, value: value, offset: start))
            if name == "Header_End" { break }
        }
        return PTUHeader(version: version, tags: tags, dataOffset: offset)
    }

    static func cString(_ bytes: ArraySlice<UInt8>) -> String {
        String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self).trimmingCharacters(in: .whitespaces)
    }

    static func le32(_ b: [UInt8], _ i: Int) -> UInt32 {
        UInt32(b[i]) | UInt32(b[i + 1]) << 8 | UInt32(b[i + 2]) << 16 | UInt32(b[i + 3]) << 24
    }

    static func le64(_ b: [UInt8], _ i: Int) -> UInt64 {
        UInt64(le32(b, i)) | UInt64(le32(b, i + 4)) << 32
    }
}

/// A time-tag file that cannot be read, with the byte offset of the problem.
public struct TTTRFileError: Error, CustomStringConvertible, Sendable, Equatable {
    public var path: String
    public var offset: Int
    public var message: String

    public init(path: String, offset: Int, _ message: String) {
        self.path = path
        self.offset = offset
        self.message = message
    }

    public var description: String { "\(path): byte \(offset): \(message)" }
}
