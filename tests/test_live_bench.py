"""`soundwatch bench --live` end to end on the tone bundle: its own PulseAudio and mosquitto,
the real daemon and the bare loop as child processes, tone bursts played into the sink. The
figures are checked for sense (present, positive, within bounds a broken measurement would
leave), never against speed targets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.mqtt_broker import require

SECONDS = 5.0  # bursts at 1 and 3-3.25 s: two onsets a round; a round takes about 23 s
ROUNDS = 2


def test_live_bench_finds_every_burst_and_reports_both_processes(tone_bundle: Path) -> None:
    require("mosquitto")  # fails with the install command when it is missing; never skips
    env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER", "PULSE_COOKIE")}
    command = [sys.executable, "-m", "edge.cli", "bench", "--live", "--json"]
    command += ["--model", str(tone_bundle), "--seconds", str(SECONDS), "--rounds", str(ROUNDS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    assert result["onsets_played"] == 2 * ROUNDS
    daemon, bare = result["daemon"], result["bare"]
    assert daemon["events_found"] == 2 * ROUNDS, daemon
    assert daemon["stray_starts"] == 0, daemon
    # Half a window (0.25 s) is the least a start can take; seconds would mean a broken match.
    assert 0.25 < daemon["latency_p50_seconds"] <= daemon["latency_p95_seconds"] < 3.0
    assert len(result["rounds"]) == ROUNDS
    for one in result["rounds"]:
        d, b = one["daemon"], one["bare"]
        assert len(d["latencies_seconds"]) == 2, d
        assert one["cpu_ratio"] == d["cpu_percent"] / b["cpu_percent"]
        assert one["rss_gap_mib"] == d["rss_steady_mib"] - b["rss_steady_mib"]
        for row in (d, b):
            assert 0 < row["cpu_percent"] < 100, row
            assert 20 < row["rss_steady_mib"] <= row["rss_peak_mib"] < 2048, row
            assert 0 < row["startup_seconds"] < 60, row
            assert row["steady_seconds"] > SECONDS - 2
            # The threads account for the process's CPU, to a clock tick or three (no
            # thread ends in the steady part; each is read a moment after the process).
            ticks = 100 * 3 / os.sysconf("SC_CLK_TCK") / row["steady_seconds"]
            assert abs(sum(row["threads"].values()) - row["cpu_percent"]) <= ticks, row
        assert {"main", "audio-callback"} <= set(b["threads"]), b["threads"]
        # Named in the OS by the daemon: the publisher and paho's thread beside capture's.
        assert {"main", "audio-callback", "mqtt-publisher", "paho-mqtt-clien"} <= set(
            d["threads"]
        ), d["threads"]
        assert d["threads"]["main"] > 0
    ratios = sorted(one["cpu_ratio"] for one in result["rounds"])
    assert result["cpu_ratio"] == pytest.approx(sum(ratios) / 2)  # the median of two
    cpu = sorted(one["daemon"]["cpu_percent"] for one in result["rounds"])
    assert daemon["cpu_percent"] == pytest.approx(sum(cpu) / 2)
    # The daemon does everything the bare loop does and more.
    assert daemon["rss_steady_mib"] > bare["rss_steady_mib"]
    assert abs(result["window_seconds"] - 0.5) < 1e-9 and abs(result["hop_seconds"] - 0.1) < 1e-9
    assert result["latency_target_seconds"] == pytest.approx(0.25 + 0.1 + 0.05)
