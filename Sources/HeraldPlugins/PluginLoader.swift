import Foundation
import HeraldCore
import HeraldPluginABI
import Synchronization

/// A plugin that could not be loaded, and why: shown by `herald drivers` and before a run.
public struct PluginProblem: Sendable, CustomStringConvertible {
    public var path: String
    public var reason: String
    public var description: String { "\(path): \(reason)" }
}

/// What loading a set of plugin directories produced.
public struct PluginLoad: Sendable {
    public var entries: [DriverEntry] = []
    public var problems: [PluginProblem] = []
    /// The directories searched, in order.
    public var directories: [String] = []
}

/// Finds and loads driver plugins (shared libraries exporting `herald_plugin_entry`).
///
/// Only directories the user names are searched: `HERALD_PLUGIN_PATH` (colon-separated)
/// and `--plugin-dir`. The working directory is never searched implicitly, so running a
/// script from a downloaded folder cannot load code from it.
public enum PluginLoader {
    /// The environment variable listing plugin directories.
    public static let environmentVariable = "HERALD_PLUGIN_PATH"
    public static let abiVersion = UInt32(HERALD_PLUGIN_ABI_VERSION)

    /// Plugin directories from the environment, then the explicit ones.
    public static func directories(explicit: [String], environment: [String: String] = ProcessInfo.processInfo.environment)
        -> [String]
    {
        let fromEnvironment = (environment[environmentVariable] ?? "").split(separator: ":").map(String.init)
        var seen = Set<String>()
        return (fromEnvironment + explicit).filter { !$0.isEmpty && seen.insert($0).inserted }
    }

    /// dlopen keeps one copy per path; this keeps one parsed table per path too.
    private static let cache = Mutex<[String: Result<[DriverEntry], PluginProblem>]>([:])

    /// Loads every `*.so` / `*.dylib` in the directories. Problems are collected, not
    /// thrown: one broken plugin must not hide the others or the built-in drivers.
    public static func load(directories: [String], reserved: Set<String> = []) -> PluginLoad {
        var result = PluginLoad(directories: directories)
        var ids = reserved
        for directory in directories {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                result.problems.append(PluginProblem(path: directory, reason: "plugin directory does not exist"))
                continue
            }
            if let problem = PluginPreflight.problem(directory: directory) {
                result.problems.append(PluginProblem(path: directory, reason: problem))
                continue
            }
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted()
            for file in files where file.hasSuffix(".so") || file.hasSuffix(".dylib") {
                let path = URL(fileURLWithPath: directory).appendingPathComponent(file).standardizedFileURL.path
                switch loadCached(path) {
                case .failure(let problem): result.problems.append(problem)
                case .success(let entries):
                    for entry in entries {
                        guard ids.insert(entry.descriptor.id).inserted else {
                            result.problems.append(
                                PluginProblem(path: path, reason: "driver id '\(entry.descriptor.id)' is already taken; it was not loaded"))
                            continue
                        }
                        result.entries.append(entry)
                    }
                }
            }
        }
        return result
    }

    static func loadCached(_ path: String) -> Result<[DriverEntry], PluginProblem> {
        if let cached = cache.withLock({ $0[path] }) { return cached }
        let loaded: Result<[DriverEntry], PluginProblem>
        do {
            loaded = .success(try loadPlugin(path))
        } catch let problem as PluginProblem {
            loaded = .failure(problem)
        } catch {
            loaded = .failure(PluginProblem(path: path, reason: "\(error)"))
        }
        cache.withLock { $0[path] = loaded }
        return loaded
    }

    static func loadPlugin(_ path: String) throws -> [DriverEntry] {
        // Checked from the file first: dlopen would already run the library's constructors.
        if let problem = PluginPreflight.problem(file: path) { throw PluginProblem(path: path, reason: problem) }
        let library: DynamicLibrary
        do {
            library = try DynamicLibrary(path: path)
        } catch {
            throw PluginProblem(path: path, reason: "cannot be loaded: \(error)")
        }
        guard let symbol = library.symbol("herald_plugin_entry") else {
            throw PluginProblem(
                path: path, reason: "is not a Herald plugin: it exports no herald_plugin_entry (see docs/drivers.md)")
        }
        typealias Entry = @convention(c) () -> UnsafePointer<herald_plugin_v1>?
        let entry = unsafeBitCast(symbol, to: Entry.self)
        guard let table = entry()?.pointee else {
            throw PluginProblem(path: path, reason: "herald_plugin_entry returned no plugin table")
        }
        guard table.abi_version == abiVersion else {
            throw PluginProblem(
                path: path,
                reason: "was built for plugin ABI \(table.abi_version); this Herald loads ABI \(abiVersion). "
                    + "Rebuild it against this Herald's herald_plugin.h")
        }
        let pluginName = table.name.map { String(cString: $0) } ?? "unnamed"
        let pluginVersion = table.version.map { String(cString: $0) } ?? "?"
        guard let drivers = table.drivers, table.driver_count > 0 else {
            throw PluginProblem(path: path, reason: "plugin \(pluginName) declares no drivers")
        }
        var entries: [DriverEntry] = []
        for index in 0..<table.driver_count {
            let driver = drivers[index]
            guard let json = driver.descriptor_json else {
                throw PluginProblem(path: path, reason: "driver \(index) has no descriptor")
            }
            let origin = "plugin \(pluginName) \(pluginVersion) (\(path))"
            let (descriptor, channels): (DriverDescriptor, Int?)
            do {
                (descriptor, channels) = try PluginJSON.descriptor(String(cString: json), origin: origin)
            } catch {
                throw PluginProblem(path: path, reason: "driver \(index): \(error)")
            }
            let problems = descriptor.contractProblems
            guard problems.isEmpty else {
                throw PluginProblem(path: path, reason: "driver \(descriptor.id): " + problems.joined(separator: "; "))
            }
            guard driver.open != nil, driver.close != nil else {
                throw PluginProblem(path: path, reason: "driver \(descriptor.id) lacks open() or close()")
            }
            let table = DriverTable(driver: driver)
            if descriptor.kind == .timeTagger {
                guard driver.acquire != nil, let channels, channels > 0 else {
                    throw PluginProblem(path: path, reason: "time tagger \(descriptor.id) needs acquire() and \"channels\"")
                }
                entries.append(
                    DriverEntry(descriptor: descriptor) { config in
                        try PluginTimeTagger(
                            name: config.name, descriptor: descriptor, driver: table.driver, settings: config.settings,
                            channels: channels)
                    })
            } else {
                entries.append(
                    DriverEntry(descriptor: descriptor) { config in
                        try PluginDevice(name: config.name, descriptor: descriptor, driver: table.driver, settings: config.settings)
                    })
            }
        }
        return entries
    }
}

extension PluginProblem: Error {}

/// A plugin's static table of C function pointers: immutable for the life of the process,
/// and thread-safe by the ABI's rules (herald_plugin.h), hence sendable.
struct DriverTable: @unchecked Sendable {
    let driver: herald_driver_v1
}
