/// What a recording holds: the figures `herald inspect` prints and the tests compare with
/// independent decoders.
public struct TTTRStatistics: Sendable, Codable, Equatable {
    public var records = 0
    public var photons = 0
    /// Photons per channel as the file numbers them (0-based for PicoQuant).
    public var photonsPerChannel: [Int: Int] = [:]
    public var syncRecords = 0
    /// Marker records per marker bit pattern.
    public var markers: [Int: Int] = [:]
    public var overflowRecords = 0
    public var overflows: Int64 = 0
    /// Swabian: intervals of lost data and events reported missed.
    public var lostIntervals = 0
    public var missedEvents = 0
    /// First and last photon, raw (T2 time tag or T3 sync count) and in picoseconds.
    public var firstPhotonRaw: Int64?
    public var lastPhotonRaw: Int64?
    public var firstPhotonMicrotime: Int?
    public var lastPhotonMicrotime: Int?
    public var firstPhotonPs: Int64?
    public var lastPhotonPs: Int64?

    public init() {}

    public var spanSeconds: Double {
        guard let a = firstPhotonPs, let b = lastPhotonPs else { return 0 }
        return Double(b - a) * 1e-12
    }
}

extension TimeTagFile {
    /// Decodes the whole file once and counts what it holds.
    public func statistics(chunkRecords: Int = 1 << 20) throws -> TTTRStatistics {
        var s = TTTRStatistics()
        s.records = recordCount
        var perChannel = [Int](repeating: 0, count: 256)
        try decode(chunkRecords: chunkRecords) { e in
            for c in e.channels { perChannel[Int(c)] &+= 1 }
            s.photons += e.times.count
            s.syncRecords += e.syncs.count
            for m in e.markers { s.markers[Int(m.bits), default: 0] += 1 }
            s.overflowRecords += e.overflowRecords
            s.overflows += e.overflows
            s.lostIntervals += e.lostIntervals.count
            s.missedEvents += e.missedEvents
            guard let last = e.times.indices.last else { return }
            if s.firstPhotonRaw == nil {
                s.firstPhotonRaw = e.times[0]
                s.firstPhotonMicrotime = e.dtimes.first.map(Int.init)
                s.firstPhotonPs = picoseconds(e, 0)
            }
            s.lastPhotonRaw = e.times[last]
            s.lastPhotonMicrotime = e.dtimes.last.map(Int.init)
            s.lastPhotonPs = picoseconds(e, last)
        }
        for (c, n) in perChannel.enumerated() where n > 0 { s.photonsPerChannel[c] = n }
        return s
    }
}
