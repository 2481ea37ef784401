import ArgumentParser
import DriverConformance
import HeraldCore
import HeraldRunner

struct CheckDriver: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check-driver",
        abstract: "Run the driver conformance kit against one instrument (or its emulator).",
        discussion: """
            It sets every settable property over its declared range: block the beam, or run it against an \
            emulated instrument (Tests/USBEmulation). Exit status 0 when every check passes, 1 otherwise.
            """)

    @Argument(help: "The driver id, e.g. thorlabs.ell14 (see 'herald drivers').") var driver: String
    @Option(help: "USB match vendor:product[:serial] in hex, e.g. 0403:6015:11400001.") var usb: String?
    @Option(name: .customLong("setting"), help: "A driver setting name=value, e.g. --setting address=0 (repeatable).")
    var settings: [String] = []
    @Option(help: "Acquisition length of the streaming check, in ms (time taggers).") var acquireMs = 50

    func run() async throws {
        guard let entry = Herald.descriptorRegistry.entry(driver) else {
            throw ValidationError("no driver '\(driver)'; 'herald drivers' lists them")
        }
        var config = DeviceConfig(name: driver, driver: driver)
        for (key, text) in try parseAssignments(settings, option: "--setting", example: "address=0") {
            guard let spec = entry.descriptor.setting(key) else { throw ValidationError("driver \(driver) has no setting '\(key)'") }
            config.settings[key] = try Self.value(text, as: spec, name: key)
        }
        if let usb {
            let parts = usb.split(separator: ":").map(String.init)
            guard parts.count >= 2, let v = UInt16(parts[0], radix: 16), let p = UInt16(parts[1], radix: 16) else {
                throw ValidationError("--usb expects vendor:product[:serial] in hex, got '\(usb)'")
            }
            config.match = .usb(vendor: v, product: p, serial: parts.count > 2 ? parts[2...].joined(separator: ":") : nil)
        }
        var kit = DriverConformance(entry: entry, config: config)
        kit.acquisition = .milliseconds(acquireMs)
        let report = await kit.run()
        print(report)
        if !report.failures.isEmpty { throw ExitCode(ExitStatusCode.failed) }
    }

    static func value(_ text: String, as spec: PropertySpec, name: String) throws -> Value {
        switch spec.type {
        case .bool:
            guard let b = Bool(text) else { throw ValidationError("setting \(name): expected true or false, got '\(text)'") }
            return .bool(b)
        case .quantity(let d):
            if let n = Double(text) { return .quantity(Quantity(n, d)) }
            guard let q = Quantity.parse(text), q.dimension == d else {
                throw ValidationError("setting \(name): expected a \(d) quantity, got '\(text)'")
            }
            return .quantity(q)
        default: return .text(text)
        }
    }
}
