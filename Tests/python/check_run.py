"""Independent read-back of a Herald run file with h5py and numpy.

Usage: check_run.py RUN.h5 REPORT.json

Checks that what Herald reported (tags, per-setting coincidences, density matrix,
fidelity, exit status) is what the file holds, recomputing coincidences from the
raw tags with numpy rather than trusting Herald's own counts. Exits non-zero with
a message on the first mismatch.
"""
import json
import sys

import h5py
import numpy as np


def fail(msg):
    print(f"check_run: {msg}", file=sys.stderr)
    sys.exit(1)


def coincidences(ta, tb, window_ps):
    """Pairs with 2|ta - tb| <= window, by binary search (independent of Herald's two-pointer loop)."""
    half = window_ps / 2.0
    lo = np.searchsorted(tb, ta - half, side="left")
    hi = np.searchsorted(tb, ta + half, side="right")
    return int(np.sum(hi - lo))


def main(path, report_path):
    report = json.load(open(report_path))
    with h5py.File(path, "r") as f:
        ts = f["photon_data/timestamps"][:]
        det = f["photon_data/detectors"][:]
        unit = f["photon_data/timestamps_specs/timestamps_unit"][()]
        if unit != 1e-12:
            fail(f"timestamps_unit is {unit}, expected 1e-12")
        if ts.dtype != np.int64 or len(ts) != report["tags"]:
            fail(f"{len(ts)} tags of {ts.dtype} in the file, report says {report['tags']}")
        if np.any(np.diff(ts) < 0):
            fail("timestamps are not sorted")
        if not set(np.unique(det)) <= {1, 2, 3, 4}:
            fail(f"unexpected detector ids {np.unique(det)}")
        run = f["user/herald/run"].attrs
        if run["exit_status"] != report["status"]:
            fail(f"exit_status {run['exit_status']} != {report['status']}")
        if "tomography:" not in f["user/herald/script"].asstr()[()]:
            fail("script text missing")

        sweep = f["user/herald/sweeps/tomography"]
        starts, stops = sweep["start_ps"][:], sweep["stop_ps"][:]
        counts = f["user/herald/counts/tomography"]
        stored = counts["coincidences"][:]
        ca, cb, idx = counts["channel_a"][:], counts["channel_b"][:], counts["point_index"][:]
        analyses = sorted(f["user/herald/analysis"].keys())
        if len(analyses) != len(report["analyses"]):
            fail(f"{len(analyses)} analyses in file, {len(report['analyses'])} reported")
        window_ps = float(f["user/herald/analysis"][analyses[0]].attrs["window_s"]) * 1e12
        for k in range(len(stored)):
            sel = (ts >= starts[idx[k]]) & (ts < stops[idx[k]])
            ta, tb = ts[sel & (det == ca[k])], ts[sel & (det == cb[k])]
            n = coincidences(ta, tb, window_ps)
            if n != stored[k]:
                fail(f"row {k}: numpy counts {n} coincidences, file has {stored[k]}")

        for name, rep in zip(analyses, report["analyses"]):
            g = f["user/herald/analysis"][name]
            rho = g["rho"][()]
            if rho.dtype != np.complex128 or rho.shape != (4, 4):
                fail(f"rho is {rho.dtype} {rho.shape}")
            expected = np.array(rep["rhoReal"]).reshape(4, 4) + 1j * np.array(rep["rhoImag"]).reshape(4, 4)
            if not np.allclose(rho, expected, atol=1e-12):
                fail("density matrix differs from the report")
            if not np.allclose(rho, rho.conj().T, atol=1e-12) or abs(np.trace(rho) - 1) > 1e-9:
                fail("density matrix is not Hermitian with unit trace")
            if np.linalg.eigvalsh(rho).min() < -1e-9:
                fail("density matrix is not positive")
            phi = np.array([1, 0, 0, 1]) / np.sqrt(2)
            fid = float(np.real(phi.conj() @ rho @ phi))
            if abs(fid - g["values/fidelity_phi+"][()]) > 1e-9 or abs(fid - rep["values"]["fidelity_phi+"]) > 1e-9:
                fail(f"fidelity recomputed from rho {fid} differs from the file/report")
    print(f"check_run: OK ({len(ts)} tags, {len(stored)} count rows, {len(analyses)} analyses)")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
