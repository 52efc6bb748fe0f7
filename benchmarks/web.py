"""The review page's cost to the daemon: CPU % and RSS with `web:` off, on with the page closed,
open and refreshing, and while a person triages (issue 10, "it must not disturb listening").

    .venv/bin/python benchmarks/web.py [--seconds 60] [--warmup 10] [--model flysong]

Each mode starts a fresh daemon on the demo source (synthetic audio in real time) with the
bundled model, clips and sound levels on, waits `--warmup` s, then measures the daemon's own
CPU time (utime + stime from /proc, all its threads) over `--seconds` and its RSS (VmRSS at
the end, VmHWM the peak). The browser is scripted from this process, so its work is not
counted:

- `off`: `web: {enabled: false}`.
- `closed`: the page served, nobody looking.
- `open`: what the open page asks for every 2 s: the Now tab (`/api/now`, `/api/status`) and
  the Detections tab (`/api/events`), alternately, as a person switching between them.
- `triage`: a verdict every 0.5 s, each event's spectrogram PNG and WAV fetched first (as the
  page does when the row is shown), the event list polled every 2 s.

Prints one row per mode. On a shared machine, compare the modes of one run only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
MODES = ("off", "closed", "open", "triage")
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND  # utime, stime


def memory_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Page:
    """A scripted browser: the requests the page makes, with its CSRF token."""

    def __init__(self, base: str) -> None:
        self.base = base
        html = urllib.request.urlopen(base + "/").read().decode()
        self.csrf = html.split('name="csrf-token" content="', 1)[1].split('"', 1)[0]
        self.judged: set[str] = set()

    def get(self, path: str) -> bytes:
        return bytes(urllib.request.urlopen(self.base + path, timeout=30).read())

    def judge_next(self) -> None:
        events = json.loads(self.get("/api/events?verdict=none"))
        todo = [e for e in events if e["id"] not in self.judged]
        if not todo:
            return
        event = todo[0]
        self.get(f"/media/{event['id']}.png")
        self.get(f"/media/{event['id']}.wav")
        body = json.dumps({"event_id": event["id"], "verdict": "right"}).encode()
        request = urllib.request.Request(
            self.base + "/api/verdicts", data=body, method="POST",
            headers={"Content-Type": "application/json", "X-CSRF-Token": self.csrf},
        )  # fmt: skip
        urllib.request.urlopen(request, timeout=30).read()
        self.judged.add(event["id"])


def measure(mode: str, model: str, seconds: float, warmup: float, tmp: Path) -> dict[str, float]:
    port = free_port()
    config = {
        "model": {"path": model},
        "source": {"kind": "demo"},
        "output": {"dir": str(tmp / mode), "device_id": "bench", "print": "none"},
        "metrics": {"enabled": False},
        "levels": {"enabled": True},
        "clips": {"enabled": True},
        "web": {"enabled": mode != "off", "port": port},
    }
    path = tmp / f"{mode}.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (tmp / f"{mode}.log").open("w")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(path)], stderr=log, env=env
    )
    try:
        time.sleep(warmup)
        page = Page(f"http://127.0.0.1:{port}") if mode in ("open", "triage") else None
        requests = 0
        began, cpu = time.monotonic(), cpu_seconds(daemon.pid)
        tick = 0
        while (now := time.monotonic()) - began < seconds:
            if page is not None and mode == "open" and tick % 4 == 0:
                if tick % 8 == 0:
                    page.get("/api/now"), page.get("/api/status")
                    requests += 2
                else:
                    page.get("/api/events")
                    requests += 1
            elif page is not None and mode == "triage":
                page.judge_next()
                requests += 4
                if tick % 4 == 0:
                    page.get("/api/events")
                    requests += 1
            tick += 1
            time.sleep(max(0.0, began + tick * 0.5 - time.monotonic()))
        used = cpu_seconds(daemon.pid) - cpu
        rss, peak = memory_mib(daemon.pid)
        return {
            "cpu_percent": 100 * used / (now - began),
            "rss_mib": rss,
            "peak_mib": peak,
            "requests": requests,
            "verdicts": len(page.judged) if page is not None else 0,
        }
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(timeout=30)
        log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured per mode, s")
    parser.add_argument("--warmup", type=float, default=10.0, help="before measuring, s")
    parser.add_argument("--model", default="flysong", help="bundle (default: the bundled one)")
    parser.add_argument("--modes", default=",".join(MODES), help="which modes, in order")
    args = parser.parse_args()
    print(f"{'mode':8} {'CPU %':>7} {'RSS MiB':>8} {'peak MiB':>9} {'requests':>9} {'verdicts':>9}")
    with tempfile.TemporaryDirectory(prefix="soundwatch-web-bench-") as folder:
        for mode in args.modes.split(","):
            r = measure(mode, args.model, args.seconds, args.warmup, Path(folder))
            print(
                f"{mode:8} {r['cpu_percent']:7.1f} {r['rss_mib']:8.1f} {r['peak_mib']:9.1f}"
                f" {r['requests']:9d} {r['verdicts']:9d}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
