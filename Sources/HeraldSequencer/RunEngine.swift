import Foundation
import HeraldCore
import Logging
import Synchronization

/// Executes a plan against open devices and emits typed run events.
///
/// The engine owns *how* a plan runs: ordering, device-call timeouts and retries,
/// interlocks (pause, resume, and which acquisitions count), the mapping of points to
/// intervals of the tag stream, and — on any failure or cancellation — the safe state of
/// every device before the run-stop event that lets the store close its file. Only the
/// engine touches devices. It counts nothing: at an analysis step it asks, and the run
/// reducer (a consumer of its events) answers.
public final class RunEngine: Sendable {
    public let plan: Plan
    let devices: [String: any Device]
    let configs: [String: DeviceConfig]
    let order: [String]
    let clock: any Clock<Duration>
    let sinks: [any RunEventSink]
    let logger: Logger
    /// How often interlocks are checked during an acquisition (the acquisition is sliced).
    let interlockInterval: Duration
    /// How many tags may be on their way from a tagger to the sinks before the tagger waits.
    let sinkBacklogTags: Int
    /// Says why the run was cancelled from outside (which signal), if it was.
    let stopRequest: StopRequest?
    /// The simulated-device call in progress, for the run's one backstop watchdog.
    let simulatedCall = SimulatedCallWatch()
    /// Devices whose `connect()` succeeded: only these get a safe state.
    private let openedDevices = Mutex<Set<String>>([])
    var opened: Set<String> { openedDevices.withLock { $0 } }

    /// The real-time bound on calls to devices that answer without waiting (simulations).
    public static let simulatedDeviceBackstop = Duration.seconds(120)

    /// 4 M tags: 0.4 s at 10 M tags/s, about 40 MB; enough to ride out a slow flush. The
    /// reducer counts on the consumers' side, so a producer faster than counting (a replay
    /// from the page cache) keeps this many tags in flight: the bound is the run's memory.
    public static let defaultSinkBacklogTags = 4 << 20

    /// 256 k tags (2.3 MB): for runs that store no raw tags, where no consumer waits for a disk.
    public static let countedOnlyBacklogTags = 1 << 18

    public init(
        plan: Plan, devices: [String: any Device], clock: any Clock<Duration>, sinks: [any RunEventSink],
        logger: Logger = Logger(label: "herald.sequencer"), interlockInterval: Duration = .milliseconds(100),
        sinkBacklogTags: Int = RunEngine.defaultSinkBacklogTags, stopRequest: StopRequest? = nil
    ) {
        self.stopRequest = stopRequest
        self.plan = plan
        self.devices = devices
        self.configs = Dictionary(plan.devices.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        self.order = plan.devices.map(\.name)
        self.clock = clock
        self.sinks = sinks
        self.logger = logger
        self.interlockInterval = interlockInterval
        self.sinkBacklogTags = max(1, sinkBacklogTags)
    }

    /// Runs the plan to completion, failure or cancellation. Never throws: how the
    /// run ended is in the returned stop record (and in the last event).
    public func run(start: RunStart) async -> RunStop {
        let box = RunStateBox(RunState())
        var status = ExitStatus.success
        var reason: String?
        var failure: RunFailure?
        do {
            try await emit(.runStarted(start))
            let taggers = order.filter { devices[$0] is any TimeTagger }
            for descriptor in StreamDescriptor.engineStreams(taggers: taggers, entangles: plan.steps.contains(where: \.entangles)) { try await emit(.streamDeclared(descriptor)) }
            for name in order {
                try await call(name, "connect") { try await $0.connect() }
                openedDevices.withLock { _ = $0.insert(name) }
            }
            try await watchingPresence {
                for (index, step) in self.plan.steps.enumerated() {
                    try Task.checkCancellation()
                    try await self.emit(.stepStarted(index: index, summary: step.summary))
                    try await self.execute(step, state: &box.state)
                }
            }
        } catch {
            if Task.isCancelled || error is CancellationError {
                status = .aborted
                reason = stopRequest?.reason ?? "cancelled (interrupt or termination signal)"
                failure = .cancelled
            } else {
                status = .failed
                reason = String(describing: error)
                failure = RunFailure(error)
            }
        }
        let state = box.state
        if let pause = state.openPause {
            try? await emit(.pause(pause))
        }
        if status != .success {
            logger.error("run \(status.rawValue): \(reason ?? "")")
            // Detached: a cancelled run must still reach the safe state, so these
            // calls must not inherit the cancellation that ended the run.
            await Task.detached { await self.safeStop() }.value
        }
        for name in order.reversed() { await devices[name]?.disconnect() }
        let stop = RunStop(status: status, reason: reason, failure: failure, stoppedAt: Date(), tagCount: state.tagCount)
        do {
            try await emit(.runStopped(stop))
        } catch {
            logger.error("a consumer failed while closing the run: \(error)")
        }
        return stop
    }

    /// Runs `steps` while watching the devices that report their own loss (USB instruments
    /// seen leaving by hotplug): the first loss cancels the steps and fails the run, so an
    /// unplugged laser stops the run within a second even while the tagger is acquiring.
    func watchingPresence(_ steps: @escaping @Sendable () async throws -> Void) async throws {
        let watched = order.compactMap { devices[$0] as? any PresenceReporting }
        let simulated = order.contains { devices[$0]?.answersWithoutWaiting == true }
        if watched.isEmpty && !simulated { return try await steps() }
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await steps() }
            if simulated {
                // One watchdog for every simulated call, instead of a deadline task per call: a
                // cancelled Task.sleep keeps its timer (and memory) until its deadline, and an
                // entangle step makes thousands of simulated calls a second.
                let watch = simulatedCall
                watch.watching = true
                group.addTask {
                    defer { watch.watching = false }
                    while true {
                        try await Task.sleep(for: .seconds(1))
                        if let overdue = watch.overdue() {
                            throw DeviceError(
                                device: overdue.device, .timeout,
                                "\(overdue.what) did not complete within \(overdue.limit) (the real-time backstop for simulated devices)")
                        }
                    }
                }
            }
            for device in watched {
                group.addTask {
                    let lost = await device.vanished()
                    try Task.checkCancellation()
                    throw lost
                }
            }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    /// Puts every device in its safe state, even if some fail: one failing device
    /// must not leave another's laser on. Script `safe:` assignments run first.
    func safeStop() async {
        for name in order {
            guard let device = devices[name] else { continue }
            // A device the run never opened was sent nothing: there is no state to undo, and
            // no connection to send a safe state over.
            guard opened.contains(name) else {
                logger.notice("\(name): never opened, so not put in a safe state")
                try? await emit(.log("safe state: \(name) was never opened (nothing sent to it)"))
                continue
            }
            var done: [String] = []
            for a in configs[name]?.safeState ?? [] {
                do {
                    try await call(name, "safe-state set \(a.property)", retries: 2) { try await $0.set(a.property, to: a.value) }
                    done.append("\(a.property)=\(a.value)")
                } catch {
                    logger.critical("\(name): safe-state \(a.property)=\(a.value) failed: \(error)")
                    try? await emit(.log("safe state FAILED: \(name).\(a.property)=\(a.value): \(error)"))
                }
            }
            do {
                try await call(name, "enter safe state", retries: 2) { try await $0.enterSafeState() }
                done.append(device.descriptor.kind == .laser ? "emission off" : "driver safe state")
                logger.notice("\(name): safe state (\(done.joined(separator: ", ")))")
                try? await emit(.log("safe state: \(name) (\(done.joined(separator: ", ")))"))
            } catch {
                logger.critical("\(name): could not enter its safe state: \(error)")
                try? await emit(.log("safe state FAILED: \(name): \(error)"))
            }
        }
    }

    func emit(_ event: RunEvent) async throws {
        for sink in sinks { try await sink.handle(event) }
    }

    // MARK: Device calls: timeouts, retries, limits

    /// Calls a device with the per-device timeout; retries timed-out or garbled calls.
    func call<T: Sendable>(
        _ name: String, _ what: String, retries: Int? = nil, timeout: Duration? = nil, heartbeat: Heartbeat? = nil,
        _ operation: @escaping @Sendable (any Device) async throws -> T
    ) async throws -> T {
        guard let device = devices[name] else { throw DeviceError(device: name, .notFound, "not part of this run") }
        let config = configs[name]
        let limit = timeout ?? config?.callTimeout ?? DeviceConfig.defaultCallTimeout
        let idle = config?.callTimeout ?? DeviceConfig.defaultCallTimeout
        let attempts = 1 + max(0, retries ?? config?.retries ?? DeviceConfig.defaultRetries)
        var lastError: Error = DeviceError(device: name, .timeout, what)
        // A simulation cannot hang (it throws SimulatedHang instead): its real-time bound is
        // only a backstop, so a busy machine never fails a healthy simulated run.
        let simulated = device.answersWithoutWaiting
        if simulated && heartbeat == nil && simulatedCall.watching {
            // Bounded by the run's watchdog (see watchingPresence), with the limit the deadline
            // task would have had; timed-out simulated calls throw SimulatedHang at once.
            for attempt in 1...attempts {
                let token = simulatedCall.begin(device: name, what: what, limit: max(limit, Self.simulatedDeviceBackstop))
                defer { simulatedCall.end(token) }
                do {
                    do {
                        return try await operation(device)
                    } catch is SimulatedHang {
                        throw DeviceError(
                            device: name, .timeout,
                            "\(what) did not complete within \(limit) (simulated instrument: the timeout is reported as soon as it stops answering)")
                    }
                } catch let e as DeviceError where e.kind == .timeout || e.kind == .invalidResponse {
                    lastError = e
                    if attempt < attempts {
                        logger.warning("\(name): \(what) failed (\(e.kind.rawValue)), retry \(attempt) of \(attempts - 1)")
                    }
                }
            }
            throw lastError
        }
        let backstop = Self.simulatedDeviceBackstop
        for attempt in 1...attempts {
            do {
                return try await withDeadline(
                    simulated ? max(limit, backstop) : limit, device: name, what: what, heartbeat: heartbeat,
                    idle: simulated ? max(idle, backstop) : idle
                ) {
                    do {
                        return try await operation(device)
                    } catch is SimulatedHang {
                        throw DeviceError(
                            device: name, .timeout,
                            "\(what) did not complete within \(limit)" + (heartbeat == nil ? "" : " and delivered nothing for \(idle)")
                                + " (simulated instrument: the timeout is reported as soon as it stops answering)")
                    }
                }
            } catch let e as DeviceError where e.kind == .timeout || e.kind == .invalidResponse {
                lastError = e
                if attempt < attempts {
                    logger.warning("\(name): \(what) failed (\(e.kind.rawValue)), retry \(attempt) of \(attempts - 1)")
                }
            }
        }
        throw lastError
    }

    func set(_ a: Assignment) async throws {
        // Limits are re-checked here, so a value that slipped past validation never reaches hardware.
        if let spec = configs[a.device]?.properties.first(where: { $0.name == a.property }),
            let problem = spec.problem(with: a.value)
        {
            throw StepError(.refusedByLimits, location: a.location, message: "refused before calling device '\(a.device)': \(a.property) \(problem)")
        }
        let value = a.value, property = a.property
        try await call(a.device, "set \(property)") { try await $0.set(property, to: value) }
    }

    func apply(_ assignments: [Assignment]) async throws {
        for a in assignments {
            try Task.checkCancellation()
            try await set(a)
        }
    }

    func read(_ c: Condition) async throws -> Value {
        let property = c.property
        let spec = configs[c.device]?.properties.first { $0.name == property }
        let device = c.device
        return try await call(c.device, "get \(property)") {
            let value = try await $0.get(property)
            // A reply of the wrong type is garbage from the instrument (or its driver): retried like a timeout.
            if let spec, !spec.accepts(typeOf: value) {
                throw DeviceError(device: device, .invalidResponse, "get \(property) answered '\(value)', expected \(spec.type)")
            }
            return value
        }
    }

    // MARK: Steps

    func execute(_ step: PlanStep, state: inout RunState) async throws {
        switch step {
        case .set(let assignments):
            try await apply(assignments)
        case .record(let targets, _):
            // Assignments here only name what to read; their values are placeholders.
            for t in targets {
                let value = try await call(t.device, "read \(t.property) to record it") { try await $0.get(t.property) }
                if let spec = configs[t.device]?.properties.first(where: { $0.name == t.property }), !spec.accepts(typeOf: value) {
                    throw DeviceError(device: t.device, .invalidResponse, "\(t.property) read \(value), not a \(spec.type)")
                }
                try await emit(
                    .recorded(RecordedReading(device: t.device, property: t.property, value: value, point: state.outerPoint, timePs: state.lastStopPs)))
            }
        case .wait(let duration, _):
            try await clock.sleep(for: duration)
        case .waitUntil(let condition, let timeout, let poll, let location):
            var waited = Duration.zero
            while true {
                let value = try await read(condition)
                if condition.holds(for: value) { break }
                if waited >= timeout {
                    throw StepError(
                        .waitTimedOut,
                        location: location,
                        message: "wait until \(condition) timed out after \(timeout) (last value \(value))")
                }
                try await clock.sleep(for: poll)
                waited += poll
            }
        case .acquire(let devices, let duration, let name, _):
            if let name {
                try await emit(.sweepPointStarted(sweep: name, index: 0, of: 1, label: name))
                let outer = state.outerPoint
                state.points.append(PointContext(sweep: name, index: 0, label: name))
                try await acquire(devices: devices, duration: duration, state: &state)
                try await finishPoint(assignments: [], outer: outer, state: &state)
            } else {
                try await acquire(devices: devices, duration: duration, state: &state)
            }
        case .sweep(let sweep):
            for (index, point) in sweep.points.enumerated() {
                try Task.checkCancellation()
                try await emit(.sweepPointStarted(sweep: sweep.name, index: index, of: sweep.points.count, label: point.label))
                try await apply(point.assignments)
                let outer = state.outerPoint
                state.points.append(PointContext(sweep: sweep.name, index: index, label: point.label))
                for inner in sweep.body { try await execute(inner, state: &state) }
                try await finishPoint(assignments: point.assignments, outer: outer, state: &state)
            }
        case .analysis(let analysis, let location):
            try await emit(.analysisRequested(analysis, location: location))
        case .entangle(let spec, let location):
            try await emit(.sweepPointStarted(sweep: spec.name, index: 0, of: 1, label: spec.name))
            let outer = state.outerPoint
            state.points.append(PointContext(sweep: spec.name, index: 0, label: spec.name))
            try await entangle(spec, outer: outer, location: location, state: &state)
            try await finishPoint(assignments: [], outer: outer, state: &state)
        }
    }

    /// Closes the innermost open point: the interval of the tag stream it covered.
    func finishPoint(assignments: [Assignment], outer: PointRef?, state: inout RunState) async throws {
        guard let finished = state.points.popLast() else { return }
        let settings = Dictionary(
            assignments.map { ("\($0.device).\($0.property)", $0.value.description) }, uniquingKeysWith: { _, b in b })
        try await emit(
            .sweepPointFinished(
                SweepPointRecord(
                    sweep: finished.sweep, index: finished.index, label: finished.label, settings: settings,
                    startPs: finished.startPs ?? 0, stopPs: finished.stopPs ?? 0, outer: outer)))
    }

    /// Acquires `duration` of live time. With interlocks, the acquisition runs in slices;
    /// a slice during which an interlock was violated is discarded from the counts, the
    /// acquisition pauses until the interlock clears, and the pause is recorded.
    ///
    /// Several taggers acquire each slice together, started as one group (each stamps its own
    /// clock); the first named is the time base of the points.
    func acquire(devices names: [String], duration: Duration, state: inout RunState) async throws {
        var taggers: [(name: String, tagger: any TimeTagger)] = []
        for name in names {
            guard let tagger = devices[name] as? any TimeTagger else {
                throw DeviceError(device: name, .unsupported, "is not a time tagger")
            }
            if names.count > 1, !(tagger is any GroupAcquiringTagger) {
                throw DeviceError(
                    device: name, .unsupported,
                    "cannot start an acquisition together with \(names.filter { $0 != name }.joined(separator: ", ")) (its driver has no group start)")
            }
            taggers.append((name, tagger))
        }
        guard !names.isEmpty else { return }
        let sinks = self.sinks
        let linked = reconnectingLinks
        // Sliced with interlocks or links that may drop: a slice is what a violation or an
        // outage discards.
        let slice = plan.interlocks.isEmpty && linked.isEmpty ? duration : min(duration, interlockInterval)
        var remaining = duration
        while remaining > .zero {
            try Task.checkCancellation()
            if let violated = try await violatedInterlock() {
                try await pause(violated, fromPs: state.lastStopPs, state: &state)
            }
            for l in linked { try await l.linkRestored() }
            let outagesBefore = linked.map(\.linkOutages)
            let length = min(slice, remaining)
            let counter = TagCounter()
            // Sinks (the HDF5 recorder) get the blocks from a separate task, so the device's
            // deadline measures the device, not disk writes or a busy machine; the acquisition
            // does not count as finished until every block has been handed on.
            // The budget bounds the blocks in between (backpressure on a disk slower than the tagger).
            let (blocks, delivery) = AsyncStream<(device: String, block: TagBlock)>.makeStream()
            let budget = TagBudget(limit: sinkBacklogTags)
            // A sink that fails (disk full) stops the acquisition at its next block: tags that
            // could not be recorded must not keep coming.
            let sinkFailure = FailureLatch()
            let forwarder = Task {
                do {
                    for await (device, block) in blocks {
                        for sink in sinks { try await sink.handle(.tags(device: device, block)) }
                        budget.release(block.count)
                    }
                } catch {
                    sinkFailure.set(error)
                    budget.close()
                    throw error
                }
            }
            let group = taggers.count > 1 ? AcquisitionGroup(members: names) : nil
            var intervals: [AcquisitionInterval] = []
            do {
                intervals = try await withThrowingTaskGroup(of: (Int, AcquisitionInterval).self) { tasks in
                    for (index, (name, tagger)) in taggers.enumerated() {
                        let callTimeout = configs[name]?.callTimeout ?? DeviceConfig.defaultCallTimeout
                        tasks.addTask {
                            let heartbeat = Heartbeat()
                            let order = TimeOrderCheck(device: name)
                            let deliver: @Sendable (TagBlock) async throws -> Void = { block in
                                heartbeat.beat()
                                if let failed = sinkFailure.error { throw failed }
                                try order.check(block)
                                counter.add(block.count)
                                await budget.acquire(block.count)
                                delivery.yield((name, block))
                            }
                            // No retries: a repeated acquisition would duplicate data.
                            let interval = try await self.call(name, "acquire", retries: 0, timeout: length + callTimeout, heartbeat: heartbeat) { _ in
                                if let group, let grouped = tagger as? any GroupAcquiringTagger {
                                    return try await grouped.acquire(for: length, group: group, deliver: deliver)
                                }
                                return try await tagger.acquire(for: length, deliver: deliver)
                            }
                            return (index, interval)
                        }
                    }
                    var got = [AcquisitionInterval?](repeating: nil, count: taggers.count)
                    for try await (index, interval) in tasks { got[index] = interval }
                    return got.compactMap { $0 }
                }
            } catch {
                delivery.finish()
                _ = try? await forwarder.value  // record what did arrive before failing
                state.tagCount += counter.value
                // A slice an outage broke: what arrived stays in the raw data; once the link is
                // back the slice is acquired again.
                if sinkFailure.error == nil, try await outageInterrupted(error, linked, before: outagesBefore, atPs: state.lastStopPs) {
                    continue
                }
                // The recorder's reason (disk full) rather than the tagger's reaction to it.
                throw sinkFailure.error ?? error
            }
            delivery.finish()
            try await forwarder.value
            state.tagCount += counter.value
            guard let interval = intervals.first else { return }
            if var open = state.openPause {
                open.stopPs = interval.startPs
                open.resumed = true
                state.openPause = nil
                try await emit(.pause(open))
            }
            state.lastStopPs = interval.stopPs
            func emitAcquired(counted: Bool) async throws {
                for (name, i) in zip(names, intervals) {
                    try await emit(.acquired(AcquisitionRecord(device: name, startPs: i.startPs, stopPs: i.stopPs, counted: counted)))
                }
            }
            // A slice that an outage overlapped (the link dropped and came back during it) does not count.
            let outaged = outageLinks(linked, before: outagesBefore)
            if !outaged.isEmpty {
                try await emitAcquired(counted: false)
                try await recordOutage(outaged, fromPs: interval.startPs, toPs: interval.stopPs, detail: "during the acquisition")
                continue
            }
            // With interlocks, the check after the slice decides whether its tags count.
            let violated = try await violatedInterlock()
            try await emitAcquired(counted: violated == nil)
            if let violated {
                // The slice overlapped the violation: keep its tags in the raw data, not in the counts.
                try await pause(violated, fromPs: interval.startPs, state: &state)
                continue
            }
            for i in state.points.indices { state.points[i].cover(interval) }
            remaining -= length
        }
    }

    /// Runs a link's attempt loop until the step's stop condition: configures every node's
    /// entangler, runs the master's loop once per herald, measures each node in the basis
    /// pair whose turn it is, and hands the analyser's clicks to the consumers as they come.
    /// A herald the entangler stamps outside its own loop, or with a pattern it was not
    /// given, is garbage from the device: the run fails naming it.
    func entangle(_ spec: EntangleSpec, outer: PointRef?, location: SourceLocation?, state: inout RunState) async throws {
        let link = spec.link
        guard let master = link.nodes.first else { return }
        for node in link.nodes {
            guard devices[node.entangler] is any Entangler else {
                throw DeviceError(device: node.entangler, .unsupported, "is not an entangler")
            }
            guard devices[node.readout] is any QubitReadout else {
                throw DeviceError(device: node.readout, .unsupported, "is not a qubit readout")
            }
        }
        guard devices[link.tagger] is any StreamingTagger else {
            throw DeviceError(device: link.tagger, .unsupported, "cannot stream while an entangler paces the run (not a streaming tagger)")
        }
        let configuration = spec.entanglerConfiguration
        for node in link.nodes {
            try await call(node.entangler, "configure the attempt loop") { try await ($0 as? any Entangler)?.configure(configuration) }
        }
        // Whatever the tagger saw before the loop started is recorded, not counted here.
        let startPs = try await collect(link.tagger, state: &state).stopPs
        let settings = spec.bases.settings
        var heralds = 0, timeouts = 0, consecutiveTimeouts = 0
        var attempts: Int64 = 0, sinceHerald: Int64 = 0
        var nowPs = startPs
        func done() -> Bool {
            if let n = spec.stop.heralds, heralds >= n { return true }
            if let t = spec.stop.timePs, nowPs >= startPs.saturatingAdd(t) { return true }
            return false
        }
        let linked = reconnectingLinks
        // The clicks collected next after an outage span it: they are kept, not counted.
        var disturbed = false
        // A loop whose answer an outage swallowed still ran on the entangler, up to its timeout:
        // the next loop starts that much later than the last answer says.
        var unseenPs: Int64 = 0
        attempting: while !done() {
            try Task.checkCancellation()
            let outagesBefore = linked.map(\.linkOutages)
            let outcome: EntanglerOutcome
            do {
                outcome = try await call(master.entangler, "attempt loop", retries: 0, timeout: callTimeout(master.entangler, plusPs: spec.timeoutPs)) {
                    guard let e = $0 as? any Entangler else { throw DeviceError(device: master.entangler, .unsupported, "is not an entangler") }
                    return try await e.runAttemptLoop()
                }
            } catch {
                // The loop in progress is dropped; the nodes are back, configured as before.
                if try await outageInterrupted(error, linked, before: outagesBefore, atPs: nowPs) {
                    disturbed = true
                    unseenPs = unseenPs.saturatingAdd(spec.timeoutPs.saturatingAdd(spec.cyclePs))
                    continue attempting
                }
                throw error
            }
            let loopStartPs = nowPs
            // The latest this loop can have begun, allowing for loops lost in outages.
            let latestStartPs = loopStartPs.saturatingAdd(unseenPs)
            unseenPs = 0
            switch outcome {
            case .timedOut(let n, let stopPs):
                // Time must advance: a loop that ends where it began would make the step spin.
                guard n >= 0, n <= spec.timeoutPs / max(1, spec.cyclePs) + 1, stopPs > loopStartPs,
                    stopPs <= latestStartPs.saturatingAdd(2 * spec.timeoutPs + spec.cyclePs)
                else {
                    throw DeviceError(
                        device: master.entangler, .invalidResponse,
                        "attempt loop timed out after \(n) attempts at \(stopPs) ps; a loop of \(Double(spec.timeoutPs) * 1e-12) s "
                            + "from \(loopStartPs) ps makes at most \(spec.timeoutPs / max(1, spec.cyclePs)) attempts")
                }
                attempts += n
                sinceHerald += n
                nowPs = stopPs
                timeouts += 1
                consecutiveTimeouts += 1
                if consecutiveTimeouts >= spec.maxConsecutiveTimeouts && spec.stop.timePs == nil {
                    throw StepError(
                        .entanglementStalled, location: location,
                        message: "link '\(link.name)' heralded nothing in \(consecutiveTimeouts) attempt loops of "
                            + "\(Double(spec.timeoutPs) * 1e-12) s (\(heralds) heralds so far): check the nodes' emission and the fibres")
                }
            case .herald(let timePs, let pattern, let n):
                // The loop started at the previous return; a herald must fall inside its timeout.
                guard n >= 1, n <= max(1, spec.timeoutPs / max(1, spec.cyclePs)), timePs >= loopStartPs,
                    timePs <= latestStartPs.saturatingAdd(spec.timeoutPs)
                else {
                    throw DeviceError(
                        device: master.entangler, .invalidResponse,
                        "reported a herald at \(timePs) ps after \(n) attempts, outside its loop's timeout of "
                            + "\(Double(spec.timeoutPs) * 1e-12) s from \(latestStartPs) ps")
                }
                guard spec.patterns.indices.contains(pattern) else {
                    throw DeviceError(device: master.entangler, .invalidResponse, "reported herald pattern \(pattern); it was given \(spec.patterns.count)")
                }
                consecutiveTimeouts = 0
                attempts += n
                sinceHerald += n
                nowPs = timePs.saturatingAdd(spec.cyclePs)
                let (a, b) = settings[heralds % settings.count]
                var outcomes: [Int] = [], counts: [Int] = []
                for (node, basis) in zip(link.nodes, [a, b]) {
                    let m: QubitMeasurement
                    do {
                        m = try await call(node.readout, "measure in \(basis.rawValue)", retries: 0) {
                            guard let r = $0 as? any QubitReadout else { throw DeviceError(device: node.readout, .unsupported, "is not a qubit readout") }
                            return try await r.measure(in: basis)
                        }
                    } catch {
                        // A herald whose qubits could not both be read is dropped, not half recorded.
                        if try await outageInterrupted(error, linked, before: outagesBefore, atPs: timePs) {
                            disturbed = true
                            continue attempting
                        }
                        throw error
                    }
                    guard m.outcome == 1 || m.outcome == -1, m.counts >= 0 else {
                        throw DeviceError(device: node.readout, .invalidResponse, "measured \(m.outcome) (\(m.counts) counts); an outcome is +1 or −1")
                    }
                    outcomes.append(m.outcome)
                    counts.append(m.counts)
                }
                // An outage during the loop or the readout: the qubits may have been put safe
                // (and restored) in between, so the herald is not recorded.
                let outaged = outageLinks(linked, before: outagesBefore)
                if !outaged.isEmpty {
                    try await recordOutage(outaged, fromPs: loopStartPs, toPs: nowPs, detail: "during an attempt loop; its herald is dropped")
                    disturbed = true
                    continue attempting
                }
                try await emit(
                    .herald(
                        HeraldRecord(
                            dataset: spec.name, index: heralds, timePs: timePs, pattern: pattern, attempts: sinceHerald, bases: [a, b],
                            outcomes: outcomes, counts: counts, outer: outer)))
                heralds += 1
                sinceHerald = 0
            }
            // The analyser's clicks reach the consumers in batches, not once per herald.
            if heralds % 256 == 0 || done() {
                let before = linked.map(\.linkOutages)
                do {
                    _ = try await collect(link.tagger, counted: !disturbed, state: &state)
                    disturbed = false
                } catch {
                    // The clicks of a collection whose stream broke are lost with it (they are
                    // raw clicks: the heralds are unaffected); the next collection goes on.
                    if try await outageInterrupted(error, linked, before: before, atPs: nowPs) {
                        disturbed = true
                        continue attempting
                    }
                    throw error
                }
            }
        }
        for l in linked { try await l.linkRestored() }
        _ = try await collect(link.tagger, counted: !disturbed, state: &state)
        let endPs = nowPs
        let interval = AcquisitionInterval(startPs: startPs, stopPs: endPs, tags: 0)
        for i in state.points.indices { state.points[i].cover(interval) }
        state.lastStopPs = endPs
        try await emit(
            .entangled(
                EntanglementRecord(
                    dataset: spec.name, startPs: startPs, stopPs: endPs, attempts: attempts, heralds: heralds, timeouts: timeouts,
                    cyclePs: spec.cyclePs, outer: outer)))
    }

    func callTimeout(_ device: String, plusPs: Int64) -> Duration {
        (configs[device]?.callTimeout ?? DeviceConfig.defaultCallTimeout) + .nanoseconds(plusPs / 1000)
    }

    /// Hands what a streaming tagger recorded since its last collection to the consumers, as
    /// one acquisition; returns the interval it covered.
    func collect(_ name: String, counted: Bool = true, state: inout RunState) async throws -> (startPs: Int64, stopPs: Int64) {
        let (block, interval) = try await call(name, "collect tags", retries: 0) {
            guard let t = $0 as? any StreamingTagger else { throw DeviceError(device: name, .unsupported, "is not a streaming tagger") }
            return try await t.collect()
        }
        try TimeOrderCheck(device: name).check(block)
        if block.count > 0 { try await emit(.tags(device: name, block)) }
        state.tagCount += block.count
        try await emit(.acquired(AcquisitionRecord(device: name, startPs: interval.startPs, stopPs: interval.stopPs, counted: counted)))
        return (interval.startPs, interval.stopPs)
    }

    // MARK: Links that may drop and come back

    /// The devices whose node may be reconnected within the run (`on_loss: {reconnect_within: …}`).
    var reconnectingLinks: [any LinkReporting] {
        order.compactMap { devices[$0] as? any LinkReporting }.filter(\.reconnects)
    }

    /// The links (by name) whose outage count moved since `before`.
    func outageLinks(_ linked: [any LinkReporting], before: [Int]) -> [String] {
        var names: [String] = []
        for (l, b) in zip(linked, before) where l.linkOutages != b && !names.contains(l.linkName) { names.append(l.linkName) }
        return names
    }

    /// Whether `error` came from an outage that is now over: waits for every link (throwing
    /// when one is lost for good), then records the outage. False for every other error.
    func outageInterrupted(_ error: any Error, _ linked: [any LinkReporting], before: [Int], atPs: Int64) async throws -> Bool {
        guard !linked.isEmpty, let e = error as? DeviceError, e.kind == .disconnected || e.kind == .timeout else { return false }
        let failed = ContinuousClock.now
        for l in linked { try await l.linkSettled(since: failed) }
        let outaged = outageLinks(linked, before: before)
        guard !outaged.isEmpty else { return false }
        try await recordOutage(outaged, fromPs: atPs, toPs: atPs, detail: "(\(e.device): \(e.detail))")
        return true
    }

    /// An outage as a pause of the run, like an interlock's: what it overlapped did not count.
    func recordOutage(_ links: [String], fromPs: Int64, toPs: Int64, detail: String) async throws {
        let what = links.joined(separator: ", ")
        logger.warning("\(what): link lost and reconnected \(detail)")
        try await emit(.log("paused: \(what) lost its link and reconnected \(detail)"))
        try await emit(
            .pause(PauseRecord(interlock: what, condition: "link lost and reconnected", startPs: fromPs, stopPs: toPs, resumed: true)))
    }

    func violatedInterlock() async throws -> Interlock? {
        for interlock in plan.interlocks {
            let value = try await read(interlock.condition)
            if !interlock.condition.holds(for: value) { return interlock }
        }
        return nil
    }

    /// Waits (polling on the run clock) until every interlock holds, or fails the run.
    func pause(_ interlock: Interlock, fromPs: Int64, state: inout RunState) async throws {
        logger.warning("interlock '\(interlock.name)' (\(interlock.condition)) violated: acquisition paused")
        try await emit(.log("paused: interlock '\(interlock.name)' (\(interlock.condition)) violated"))
        state.openPause = PauseRecord(
            interlock: interlock.name, condition: interlock.condition.description, startPs: fromPs, stopPs: fromPs,
            resumed: false)
        if let open = state.openPause { try await emit(.pauseStarted(open)) }
        var waited = Duration.zero
        let poll = Duration.milliseconds(50)
        while let current = try await violatedInterlock() {
            if waited >= current.timeout {
                throw StepError(
                    .interlockTimedOut,
                    location: current.location,
                    message: "interlock '\(current.name)' (\(current.condition)) did not clear within \(current.timeout)")
            }
            try await clock.sleep(for: poll)
            waited += poll
        }
        logger.notice("interlock '\(interlock.name)' cleared after \(waited): resuming")
    }
}

extension PlanStep {
    /// Whether the step is, or contains, an `entangle` step.
    var entangles: Bool {
        switch self {
        case .entangle: return true
        case .sweep(let s): return s.body.contains(where: \.entangles)
        default: return false
        }
    }
}

/// Mutable bookkeeping of one run, owned by the engine's task.
/// The run's state, shared by reference with the task that runs the steps (only that task
/// mutates it; the engine reads it after that task has ended).
final class RunStateBox: @unchecked Sendable {
    var state: RunState
    init(_ state: RunState) { self.state = state }
}

struct RunState {
    var tagCount = 0
    /// Points that have started and not finished, outermost first: an acquisition covers them all.
    var points: [PointContext] = []
    var openPause: PauseRecord?
    var lastStopPs: Int64 = 0

    /// The innermost open point, which a point starting now runs inside.
    var outerPoint: PointRef? { points.last.map { PointRef(sweep: $0.sweep, index: $0.index, label: $0.label) } }
}

/// An open point: the interval of the tag stream its acquisitions covered.
struct PointContext {
    let sweep: String
    let index: Int
    let label: String
    var startPs: Int64?
    var stopPs: Int64?

    init(sweep: String, index: Int, label: String) {
        self.sweep = sweep
        self.index = index
        self.label = label
    }

    mutating func cover(_ interval: AcquisitionInterval) {
        startPs = min(startPs ?? interval.startPs, interval.startPs)
        stopPs = max(stopPs ?? interval.stopPs, interval.stopPs)
    }
}
