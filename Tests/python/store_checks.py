"""Checks of Herald's HDF5 files with independent readers: h5py and phconvert.

usage:
  store_checks.py layout DOC FILE...     phconvert accepts each FILE; every path in DOC's tables exists
  store_checks.py readme README DIR [NAME]  runs README's snippet NAME (readme-h5py) with DIR as working directory
  store_checks.py heralds FILE           recomputes every entanglement analysis of FILE from its stored
                                         heralds with numpy (rates, success probabilities, parity fidelities
                                         per pattern and together) and checks each against Herald's
  store_checks.py crash HERALD SCRIPT DIR [RUN-OPTION...]
  store_checks.py kill-trials HERALD SCRIPT DIR N [RUN-OPTION...]
                                         follows a live run over SWMR, kills the runner with SIGKILL,
                                         runs `herald recover`, and checks that every tag seen before
                                         the kill is intact and the run is marked incomplete
  store_checks.py units FILE...          every numeric dataset under /user/herald has a units attribute
  store_checks.py recount-oracle FILE    recounts the last analysis entry of FILE (a g2 or rates recount
                                         by `herald analyze --window`) from the raw tags with numpy, and
                                         checks every count and rate against Herald's
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


def check_units(path):
    """Every numeric dataset under /user/herald carries a non-empty `units` attribute."""
    missing, numeric = [], []
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset) and obj.dtype.kind in "iufcV":
                numeric.append(name)
                u = obj.attrs.get("units")
                if u is None or (u.decode() if isinstance(u, bytes) else str(u)) == "":
                    missing.append(name)
        f["user/herald"].visititems(visit)
    if missing:
        fail(f"{path}: numeric datasets without units: {missing}")
    return len(numeric)


def units(files):
    n = sum(check_units(p) for p in files)
    print(f"ok: all {n} numeric datasets under /user/herald in {len(files)} files carry units")


def layout(doc, files):
    for p in files:
        check_units(p)
    handles = [h5py.File(p, "r") for p in files]
    for p in files:
        phconvert_valid(p)
    for f in handles:  # every dataset reads with stock h5py
        f.visititems(lambda name, obj: obj[()] if isinstance(obj, h5py.Dataset) else None)
    missing = [p for p in documented_paths(doc) if not any(instances(f, p) for f in handles)]
    if missing:
        fail(f"documented but absent in {files}: {missing}")
    # Every string dataset under /user/herald reads as text through PyTables too (it cannot
    # read variable-length string datasets), and every one is fixed-length.
    import tables, warnings
    warnings.simplefilter("ignore")
    strings = 0
    for p in files:
        with h5py.File(p, "r") as f:
            names = []
            f["user/herald"].visititems(lambda n, o: names.append(n) if isinstance(o, h5py.Dataset) and o.dtype.kind in "SOU" else None)
            for n in names:
                if h5py.check_string_dtype(f["user/herald/" + n].dtype).length is None:
                    fail(f"{p}: /user/herald/{n} is a variable-length string dataset")
        with tables.open_file(p) as t:
            for n in names:
                value = t.get_node("/user/herald/" + n).read()
                flat = value.ravel() if hasattr(value, "ravel") else [value]
                if not all(isinstance(x, (bytes, np.bytes_)) for x in flat):
                    fail(f"{p}: PyTables read /user/herald/{n} as {type(flat[0]) if len(flat) else None}, not text")
                strings += 1
    print(f"ok: {len(documented_paths(doc))} documented paths present, phconvert accepts {len(files)} files, "
          f"PyTables reads all {strings} string datasets")


def readme(readme_path, workdir, name="readme-h5py"):
    text = open(readme_path, encoding="utf-8").read()
    m = re.search(r"<!-- snippet:" + re.escape(name) + r" -->\s*```python\n(.*?)```", text, re.S)
    if not m:
        fail(f"README has no <!-- snippet:{name} --> python block")
    os.chdir(workdir)
    exec(compile(m.group(1), "README.md snippet", "exec"), {})


PARITY = {"psi+": (1, 1, -1), "psi-": (-1, -1, -1), "phi+": (1, -1, 1), "phi-": (-1, 1, 1)}


def heralds(path):
    """Recomputes each entanglement analysis from the raw heralds, independently of Herald."""
    with h5py.File(path, "r") as f:
        analyses = f["user/herald/analysis"]
        checked = 0
        for name in sorted(analyses):
            a = analyses[name]
            if not name.endswith("_entanglement"):
                continue
            dataset = a.attrs["sweep"]
            h = f["user/herald/heralds"][dataset]
            nodes = h.attrs["nodes"].split(",")
            outer = a.attrs.get("outer_index", -1)
            sel = h["outer_index"][:] == outer if outer >= 0 else np.ones(h["time_ps"].shape[0], bool)
            psel = h["points/outer_index"][:] == outer if outer >= 0 else np.ones(h["points/attempts"].shape[0], bool)
            attempts = h["points/attempts"][:][psel].sum()
            seconds = (h["points/stop_ps"][:][psel] - h["points/start_ps"][:][psel]).sum() * 1e-12
            pattern = h["pattern"][:][sel]
            names = list(h["pattern_names"].asstr()[:])
            states = list(h["pattern_states"].asstr()[:])
            basis = [h[n]["basis"][:][sel] for n in nodes]
            outcome = [h[n]["outcome"][:][sel] for n in nodes]
            values = a["values"]

            def same(key, mine, tolerance=1e-12):
                if key not in values:
                    fail(f"{name}: Herald stored no {key}")
                theirs = values[key][()]
                if not abs(theirs - mine) <= tolerance * max(1.0, abs(mine)):
                    fail(f"{name}: {key} is {theirs}, numpy gives {mine}")

            heralding = np.isin(pattern, [i for i, s in enumerate(states) if s != "none"])
            same("attempts", attempts)
            same("heralds", heralding.sum())
            same("success_probability", heralding.sum() / attempts)
            same("herald_rate", heralding.sum() / seconds)

            def fidelity(mask):
                F = -0.5
                for b in range(3):
                    m = mask & (basis[0] == b) & (basis[1] == b)
                    want = np.array([PARITY[states[p]][b] for p in pattern[m]])
                    if len(want) == 0:
                        return None
                    F += np.mean(outcome[0][m] * outcome[1][m] == want) / 2
                return F

            for i, pname in enumerate(names):
                same(f"heralds.{pname}", np.sum(pattern == i))
                same(f"herald_rate.{pname}", np.sum(pattern == i) / seconds)
                if states[i] != "none":
                    F = fidelity(pattern == i)
                    if F is not None:
                        same(f"fidelity.{pname}", F)
            F = fidelity(heralding)
            if F is not None:
                same("fidelity", F)
            checked += 1
        if checked == 0:
            fail(f"{path} has no entanglement analysis")
        print(f"{checked} entanglement analyses recomputed from the stored heralds")


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
    check_units(path)
    r2 = subprocess.run([herald, "recover", path], capture_output=True, text=True)
    if r2.returncode != 0 or "already recovered" not in r2.stdout:
        fail(f"second recover should be a no-op: {r2.stdout} {r2.stderr}")
    print(f"ok: live reader saw {len(set(sizes))} sizes up to {seen} tags; after SIGKILL and recover "
          f"{len(t)} tags, {rows} points; plain open before recover {'succeeded' if opened_before else 'was refused'}")


def counts_rows(g):
    """The counts table of a run file as comparable tuples, in file order."""
    rows = []
    if "user/herald/counts" not in g:
        return rows
    for name in sorted(g["user/herald/counts"].keys()):
        c = g["user/herald/counts/" + name]
        cols = [c["point_index"][:], c["label"].asstr()[:], c["projection"].asstr()[:], c["channel_a"][:],
                c["channel_b"][:], c["coincidences"][:], c["accidentals"][:], c["duration_s"][:]]
        rows += [(name,) + tuple(x.item() if hasattr(x, "item") else x for x in r) for r in zip(*cols)]
    return rows


def kill_trials(herald, script, workdir, trials, *extra):
    """Kills realtime runs at `trials` times spread over the run and recovers each file.

    Each recovered file must hold a prefix of an uninterrupted run with the same seed (tags
    bit for bit, and the counts of every point flushed), the flush log must show that no more
    than 1 s of the run was unflushed when it was killed, and every tag of the last logged
    flush must be in the file.
    """
    trials = int(trials)
    base = [herald, "run", script, "--mock", "--realtime", "--seed", "11", *extra]
    ref_path = os.path.join(workdir, "reference.h5")
    if os.path.exists(ref_path):
        os.remove(ref_path)
    # The reference's length is timed from its file appearing, as the kills are.
    ref = subprocess.Popen(base + ["--out", ref_path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while not os.path.exists(ref_path) and ref.poll() is None:
        time.sleep(0.01)
    t0 = time.time()
    _, err = ref.communicate()
    if ref.returncode != 0:
        fail(f"reference run failed: {err.decode()[-800:]}")
    length = time.time() - t0
    with h5py.File(ref_path, "r") as g:
        ref_t, ref_d = g["photon_data/timestamps"][:], g["photon_data/detectors"][:]
        ref_counts = counts_rows(g)
        acquired = float(np.ravel(g["acquisition_duration"][()])[0])
    # A realtime run cannot end before its acquisitions have taken their time in real time;
    # the reference's wall length, measured on a loaded machine, may be far longer than a
    # trial's. Kills are spread over the shorter of the two, so they land inside the run.
    if acquired > 0:
        length = min(length, acquired)
    no_raw = "--no-raw-tags" in extra
    worst_gap, kept_points, finished_first = 0.0, [], 0
    for k in range(trials):
        path = os.path.join(workdir, f"killed-{k}.h5")
        runner = subprocess.Popen(base + ["--out", path], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while not os.path.exists(path):
            if time.time() > deadline or runner.poll() is not None:
                runner.kill()
                fail(f"trial {k}: no file appeared: {runner.stderr.read().decode()[-500:]}")
            time.sleep(0.01)
        # Kill times spread from just after the file appears to near the end of the run.
        time.sleep(0.05 + (length * 0.6) * k / max(1, trials - 1))
        if runner.poll() is not None:
            # Load varies between the reference and a trial (the suite runs beside it on
            # 2 cores): a trial that ended first has nothing to kill. At most a quarter may.
            finished_first += 1
            if finished_first > trials // 4:
                fail(f"{finished_first} of {trials} runs ended before their kill time; the reference lasted {length:.2f} s")
            os.remove(path)
            continue
        killed_at = time.time()
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
        rec = subprocess.run([herald, "recover", path], capture_output=True, text=True)
        if rec.returncode != 0:
            fail(f"trial {k}: herald recover failed: {rec.stderr}")
        with h5py.File(path, "r") as g:
            t, d = g["photon_data/timestamps"][:], g["photon_data/detectors"][:]
            flushes = g["user/herald/progress/flush_unix_s"][:]
            flushed_tag = g["user/herald/progress/flush_last_tag_ps"][:]
            rows = counts_rows(g)
            status = g["user/herald/run"].attrs["exit_status"]
        if status != "incomplete":
            fail(f"trial {k}: exit_status {status!r}")
        if len(flushes) == 0:
            fail(f"trial {k}: the flush log is empty")
        gap = killed_at - flushes[-1]
        worst_gap = max(worst_gap, gap)
        if gap > 1.0:
            fail(f"trial {k}: killed {gap:.3f} s after the last flush (at most 1 s may be lost)")
        if not no_raw:
            if not (np.array_equal(t, ref_t[:len(t)]) and np.array_equal(d, ref_d[:len(d)])):
                fail(f"trial {k}: the {len(t)} recovered tags are not a prefix of the uninterrupted run")
            if flushed_tag[-1] >= 0 and (len(t) == 0 or t[-1] < flushed_tag[-1]):
                fail(f"trial {k}: the last flush made tag {flushed_tag[-1]} ps durable, the file ends at {t[-1] if len(t) else None}")
        elif len(t) != 0:
            fail(f"trial {k}: a --no-raw-tags run stored {len(t)} tags")
        if rows != ref_counts[:len(rows)]:
            fail(f"trial {k}: the recovered counts are not a prefix of the uninterrupted run's")
        kept_points.append(len(rows))
        os.remove(path)
    if len({(r[0], r[1]) for r in ref_counts}) > 1 and max(kept_points) == 0:
        fail("no trial recovered any finished point's counts")
    print(f"ok: {trials - finished_first} kills ({finished_first} runs ended first) over a {length:.1f} s run; "
          f"worst time since the last flush {worst_gap:.3f} s; "
          f"recovered count rows per trial {kept_points}")


def in_window(a, b, half):
    """For each tag of a, how many tags of b lie within [t - half, t + half] (both sorted)."""
    return np.searchsorted(b, a + half, side="right") - np.searchsorted(b, a - half, side="left")


def recount_oracle(path):
    import json
    f = h5py.File(path, "r")
    h = f["user/herald"]
    plan = json.loads(h["reduction_plan"][()].decode())
    entries = sorted(h["analysis"].keys())
    entry = h["analysis"][entries[-1]]
    name = entries[-1].split("_", 1)[1]
    ts = f["photon_data/timestamps"][()]
    ch = f["photon_data/detectors"][()]
    acq = h["acquisitions"]
    acquisitions = [(a, b) for a, b, c in zip(acq["start_ps"][()], acq["stop_ps"][()], acq["counted"][()]) if c]
    sweep = entry.attrs["sweep"]
    sweep = sweep.decode() if isinstance(sweep, bytes) else str(sweep)
    step = next(a for a in plan["analyses"] if a["dataset"] == sweep and a["kind"] == name)
    window_s = float(entry.attrs["window_s"])
    window_ps = round(window_s * 1e12)
    table = h["sweeps"][sweep]
    points = list(zip(table["start_ps"][()], table["stop_ps"][()]))

    def point_tags(start, stop):
        """The tags of the point's counted acquisitions."""
        keep = np.zeros(len(ts), dtype=bool)
        for a, b in acquisitions:
            if a >= start and b <= stop:
                keep |= (ts >= a) & (ts < b)
        return ts[keep], ch[keep], sum((b - a) * 1e-12 for a, b in acquisitions if a >= start and b <= stop)

    values = {k: float(v[()]) for k, v in entry["values"].items()}
    series = {k: v[()] for k, v in entry["series"].items()} if "series" in entry else {}
    if name == "g2":
        herald, (s1, s2) = step["herald"], step["signals"]
        totals = np.zeros(4, dtype=np.int64)
        for start, stop in points:
            t, c, _ = point_tags(start, stop)
            th, t1, t2 = t[c == herald], t[c == s1], t[c == s2]
            # |Δt| ≤ window/2 in integer ps: Herald compares 2|Δt| ≤ window.
            n1 = in_window(th, t1, window_ps // 2) if window_ps % 2 == 0 else None
            n2 = in_window(th, t2, window_ps // 2) if window_ps % 2 == 0 else None
            if n1 is None:
                fail("the oracle handles even windows only")
            totals += [len(th), n1.sum(), n2.sum(), (n1 * n2).sum()]
        got = [values["heralds"], values["herald_and_1"], values["herald_and_2"], values["herald_and_1_and_2"]]
        if [int(x) for x in got] != [int(x) for x in totals]:
            fail(f"g2 counts: Herald {got}, numpy {totals.tolist()}")
        g2 = totals[0] * totals[3] / (totals[1] * totals[2])
        if abs(values["g2_0"] - g2) > 1e-12 * abs(g2):
            fail(f"g2(0): Herald {values['g2_0']}, numpy {g2}")
        print(f"ok: g2 at {window_s:g} s: heralds, herald&1, herald&2, triples {totals.tolist()}; g2(0) {g2:.6g}")
    elif name == "rates":
        pairs = [(p["a"], p["b"]) for p in step["counting"]["pairs"]]
        # The recount's delays: the entry's delays_s attribute ("channel:seconds,..."), else the plan's.
        text = entry.attrs.get("delays_s", b"")
        text = text.decode() if isinstance(text, bytes) else str(text)
        delays = {int(k): round(float(v) * 1e12) for k, v in (item.split(":") for item in text.split(",") if item)}
        for k, (start, stop) in enumerate(points):
            t, c, live = point_tags(start, stop)
            for channel in sorted({int(x) for x in c}):
                key = f"rate_{channel}"
                if key in series:
                    want = np.count_nonzero(c == channel) / live
                    if abs(series[key][k] - want) > 1e-12 * want:
                        fail(f"point {k} {key}: Herald {series[key][k]}, numpy {want}")
            for a, b in pairs:
                ta = np.sort(t[c == a] + delays.get(a, 0))
                tb = np.sort(t[c == b] + delays.get(b, 0))
                n = int(in_window(ta, tb, window_ps // 2).sum())
                key = f"coincidence_rate_{a}_{b}"
                if abs(series[key][k] * live - n) > 1e-6:
                    fail(f"point {k} {key}: Herald {series[key][k] * live:.3f} coincidences, numpy {n}")
        print(f"ok: rates at {window_s:g} s over {len(points)} points: every singles and pair rate matches numpy")
    else:
        fail(f"the oracle checks g2 and rates entries, not {name}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"layout": lambda: layout(args[0], args[1:]), "readme": lambda: readme(*args), "crash": lambda: crash(*args),
     "kill-trials": lambda: kill_trials(*args), "recount-oracle": lambda: recount_oracle(*args),
     "units": lambda: units(args), "heralds": lambda: heralds(*args)}[cmd]()
