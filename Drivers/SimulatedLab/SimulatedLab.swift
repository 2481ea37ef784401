import Clocks
import ComplexModule
import RealModule
import Foundation
import HeapModule
import HeraldCore
import Synchronization

/// Which lab element a mock device drives.
public enum Waveplate: String, Sendable, CaseIterable {
    case qwp, hwp
}

public enum Arm: String, Sendable, CaseIterable {
    case a, b
}

/// Detector clicks of one stretch of lab time: per detector (index 0 = detector 1), each
/// sorted when dead time or afterpulsing is modelled, in picoseconds on the lab clock.
public struct DetectorClicks: Sendable {
    public var startPs: Int64
    public var stopPs: Int64
    public var perDetector: [[Int64]]

    public var count: Int { perDetector.reduce(0) { $0 + $1.count } }

    public init(startPs: Int64, stopPs: Int64, perDetector: [[Int64]]) {
        self.startPs = startPs
        self.stopPs = stopPs
        self.perDetector = perDetector
    }
}

/// One simulated optical table shared by every mock device: a pump laser (CW or pulsed)
/// behind a shutter, a polarization-entangled pair source, a QWP+HWP+PBS analyzer per arm,
/// and four single-photon detectors (A pass = 1, A reflect = 2, B pass = 3, B reflect = 4)
/// with efficiency, dark counts, jitter, dead time and afterpulsing. The electronics that
/// time-tag or count the clicks are modelled by the mock tagger and counter.
///
/// Time is virtual: the lab owns an `ImmediateClock` that the sequencer also sleeps on,
/// so a one-second acquisition costs only the time to simulate it. Given a seed, every
/// click is reproducible.
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
    /// Faults to inject, by device name (from the script's `simulation.faults` or `--fault`).
    public nonisolated let faults: [FaultSpec]
    var rng: SeededGenerator
    /// The seed the lab was made with: devices derive their own streams from it.
    public nonisolated let seed: UInt64
    /// Acquisitions several taggers make together, by group.
    var groups: [UUID: GroupAcquisition] = [:]
    /// The mock taggers on this lab, by device name (``registerTagger(_:)``).
    nonisolated let taggerNames = Mutex<Set<String>>([])
    /// The simulated quantum network (`simulation.network`), empty for a one-table lab.
    public nonisolated let network: NetworkParameters
    var networkState = NetworkState()
    nonisolated let networkAdvancePs = Mutex<Int64>(0)
    private var pumpEnabled = false
    private var pumpEnabledAtPs: Int64 = 0
    private var pumpPower = 0.0
    private var repetitionRate = 0.0
    private var shutterOpen = true
    private var angles: [Arm: [Waveplate: Double]] = [.a: [.qwp: 0, .hwp: 0], .b: [.qwp: 0, .hwp: 0]]
    /// The waveplates a mount holds ("a-qwp"), registered by the mock rotators and the
    /// simulated ELL14s as they are made.
    nonisolated let mountedPlates = Mutex<Set<String>>([])
    public nonisolated func mount(_ plate: Waveplate, arm: Arm) { mountedPlates.withLock { _ = $0.insert("\(arm.rawValue)-\(plate.rawValue)") } }
    /// Extra path delay of photon B (seconds), from a delay stage.
    private var armDelay = 0.0
    /// The crystal's temperature when a controller holds it (nil: at its phase-matching optimum).
    private var crystalTemperature: Double?
    /// Per detector: the end of its current dead time, and afterpulses not yet due.
    private var deadUntil: [Int64] = [Int64](repeating: .min, count: 4)
    private var afterpulses: [Heap<Int64>] = Array(repeating: Heap(), count: 4)

    public init(
        parameters: LabParameters = .init(), network: NetworkParameters = .init(), seed: UInt64, pacing: Pacing = .virtual,
        faults: [FaultSpec] = []
    ) {
        self.parameters = parameters
        self.network = network
        self.rng = SeededGenerator(seed: seed)
        self.seed = seed
        self.clock = ImmediateClock()
        self.pacing = pacing
        self.faults = faults
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
    /// Pulse repetition rate of the pump; 0 is continuous-wave.
    public func setPump(repetitionRate: Double) { self.repetitionRate = max(0, repetitionRate) }
    public var pump: (enabled: Bool, power: Double, repetitionRate: Double) { (pumpEnabled, pumpPower, repetitionRate) }
    public func setShutter(open: Bool) { shutterOpen = open }
    public var shutterIsOpen: Bool { shutterOpen }
    /// Turns a plate; a plate that is turned is in the beam.
    public func setAngle(_ degrees: Double, arm: Arm, plate: Waveplate) {
        angles[arm]?[plate] = degrees
        mount(plate, arm: arm)
    }
    public func angle(arm: Arm, plate: Waveplate) -> Double { angles[arm]?[plate] ?? 0 }
    /// A delay stage in photon B's path: `passes` times its offset from the zero-delay position.
    public func setStage(position metres: Double, passes: Int) {
        armDelay = Double(passes) * (metres - parameters.zeroDelayPosition) / 299_792_458
    }
    public var photonDelay: Double { armDelay }
    public func setCrystal(temperature kelvin: Double?) { crystalTemperature = kelvin }
    /// sinc²(π(T − T₀)/ΔT): the fraction of the peak pair rate at the crystal's temperature.
    public var phaseMatching: Double {
        guard let t = crystalTemperature else { return 1 }
        let u = Double.pi * (t - parameters.phaseMatchingTemperature) / parameters.phaseMatchingWidth
        if abs(u) < 1e-12 { return 1 }
        return (sin(u) / u) * (sin(u) / u)
    }
    /// What a power meter on the pump reads: its power while emitting, with the meter's noise.
    public func measurePumpPower() -> Double {
        let true_ = pumpEnabled && shutterOpen ? pumpPower : 0
        return max(0, true_ * (1 + parameters.powerMeterNoise * rng.gaussian()))
    }

    /// Current virtual time in picoseconds since the lab was created: the clock, plus the
    /// time the network's attempt loops have moved on without sleeping on it.
    public nonisolated var nowPs: Int64 {
        picoseconds(ImmediateClock<Duration>.Instant().duration(to: clock.now)) + networkAdvancePs.withLock { $0 }
    }

    /// Moves lab time on to `ps` without a sleep on the shared clock: an attempt loop returns
    /// once per herald, and a clock sleep costs a round of task yields each time. Realtime
    /// runs still take the time on the wall.
    func advanceNetwork(toPs ps: Int64) async throws {
        // Lab time is Int64 picoseconds: beyond 2⁶² (53 days) the loops' arithmetic could overflow.
        guard ps < 1 << 62 else {
            throw DeviceError(device: "simulated lab", .rejected, "the simulated lab's clock would pass 53 days of lab time")
        }
        let step = ps - nowPs
        guard step > 0 else { return }
        if pacing == .realtime { try await Task.sleep(for: .nanoseconds(step / 1000)) }
        networkAdvancePs.withLock { $0 += step }
    }

    /// Lets lab time pass without observing it (a counter's or tagger's idle time).
    public func advance(by duration: Duration) async throws {
        if pacing == .realtime { try await Task.sleep(for: duration) }
        try await clock.sleep(for: duration)
    }

    // MARK: Physics

    /// The pair rate the pump currently produces, per second (before the lock and shutter).
    public var currentPairRate: Double {
        pumpEnabled && shutterOpen ? parameters.pairRate * pumpPower / parameters.nominalPower * phaseMatching : 0
    }

    /// ⟨x y|ρ|x y⟩: the probability weight of the pair being found in the product state x ⊗ y.
    nonisolated func pairProbability(_ x: JonesVector, _ y: JonesVector) -> Double {
        let xy = [x.h * y.h, x.h * y.v, x.v * y.h, x.v * y.v]
        var sum = Complex<Double>.zero
        for i in 0..<4 { for j in 0..<4 { sum = sum + xy[i].conjugate * parameters.state[i][j] * xy[j] } }
        return sum.real
    }

    /// Simulates the detectors for `duration` from now and advances the lab clock.
    ///
    /// Pairs are a Poisson process; with a pulsed pump each pair is moved to its pulse, so
    /// the number of pairs per pulse is Poisson with mean pair_rate / repetition_rate (the
    /// multi-pair statistics a heralded-g2 measurement sees). Each photon is detected with
    /// probability `efficiency`, blurred by Gaussian jitter, and dropped if it falls in its
    /// detector's dead time (non-paralyzable); a click may be followed by an afterpulse.
    public func detect(duration: Duration) async throws -> DetectorClicks {
        let start = nowPs
        let clicks = simulate(fromPs: start, toPs: start + picoseconds(duration))
        try await advance(by: duration)
        return clicks
    }

    /// The detectors' clicks over [start, stop) of lab time, without moving the clock.
    func simulate(fromPs start: Int64, toPs stop: Int64) -> DetectorClicks {
        let seconds = Double(stop - start) * 1e-12
        let p = parameters
        var clicks = [[Int64]](repeating: [], count: 4)
        let expected = Int(currentPairRate * seconds * p.efficiency / 2 + p.darkRate * seconds)
        for d in 0..<4 { clicks[d].reserveCapacity(expected + expected / 8 + 16) }

        // Joint outcome probabilities for (pass/reflect) × (pass/reflect) at the current angles.
        // Only the plates a script declares are in the beam (an undeclared QWP at 0° would not
        // be neutral: it turns D into R). A lab with no rotators at all (a bare detector test)
        // has none.
        let mounted = mountedPlates.withLock { $0 }
        func plate(_ arm: Arm, _ p: Waveplate) -> Double? { mounted.contains("\(arm.rawValue)-\(p.rawValue)") ? angle(arm: arm, plate: p) : nil }
        let analyzerA = JonesMatrix.analyzerStates(qwp: plate(.a, .qwp), hwp: plate(.a, .hwp))
        let analyzerB = JonesMatrix.analyzerStates(qwp: plate(.b, .qwp), hwp: plate(.b, .hwp))
        var cumulative: [Double] = []
        var total = 0.0
        for pa in [analyzerA.pass, analyzerA.reflect] {
            for pb in [analyzerB.pass, analyzerB.reflect] {
                total += max(0, pairProbability(pa, pb))
                cumulative.append(total)
            }
        }
        let eta = p.efficiency
        let sigmaPs = p.jitter * 1e12
        let rate = currentPairRate
        let period = repetitionRate > 0 ? 1 / repetitionRate : 0
        let hom = p.homInterferometer
        let tau = armDelay / p.coherenceTime
        let apart = 0.5 * (1 - p.homVisibility * exp(-tau * tau))
        if rate > 0 && (total > 0 || hom) {
            var t = Double(start) * 1e-12
            let end = Double(stop) * 1e-12
            while true {
                t += rng.exponential(rate: rate)
                if t >= end { break }
                // Pulsed: the pair belongs to the pulse of its slot (pulse k at k·period).
                let emitted = period > 0 ? (t / period).rounded(.down) * period : t
                // An unlocked pump (warming up, or an injected fault) produces no pairs.
                if !pumpLocked(atPs: Int64(emitted * 1e12)) { continue }
                let emittedPs = emitted * 1e12
                if hom {
                    // The beam splitter: apart (one photon to each of detectors 1 and 3) with
                    // probability ½(1 − V·e^{−(τ/τc)²}), else both leave by the same port, where
                    // a detector that cannot resolve two photons clicks once.
                    let delayedPs = emittedPs + armDelay * 1e12
                    if rng.unitOpen() <= apart {
                        if rng.unitOpen() <= eta {
                            let s = Int64((emittedPs + sigmaPs * rng.gaussian()).rounded())
                            if s >= start && s < stop { clicks[0].append(s) }
                        }
                        if rng.unitOpen() <= eta {
                            let s = Int64((delayedPs + sigmaPs * rng.gaussian()).rounded())
                            if s >= start && s < stop { clicks[2].append(s) }
                        }
                    } else if rng.unitOpen() <= 1 - (1 - eta) * (1 - eta) {
                        let s = Int64((emittedPs + sigmaPs * rng.gaussian()).rounded())
                        if s >= start && s < stop { clicks[rng.unitOpen() < 0.5 ? 0 : 2].append(s) }
                    }
                    continue
                }
                let u = rng.unitOpen() * total
                let outcome = cumulative.firstIndex { u <= $0 } ?? 3
                if rng.unitOpen() <= eta {
                    let stamp = Int64((emittedPs + sigmaPs * rng.gaussian()).rounded())
                    if stamp >= start && stamp < stop { clicks[outcome / 2].append(stamp) }
                }
                if rng.unitOpen() <= eta {
                    let stamp = Int64((emittedPs + sigmaPs * rng.gaussian()).rounded())
                    if stamp >= start && stamp < stop { clicks[2 + outcome % 2].append(stamp) }
                }
            }
        }
        if p.darkRate > 0 {
            for d in 0..<4 {
                var t = Double(start) * 1e-12
                let end = Double(stop) * 1e-12
                while true {
                    t += rng.exponential(rate: p.darkRate)
                    if t >= end { break }
                    clicks[d].append(min(Int64((t * 1e12).rounded()), stop - 1))
                }
            }
        }
        if p.deadTime > 0 || p.afterpulseProbability > 0 {
            for d in 0..<4 {
                clicks[d].sort()
                clicks[d] = detectorResponse(clicks[d], detector: d, stop: stop)
            }
        }
        return DetectorClicks(startPs: start, stopPs: stop, perDetector: clicks)
    }

    /// Applies dead time and afterpulsing to one detector's sorted would-be clicks. The
    /// detector's state (dead until, afterpulses not yet due) carries over to the next call.
    private func detectorResponse(_ raw: [Int64], detector d: Int, stop: Int64) -> [Int64] {
        let deadPs = Int64((parameters.deadTime * 1e12).rounded())
        let pAfter = parameters.afterpulseProbability
        let afterRate = 1 / max(parameters.afterpulseDelay, 1e-12)
        var out: [Int64] = []
        out.reserveCapacity(raw.count)
        var dead = deadUntil[d]
        var pending = afterpulses[d]
        var i = 0
        while true {
            let nextRaw = i < raw.count ? raw[i] : Int64.max
            let nextAfter = pending.min ?? Int64.max
            let t = min(nextRaw, nextAfter)
            if t >= stop { break }
            if nextAfter <= nextRaw { _ = pending.popMin() } else { i += 1 }
            if t < dead { continue }
            out.append(t)
            dead = t + deadPs
            // Trapped carriers are released after the detector recovers.
            if pAfter > 0 && rng.unitOpen() <= pAfter {
                pending.insert(dead + Int64((rng.exponential(rate: afterRate) * 1e12).rounded()))
            }
        }
        deadUntil[d] = dead
        afterpulses[d] = pending
        return out
    }

    /// All four detectors' clicks for `duration`, merged in time order as channels 1–4
    /// (an ideal tagger: no delays, 1 ps resolution, unlimited bandwidth).
    public func acquire(duration: Duration) async throws -> (TagBlock, AcquisitionInterval) {
        let clicks = try await detect(duration: duration)
        let block = TagMerger.merge(clicks.perDetector.enumerated().map { (UInt8($0.offset + 1), $0.element) })
        return (block, AcquisitionInterval(startPs: clicks.startPs, stopPs: clicks.stopPs, tags: block.count))
    }
}

/// Merges per-channel tag lists into one time-ordered block.
///
/// Sorting one packed key (time << 3 | list index) is far cheaper than sorting indices;
/// ties in time keep list order. Up to 8 lists. The mock tagger sorts the same keys.
public enum TagMerger {
    @inlinable public static func key(_ time: Int64, list index: Int) -> Int64 { time << 3 | Int64(index) }
    @inlinable public static func time(_ key: Int64) -> Int64 { key >> 3 }
    @inlinable public static func list(_ key: Int64) -> Int { Int(key & 7) }

    public static func merge(_ lists: [(channel: UInt8, times: [Int64])]) -> TagBlock {
        precondition(lists.count <= 8, "at most 8 channels can be merged")
        let total = lists.reduce(0) { $0 + $1.times.count }
        var keys = [Int64]()
        keys.reserveCapacity(total)
        for (index, list) in lists.enumerated() {
            for t in list.times { keys.append(key(t, list: index)) }
        }
        keys.sort()
        let channelOf = lists.map(\.channel)
        return TagBlock(timestamps: keys.map(time), channels: keys.map { channelOf[list($0)] })
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
