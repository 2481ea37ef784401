import Foundation
import HeraldCore
import SimulatedLab

/// A Thorlabs ITC4001 on the simulated lab: the SCPI subset Herald's driver speaks, with the
/// controller's checks (current above the limit → -222, unknown header → -113). Its laser
/// diode pumps the lab's source: optical power rises linearly above the threshold current,
/// reaching the lab's `nominal_power` at `laser_nominal_current`.
final class SimulatedITC4001: SimulatedSCPIInstrument, @unchecked Sendable {  // state behind the lab actor and a lock
    let lab: SimulatedLab
    private let lock = NSLock()
    private var output = false, tec = true
    private var current = 0.0, limit = 1.0, temperatureSetpoint = 298.15

    init(device: String, lab: SimulatedLab, transcript: InstrumentTranscript) {
        self.lab = lab
        super.init(device: device, model: "ITC4001", transcript: transcript)
    }

    /// Long SCPI forms to the short ones, optional nodes dropped (OUTPut1:STATe → OUTP).
    static func normalise(_ c: String) -> String {
        var s = c
        for (long, short) in [
            ("OUTPUT", "OUTP"), ("SOURCE", "SOUR"), ("CURRENT", "CURR"), ("LIMIT", "LIM"), ("TEMPERATURE", "TEMP"), ("MEASURE", "MEAS"),
            ("PROTECTION", "PROT"), ("KEYLOCK", "KEYL"), ("INTLOCK", "INTL"), ("TRIPPED", "TRIP"), (":STATE", ""), (":STAT", ""),
            (":LEVEL", ""), (":LEV", ""), (":AMPLITUDE", ""), (":AMPL", ""), (":SPOINT", ""), (":SPO", ""), (":IMMEDIATE", ""), (":IMM", ""),
            ("OUTP1", "OUTP"), ("SOUR1", "SOUR"), ("MEAS1", "MEAS"),
        ] { s = s.replacingOccurrences(of: long, with: short) }
        return s
    }

    override func execute(_ command: String, original: String) throws {
        let c = Self.normalise(command)
        let head = header(c)
        let query = c.hasSuffix("?")
        lock.lock()
        defer { lock.unlock() }
        switch (head, query) {
        case ("*IDN", true): reply("Thorlabs,ITC4001,SIM-\(device),1.8.0/1.5.0/2.3.0")
        case ("*RST", false):
            output = false
            current = 0
            try pump()
        case ("UNIT:TEMP", false): break
        case ("OUTP", false):
            output = c.hasSuffix(" ON") || c.hasSuffix(" 1")
            try pump()
        case ("OUTP", true): reply(output ? "1" : "0")
        case ("OUTP2", false): tec = c.hasSuffix(" ON") || c.hasSuffix(" 1")
        case ("OUTP2", true): reply(tec ? "1" : "0")
        case ("SOUR:CURR:LIM", false):
            if let v = argument(c) {
                limit = v
                current = min(current, v)
                try pump()
            }
        case ("SOUR:CURR:LIM", true): reply(Self.format(limit))
        case ("SOUR:CURR", false):
            if let v = argument(c) {
                if v < 0 || v > limit { queueError("-222,\"Data out of range\"") } else {
                    current = v
                    try pump()
                }
            }
        case ("SOUR:CURR", true): reply(Self.format(current))
        case ("SOUR2:TEMP", false): if let v = argument(c) { temperatureSetpoint = v }
        case ("SOUR2:TEMP", true): reply(Self.format(temperatureSetpoint))
        case ("MEAS:CURR", true): reply(Self.format(output ? current : 0))
        case ("MEAS:TEMP", true): reply(Self.format(tec ? temperatureSetpoint : 298.15))
        case ("OUTP:PROT:KEYL:TRIP", true), ("OUTP:PROT:INTL:TRIP", true): reply("0")
        default: queueError("-113,\"Undefined header\"")
        }
    }

    /// The diode's optical power into the lab's source.
    func pump() throws {
        let on = output, i = current
        let lab = self.lab
        try onLab {
            let p = await lab.parameters
            let slope = p.nominalPower / max(1e-6, p.laserNominalCurrent - p.laserThresholdCurrent)
            await lab.setPump(power: max(0, i - p.laserThresholdCurrent) * slope)
            await lab.setPump(enabled: on)
        }
    }
}
