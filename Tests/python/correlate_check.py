"""Recounts a cross-correlation histogram from raw tags with numpy, independently of Herald,
and compares it bin for bin with `herald correlate --json`.

    correlate_check.py FILE A B RANGE_PS BIN_PS HERALD_JSON
    correlate_check.py FILE A B RANGE_PS BIN_PS --stored

The second form compares the histogram a run's first `correlation` step stored in FILE, under
/user/herald/analysis/NNN_correlation/series (counts, and tau: each bin's lower edge in seconds).

FILE is a Herald run (.h5, read with h5py: /photon_data, channels as stored) or a PicoQuant
PTU file (read with tttrlib: channel = routing channel + 1, time = macro time × resolution,
rounded to the picosecond as Herald does). Exit 0 when every bin agrees.
"""
import json
import sys

import numpy as np


def tags(path):
    if path.endswith(".h5"):
        import h5py
        with h5py.File(path, "r") as f:
            return f["photon_data/timestamps"][:].astype(np.int64), f["photon_data/detectors"][:].astype(np.int64)
    import tttrlib
    t = tttrlib.TTTR(path)
    res_ps = t.header.macro_time_resolution * 1e12
    times = np.rint(np.asarray(t.macro_times, dtype=np.float64) * res_ps).astype(np.int64)
    return times, np.asarray(t.routing_channels, dtype=np.int64) + 1


def histogram(times, channels, a, b, range_ps, bin_ps):
    ta = np.sort(times[channels == a])
    tb = np.sort(times[channels == b])
    nbins = (2 * range_ps + bin_ps - 1) // bin_ps
    counts = np.zeros(nbins, dtype=np.int64)
    lo = np.searchsorted(tb, ta - range_ps, side="left")
    hi = np.searchsorted(tb, ta + range_ps, side="left")
    width = int((hi - lo).max()) if len(ta) else 0
    for k in range(width):
        idx = lo + k
        ok = idx < hi
        d = tb[idx[ok]] - ta[ok]
        if a == b:
            d = d[d != 0]  # a tag is not paired with itself
        bins = (d + range_ps) // bin_ps
        bins = bins[(bins >= 0) & (bins < nbins)]
        counts += np.bincount(bins, minlength=nbins)[:nbins]
    return counts


def main():
    path, a, b, range_ps, bin_ps, report = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6]
    times, channels = tags(path)
    mine = histogram(times, channels, a, b, range_ps, bin_ps)
    if report == "--stored":
        import h5py
        with h5py.File(path, "r") as f:
            entries = [k for k in f["user/herald/analysis"] if k.endswith("_correlation")]
            if not entries:
                sys.exit("no correlation analysis in the file")
            series = f["user/herald/analysis/" + entries[0] + "/series"]
            theirs = series["counts"][:].astype(np.int64)
            tau = series["tau"][:]
            edges = (-range_ps + bin_ps * np.arange(len(theirs))) * 1e-12
            if len(tau) != len(theirs) or np.max(np.abs(tau - edges)) > 1e-15:
                sys.exit("the stored tau column is not the bins' lower edges")
    else:
        theirs = np.asarray(json.load(open(report))["counts"], dtype=np.int64)
    if mine.shape != theirs.shape:
        sys.exit(f"{len(mine)} bins recounted, {len(theirs)} from herald")
    bad = np.nonzero(mine != theirs)[0]
    if len(bad):
        i = bad[0]
        sys.exit(f"{len(bad)} bins differ; first at bin {i}: numpy {mine[i]}, herald {theirs[i]}")
    if mine.sum() == 0:
        sys.exit("the histogram is empty: nothing was compared")
    print(f"{len(mine)} bins agree, {mine.sum()} pairs")


if __name__ == "__main__":
    main()
