import Foundation
import HeraldCore

/// The run-time state of the simulated network, kept by the lab: what the entanglers are
/// configured with, the settings devices have changed, clicks not yet collected by the
/// analyser's tagger, and heralded qubit pairs not yet measured.
struct NetworkState {
    var configurations: [String: EntanglerConfiguration] = [:]
    /// Emission delays set through a node's entangler (seconds), by node.
    var emissionDelays: [String: Double] = [:]
    /// Polarisation-controller compensation (degrees) and switched fibre lengths (metres), by "link/node".
    var compensation: [String: Double] = [:]
    var lengths: [String: Double] = [:]
    /// Clicks recorded by the analyser tagger since its last collection, by link.
    var clicks: [String: [(time: Int64, channel: UInt8)]] = [:]
    /// Per analyser tagger (keyed by the links it records): the end of its last collection.
    var collectedUntilPs: [String: Int64] = [:]
    /// Per link: per detector, the end of its dead time.
    var deadUntil: [String: [Int64]] = [:]
    /// Heralded pairs awaiting readout, by link: the state and which nodes have measured.
    var pending: [String: (nodes: [String], state: TwoQubitState, measured: [Bool])] = [:]
    /// The model of each link, with the settings it was built for.
    var models: [String: (key: [Double], model: LinkModel)] = [:]
    /// Attempts and clicks simulated, for the benchmark.
    var attemptsSimulated: Int64 = 0
}

extension SimulatedLab {
    // MARK: Settings made through network devices

    public func configureEntangler(node: String, _ configuration: EntanglerConfiguration) throws {
        guard network.nodes[node] != nil else { throw DeviceError(device: node, .rejected, "the simulated network has no node '\(node)'") }
        guard let link = network.links[configuration.link] else {
            let known = network.links.keys.sorted().joined(separator: ", ")
            throw DeviceError(
                device: node, .rejected, "the simulated network has no link '\(configuration.link)' (simulated links: \(known))")
        }
        guard Set(link.nodes) == Set(configuration.nodes), configuration.nodes.contains(node) else {
            throw DeviceError(
                device: node, .rejected,
                "link '\(link.name)' joins \(link.nodes.joined(separator: " and ")) in the simulation, "
                    + "but the script joins \(configuration.nodes.joined(separator: " and "))")
        }
        for pattern in configuration.patterns where pattern.isEmpty || pattern.contains(where: { !(1...4).contains($0) }) {
            throw DeviceError(
                device: node, .rejected,
                "herald pattern \(pattern) names a channel the simulated analyser does not have (its detectors are on channels 1–4)")
        }
        // A node must learn whether its photon heralded before it excites again (re-exciting
        // would scramble the qubit that may be entangled): one cycle must cover the round trip.
        for name in link.nodes {
            let roundTrip = 2 * fibre(link: link, node: name).delay
            if Double(configuration.cyclePs) * 1e-12 < roundTrip {
                throw DeviceError(
                    device: node, .rejected,
                    "a cycle of \(Double(configuration.cyclePs) * 1e-6) µs is shorter than the \(String(format: "%.1f", roundTrip * 1e6)) µs "
                        + "the herald needs to come back over the fibre of node '\(name)' on link '\(link.name)': lengthen the cycle")
            }
        }
        networkState.configurations[node] = configuration
    }

    public func setEmissionDelay(node: String, seconds: Double) { networkState.emissionDelays[node] = seconds }
    public func emissionDelay(node: String) -> Double {
        networkState.emissionDelays[node] ?? network.nodes[node]?.emissionDelay ?? 0
    }
    public func setCompensation(link: String, node: String, degrees: Double) { networkState.compensation["\(link)/\(node)"] = degrees }
    public func compensation(link: String, node: String) -> Double { networkState.compensation["\(link)/\(node)"] ?? 0 }
    public func setFibreLength(link: String, node: String, metres: Double) { networkState.lengths["\(link)/\(node)"] = metres }

    public func fibreLength(link: String, node: String) -> Double? {
        if let set = networkState.lengths["\(link)/\(node)"] { return set }
        guard let l = network.links[link], let i = l.nodes.firstIndex(of: node) else { return nil }
        return l.fibres[i].length
    }

    /// The fibre of `node` on `link` as it is now (switched length, compensation).
    func fibre(link: QuantumLinkParameters, node: String) -> FibreParameters {
        guard let i = link.nodes.firstIndex(of: node) else { return FibreParameters() }
        var f = link.fibres[i]
        if let length = networkState.lengths["\(link.name)/\(node)"] { f.length = length }
        f.compensation = networkState.compensation["\(link.name)/\(node)"] ?? 0
        return f
    }

    /// The link's physics for the nodes in `order` at lab time `t`, rebuilt only when a
    /// setting or the drifting rotation (by more than 0.05°) has changed.
    func model(_ link: QuantumLinkParameters, order: [String], config: EntanglerConfiguration, at t: Double) throws -> LinkModel {
        let fibres = order.map { fibre(link: link, node: $0) }
        let rotations = fibres.map { $0.rotation(at: t) }
        let delays = order.map { emissionDelay(node: $0) }
        let key = rotations + delays + fibres.map(\.length) + [Double(config.windowStartPs), Double(config.windowLengthPs)]
        if let cached = networkState.models[link.name], cached.key.count == key.count,
            zip(cached.key, key).enumerated().allSatisfy({ $0.offset < 2 ? abs($0.element.0 - $0.element.1) < 0.05 : $0.element.0 == $0.element.1 })
        {
            return cached.model
        }
        var ordered = link
        ordered.nodes = order
        ordered.fibres = fibres
        let nodes = order.compactMap { network.nodes[$0] }
        guard nodes.count == 2 else { throw DeviceError(device: link.name, .rejected, "link '\(link.name)' needs two simulated nodes") }
        let model: LinkModel
        do {
            model = try LinkModel(
                link: ordered, nodes: nodes, rotations: rotations, delays: delays,
                windowStart: Double(config.windowStartPs) * 1e-12, windowLength: Double(config.windowLengthPs) * 1e-12)
        } catch {
            throw DeviceError(device: link.name, .rejected, error.description)
        }
        networkState.models[link.name] = (key, model)
        return model
    }

    // MARK: The attempt loop

    /// Runs the master node's attempt loop until a herald or the timeout. Failed attempts
    /// are not simulated one by one: the gap to the next attempt in which any detector
    /// clicks is drawn from its geometric distribution, so 10⁹ attempts cost a few million
    /// draws at most. Clicks go to the analyser's tagger; a herald leaves the heralded pair
    /// for the nodes' readouts.
    public func runAttemptLoop(master node: String) async throws -> EntanglerOutcome {
        guard let config = networkState.configurations[node] else {
            throw DeviceError(device: node, .rejected, "the entangler of node '\(node)' was not configured before its attempt loop ran")
        }
        guard let link = network.links[config.link] else {
            throw DeviceError(device: node, .rejected, "the simulated network has no link '\(config.link)'")
        }
        for other in config.nodes where other != node && networkState.configurations[other] != config {
            throw DeviceError(
                device: node, .rejected,
                "node '\(other)' is not armed with the same attempt loop as '\(node)': configure every node of link '\(link.name)'")
        }
        let cycle = max(1, config.cyclePs)
        let startPs = nowPs
        let maxAttempts = max(0, config.timeoutPs / cycle)
        var model = try self.model(link, order: config.nodes, config: config, at: Double(startPs) * 1e-12)
        let drifting = link.fibres.contains { $0.drift != 0 }
        let masks = config.patterns.map(LinkModel.mask)
        let jitterPs = link.analyser.jitter * 1e12
        let deadPs = Int64((link.analyser.deadTime * 1e12).rounded())
        var dead = networkState.deadUntil[link.name] ?? Array(repeating: Int64.min, count: 4)
        // Taken out of the state while the loop appends, so the appends do not copy it.
        var buffer = networkState.clicks.removeValue(forKey: link.name) ?? []
        let nodes = config.nodes.compactMap { network.nodes[$0] }
        guard nodes.count == 2 else { throw DeviceError(device: node, .rejected, "link '\(link.name)' needs two simulated nodes") }
        // On a herald the pair waits for the photons to reach the analyser and the herald to come
        // back (twice the fibre delay) and for the readout, dephasing all the while: the same
        // factors for every herald of this loop.
        let coherence = zip(config.nodes, nodes).map { name, n -> Double in
            let wait = 2 * fibre(link: link, node: name).delay + n.readoutDelay
            return n.t2Star.isFinite ? exp(-(wait / n.t2Star) * (wait / n.t2Star)) : 1
        }
        // A local generator: the actor's stored one would pay an exclusivity check per draw.
        var g = rng
        /// Puts the loop's state back into the actor: before every suspension (another call may
        /// run while this one waits) and before every throw.
        func store() {
            rng = g
            networkState.clicks[link.name] = buffer
            networkState.deadUntil[link.name] = dead
        }
        var attempts: Int64 = 0
        var events = 0
        let logMiss = model.anyClick < 1 ? log1p(-model.anyClick) : -Double.infinity
        var currentLogMiss = logMiss
        while true {
            // Attempts until the next one in which something clicks (≥ 1).
            let gap: Int64
            if model.anyClick <= 0 {
                gap = Int64.max
            } else {
                let k = (log(g.unitOpen()) / currentLogMiss).rounded(.down) + 1
                gap = k.isFinite && k < 9e18 ? Int64(k) : Int64.max
            }
            if gap == Int64.max || attempts + gap > maxAttempts {
                networkState.attemptsSimulated += maxAttempts - attempts
                let stopPs = startPs + maxAttempts * cycle
                store()
                try await advanceNetwork(toPs: stopPs)
                return .timedOut(attempts: maxAttempts, stopPs: stopPs)
            }
            networkState.attemptsSimulated += gap
            attempts += gap
            let attemptPs = startPs + (attempts - 1) * cycle
            if drifting {
                do {
                    model = try self.model(link, order: config.nodes, config: config, at: Double(attemptPs) * 1e-12)
                } catch {
                    store()
                    throw error
                }
                currentLogMiss = model.anyClick < 1 ? log1p(-model.anyClick) : -Double.infinity
            }
            events += 1
            if events & 0xFFFF == 0 {
                // A loop that clicks on almost every attempt (dark counts far above the signal)
                // must stay cancellable, and must not fill memory with clicks no pattern matches.
                if Task.isCancelled || buffer.count > Self.maxClicksPerLoop {
                    store()
                    try Task.checkCancellation()
                    throw DeviceError(
                        device: node, .rejected,
                        "the analyser recorded \(buffer.count) clicks in one attempt loop without a herald (dark or noise "
                            + "counts far above the signal?): shorten the timeout or the detection window")
                }
            }
            guard let outcome = model.draw(&g) else { continue }
            var clicked: UInt8 = 0
            let eventStart = buffer.count
            // Which photon went where: the exchanged path (A's photon in the other mode) with its
            // share of the pair's weight, so that photons told apart by their timing (a HOM scan
            // far from the dip) are timed as the ones that were there.
            var from = outcome.photonFrom
            if outcome.exchange > 0, g.unitOpen() < outcome.exchange {
                for d in 0..<4 where from[d] >= 0 && from[d] < 2 { from[d] = 1 - from[d] }
            }
            for d in 0..<4 where (outcome.clicks >> UInt8(d)) & 1 == 1 {
                let offset: Double  // seconds from the attempt's start
                if from[d] == 2 {
                    // Both photons in one mode: the click is the earlier one.
                    offset = min(
                        Self.arrival(nodes[0], delay: model.delays[0], config: config, &g),
                        Self.arrival(nodes[1], delay: model.delays[1], config: config, &g))
                } else if from[d] >= 0 {
                    let k = Int(from[d])
                    offset = Self.arrival(nodes[k], delay: model.delays[k], config: config, &g)
                } else {
                    offset = Double(config.windowStartPs) * 1e-12 + g.unitOpen() * Double(config.windowLengthPs) * 1e-12
                }
                let jitter = jitterPs > 0 ? jitterPs * g.gaussian() : 0
                let t = attemptPs + Int64((offset * 1e12 + jitter).rounded())
                if t < dead[d] { continue }  // the detector is still recovering from its last click
                dead[d] = deadPs > 0 ? t + deadPs : Int64.min
                clicked |= 1 << UInt8(d)
                buffer.append((t, UInt8(d + 1)))
            }
            if buffer.count - eventStart > 1 { buffer[eventStart...].sort { $0.time < $1.time } }
            guard let pattern = masks.firstIndex(of: clicked) else { continue }
            let state = model.states[outcome.state].dephased(coherence[0], coherence[1])
            networkState.pending[link.name] = (config.nodes, state, [false, false])
            store()
            try await advanceNetwork(toPs: attemptPs + cycle)
            return .herald(timePs: attemptPs, pattern: pattern, attempts: attempts)
        }
    }

    /// Clicks one attempt loop may gather without a herald before it is refused (about 130 MB).
    static let maxClicksPerLoop = 8 << 20

    /// A photon's arrival time after its attempt's start, drawn inside the detection window.
    static func arrival(_ node: QuantumNodeParameters, delay: Double, config: EntanglerConfiguration, _ rng: inout SeededGenerator) -> Double {
        let start = Double(config.windowStartPs) * 1e-12, end = start + Double(config.windowLengthPs) * 1e-12
        for _ in 0..<1000 {
            let t = delay + Wavepacket.sample(node, &rng)
            if t >= start && t < end { return t }
        }
        return min(max(delay, start), end)
    }

    // MARK: Readout

    /// Measures a node's qubit: from the heralded pair if one awaits it (collapsing it for
    /// the other node), else a qubit with no partner (an even chance of either outcome).
    /// The fluorescence counts are drawn from the bright or dark distribution.
    public func measureQubit(node: String, basis: ReadoutBasis) throws -> QubitMeasurement {
        guard let params = network.nodes[node] else {
            throw DeviceError(device: node, .rejected, "the simulated network has no node '\(node)'")
        }
        var sign = rng.unitOpen() < 0.5 ? 1 : -1
        if let (link, pending) = networkState.pending.first(where: { $0.value.nodes.contains(node) }),
            let k = pending.nodes.firstIndex(of: node), !pending.measured[k]
        {
            let plus = pending.state.projected(qubit: k, basis, 1)
            let p = max(0, min(1, plus.trace))
            sign = rng.unitOpen() <= p ? 1 : -1
            var next = pending
            next.state = (sign > 0 ? plus : pending.state.projected(qubit: k, basis, -1)).normalised
            next.measured[k] = true
            networkState.pending[link] = next.measured.allSatisfy { $0 } ? nil : next
        }
        let counts = rng.poisson(sign > 0 ? params.brightCounts : params.darkCounts)
        return QubitMeasurement(outcome: counts >= params.threshold ? 1 : -1, counts: counts)
    }

    // MARK: The analyser's tagger

    /// The clicks of `links` (all links when empty) since the last collection, in time order.
    public func collectAnalyserClicks(links: [String]) -> (TagBlock, AcquisitionInterval) {
        let key = links.sorted().joined(separator: ",")
        let start = networkState.collectedUntilPs[key] ?? 0, stop = max(start, nowPs)
        var all: [(time: Int64, channel: UInt8)] = []
        for (name, clicks) in networkState.clicks where links.isEmpty || links.contains(name) {
            all.append(contentsOf: clicks)
            networkState.clicks[name] = []
        }
        all.sort { $0.time < $1.time }
        networkState.collectedUntilPs[key] = stop
        let block = TagBlock(timestamps: all.map(\.time), channels: all.map(\.channel))
        return (block, AcquisitionInterval(startPs: start, stopPs: stop, tags: block.count))
    }

    /// How many attempts the network has simulated (drawn or skipped), for benchmarks.
    public var simulatedAttempts: Int64 { networkState.attemptsSimulated }
}
