import HeraldCore
import SimulatedLab
import USBInstrument

/// The in-process instruments `--mock` puts under the real drivers, by driver id, each bound
/// to the simulated lab so the physics is the mock drivers' physics.
public enum SimulatedInstruments {
    /// The simulator for driver `id`, or nil when the driver has none (it is then swapped for
    /// the mock of its kind).
    public static func simulator(for id: String, lab: SimulatedLab, transcript: InstrumentTranscript) -> InstrumentSimulator? {
        switch id {
        case "thorlabs.itc4001":
            return { .message(SimulatedITC4001(device: $0.name, lab: lab, transcript: transcript)) }
        case "thorlabs.ell14":
            return { .bytes(try SimulatedElliptec(config: $0, lab: lab, transcript: transcript)) }
        case "s15.tdc1":
            return { .bytes(SimulatedTDC1(device: $0.name, lab: lab, transcript: transcript)) }
        case "thorlabs.pm100":
            return { .message(SimulatedPM100(device: $0.name, lab: lab, transcript: transcript)) }
        case "thorlabs.ted4015":
            return { .message(SimulatedTED4015(device: $0.name, lab: lab, transcript: transcript)) }
        case "newport.smc100":
            return { .bytes(SimulatedSMC100(config: $0, lab: lab, transcript: transcript)) }
        default: return nil
        }
    }

    /// Driver ids that have a simulated instrument.
    public static let drivers: Set<String> = ["thorlabs.itc4001", "thorlabs.ell14", "s15.tdc1", "thorlabs.pm100", "thorlabs.ted4015", "newport.smc100"]
}
