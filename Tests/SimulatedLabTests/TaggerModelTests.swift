import HeraldCore
import MockTimeTagger
import SimulatedLab
import Synchronization
import Testing

/// The mock tagger's electronics: delays, resolution, and the buffer that overflows.
@Suite struct TaggerModelTests {
    final class Collected: Sendable {
        let blocks = Mutex<[TagBlock]>([])
        func add(_ b: TagBlock) { blocks.withLock { $0.append(b) } }
        var all: TagBlock {
            blocks.withLock { bs in
                var out = TagBlock()
                for b in bs {
                    out.timestamps += b.timestamps
                    out.channels += b.channels
                    out.excluded += b.excluded
                }
                return out
            }
        }
    }

    func tagger(_ settings: [String: Value], lab: SimulatedLab) throws -> MockTimeTagger {
        try MockTimeTagger(config: DeviceConfig(name: "tagger", driver: "mock.timetagger", settings: settings), lab: lab)
    }

    func brightLab(pairRate: Double = 2e6) async -> SimulatedLab {
        var p = LabParameters()
        p.pairRate = pairRate
        p.efficiency = 0.5
        let lab = SimulatedLab(parameters: p, seed: 5)
        await lab.setPump(power: 10e-3)
        await lab.setPump(enabled: true)
        return lab
    }

    @Test("a rate above the bandwidth overflows the buffer: tags dropped, intervals marked, throughput bounded")
    func overflowIsMarked() async throws {
        let lab = await brightLab()
        let bandwidth = 1e6, buffer = 20_000.0
        let t = try tagger(["bandwidth": .quantity(Quantity(bandwidth, .frequency)), "buffer": .quantity(Quantity(buffer, .dimensionless))], lab: lab)
        let got = Collected()
        let interval = try await t.acquire(for: .milliseconds(500)) { got.add($0) }
        let all = got.all
        #expect(!all.excluded.isEmpty, "≈2 M tags/s into a 1 M tags/s link must overflow")
        // No delivered tag lies inside a lost interval, and the intervals are ordered and disjoint.
        for gap in all.excluded {
            #expect(gap.stopPs > gap.startPs && gap.reason == "overflow")
            let inside = all.timestamps.filter { $0 >= gap.startPs && $0 < gap.stopPs }.count
            #expect(inside == 0, "\(inside) tags delivered inside \(gap)")
        }
        #expect(zip(all.excluded.dropFirst(), all.excluded).allSatisfy { $0.startPs >= $1.stopPs })
        // The link cannot carry more than bandwidth × time plus one buffer.
        #expect(Double(all.count) <= bandwidth * interval.seconds + buffer)
        #expect(all.timestamps == all.timestamps.sorted())
    }

    @Test("with enough bandwidth nothing is lost")
    func noOverflowWithinBandwidth() async throws {
        let lab = await brightLab(pairRate: 100e3)
        let t = try tagger(["bandwidth": .quantity(Quantity(10e6, .frequency))], lab: lab)
        let got = Collected()
        _ = try await t.acquire(for: .milliseconds(300)) { got.add($0) }
        #expect(got.all.excluded.isEmpty)
        #expect(got.all.count > 10_000)
    }

    @Test("input delays shift a channel and the resolution bins every timestamp; order holds across chunks")
    func delaysAndResolution() async throws {
        let lab = await brightLab(pairRate: 500e3)
        let t = try tagger(["resolution": .quantity(Quantity(100e-12, .time))], lab: lab)
        try await t.set("delay_3", to: .quantity(Quantity(40e-9, .time)))
        #expect(try await t.get("delay_3") == .quantity(Quantity(40e-9, .time)))
        let got = Collected()
        _ = try await t.acquire(for: .milliseconds(350)) { got.add($0) }
        let all = got.all
        #expect(all.timestamps.allSatisfy { $0 % 100 == 0 })
        #expect(all.timestamps == all.timestamps.sorted())
        // The 1–3 coincidence peak moves from 0 to +40 ns.
        let ch1 = zip(all.timestamps, all.channels).filter { $0.1 == 1 }.map(\.0)
        let ch3 = Set(zip(all.timestamps, all.channels).filter { $0.1 == 3 }.map(\.0))
        func peak(_ offset: Int64) -> Int { ch1.filter { t in (-2...2).contains { ch3.contains(t + offset + Int64($0) * 100) } }.count }
        #expect(peak(40_000) > 20 * max(1, peak(0)))
        // Out of range: the driver itself refuses, naming the device.
        await #expect(throws: DeviceError.self) { try await t.set("delay_3", to: .quantity(Quantity(1e-3, .time))) }
    }
}
