// swift-tools-version: 6.1
// Herald: a hardware-in-the-loop experiment runner for quantum-photonics labs.
//
// Data flows one way: script → plan → sequencer → devices → events → store/analysis.
// Each C library sits behind exactly one thin Swift wrapper module (HeraldHDF5, HeraldUSB).
import PackageDescription

let swiftSettings: [SwiftSetting] = [.swiftLanguageMode(.v6)]

let package = Package(
    name: "Herald",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "herald", targets: ["herald"]),
        .executable(name: "herald-bench", targets: ["HeraldBench"]),
        .executable(name: "herald-fuzz", targets: ["HeraldFuzz"]),
        .library(name: "HeraldCore", targets: ["HeraldCore"]),
        .library(name: "HeraldRunner", targets: ["HeraldRunner"]),
        .library(name: "DriverConformance", targets: ["DriverConformance"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.0.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-numerics", from: "1.0.0"),
        .package(url: "https://github.com/pointfreeco/swift-clocks", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-crypto", "3.0.0"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.1.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.0.0"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.0.0"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.28.0"),
        .package(url: "https://github.com/apple/swift-certificates", from: "1.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.0.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-websocket", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.0.0"),
        // Without its CasePaths trait: the expression parser needs no enum case paths, and the
        // trait would pull in swift-syntax's macro build.
        .package(url: "https://github.com/pointfreeco/swift-parsing", from: "0.15.0", traits: []),
        // The run catalogue: SQLite by default, PostgreSQL for a lab-wide one.
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.0.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.0"),
    ],
    targets: [
        // MARK: C system libraries (pkg-config; Debian -dev packages)
        .systemLibrary(
            name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
            providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(
            name: "CLibDeflate", path: "Sources/CLibDeflate", pkgConfig: "libdeflate",
            providers: [.apt(["libdeflate-dev"])]),
        .systemLibrary(
            name: "CLibUSB", path: "Sources/CLibUSB", pkgConfig: "libusb-1.0",
            providers: [.apt(["libusb-1.0-0-dev"])]),
        .systemLibrary(
            name: "CUDev", path: "Sources/CUDev", pkgConfig: "libudev",
            providers: [.apt(["libudev-dev"])]),

        // MARK: Library modules, one job each
        .target(
            name: "HeraldCore",
            dependencies: [
                .product(name: "Numerics", package: "swift-numerics"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(
            name: "HeraldScript",
            dependencies: ["HeraldCore", "Yams", .product(name: "Parsing", package: "swift-parsing")],
            swiftSettings: swiftSettings),
        .target(
            name: "HeraldAnalysis",
            dependencies: ["HeraldCore", .product(name: "Numerics", package: "swift-numerics")],
            // Optimised even in debug builds: the statistical tests fit tomography thousands of
            // times, which unoptimised code makes the slowest part of `swift test`.
            swiftSettings: swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        .target(
            name: "HeraldSequencer",
            dependencies: [
                "HeraldCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .target(name: "HeraldHDF5", dependencies: ["CHDF5", "CLibDeflate"], swiftSettings: swiftSettings),
        // Reads recorded runs (summary, tag stream, the stored events a recount replays): used by
        // the store, the replay driver and `herald analyze`, so no driver depends on the store.
        .target(name: "HeraldRunReader", dependencies: ["HeraldCore", "HeraldHDF5"], swiftSettings: swiftSettings),
        .target(
            name: "HeraldStore",
            dependencies: [
                "HeraldCore", "HeraldHDF5", "HeraldRunReader", "HeraldTTTR", .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings),
        // Reads time-tag recordings (PicoQuant PTU, Swabian dumps). Optimised in debug builds
        // too: tests decode real files of millions of records.
        .target(
            name: "HeraldTTTR", dependencies: ["HeraldCore"],
            swiftSettings: swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // The node protocol: Protos/herald/node/v1/node.proto's generated messages and gRPC stubs
        // (committed; `make protos` regenerates them) and their conversions to Herald's vocabulary.
        .target(
            name: "HeraldNodeProtocol",
            dependencies: [
                "HeraldCore",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
            ],
            swiftSettings: swiftSettings),
        // Nodes: the agent that serves a host's devices over gRPC with mutual TLS, the remote
        // devices a coordinator drives, leases, roles, the audit log and the lab CA.
        .target(
            name: "HeraldNode",
            dependencies: [
                "HeraldCore", "HeraldNodeProtocol",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // A run as it goes: the events digested into one snapshot (progress, rates, pauses,
        // results), read by the terminal display and the monitor.
        .target(name: "HeraldLive", dependencies: ["HeraldCore"], swiftSettings: swiftSettings),
        // The live monitor's web server: the page, its WebSocket feed and /metrics. Read-only.
        .target(
            name: "HeraldMonitor",
            dependencies: [
                "HeraldCore", "HeraldLive",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdWebSocket", package: "hummingbird-websocket"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // The run catalogue: every run registered at its start and updated at its stop, queried
        // by `herald runs`; an index over the HDF5 files (which stay the record of truth).
        .target(
            name: "HeraldCatalogue",
            dependencies: [
                "HeraldCore", "HeraldRunReader", "HeraldHDF5",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        // `herald report`: one self-contained HTML file with inline SVG plots of a run file.
        .target(
            name: "HeraldReport", dependencies: ["HeraldCore", "HeraldRunReader", "HeraldHDF5", "HeraldAnalysis"],
            swiftSettings: swiftSettings),
        // The C ABI of driver plugins (one header), and the loader that dlopens them.
        .target(name: "HeraldPluginABI", path: "Sources/HeraldPluginABI"),
        .target(name: "HeraldPlugins", dependencies: ["HeraldCore", "HeraldPluginABI"], swiftSettings: swiftSettings),
        // The driver conformance kit: one reusable suite any driver's tests call.
        .target(name: "DriverConformance", dependencies: ["HeraldCore"], swiftSettings: swiftSettings),
        .target(name: "HeraldUSB", dependencies: ["CLibUSB", "CUDev"], swiftSettings: swiftSettings),
        .target(name: "HeraldUSBProtocols", dependencies: ["HeraldUSB"], swiftSettings: swiftSettings),
        // Serial ports and TCP sockets under the same link protocols as USB (LAN and RS-232 instruments).
        .target(name: "HeraldTransports", dependencies: ["HeraldUSBProtocols"], swiftSettings: swiftSettings),
        .target(
            name: "HeraldRunner",
            dependencies: [
                "HeraldCore", "HeraldScript", "HeraldSequencer", "HeraldStore", "HeraldRunReader", "HeraldHDF5", "HeraldAnalysis", "HeraldPlugins",
                "SimulatedLab", "MockLaser", "MockRotator", "MockTimeTagger", "MockShutter", "MockCounter", "MockNetwork", "ReplayTimeTagger",
                "MockStage", "MockPowerMeter", "MockTemperatureController", "ThorlabsPM100", "ThorlabsTED4015", "NewportSMC100",
                "ThorlabsITC4001", "ThorlabsElliptec", "S15TDC1", "HeraldNode", "SimulatedInstruments", "USBInstrument", "HeraldUSB", "HeraldTransports",
                "HeraldCatalogue",
                .product(name: "Clocks", package: "swift-clocks"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "herald",
            dependencies: [
                "HeraldRunner", "HeraldCore", "HeraldScript", "HeraldUSB", "HeraldAnalysis", "HeraldStore", "HeraldRunReader", "HeraldTTTR",
                "DriverConformance", "HeraldNode", "HeraldLive", "HeraldMonitor", "HeraldReport", "HeraldCatalogue",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),

        // Bounded corpus-mutation fuzzing of every input parser (make fuzz; a short run in make test).
        .executableTarget(
            name: "HeraldFuzz",
            dependencies: [
                "HeraldAnalysis", "HeraldCore", "HeraldRunner", "HeraldRunReader", "HeraldScript", "HeraldStore", "HeraldTTTR", "HeraldNode",
                "HeraldNodeProtocol", "SimulatedLab",
            ],
            swiftSettings: swiftSettings),
        .executableTarget(
            name: "HeraldBench",
            dependencies: ["HeraldAnalysis", "HeraldCore", "HeraldHDF5", "HeraldTTTR", "SimulatedLab", "HeraldNode", "HeraldNodeProtocol", "HeraldCatalogue"],
            swiftSettings: swiftSettings),

        // MARK: Drivers (each its own target; mocks share one simulated lab)
        .target(
            name: "SimulatedLab",
            dependencies: [
                "HeraldCore", .product(name: "Clocks", package: "swift-clocks"),
                .product(name: "Numerics", package: "swift-numerics"),
                .product(name: "HeapModule", package: "swift-collections"),
            ], path: "Drivers/SimulatedLab",
            // Optimised in debug builds too: the statistical tests simulate millions of photons.
            swiftSettings: swiftSettings + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // USB instrument drivers: real protocols over libusb (tested against emulated devices).
        .target(
            name: "USBInstrument", dependencies: ["HeraldCore", "HeraldUSB", "HeraldUSBProtocols", "HeraldTransports"], path: "Drivers/USBInstrument",
            swiftSettings: swiftSettings),
        .target(
            name: "ThorlabsITC4001", dependencies: ["HeraldCore", "HeraldUSB", "HeraldUSBProtocols", "HeraldTransports", "USBInstrument"],
            path: "Drivers/ThorlabsITC4001", swiftSettings: swiftSettings),
        .target(
            name: "ThorlabsElliptec", dependencies: ["HeraldCore", "HeraldUSB", "HeraldUSBProtocols", "HeraldTransports", "USBInstrument"],
            path: "Drivers/ThorlabsElliptec", swiftSettings: swiftSettings),
        .target(
            name: "ThorlabsPM100", dependencies: ["HeraldCore", "HeraldUSBProtocols", "USBInstrument"],
            path: "Drivers/ThorlabsPM100", swiftSettings: swiftSettings),
        .target(
            name: "ThorlabsTED4015", dependencies: ["HeraldCore", "HeraldUSBProtocols", "USBInstrument"],
            path: "Drivers/ThorlabsTED4015", swiftSettings: swiftSettings),
        .target(
            name: "NewportSMC100", dependencies: ["HeraldCore", "HeraldUSBProtocols", "USBInstrument"],
            path: "Drivers/NewportSMC100", swiftSettings: swiftSettings),
        .target(
            name: "S15TDC1", dependencies: ["HeraldCore", "HeraldUSB", "HeraldUSBProtocols", "HeraldTransports", "USBInstrument"],
            path: "Drivers/S15TDC1", swiftSettings: swiftSettings),
        // The instruments `--mock` puts under the real USB/serial/LAN drivers, on the simulated lab.
        .target(
            name: "SimulatedInstruments", dependencies: ["HeraldCore", "HeraldUSBProtocols", "SimulatedLab", "USBInstrument"],
            path: "Drivers/SimulatedInstruments", swiftSettings: swiftSettings),
        .target(
            name: "MockLaser", dependencies: ["HeraldCore", "SimulatedLab"], path: "Drivers/MockLaser",
            swiftSettings: swiftSettings),
        .target(
            name: "MockRotator", dependencies: ["HeraldCore", "SimulatedLab"],
            path: "Drivers/MockRotator", swiftSettings: swiftSettings),
        .target(
            name: "MockTimeTagger", dependencies: ["HeraldCore", "SimulatedLab"],
            path: "Drivers/MockTimeTagger", swiftSettings: swiftSettings),
        .target(name: "MockStage", dependencies: ["HeraldCore", "SimulatedLab"], path: "Drivers/MockStage", swiftSettings: swiftSettings),
        .target(name: "MockPowerMeter", dependencies: ["HeraldCore", "SimulatedLab"], path: "Drivers/MockPowerMeter", swiftSettings: swiftSettings),
        .target(
            name: "MockTemperatureController", dependencies: ["HeraldCore", "SimulatedLab"], path: "Drivers/MockTemperatureController",
            swiftSettings: swiftSettings),
        .target(
            name: "MockShutter", dependencies: ["HeraldCore", "SimulatedLab"],
            path: "Drivers/MockShutter", swiftSettings: swiftSettings),
        .target(
            name: "MockCounter", dependencies: ["HeraldCore", "SimulatedLab"],
            path: "Drivers/MockCounter", swiftSettings: swiftSettings),
        // The instruments of the simulated quantum network: entanglers, qubit readouts, the analyser's tagger.
        .target(
            name: "MockNetwork", dependencies: ["HeraldCore", "SimulatedLab"],
            path: "Drivers/MockNetwork", swiftSettings: swiftSettings),
        // Plays a recording (PTU, Swabian dump, Herald run) back through the tagger interface.
        .target(
            name: "ReplayTimeTagger", dependencies: ["HeraldCore", "HeraldRunReader", "HeraldTTTR"],
            path: "Drivers/ReplayTimeTagger", swiftSettings: swiftSettings),

        // MARK: Tests
        .testTarget(
            name: "HeraldCoreTests", dependencies: ["HeraldCore", .product(name: "Numerics", package: "swift-numerics")],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "HeraldScriptTests", dependencies: ["HeraldScript", "HeraldRunner"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "HeraldAnalysisTests", dependencies: ["HeraldAnalysis", "HeraldCore"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SimulatedLabTests", dependencies: ["SimulatedLab", "MockTimeTagger", "HeraldCore"],
            swiftSettings: swiftSettings),
        .testTarget(name: "HeraldTTTRTests", dependencies: ["HeraldTTTR", "HeraldCore"], swiftSettings: swiftSettings),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "HeraldRunner", "HeraldCore", "HeraldAnalysis", "HeraldStore", "HeraldRunReader", "HeraldTTTR", "SimulatedLab", "herald", "HeraldFuzz", "HeraldScript",
                "DriverConformance", "HeraldPlugins", "HeraldUSBProtocols", "S15TDC1", "HeraldNode", "HeraldNodeProtocol", "HeraldMonitor",
                "HeraldLive", "HeraldCatalogue",
                .product(name: "Numerics", package: "swift-numerics"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
            ],
            swiftSettings: swiftSettings),
    ]
)
