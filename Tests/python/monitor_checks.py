"""Independent checks of `herald run --monitor`: a real headless Chromium reading the live
page, and a real Prometheus server scraping /metrics. Each check runs herald itself, then
compares what the page or Prometheus showed with the HDF5 file h5py reads afterwards.

    monitor_checks.py page HERALD SCRIPT OUTDIR        prints a JSON summary
    monitor_checks.py prometheus HERALD SCRIPT OUTDIR  prints a JSON summary
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import h5py
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HeraldRun:
    """`herald run … --monitor`, with the address it printed and its stderr kept."""

    def __init__(self, herald, script, out, monitor, extra=()):
        self.out = out
        self.process = subprocess.Popen(
            [herald, "run", script, "--mock", "--seed", "3", "--realtime", "--out", out, "--overwrite", "--json",
             "--monitor", monitor, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.stderr_lines = []
        self.url = None
        self.ready = threading.Event()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        self.stdout = None

    def _read_stderr(self):
        for line in self.process.stderr:
            self.stderr_lines.append(line)
            m = re.search(r"monitor: (http://\S+?)/", line)
            if m and not self.ready.is_set():
                self.url = m.group(1)
                self.ready.set()
        self.ready.set()

    def wait_ready(self):
        self.ready.wait(120)
        if self.url is None:
            raise SystemExit("herald did not start its monitor:\n" + "".join(self.stderr_lines))
        return self.url

    def finish(self):
        self.stdout, _ = self.process.communicate(timeout=600)
        if self.process.returncode != 0:
            raise SystemExit(f"herald run exited {self.process.returncode}:\n" + "".join(self.stderr_lines))
        return json.loads(self.stdout)


def file_point_rates(path):
    """Each counted point's pair rates from the file, {point index: {"1-3": rate}}, and totals."""
    with h5py.File(path, "r") as f:
        p = f["/user/herald/progress"]
        points = p["counted_point"][:]
        durations = p["counted_duration_s"][:]
        rows = p["pair_row"][:]
        a, b, n = p["pair_channel_a"][:], p["pair_channel_b"][:], p["pair_coincidences"][:]
        rates = {}
        totals = {}
        for r, ca, cb, c in zip(rows, a, b, n):
            key = f"{ca}-{cb}"
            rates.setdefault(int(points[r]), {})[key] = c / durations[r]
            totals[key] = totals.get(key, 0) + int(c)
        pauses = list(zip(p["paused_start_ps"][:] * 1e-12, p["paused_stop_ps"][:] * 1e-12))
        tags = int(f["/user/herald/run"].attrs["tag_count"])
    return rates, totals, pauses, tags


PAGE_STATE = """(() => {
  const q = s => document.querySelector(s);
  const num = el => el && el.dataset.value !== "" ? Number(el.dataset.value) : null;
  const pairs = {};
  document.querySelectorAll("#pairs tr[data-pair]").forEach(tr => {
    pairs[tr.dataset.pair] = {rate: num(tr.querySelector(".rate")), count: num(tr.querySelector(".count"))};
  });
  const points = [];
  document.querySelectorAll("svg.result-plot circle").forEach(c => points.push([Number(c.dataset.x), Number(c.dataset.value)]));
  const series = [];
  document.querySelectorAll("svg.result-plot text").forEach(t => series.push(t.textContent));
  return {
    version: Number(document.body.dataset.version || -1),
    state: q("#state").dataset.value || null,
    stateText: q("#state").textContent,
    pause: q("#pause").style.display !== "none" ? q("#pause").textContent : null,
    pauseInterlock: q("#pause").dataset.interlock || null,
    interlockOk: num(q('#interlocks tr[data-interlock="pump-lock"]')),
    pointsDone: num(q("#points-done")), pointsTotal: num(q("#points-total")),
    tags: num(q("#tags")), eta: q("#eta").textContent,
    pairs, resultPoints: points, resultSeries: series,
    singlesRows: document.querySelectorAll("#singles tr[data-channel]").length,
    rhoBars: document.querySelectorAll(".rho-bar").length,
    figures: Array.from(document.querySelectorAll("tr.figure")).map(tr => [tr.dataset.key, Number(tr.dataset.value)]),
  };
})()"""


def check_page(herald, script, outdir):
    from browser import Browser

    out = os.path.join(outdir, "monitor-run.h5")
    # The browser first: Chromium can take seconds to start on a loaded 2-core machine, and
    # the run's pause comes 1.5 s after it starts.
    browser = Browser()
    samples = []
    paused_sample = None
    try:
        run = HeraldRun(herald, script, out, "127.0.0.1:0", extra=["--monitor-hold", "3"])
        url = run.wait_ready()
        browser.load(url + "/")
        while True:
            s = browser.evaluate(PAGE_STATE)
            samples.append(s)
            if s["pause"] and paused_sample is None:
                paused_sample = s
                browser.screenshot(os.path.join(outdir, "monitor-paused.png"))
            if s["state"] == "stopped" and s["rhoBars"] > 0:
                break
            if run.process.poll() is not None and len(samples) > 5 and samples[-1]["version"] == samples[-5]["version"]:
                break
            time.sleep(0.1)
        final = samples[-1]
        browser.screenshot(os.path.join(outdir, "monitor-final.png"))
        errors = list(browser.errors)
    finally:
        browser.close()
    report = run.finish()
    rates, totals, pauses, tags = file_point_rates(out)

    problems = []
    if paused_sample is None:
        problems.append("the page never showed the pause")
    else:
        if paused_sample["pauseInterlock"] != "pump-lock" or "PAUSED" not in paused_sample["pause"]:
            problems.append(f"pause banner: {paused_sample['pause']!r}")
        if paused_sample["state"] != "paused" or paused_sample["interlockOk"] != 0:
            problems.append(f"during the pause the state was {paused_sample['state']}, interlock {paused_sample['interlockOk']}")
        m = re.search(r"since ([0-9.]+) s", paused_sample["pause"])
        if not pauses or not m or abs(float(m.group(1)) - pauses[0][0]) > 1e-6:
            problems.append(f"pause start on the page {m and m.group(1)} vs the file's {pauses[:1]}")
    # Every point the page plotted, at every moment sampled, is the file's rate for that point.
    compared = 0
    for s in samples:
        for (index, value) in s["resultPoints"]:
            expected = [r for r in rates.get(int(index), {}).values()]
            if not any(abs(value - e) <= 1e-9 * max(1, e) for e in expected):
                problems.append(f"point {index}: page rate {value} is none of the file's {expected}")
            compared += 1
    points_seen = sorted({s["pointsDone"] for s in samples if s["pointsDone"] is not None})
    if final["pointsDone"] != len(rates) or final["pointsTotal"] != len(rates):
        problems.append(f"final point counter {final['pointsDone']}/{final['pointsTotal']} vs {len(rates)} points in the file")
    for pair, total in totals.items():
        shown = final["pairs"].get(pair, {}).get("count")
        if shown != total:
            problems.append(f"pair {pair}: page total {shown} vs file {total}")
    if final["tags"] != tags or report["tags"] != tags:
        problems.append(f"tags: page {final['tags']}, report {report['tags']}, file {tags}")
    fidelity = dict(final["figures"]).get("fidelity_phi+")
    run_fidelity = next((a["values"].get("fidelity_phi+") for a in report["analyses"] if a["name"] == "tomography"), None)
    if fidelity is None or run_fidelity is None or abs(fidelity - run_fidelity) > 1e-12:
        problems.append(f"fidelity on the page {fidelity} vs the run's {run_fidelity}")
    if final["rhoBars"] != 32:
        problems.append(f"{final['rhoBars']} ρ bars (expected 2 × 16)")
    if errors:
        problems.append("browser errors: " + "; ".join(errors))
    print(json.dumps({
        "problems": problems, "samples": len(samples), "compared": compared, "points_seen": points_seen,
        "paused": paused_sample, "final_state": final["stateText"], "screenshots": ["monitor-paused.png", "monitor-final.png"],
    }, indent=1, default=str))


def query(prom, expr):
    url = f"http://127.0.0.1:{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    data = json.load(urllib.request.urlopen(url, timeout=10))
    return data["data"]["result"]


def check_prometheus(herald, script, outdir):
    prometheus = shutil.which("prometheus")
    if not prometheus:
        raise SystemExit("no prometheus on PATH: `make test` installs Debian's prometheus package")
    token = "herald-test-token-0123456789"
    monitor_port, prom_port = free_port(), free_port()
    with open(os.path.join(outdir, "token"), "w") as f:
        f.write(token)
    config = os.path.join(outdir, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global: {{scrape_interval: 1s, scrape_timeout: 900ms}}
scrape_configs:
  - job_name: herald
    metrics_path: /metrics
    authorization: {{credentials_file: {os.path.join(outdir, 'token')}}}
    static_configs: [{{targets: ['127.0.0.1:{monitor_port}']}}]
""")
    server = subprocess.Popen(
        [prometheus, f"--config.file={config}", f"--storage.tsdb.path={os.path.join(outdir, 'tsdb')}",
         f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(outdir, "prometheus.log"), "w"))
    problems = []
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("prometheus did not become ready: " + open(os.path.join(outdir, "prometheus.log")).read()[-2000:])
                time.sleep(0.2)
        out = os.path.join(outdir, "metrics-run.h5")
        run = HeraldRun(herald, script, out, f"127.0.0.1:{monitor_port}", extra=["--monitor-token", token, "--monitor-hold", "6"])
        url = run.wait_ready()
        # Without the token the monitor refuses, page and metrics alike.
        for path in ("/metrics", "/", "/state.json"):
            try:
                urllib.request.urlopen(url + path, timeout=5)
                problems.append(f"{path} answered without the token")
            except urllib.error.HTTPError as e:
                if e.code != 401:
                    problems.append(f"{path} without the token: HTTP {e.code}, expected 401")
        # The feed likewise: refused without the token, a snapshot with it.
        import websocket
        ws_url = url.replace("http://", "ws://") + "/ws"
        try:
            websocket.create_connection(ws_url, timeout=10).close()
            problems.append("/ws upgraded without the token")
        except websocket.WebSocketBadStatusException as e:
            if e.status_code not in (400, 401):
                problems.append(f"/ws without the token: HTTP {e.status_code}")
        feed = websocket.create_connection(ws_url + "?token=" + token, timeout=30)
        first = {}
        for _ in range(200):  # the monitor is up before the run starts: wait for its first events
            first = json.loads(feed.recv())
            if first.get("run"):
                break
        feed.close()
        if first.get("run", {}).get("name") != "paused-tomography":
            problems.append(f"/ws with the token sent {str(first)[:200]}")
        report = run.finish()
        rates, totals, pauses, tags = file_point_rates(out)
        # The last scrapes came while the monitor held the final state.
        results = {}
        # Final values only: which moments of the run a 1 s scrape happened to catch is timing.
        # herald has exited by now, so the series are stale: each one's last sample is asked for.
        for expr in ("herald_tags_total", "herald_points_done_total", "herald_pauses_total",
                     "herald_coincidence_rate_hz", "herald_run_state{state=\"stopped\"}"):
            r = query(prom_port, f"last_over_time({expr}[5m])")
            results[expr] = float(r[0]["value"][1]) if r else None
        if results["herald_tags_total"] != tags or report["tags"] != tags:
            problems.append(f"herald_tags_total {results['herald_tags_total']} vs run {report['tags']}, file {tags}")
        if results["herald_points_done_total"] != 16:
            problems.append(f"herald_points_done_total {results['herald_points_done_total']} vs 16")
        if results["herald_pauses_total"] != len(pauses) or not pauses:
            problems.append(f"herald_pauses_total {results['herald_pauses_total']} vs {len(pauses)} pauses in the file")
        # The last point's rate of each pair, as the file counted it.
        last = rates[max(rates)]
        for r in query(prom_port, "last_over_time(herald_coincidence_rate_hz[5m])"):
            pair, value = r["metric"]["pair"], float(r["value"][1])
            if abs(value - last[pair]) > 1e-9 * last[pair]:
                problems.append(f"herald_coincidence_rate_hz{{pair={pair}}} {value} vs the file's last point {last[pair]}")
        if results["herald_run_state{state=\"stopped\"}"] != 1:
            problems.append("the final scrape did not see the run stopped")
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/api/v1/targets", timeout=10))
        health = [t["health"] for t in targets["data"]["activeTargets"]]
    finally:
        server.terminate()
        server.wait(30)
    print(json.dumps({"problems": problems, "metrics": results, "targets": health, "tags": tags}, indent=1))


def check_live_file(herald, script, outdir):
    """A SWMR reader, polling while the run goes, finds each analysis in
    /user/herald/progress/results_json before the run ends, equal to the final file's."""
    out = os.path.join(outdir, "live-results.h5")
    run = subprocess.Popen([herald, "run", script, "--mock", "--seed", "3", "--realtime", "--out", out, "--overwrite", "--json"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen, summary_tables_seen, polls = None, False, 0
    deadline = time.monotonic() + 300
    while run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            with h5py.File(out, "r", libver="latest", swmr=True) as f:
                polls += 1
                p = f["/user/herald/progress"]
                # The ends first: a result appended between the two reads is then ignored, not cut.
                ends = p["results_end"][:]
                raw = bytes(p["results_json"][:])
                ends = [e for e in ends if e <= len(raw)]
                if len(ends) and seen is None:
                    starts = [0, *ends[:-1]]
                    seen = [json.loads(raw[a:b]) for a, b in zip(starts, ends)]
                    summary_tables_seen = "analysis" in f["/user/herald"]
        except (OSError, KeyError):
            continue  # not yet created, or not yet in SWMR mode
    stdout, stderr = run.communicate(timeout=120)
    problems = []
    if run.returncode != 0:
        problems.append(f"run exited {run.returncode}: {stderr[-2000:]}")
    if seen is None:
        problems.append(f"no result appeared in results_json while the run went ({polls} reads)")
    else:
        if summary_tables_seen:
            problems.append("the summary tables already existed: nothing was shown to be live")
        report = json.loads(stdout)
        final = {a["name"]: a for a in report["analyses"]}
        with h5py.File(out, "r") as f:
            stored = {k.split("_", 1)[1]: f[f"/user/herald/analysis/{k}"] for k in f["/user/herald/analysis"]}
            for r in seen:
                entry = stored.get(r["name"])
                if entry is None:
                    problems.append(f"live result {r['name']} is not in the final file")
                    continue
                for key, value in r["values"].items():
                    v = float(np.ravel(entry["values"][key][()])[0])
                    if not (value == v or (isinstance(value, str) and value == "nan" and np.isnan(v))):
                        problems.append(f"{r['name']} {key}: live {value} vs file {v}")
                rho = entry["rho"][()] if "rho" in entry else None
                if rho is not None and rho.dtype.fields is not None:
                    rho = rho["r"] + 1j * rho["i"]
                if rho is not None and (list(rho.real.ravel()) != r["rho_real"] or list(rho.imag.ravel()) != r["rho_imag"]):
                    problems.append(f"{r['name']}: live rho differs from the file's")
                if r["values"] != {k: v for k, v in final[r["name"]]["values"].items()}:
                    problems.append(f"{r['name']}: live values differ from the run's report")
    print(json.dumps({"problems": problems, "polls": polls, "live": [r["name"] for r in seen or []]}))


if __name__ == "__main__":
    command, herald, script, outdir = sys.argv[1:5]
    os.makedirs(outdir, exist_ok=True)
    {"page": check_page, "prometheus": check_prometheus, "live-file": check_live_file}[command](herald, script, outdir)
