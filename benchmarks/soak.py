"""Soak: the daemon at real time for an hour (or `--seconds`), sampling its RSS, threads and
open file descriptors, to show whether they plateau (issue 13, "prove it").

    .venv/bin/python benchmarks/soak.py [--seconds 3600] [--every 10] [--out soak.csv]
    .venv/bin/python benchmarks/soak.py --hours 24 [--env MALLOC_ARENA_MAX=2]

The daemon runs the bundled fly-song model on its demo source (synthetic song at the device
rate, in real time) with MQTT (a mosquitto started here on 127.0.0.1), sound levels and event
clips on: every part that keeps state. Needs mosquitto (scripts/install.sh dev installs it).
`--hours H` is the accelerated soak: the same settings on H hours of five-minute fly-song files
replayed as fast as possible (`source.kind: files`, `speed: 0`), so a day passes in a few hours
of wall time; the daemon runs until it has replayed them all. `--env` sets a variable in the
daemon's environment (e.g. glibc's allocator settings), to compare runs.
Prints the first and last samples, the change per hour over the second half (per simulated hour
with `--hours`), and the peak; writes every sample to the CSV. RSS is also split into anonymous
memory (the heaps) and file-backed pages (code and mapped files), from /proc/PID/status.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


COLUMNS = ("RSS MiB", "anon MiB", "file MiB", "threads", "fds")


def sample(pid: int) -> tuple[float, float, float, int, int]:
    """(RSS, anonymous RSS, file-backed RSS in MiB, threads, open fds) of `pid`, from /proc."""
    status = Path(f"/proc/{pid}/status").read_text().splitlines()
    fields = dict(line.split(":", 1) for line in status if ":" in line)

    def mib(key: str) -> float:
        return int(fields[key].split()[0]) / 1024

    threads = int(fields["Threads"])
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return mib("VmRSS"), mib("RssAnon"), mib("RssFile"), threads, fds


def write_files(folder: Path, hours: float) -> None:
    """`hours` of fly song as five-minute WAVs whose names carry consecutive start times."""
    import soundfile as sf

    from edge.audio.demo import FLYSONG_RATE_HZ, flysong_scene

    folder.mkdir()
    rng = np.random.default_rng(7)
    start = datetime(2026, 1, 1)
    for i in range(math.ceil(hours * 12)):
        audio, _ = flysong_scene(300.0, FLYSONG_RATE_HZ, rng)
        name = (start + timedelta(minutes=5 * i)).strftime("%Y%m%dT%H%M%S.wav")
        sf.write(folder / name, audio, FLYSONG_RATE_HZ, subtype="PCM_16")


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
    p.add_argument("--hours", type=float, help="accelerated: replay this many hours of files")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the daemon")
    p.add_argument("--clips-mb", type=float, help="clips.max_total_mb (default: the config's)")
    args = p.parse_args()
    env = dict(os.environ, **dict(item.split("=", 1) for item in args.env))
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
        source: dict[str, object] = {"kind": "demo"}
        if args.hours:
            write_files(folder / "audio", args.hours)
            source = {"kind": "files", "paths": [str(folder / "audio")], "speed": 0}
        config = {
            "model": {"path": "flysong"},
            "source": source,
            "output": {"dir": str(folder / "out"), "device_id": "soak", "print": "none"},
            "mqtt": {"host": "127.0.0.1", "port": port, "probabilities": True},
            "levels": {"enabled": True},
            "clips": {"enabled": True} | ({"max_total_mb": args.clips_mb} if args.clips_mb else {}),
            "metrics": {"address": "127.0.0.1:0"},
        }
        (folder / "config.yaml").write_text(yaml.safe_dump(config))
        log = (folder / "daemon.log").open("w")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(folder / "config.yaml")],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        rows: list[tuple[float, ...]] = []
        began = time.monotonic()
        try:
            time.sleep(5)  # past start-up: the model loaded, the first seconds analysed
            while args.hours or (now := time.monotonic() - began) < args.seconds:
                now = time.monotonic() - began
                if args.hours and daemon.poll() == 0:
                    break  # every file replayed
                if daemon.poll() is not None:
                    print((folder / "daemon.log").read_text(), file=sys.stderr)
                    raise SystemExit(f"the daemon exited ({daemon.returncode}) after {now:.0f} s")
                try:
                    rows.append((now, *sample(daemon.pid)))
                except (FileNotFoundError, ProcessLookupError):
                    continue  # it exited between poll and sample
                time.sleep(args.every)
        finally:
            if daemon.poll() is None:
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
        writer.writerow(["seconds", "rss_mib", "anon_mib", "file_mib", "threads", "fds"])
        writer.writerows(rows)
    first, last = rows[0], rows[-1]
    # Per simulated hour when accelerated: the files replay at a steady pace, so wall time
    # scales to audio time by the whole run's ratio.
    scale = args.hours * 3600 / last[0] if args.hours else 1.0
    half = [r for r in rows if r[0] >= last[0] / 2]
    t = [r[0] * scale for r in half]
    kind = f"{args.hours:g} h of files in" if args.hours else "at real time,"
    print(
        f"soak: {kind} {last[0]:.0f} s, {len(rows)} samples, {events} event messages,"
        f" {clips} clips; sample file {args.out}"
    )
    for i, name in enumerate(COLUMNS, start=1):
        peak = max(r[i] for r in rows)
        drift = slope_per_hour(t, [float(r[i]) for r in half])
        print(
            f"  {name:8} first {first[i]:8.1f}  last {last[i]:8.1f}  peak {peak:8.1f}"
            f"  second half {drift:+.2f}/h"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
