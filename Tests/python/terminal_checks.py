"""Runs a command in a real terminal (a detached tmux session, 180 × 50) and prints, as
JSON, the screen as tmux rendered it every 100 ms until the command ends, then the last
screen. Python rather than Foundation's Process: the tmux server the client forks would
inherit Process's internal descriptors and keep the client from ever being seen to exit.

    terminal_checks.py OUTDIR -- COMMAND ARG...
"""
import json
import os
import shlex
import subprocess
import sys
import time
import uuid

outdir = sys.argv[1]
command = sys.argv[sys.argv.index("--") + 1:]
socket = "herald-test-" + uuid.uuid4().hex[:8]
done = os.path.join(outdir, "done")
shell = shlex.join(command) + f"; echo exit=$? > {shlex.quote(done)}; sleep 600"


def tmux(*args, capture=False):
    return subprocess.run(["tmux", "-L", socket, *args], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          text=True, timeout=30)


try:
    tmux("new-session", "-d", "-x", "180", "-y", "50", shell)
    screens = []
    deadline = time.monotonic() + 600
    while not os.path.exists(done) and time.monotonic() < deadline:
        screens.append(tmux("capture-pane", "-p", capture=True).stdout.split("\n"))
        time.sleep(0.1)
    time.sleep(0.2)
    # The whole history, not only the visible rows: the summary may push the log off screen.
    last = tmux("capture-pane", "-p", "-S", "-", capture=True).stdout
    status = open(done).read().strip() if os.path.exists(done) else "exit=timeout"
finally:
    tmux("kill-server")
bottoms = []
for screen in screens:
    lines = [l for l in screen if l.strip()]
    if lines and (not bottoms or bottoms[-1] != lines[-1]):
        bottoms.append(lines[-1])
print(json.dumps({"status": status, "bottoms": bottoms, "last": last}))
