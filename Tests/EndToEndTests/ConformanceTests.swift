import DriverConformance
import Foundation
import HeraldCore
import HeraldPlugins
import HeraldRunner
import SimulatedLab
import Synchronization
import Testing

/// The driver conformance kit on every built-in driver, on the example plugin (built as a
/// dynamic library and loaded through the plugin path), and on a broken driver it must fail.
@Suite struct ConformanceTests {
    static func mockEntries() -> [(DriverEntry, DeviceConfig)] {
        let registry = Herald.registry(lab: SimulatedLab(seed: 9))
        func pair(_ id: String, _ name: String, _ settings: [String: Value] = [:]) -> (DriverEntry, DeviceConfig) {
            (registry.entry(id)!, DeviceConfig(name: name, driver: id, settings: settings))
        }
        return [
            pair("mock.laser", "pump"),
            pair("mock.rotator", "hwp_a", ["arm": .text("a"), "plate": .text("hwp")]),
            pair("mock.shutter", "shutter"),
            pair("mock.counter", "counter"),
            pair("mock.timetagger", "tagger", ["bandwidth": .quantity(Quantity(50e6, .frequency))]),
            pair(
                "replay.timetagger", "replay",
                ["file": .text(TimeTagFileTests.samples.appendingPathComponent("hydraharp/v20_t2.ptu").path)]),
        ]
    }

    @Test("every built-in driver passes the conformance kit", arguments: 0..<6)
    func builtInDriversConform(index: Int) async throws {
        let (entry, config) = Self.mockEntries()[index]
        var kit = DriverConformance(entry: entry, config: config)
        kit.callLimit = Self.loadedMachineLimit
        let report = await kit.run()
        #expect(report.failures.isEmpty, "\(report)")
        #expect(report.checks.count >= 8, "\(report)")
    }

    /// The kit's real-time bound per call, here only a guard against a hung driver: with the
    /// whole suite running beside it on 2 cores a healthy call can take seconds (the kit's
    /// 5 s default failed CI runs this way). No check here measures speed.
    static let loadedMachineLimit = Duration.seconds(60)

    /// Builds Drivers/ExamplePlugin once per test process, as a user would: its own package.
    /// The build runs on a thread of its own (``runProcess``), not on the cooperative pool.
    static let pluginBuild = Task<Result<String, PluginBuildError>, Never> {
        let package = Paths.root.appendingPathComponent("Drivers/ExamplePlugin").path
        let r = try? await runProcess("swift", ["build", "--package-path", package, "-c", "debug"])
        guard let r, r.status == 0 else { return .failure(PluginBuildError(output: r.map { $0.stdout + $0.stderr } ?? "swift not found")) }
        return .success(package + "/.build/debug")
    }
    static var pluginDirectory: Result<String, PluginBuildError> { get async { await pluginBuild.value } }

    struct PluginBuildError: Error { var output: String }

    @Test("the example plugin builds as a dynamic library, loads through the plugin path and conforms")
    func examplePluginConforms() async throws {
        let dir = try await Self.pluginDirectory.get()
        let load = PluginLoader.load(directories: [dir])
        #expect(load.problems.isEmpty, "\(load.problems)")
        let ids = load.entries.map(\.descriptor.id).sorted()
        #expect(ids == ["example.pulser", "example.shutter"])
        for entry in load.entries {
            #expect(entry.descriptor.origin.contains("plugin herald-example 1.0.0"))
            let config = DeviceConfig(
                name: entry.descriptor.kind == .shutter ? "beam" : "pulser", driver: entry.descriptor.id,
                settings: entry.descriptor.kind == .shutter ? ["transit_time": .quantity(.seconds(0.002))] : [:])
            var kit = DriverConformance(entry: entry, config: config)
            kit.acquisition = .milliseconds(30)
            kit.callLimit = Self.loadedMachineLimit
            let report = await kit.run()
            #expect(report.failures.isEmpty, "\(report)")
        }
    }

    @Test("a script runs plugin devices next to mocks, from --plugin-dir")
    func pluginDevicesRunInAScript() async throws {
        let plugins = try await Self.pluginDirectory.get()
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = """
            herald: 1
            name: plugin-run
            devices:
              beam: {driver: example.shutter, settings: {transit_time: 1 ms}}
              pulser: {driver: example.pulser}
            steps:
              - set: {beam.open: true, pulser.rate: 10 kHz}
              - acquire: {device: pulser, duration: 200 ms}
            """
        let path = dir.appendingPathComponent("plugin.yaml").path
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("plugin.h5").path
        // Without the plugin directory the drivers are unknown, and validation says where.
        let without = try await runProcess(Paths.herald.path, ["validate", path])
        #expect(without.status == 65 && without.stderr.contains("example.shutter"), "\(without.stderr)")
        let r = try await runProcess(Paths.herald.path, ["run", path, "--plugin-dir", plugins, "--out", out, "--json"])
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        // 10 kHz for 200 ms on channel 1, each echoed on channel 2.
        #expect(report?["tags"] as? Int == 4000)
        let probe = """
            import h5py, sys
            f = h5py.File(sys.argv[1], "r")
            log = [s.decode() if isinstance(s, bytes) else str(s) for s in f["user/herald/log"][()]]
            print(len(f["photon_data/timestamps"]), sorted(set(f["photon_data/detectors"][()].tolist())))
            """
        let p = try await runProcess(Paths.python, ["-c", probe, out])
        #expect(p.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "4000 [1, 2]", "\(p.stdout) \(p.stderr)")
        // `herald drivers` says where each came from.
        let listed = try await runProcess(Paths.herald.path, ["drivers", "--plugin-dir", plugins])
        #expect(listed.stdout.contains("example.pulser  v1.0.0  [time-tagger]  plugin herald-example 1.0.0"))
    }

    @Test("incompatible, foreign and broken plugins are refused with the reason, and the rest still load")
    func badPluginsAreReported() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let header = Paths.root.appendingPathComponent("Sources/HeraldPluginABI/include").path
        func compile(_ name: String, _ source: String) async throws {
            let c = dir.appendingPathComponent(name + ".c")
            try source.write(to: c, atomically: true, encoding: .utf8)
            let r = try await runProcess("cc", ["-shared", "-fPIC", "-I", header, c.path, "-o", dir.appendingPathComponent("lib\(name).so").path])
            #expect(r.status == 0, "\(r.stderr)")
            try FileManager.default.removeItem(at: c)
        }
        try await compile("future", """
            #include "herald_plugin.h"
            static const herald_plugin_v1 table = {99, "future", "9.0", 0, 0};
            const herald_plugin_v1 *herald_plugin_entry(void) { return &table; }
            """)
        try await compile("foreign", "int not_a_plugin(void) { return 1; }")
        try await compile("nokind", """
            #include "herald_plugin.h"
            static void *op(const char *n, const char *s, herald_error *e) { return 0; }
            static void cl(void *d) {}
            static const herald_driver_v1 drivers[] = {{
              "{\\"id\\": \\"bad.laser\\", \\"version\\": \\"1\\", \\"kind\\": \\"laser\\", \\"properties\\": []}",
              op, 0, 0, 0, 0, 0, 0, cl}};
            static const herald_plugin_v1 table = {HERALD_PLUGIN_ABI_VERSION, "bad", "1.0", 1, drivers};
            const herald_plugin_v1 *herald_plugin_entry(void) { return &table; }
            """)
        try Data("not an ELF file".utf8).write(to: dir.appendingPathComponent("libtruncated.so"))
        // A library with a constructor but no entry point: refused from the file, so the
        // constructor must never run (dlopen would run it before any symbol lookup).
        let marker = dir.appendingPathComponent("constructor-ran").path
        try await compile("sneaky", """
            #include <fcntl.h>
            #include <unistd.h>
            __attribute__((constructor)) static void sneak(void) { close(open("\(marker)", O_CREAT | O_WRONLY, 0600)); }
            int not_a_plugin(void) { return 2; }
            """)
        let plugins = try await Self.pluginDirectory.get()
        let load = PluginLoader.load(directories: [dir.path, plugins, "/no/such/dir"])
        let reasons = load.problems.map(\.description)
        #expect(reasons.contains { $0.contains("libfuture.so") && $0.contains("built for plugin ABI 99; this Herald loads ABI 1") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("libforeign.so") && $0.contains("exports no herald_plugin_entry") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("libnokind.so") && $0.contains("a laser must declare 'enabled'") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("libtruncated.so") && $0.contains("not an ELF file") }, "\(reasons)")
        #expect(reasons.contains { $0.contains("libsneaky.so") && $0.contains("none of its code ran") }, "\(reasons)")
        #expect(!FileManager.default.fileExists(atPath: marker), "a library without herald_plugin_entry ran its constructor")
        #expect(reasons.contains { $0.contains("/no/such/dir") && $0.contains("does not exist") }, "\(reasons)")
        #expect(load.entries.count == 2, "the good plugin still loads")
        // Writable by everyone: the directory, or one library, is refused with the fix.
        let open = dir.appendingPathComponent("open")
        try FileManager.default.createDirectory(at: open, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: plugins + "/libHeraldExamplePlugin.so", toPath: open.path + "/libexample.so")
        chmod(open.path, 0o777)
        let fromOpenDir = PluginLoader.load(directories: [open.path]).problems.map(\.description)
        #expect(fromOpenDir.contains { $0.contains("writable by every user") && $0.contains("chmod o-w") }, "\(fromOpenDir)")
        chmod(open.path, 0o755)
        chmod(open.path + "/libexample.so", 0o666)
        let openFile = PluginLoader.load(directories: [open.path])
        #expect(openFile.entries.isEmpty && openFile.problems.contains { $0.description.contains("writable by every user") })
        // Never from the working directory unless listed.
        #expect(PluginLoader.directories(explicit: [], environment: [:]).isEmpty)
        #expect(PluginLoader.directories(explicit: ["/b"], environment: ["HERALD_PLUGIN_PATH": "/a:/b"]) == ["/a", "/b"])
    }

    /// A driver that lies about its limits and leaves its laser on: the kit must say so.
    final class CarelessLaser: Device {
        let name: String
        let state = Mutex((enabled: false, power: 0.0))
        static let descriptor = DriverDescriptor(
            id: "test.careless", version: "0", summary: "", kind: .laser,
            properties: [
                PropertySpec("enabled", .bool), PropertySpec("power", .quantity(.power), range: 0...0.1),
                PropertySpec("locked", .bool, settable: false),
            ])
        var descriptor: DriverDescriptor { Self.descriptor }
        init(name: String) { self.name = name }
        func connect() async throws {}
        func set(_ property: String, to value: Value) async throws {
            state.withLock { s in
                if let b = value.bool { s.enabled = b }
                if let q = value.quantity { s.power = q.value }  // no range check
            }
        }
        func get(_ property: String) async throws -> Value {
            let s = state.withLock { $0 }
            switch property {
            case "power": return .quantity(Quantity(s.power, .power))
            case "locked": return .bool(s.enabled)
            default: return .bool(s.enabled)  // answers for any name
            }
        }
        func enterSafeState() async throws {}  // leaves the laser on
        func disconnect() async {}
    }

    @Test("the kit fails a driver that ignores its limits and its safe state")
    func kitCatchesACarelessDriver() async {
        let entry = DriverEntry(descriptor: CarelessLaser.descriptor) { CarelessLaser(name: $0.name) }
        let report = await DriverConformance(entry: entry, config: DeviceConfig(name: "laser", driver: "test.careless")).run()
        let failed = Set(report.failures.map(\.name))
        #expect(failed.contains("refuses power = 1.1 (above its range)"), "\(report)")
        #expect(failed.contains("safe state leaves enabled = false"), "\(report)")
        #expect(failed.contains("refuses get of an undeclared property"), "\(report)")
        #expect(failed.contains("refuses a write to read-only locked"), "\(report)")
    }
}
