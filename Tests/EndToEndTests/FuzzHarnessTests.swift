import Foundation
import Testing

/// Every input parser under `herald-fuzz` (Sources/HeraldFuzz): thousands of mutated seeds
/// each, none may crash or hang. `make fuzz` runs the same targets for 100 000 executions.
@Suite struct FuzzHarnessTests {
    static var fuzz: String { Paths.herald.deletingLastPathComponent().appendingPathComponent("herald-fuzz").path }
    static let corpus = Paths.root.appendingPathComponent("Tests/Fuzz/corpus")

    static func seeds(_ target: String) throws -> [String] {
        switch target {
        case "tttr":
            let samples = TimeTagFileTests.samples
            return ["hydraharp/v20_t3.ptu", "hydraharp/v20.ht3", "timeharp/v50.t3r", "hydraharp/v10_t3.ptu", "hydraharp/v20_t2.ptu"]
                .map { samples.appendingPathComponent($0).path }
        case "script":
            let dir = Paths.root.appendingPathComponent("Experiments")
            return try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".yaml") }.sorted()
                .map { dir.appendingPathComponent($0).path }
        case "csv":
            return try FileManager.default.contentsOfDirectory(atPath: corpus.path).filter { $0.hasSuffix(".csv") }.sorted()
                .map { corpus.appendingPathComponent($0).path }
        case "node":
            return try FileManager.default.contentsOfDirectory(atPath: corpus.path).filter { $0.hasPrefix("node-") }.sorted()
                .map { corpus.appendingPathComponent($0).path }
        default:
            return ["run-tomography-16.h5", "run-heralds.h5"].map { corpus.appendingPathComponent($0).path }
        }
    }

    @Test(arguments: [("tttr", 2000), ("script", 2000), ("csv", 1000), ("runfile", 2000), ("node", 4000)])
    func mutatedInputsNeverCrashOrHang(target: String, executions: Int) async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        // The bound only turns a hang into a failure (timeout exits 124); it measures nothing.
        let r = try await runProcess(
            "timeout", ["900", Self.fuzz, target, "--iterations", "\(executions)", "--seed", "7", "--work", dir.path] + Self.seeds(target))
        #expect(r.status == 0, "herald-fuzz \(target) exited \(r.status) (124: hung; a crash leaves its input in the work folder)\n\(r.stdout)\(r.stderr.suffix(3000))")
        let line = r.stdout.split(separator: "\n").last.map(String.init) ?? ""
        #expect(line.hasPrefix("herald-fuzz \(target): \(executions) executions"), "\(r.stdout)")
        // Both outcomes must occur, or the mutations are not reaching the parser.
        let numbers = line.split(separator: " ").compactMap { Int($0) }
        #expect(numbers.count >= 3 && numbers[1] > 0 && numbers[2] > 0, "\(line)")
    }
}
