import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Checks a plugin candidate before `dlopen`, which runs the library's constructors: any
/// `.so` in a plugin directory would otherwise execute code just by being listed there,
/// even under `herald validate` and `herald drivers`.
///
/// The candidate must not be writable by everyone (nor its directory), must be an ELF
/// shared object for this machine, and must export `herald_plugin_entry` in its dynamic
/// symbol table, read from the file without loading it.
enum PluginPreflight {
    static let entrySymbol = "herald_plugin_entry"

    /// A problem that keeps the file from being loaded, or nil.
    static func problem(directory: String) -> String? {
        var st = stat()
        guard stat(directory, &st) == 0 else { return nil }
        if st.st_mode & S_IWOTH != 0 {
            return "plugin directory is writable by every user, so anyone could plant code in it; "
                + "run `chmod o-w \(directory)` to load plugins from it"
        }
        return nil
    }

    static func problem(file path: String) -> String? {
        var st = stat()
        guard stat(path, &st) == 0 else { return "cannot be read" }
        if st.st_mode & S_IWOTH != 0 {
            return "is writable by every user, so anyone could change the code it runs; run `chmod o-w \(path)` to load it"
        }
        guard let handle = FileHandle(forReadingAtPath: path) else { return "cannot be read" }
        defer { try? handle.close() }
        // The section headers sit at the end of the file: read the whole library (plugins
        // are small), bounded so a huge stray file is refused rather than read.
        guard st.st_size <= 256 << 20 else { return "is larger than 256 MB; not loaded as a plugin" }
        guard let data = try? handle.readToEnd() else { return "cannot be read" }
        switch ELFSymbols.exports(entrySymbol, in: [UInt8](data)) {
        case .success(true): return nil
        case .success(false):
            return "is not a Herald plugin: it exports no \(entrySymbol) (see docs/drivers.md); not loaded, so none of its code ran"
        case .failure(let reason): return "is not a loadable plugin: \(reason); not loaded"
        }
    }
}

/// Just enough of the ELF format (System V gABI) to find a name in `.dynsym`, with every
/// offset bounds-checked: the input is any file a user dropped in a folder.
enum ELFSymbols {
    struct Malformed: Error, CustomStringConvertible {
        var description: String
    }

    static func exports(_ name: String, in bytes: [UInt8]) -> Result<Bool, Malformed> {
        do { return .success(try find(name, bytes)) } catch let e as Malformed { return .failure(e) } catch {
            return .failure(Malformed(description: "\(error)"))
        }
    }

    static func find(_ name: String, _ b: [UInt8]) throws -> Bool {
        guard b.count >= 64, b[0] == 0x7f, b[1] == 0x45, b[2] == 0x4c, b[3] == 0x46 else {
            throw Malformed(description: "not an ELF file")
        }
        guard b[4] == 2 else { throw Malformed(description: "a 32-bit ELF file; this Herald loads 64-bit plugins") }
        guard b[5] == 1 else { throw Malformed(description: "a big-endian ELF file") }
        func u16(_ o: Int) throws -> Int {
            guard o >= 0, o <= b.count - 2 else { throw Malformed(description: "truncated at byte \(o)") }
            return Int(b[o]) | Int(b[o + 1]) << 8
        }
        func u32(_ o: Int) throws -> Int { try u16(o) | (try u16(o + 2)) << 16 }
        // Every offset and size read from the file must lie within it: then no sum below can
        // overflow (a crafted file would otherwise trap the loader).
        func u64(_ o: Int) throws -> Int {
            let v = UInt64(try u32(o)) | UInt64(try u32(o + 4)) << 32
            guard v <= UInt64(b.count) else { throw Malformed(description: "offset or size beyond the end of the file at byte \(o)") }
            return Int(v)
        }
        guard try u16(16) == 3 else { throw Malformed(description: "an ELF file that is not a shared library (e_type \(try u16(16)))") }
        #if arch(x86_64)
        let machine = 62
        #elseif arch(arm64)
        let machine = 183
        #else
        let machine = -1
        #endif
        let fileMachine = try u16(18)
        if machine >= 0 && fileMachine != machine {
            throw Malformed(description: "built for another processor (e_machine \(fileMachine))")
        }
        let sectionTable = try u64(0x28), entrySize = try u16(0x3a), count = try u16(0x3c)
        guard entrySize >= 64, count < 65_536, count * entrySize <= b.count - sectionTable else {
            throw Malformed(description: "bad section header table")
        }
        struct Section { var type: Int, offset: Int, size: Int, link: Int, entry: Int }
        var sections: [Section] = []
        for i in 0..<count {
            let o = sectionTable + i * entrySize
            sections.append(
                Section(type: try u32(o + 4), offset: try u64(o + 24), size: try u64(o + 32), link: try u32(o + 40), entry: try u64(o + 56)))
        }
        let target = Array(name.utf8)
        // SHT_DYNSYM = 11: the symbols the dynamic loader would bind.
        for symbols in sections where symbols.type == 11 {
            guard symbols.link < sections.count, symbols.entry >= 24 else { throw Malformed(description: "bad .dynsym") }
            let strings = sections[symbols.link]
            guard strings.size <= b.count - strings.offset, symbols.size <= b.count - symbols.offset else {
                throw Malformed(description: "symbol table beyond the end of the file")
            }
            for k in 0..<(symbols.size / symbols.entry) {
                let s = symbols.offset + k * symbols.entry
                let nameOffset = try u32(s), shndx = try u16(s + 6)
                guard shndx != 0, nameOffset < strings.size else { continue }  // undefined: imported, not exported
                var p = strings.offset + nameOffset, matched = true
                for c in target {
                    guard p < strings.offset + strings.size, b[p] == c else {
                        matched = false
                        break
                    }
                    p += 1
                }
                if matched && p < b.count && b[p] == 0 { return true }
            }
        }
        return false
    }
}
