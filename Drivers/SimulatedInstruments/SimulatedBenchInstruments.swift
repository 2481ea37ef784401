import Foundation
import HeraldCore
import HeraldUSBProtocols
import SimulatedLab
import Synchronization

/// A PM100-series console on the simulated lab: `MEAS:POW?` reads the pump with the lab's
/// power-meter noise; the correction wavelength is kept.
final class SimulatedPM100: SimulatedSCPIInstrument, @unchecked Sendable {  // state behind a Mutex
    let lab: SimulatedLab
    private let wavelengthNm = Mutex(405.0)

    init(device: String, lab: SimulatedLab, transcript: InstrumentTranscript) {
        self.lab = lab
        super.init(device: device, model: "PM100D", transcript: transcript)
    }

    override func execute(_ command: String, original: String) throws {
        switch (header(command), command.contains("?")) {
        case ("*IDN", true): reply("Thorlabs,PM100D,SIM-\(device),2.5.0")
        case ("CONF:POW", false), ("SENS:POW:RANG:AUTO", false): break
        case ("SENS:CORR:WAV", false):
            if let v = argument(command) {
                if (400...1100).contains(v) { wavelengthNm.withLock { $0 = v } } else { queueError("-222,\"Data out of range\"") }
            }
        case ("SENS:CORR:WAV", true):
            // The simulated console carries an S120C photodiode: 400–1100 nm.
            if command.hasSuffix("MIN") { reply(Self.format(400)) } else if command.hasSuffix("MAX") { reply(Self.format(1100)) } else {
                reply(Self.format(wavelengthNm.withLock { $0 }))
            }
        case ("MEAS:POW", true), ("READ", true):
            let lab = self.lab
            reply(Self.format(try onLab { await lab.measurePumpPower() }))
        default: queueError("-113,\"Undefined header\"")
        }
    }
}

/// A TED4015 on the simulated lab holding the source's crystal: its output and setpoint set
/// the crystal's temperature (settled at once on the lab's clock); off, room temperature.
final class SimulatedTED4015: SimulatedSCPIInstrument, @unchecked Sendable {  // state behind a Mutex
    static let room = 295.0
    let lab: SimulatedLab
    private let state = Mutex((setpoint: 298.15, on: false))

    init(device: String, lab: SimulatedLab, transcript: InstrumentTranscript) {
        self.lab = lab
        super.init(device: device, model: "TED4015", transcript: transcript)
    }

    override func execute(_ command: String, original: String) throws {
        switch (header(command), command.hasSuffix("?")) {
        case ("*IDN", true): reply("Thorlabs,TED4015,SIM-\(device),1.6.0")
        case ("UNIT:TEMP", false): break
        case ("SOUR:TEMP", false):
            if let v = argument(command) {
                state.withLock { $0.setpoint = v }
                try apply()
            }
        case ("SOUR:TEMP", true): reply(Self.format(state.withLock { $0.setpoint }))
        case ("MEAS:TEMP", true):
            let s = state.withLock { $0 }
            reply(Self.format(s.on ? s.setpoint : Self.room))
        case ("OUTP", false):
            state.withLock { $0.on = command.hasSuffix(" ON") || command.hasSuffix(" 1") }
            try apply()
        case ("OUTP", true): reply(state.withLock { $0.on } ? "1" : "0")
        default: queueError("-113,\"Undefined header\"")
        }
    }

    func apply() throws {
        let s = state.withLock { $0 }
        let lab = self.lab
        try onLab { await lab.setCrystal(temperature: s.on ? s.setpoint : Self.room) }
    }
}

/// An SMC100 with a 25 mm stage on the simulated lab, behind its serial line: `VE`, `TS`,
/// `OR`, `PA`, `TP`, `TE`, `SL?`, `SR?`, `ST`. Moves complete at once; the stage sits in
/// photon B's path (`passes` from the driver's setting).
final class SimulatedSMC100: ByteLink, @unchecked Sendable {  // state behind a Mutex
    let device: String
    let lab: SimulatedLab
    let transcript: InstrumentTranscript
    let address: String
    let passes: Int
    var identity: String { "simulated SMC100 (\(device))" }
    private let state = Mutex<(rx: [UInt8], tx: [UInt8], mm: Double, referenced: Bool, error: String)>(([], [], 0, false, "@"))

    init(config: DeviceConfig, lab: SimulatedLab, transcript: InstrumentTranscript) {
        device = config.name
        self.lab = lab
        self.transcript = transcript
        address = String(Int(config.settings["address"]?.quantity?.value ?? 1))
        passes = Int(config.settings["passes"]?.quantity?.value ?? 2)
    }

    func write(_ bytes: [UInt8], timeout: Duration) throws {
        var commands: [String] = []
        state.withLock { s in
            s.rx += bytes
            while let cut = s.rx.firstIndex(of: 10) {
                let c = String(decoding: s.rx[..<cut], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                s.rx.removeFirst(cut + 1)
                if !c.isEmpty { commands.append(c) }
            }
        }
        for c in commands {
            transcript.record(device, .sent, c)
            guard c.hasPrefix(address) else { continue }  // another controller's address
            try execute(String(c.dropFirst(address.count)))
        }
    }

    func reply(_ text: String) {
        let line = address + text
        transcript.record(device, .received, line)
        state.withLock { $0.tx += Array((line + "\r\n").utf8) }
    }

    func execute(_ c: String) throws {
        let code = String(c.prefix(2)).uppercased(), value = String(c.dropFirst(2))
        switch code {
        case "VE": reply("VE SMC_CC - Version 3.0.1 (simulated)")
        case "SL": reply("SL0")
        case "SR": reply("SR25")
        case "TS": reply("TS0000" + (state.withLock { $0.referenced } ? "33" : "0A"))
        case "TE":
            let e = state.withLock { s -> String in
                defer { s.error = "@" }
                return s.error
            }
            reply("TE" + e)
        case "TP": reply("TP" + String(format: "%.5f", state.withLock { $0.mm }))
        case "ST": break
        case "OR":
            state.withLock {
                $0.referenced = true
                $0.mm = 0
            }
            try move()
        case "PA":
            let ok = state.withLock { s -> Bool in
                guard s.referenced else {
                    s.error = "H"  // not allowed in NOT REFERENCED state
                    return false
                }
                guard let mm = Double(value), (0...25).contains(mm) else {
                    s.error = "C"  // parameter missing or out of range
                    return false
                }
                s.mm = mm
                return true
            }
            if ok { try move() }
        default: state.withLock { $0.error = "A" }  // unknown message code
        }
    }

    func move() throws {
        let mm = state.withLock { $0.mm }
        let (lab, passes) = (self.lab, self.passes)
        try onLab { await lab.setStage(position: mm / 1000, passes: passes) }
    }

    func read(timeout: Duration) throws -> [UInt8] {
        let out = state.withLock { s -> [UInt8] in
            defer { s.tx.removeAll() }
            return s.tx
        }
        if out.isEmpty { Thread.sleep(forTimeInterval: 0.002) }
        return out
    }

    func purge() throws { state.withLock { $0.tx.removeAll(); $0.rx.removeAll() } }
}
