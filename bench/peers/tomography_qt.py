"""Peer: the Kwiat group's Quantum-Tomography package on the same counts as herald-bench.

Usage: tomography_qt.py COUNTS.csv [RESAMPLES]  -> one JSON object on stdout.
Timing: median of repeated MLE fits; Monte-Carlo time is measured on RESAMPLES refits
and reported per resample (1000 of them take minutes in Python).
"""
import csv
import json
import statistics
import sys
import time

import numpy as np
import QuantumTomography as qt

S = 2 ** -0.5
# Herald's convention: R = (H - iV)/sqrt2, L = (H + iV)/sqrt2 (kets, photon A first).
KETS = {"H": [1, 0], "V": [0, 1], "D": [S, S], "A": [S, -S], "R": [S, -1j * S], "L": [S, 1j * S]}


def main(path, resamples):
    rows = list(csv.DictReader(open(path)))
    measurements = np.array([KETS[r["setting"][0]] + KETS[r["setting"][1]] for r in rows], dtype=complex)
    counts = np.array([float(r["counts"]) for r in rows])
    t = qt.Tomography()
    t.conf["NQubits"] = 2
    t.conf["NDetectors"] = 1
    t.conf["Method"] = "MLE"
    rho, intensity, _ = t.StateTomography(measurements, counts)
    times = []
    for _ in range(7):
        start = time.perf_counter()
        t.StateTomography(measurements, counts)
        times.append(time.perf_counter() - start)
    phi = np.array([1, 0, 0, 1]) / np.sqrt(2)
    fidelity = float(np.real(phi.conj() @ rho @ phi))
    # Monte-Carlo error estimation: the package's own resampling and refitting.
    start = time.perf_counter()
    t.conf["DoErrorEstimation"] = resamples
    t.getProperties(resamples)
    mc = (time.perf_counter() - start) / resamples
    print(json.dumps({"metric": "tomography", "peer": "Quantum-Tomography " + getattr(qt, "__version__", ""),
                      "mle_fit_s": statistics.median(times), "monte_carlo_per_resample_s": mc,
                      "fidelity": fidelity, "intensity": float(intensity)}))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 20)
