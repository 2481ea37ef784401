import Foundation
import HeraldCore

/// A simulated tagger's own clock: how the time it stamps relates to the lab's true time.
///
///     local(t) = t + offset + drift · t + W(t)
///
/// with W a random walk of the offset (σ = `wanderPs` after one second), drawn at whole lab
/// seconds from its own seed and interpolated linearly between them, so the truth at any
/// instant is known to a test (``offsetPs(atPs:)``). A sync source puts a mark on
/// `syncChannel` at every whole lab second, stamped by this clock with the source's jitter:
/// White Rabbit's residual (about 10 ps) or a GPS receiver's PPS (about a nanosecond).
public struct TaggerClock: Sendable, Equatable {
    public enum Sync: String, Sendable, CaseIterable {
        case none
        case whiteRabbit = "white_rabbit"
        case gps

        /// The jitter of the marks when the script gives none.
        public var defaultJitterPs: Double {
            switch self {
            case .none: return 0
            case .whiteRabbit: return 10
            case .gps: return 1000
            }
        }
    }

    public var offsetPs: Double = 0
    /// Fractional frequency error: 1e-6 is a clock 1 ppm fast.
    public var drift: Double = 0
    /// The random walk's σ after one second, picoseconds.
    public var wanderPs: Double = 0
    public var sync: Sync = .none
    public var syncChannel = 0
    public var syncJitterPs: Double = 0
    public var seed: UInt64 = 0

    public init(
        offsetPs: Double = 0, drift: Double = 0, wanderPs: Double = 0, sync: Sync = .none, syncChannel: Int = 0,
        syncJitterPs: Double? = nil, seed: UInt64 = 0
    ) {
        self.offsetPs = offsetPs
        self.drift = drift
        self.wanderPs = wanderPs
        self.sync = sync
        self.syncChannel = syncChannel
        self.syncJitterPs = syncJitterPs ?? sync.defaultJitterPs
        self.seed = seed
    }

    /// A perfect clock with no sync source: tags in lab time.
    public var isIdeal: Bool { offsetPs == 0 && drift == 0 && wanderPs == 0 }

    /// The wander at whole seconds, grown as far as asked for. A value type the tagger keeps
    /// in its state, so each tagger's walk is its own and reproducible.
    public struct Walk: Sendable {
        var knots: [Double] = [0]
        var rng: SeededGenerator

        public init(seed: UInt64) { rng = SeededGenerator(seed: seed) }

        mutating func value(atPs ps: Int64, sigma: Double) -> Double {
            guard sigma > 0, ps > 0 else { return 0 }
            let seconds = Double(ps) * 1e-12
            let k = Int(seconds)
            while knots.count <= k + 1 { knots.append((knots.last ?? 0) + sigma * rng.gaussian()) }
            let f = seconds - Double(k)
            return knots[k] + (knots[k + 1] - knots[k]) * f
        }
    }

    /// local − true at lab time `ps`: what a calibration must recover.
    public func offsetPs(atPs ps: Int64, walk: inout Walk) -> Double {
        offsetPs + drift * Double(ps) + walk.value(atPs: ps, sigma: wanderPs)
    }

    /// The time this clock stamps an event at lab time `ps`.
    @inline(__always)
    public func local(_ ps: Int64, walk: inout Walk) -> Int64 {
        ps + Int64(offsetPs(atPs: ps, walk: &walk).rounded())
    }
}

extension TaggerClock {
    /// The clock a mock tagger's settings describe (`clock_offset`, `clock_drift`,
    /// `clock_wander`, `sync`, `sync_channel`, `sync_jitter`), seeded from the lab's seed
    /// and the tagger's name so that two taggers wander independently.
    public init(settings: [String: Value], name: String, labSeed: UInt64) throws {
        func seconds(_ key: String) -> Double? { settings[key]?.quantity?.value }
        let syncText = settings["sync"]?.text ?? "none"
        guard let sync = Sync(rawValue: syncText) else {
            throw DeviceError(
                device: name, .rejected,
                "sync '\(syncText)' is not a sync source: one of \(Sync.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        var channel = 0
        if sync != .none {
            guard let c = settings["sync_channel"]?.quantity?.value, c == c.rounded(), (1...8).contains(c) else {
                throw DeviceError(device: name, .rejected, "sync '\(syncText)' needs sync_channel, a channel 1–8 for its marks")
            }
            channel = Int(c)
        }
        // FNV-1a of the name: stable across runs and platforms, unlike Hasher.
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in name.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        self.init(
            offsetPs: (seconds("clock_offset") ?? 0) * 1e12, drift: seconds("clock_drift") ?? 0,
            wanderPs: (seconds("clock_wander") ?? 0) * 1e12, sync: sync, syncChannel: channel,
            syncJitterPs: seconds("sync_jitter").map { $0 * 1e12 }, seed: labSeed ^ h)
    }
}
