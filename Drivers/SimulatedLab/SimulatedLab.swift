import Clocks
import ComplexModule
import Foundation
import HeraldCore

/// Physical parameters of the simulated lab, set from a script's `simulation:` block.
public struct LabParameters: Sendable, Equatable {
    /// Pair generation rate at `nominalPower` (SPDC rate is linear in pump power).
    public var pairRate: Double = 100e3
    public var nominalPower: Double = 10e-3
    /// Werner-state visibility: ρ = V|Φ+⟩⟨Φ+| + (1−V)·I/4.
    public var visibility: Double = 0.9
    /// Probability that a photon leaving the source is detected (coupling × detector efficiency).
    public var efficiency: Double = 0.2
    /// Dark-count rate of every detector, per second.
    public var darkRate: Double = 200
    /// Gaussian timing jitter (standard deviation) of every detector, in seconds.
    public var jitter: Double = 50e-12
    /// Time from enabling the pump until it reports `locked` (no pairs before that).
    public var lockTime: Double = 0
    /// Injected fault: the pump loses lock at this lab time (seconds since the run began)…
    public var unlockAt: Double?
    /// …for this long; no pairs are produced while unlocked.
    public var unlockDuration: Double = 0

    public init() {}

    /// What a `simulation:` block may contain; validated like any device setting.
    public static let specs: [PropertySpec] = [
        PropertySpec("pair_rate", .quantity(.frequency), range: 0...1e9, summary: "pairs/s at nominal_power"),
        PropertySpec("nominal_power", .quantity(.power), range: 1e-9...10, summary: "pump power of pair_rate"),
        PropertySpec("visibility", .quantity(.dimensionless), range: 0...1, summary: "Werner visibility"),
        PropertySpec("efficiency", .quantity(.dimensionless), range: 0...1, summary: "per-photon detection probability"),
        PropertySpec("dark_rate", .quantity(.frequency), range: 0...1e8, summary: "dark counts per detector"),
        PropertySpec("jitter", .quantity(.time), range: 0...1e-6, summary: "detector timing jitter (σ)"),
        PropertySpec("lock_time", .quantity(.time), range: 0...3600, summary: "pump lock acquisition time"),
        PropertySpec("unlock_at", .quantity(.time), range: 0...1e7, summary: "fault: pump unlocks at this lab time"),
        PropertySpec("unlock_duration", .quantity(.time), range: 0...1e7, summary: "fault: how long the unlock lasts"),
    ]

    /// Applies validated values; unknown keys were already rejected by validation.
    public init(_ values: [String: Value]) {
        self.init()
        for (key, value) in values {
            guard let q = value.quantity?.value else { continue }
            switch key {
            case "pair_rate": pairRate = q
            case "nominal_power": nominalPower = q
            case "visibility": visibility = q
            case "efficiency": efficiency = q
            case "dark_rate": darkRate = q
            case "jitter": jitter = q
            case "lock_time": lockTime = q
            case "unlock_at": unlockAt = q
            case "unlock_duration": unlockDuration = q
            default: break
            }
        }
    }
}

/// Which lab element a mock device drives.
public enum Waveplate: String, Sendable, CaseIterable {
    case qwp, hwp
}

public enum Arm: String, Sendable, CaseIterable {
    case a, b
}

/// One simulated optical table shared by every mock device: a pump laser, a
/// polarization-entangled pair source, a QWP+HWP+PBS analyzer per arm, four
/// detectors (A pass = 1, A reflect = 2, B pass = 3, B reflect = 4) and a time tagger.
///
/// Time is virtual: the lab owns an `ImmediateClock` that the sequencer also
/// sleeps on, so a one-second acquisition costs only the time to simulate it.
public actor SimulatedLab {
    /// How simulated time relates to wall time.
    public enum Pacing: Sendable {
        /// As fast as the simulation runs (tests, CI).
        case virtual
        /// Acquisitions take their real duration (demos, signal handling).
        case realtime
    }

    public nonisolated let clock: ImmediateClock<Duration>
    public nonisolated let pacing: Pacing
    public let parameters: LabParameters
    private var rng: SeededGenerator
    private var pumpEnabled = false
    private var pumpEnabledAtPs: Int64 = 0
    private var pumpPower = 0.0
    private var angles: [Arm: [Waveplate: Double]] = [.a: [.qwp: 0, .hwp: 0], .b: [.qwp: 0, .hwp: 0]]

    public init(parameters: LabParameters = .init(), seed: UInt64, pacing: Pacing = .virtual) {
        self.parameters = parameters
        self.rng = SeededGenerator(seed: seed)
        self.clock = ImmediateClock()
        self.pacing = pacing
    }

    // MARK: Controls, called by the mock drivers

    public func setPump(enabled: Bool) {
        if enabled && !pumpEnabled { pumpEnabledAtPs = nowPs }
        pumpEnabled = enabled
    }

    /// Whether the pump is lasing and locked at lab time `ps`.
    public func pumpLocked(atPs ps: Int64) -> Bool {
        guard pumpEnabled else { return false }
        if Double(ps - pumpEnabledAtPs) * 1e-12 < parameters.lockTime { return false }
        if let at = parameters.unlockAt {
            let t = Double(ps) * 1e-12
            if t >= at && t < at + parameters.unlockDuration { return false }
        }
        return true
    }

    public var pumpLocked: Bool { pumpLocked(atPs: nowPs) }
    public func setPump(power: Double) { pumpPower = power }
    public var pump: (enabled: Bool, power: Double) { (pumpEnabled, pumpPower) }
    public func setAngle(_ degrees: Double, arm: Arm, plate: Waveplate) { angles[arm]?[plate] = degrees }
    public func angle(arm: Arm, plate: Waveplate) -> Double { angles[arm]?[plate] ?? 0 }

    /// Current virtual time in picoseconds since the lab was created.
    public nonisolated var nowPs: Int64 {
        picoseconds(ImmediateClock<Duration>.Instant().duration(to: clock.now))
    }

    // MARK: Physics

    /// The pair rate the pump currently produces, per second.
    public var currentPairRate: Double {
        pumpEnabled ? parameters.pairRate * pumpPower / parameters.nominalPower : 0
    }

    /// The source state ρ = V|Φ+⟩⟨Φ+| + (1−V)·I/4, as ⟨x y|ρ|x y⟩ for product states.
    nonisolated func pairProbability(_ x: JonesVector, _ y: JonesVector) -> Double {
        let v = parameters.visibility
        // ⟨Φ+|x y⟩ = (x_H y_H + x_V y_V)/√2 with conjugates on the bra side.
        let overlap = (x.h.conjugate * y.h.conjugate + x.v.conjugate * y.v.conjugate)
        let phiPlus = overlap.lengthSquared / 2
        return v * phiPlus + (1 - v) / 4 * x.inner(x).real * y.inner(y).real
    }

    /// Simulates an acquisition of `duration` starting now, advances the clock, and
    /// returns the tags sorted by time (channels 1–4).
    public func acquire(duration: Duration) async throws -> (TagBlock, AcquisitionInterval) {
        let start = nowPs
        let lengthPs = picoseconds(duration)
        let stop = start + lengthPs
        let seconds = Double(lengthPs) * 1e-12
        var times: [Int64] = []
        var channels: [UInt8] = []
        let expected = Int(currentPairRate * seconds * parameters.efficiency * 2 + 4 * parameters.darkRate * seconds)
        times.reserveCapacity(expected + expected / 8 + 16)
        channels.reserveCapacity(times.capacity)

        // Joint outcome probabilities for (pass/reflect) × (pass/reflect) at the current angles.
        let analyzerA = JonesMatrix.analyzerStates(qwp: angle(arm: .a, plate: .qwp), hwp: angle(arm: .a, plate: .hwp))
        let analyzerB = JonesMatrix.analyzerStates(qwp: angle(arm: .b, plate: .qwp), hwp: angle(arm: .b, plate: .hwp))
        let portsA = [analyzerA.pass, analyzerA.reflect], portsB = [analyzerB.pass, analyzerB.reflect]
        var cumulative: [Double] = []
        var total = 0.0
        for pa in portsA { for pb in portsB {
            total += pairProbability(pa, pb)
            cumulative.append(total)
        } }
        let eta = parameters.efficiency
        let sigmaPs = parameters.jitter * 1e12
        let rate = currentPairRate
        if rate > 0 {
            var t = Double(start) * 1e-12
            let end = Double(stop) * 1e-12
            while true {
                t += rng.exponential(rate: rate)
                if t >= end { break }
                // An unlocked pump (warming up, or an injected fault) produces no pairs.
                if !pumpLocked(atPs: Int64(t * 1e12)) { continue }
                let u = rng.unitOpen() * total
                let outcome = cumulative.firstIndex { u <= $0 } ?? 3
                let emitted = t * 1e12
                if rng.unitOpen() <= eta {
                    let stamp = Int64((emitted + sigmaPs * rng.gaussian()).rounded())
                    if stamp >= start && stamp < stop {
                        times.append(stamp)
                        channels.append(outcome / 2 == 0 ? 1 : 2)
                    }
                }
                if rng.unitOpen() <= eta {
                    let stamp = Int64((emitted + sigmaPs * rng.gaussian()).rounded())
                    if stamp >= start && stamp < stop {
                        times.append(stamp)
                        channels.append(outcome % 2 == 0 ? 3 : 4)
                    }
                }
            }
        }
        if parameters.darkRate > 0 {
            for channel in UInt8(1)...4 {
                var t = Double(start) * 1e-12
                let end = Double(stop) * 1e-12
                while true {
                    t += rng.exponential(rate: parameters.darkRate)
                    if t >= end { break }
                    times.append(min(Int64((t * 1e12).rounded()), stop - 1))
                    channels.append(channel)
                }
            }
        }
        // Jitter and dark counts break time order; a real tagger delivers sorted tags.
        // Sorting one packed key (time << 3 | channel) is far cheaper than sorting indices.
        var keys = [Int64](repeating: 0, count: times.count)
        for i in times.indices { keys[i] = times[i] << 3 | Int64(channels[i]) }
        keys.sort()
        let block = TagBlock(timestamps: keys.map { $0 >> 3 }, channels: keys.map { UInt8(truncatingIfNeeded: $0 & 7) })
        if pacing == .realtime { try await Task.sleep(for: duration) }
        try await clock.sleep(for: duration)
        return (block, AcquisitionInterval(startPs: start, stopPs: stop, tags: block.count))
    }
}

/// The lab's clock paced to wall time: sleeping takes real time and then advances the
/// lab's virtual clock, so lab physics (lock times, faults) and the wall agree.
public struct PacedClock: Clock {
    public typealias Instant = ImmediateClock<Duration>.Instant
    let base: ImmediateClock<Duration>

    public var now: Instant { base.now }
    public var minimumResolution: Duration { .zero }

    public func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        let remaining = base.now.duration(to: deadline)
        if remaining > .zero { try await Task.sleep(for: remaining) }
        try await base.sleep(until: deadline, tolerance: nil)
    }
}

extension SimulatedLab {
    /// The clock a run on this lab must use for waits.
    public nonisolated var runClock: any Clock<Duration> {
        pacing == .virtual ? clock : PacedClock(base: clock)
    }
}
