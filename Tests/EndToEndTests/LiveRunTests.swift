import Foundation
import HeraldCore
import HeraldLive
import Testing

/// The live digest on hand-made events: what the terminal line, the page and /metrics see.
struct LiveRunTests {
    static func start(nodes: [NodeAddress] = [], steps: [PlanStep] = []) -> RunStart {
        var plan = Plan(name: "t", scriptPath: "t.yaml", scriptText: "", devices: [], steps: steps)
        plan.nodes = nodes
        plan.interlocks = [
            Interlock(name: "pump-lock", condition: Condition(device: "pump", property: "locked", comparison: .equal, value: .bool(true)), timeout: .seconds(5), location: nil)
        ]
        let records = [DeviceRecord(name: "tagger", driver: "node", driverVersion: "1", settings: ["node": "bob"])]
        return RunStart(runID: UUID(), plan: plan, devices: records, seed: 1, mock: true, startedAt: Date(), heraldVersion: "0")
    }

    @Test func pausesAndOutagesShowWhileTheyLastAndNodesComeBack() async throws {
        let live = LiveRun()
        try await live.handle(.runStarted(Self.start(nodes: [NodeAddress(name: "bob", host: "10.0.0.2", port: 50051)])))
        #expect(live.snapshot().state == .running && live.snapshot().nodes.first?.up == true)
        let open = PauseRecord(interlock: "pump-lock", condition: "pump.locked == true", startPs: 2_000_000_000_000, stopPs: 2_000_000_000_000, resumed: false)
        try await live.handle(.pauseStarted(open))
        var s = live.snapshot()
        #expect(s.state == .paused && s.pause?.interlock == "pump-lock" && s.pause?.startS == 2)
        #expect(s.run?.interlocks.first?.ok == false)
        var closed = open
        closed.stopPs = 3_500_000_000_000
        closed.resumed = true
        try await live.handle(.pause(closed))
        s = live.snapshot()
        #expect(s.state == .running && s.pause == nil && s.pauses.count == 1 && s.pauses[0].stopS == 3.5)
        #expect(s.run?.interlocks.first?.ok == true)
        // A link outage pauses under the node's name: the node is down until it reconnects.
        try await live.handle(.pauseStarted(PauseRecord(interlock: "bob", condition: "link lost", startPs: 4, stopPs: 4, resumed: false)))
        #expect(live.snapshot().nodes.first?.up == false)
        try await live.handle(.pause(PauseRecord(interlock: "bob", condition: "link lost and reconnected", startPs: 4, stopPs: 9, resumed: true)))
        #expect(live.snapshot().nodes.first?.up == true)
        // A device on the node failing the run marks the node down.
        try await live.handle(.runStopped(RunStop(status: .failed, reason: "tagger vanished", failure: .device("tagger", .disconnected), stoppedAt: Date(), tagCount: 0)))
        s = live.snapshot()
        #expect(s.state == .stopped && s.status == "failed" && s.nodes.first?.up == false && s.etaSeconds == 0)
    }

    @Test func pairRatesComeFromEachPointsCountsWithPoissonErrors() async throws {
        let live = LiveRun()
        let sweep = Sweep(name: "scan", points: (0..<4).map { SweepPoint(label: "p\($0)", assignments: []) }, body: [])
        try await live.handle(.runStarted(Self.start(steps: [.sweep(sweep)])))
        #expect(live.snapshot().pointsTotal == 4)
        try await live.handle(.sweepPointFinished(SweepPointRecord(sweep: "scan", index: 0, label: "p0", settings: [:], startPs: 0, stopPs: 2_000_000_000_000)))
        try await live.handle(
            .counts(PointCounts(sweep: "scan", index: 0, label: "p0", duration: 2, singles: [1: 1000], pairs: [.init(channelA: 1, channelB: 3, projection: "HH", coincidences: 400, accidentals: 1)])))
        let s = live.snapshot()
        #expect(s.pointsDone == 1)
        let row = try #require(s.results.first?.rates["1-3"])
        // Rate n / T, error √n / T: 400 counts in 2 s.
        #expect(row.value == 200 && row.error == 10 && row.t == 2)
        #expect(s.results.first?.singles["1"] == 500)
        // One point of four done: three more take three times as long as the first did.
        let eta = try #require(s.etaSeconds)
        #expect(eta > 0 && abs(eta - 3 * s.wallSeconds) < 1e-9 * max(1, eta))
    }

    @Test func singlesTracesStayBoundedOverLongRuns() async throws {
        let live = LiveRun()
        try await live.handle(.runStarted(Self.start()))
        // 2000 bins' worth of one tag per 10 ms on channel 1: the trace merges instead of growing.
        let step: Int64 = 10_000_000_000
        for k in 0..<20_000 {
            try await live.handle(.tags(device: "tagger", TagBlock(timestamps: [Int64(k) * step], channels: [1])))
        }
        let trace = try #require(live.snapshot().singles.first?.trace)
        #expect(trace.count <= LiveRun.maxTracePoints && trace.count > LiveRun.maxTracePoints / 4)
        // One tag per 10 ms is 100 per second in every bin, however wide it became.
        #expect(trace.dropFirst().allSatisfy { abs($0.value - 100) < 1e-6 }, "\(trace.prefix(6).map(\.value)) \(trace.suffix(4).map(\.value))")
        #expect(live.snapshot().tags == 20_000)
    }

    @Test func heraldsRatesAndFidelityOfAnEntanglementRun() async throws {
        let live = LiveRun()
        try await live.handle(.runStarted(Self.start()))
        for i in 0..<5 {
            try await live.handle(.herald(HeraldRecord(dataset: "h", index: i, timePs: Int64(i), pattern: 0, attempts: 10, bases: [], outcomes: [], counts: [])))
        }
        try await live.handle(.entangled(EntanglementRecord(dataset: "h", startPs: 0, stopPs: 500_000_000_000, attempts: 50, heralds: 5, timeouts: 0, cyclePs: 1000)))
        var a = AnalysisRecord(name: "entanglement", estimator: "parity", parameters: [:], values: ["fidelity_psi+": 0.97], uncertainties: ["fidelity_psi+": 0.01])
        a.labels = []
        try await live.handle(.analysis(a))
        let e = live.snapshot().entanglement
        #expect(e.heralds == 5 && e.attempts == 50)
        #expect(e.rate.first?.value == 10, "5 heralds in 0.5 s")
        #expect(e.fidelity == 0.97 && e.fidelityError == 0.01 && e.fidelityTarget == "psi+")
    }
}
