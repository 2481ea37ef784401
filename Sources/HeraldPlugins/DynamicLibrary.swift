#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The one wrapper around dlopen/dlsym/dlerror: a loaded shared library, and a typed
/// error carrying the loader's own message.
struct DynamicLibrary: @unchecked Sendable {
    /// dlopen's handle; never closed: a plugin's code may still be referenced by devices,
    /// and unloading Swift code from a process is not supported.
    let handle: UnsafeMutableRawPointer
    let path: String

    struct LoadError: Error, CustomStringConvertible {
        var description: String
    }

    /// Loads with every symbol resolved now (a missing dependency fails here, not mid-run)
    /// and kept local, so two plugins cannot clash on symbol names.
    init(path: String) throws {
        guard let handle = dlopen(path, RTLD_NOW | RTLD_LOCAL) else {
            throw LoadError(description: Self.lastError() ?? "dlopen failed")
        }
        self.handle = handle
        self.path = path
    }

    func symbol(_ name: String) -> UnsafeMutableRawPointer? {
        _ = dlerror()
        return dlsym(handle, name)
    }

    static func lastError() -> String? {
        guard let message = dlerror() else { return nil }
        return String(cString: message)
    }
}
