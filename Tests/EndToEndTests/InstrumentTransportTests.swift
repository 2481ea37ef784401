import Foundation
import Glibc
import HeraldCore
import HeraldRunner
import HeraldScript
import Synchronization
import Testing

/// The instrument drivers off USB: under `--mock` on simulated instruments (the exact
/// command exchange asserted), over a serial line (a pseudo-terminal pair) and over TCP (a
/// loopback SCPI responder), each unplugged mid-run; and lab files, VISA strings and missing
/// ports diagnosed at their lines.
@Suite(.serialized) struct InstrumentTransportTests {
    static let hardware = Paths.root.appendingPathComponent("Experiments/hardware")

    struct Entry: Decodable, Equatable {
        var device: String
        var direction: String
        var text: String
    }

    /// One tomography point through the real ITC4001, ELL14 and TDC1 drivers: the interlock's
    /// three queries after the previous acquisition, the four mounts' moves to the next
    /// setting (H for A, V for B: the HWP of B at 45° = 17920 of 143360 pulses = 0x4600), the
    /// interlock again, then the TDC1's gate, stream and abort. Exactly this, in this order.
    @Test func mockRunsTheRealDriversAndEveryCommandOfAPointIsAsExpected() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let transcript = dir.appendingPathComponent("t.jsonl").path
        var request = Herald.RunRequest(
            scriptPath: Self.hardware.appendingPathComponent("bell-tomography-usb.yaml").path, mock: true,
            outPath: dir.appendingPathComponent("r.h5").path, seed: 3, overrides: ["integration": "100 ms"])
        request.transcriptPath = transcript
        let report = try await Herald.run(request)
        #expect(report.status == .success, "\(report.reason ?? "")")
        let entries = try String(contentsOfFile: transcript, encoding: .utf8).split(separator: "\n").map {
            try JSONDecoder().decode(Entry.self, from: Data($0.utf8))
        }
        let aborts = entries.indices.filter { entries[$0].device == "tagger" && entries[$0].text == "abort" }
        // One abort at connect, then one after each of the 36 acquisitions.
        #expect(aborts.count == 37)
        let point = Array(entries[(aborts[1] + 1)...aborts[2]])
        func e(_ d: String, _ s: String, _ r: String? = nil) -> [Entry] {
            [Entry(device: d, direction: "sent", text: s)] + (r.map { [Entry(device: d, direction: "received", text: $0)] } ?? [])
        }
        let interlock = e("pump", "OUTP?", "1") + e("pump", "OUTP:PROT:KEYL:TRIP?", "0") + e("pump", "OUTP:PROT:INTL:TRIP?", "0")
        let expected =
            interlock + e("qwp_a", "0ma00000000", "0PO00000000") + e("hwp_a", "0ma00000000", "0PO00000000")
            + e("qwp_b", "0ma00000000", "0PO00000000") + e("hwp_b", "0ma00004600", "0PO00004600") + interlock
            + e("tagger", "time 100") + e("tagger", "timestamp") + e("tagger", "counts?")
        #expect(Array(point.prefix(expected.count)) == expected, "\(point.map { "\($0.device) \($0.direction) \($0.text)" })")
        // Then the stream (its length is the light's) and the abort that ends the acquisition.
        #expect(point.count == expected.count + 2)
        #expect(point.dropLast().last.map { $0.device == "tagger" && $0.text.hasSuffix(" time-stamp words]") } == true)
        #expect(point.last == Entry(device: "tagger", direction: "sent", text: "abort"))
        // The pump was switched off at the end, through the controller's SCPI.
        #expect(entries.contains(Entry(device: "pump", direction: "sent", text: "OUTP OFF")))
    }

    // MARK: Lab files, VISA strings, missing ports

    static let lab = """
        herald: 1
        lab: test-bench
        devices:
          pump:
            driver: mock.laser
            limits: {power: {max: 20 mW}}
          hwp:
            driver: mock.rotator
            settings: {arm: a, plate: hwp}
          tagger: {driver: mock.timetagger}
        """

    func diagnostics(lab: String = Self.lab, script: String, mock: Bool = true) throws -> (ScriptErrors?, CompiledScript?, URL) {
        let dir = try Paths.temporaryDirectory()
        try lab.write(to: dir.appendingPathComponent("lab.yaml"), atomically: true, encoding: .utf8)
        let path = dir.appendingPathComponent("s.yaml")
        try script.write(to: path, atomically: true, encoding: .utf8)
        do {
            return (nil, try Herald.validate(path: path.path, mock: mock), dir)
        } catch let e as ScriptErrors {
            return (e, nil, dir)
        }
    }

    static func script(_ devices: String) -> String {
        """
        herald: 1
        include: lab.yaml
        \(devices)
        steps:
          - set: {pump.power: 5 mW}
          - acquire: {device: tagger, duration: 10 ms}
        """
    }

    @Test func aScriptNamesLabDevicesAndMayNarrowButNeverWidenTheirLimits() throws {
        let (ok, compiled, d1) = try diagnostics(script: Self.script("devices:\n  pump: {limits: {power: {max: 8 mW}}}\n  tagger:"))
        defer { try? FileManager.default.removeItem(at: d1) }
        #expect(ok == nil, "\(ok?.description ?? "")")
        let pump = try #require(compiled?.plan.devices.first { $0.name == "pump" })
        #expect(pump.properties.first { $0.name == "power" }?.range?.upperBound == 0.008)
        #expect(pump.location?.file.hasSuffix("lab.yaml") == true && pump.location?.line == 4, "the device is where the lab describes it")
        #expect(compiled?.plan.devices.map(\.name) == ["pump", "tagger"], "only the devices the script names")

        let (wide, _, d2) = try diagnostics(script: Self.script("devices:\n  pump: {limits: {power: {max: 30 mW}}}\n  tagger:"))
        defer { try? FileManager.default.removeItem(at: d2) }
        let w = try #require(wide?.diagnostics.first)
        #expect(w.message.contains("would widen the lab's limit") && w.message.contains("lab.yaml:4:3"), "\(w.message)")
        #expect(w.location.file.hasSuffix("s.yaml") && w.location.line == 4 && w.location.column == 32, "\(w.location)")

        let (redefined, _, d3) = try diagnostics(script: Self.script("devices:\n  pump: {driver: mock.laser}\n  tagger:"))
        defer { try? FileManager.default.removeItem(at: d3) }
        #expect(redefined?.diagnostics.first?.message.contains("not its 'driver'") == true, "\(redefined?.description ?? "")")
    }

    @Test func aMissingLabDeviceIsNamedAtTheScriptLine() throws {
        let (errors, _, dir) = try diagnostics(script: Self.script("devices: [pump, tagger, qwp_z]"))
        defer { try? FileManager.default.removeItem(at: dir) }
        let d = try #require(errors?.diagnostics.first)
        #expect(d.message.contains("no device 'qwp_z' in the included lab file") && d.message.contains("hwp, pump, tagger"), "\(d.message)")
        #expect(d.location.file.hasSuffix("s.yaml") && d.location.line == 3 && d.location.column == 25, "\(d.location)")
    }

    @Test(arguments: [
        ("\"USB0::0x1313::0x804A::M001::FOO\"", "unknown resource class 'FOO'"),
        ("\"GPIB0::12::INSTR\"", "GPIB resources are not supported"),
        ("\"TCPIP0::10.0.0.5::inst0::INSTR\"", "VXI-11 or HiSLIP"),
        ("\"ASRL3::INSTR\"", "names a serial port by number"),
    ])
    func aVISAStringThatCannotBeUsedIsRefusedAtItsLine(resource: String, message: String) throws {
        let lab = Self.lab + "\n  pm:\n    driver: thorlabs.pm100\n    match: \(resource)\n"
        let (errors, _, dir) = try diagnostics(lab: lab, script: Self.script("devices: [pump, tagger, pm]"))
        defer { try? FileManager.default.removeItem(at: dir) }
        // One error: the refused string, and no knock-on complaint about how the driver matches.
        #expect(errors?.diagnostics.count == 1, "\(errors?.description ?? "")")
        let d = try #require(errors?.diagnostics.first)
        #expect(d.message.contains(message), "\(d.message)")
        #expect(d.location.file.hasSuffix("lab.yaml") && d.location.line == 13 && d.location.column == 12, "\(d.location)")
    }

    @Test func aSerialPortThatDoesNotExistIsReportedAtItsLine() throws {
        let lab = Self.lab + "\n  stage:\n    driver: newport.smc100\n    match: {serial: /dev/serial/by-id/no-such-adapter}\n"
        let (errors, _, dir) = try diagnostics(lab: lab, script: Self.script("devices: [pump, tagger, stage]"), mock: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        let d = try #require(errors?.diagnostics.first)
        #expect(d.message.contains("serial port '/dev/serial/by-id/no-such-adapter' of device 'stage' does not exist"), "\(d.message)")
        #expect(d.location.file.hasSuffix("lab.yaml") && d.location.line == 13, "\(d.location)")
    }

    /// Two LAN instruments with nothing listening: validation names both, each at its own line.
    @Test func validationReportsEveryMissingInstrumentNotOnlyTheFirst() throws {
        let ports = [Self.freePort(), Self.freePort()]
        let lab = Self.lab + "\n  pm_a: {driver: thorlabs.pm100, match: {tcp: \"127.0.0.1:\(ports[0])\"}}"
            + "\n  pm_b: {driver: thorlabs.pm100, match: \"TCPIP0::127.0.0.1::\(ports[1])::SOCKET\"}\n"
        let (errors, _, dir) = try diagnostics(lab: lab, script: Self.script("devices: [pump, tagger, pm_a, pm_b]"), mock: false)
        defer { try? FileManager.default.removeItem(at: dir) }
        let d = try #require(errors?.diagnostics)
        #expect(d.count == 2, "\(d)")
        #expect(d.first?.message.contains("device 'pm_a'") == true && d.first?.message.contains("connection refused") == true, "\(d)")
        #expect(d.last?.message.contains("device 'pm_b'") == true && d.last?.location.line == 12, "\(d)")
    }

    /// A port nobody listens on: bound, then released.
    static func freePort() -> Int {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(s) }
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = 0
        _ = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &length) } }
        return Int(UInt16(bigEndian: a.sin_port))
    }

    // MARK: Serial and TCP end to end, unplugged mid-run

    struct Outcome {
        var exit: Int32
        var report: [String: Any]
        var fileTags: Int
        var log: [String]
    }

    func run(_ script: String) async throws -> Outcome {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("s.yaml").path
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        let out = dir.appendingPathComponent("r.h5").path
        let r = try await runProcess(Paths.herald.path, ["run", path, "--seed", "2", "--out", out, "--json"])
        let report = (try? JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]) ?? [:]
        let probe = """
            import h5py, json, sys
            f = h5py.File(sys.argv[1], "r")
            h = f["user/herald"]
            print(json.dumps({"tags": int(len(f["photon_data/timestamps"])),
                "log": [s.decode() if isinstance(s, bytes) else str(s) for s in h["log"][()]]}))
            """
        let p = try await runProcess(Paths.python, ["-c", probe, out])
        let file = (try? JSONSerialization.jsonObject(with: Data(p.stdout.utf8)) as? [String: Any]) ?? [:]
        return Outcome(exit: r.status, report: report, fileTags: file["tags"] as? Int ?? -1, log: file["log"] as? [String] ?? ["(no file) \(p.stderr) \(r.stderr)"])
    }

    static func sweep(_ device: String, _ match: String, extra: String = "", interlock: String = "", sweep: String) -> String {
        """
        herald: 1
        simulation: {pair_rate: 100 kHz, efficiency: 0.2}
        devices:
          pump: {driver: mock.laser}
          tagger: {driver: mock.timetagger}
          \(device): {\(match)\(extra)}
        \(interlock)
        steps:
          - set: {pump.power: 10 mW, pump.enabled: true}
          - sweep:
              name: scan
              \(sweep)
              steps:
                - acquire: {device: tagger, duration: 50 ms}
        """
    }

    /// An ELL14 on a serial line (the master side of a pseudo-terminal plays the mount); after
    /// five moves the line goes away. The run fails naming the mount, the pump is switched off,
    /// and the points recorded before stay in the file.
    @Test func anELL14OnASerialLineUnpluggedMidRun() async throws {
        let pty = try PseudoTerminal()
        let mount = ELL14Responder(master: pty.master, unplugAfterMoves: 5)
        mount.start()
        defer { mount.stop() }
        let script = Self.sweep(
            "hwp", "driver: thorlabs.ell14, match: {serial: \(pty.slavePath)}", extra: ", settings: {arm: a, plate: hwp}",
            sweep: "set: hwp.angle\n      range: {from: 0 deg, to: 90 deg, step: 10 deg}")
        let o = try await run(script)
        #expect(o.exit == 1, "\(o.report)")
        let failure = o.report["failure"] as? [String: Any]
        #expect(failure?["device"] as? String == "hwp" && failure?["error"] as? String == "disconnected", "\(String(describing: failure)) \(o.report)")
        #expect((o.report["reason"] as? String)?.contains("\(pty.slavePath): the serial port went away") == true, "\(o.report)")
        #expect(o.log.contains { $0.hasPrefix("safe state: pump") && $0.contains("emission off") }, "\(o.log)")
        // Four points were acquired (the fifth move's answer never came): their tags are kept.
        #expect(o.fileTags > 0 && o.fileTags == o.report["tags"] as? Int, "\(o.fileTags) vs \(o.report)")
        #expect(mount.moves.withLock { $0 } == 5)
    }

    /// An instrument that is there but is not what the lab file says (another model answers
    /// `*IDN?`): the run fails naming it, and the devices never opened are not "put in a safe
    /// state" — the log says they were never opened, and nothing failed.
    @Test func devicesNeverOpenedAreNotPutInASafeState() async throws {
        let impostor = try SCPIResponder(closeAfterReadings: 100, identity: "Keysight Technologies,34465A,MY000001,A.03")
        impostor.start()
        defer { impostor.stop() }
        let script = """
            herald: 1
            devices:
              meter: {driver: thorlabs.pm100, match: {tcp: "127.0.0.1:\(impostor.port)"}}
              pump: {driver: mock.laser}
              tagger: {driver: mock.timetagger}
            steps:
              - set: {pump.power: 10 mW, pump.enabled: true}
              - acquire: {device: tagger, duration: 10 ms}
            """
        let o = try await run(script)
        #expect(o.exit == 1, "\(o.report)")
        #expect((o.report["reason"] as? String)?.contains("not a PM100-series power meter") == true, "\(o.report)")
        for device in ["meter", "pump", "tagger"] {
            #expect(o.log.contains("safe state: \(device) was never opened (nothing sent to it)"), "\(o.log)")
        }
        #expect(!o.log.contains { $0.contains("FAILED") }, "\(o.log)")
    }

    /// A PM100 on the LAN (a loopback SCPI responder), read by an interlock on the pump's
    /// power; the responder drops the connection mid-run. The run fails naming the meter.
    @Test func aPowerMeterOverTCPDisconnectedMidRun() async throws {
        let meter = try SCPIResponder(closeAfterReadings: 6)
        meter.start()
        defer { meter.stop() }
        let script = Self.sweep(
            "meter", "driver: thorlabs.pm100, match: \"TCPIP0::127.0.0.1::\(meter.port)::SOCKET\"",
            interlock: "interlocks:\n  - {name: pump-power, require: meter.power > 1 mW, timeout: 1 s}",
            sweep: "set: pump.power\n      range: {from: 5 mW, to: 14 mW, step: 1 mW}")
        let o = try await run(script)
        #expect(o.exit == 1, "\(o.report)")
        let failure = o.report["failure"] as? [String: Any]
        #expect(failure?["device"] as? String == "meter" && failure?["error"] as? String == "disconnected", "\(String(describing: failure)) \(o.report)")
        #expect((o.report["reason"] as? String)?.contains("closed the connection") == true, "\(o.report)")
        #expect(o.log.contains { $0.hasPrefix("safe state: pump") && $0.contains("emission off") }, "\(o.log)")
        #expect(o.fileTags > 0 && o.fileTags == o.report["tags"] as? Int, "\(o.fileTags) vs \(o.report)")
        let commands = meter.commands.withLock { $0 }
        #expect(commands.prefix(4) == ["*IDN?", "*CLS", "CONF:POW", "SYST:ERR?"], "\(commands)")
    }
}

/// A pseudo-terminal pair: the slave is the "serial port" the driver opens.
final class PseudoTerminal: Sendable {
    let master: Int32
    let slave: Int32
    let slavePath: String

    init() throws {
        var m: Int32 = -1, s: Int32 = -1
        var name = [CChar](repeating: 0, count: 128)
        guard openpty(&m, &s, &name, nil, nil) == 0 else { throw POSIXError(.ENODEV) }
        master = m
        slave = s
        slavePath = String(cString: name)
    }

    deinit { close(slave) }
}

/// The mount's side of the ELLx protocol on the pseudo-terminal's master; closes the
/// master after `unplugAfterMoves` moves (before answering the last one), as an unplug does.
final class ELL14Responder: @unchecked Sendable {  // fd and thread confined; counters behind Mutexes
    let master: Int32
    let unplugAfterMoves: Int
    let moves = Mutex(0)
    private let stopping = Mutex(false)
    private let closed = Mutex(false)

    init(master: Int32, unplugAfterMoves: Int) {
        self.master = master
        self.unplugAfterMoves = unplugAfterMoves
    }

    func start() {
        Thread { [self] in
            var pending: [UInt8] = []
            var pulses = 0
            while !stopping.withLock({ $0 }) {
                var p = pollfd(fd: master, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 50) > 0 else { continue }
                var buffer = [UInt8](repeating: 0, count: 256)
                let n = read(master, &buffer, 256)
                guard n > 0 else { continue }
                pending += buffer[..<n]
                while pending.count >= 3 {
                    let code = String(decoding: pending[1..<3], as: UTF8.self)
                    let need = ["ma": 8, "ho": 1][code] ?? 0
                    guard pending.count >= 3 + need else { break }
                    let data = String(decoding: pending[3..<(3 + need)], as: UTF8.self)
                    pending.removeFirst(3 + need)
                    var reply: String
                    switch code {
                    case "in": reply = "0IN0E11400099202317010168" + "00023000"
                    case "gp": reply = String(format: "0PO%08X", pulses)
                    case "ma":
                        let count = moves.withLock { m -> Int in
                            m += 1
                            return m
                        }
                        if count >= unplugAfterMoves {
                            closeMaster()
                            return
                        }
                        pulses = Int(UInt32(data, radix: 16) ?? 0)
                        reply = String(format: "0PO%08X", pulses)
                    default: reply = "0GS03"
                    }
                    reply += "\r\n"
                    _ = reply.utf8CString.withUnsafeBufferPointer { write(master, $0.baseAddress, $0.count - 1) }
                }
            }
        }.start()
    }

    func closeMaster() {
        closed.withLock {
            if !$0 { close(master) }
            $0 = true
        }
    }

    func stop() {
        stopping.withLock { $0 = true }
        Thread.sleep(forTimeInterval: 0.1)
        closeMaster()
    }
}

/// A PM100's SCPI on a loopback socket: answers the driver's commands, and closes the
/// connection after `closeAfterReadings` power readings, as a LAN instrument that loses power does.
final class SCPIResponder: @unchecked Sendable {  // sockets and thread confined; log behind a Mutex
    let listener: Int32
    let port: Int
    let closeAfterReadings: Int
    let identity: String
    let commands = Mutex<[String]>([])
    private let stopping = Mutex(false)

    init(closeAfterReadings: Int, identity: String = "Thorlabs,PM100D,P0099999,2.5.0") throws {
        self.closeAfterReadings = closeAfterReadings
        self.identity = identity
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        a.sin_port = 0
        let bound = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard bound == 0, listen(fd, 4) == 0 else { throw POSIXError(.EADDRINUSE) }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) } }
        listener = fd
        port = Int(UInt16(bigEndian: a.sin_port))
    }

    func start() {
        Thread { [self] in
            var readings = 0
            while !stopping.withLock({ $0 }) {
                var p = pollfd(fd: listener, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 50) > 0 else { continue }
                let c = accept(listener, nil, nil)
                guard c >= 0 else { continue }
                var pending: [UInt8] = []
                var errors: [String] = []
                serving: while !stopping.withLock({ $0 }) {
                    var q = pollfd(fd: c, events: Int16(POLLIN), revents: 0)
                    guard poll(&q, 1, 50) > 0 else { continue }
                    var buffer = [UInt8](repeating: 0, count: 512)
                    let n = recv(c, &buffer, 512, 0)
                    if n <= 0 { break }
                    pending += buffer[..<n]
                    while let nl = pending.firstIndex(of: 10) {
                        let command = String(decoding: pending[..<nl], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                        pending.removeFirst(nl + 1)
                        commands.withLock { $0.append(command) }
                        var reply: String?
                        switch command {
                        case "*IDN?": reply = identity
                        case "SYST:ERR?": reply = errors.isEmpty ? "+0,\"No error\"" : errors.removeFirst()
                        case "*CLS", "CONF:POW", "SENS:POW:RANG:AUTO ON": break
                        case "SENS:CORR:WAV? MIN": reply = "4.000000E+02"
                        case "SENS:CORR:WAV? MAX": reply = "1.100000E+03"
                        case "MEAS:POW?":
                            readings += 1
                            if readings > closeAfterReadings { break serving }
                            reply = "1.000000E-02"
                        default: errors.append("-113,\"Undefined header\"")
                        }
                        if let reply { _ = (reply + "\n").utf8CString.withUnsafeBufferPointer { send(c, $0.baseAddress, $0.count - 1, Int32(MSG_NOSIGNAL)) } }
                    }
                }
                close(c)
            }
        }.start()
    }

    func stop() {
        stopping.withLock { $0 = true }
        Thread.sleep(forTimeInterval: 0.1)
        close(listener)
    }
}
