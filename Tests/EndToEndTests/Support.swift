import Foundation
import Testing

enum Paths {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func temporaryDirectory() throws -> URL {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-tests-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }

    /// The Python with h5py that `make test` prepared; tests fail (not skip) without it.
    static var python: String {
        ProcessInfo.processInfo.environment["HERALD_PYTHON"] ?? root.appendingPathComponent(".venv/bin/python").path
    }

    /// The `herald` executable built alongside the tests.
    static var herald: URL {
        let bundle = Bundle.allBundles.first { $0.bundlePath.hasSuffix(".xctest") }
        let dir = bundle.map { URL(fileURLWithPath: $0.bundlePath).deletingLastPathComponent() }
            ?? root.appendingPathComponent(".build/debug")
        return dir.appendingPathComponent("herald")
    }
}

/// The `devices:` block of the mock Bell-tomography setup (pump, four waveplates, tagger)
/// that the test scripts share; interpolate it at the start of a line.
let bellSetupDevices = """
    devices:
      pump: {driver: mock.laser}
      qwp_a: {driver: mock.rotator, settings: {arm: a, plate: qwp}}
      hwp_a: {driver: mock.rotator, settings: {arm: a, plate: hwp}}
      qwp_b: {driver: mock.rotator, settings: {arm: b, plate: qwp}}
      hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
      tagger: {driver: mock.timetagger}
    """

struct ProcessResult {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// `runProcess` on a thread of its own. A synchronous wait holds one of the cooperative
/// pool's threads (two on CI) for as long as the child runs; a few such waits at once starve
/// the suites that run async work against wall-clock deadlines (the driver conformance kit).
/// Tests that start long children await this instead.
func runProcessOffPool(_ executable: String, _ arguments: [String]) async throws -> ProcessResult {
    try await onThread { try runProcessBlocking(executable, arguments) }
}

/// Runs blocking work (a child to its end, a server's start) on a thread of its own and awaits it.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// Every test waits for its children this way (see ``runProcessOffPool``): a synchronous
/// wait on a pool thread starves other suites' real-time device deadlines on 2 cores.
func runProcess(_ executable: String, _ arguments: [String]) async throws -> ProcessResult {
    try await runProcessOffPool(executable, arguments)
}

/// Blocks the calling thread: only for threads of their own and quick set-up commands.
func runProcessBlocking(_ executable: String, _ arguments: [String]) throws -> ProcessResult {
    let p = Process()
    // Through env, so a bare command name (python3) is looked up on PATH.
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = [executable] + arguments
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    // Read before waiting so a chatty child cannot block on a full pipe.
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ProcessResult(
        status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}
