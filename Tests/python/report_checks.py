"""Reads a `herald report` back and compares every plotted number with the HDF5 file.

    report_checks.py REPORT.html RUN.h5 SCREENSHOT.png   prints a JSON summary

The numbers come out of the SVG marks' data-* attributes (html.parser, no browser); the
expected ones from h5py, and the cross-correlation histograms from a numpy recount of the
raw tags. Then headless Chromium renders the file offline: no error, every chart drawn.
"""
import json
import os
import sys
from html.parser import HTMLParser

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


class Marks(HTMLParser):
    """Collects, for each plot, its series and their marks, plus figures, ρ bars and bands."""

    def __init__(self):
        super().__init__()
        self.stack = []  # (tag, attrs) of open elements
        self.figures = []  # tr.figure: (entry, key, value)
        self.rho = {}  # svg id -> list of (row, col, value)
        self.plots = {}  # (figure class, figure attrs json, series) -> [(x, value, error)]
        self.bands = []  # (kind, from, to)
        self.entry = None
        self.external = []
        self.scripts = 0

    def context(self, key):
        for tag, attrs in reversed(self.stack):
            if key in attrs:
                return attrs[key], attrs
        return None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        void = tag in ("meta", "link", "br", "img", "input")
        if tag == "script":
            self.scripts += 1
        for name in ("src", "href"):
            if name in attrs and not attrs[name].startswith(("data:", "#")):
                self.external.append(attrs[name])
        if tag == "table" and "data-entry" in attrs:
            self.entry = attrs["data-entry"]
        if tag == "tr" and "figure" in attrs.get("class", ""):
            self.figures.append((self.entry, attrs["data-key"], float(attrs["data-value"])))
        if "mark" in attrs.get("class", "").split():
            svg = next((a for t, a in reversed(self.stack) if t == "svg"), {})
            if "rho" in svg.get("class", ""):
                self.rho.setdefault(svg["id"], []).append((int(attrs["data-row"]), int(attrs["data-col"]), float(attrs["data-value"])))
            else:
                series, _ = self.context("data-series")
                fig = next((a for t, a in reversed(self.stack) if t == "figure"), {})
                key = (fig.get("class", svg.get("id", "")), json.dumps({k: v for k, v in fig.items() if k.startswith("data-")}), series, svg.get("id"))
                self.plots.setdefault(key, []).append(
                    (float(attrs["data-x"]), float(attrs["data-value"]), float(attrs["data-error"]) if "data-error" in attrs else None))
        if tag == "rect" and "band" in attrs.get("class", ""):
            self.bands.append((attrs["class"].split()[1], float(attrs["data-from"]), float(attrs["data-to"])))
        if not void:
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag):
        while self.stack:
            t, _ = self.stack.pop()
            if t == tag:
                break


def close(a, b, rel=1e-12):
    return abs(a - b) <= rel * max(1.0, abs(b))


def main(report, run, screenshot):
    html = open(report, encoding="utf-8").read()
    m = Marks()
    m.feed(html)
    problems = []
    checked = {"figures": 0, "rho": 0, "counts": 0, "series": 0, "histogram": 0, "bands": 0, "herald_rate": 0}
    if m.scripts or m.external:
        problems.append(f"not self-contained: {m.scripts} scripts, outside resources {m.external[:5]}")
    with h5py.File(run, "r") as f:
        herald = f["/user/herald"]
        # Every figure of every analysis, as stored.
        for entry, key, value in m.figures:
            stored = herald[f"analysis/{entry}/values/{key}"][()]
            stored = float(np.ravel(stored)[0])
            if not close(value, stored) and not (np.isnan(value) and np.isnan(stored)):
                problems.append(f"{entry} {key}: report {value} vs file {stored}")
            checked["figures"] += 1
        # ρ, element by element, real and imaginary parts.
        for svg_id, bars in m.rho.items():
            part, entry = ("real", svg_id[len("rho-real-"):]) if svg_id.startswith("rho-real-") else ("imag", svg_id[len("rho-imag-"):])
            rho = herald[f"analysis/{entry}/rho"][()]
            rho = rho.astype(complex) if rho.dtype.fields is None else rho["r"] + 1j * rho["i"]
            for i, j, v in bars:
                expected = rho[i, j].real if part == "real" else rho[i, j].imag
                if not close(v, expected):
                    problems.append(f"ρ {part}[{i},{j}] {v} vs {expected}")
                checked["rho"] += 1
        for (kind, fig_attrs, series, svg_id), marks in m.plots.items():
            attrs = json.loads(fig_attrs)
            if kind == "counts":
                sweep = attrs["data-sweep"].split(" @ ")[0]
                g = herald[f"counts/{sweep}"]
                a, b = (int(x) for x in series.split("-"))
                sel = (g["channel_a"][:] == a) & (g["channel_b"][:] == b)
                table = dict(zip(g["point_index"][:][sel].tolist(), g["coincidences"][:][sel].tolist()))
                for x, v, e in marks:
                    if table.get(int(x)) != v or not close(e, np.sqrt(v)):
                        problems.append(f"counts {sweep} {series} point {x}: {v} ± {e} vs {table.get(int(x))}")
                    checked["counts"] += 1
            elif kind == "series-plot":
                if series.endswith(" fit"):
                    continue
                entry = attrs["data-entry"]
                values = herald[f"analysis/{entry}/series/{series}"][:]
                for k, (x, v, e) in enumerate(marks):
                    if not close(v, values[k]):
                        problems.append(f"series {entry}/{series}[{k}] {v} vs {values[k]}")
                    checked["series"] += 1
            elif kind == "histogram":
                a, b = (int(x) for x in attrs["data-pair"].split("-"))
                bin_ps, range_ps = int(attrs["data-bin-ps"]), int(attrs["data-range-ps"])
                t = f["photon_data/timestamps"][:]
                d = f["photon_data/detectors"][:]
                ta, tb = t[d == a], t[d == b]
                lo = np.searchsorted(tb, ta - range_ps, side="left")
                hi = np.searchsorted(tb, ta + range_ps, side="left")
                counts = hi - lo
                # Every (a, b) pair within range: b's index runs from lo to hi for each a.
                starts = np.repeat(lo, counts)
                offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
                dt = tb[starts + offsets] - np.repeat(ta, counts)
                hist = np.bincount(((dt + range_ps) // bin_ps).astype(np.int64), minlength=2 * range_ps // bin_ps)[: 2 * range_ps // bin_ps]
                values = [v for _, v, _ in marks]
                if len(values) != len(hist) or any(int(v) != int(h) for v, h in zip(values, hist)):
                    diff = [(k, v, int(h)) for k, (v, h) in enumerate(zip(values, hist)) if int(v) != int(h)][:5]
                    problems.append(f"histogram {a}-{b}: {len(values)} bins vs numpy {len(hist)}; first differences {diff}")
                checked["histogram"] += len(values)
            elif svg_id and svg_id.startswith("heralds-"):
                name = svg_id[len("heralds-"):]
                p = herald[f"heralds/{name}/points"]
                start, stop, n = p["start_ps"][:], p["stop_ps"][:], p["heralds"][:]
                for k, (x, v, e) in enumerate(marks):
                    seconds = (stop[k] - start[k]) * 1e-12
                    if not close(v, n[k] / seconds, 1e-9) or not close(x, (start[k] + stop[k]) * 0.5e-12, 1e-9):
                        problems.append(f"herald rate {name}[{k}]: {v} at {x} vs {n[k] / seconds}")
                    checked["herald_rate"] += 1
        if "paused" in herald:
            expected = sorted(zip(herald["paused/start_ps"][:] * 1e-12, herald["paused/stop_ps"][:] * 1e-12))
            shown = sorted({(a, b) for kind, a, b in m.bands if kind == "pause"})
            if len(shown) != len(expected) or any(not close(x, y, 1e-9) or not close(u, v, 1e-9) for (x, u), (y, v) in zip(shown, expected)):
                problems.append(f"pause bands {shown} vs file {expected}")
            checked["bands"] += len(shown)
    # Chromium renders it offline without an error.
    from browser import Browser
    browser = Browser(width=1100, height=1400)
    try:
        browser.load("file://" + os.path.abspath(report))
        drawn = browser.evaluate("""Array.from(document.querySelectorAll('svg')).map(s => {
            const b = s.getBoundingClientRect(); return [s.id, b.width > 100 && b.height > 50, s.querySelectorAll('.mark,polyline').length]; })""")
        browser.screenshot(screenshot)
        errors = browser.errors
    finally:
        browser.close()
    if errors:
        problems.append("browser errors: " + "; ".join(errors))
    blank = [d for d in drawn if not d[1]]
    if blank or not drawn:
        problems.append(f"charts not drawn: {blank or 'none at all'}")
    print(json.dumps({"problems": problems, "checked": checked, "charts": len(drawn)}))


if __name__ == "__main__":
    main(*sys.argv[1:4])
