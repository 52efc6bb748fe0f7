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

SECONDS = 7.0  # bursts at 1, 3 and 5 s: three onsets; both phases take about 25 s


def test_live_bench_finds_every_burst_and_reports_both_processes(tone_bundle: Path) -> None:
    require("mosquitto")  # fails with the install command when it is missing; never skips
    env = {k: v for k, v in os.environ.items() if k not in ("PULSE_SERVER", "PULSE_COOKIE")}
    command = [sys.executable, "-m", "edge.cli", "bench", "--live", "--json"]
    command += ["--model", str(tone_bundle), "--seconds", str(SECONDS)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)

    assert result["onsets_played"] == 3
    daemon, bare = result["daemon"], result["bare"]
    assert daemon["events_found"] == 3, daemon
    assert daemon["stray_starts"] == 0, daemon
    # Half a window (0.25 s) is the least a start can take; seconds would mean a broken match.
    assert 0.25 < daemon["latency_p50_seconds"] <= daemon["latency_p95_seconds"] < 3.0
    for row in (daemon, bare):
        assert 0 < row["cpu_percent"] < 100, row
        assert 20 < row["rss_steady_mib"] <= row["rss_peak_mib"] < 2048, row
        assert 0 < row["startup_seconds"] < 60, row
        assert row["steady_seconds"] > SECONDS - 2
    # The daemon does everything the bare loop does and more.
    assert daemon["rss_steady_mib"] > bare["rss_steady_mib"]
    assert result["cpu_ratio"] == daemon["cpu_percent"] / bare["cpu_percent"]
    assert abs(result["window_seconds"] - 0.5) < 1e-9 and abs(result["hop_seconds"] - 0.1) < 1e-9
    assert result["latency_target_seconds"] == pytest.approx(0.25 + 0.1 + 0.05)
