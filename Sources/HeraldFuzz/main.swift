// herald-fuzz: bounded corpus-mutation fuzzing of every parser that reads user input.
//
//   herald-fuzz TARGET --iterations N [--seed S] [--work DIR] [--replay] SEED-FILE...
//   (--replay feeds the seeds unchanged: reproduce a crash from the input it left behind)
//
// TARGET is one of:
//   tttr     PicoQuant PTU / HT3 / T3R and Swabian files: open, header, every record
//            (statistics, tag blocks in picoseconds), as `herald inspect` and replay read them
//   script   experiment scripts through the validator (mock and hardware), as `herald validate`
//   csv      tomography count tables: parse, then linear and maximum-likelihood fits
//   runfile  Herald run files through `herald analyze` (summary, recount) and `herald recover`
//   node     node-protocol messages as a node or a coordinator receives them: tag batches
//            (decoded), describe responses (every descriptor), and session commands run by a
//            node agent on simulated devices, under a controller's lease. The seed's name says
//            which message it holds (node-batch*, node-describe*, node-command*); make seeds with
//            `herald-fuzz node-seeds DIR`
//
// Each iteration mutates one seed (bit flips, extreme numbers, truncation, duplicated or
// deleted spans) and hands it to the parser. An error is the expected outcome for most
// inputs; a crash or a hang is a bug. The input being tried is always at DIR/current.* so a
// crash leaves its reproducer behind. The last line is the count of executions and
// outcomes; the exit status is 0 only if every execution returned.
//
// Seeds live in Tests/Fuzz/corpus (small files made for the purpose) and ../shared/data.
import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldRunner
import HeraldScript
import HeraldRunReader
import HeraldStore
import HeraldTTTR
import HeraldNode
import HeraldNodeProtocol
import SimulatedLab
import SwiftProtobuf

struct Generator: RandomNumberGenerator {
    var state: UInt64
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Values that break naive conversions: huge, tiny, negative, non-finite, off-by-one.
let hostileDoubles: [Double] = [1e300, -1e300, .nan, .infinity, -.infinity, 0, -0.0, 1e-300, 9.3e18, -1, 1e7, 4.9e-324]
let hostileIntegers: [UInt64] = [0, 1, .max, UInt64(Int64.max), UInt64(bitPattern: Int64.min), 0x8000_0000, 0xFFFF_FFFF, 0x7FFF_FFFF]

nonisolated(unsafe) var replaying = false

func mutateBytes(_ input: [UInt8], hotRegion: Int, _ rng: inout Generator) -> [UInt8] {
    if replaying { return input }
    var b = input
    for _ in 0..<Int.random(in: 1...6, using: &rng) {
        guard !b.isEmpty else { break }
        // Mostly in the region that holds structure (a header), sometimes anywhere.
        let limit = Bool.random(using: &rng) && hotRegion > 0 ? min(hotRegion, b.count) : b.count
        let at = Int.random(in: 0..<limit, using: &rng)
        switch Int.random(in: 0..<8, using: &rng) {
        case 0: b[at] ^= UInt8(1) << UInt8.random(in: 0..<8, using: &rng)
        case 1: b[at] = [0x00, 0xFF, 0x7F, 0x80][Int.random(in: 0..<4, using: &rng)]
        case 2, 3:
            let aligned = at & ~7
            let bits = Bool.random(using: &rng)
                ? (hostileDoubles.randomElement(using: &rng) ?? 0).bitPattern : (hostileIntegers.randomElement(using: &rng) ?? 0)
            for k in 0..<8 where aligned + k < b.count { b[aligned + k] = UInt8(truncatingIfNeeded: bits >> (8 * UInt64(k))) }
        case 4: b.removeSubrange(Int.random(in: 0..<b.count, using: &rng)...)
        case 5:
            let n = min(Int.random(in: 1...512, using: &rng), b.count - at)
            b.insert(contentsOf: b[at..<(at + n)], at: Int.random(in: 0...b.count, using: &rng))
        case 6:
            let n = min(Int.random(in: 1...64, using: &rng), b.count - at)
            b.removeSubrange(at..<(at + n))
        default:
            for k in at..<min(b.count, at + Int.random(in: 1...16, using: &rng)) { b[k] = UInt8.random(in: 0...255, using: &rng) }
        }
    }
    return b
}

func mutateText(_ text: String, _ rng: inout Generator) -> String {
    if replaying { return text }
    var lines = text.components(separatedBy: "\n")
    let tokens = [
        "1e400", "-5", "nan", "inf", "0", "1e7 s", "-1 ns", "10 mW", "$nope", "HH", "ZZ", ",", ",,", "\"", "1e308", "-0",
        "99999999999999999999", "1e-320", "#", "   ", "\t", "∞", "0x10",
    ]
    for _ in 0..<Int.random(in: 1...4, using: &rng) {
        guard !lines.isEmpty else { break }
        let i = Int.random(in: 0..<lines.count, using: &rng)
        switch Int.random(in: 0..<6, using: &rng) {
        case 0: lines.remove(at: i)
        case 1: lines.insert(lines[i], at: Int.random(in: 0...lines.count, using: &rng))
        case 2:
            var fields = lines[i].components(separatedBy: ",")
            if !fields.isEmpty { fields[Int.random(in: 0..<fields.count, using: &rng)] = tokens.randomElement(using: &rng) ?? "" }
            lines[i] = fields.joined(separator: ",")
        case 3:
            if let colon = lines[i].lastIndex(of: ":") {
                lines[i] = String(lines[i][...colon]) + " " + (tokens.randomElement(using: &rng) ?? "")
            }
        case 4:
            var chars = Array(lines[i])
            if !chars.isEmpty { chars.remove(at: Int.random(in: 0..<chars.count, using: &rng)) }
            lines[i] = String(chars)
        default:
            let n = Int.random(in: 1...200, using: &rng)
            lines.insert(contentsOf: Array(repeating: lines[i], count: n), at: i)
        }
    }
    return lines.joined(separator: "\n")
}

enum Outcome: String, CaseIterable { case accepted, rejected }

struct Options {
    var target = ""
    var iterations = 1000
    var seed: UInt64 = 1
    var work = FileManager.default.temporaryDirectory.appendingPathComponent("herald-fuzz-\(getpid())").path
    var seeds: [String] = []
    /// Replays the seeds as they are (to reproduce a crash from its saved input).
    var replay = false
}

func parseArguments() -> Options? {
    var o = Options()
    var args = Array(CommandLine.arguments.dropFirst())
    guard let target = args.first else { return nil }
    o.target = target
    args.removeFirst()
    while let a = args.first {
        args.removeFirst()
        switch a {
        case "--iterations": guard let v = args.first.flatMap(Int.init) else { return nil }; o.iterations = v; args.removeFirst()
        case "--seed": guard let v = args.first.flatMap(UInt64.init) else { return nil }; o.seed = v; args.removeFirst()
        case "--work": guard let v = args.first else { return nil }; o.work = v; args.removeFirst()
        case "--replay": o.replay = true
        default: o.seeds.append(a)
        }
    }
    return o
}

/// The node target's lab: two nodes joined by a link, so its entangler and readout work.
func nodeLab() -> SimulatedLab {
    var net = NetworkParameters()
    for name in ["alice", "bob"] { net.nodes[name] = QuantumNodeParameters(name: name) }
    net.links["ab"] = QuantumLinkParameters(name: "ab", nodes: ["alice", "bob"], fibres: [FibreParameters(), FibreParameters()], analyser: AnalyserParameters())
    return SimulatedLab(network: net, seed: 1)
}

/// The node target's devices: one of each kind a node serves, on a simulated lab.
func nodeDevices(_ lab: SimulatedLab) throws -> [any Device] {
    let registry = Herald.registry(lab: lab)
    return try [("pump", "mock.laser"), ("tagger", "mock.timetagger"), ("entangler", "mock.entangler"), ("readout", "mock.qubit-readout")]
        .compactMap { name, driver in
            try registry.entry(driver)?.make(DeviceConfig(name: name, driver: driver, settings: driver.hasPrefix("mock.e") || driver.hasPrefix("mock.q") ? ["node": .text("alice")] : [:]))
        }
}

/// Seeds for the node target: one message of each kind, as the protocol carries them.
func writeNodeSeeds(to dir: String) async throws {
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    var ts: [Int64] = [], cs: [UInt8] = []
    var t: Int64 = 1_000
    for i in 0..<2_000 {
        t += Int64(37 + (i * 7919) % 90_000)
        ts.append(t)
        cs.append(UInt8(1 + i % 4))
    }
    let block = TagBlock(timestamps: ts, channels: cs, excluded: [ExcludedInterval(startPs: 2_000, stopPs: 3_000, reason: "overflow")])
    func write(_ m: some SwiftProtobuf.Message, _ name: String) throws {
        try Data(m.serializedBytes() as [UInt8]).write(to: URL(fileURLWithPath: dir + "/" + name))
    }
    try write(try TagCodec.encode(block), "node-batch.bin")
    try write(await NodeAgent(name: "seed", devices: try nodeDevices(nodeLab())).description, "node-describe.bin")
    let commands: [(String, Herald_Node_V1_Command)] = [
        ("set", .with { $0.call = 1; $0.set = .with { $0.requestID = "r1"; $0.device = "pump"; $0.property = "power"; $0.value = .init(.quantity(Quantity(5e-3, .power))) } }),
        ("get", .with { $0.call = 2; $0.get = .with { $0.device = "pump"; $0.property = "enabled" } }),
        ("configure", .with { $0.call = 3; $0.configure = .with { $0.requestID = "r3"; $0.device = "entangler"; $0.configuration = .with { c in
            c.link = "ab"; c.nodes = ["alice", "bob"]; c.cyclePs = 1_000_000; c.windowLengthPs = 50_000; c.timeoutPs = 1_000_000_000
            c.patterns = [.with { $0.channels = [1, 2] }] } } }),
        ("measure", .with { $0.call = 4; $0.measure = .with { $0.requestID = "r4"; $0.device = "readout"; $0.basis = "Z" } }),
    ]
    for (name, c) in commands { try write(c, "node-command-\(name).bin") }
}

if CommandLine.arguments.dropFirst().first == "node-seeds", let dir = CommandLine.arguments.dropFirst(2).first {
    try await writeNodeSeeds(to: dir)
    exit(0)
}

guard let options = parseArguments(), !options.seeds.isEmpty,
    ["tttr", "script", "csv", "runfile", "node"].contains(options.target)
else {
    FileHandle.standardError.write(Data("usage: herald-fuzz tttr|script|csv|runfile|node --iterations N [--seed S] [--work DIR] SEED...\n".utf8))
    exit(64)
}
try FileManager.default.createDirectory(atPath: options.work, withIntermediateDirectories: true)
replaying = options.replay
let seeds = try options.seeds.map { try [UInt8](Data(contentsOf: URL(fileURLWithPath: $0))) }
var rng = Generator(state: options.seed)
var outcomes: [Outcome: Int] = [:]
var reasons: [String: Int] = [:]
let compiler = Herald.compiler(registry: Herald.descriptorRegistry)
let scriptFolder = options.work + "/scripts"
if options.target == "script", let first = options.seeds.first {
    try? FileManager.default.removeItem(atPath: scriptFolder)
    try FileManager.default.copyItem(atPath: URL(fileURLWithPath: first).deletingLastPathComponent().path, toPath: scriptFolder)
}
// The node target's agent: simulated devices, and a controller holding a long lease.
let nodeAgent = options.target == "node" ? NodeAgent(name: "fuzz", devices: try nodeDevices(nodeLab())) : nil
let nodeService = nodeAgent.map { NodeService(agent: $0) }
let fuzzController = Caller(subject: "CN=fuzz", role: .controller)
await nodeAgent?.grantLease(holder: fuzzController.subject, length: .seconds(86_400), token: "fuzz")
let started = Date()

@MainActor func note(_ error: any Error) {
    let key = String(String(describing: type(of: error)).prefix(40))
    reasons[key, default: 0] += 1
}

for iteration in 0..<options.iterations {
    if iteration > 0 && iteration % 10_000 == 0 {
        FileHandle.standardError.write(Data("herald-fuzz \(options.target): \(iteration) executions so far\n".utf8))
    }
    let k = iteration % seeds.count
    let seedName = URL(fileURLWithPath: options.seeds[k]).lastPathComponent
    let ext = URL(fileURLWithPath: options.seeds[k]).pathExtension
    let current = options.work + "/current." + ext
    do {
        switch options.target {
        case "tttr":
            let mutated = mutateBytes(seeds[k], hotRegion: 4096, &rng)
            try Data(mutated).write(to: URL(fileURLWithPath: current))
            let f = try TimeTagFile.open(current)
            _ = f.recordedDuration
            _ = f.header?.tags.map(\.value.text)
            _ = try f.statistics(chunkRecords: 4096)
            try f.decode(chunkRecords: 4096) { events in _ = f.tagBlock(events, markers: true) }
        case "script":
            let mutated = mutateText(String(decoding: seeds[k], as: UTF8.self), &rng)
            try Data(mutated.utf8).write(to: URL(fileURLWithPath: current))
            // In a copy of the seed's folder, so its includes resolve as they do for the user
            // and nothing is written beside the real scripts.
            let path = scriptFolder + "/fuzz-" + seedName
            try Data(mutated.utf8).write(to: URL(fileURLWithPath: path))
            _ = try compiler.compile(path: path, mock: iteration % 2 == 0)
        case "csv":
            let mutated = mutateText(String(decoding: seeds[k], as: UTF8.self), &rng)
            try Data(mutated.utf8).write(to: URL(fileURLWithPath: current))
            let table = try CountsTable.parse(mutated, file: current)
            for estimator in [Estimator.linear, .mle] {
                _ = try Tomography.reconstruct(
                    table.projections, options: TomographyOptions(estimator: estimator, scales: table.scales))
            }
        case "node":
            // Half the inputs are mutated as bytes (most then fail protobuf's own parsing); the
            // other half as the message's text form, so well-formed messages with extreme or
            // inconsistent fields reach Herald's decoders and the node's command handling.
            func message<M: SwiftProtobuf.Message>(_ type: M.Type) throws -> M {
                if iteration % 2 == 0 {
                    let mutated = mutateBytes(seeds[k], hotRegion: 4096, &rng)
                    try Data(mutated).write(to: URL(fileURLWithPath: current))
                    return try M(serializedBytes: mutated)
                }
                let text = mutateText(try M(serializedBytes: seeds[k]).textFormatString(), &rng)
                try Data(text.utf8).write(to: URL(fileURLWithPath: current + ".txt"))
                return try M(textFormatString: text)
            }
            if seedName.hasPrefix("node-batch") {
                _ = try TagCodec.decode(try message(Herald_Node_V1_TagBatch.self))
            } else if seedName.hasPrefix("node-describe") {
                let d = try message(Herald_Node_V1_DescribeResponse.self)
                for device in d.devices { _ = try device.driver.decoded(node: "fuzz") }
            } else if let nodeService {
                let reply = await nodeService.handle(try message(Herald_Node_V1_Command.self), caller: fuzzController, token: "fuzz")
                if case .error(let e)? = reply.kind { throw NodeProtocolError(e.message) }
            }
        default:  // runfile
            let mutated = mutateBytes(seeds[k], hotRegion: 16384, &rng)
            // The calls below change the file; input.h5 keeps it as it was fed in.
            try Data(mutated).write(to: URL(fileURLWithPath: options.work + "/input." + ext))
            try Data(mutated).write(to: URL(fileURLWithPath: current))
            do { _ = try RunFile.summary(path: current) } catch { note(error) }
            do { _ = try await Herald.recount(path: current, .init(windowPs: 2000)) } catch { note(error) }
            _ = try RunRecovery.recover(path: current)
        }
        outcomes[.accepted, default: 0] += 1
    } catch {
        outcomes[.rejected, default: 0] += 1
        note(error)
    }
}
unlink(options.work + "/current.ptu")
let seconds = Date().timeIntervalSince(started)
let summary = reasons.sorted { $0.value > $1.value }.prefix(6).map { "\($0.key) \($0.value)" }.joined(separator: ", ")
print("errors by type: \(summary)")
print(
    "herald-fuzz \(options.target): \(options.iterations) executions in \(String(format: "%.1f", seconds)) s, "
        + "\(outcomes[.accepted] ?? 0) accepted, \(outcomes[.rejected] ?? 0) rejected with an error, 0 crashes, 0 hangs")
