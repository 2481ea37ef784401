import Foundation
import HeraldCore
import HeraldRunner
import HeraldScript
import Testing

let validScript = """
    herald: 1
    devices:
      pump: {driver: mock.laser}
      qwp_a: {driver: mock.rotator, settings: {arm: a, plate: qwp}}
      hwp_a: {driver: mock.rotator, settings: {arm: a, plate: hwp}}
      qwp_b: {driver: mock.rotator, settings: {arm: b, plate: qwp}}
      hwp_b: {driver: mock.rotator, settings: {arm: b, plate: hwp}}
      tagger: {driver: mock.timetagger}
    steps:
      - set: {pump.power: 10 mW, pump.enabled: true}
      - sweep:
          name: tomo
          basis: tomography-16
          analyzers:
            a: {qwp: qwp_a, hwp: hwp_a}
            b: {qwp: qwp_b, hwp: hwp_b}
          steps:
            - acquire: {device: tagger, duration: 10 ms}
      - tomography:
          sweep: tomo
          arms: {a: {pass: 1}, b: {pass: 3}}
          window: 1 ns
    """

func compile(_ text: String) throws -> CompiledScript {
    try Herald.compiler(registry: Herald.descriptorRegistry).compile(text: text, file: "test.yaml")
}

/// Compiles `text` expecting failure; returns the diagnostics.
func diagnostics(_ text: String) -> [ScriptDiagnostic] {
    do {
        _ = try compile(text)
        Issue.record("the script was accepted")
        return []
    } catch let e as ScriptErrors {
        return e.diagnostics
    } catch {
        Issue.record("unexpected error \(error)")
        return []
    }
}

@Suite struct ValidationTests {
    @Test func theValidScriptCompilesToAPlan() throws {
        let compiled = try compile(validScript)
        #expect(compiled.plan.devices.count == 6)
        #expect(compiled.plan.acquisitionCount == 16)
    }

    @Test func unknownDeviceIsReportedAtItsPlace() {
        let text = validScript.replacingOccurrences(of: "acquire: {device: tagger", with: "acquire: {device: tagga")
        let d = diagnostics(text)
        #expect(d.count == 1)
        #expect(d.first?.location == SourceLocation(file: "test.yaml", line: 18, column: 29))
        #expect(d.first?.message.contains("unknown device 'tagga'") == true)
        #expect(d.first?.description.hasPrefix("test.yaml:18:29: error:") == true)
    }

    /// Sweep and parameter names become HDF5 group and dataset names in the run file: a `/`
    /// would make a path of them, so anything but letters, digits, `_` and `-` is refused.
    @Test func namesThatWouldBecomeHDF5PathsAreRefused() {
        let sweep = diagnostics(validScript.replacingOccurrences(of: "name: tomo", with: "name: to/mo"))
        #expect(sweep.contains { $0.location.line == 12 && $0.message.contains("'to/mo' may contain only") }, "\(sweep)")
        let parameter = diagnostics(validScript.replacingOccurrences(of: "devices:", with: "parameters: {\"a/b\": 1 s}\ndevices:"))
        #expect(parameter.contains { $0.location.line == 2 && $0.message.contains("parameter name 'a/b'") }, "\(parameter)")
    }

    @Test func unknownPropertyIsReportedAtItsPlace() {
        let text = validScript.replacingOccurrences(of: "pump.enabled: true", with: "pump.enable: true")
        let d = diagnostics(text)
        #expect(d.count == 1)
        #expect(d.first?.location == SourceLocation(file: "test.yaml", line: 10, column: 30))
        #expect(d.first?.message.contains("unknown property 'enable'") == true)
        #expect(d.first?.message.contains("enabled") == true)  // says what is settable
    }

    @Test func yamlSyntaxErrorIsReportedAtItsPlace() {
        let text = validScript.replacingOccurrences(of: "  pump: {driver: mock.laser}", with: "  pump: {driver: mock.laser")
        let d = diagnostics(text)
        #expect(d.count == 1)
        #expect(d.first?.location.line == 4)
        #expect(d.first?.message.contains("YAML syntax error") == true)
    }

    @Test func unknownDriverAndWrongDimensionAndRangeAreAllReportedTogether() {
        let text = validScript
            .replacingOccurrences(of: "driver: mock.laser", with: "driver: thorlabs.nonexistent")
            .replacingOccurrences(of: "duration: 10 ms", with: "duration: 10 mA")
            .replacingOccurrences(of: "window: 1 ns", with: "window: 1 nm")
        let d = diagnostics(text)
        let messages = d.map(\.message).joined(separator: "\n")
        #expect(messages.contains("unknown driver 'thorlabs.nonexistent'"))
        #expect(messages.contains("expected a time"))
        #expect(d.count >= 3)
        #expect(d.allSatisfy { $0.location.line > 0 && $0.location.column > 0 })
    }

    @Test func valuesOutsideTheDriversLimitsAreRejected() {
        let text = validScript.replacingOccurrences(of: "pump.power: 10 mW", with: "pump.power: 2 W")
        let d = diagnostics(text)
        #expect(d.first?.message.contains("outside the allowed range") == true)
        #expect(d.first?.location.line == 10)
    }

    @Test func usbMatchIsParsedAndCheckedAtItsPlace() throws {
        let good = validScript.replacingOccurrences(
            of: "pump: {driver: mock.laser}",
            with: "pump: {driver: mock.laser, match: {usb: {vendor: 0x1313, product: 804a, serial: M00412345}}}")
        let compiled = try compile(good)
        #expect(compiled.plan.devices.first?.match == .usb(vendor: 0x1313, product: 0x804a, serial: "M00412345"))
        let bad = good.replacingOccurrences(of: "vendor: 0x1313", with: "vendor: 0xZZ")
        let d = diagnostics(bad)
        #expect(d.first?.message.contains("hexadecimal USB id") == true)
        #expect(d.first?.location.line == 3)
    }

    @Test func aMatchTheDriverCannotUseIsRejected() {
        let text = validScript.replacingOccurrences(
            of: "tagger: {driver: mock.timetagger}",
            with: "tagger: {driver: replay.timetagger, settings: {file: x.ptu}, match: {usb: {vendor: 0x1313, product: 804a}}}")
        let d = diagnostics(text)
        #expect(d.contains { $0.message.contains("replay.timetagger finds its instrument by file, not by usb") }, "\(d)")
    }

    @Test func theShippedDemoValidates() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let compiled = try Herald.validate(path: root.appendingPathComponent("Experiments/bell-tomography.yaml").path)
        #expect(compiled.plan.acquisitionCount == 36)
        #expect(compiled.simulation["visibility"]?.quantity?.value == 0.9)
    }
}
