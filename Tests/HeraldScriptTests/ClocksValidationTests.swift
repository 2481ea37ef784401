import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import Testing

/// The `clocks:` section and acquisitions by several taggers: what is refused, where.
@Suite struct ClocksValidationTests {
    static func script(clocks: String, acquire: String = "devices: [a, b]") -> String {
        """
        herald: 1
        devices:
          a: {driver: mock.timetagger, settings: {inputs: "1,2", sync: white_rabbit, sync_channel: 5}}
          b: {driver: mock.timetagger, settings: {inputs: "3,4", sync: white_rabbit, sync_channel: 5}}
          c: {driver: mock.timetagger}
          pump: {driver: mock.laser}
        \(clocks)
        steps:
          - acquire: {\(acquire), duration: 1 s}
        """
    }

    @Test func aGoodSectionCompilesWithTheReferenceFirst() throws {
        let compiled = try compile(
            Self.script(
                clocks: "clocks: {reference: a, taggers: {b: {track: marks, sync_channel: 5}}}", acquire: "devices: [b, a]"))
        let clocks = try #require(compiled.plan.clocks)
        #expect(clocks.reference == "a")
        #expect(clocks.taggers == [.init(name: "b", channelOffset: 8, tracking: .marks(channel: 5, referenceChannel: 5, smoothing: 0))])
        guard case .acquire(let devices, _, _, _)? = compiled.plan.steps.first else {
            Issue.record("not an acquisition")
            return
        }
        #expect(devices == ["a", "b"])
    }

    @Test func severalTaggersWithoutClocksAreRefusedAtTheList() {
        let d = diagnostics(Self.script(clocks: ""))
        #expect(d.count == 1)
        #expect(d.first?.message.contains("needs a 'clocks:' section") == true)
        #expect(d.first?.location.line == 9)  // the acquire step's line
    }

    /// The merged stream settles a tag once every tagger has delivered past it: an acquisition
    /// that leaves one out would hold the others' tags to the end of the point.
    @Test(arguments: ["device: b", "device: a"])
    func anAcquisitionLeavingOutATaggerIsRefused(acquire: String) {
        let d = diagnostics(Self.script(clocks: "clocks: {reference: a, taggers: {b: {track: none}}}", acquire: acquire))
        #expect(d.contains { $0.message.contains("every acquisition takes all its taggers together") }, "\(d.map(\.message))")
    }

    @Test func sharedChannelOffsetsAreRefused() {
        let text = Self.script(clocks: "clocks: {reference: a, taggers: {b: {track: none, channel_offset: 8}, c: {track: none, channel_offset: 8}}}")
            .replacingOccurrences(of: "devices: [a, b]", with: "devices: [a, b, c]")
        #expect(diagnostics(text).contains { $0.message.contains("the same channel_offset 8") })
    }

    @Test(arguments: [
        ("clocks: {reference: pump, taggers: {b: {track: none}}}", "is a laser"),
        ("clocks: {reference: a, taggers: {a: {track: none}}}", "is the reference"),
        ("clocks: {reference: a, taggers: {b: {track: marks}}}", "needs sync_channel"),
        ("clocks: {reference: a, taggers: {b: {track: sometimes}}}", "is not one of: marks, model, correlation, none"),
        ("clocks: {reference: a, taggers: {b: {track: model}}}", "needs model"),
        ("clocks: {reference: a, taggers: {b: {model: missing.yaml}}}", "no such file"),
        ("clocks: {reference: a, taggers: {b: {track: none, channel_offset: 300}}}", "channel_offset"),
        ("clocks: {reference: a, taggers: {}}", "names no tagger"),
        ("clocks: {reference: a, taggers: {c: {track: none}}}", "'b' is not in clocks"),
        ("clocks: {reference: a, taggers: {b: {track: correlation, channels: [3]}}}", "reference_channels is needed"),
        ("clocks: {reference: a, taggers: {b: {track: correlation, reference_channels: [1], channels: [3]}}}", "add a calibrate_clocks step"),
        ("clocks: {reference: a, taggers: {b: {track: correlation, reference_channels: [1], channels: [3], max_drift: 5 %}}}", "max_drift must be within"),
    ])
    func badSectionsAreRefusedSayingWhy(clocks: String, message: String) {
        let d = diagnostics(Self.script(clocks: clocks))
        #expect(d.contains { $0.message.contains(message) }, "\(d.map(\.message))")
    }

    @Test func aModelFileIsReadCheckedAndKept() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("herald-clocks-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        let script = dir.appendingPathComponent("run.yaml")
        try Self.script(clocks: "clocks: {reference: a, taggers: {b: {model: b.yaml}}}").write(to: script, atomically: true, encoding: .utf8)
        let model = dir.appendingPathComponent("b.yaml")
        func compileIt() throws -> CompiledScript {
            try Herald.compiler(registry: Herald.descriptorRegistry).compile(path: script.path)
        }
        try "clocks:\n  b: {reference: a, offset_ps: 1500.5, drift: 2.0e-7, epoch_ps: 10, source: pps}\n"
            .write(to: model, atomically: true, encoding: .utf8)
        let compiled = try compileIt()
        guard case .model(let m, let file)? = compiled.plan.clocks?.taggers.first?.tracking else {
            Issue.record("no model")
            return
        }
        #expect(m.offsetPs == 1500.5 && m.drift == 2e-7 && m.epochPs == 10 && file == "b.yaml")
        #expect(compiled.plan.includedFiles.contains { $0.path.hasSuffix("b.yaml") })
        // Another reference, a missing number, and nonsense are refused naming the file's line.
        for (text, message) in [
            ("clocks:\n  b: {reference: c, offset_ps: 0, drift: 0, epoch_ps: 0}\n", "maps 'b' to 'c'"),
            ("clocks:\n  b: {reference: a, drift: 0, epoch_ps: 0}\n", "needs offset_ps"),
            ("clocks:\n  b: {reference: a, offset_ps: 1e400, drift: 0, epoch_ps: 0}\n", "finite number"),
            ("clocks:\n  x: {reference: a, offset_ps: 0, drift: 0, epoch_ps: 0}\n", "no model for 'b'"),
        ] {
            try text.write(to: model, atomically: true, encoding: .utf8)
            do {
                _ = try compileIt()
                Issue.record("accepted: \(text)")
            } catch let e as ScriptErrors {
                #expect(e.diagnostics.contains { $0.message.contains(message) && $0.location.file.hasSuffix("b.yaml") }, "\(e.diagnostics)")
            }
        }
    }
}
