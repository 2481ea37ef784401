import HeraldLive
import Prometheus
import Synchronization

/// A run's figures in Prometheus's text format, for `/metrics`. Read from a snapshot at each
/// scrape (Prometheus pulls), so the run does no work for metrics between scrapes.
///
/// Totals (tags, heralds, points, pauses, dropped updates) are counters; rates and states
/// are gauges, labelled by channel, pair or node.
public final class RunMetrics: Sendable {
    private let registry = PrometheusCollectorRegistry()
    /// Each counter's value at the last scrape: Prometheus counters only go up by deltas.
    private let totals = CounterTotals()
    private let droppedUpdates = Mutex<Int64>(0)

    public init() {}

    /// Updates a page's feed skipped because the run changed faster than it looked.
    public func dropped(_ n: Int) { droppedUpdates.withLock { $0 += Int64(n) } }

    public func exposition(_ s: LiveSnapshot) -> String {
        let run = s.run
        let runLabels = [("run", run?.name ?? ""), ("run_id", run?.runID ?? "")]
        if let run {
            registry.makeGauge(name: "herald_run_info", labels: runLabels + [("herald_version", run.heraldVersion)], help: "The run this process records (always 1).").set(to: 1.0)
        }
        for state in [LiveSnapshot.State.starting, .running, .paused, .stopped] {
            registry.makeGauge(name: "herald_run_state", labels: [("state", state.rawValue)], help: "1 for the run's current state.")
                .set(to: s.state == state ? 1.0 : 0.0)
        }
        registry.makeGauge(name: "herald_paused", help: "1 while an interlock (or a lost link) holds acquisition.").set(to: s.state == .paused ? 1.0 : 0.0)
        count("herald_tags_total", Int64(s.tags), help: "Time tags received from the taggers.")
        count("herald_points_done_total", Int64(s.pointsDone), help: "Sweep points (and named acquisitions) finished.")
        registry.makeGauge(name: "herald_points_planned", help: "Sweep points the plan has.").set(to: Double(s.pointsTotal))
        count("herald_pauses_total", Int64(s.pauses.count + (s.pause == nil ? 0 : 1)), help: "Pauses begun (interlocks, link outages).")
        count("herald_heralds_total", Int64(s.entanglement.heralds), help: "Heralded entanglement events.")
        count("herald_attempts_total", s.entanglement.attempts, help: "Entanglement attempts.")
        count("herald_monitor_dropped_updates_total", droppedUpdates.withLock { $0 }, help: "Live updates pages skipped (the run outpaced them; no tag is ever dropped).")
        registry.makeGauge(name: "herald_tag_rate_hz", help: "Tags per second in the latest block, all channels.").set(to: s.tagRate)
        registry.makeGauge(name: "herald_acquired_seconds", help: "Lab time acquired so far.").set(to: s.acquiredSeconds)
        if let eta = s.etaSeconds { registry.makeGauge(name: "herald_eta_seconds", help: "Estimated time left.").set(to: eta) }
        for c in s.singles {
            if let last = c.trace.last {
                registry.makeGauge(
                    name: "herald_singles_rate_hz", labels: [("tagger", c.device), ("channel", "\(c.channel)")],
                    help: "Singles per second on a channel, over the latest bin."
                ).set(to: last.value)
            }
        }
        for p in s.pairs {
            if let last = p.trace.last {
                registry.makeGauge(
                    name: "herald_coincidence_rate_hz", labels: [("pair", p.name)],
                    help: "Coincidences per second of an analysed pair, over the latest point."
                ).set(to: last.value)
            }
        }
        if let last = s.entanglement.rate.last {
            registry.makeGauge(name: "herald_herald_rate_hz", help: "Heralds per second over the latest entangle point.").set(to: last.value)
        }
        if let f = s.entanglement.fidelity {
            registry.makeGauge(name: "herald_fidelity", labels: [("target", s.entanglement.fidelityTarget ?? "")], help: "Latest fidelity figure.").set(to: f)
        }
        for n in s.nodes {
            registry.makeGauge(name: "herald_node_up", labels: [("node", n.name), ("address", n.address)], help: "1 while the node answers.")
                .set(to: n.up ? 1.0 : 0.0)
        }
        for i in run?.interlocks ?? [] {
            registry.makeGauge(name: "herald_interlock_ok", labels: [("interlock", i.name)], help: "1 while the interlock holds.").set(to: i.ok ? 1.0 : 0.0)
        }
        return registry.emitToString()
    }

    private func count(_ name: String, _ total: Int64, help: String) {
        let counter = registry.makeCounter(name: name, help: help)
        totals.advance(counter, key: name, to: total)
    }
}

/// Prometheus counters fed from running totals: Prometheus counters only go up by deltas, so
/// each scrape adds what a total gained since the last one.
final class CounterTotals: Sendable {
    private let last = Mutex<[String: Int64]>([:])

    func advance(_ counter: Counter, key: String, to total: Int64) {
        let delta = last.withLock { last -> Int64 in
            let d = total - (last[key] ?? 0)
            if d > 0 { last[key] = total }
            return d
        }
        if delta > 0 { counter.increment(by: delta) }
    }
}
