"""Checks of Herald's HDF5 files with independent readers: h5py and phconvert.

usage:
  store_checks.py layout DOC FILE...     phconvert accepts each FILE; every path in DOC's tables exists
  store_checks.py readme README DIR      runs README's h5py snippet with DIR as working directory
  store_checks.py crash HERALD SCRIPT DIR [RUN-OPTION...]
                                         follows a live run over SWMR, kills the runner with SIGKILL,
                                         runs `herald recover`, and checks that every tag seen before
                                         the kill is intact and the run is marked incomplete
Exits non-zero with a message on the first failure.
"""
import os
import re
import signal
import subprocess
import sys
import time
import warnings

import h5py
import numpy as np


def fail(msg):
    sys.exit(f"FAIL: {msg}")


def phconvert_valid(path):
    import tables
    from phconvert import hdf5

    warnings.simplefilter("ignore")  # PyTables warns about Herald's variable-length strings under /user
    with tables.open_file(path) as f:
        try:
            hdf5.assert_valid_photon_hdf5(f, warnings=False, strict_description=True)
        except hdf5.Invalid_PhotonHDF5 as e:
            fail(f"phconvert rejects {path}: {e}")


def documented_paths(doc):
    """Paths in the first column of the doc's tables, braces expanded."""
    out = []
    for line in open(doc, encoding="utf-8"):
        m = re.match(r"\| `([^`]+)`", line)
        if not m:
            continue
        for raw in m.group(1).split("`, `"):
            path = raw.split("@")[0]
            brace = re.search(r"\{([^}]*)\}", path)
            names = brace.group(1).split(",") if brace else [None]
            for n in names:
                out.append(path[: brace.start()] + n + path[brace.end():] if brace else path)
    return out


def instances(f, path):
    """Concrete paths for a documented path, expanding <placeholder> and NNN_<name> segments."""
    parts = [p for p in path.split("/") if p]
    found = [""]
    for p in parts:
        nxt = []
        for base in found:
            if "<" in p or "NNN" in p:
                group = f[base or "/"]
                if isinstance(group, h5py.Group):
                    nxt += [f"{base}/{k}" for k in group]
            elif f"{base}/{p}" in f:
                nxt.append(f"{base}/{p}")
        found = nxt
    return found


def layout(doc, files):
    handles = [h5py.File(p, "r") for p in files]
    for p in files:
        phconvert_valid(p)
    for f in handles:  # every dataset reads with stock h5py
        f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    missing = [p for p in documented_paths(doc) if not any(instances(f, p) for f in handles)]
    if missing:
        fail(f"documented but absent in {files}: {missing}")
    print(f"ok: {len(documented_paths(doc))} documented paths present, phconvert accepts {len(files)} files")


def readme(readme_path, workdir):
    text = open(readme_path, encoding="utf-8").read()
    m = re.search(r"<!-- snippet:readme-h5py -->\s*```python\n(.*?)```", text, re.S)
    if not m:
        fail("README has no <!-- snippet:readme-h5py --> python block")
    os.chdir(workdir)
    exec(compile(m.group(1), "README.md snippet", "exec"), {})


def crash(herald, script, workdir, *extra):
    path = os.path.join(workdir, "killed.h5")
    if os.path.exists(path):
        os.remove(path)  # the reader must not pick up an old file while the runner starts
    runner = subprocess.Popen(
        [herald, "run", script, "--mock", "--realtime", "--seed", "5", "--set", "integration=300ms", "--out", path, *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    f = None
    while f is None:
        if time.time() > deadline or runner.poll() is not None:
            runner.kill()
            fail(f"no SWMR-readable file appeared: {runner.stderr.read().decode()[-500:]}")
        try:
            f = h5py.File(path, "r", libver="latest", swmr=True)
        except OSError:
            time.sleep(0.05)
    ts, det = f["photon_data/timestamps"], f["photon_data/detectors"]
    points = f["user/herald/progress/point_index"]
    sizes = []
    while len(set(sizes)) < 4 or points.shape[0] < 2:  # the reader must see the file grow, live
        if time.time() > deadline or runner.poll() is not None:
            fail(f"live reader saw sizes {sorted(set(sizes))} and {points.shape[0]} points before the run ended")
        time.sleep(0.1)
        ts.refresh(); det.refresh(); points.refresh()
        sizes.append(min(ts.shape[0], det.shape[0]))
    seen = sizes[-1]
    seen_ts, seen_det = ts[:seen], det[:seen]
    seen_points = points.shape[0]
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait()
    f.close()
    try:
        h5py.File(path, "r").close()
        opened_before = True
    except OSError:
        opened_before = False
    r = subprocess.run([herald, "recover", path], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"herald recover failed: {r.stderr}")
    with h5py.File(path, "r") as g:
        t, d = g["photon_data/timestamps"][:], g["photon_data/detectors"][:]
        run = g["user/herald/run"].attrs
        if len(t) < seen or len(d) != len(t):
            fail(f"recovered {len(t)} timestamps / {len(d)} detectors; the live reader had seen {seen}")
        if not (np.array_equal(t[:seen], seen_ts) and np.array_equal(d[:seen], seen_det)):
            fail("tags seen before the kill changed after recovery")
        if np.any(np.diff(t) < 0):
            fail("recovered timestamps are not in order")
        if run["exit_status"] != "incomplete":
            fail(f"exit_status is {run['exit_status']!r}, not 'incomplete'")
        rows = g["user/herald/sweeps/tomography/index"].shape[0]
        if rows < seen_points:
            fail(f"sweep table has {rows} points; {seen_points} had finished before the kill")
        labels = list(g["user/herald/sweeps/tomography/label"].asstr()[:])
        if labels[:2] != ["HH", "HV"]:
            fail(f"sweep labels not rebuilt: {labels[:3]}")
        if int(run["tag_count"]) != len(t) or g["acquisition_duration"][()] <= 0:
            fail("tag_count or acquisition_duration not set by recovery")
    phconvert_valid(path)
    r2 = subprocess.run([herald, "recover", path], capture_output=True, text=True)
    if r2.returncode != 0 or "nothing to recover" not in r2.stdout:
        fail(f"second recover should be a no-op: {r2.stdout} {r2.stderr}")
    print(f"ok: live reader saw {len(set(sizes))} sizes up to {seen} tags; after SIGKILL and recover "
          f"{len(t)} tags, {rows} points; plain open before recover {'succeeded' if opened_before else 'was refused'}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"layout": lambda: layout(args[0], args[1:]), "readme": lambda: readme(*args), "crash": lambda: crash(*args)}[cmd]()
