// herald-bench: Herald's side of `make bench`. Prints one JSON object per measurement;
// bench/run.py runs the peers on the same inputs and prints the ratios.
import Foundation
import HeraldAnalysis
import HeraldCatalogue
import HeraldCore
import HeraldHDF5
import HeraldTTTR
import SimulatedLab
import Synchronization
import HeraldNodeProtocol
import HeraldNode

/// Median wall time of `body` over `runs` repetitions, after one warm-up call.
func median(runs: Int, _ body: () throws -> Void) rethrows -> Double {
    try body()
    var times: [Double] = []
    for _ in 0..<runs {
        let start = ContinuousClock.now
        try body()
        let d = ContinuousClock.now - start
        times.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
    }
    times.sort()
    return times[times.count / 2]
}

func emit(_ object: [String: Any]) {
    if let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) {
        print(String(decoding: data, as: UTF8.self))
    }
}

func tomography(csv: String, resamples: Int) throws {
    let table = try CountsTable.parse(try String(contentsOfFile: csv, encoding: .utf8), file: csv)
    var fidelity = 0.0
    let mle = try median(runs: 200) {
        let r = try Tomography.reconstruct(table.projections, options: .init(estimator: .mle, monteCarlo: 0))
        fidelity = r.figures[figure: .fidelity(.phiPlus)] ?? .nan
    }
    // The delta-method errors above cost 32 refits; time one bare fit for the per-fit figure.
    let projections = table.projections
    let fit = MaximumLikelihood(projections)
    let start = MaximumLikelihood.start(projections)
    let counts = projections.map(\.counts)
    var iterations = 0
    let bare = median(runs: 500) { iterations = fit.fit(counts: counts, start: start).iterations }
    let linear = try median(runs: 500) { _ = try Tomography.linearInversion(projections) }
    let mc = try median(runs: 3) {
        _ = try Tomography.reconstruct(projections, options: .init(estimator: .mle, monteCarlo: resamples))
    }
    emit([
        "metric": "tomography", "mle_fit_s": bare, "mle_with_delta_errors_s": mle, "linear_s": linear,
        "monte_carlo_s": mc, "resamples": resamples, "fidelity": fidelity, "mle_iterations": iterations,
    ])
}

/// Four channels as a tagger delivers them: one time-ordered stream at 10 M tags/s in all
/// (1 ps resolution), with 2 % of tags in correlated (1,3)/(2,4) pairs so there is something to count.
func taggerStream(tags: Int) -> TagBlock {
    var rng = SeededGenerator(seed: 1)
    var t = 0.0
    var times: [Int64] = [], channels: [UInt8] = []
    times.reserveCapacity(tags)
    channels.reserveCapacity(tags)
    while times.count < tags {
        t += rng.exponential(rate: 10e6) * 1e12
        let c = UInt8.random(in: 1...4, using: &rng)
        times.append(Int64(t))
        channels.append(c)
        if Double.random(in: 0..<1, using: &rng) < 0.01, times.count < tags {
            times.append(Int64(t) + Int64.random(in: 0...300, using: &rng))
            channels.append(c <= 2 ? c + 2 : c - 2)
        }
    }
    // Jitter can put a partner before the next background tag's time: sort, as a tagger would deliver.
    let order = times.indices.sorted { (times[$0], channels[$0]) < (times[$1], channels[$1]) }
    return TagBlock(timestamps: order.map { times[$0] }, channels: order.map { channels[$0] })
}

func coincidences(tags: Int, dump: String?) throws {
    let stream = taggerStream(tags: tags)
    if let dump { try dumpStream(stream, to: dump) }
    let pairs = [ChannelPair(1, 3), ChannelPair(1, 4), ChannelPair(2, 3), ChannelPair(2, 4)]
    let configuration = CoincidenceConfiguration(windowPs: 1000, pairs: pairs)
    // Streaming, as during a run: blocks of 1 M tags (0.1 s at this rate).
    let blocks = stride(from: 0, to: tags, by: 1 << 20).map {
        TagBlock(timestamps: Array(stream.timestamps[$0..<min($0 + (1 << 20), tags)]),
                 channels: Array(stream.channels[$0..<min($0 + (1 << 20), tags)]))
    }
    var total = 0
    let streaming = try median(runs: 5) {
        var s = try CoincidenceStream(configuration)
        for b in blocks { try s.ingest(b) }
        total = s.finish().coincidences.values.reduce(0, +)
    }
    // The per-channel two-pointer counter, splitting channels included.
    let counter = CoincidenceCounter(window: 1e-9)
    var total2 = 0
    let twoPointer = median(runs: 5) {
        let byChannel = (1...4).map { counter.channel($0, of: stream) }
        total2 = pairs.reduce(0) { $0 + counter.count(byChannel[$1.a - 1], byChannel[$1.b - 1]) }
    }
    emit([
        "metric": "coincidences", "tags": tags, "seconds": streaming, "tags_per_s": Double(tags) / streaming,
        "two_pointer_tags_per_s": Double(tags) / twoPointer, "coincidences": total, "two_pointer_coincidences": total2,
    ])
}

/// g2 / cross-correlation histograms of the same 4-channel stream, as a lab computes them
/// during a run: all pairs of tags of channels (1,3) and (2,4) within ±100 ns, 100 ps bins.
func g2(tags: Int, dump: String?) throws {
    let stream = taggerStream(tags: tags)
    if let dump { try dumpStream(stream, to: dump) }
    let specs = [ChannelPair(1, 3), ChannelPair(2, 4)].map { CorrelationSpec(pair: $0, binWidthPs: 100, rangePs: 100_000) }
    let configuration = CoincidenceConfiguration(windowPs: 1000, correlations: specs)
    let blocks = stride(from: 0, to: tags, by: 1 << 20).map {
        TagBlock(timestamps: Array(stream.timestamps[$0..<min($0 + (1 << 20), tags)]),
                 channels: Array(stream.channels[$0..<min($0 + (1 << 20), tags)]))
    }
    var histograms: [[Int64]] = []
    let seconds = try median(runs: 5) {
        var s = try CoincidenceStream(configuration)
        for b in blocks { try s.ingest(b) }
        histograms = s.finish().histograms.map(\.counts)
    }
    emit([
        "metric": "g2_histogram", "tags": tags, "seconds": seconds, "tags_per_s": Double(tags) / seconds,
        "bins": specs.map(\.binCount), "pairs_counted": histograms.map { $0.reduce(0, +) },
        // A fingerprint the peer must reproduce bin for bin: Σ (i + 1) · count_i per histogram.
        "weighted_sums": histograms.map { h in h.enumerated().reduce(Int64(0)) { $0 + Int64($1.offset + 1) * $1.element } },
    ])
}

/// Records the tagger stream to HDF5 as the run recorder does: blocks of 1 M tags appended to
/// chunked datasets (65 536 tags per chunk), a flush every 10 blocks (1 s at 10 M tags/s).
func hdf5(tags: Int, dir: String, dump: String?) throws {
    let stream = taggerStream(tags: tags)
    if let dump { try dumpStream(stream, to: dump) }
    let block = 1 << 20
    var rows: [String: Any] = ["metric": "hdf5_write", "tags": tags]
    for (name, compression) in [("raw", nil), ("deflate1", DeflateSettings(level: 1))] as [(String, DeflateSettings?)] {
        let path = "\(dir)/herald-\(name).h5"
        let seconds = try median(runs: 3) {
            let file = try H5File.create(path, overwrite: true, swmr: true)
            let g = try file.group("photon_data")
            let ts = try g.appendable("timestamps", of: Int64.self, chunk: 1 << 16, compression: compression)
            let det = try g.appendable("detectors", of: UInt8.self, chunk: 1 << 16, compression: compression)
            try file.startSWMRWrite()
            for (k, start) in stride(from: 0, to: tags, by: block).enumerated() {
                let end = min(start + block, tags)
                try stream.timestamps.withUnsafeBufferPointer { try ts.append(UnsafeBufferPointer(rebasing: $0[start..<end])) }
                try stream.channels.withUnsafeBufferPointer { try det.append(UnsafeBufferPointer(rebasing: $0[start..<end])) }
                if k % 10 == 9 {
                    try ts.writeTail()
                    try det.writeTail()
                    try file.flush()
                }
            }
            try ts.writeTail()
            try det.writeTail()
            file.close()
        }
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.doubleValue ?? .nan
        rows["\(name)_tags_per_s"] = Double(tags) / seconds
        rows["\(name)_bytes_per_tag"] = size / Double(tags)
    }
    emit(rows)
}

func dumpStream(_ stream: TagBlock, to path: String) throws {
    // Raw little-endian int64 timestamps, then uint8 channels, for the Python peers.
    var data = Data()
    stream.timestamps.withUnsafeBytes { data.append(contentsOf: $0) }
    data.append(contentsOf: stream.channels)
    try data.write(to: URL(fileURLWithPath: path))
}

/// Builds a large T2 file from a sample by repeating its records `times` times (the header's
/// record count patched to match), then times a full decode on one core.
func tttr(sample: String, times: Int, out: String, chunkRecords: Int) throws {
    let original = try TimeTagFile.open(sample)
    let bytes = try Data(contentsOf: URL(fileURLWithPath: sample))
    let records = bytes.subdata(in: original.dataOffset..<(original.dataOffset + original.recordCount * 4))
    var header = bytes.subdata(in: 0..<original.dataOffset)
    guard let countTag = original.header?.tags.first(where: { $0.name == "TTResult_NumberOfRecords" }) else {
        throw TTTRFileError(path: sample, offset: 0, "no record count")
    }
    let total = Int64(original.recordCount * times)
    withUnsafeBytes(of: total.littleEndian) { header.replaceSubrange((countTag.offset + 40)..<(countTag.offset + 48), with: $0) }
    _ = FileManager.default.createFile(atPath: out, contents: header)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: out))
    try handle.seekToEnd()
    for _ in 0..<times { try handle.write(contentsOf: records) }
    try handle.close()

    let file = try TimeTagFile.open(out)
    var photons = 0
    // Decode into time/channel arrays chunk by chunk (what import and replay do), after a warm-up read.
    let seconds = try median(runs: 3) {
        photons = 0
        try file.decode(chunkRecords: chunkRecords) { photons += $0.times.count }
    }
    emit([
        "metric": "tttr_decode", "file": out, "records": file.recordCount, "photons": photons, "seconds": seconds,
        "records_per_s": Double(file.recordCount) / seconds, "format": file.format?.name ?? "", "chunk_records": chunkRecords,
    ])
}

/// The simulated network's attempt loop: the two ion nodes of remote-entanglement.yaml
/// (η ≈ 0.0197 per photon, 1 µs cycle), run until `attempts` attempts, collecting the
/// analyser's clicks as a run does. Attempts are drawn, not tried: the cost is per click.
func network(attempts: Int64) async throws {
    var net = NetworkParameters()
    for name in ["alice", "bob"] {
        var n = QuantumNodeParameters(name: name)
        n.wavelength = 422e-9
        n.wavepacket = 7e-9
        n.emissionProbability = 0.5
        n.collectionEfficiency = 0.05
        n.t2Star = 1e-3
        n.readoutDelay = 50e-6
        net.nodes[name] = n
    }
    var fibre = FibreParameters()
    fibre.length = 2
    var analyser = AnalyserParameters()
    analyser.darkRate = 10
    net.links["ab"] = QuantumLinkParameters(name: "ab", nodes: ["alice", "bob"], fibres: [fibre, fibre], analyser: analyser)
    let lab = SimulatedLab(network: net, seed: 1)
    let config = EntanglerConfiguration(
        link: "ab", nodes: ["alice", "bob"], cyclePs: 1_000_000, windowStartPs: 0, windowLengthPs: 50_000,
        patterns: [[1, 2], [3, 4], [1, 4], [2, 3]], timeoutPs: 10_000_000_000)
    for n in ["alice", "bob"] { try await lab.configureEntangler(node: n, config) }
    var heralds = 0, clicks = 0
    let start = ContinuousClock.now
    while await lab.simulatedAttempts < attempts {
        if case .herald = try await lab.runAttemptLoop(master: "alice") {
            heralds += 1
            _ = try await lab.measureQubit(node: "alice", basis: .z)
            _ = try await lab.measureQubit(node: "bob", basis: .z)
        }
        if heralds % 256 == 0 { clicks += await lab.collectAnalyserClicks(links: []).0.count }
    }
    clicks += await lab.collectAnalyserClicks(links: []).0.count
    let elapsed = start.duration(to: .now)
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    let made = await lab.simulatedAttempts
    emit([
        "metric": "network_attempts", "attempts": made, "heralds": heralds, "clicks": clicks, "seconds": seconds,
        "attempts_per_s": Double(made) / seconds, "success_probability": Double(heralds) / Double(made),
    ])
}

/// A tagger that replays blocks already in memory as fast as they are taken: the node
/// benchmark measures the transport, not a simulation.
final class MemoryTagger: TimeTagger, @unchecked Sendable {
    let name = "tagger"
    let descriptor = DriverDescriptor(id: "bench.memory-tagger", version: "1", summary: "in-memory blocks", kind: .timeTagger, properties: [])
    let channelCount = 4
    let blocks: [TagBlock]
    init(blocks: [TagBlock]) { self.blocks = blocks }
    func connect() async throws {}
    func set(_ property: String, to value: Value) async throws {}
    func get(_ property: String) async throws -> Value { .bool(true) }
    func enterSafeState() async throws {}
    func disconnect() async {}
    func acquire(for duration: Duration, deliver: @Sendable (TagBlock) async throws -> Void) async throws -> AcquisitionInterval {
        for b in blocks { try await deliver(b) }
        return AcquisitionInterval(startPs: blocks.first?.timestamps.first ?? 0, stopPs: (blocks.last?.timestamps.last ?? 0) + 1, tags: blocks.reduce(0) { $0 + $1.count })
    }
}

/// Tags from a node to the coordinator over loopback with mutual TLS (tags/s, bytes a tag on
/// the wire), and the round trip of a set call (p50, p99).
func nodeStreaming(tags: Int) async throws {
    // 10 M tags/s over four channels, as the coincidence bench's stream.
    var rng = SeededGenerator(seed: 3)
    var t: Int64 = 0
    var blocks: [TagBlock] = []
    let perBlock = 1 << 20
    var made = 0
    while made < tags {
        var ts: [Int64] = [], cs: [UInt8] = []
        ts.reserveCapacity(perBlock)
        cs.reserveCapacity(perBlock)
        for _ in 0..<min(perBlock, tags - made) {
            t += Int64(rng.exponential(rate: 1e-5).rounded()) + 1
            ts.append(t)
            cs.append(UInt8(1 + rng.next() % 4))
        }
        made += ts.count
        blocks.append(TagBlock(timestamps: ts, channels: cs))
    }
    // The codec alone, on one core: what the transport adds is the rest.
    let codecStart = ContinuousClock.now
    var wire = 0, decodedTags = 0
    for b in blocks {
        for batch in try TagCodec.batches(b) {
            let bytes: [UInt8] = try batch.serializedBytes()
            wire += bytes.count
            decodedTags += try TagCodec.decode(try Herald_Node_V1_TagBatch(serializedBytes: bytes)).count
        }
    }
    let codecElapsed = codecStart.duration(to: .now)
    let codecSeconds = Double(codecElapsed.components.seconds) + Double(codecElapsed.components.attoseconds) * 1e-18
    let dir = NSTemporaryDirectory() + "herald-bench-node-\(getpid())"
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let ca = try LabCA.create(directory: dir + "/ca")
    let node = try ca.issue(name: "bench", role: "node", hosts: ["127.0.0.1"], out: dir)
    let client = try ca.issue(name: "client", role: "controller", out: dir)
    let agent = NodeAgent(name: "bench", devices: [MemoryTagger(blocks: blocks)])
    let plaintext = ProcessInfo.processInfo.environment["HERALD_BENCH_PLAINTEXT"] != nil
    let server = try NodeServer(
        agent: agent, host: "127.0.0.1", port: 0,
        security: plaintext ? .plaintextLoopback : .mutualTLS(certificate: node.certificate, key: node.key, ca: ca.certificatePath))
    let (ports, gotPort) = AsyncStream<Int>.makeStream()
    let serving = Task { try await server.serve { gotPort.yield($0) } }
    defer { serving.cancel() }
    var port = 0
    for await p in ports { port = p; break }
    let remote = try RemoteNode(
        name: "bench", host: "127.0.0.1", port: port,
        security: plaintext ? .plaintextLoopback : .mutualTLS(certificate: client.certificate, key: client.key, ca: ca.certificatePath))
    defer { remote.close() }
    let described = try await remote.describe(timeout: .seconds(60))
    try await remote.takeLease(length: .seconds(10), lossAfter: .seconds(30))
    let tagger = RemoteDevice(name: "tagger", descriptor: described[0].descriptor, channels: 4, node: remote, timeout: .seconds(600))
    let counted = Mutex(0)
    let start = ContinuousClock.now
    _ = try await tagger.acquire(for: .seconds(1)) { b in counted.withLock { $0 += b.count } }
    let elapsed = start.duration(to: .now)
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
    var latencies: [Double] = []
    for _ in 0..<2000 {
        let t0 = ContinuousClock.now
        try await tagger.set("anything", to: .bool(true))
        let d = t0.duration(to: .now)
        latencies.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
    }
    latencies.sort()
    // The transport alone: describe passes no device and no agent command.
    var describeLatencies: [Double] = []
    for _ in 0..<500 {
        let t0 = ContinuousClock.now
        _ = try await remote.describe(timeout: .seconds(60))
        let d = t0.duration(to: .now)
        describeLatencies.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
    }
    describeLatencies.sort()
    let n = counted.withLock { $0 }
    emit([
        "metric": "node_streaming", "tags": n, "seconds": seconds, "tags_per_s": Double(n) / seconds,
        "bytes_per_tag": Double(wire) / Double(max(1, n)),
        "codec_tags_per_s": Double(decodedTags) / codecSeconds, "set_p50_s": latencies[latencies.count / 2],
        "set_p99_s": latencies[latencies.count * 99 / 100], "describe_p50_s": describeLatencies[describeLatencies.count / 2],
    ])
}

/// Two taggers' streams of `tags` each, merged in the reference time base with the second's
/// drift corrected (one core), and the calibration that finds that drift from 10⁶ correlated
/// pairs. `--dump DIR` writes both streams (raw little-endian Int64) and the model for the
/// numpy peer, which merges the same streams.
func clocks(tags: Int, dump: String?) throws {
    var rng = SeededGenerator(seed: 21)
    let offset = 4_321_000.0, drift = 1e-6
    // 10 M tags/s on each tagger; half of the second's tags are the partners of the first's.
    func stream(_ n: Int, partner: [Int64]?) -> [Int64] {
        var out: [Int64] = []
        out.reserveCapacity(n)
        var t: Int64 = 0
        var i = 0
        while out.count < n {
            t += Int64(rng.exponential(rate: 1e-5).rounded()) + 1
            if let partner, i < partner.count, rng.next() & 1 == 0 {
                let x = Double(partner[i])
                out.append(Int64((x + offset + drift * x).rounded()) + Int64(rng.next() % 100))
                i += 1
            } else {
                out.append(Int64((Double(t) + offset + (partner == nil ? 0 : drift * Double(t))).rounded()))
            }
        }
        out.sort()
        return out
    }
    let a = stream(tags, partner: nil).map { $0 - Int64(offset) }
    let b = stream(tags, partner: a)
    let ba = TagBlock(timestamps: a, channels: [UInt8](repeating: 1, count: a.count))
    let bb = TagBlock(timestamps: b, channels: [UInt8](repeating: 1, count: b.count))
    let model = ClockModel(tagger: "b", reference: "a", offsetPs: offset, drift: drift, epochPs: 0)
    // The best of three: the first run also pays for mapping the output's gigabyte.
    var merged = TagBlock(timestamps: [], channels: [])
    var seconds = Double.infinity
    for _ in 0..<3 {
        merged = TagBlock(timestamps: [], channels: [])
        let start = ContinuousClock.now
        merged = ClockMerge.merge(ba, bb, model: model, channelShift: 1)
        let elapsed = start.duration(to: .now)
        seconds = min(seconds, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        FileHandle.standardError.write(Data("merge \(elapsed)\n".utf8))
    }
    // A checksum of the merged order, for the peer to match.
    var checksum: UInt64 = 0
    for (i, t) in merged.timestamps.enumerated() where i % 1024 == 0 { checksum = checksum &* 31 &+ UInt64(bitPattern: t) }

    // The run's own merge, streaming as a live run (or a recount) feeds it: 64 k-tag blocks of
    // each tagger in turn, the second followed by its sync marks (one a second on channel 5 of
    // each, paired and interpolated). The same tags in the same order as the batch merge.
    let second: Int64 = 1_000_000_000_000
    var withMarks: (a: TagBlock, b: TagBlock) = (ba, bb)
    let span = (a.last ?? 0) / second
    if span >= 1 {
        for k in 1...span {
            let t = k * second
            let i = a.firstIndex(notBelow: t)
            withMarks.a.timestamps.insert(t, at: i)
            withMarks.a.channels.insert(5, at: i)
            let l = Int64((Double(t) + offset + drift * Double(t)).rounded())
            let j = b.firstIndex(notBelow: l)
            withMarks.b.timestamps.insert(l, at: j)
            withMarks.b.channels.insert(5, at: j)
        }
    }
    let spec = ClocksSpec(
        reference: "a", taggers: [.init(name: "b", channelOffset: 8, tracking: .marks(channel: 5, referenceChannel: 5, smoothing: 0))])
    var streamSeconds = Double.infinity
    var streamed = 0
    for _ in 0..<3 {
        var stream = MergedTagStream(spec: spec)
        var out = 0
        let block = 1 << 16
        let start = ContinuousClock.now
        var i = 0, j = 0
        while i < withMarks.a.count || j < withMarks.b.count {
            if i < withMarks.a.count {
                let end = min(i + block, withMarks.a.count)
                let piece = TagBlock(timestamps: Array(withMarks.a.timestamps[i..<end]), channels: Array(withMarks.a.channels[i..<end]))
                out += try stream.add(piece, from: "a").count
                i = end
            }
            if j < withMarks.b.count {
                let end = min(j + block, withMarks.b.count)
                let piece = TagBlock(timestamps: Array(withMarks.b.timestamps[j..<end]), channels: Array(withMarks.b.channels[j..<end]))
                out += try stream.add(piece, from: "b").count
                j = end
            }
        }
        out += try stream.flush().count
        let elapsed = start.duration(to: .now)
        streamSeconds = min(streamSeconds, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18)
        streamed = out
    }
    if let dump {
        try FileManager.default.createDirectory(atPath: dump, withIntermediateDirectories: true)
        try a.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: dump + "/a.bin")) }
        try b.withUnsafeBytes { try Data($0).write(to: URL(fileURLWithPath: dump + "/b.bin")) }
    }
    // Calibration from 10⁶ pairs (and as many unpaired tags): 10 s of a 100 k pairs/s link.
    var pairsRng = SeededGenerator(seed: 22)
    var ref: [Int64] = [], loc: [Int64] = []
    var t = 0.0
    for _ in 0..<1_000_000 {
        t += pairsRng.exponential(rate: 1e-7)
        ref.append(Int64(t.rounded()) + Int64(pairsRng.next() % 100))
        loc.append(Int64((t + offset + drift * t).rounded()) + Int64(pairsRng.next() % 100))
        ref.append(Int64((t + 5e6 * pairsRng.unitOpen()).rounded()))
        loc.append(Int64((t + 5e6 * pairsRng.unitOpen()).rounded()))
    }
    ref.sort()
    loc.sort()
    let calStart = ContinuousClock.now
    let found = try ClockCalibration.fromCorrelation(reference: ref, local: loc, tagger: "b")
    let calElapsed = calStart.duration(to: .now)
    emit([
        "metric": "clocks", "tags": merged.count, "merge_seconds": seconds, "merge_tags_per_s": Double(merged.count) / seconds,
        "checksum": String(checksum), "offset_ps": offset, "drift": drift,
        "stream_tags": streamed, "stream_seconds": streamSeconds, "stream_tags_per_s": Double(streamed) / streamSeconds,
        "calibration_seconds": Double(calElapsed.components.seconds) + Double(calElapsed.components.attoseconds) * 1e-18,
        "calibration_pairs": 1_000_000, "calibrated_drift": found.drift, "calibrated_drift_error": found.driftError,
    ])
}

/// The run catalogue with `runs` runs: registering them, listing the newest page, and a
/// filtered query (a figure and a sample, as `herald runs --where` asks it), on SQLite and,
/// given a server, on PostgreSQL.
func catalogue(runs: Int, postgres: String?) async throws {
    func records() -> [CatalogueRecord] {
        let base = Date(timeIntervalSince1970: 1_780_000_000)
        return (0..<runs).map { i in
            var r = CatalogueRecord(
                uid: String(format: "%08x-0000-4000-8000-%012x", i, i), name: ["bell-tomography", "chsh", "g2-hbt", "hom-dip"][i % 4],
                scriptPath: "/lab/Experiments/x.yaml", startedAt: base.addingTimeInterval(Double(i) * 60), status: i % 97 == 0 ? .failed : .success,
                filePath: "/lab/out/run-\(i).h5")
            r.sample = "S\(i % 50)"
            r.operatorName = "op\(i % 7)"
            r.tags = i % 10 == 0 ? ["calibration"] : []
            r.devices = [.init(name: "tagger", driver: "mock.timetagger"), .init(name: "pump", driver: "mock.laser")]
            // A spread of fidelities from 0.80 to 1.00, deterministic per run.
            let f = 0.8 + 0.2 * Double((i &* 7919) % 1000) / 1000
            r.figures = [
                .init(entry: "000_tomography", analysis: "tomography", name: "fidelity", value: f, error: 0.003),
                .init(entry: "000_tomography", analysis: "tomography", name: "concurrence", value: 2 * f - 1, error: 0.006),
                .init(entry: "000_tomography", analysis: "tomography", name: "purity", value: f * f, error: 0.004),
            ]
            return r
        }
    }
    let all = records()
    var targets: [(String, CatalogueLocation)] = [("sqlite", .sqlite(path: NSTemporaryDirectory() + "/herald-bench-\(getpid()).sqlite"))]
    if let postgres { targets.append(("postgres", try CatalogueLocation.parse(postgres))) }
    for (name, location) in targets {
        if case .sqlite(let path) = location { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
        let c = try await RunCatalogue.open(location)
        let start = ContinuousClock.now
        for batch in stride(from: 0, to: all.count, by: 2000) { try await c.save(Array(all[batch..<min(batch + 2000, all.count)])) }
        let inserted = ContinuousClock.now - start
        // As `herald catalogue rebuild` does after indexing: the planner's statistics of the full catalogue.
        try await c.refreshStatistics()
        let filter = try RunFilter.parse("fidelity > 0.99 and sample = 'S7'")
        func time(_ body: () async throws -> Void) async throws -> Double {
            try await body()
            var t: [Double] = []
            for _ in 0..<15 {
                let s = ContinuousClock.now
                try await body()
                let d = ContinuousClock.now - s
                t.append(Double(d.components.seconds) + Double(d.components.attoseconds) * 1e-18)
            }
            return t.sorted()[t.count / 2]
        }
        var matched = 0
        let filtered = try await time { matched = try await c.runs(RunQuery(filter: filter, limit: 50)).count }
        let newest = try await time { _ = try await c.runs(RunQuery(limit: 50)) }
        var counted = 0
        let countAll = try await time { counted = try await c.count(RunQuery(filter: filter)) }
        await c.close()
        // 100 000 runs are 110 MB: not left behind in the temporary folder.
        if case .sqlite(let path) = location { for s in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + s) } }
        let insertSeconds = Double(inserted.components.seconds) + Double(inserted.components.attoseconds) * 1e-18
        emit([
            "backend": name, "runs": runs, "insert_runs_per_s": Double(runs) / insertSeconds, "filtered_query_s": filtered,
            "filtered_matches": matched, "filtered_count_s": countAll, "filtered_total": counted, "newest_page_s": newest,
        ])
    }
}

let args = CommandLine.arguments.dropFirst()

/// The value after `name` on the command line, if any.
func option(_ name: String) -> String? {
    let all = Array(args)
    return all.firstIndex(of: name).flatMap { all.indices.contains($0 + 1) ? all[$0 + 1] : nil }
}
switch args.first {
case "tomography":
    let csv = args.dropFirst().first ?? "Tests/Fixtures/tomography/werner-0.9-16.csv"
    let n = args.dropFirst(2).first.flatMap { Int($0) } ?? 1000
    try tomography(csv: csv, resamples: n)
case "coincidences":
    try coincidences(tags: args.dropFirst().first.flatMap { Int($0) } ?? 20_000_000, dump: option("--dump"))
case "g2":
    try g2(tags: args.dropFirst().first.flatMap { Int($0) } ?? 20_000_000, dump: option("--dump"))
case "hdf5":
    try hdf5(
        tags: args.dropFirst().first.flatMap { Int($0) } ?? 20_000_000, dir: option("--dir") ?? NSTemporaryDirectory(),
        dump: option("--dump"))
case "tttr":
    try tttr(
        sample: args.dropFirst().first ?? "../shared/data/picoquant/hydraharp/v20_t2.ptu",
        times: option("--repeat").flatMap { Int($0) } ?? 100, out: option("--out") ?? NSTemporaryDirectory() + "/herald-bench.ptu",
        chunkRecords: option("--chunk").flatMap { Int($0) } ?? 1 << 16)
case "clocks":
    try clocks(tags: args.dropFirst().first.flatMap { Int($0) } ?? 50_000_000, dump: option("--dump"))
case "node":
    // 10⁸ tags (10 s of a 10 M tags/s stream): long enough that the stream's start-up (the
    // HTTP/2 windows opening) does not dominate.
    try await nodeStreaming(tags: args.dropFirst().first.flatMap { Int($0) } ?? 100_000_000)
case "catalogue":
    try await catalogue(runs: args.dropFirst().first.flatMap { Int($0) } ?? 100_000, postgres: option("--postgres"))
case "network":
    try await network(attempts: args.dropFirst().first.flatMap { Int64($0) } ?? 1_000_000_000)
default:
    FileHandle.standardError.write(Data("usage: herald-bench network [ATTEMPTS] | tomography [CSV [RESAMPLES]] | coincidences [TAGS] [--dump FILE] | g2 [TAGS] [--dump FILE] | hdf5 [TAGS] [--dir DIR] [--dump FILE] | tttr [SAMPLE.ptu] [--repeat N] [--out FILE]\n".utf8))
    exit(2)
}
