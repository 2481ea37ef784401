import Foundation
import Testing

/// The USB instrument drivers on their real libusb/libudev code paths, against emulated
/// instruments (Tests/USBEmulation, umockdev): the conformance kit per driver, a whole
/// tomography script, and each fault switch with its documented outcome.
@Suite(.serialized) struct USBInstrumentTests {
    static let lab = Paths.root.appendingPathComponent("Tests/USBEmulation/usblab.py").path
    static let faultScript = Paths.root.appendingPathComponent("Tests/USBEmulation/fault-scan.yaml").path
    static let scanDevices = ["itc4001:M00412345", "ell14:11400002:a-hwp", "tdc1:TDC1-00141"]
    static let benchScript = Paths.root.appendingPathComponent("Tests/USBEmulation/bench-kinds.yaml").path
    static let benchDevices = ["itc4001:M00412345", "pm100:P0012345", "ted4015:M00500123", "tdc1:TDC1-00141"]

    struct LabRun {
        var result: ProcessResult
        var report: [String: Any]
        var outPath: String

        func device(_ serial: String) -> [String: Any] {
            ((report["devices"] as? [String: Any])?[serial] as? [String: Any]) ?? [:]
        }
        func log(_ serial: String) -> [String] { device(serial)["log"] as? [String] ?? [] }
        func state(_ serial: String) -> [String: Any] { device(serial)["state"] as? [String: Any] ?? [:] }
        /// Seconds from the first fault to the command's exit (the emulator's clock).
        var faultToExit: Double? {
            guard let f = (report["faults"] as? [[String: Any]])?.first, let t = f["t"] as? Double,
                let end = report["seconds"] as? Double
            else { return nil }
            return end - t
        }
    }

    /// Runs `arguments` of herald under the emulated instruments; the emulator is the
    /// system Python (python3-gi), and kills the command after 60 s so nothing hangs.
    func underLab(_ devices: [String], faults: [String] = [], _ arguments: [String]) async throws -> LabRun {
        let dir = try Paths.temporaryDirectory()
        let report = dir.appendingPathComponent("lab.json").path
        let out = dir.appendingPathComponent("run.h5").path
        var args = [Self.lab, "--timeout", "60", "--report", report]
        for d in devices { args += ["--device", d] }
        for f in faults { args += ["--fault", f] }
        let filled = arguments.map { $0 == "OUT" ? out : $0 }
        let r = try await runProcess("/usr/bin/python3", args + ["--", Paths.herald.path] + filled)
        let data = try Data(contentsOf: URL(fileURLWithPath: report))
        let json = try JSONSerialization.jsonObject(with: data) as? [String: Any] ?? [:]
        return LabRun(result: r, report: json, outPath: out)
    }

    @Test(
        "each USB driver passes the conformance kit against its emulated instrument",
        arguments: [
            ("itc4001:M00412345", "thorlabs.itc4001"), ("ell14:11400001:a-qwp", "thorlabs.ell14"),
            ("tdc1:TDC1-00141", "s15.tdc1"), ("pm100:P0012345", "thorlabs.pm100"), ("ted4015:M00500123", "thorlabs.ted4015"),
        ])
    func conformance(device: String, driver: String) async throws {
        let run = try await underLab([device], ["check-driver", driver])
        #expect(run.result.status == 0, "\(run.result.stdout)\n\(run.result.stderr)")
        #expect(run.result.stdout.contains("checks passed"))
        #expect(!run.result.stdout.contains("FAIL"), "\(run.result.stdout)")
    }

    @Test("herald devices lists each emulated instrument with the driver that claims it")
    func devicesNamesTheClaimingDriver() async throws {
        let run = try await underLab(["itc4001:M00412345", "ell14:11400001:a-qwp", "tdc1:TDC1-00141"], ["devices"])
        #expect(run.result.status == 0)
        let lines = run.result.stdout.split(separator: "\n")
        #expect(lines.count == 3, "\(run.result.stdout)")
        #expect(lines.contains { $0.hasPrefix("1313:804a") && $0.contains("serial M00412345") && $0.hasSuffix("driver thorlabs.itc4001") })
        #expect(lines.contains { $0.hasPrefix("0403:6015") && $0.contains("serial 11400001") && $0.hasSuffix("driver thorlabs.ell14") })
        #expect(lines.contains { $0.hasPrefix("04d8:000a") && $0.contains("serial TDC1-00141") && $0.hasSuffix("driver s15.tdc1") })
    }

    @Test("the hardware tomography script runs on emulated laser, four rotators and tagger, and h5py agrees with the report")
    func fullTomographyScript() async throws {
        let devices = [
            "itc4001:M00412345", "ell14:11400001:a-qwp", "ell14:11400002:a-hwp", "ell14:11400003:b-qwp",
            "ell14:11400004:b-hwp", "tdc1:TDC1-00141",
        ]
        let script = Paths.root.appendingPathComponent("Experiments/hardware/bell-tomography-usb.yaml").path
        let run = try await underLab(devices, ["run", script, "--out", "OUT", "--overwrite", "--set", "integration=100ms", "--json"])
        #expect(run.result.status == 0, "\(run.result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.result.stdout.utf8)) as? [String: Any])
        let analysis = try #require((report["analyses"] as? [[String: Any]])?.first)
        let values = try #require(analysis["values"] as? [String: Double])
        let errors = analysis["uncertainties"] as? [String: Double] ?? [:]
        let f = try #require(values["fidelity_phi+"] ?? values["fidelity"]), sigma = try #require(errors["fidelity_phi+"] ?? errors["fidelity"])
        // The emulated source: Werner state, V = 0.95 → F = (1 + 3V)/4; tolerance from counting statistics.
        #expect(sigma > 0 && sigma < 0.03)
        #expect(abs(f - (1 + 3 * 0.95) / 4) < 4 * sigma, "F = \(f) ± \(sigma)")
        // The laser was left off, and every rotator moved through all six analyzer states.
        #expect(run.state("M00412345")["output"] as? Bool == false)
        #expect(run.log("11400002").filter { $0.hasPrefix("0ma") }.count >= 6)
        let reportURL = URL(fileURLWithPath: run.outPath + ".report.json")
        try Data(run.result.stdout.utf8).write(to: reportURL)
        let check = try await runProcess(Paths.python, [Paths.root.appendingPathComponent("Tests/python/check_run.py").path, run.outPath, reportURL.path])
        #expect(check.status == 0, "\(check.stderr)")
    }

    /// A fault that the drivers recover from: the run succeeds, and the instrument saw the recovery.
    @Test(
        "recoverable faults: the driver recovers (USBTMC abort/clear, retry) and the run succeeds",
        arguments: [
            ("M00412345:timeout@on=OUTP:PROT:KEYL", "<abort bulk in"),
            ("M00412345:wrong-btag@on=OUTP:PROT:KEYL", "<clear>"),
            ("M00412345:malformed@on=OUTP:PROT:KEYL", "<clear>"),
            ("M00412345:short@on=OUTP:PROT:KEYL", "<clear>"),
            ("M00412345:stall@after=6", "<clear>"),
            ("M00412345:garbage@on=SYST:ERR", ""),
            ("11400002:timeout@after=3", ""),
            ("11400002:garbage@after=3", ""),
            ("11400002:malformed@after=3", ""),
        ])
    func recoverableFault(fault: String, evidence: String) async throws {
        let run = try await underLab(Self.scanDevices, faults: [fault], ["run", Self.faultScript, "--out", "OUT", "--overwrite"])
        #expect(run.result.status == 0, "\(fault): \(run.result.stderr)")
        #expect((run.report["faults"] as? [Any])?.count == 1, "the fault fired")
        if !evidence.isEmpty {
            #expect(run.log("M00412345").contains { $0.hasPrefix(evidence) }, "\(run.log("M00412345"))")
        }
        #expect(run.result.stderr.contains("retry") || !evidence.isEmpty, "\(run.result.stderr)")
        #expect(run.state("M00412345")["output"] as? Bool == false)
    }

    /// A fault that ends the run: a clear error naming the device, the laser off, the file
    /// closed with what was recorded, exit status 1, and no hang.
    @Test(
        "fatal faults: clear error, laser off, data kept, exit 1",
        arguments: [
            ("TDC1-00141:unplug@after=10", "tagger", "unplugged"),
            ("11400002:unplug@after=6", "hwp_a", "unplugged"),
            ("TDC1-00141:garbage@after=10", "tagger", "time stamps run backwards"),
            ("TDC1-00141:short@after=10", "tagger", "stream stopped"),
        ])
    func fatalFault(fault: String, device: String, message: String) async throws {
        let run = try await underLab(Self.scanDevices, faults: [fault], ["run", Self.faultScript, "--out", "OUT", "--overwrite"])
        #expect(run.result.status == 1, "\(fault): \(run.result.stdout) \(run.result.stderr)")
        #expect(run.result.stderr.contains("'\(device)'") && run.result.stderr.contains(message), "\(run.result.stderr)")
        #expect(run.state("M00412345")["output"] as? Bool == false, "the laser must be off: \(run.log("M00412345").suffix(5))")
        if let elapsed = run.faultToExit { #expect(elapsed < 3, "took \(elapsed) s from the fault to exit") }
        let check = try await runProcess(
            Paths.python,
            ["-c", "import h5py,sys; f=h5py.File(sys.argv[1]); print(f['user/herald/run'].attrs['exit_status'], len(f['photon_data/timestamps']))", run.outPath])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.hasPrefix("failed "), "\(check.stdout)")
        #expect((Int(check.stdout.split(separator: " ").last?.trimmingCharacters(in: .whitespacesAndNewlines) ?? "") ?? 0) > 0, "tags recorded before the fault are kept")
    }

    @Test("an unplugged laser stops the run within a second, even while the tagger is acquiring")
    func laserUnpluggedMidAcquisition() async throws {
        // Unplugged 1 s after the start, during the first 3 s acquisition: only the udev removal can tell.
        let script = try Paths.temporaryDirectory().appendingPathComponent("long.yaml")
        try String(contentsOfFile: Self.faultScript, encoding: .utf8).replacingOccurrences(of: "duration: 50 ms", with: "duration: 3 s")
            .write(to: script, atomically: true, encoding: .utf8)
        let run = try await underLab(
            Self.scanDevices, faults: ["M00412345:unplug@at=1.0"], ["run", script.path, "--out", "OUT", "--overwrite"])
        #expect(run.result.status == 1, "\(run.result.stderr)")
        #expect(run.result.stderr.contains("'pump'") && run.result.stderr.contains("unplugged"), "\(run.result.stderr)")
        let elapsed = try #require(run.faultToExit)
        #expect(elapsed < 1.5, "the run ended \(elapsed) s after the laser was unplugged")
    }

    /// The power meter and the temperature controller over USBTMC: every setpoint reaches the
    /// controller, the interlock reads the meter through every acquisition, and both end safe.
    @Test("a PM100 and a TED4015 over emulated USB: setpoints, readings, and both left safe")
    func powerMeterAndTemperatureController() async throws {
        let run = try await underLab(Self.benchDevices, ["run", Self.benchScript, "--out", "OUT", "--overwrite", "--json"])
        #expect(run.result.status == 0, "\(run.result.stderr)")
        let oven = run.log("M00500123")
        for t in [306.0, 307.0, 308.0, 309.0, 310.0] { #expect(oven.contains("SOUR:TEMP \(t)"), "\(oven)") }
        #expect(run.state("M00500123")["output"] as? Bool == false, "the oven was switched off")
        #expect(run.state("M00412345")["output"] as? Bool == false, "the pump was switched off")
        // Read before and during each of the five 150 ms acquisitions (interlock slices of 100 ms).
        #expect((run.state("P0012345")["readings"] as? Int ?? 0) >= 10, "\(run.state("P0012345"))")
        #expect(run.state("P0012345")["wavelength_nm"] as? Double == 405)
        #expect(run.log("P0012345").prefix(4) == ["*IDN?", "*CLS", "CONF:POW", "SYST:ERR?"], "\(run.log("P0012345"))")
    }

    /// A reading that never comes is retried (USBTMC abort, then the query again); an oven
    /// unplugged mid-run fails the run naming it, with the pump off and the tags kept.
    @Test("PM100 timeout is recovered; a TED4015 unplugged mid-run fails the run naming it, pump off, data kept")
    func benchKindsFaults() async throws {
        let slow = try await underLab(Self.benchDevices, faults: ["P0012345:timeout@on=MEAS:POW"], ["run", Self.benchScript, "--out", "OUT", "--overwrite"])
        #expect(slow.result.status == 0, "\(slow.result.stderr)")
        #expect((slow.report["faults"] as? [Any])?.count == 1, "the fault fired")
        #expect(slow.log("P0012345").contains { $0.hasPrefix("<abort bulk in") }, "\(slow.log("P0012345"))")

        let gone = try await underLab(Self.benchDevices, faults: ["M00500123:unplug@on=SOUR:TEMP 308"], ["run", Self.benchScript, "--out", "OUT", "--overwrite", "--json"])
        #expect(gone.result.status == 1, "\(gone.result.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(gone.result.stdout.utf8)) as? [String: Any])
        let failure = report["failure"] as? [String: Any]
        #expect(failure?["device"] as? String == "oven" && failure?["error"] as? String == "disconnected", "\(String(describing: failure))")
        #expect(gone.state("M00412345")["output"] as? Bool == false, "the pump was switched off")
        #expect((report["tags"] as? Int ?? 0) > 0, "the points before the unplug are kept: \(report)")
    }
}
