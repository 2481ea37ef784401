import HeraldCore
import Foundation

/// Finds the cable/electronics delay between two channels from their cross-correlation peak.
public struct DelayEstimate: Sendable, Equatable {
    /// Centre of the correlation peak, Δ = t_b − t_a in picoseconds, with the delays in force.
    public var peakPs: Double
    /// Standard error of `peakPs` from the counts in the peak.
    public var peakErrorPs: Double
    /// RMS width of the peak (detector jitter and bin width together).
    public var widthPs: Double
    /// Counts above background in the peak.
    public var peakCounts: Double
    /// Median counts per bin, taken as the flat accidental background.
    public var backgroundPerBin: Double
    /// Height of the tallest bin above background, in Poisson standard deviations of the background.
    public var significance: Double

    /// Delay to give channel b (added to the one already in force) to centre the peak at zero.
    public var correctionPs: Int64 { Int64((-peakPs).rounded()) }
}

public enum DelayCalibrationError: Error, CustomStringConvertible, Sendable {
    case noPeak(pair: ChannelPair, significance: Double)

    public var description: String {
        switch self {
        case .noPeak(let p, let s):
            return "no correlation peak between channels \(p.a) and \(p.b) (tallest bin only \(String(format: "%.1f", s))σ above "
                + "background; 5σ needed): widen the histogram range, acquire longer, or check that the channels see paired photons"
        }
    }
}

extension CorrelationHistogram {
    /// Locates the correlation peak: the tallest bin, then a background-subtracted centroid
    /// whose window widens to ±4 RMS widths so a peak spanning many bins is not truncated.
    public func delayEstimate(minimumSignificance: Double = 5) throws -> DelayEstimate {
        guard let peak = counts.indices.max(by: { counts[$0] < counts[$1] }) else {
            throw DelayCalibrationError.noPeak(pair: spec.pair, significance: 0)
        }
        let background = Double(counts.sorted()[counts.count / 2])
        let significance = (Double(counts[peak]) - background) / max(background, 1).squareRoot()
        guard significance >= minimumSignificance else {
            throw DelayCalibrationError.noPeak(pair: spec.pair, significance: significance)
        }
        let bin = Double(spec.binWidthPs)
        var center = centerPs(peak), width = 3 * bin, signal = 0.0, rms = bin
        for _ in 0..<4 {
            var s0 = 0.0, s1 = 0.0, s2 = 0.0
            for i in counts.indices where abs(centerPs(i) - center) <= width {
                let w = max(0, Double(counts[i]) - background)
                let x = centerPs(i)
                s0 += w; s1 += w * x; s2 += w * x * x
            }
            guard s0 > 0 else { break }
            center = s1 / s0
            rms = max(bin / 12.0.squareRoot(), (max(0, s2 / s0 - center * center)).squareRoot())
            signal = s0
            width = max(3 * bin, 4 * rms)
        }
        return DelayEstimate(
            peakPs: center, peakErrorPs: rms / max(signal, 1).squareRoot(), widthPs: rms, peakCounts: signal,
            backgroundPerBin: background, significance: significance)
    }
}
