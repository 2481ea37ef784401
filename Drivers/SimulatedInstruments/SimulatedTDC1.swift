import Foundation
import HeraldCore
import HeraldUSBProtocols
import SimulatedLab
import Synchronization

/// An S-Fifteen TDC1 on the simulated lab, behind its CDC-ACM line: text commands ended by
/// CR LF or `;`, and in timestamp mode the unit's stream of 32-bit little-endian words (time
/// in 2 ns units wrapping every 2²⁷, bit 4 for idle words, bits 0–3 the channel pattern).
/// The words are the lab's detector clicks over the gate, quantised to the unit's 2 ns and
/// merged into one pattern when they share a unit, as the hardware does; idle words every
/// quarter period keep the driver's wrap count, and one at the gate's end closes it.
final class SimulatedTDC1: ByteLink, @unchecked Sendable {  // state behind a Mutex
    static let unitPs: Int64 = 2000
    static let period: Int64 = 1 << 27

    let device: String
    let lab: SimulatedLab
    let transcript: InstrumentTranscript
    var identity: String { "simulated TDC1 (\(device))" }
    private let state = Mutex<(rx: [UInt8], tx: [UInt8], stream: [UInt8], level: String, gateMs: Int64, mode: Int)>(([], [], [], "NIM", 1000, 0))

    init(device: String, lab: SimulatedLab, transcript: InstrumentTranscript) {
        self.device = device
        self.lab = lab
        self.transcript = transcript
    }

    func write(_ bytes: [UInt8], timeout: Duration) throws {
        var commands: [String] = []
        state.withLock { s in
            s.rx += bytes
            while let cut = s.rx.firstIndex(where: { $0 == 13 || $0 == 10 || $0 == 59 }) {
                let c = String(decoding: s.rx[..<cut], as: UTF8.self).trimmingCharacters(in: .whitespaces)
                s.rx.removeFirst(cut + 1)
                if !c.isEmpty { commands.append(c) }
            }
        }
        for c in commands {
            transcript.record(device, .sent, c)
            try execute(c)
        }
    }

    func reply(_ text: String) {
        transcript.record(device, .received, text)
        state.withLock { $0.tx += Array((text + "\r\n").utf8) }
    }

    func execute(_ command: String) throws {
        let c = command.uppercased()
        switch c {
        case "*IDN?": reply("S-Fifteen Instruments,TDC1,SIM-\(device),1.3")
        case "NIM", "TTL": state.withLock { $0.level = c }
        case "LEVEL?": reply(state.withLock { $0.level })
        case "SINGLES": state.withLock { $0.mode = 0 }
        case "PAIRS": state.withLock { $0.mode = 1 }
        case "TIMESTAMP": state.withLock { $0.mode = 3 }
        case "MODE?": reply(String(state.withLock { $0.mode }))
        case "TIME?": reply(String(state.withLock { $0.gateMs }))
        case "ABORT": state.withLock { $0.stream.removeAll(); $0.tx.removeAll() }
        case "COUNTS?":
            let (mode, gate) = state.withLock { ($0.mode, $0.gateMs) }
            let lab = self.lab
            let gateMs = gate == 0 ? 1000 : gate
            let (block, interval) = try onLab { try await lab.acquire(duration: .milliseconds(gateMs)) }
            if mode == 3 {
                let words = Self.words(block, fromPs: interval.startPs, gateUnits: gateMs * 500_000)
                transcript.record(device, .received, "[\(words.count / 4) time-stamp words]")
                state.withLock { $0.stream += words }
            } else {
                var counts = [0, 0, 0, 0]
                for ch in block.channels where (1...4).contains(ch) { counts[Int(ch) - 1] += 1 }
                reply(counts.map(String.init).joined(separator: " "))
            }
        default:
            if c.hasPrefix("TIME "), let ms = Int64(c.dropFirst(5).trimmingCharacters(in: .whitespaces)), ms >= 0 {
                state.withLock { $0.gateMs = ms }
            }
            // Unknown commands are ignored, as the TDC1 firmware does.
        }
    }

    /// The unit's words for one gate: clicks relative to its start, in 2 ns units.
    static func words(_ block: TagBlock, fromPs start: Int64, gateUnits: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(block.count * 4 + 64)
        func put(_ units: Int64, _ low: UInt32) {
            let w = UInt32(truncatingIfNeeded: units % period) << 5 | low
            out.append(UInt8(w & 0xFF))
            out.append(UInt8(w >> 8 & 0xFF))
            out.append(UInt8(w >> 16 & 0xFF))
            out.append(UInt8(w >> 24))
        }
        var last: Int64 = 0
        var pendingUnit: Int64 = -1
        var pattern: UInt32 = 0
        func idleUntil(_ units: Int64) {
            while units - last > period / 4 {
                last += period / 4
                put(last, 0x10)
            }
        }
        for (t, ch) in zip(block.timestamps, block.channels) where (1...4).contains(ch) {
            let units = max(0, (t - start) / unitPs)
            guard units < gateUnits else { break }
            if units != pendingUnit {
                if pendingUnit >= 0 {
                    put(pendingUnit, pattern)
                    last = pendingUnit
                }
                idleUntil(units)
                pendingUnit = units
                pattern = 0
            }
            pattern |= 1 << UInt32(ch - 1)
        }
        if pendingUnit >= 0 {
            put(pendingUnit, pattern)
            last = pendingUnit
        }
        idleUntil(gateUnits)
        put(gateUnits, 0x10)  // the gate has passed
        return out
    }

    func read(timeout: Duration) throws -> [UInt8] {
        let out = state.withLock { s -> [UInt8] in
            if !s.tx.isEmpty {
                defer { s.tx.removeAll() }
                return s.tx
            }
            let n = min(16384, s.stream.count)
            defer { s.stream.removeFirst(n) }
            return Array(s.stream.prefix(n))
        }
        if out.isEmpty { Thread.sleep(forTimeInterval: 0.002) }
        return out
    }

    func purge() throws { state.withLock { $0.tx.removeAll(); $0.stream.removeAll(); $0.rx.removeAll() } }
}
