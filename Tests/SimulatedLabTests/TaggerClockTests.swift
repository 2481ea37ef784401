import Foundation
import HeraldCore
import MockTimeTagger
import SimulatedLab
import Testing

/// The simulated taggers' own clocks and sync marks, and taggers acquiring together.
@Suite struct TaggerClockTests {
    func q(_ v: Double, _ d: PhysicalDimension) -> Value { .quantity(Quantity(v, d)) }

    func lab(seed: UInt64 = 7, pairRate: Double = 20e3) async -> SimulatedLab {
        var p = LabParameters()
        p.pairRate = pairRate
        p.darkRate = 0
        p.efficiency = 1
        p.jitter = 0
        let lab = SimulatedLab(parameters: p, seed: seed)
        await lab.setPump(power: p.nominalPower)
        await lab.setPump(enabled: true)
        try? await lab.advance(by: .seconds(1))  // past the lock time
        return lab
    }

    @Test("two taggers of a group see the same photons once, each in its own clock, and the lab clock moves once")
    func groupSharesPhotons() async throws {
        let lab = await lab()
        let a = try MockTimeTagger(
            config: DeviceConfig(name: "a", driver: "mock.timetagger", settings: ["inputs": .text("1,2")]), lab: lab)
        let offset = 3.3e-6, drift = 1e-6
        let b = try MockTimeTagger(
            config: DeviceConfig(
                name: "b", driver: "mock.timetagger",
                settings: ["inputs": .text("3,4"), "clock_offset": q(offset, .time), "clock_drift": q(drift, .dimensionless)]),
            lab: lab)
        let group = AcquisitionGroup(members: ["a", "b"])
        let start = lab.nowPs
        let tagsA = TaggerModelTests.Collected(), tagsB = TaggerModelTests.Collected()
        async let ia = a.acquire(for: .seconds(2), group: group) { tagsA.add($0) }
        async let ib = b.acquire(for: .seconds(2), group: group) { tagsB.add($0) }
        let (intervalA, intervalB) = try await (ia, ib)
        #expect(lab.nowPs == start + 2_000_000_000_000)
        #expect(intervalA.startPs == start)
        // b reports its interval in its own clock.
        let truth = { (t: Int64) -> Int64 in t + Int64((offset * 1e12 + drift * Double(t)).rounded()) }
        #expect(intervalB.startPs == truth(start))
        #expect(intervalB.stopPs == truth(start + 2_000_000_000_000))
        let all = (tagsA.all, tagsB.all)
        #expect(Set(all.0.channels) == [1, 2])
        #expect(Set(all.1.channels) == [3, 4])
        // Efficiency 1, no jitter: every photon of arm A has its twin on arm B at the same lab
        // time, so b's tags mapped back by the true clock are exactly a's times.
        var back: [Int64] = []
        var lab0 = all.1.timestamps.makeIterator()
        var previous = Int64.min
        while let t = lab0.next() {
            // Invert t = s + offset + drift·s (monotonic): s ≈ (t − offset)/(1 + drift), then fix the rounding.
            var s = Int64(((Double(t) - offset * 1e12) / (1 + drift)).rounded())
            while truth(s) > t { s -= 1 }
            while truth(s) < t { s += 1 }
            #expect(s >= previous)
            previous = s
            back.append(s)
        }
        #expect(all.0.count == all.1.count)
        #expect(all.0.count > 30_000)  // 20k pairs/s over 2 s, less nothing
        #expect(back == all.0.timestamps)
    }

    @Test("a group whose members live on different labs does not wait for the absent: each acquires alone")
    func membersOnOtherLabsAreNotAwaited() async throws {
        let here = await lab(seed: 1), there = await lab(seed: 2)
        let a = try MockTimeTagger(config: DeviceConfig(name: "a", driver: "mock.timetagger"), lab: here)
        let b = try MockTimeTagger(config: DeviceConfig(name: "b", driver: "mock.timetagger"), lab: there)
        let group = AcquisitionGroup(members: ["a", "b"])
        let (startHere, startThere) = (here.nowPs, there.nowPs)
        async let ia = a.acquire(for: .milliseconds(300), group: group) { _ in }
        async let ib = b.acquire(for: .milliseconds(300), group: group) { _ in }
        let (x, y) = try await (ia, ib)
        #expect(x.tags > 0 && y.tags > 0)
        #expect(here.nowPs == startHere + 300_000_000_000 && there.nowPs == startThere + 300_000_000_000)
    }

    @Test("sync marks: one a second on the sync channel, at the tagger's clock, within the source's jitter")
    func syncMarks() async throws {
        let lab = await lab(pairRate: 1e3)
        let wander = 50e-12
        let settings: [String: Value] = [
            "clock_offset": q(-1.5e-6, .time), "clock_drift": q(-2e-6, .dimensionless), "clock_wander": q(wander, .time),
            "sync": .text("white_rabbit"), "sync_channel": q(5, .dimensionless),
        ]
        let t = try MockTimeTagger(config: DeviceConfig(name: "remote", driver: "mock.timetagger", settings: settings), lab: lab)
        try await lab.advance(by: .milliseconds(500))  // start between marks: 1.5 s to 11.5 s of lab time
        let got = TaggerModelTests.Collected()
        _ = try await t.acquire(for: .seconds(10)) { got.add($0) }
        let marks = zip(got.all.timestamps, got.all.channels).filter { $0.1 == 5 }.map(\.0)
        #expect(marks.count == 10)  // lab seconds 2…11
        var walk = TaggerClock.Walk(seed: t.clock.seed)
        for (k, mark) in zip(2..., marks) {
            let truePs = Int64(k) * 1_000_000_000_000
            let expected = Double(truePs) + t.clock.offsetPs(atPs: truePs, walk: &walk)
            // White Rabbit's 10 ps residual, clamped at 6σ by the model.
            #expect(abs(Double(mark) - expected) <= 60.5)
        }
        // The wander moved the offset away from the straight line (50 ps/√s over 10 s: ~160 ps;
        // 4σ bound on the chance that it stays within 5 ps at every second is negligible).
        var w2 = TaggerClock.Walk(seed: t.clock.seed)
        let deviations = (1...10).map { k -> Double in
            let ps = Int64(k) * 1_000_000_000_000
            return t.clock.offsetPs(atPs: ps, walk: &w2) - (t.clock.offsetPs + t.clock.drift * Double(ps))
        }
        #expect(deviations.contains { abs($0) > 5 })
    }

    @Test("bad clock settings name the tagger")
    func badSettings() async throws {
        let lab = await lab()
        func make(_ s: [String: Value]) -> String {
            do {
                _ = try MockTimeTagger(config: DeviceConfig(name: "remote", driver: "mock.timetagger", settings: s), lab: lab)
                return ""
            } catch { return "\(error)" }
        }
        #expect(make(["sync": .text("white_rabbit")]).contains("remote"))
        #expect(make(["sync": .text("white_rabbit")]).contains("sync_channel"))
        #expect(make(["inputs": .text("1,9")]).contains("detectors 1–4"))
        #expect(make(["inputs": .text("3"), "sync": .text("gps"), "sync_channel": q(3, .dimensionless)]).contains("also a detector input"))
    }
}
