import Foundation
import HeraldAnalysis
import HeraldCore
import HeraldTTTR
import Testing

/// A real recording as two taggers: the photons of a PicoHarp 300 T2 file (920 k tags over
/// 7.65 s, 4 ps resolution) fed to both, as a split electrical signal would be, each keeping an
/// independent 80 % (dead time, thresholds), the second's clock running 3.3 µs late and 2.5 ppm
/// fast and quantised to the file's 4 ps. The calibration must recover the clock to within the
/// file's resolution over the whole recording.
@Suite struct ClockCalibrationRealDataTests {
    @Test func aSplitPicoQuantRecordingRecoversTheKnownClockToTheFilesResolution() throws {
        let path = TimeTagFileTests.samples.appendingPathComponent("picoharp/v30_t2.ptu").path
        let file = try TimeTagFile.open(path)
        var times: [Int64] = []
        try file.decode { events in times += file.tagBlock(events).timestamps }
        times.sort()
        #expect(times.count > 900_000)
        let offset = 3_300_000.0, drift = 2.5e-6, resolution: Int64 = 4
        var rng = SeededGenerator(seed: 17)
        var reference: [Int64] = [], local: [Int64] = []
        for t in times {
            if rng.unitOpen() < 0.8 { reference.append(t) }
            if rng.unitOpen() < 0.8 {
                let x = Double(t)
                let l = Int64((x + offset + drift * x).rounded())
                local.append(l - l % resolution)
            }
        }
        local.sort()
        let model = try ClockCalibration.fromCorrelation(reference: reference, local: local, tagger: "second", referenceName: "first")
        // In local time: offset(local) = (o + d·local)/(1 + d) (see ClockSyncTests).
        let span = Double(local[local.count - 1] - local[0])
        let trueAtEpoch = (offset + drift * Double(model.epochPs)) / (1 + drift)
        let slope = drift / (1 + drift)
        let worst = max(abs(model.offsetPs - trueAtEpoch), abs(model.offsetPs + model.drift * span - (trueAtEpoch + slope * span)))
        // Quantising to 4 ps shifts the mean by 1.5 ps (floor): within the resolution still.
        #expect(worst <= Double(resolution), "the clock is off by up to \(worst) ps over the recording (offset \(model.offsetPs) vs \(trueAtEpoch), drift \(model.drift) vs \(slope))")
        #expect(model.samples > 500_000)
    }

    /// `herald calibrate-clocks` on real files: a recording against itself is the identity
    /// (every tag paired with itself: offset and drift zero), written as YAML with --out; two
    /// unrelated recordings share no photons, and the error says so, naming the tagger.
    @Test func theCommandCalibratesRecordingsAndRefusesUnrelatedOnes() async throws {
        let dir = try Paths.temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: dir) }
        let ptu = TimeTagFileTests.samples.appendingPathComponent("picoharp/v30_t2.ptu").path
        let yaml = dir.appendingPathComponent("clocks.yaml").path
        let same = try await runProcess(Paths.herald.path, ["calibrate-clocks", ptu, ptu, "--json", "--out", yaml])
        #expect(same.status == 0, "\(same.stderr)")
        let model = try JSONDecoder().decode(ClockModel.self, from: Data(same.stdout.utf8))
        #expect(abs(model.offsetPs) <= 1 && abs(model.drift) <= 1e-12, "\(model)")
        #expect(model.samples > 900_000)
        let written = try String(contentsOfFile: yaml, encoding: .utf8)
        #expect(written.contains("clocks:") && written.contains("source: correlation"))
        let other = TimeTagFileTests.samples.appendingPathComponent("hydraharp/v20_t2.ptu").path
        let unrelated = try await runProcess(Paths.herald.path, ["calibrate-clocks", ptu, other])
        #expect(unrelated.status != 0)
        // No peak holds, or chance peaks line up into a drift beyond the range: either way the
        // error names the tagger and says what to check.
        #expect(unrelated.stderr.contains("'v20_t2.ptu'") && unrelated.stderr.contains("same photons"), "\(unrelated.stderr)")
    }
}
