import HeraldCore
import HeraldHDF5

/// Reads a Herald run file's tag stream front to back, a block at a time, together with the
/// intervals the run acquired in. The replay driver uses it to play a run back as a tagger.
public final class RunTagStream {
    public let path: String
    /// Tags in the file.
    public let count: Int
    /// The run's acquisitions (sweep points and named acquisitions), [start, stop) in ps on
    /// the run's tag clock, sorted. Between them the tagger was not acquiring.
    public let acquisitions: [(startPs: Int64, stopPs: Int64)]
    /// Intervals the recording's tagger reported losing tags in (user/herald/lost).
    public let lost: [ExcludedInterval]
    private let file: H5File
    private let reader: TagReader
    private var position = 0

    /// `tagger`: in a run with several taggers (`clocks:`), one other than the reference, whose
    /// tags (in its own clock) are under /user/herald/taggers; nil for photon_data.
    public init(path: String, tagger: String? = nil) throws {
        self.path = path
        let file = try RunFile.open(path)
        self.file = file
        do {
            if let tagger { reader = try TagReader(file, tagger: tagger) } else { reader = try TagReader(file) }
            var intervals: [(Int64, Int64)] = []
            let herald = try file.openGroup("user").openGroup("herald")
            if let tagger {
                // Its stretches are in its own clock: the acquisitions table has them.
                let g = try herald.openGroup("acquisitions")
                let names = try g.dataset("device_names").readStrings()
                let device = try g.dataset("device").read(Int64.self)
                let starts = try g.dataset("start_ps").read(Int64.self), stops = try g.dataset("stop_ps").read(Int64.self)
                for i in 0..<min(device.count, starts.count, stops.count)
                where names.indices.contains(Int(device[i])) && names[Int(device[i])] == tagger && stops[i] > starts[i] {
                    intervals.append((starts[i], stops[i]))
                }
            } else if herald.contains("sweeps") {
                let sweeps = try herald.openGroup("sweeps")
                // A sweep with others inside it spans their acquisitions: only the innermost
                // points are acquisitions of their own.
                var outers = Set<String>()
                for name in try sweeps.childNames() {
                    if let outer = try sweeps.openGroup(name).stringAttribute("outer_sweep") { outers.insert(outer) }
                }
                for name in try sweeps.childNames() where !outers.contains(name) {
                    let g = try sweeps.openGroup(name)
                    let starts = try g.dataset("start_ps").read(Int64.self)
                    let stops = try g.dataset("stop_ps").read(Int64.self)
                    for (a, b) in zip(starts, stops) where b > a { intervals.append((a, b)) }
                }
            }
            acquisitions = intervals.sorted { $0.0 < $1.0 }
            var lost: [ExcludedInterval] = []
            let lostParent = try tagger.map { try herald.openGroup("taggers").openGroup($0) } ?? herald
            if lostParent.contains("lost") {
                let g = try lostParent.openGroup("lost")
                let starts = try g.dataset("start_ps").read(Int64.self)
                let stops = try g.dataset("stop_ps").read(Int64.self)
                let reasons = try g.dataset("reason").readStrings()
                for (i, (a, b)) in zip(starts, stops).enumerated() {
                    lost.append(ExcludedInterval(startPs: a, stopPs: b, reason: i < reasons.count ? reasons[i] : "overflow"))
                }
            }
            self.lost = lost
        } catch let e as NoRawTagsError {
            file.close()
            throw e
        } catch {
            file.close()
            throw StoreError(path: path, "cannot read the run's tags: \(error)")
        }
        count = reader.count
    }

    /// A run with several taggers: the reference (photon_data's) and the others, from
    /// /user/herald/taggers; nil for a run with one.
    public static func taggers(path: String) throws -> (reference: String, others: [String])? {
        let file = try RunFile.open(path)
        defer { file.close() }
        let herald = try file.openGroup("user").openGroup("herald")
        guard herald.contains("taggers") else { return nil }
        let g = try herald.openGroup("taggers")
        return (try g.stringAttribute("reference") ?? "reference", try g.childNames().sorted())
    }

    deinit { file.close() }

    /// The next `maxTags` tags (fewer at the end), or nil when all have been read. The first
    /// block carries every lost interval of the run.
    public func next(maxTags: Int = 1 << 16) throws -> TagBlock? {
        guard position < count else { return nil }
        let n = min(max(maxTags, 1), count - position)
        let block = TagBlock(
            timestamps: try reader.timestamps.read(Int64.self, offset: position, count: n),
            channels: try reader.detectors.read(UInt8.self, offset: position, count: n),
            excluded: position == 0 ? lost : [])
        position += n
        return block
    }
}
