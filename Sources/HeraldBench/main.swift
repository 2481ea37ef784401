// herald-bench: Herald's side of `make bench`. Prints one JSON object per measurement;
// bench/run.py runs the peers on the same inputs and prints the ratios.
import Foundation
import HeraldAnalysis
import HeraldCore

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
        fidelity = r.figures["fidelity_phi+"] ?? .nan
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

func coincidences(tags: Int) {
    // Four channels of Poisson tags (1 ps resolution), each channel sorted, 1 ns window.
    var rng = SeededGenerator(seed: 1)
    var channels: [[Int64]] = Array(repeating: [], count: 4)
    let rate = 2.5e6  // per channel: 10 M tags/s in all
    for c in 0..<4 {
        var t = 0.0
        channels[c].reserveCapacity(tags / 4)
        for _ in 0..<(tags / 4) {
            t += rng.exponential(rate: rate) * 1e12
            channels[c].append(Int64(t))
        }
    }
    let counter = CoincidenceCounter(window: 1e-9)
    var total = 0
    let seconds = median(runs: 5) {
        total = 0
        for (a, b) in [(0, 2), (0, 3), (1, 2), (1, 3)] { total += counter.count(channels[a], channels[b]) }
    }
    // Each tag of A-side channels is visited twice (two partners): report tags of the stream per second.
    emit(["metric": "coincidences", "tags": tags, "seconds": seconds, "tags_per_s": Double(tags) / seconds, "coincidences": total])
}

let args = CommandLine.arguments.dropFirst()
switch args.first {
case "tomography":
    let csv = args.dropFirst().first ?? "Tests/Fixtures/tomography/werner-0.9-16.csv"
    let n = args.dropFirst(2).first.flatMap { Int($0) } ?? 1000
    try tomography(csv: csv, resamples: n)
case "coincidences":
    coincidences(tags: args.dropFirst().first.flatMap { Int($0) } ?? 20_000_000)
default:
    FileHandle.standardError.write(Data("usage: herald-bench tomography [CSV [RESAMPLES]] | coincidences [TAGS]\n".utf8))
    exit(2)
}
