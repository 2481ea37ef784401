import Foundation
import HeraldCore
import HeraldUSBProtocols
import SimulatedLab
import Synchronization

/// An Elliptec ELL14 rotation mount on the simulated lab, behind its serial line: the ELLx
/// commands Herald's driver sends (`in`, `ho0`, `ma`, `gp`, `gs`), answered as the mount does
/// (`IN…`, `PO<8 hex>`, `GS<code>`), each ended by CR LF. The mount turns the lab's waveplate
/// named by the device's `arm` and `plate` settings.
final class SimulatedElliptec: ByteLink, @unchecked Sendable {  // state behind a Mutex
    static let pulsesPerRevolution = 143_360
    static let lengths: [String: Int] = ["ma": 8, "mr": 8, "ho": 1, "in": 0, "gs": 0, "gp": 0]

    let device: String
    let lab: SimulatedLab
    let transcript: InstrumentTranscript
    let arm: Arm
    let plate: Waveplate
    let address: Character
    var identity: String { "simulated ELL14 (\(device))" }
    private let state = Mutex<(rx: [UInt8], tx: [UInt8], pulses: Int)>(([], [], 0))

    init(config: DeviceConfig, lab: SimulatedLab, transcript: InstrumentTranscript) throws {
        device = config.name
        self.lab = lab
        self.transcript = transcript
        guard let a = config.settings["arm"]?.text.flatMap(Arm.init(rawValue:)),
            let p = config.settings["plate"]?.text.flatMap(Waveplate.init(rawValue:))
        else { throw DeviceError(device: config.name, .rejected, "--mock needs the mount's 'arm' and 'plate' settings to place it in the simulated lab") }
        arm = a
        plate = p
        lab.mount(p, arm: a)
        let n = Int(config.settings["address"]?.quantity?.value ?? 0)
        address = Character(String(min(15, max(0, n)), radix: 16, uppercase: true))
    }

    func write(_ bytes: [UInt8], timeout: Duration) throws {
        var commands: [(String, String)] = []
        state.withLock { s in
            s.rx += bytes
            while s.rx.count >= 3 {
                let code = String(decoding: s.rx[1..<3], as: UTF8.self)
                let need = Self.lengths[code] ?? 0
                guard s.rx.count >= 3 + need else { break }
                let addr = String(UnicodeScalar(s.rx[0]))
                let data = String(decoding: s.rx[3..<(3 + need)], as: UTF8.self)
                s.rx.removeFirst(3 + need)
                if addr == String(address) { commands.append((code, data)) }
            }
        }
        for (code, data) in commands {
            transcript.record(device, .sent, String(address) + code + data)
            try execute(code, data)
        }
    }

    func send(_ text: String) {
        transcript.record(device, .received, text)
        state.withLock { $0.tx += Array((text + "\r\n").utf8) }
    }

    func execute(_ code: String, _ data: String) throws {
        let a = String(address)
        switch code {
        case "in": send(a + "IN0E" + "11400000" + "2023" + "17" + "01" + "0168" + hex8(UInt32(Self.pulsesPerRevolution)))
        case "gs": send(a + "GS00")
        case "gp": send(position())
        case "ma", "ho":
            var target = 0
            if code == "ma" {
                guard let raw = UInt32(data, radix: 16) else { return send(a + "GS04") }
                target = Int(Int32(bitPattern: raw))
            }
            guard (0...Self.pulsesPerRevolution).contains(target) else { return send(a + "GS04") }
            state.withLock { $0.pulses = target }
            let degrees = Double(target) * 360 / Double(Self.pulsesPerRevolution)
            let (lab, arm, plate) = (self.lab, self.arm, self.plate)
            try onLab { await lab.setAngle(degrees, arm: arm, plate: plate) }
            send(position())
        default: send(a + "GS03")
        }
    }

    func position() -> String {
        String(address) + "PO" + hex8(UInt32(truncatingIfNeeded: state.withLock { $0.pulses }))
    }

    func read(timeout: Duration) throws -> [UInt8] {
        let out = state.withLock { s -> [UInt8] in
            defer { s.tx.removeAll() }
            return s.tx
        }
        // Nothing pending means the driver waits for a reply that will not come: let its
        // timeout run without spinning.
        if out.isEmpty { Thread.sleep(forTimeInterval: min(0.002, Double(timeout.components.seconds) + 0.002)) }
        return out
    }

    func purge() throws { state.withLock { $0.tx.removeAll(); $0.rx.removeAll() } }
}

func hex8(_ v: UInt32) -> String {
    let s = String(v, radix: 16, uppercase: true)
    return String(repeating: "0", count: max(0, 8 - s.count)) + s
}
