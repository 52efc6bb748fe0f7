"""Soak: the daemon at real time for an hour (or `--seconds`), sampling its RSS, threads and
open file descriptors, to show whether they plateau (issue 13, "prove it").

    .venv/bin/python benchmarks/soak.py [--seconds 3600] [--every 10] [--out soak.csv]

The daemon runs the bundled fly-song model on its demo source (synthetic song at the device
rate, in real time) with MQTT (a mosquitto started here on 127.0.0.1), sound levels and event
clips on: every part that keeps state. Needs mosquitto (scripts/install.sh dev installs it).
Prints the first and last samples, the change per hour over the second half, and the peak;
writes every sample to the CSV.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def sample(pid: int) -> tuple[float, int, int]:
    """(RSS MiB, threads, open file descriptors) of process `pid`, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)
    rss_mib = int(fields["VmRSS"].split()[0]) / 1024
    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss_mib, threads, fds


def slope_per_hour(times: list[float], values: list[float]) -> float:
    """Least-squares change per hour."""
    n = len(times)
    if n < 2:
        return 0.0
    mt, mv = sum(times) / n, sum(values) / n
    den = sum((t - mt) ** 2 for t in times)
    return 3600 * sum((t - mt) * (v - mv) for t, v in zip(times, values, strict=True)) / den


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=3600.0)
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    p.add_argument("--out", default="soak.csv", help="CSV of every sample")
    args = p.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    with tempfile.TemporaryDirectory(prefix="soundwatch-soak-") as tmp:
        folder = Path(tmp)
        port = free_port()
        (folder / "mosquitto.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n")
        broker = subprocess.Popen(
            [mosquitto, "-c", str(folder / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        config = {
            "model": {"path": "flysong"},
            "source": {"kind": "demo"},
            "output": {"dir": str(folder / "out"), "device_id": "soak", "print": "none"},
            "mqtt": {"host": "127.0.0.1", "port": port, "probabilities": True},
            "levels": {"enabled": True},
            "clips": {"enabled": True},
            "metrics": {"address": "127.0.0.1:0"},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        log = (folder / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(folder / "config.yaml")],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        rows: list[tuple[float, float, int, int]] = []
        began = time.monotonic()
        try:
            time.sleep(5)  # past start-up: the model loaded, the first seconds analysed
            while (now := time.monotonic() - began) < args.seconds:
                if daemon.poll() is not None:
                    print((folder / "daemon.log").read_text(), file=sys.stderr)
                    raise SystemExit(f"the daemon exited ({daemon.returncode}) after {now:.0f} s")
                rows.append((now, *sample(daemon.pid)))
                time.sleep(args.every)
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
            broker.terminate()
            broker.wait(10)
        clips = len(list((folder / "out").rglob("*.wav")))
        events = sum(
            len(f.read_text().splitlines()) for f in (folder / "out").rglob("events.jsonl")
        )
    with open(args.out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "rss_mib", "threads", "fds"])
        writer.writerows(rows)
    half = [r for r in rows if r[0] >= args.seconds / 2]
    t = [r[0] for r in half]
    first, last = rows[0], rows[-1]
    print(
        f"soak: {last[0]:.0f} s at real time, {len(rows)} samples, {events} event messages,"
        f" {clips} clips; sample file {args.out}"
    )
    for i, name in ((1, "RSS MiB"), (2, "threads"), (3, "fds")):
        peak = max(r[i] for r in rows)
        drift = slope_per_hour(t, [float(r[i]) for r in half])
        print(
            f"  {name:8} first {first[i]:8.1f}  last {last[i]:8.1f}  peak {peak:8.1f}"
            f"  second half {drift:+.2f}/h"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
