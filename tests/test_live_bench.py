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
from typing import Any

import pytest

from edge.bench.live_report import combine
from tests.mqtt_broker import require

SECONDS = 5.0  # bursts at 1 and 3-3.25 s: two onsets a round; a round takes about 23 s
ROUNDS = 1  # one live round; how rounds are summed up is tested without a device, below


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
            # The threads account for the process's CPU, to a few clock ticks: each thread
            # is read a moment after the process, at the start and at the end.
            slack = 3 + len(row["threads"])
            ticks = 100 * slack / os.sysconf("SC_CLK_TCK") / row["steady_seconds"]
            assert abs(sum(row["threads"].values()) - row["cpu_percent"]) <= ticks, row
        assert {"main", "audio-callback"} <= set(b["threads"]), b["threads"]
        # Named in the OS by the daemon: the publisher and paho's thread beside capture's.
        assert {"main", "audio-callback", "mqtt-publisher", "paho-mqtt-clien"} <= set(
            d["threads"]
        ), d["threads"]
        assert d["threads"]["main"] > 0
    assert result["cpu_ratio"] == result["rounds"][0]["cpu_ratio"]
    assert daemon["cpu_percent"] == result["rounds"][0]["daemon"]["cpu_percent"]
    # The daemon does everything the bare loop does and more.
    assert daemon["rss_steady_mib"] > bare["rss_steady_mib"]
    assert abs(result["window_seconds"] - 0.5) < 1e-9 and abs(result["hop_seconds"] - 0.1) < 1e-9
    assert result["latency_target_seconds"] == pytest.approx(0.25 + 0.1 + 0.05)


def _run(cpu: float, rss: float, peak: float, threads: dict[str, float], **more: Any) -> dict:
    row: dict[str, Any] = {"cpu_percent": cpu, "rss_steady_mib": rss, "rss_peak_mib": peak}
    row.update(startup_seconds=1.0, steady_seconds=30.0, threads=threads, **more)
    return row


def test_rounds_are_summed_up_by_medians_of_their_own_ratios() -> None:
    """Three rounds as `bench --live --rounds 3` measures them: the summary's ratio is the
    median of the rounds' ratios (not a ratio of medians), peak RSS the highest, per-thread
    CPU a median with a missing thread as 0, and latencies pooled over the rounds."""
    pairs = [
        (
            _run(3.0, 100, 101, {"main": 2.0}, latencies_seconds=[0.3, 0.4], stray_starts=0),
            _run(1.0, 90, 95, {"main": 0.5}),
        ),
        (
            _run(
                2.0,
                102,
                110,
                {"main": 1.0, "mqtt-publisher": 0.3},
                latencies_seconds=[0.5],
                stray_starts=1,
            ),
            _run(1.6, 91, 92, {"main": 0.6}),
        ),
        (
            _run(4.0, 98, 99, {"main": 3.0}, latencies_seconds=[0.2], stray_starts=0),
            _run(2.0, 89, 90, {"main": 0.7}),
        ),
    ]
    summary = combine(pairs)
    assert [r["cpu_ratio"] for r in summary["rounds"]] == [3.0, 1.25, 2.0]
    assert summary["cpu_ratio"] == 2.0  # the ratio of the medians would be 3.0 / 1.6
    assert [r["rss_gap_mib"] for r in summary["rounds"]] == [10, 11, 9]
    assert summary["rss_gap_mib"] == 10
    daemon, bare = summary["daemon"], summary["bare"]
    assert (daemon["cpu_percent"], daemon["rss_steady_mib"], daemon["rss_peak_mib"]) == (
        3.0,
        100,
        110,
    )
    assert (bare["cpu_percent"], bare["rss_peak_mib"]) == (1.6, 95)
    assert daemon["threads"] == {"main": 2.0, "mqtt-publisher": 0.0}
    assert daemon["events_found"] == 4 and daemon["stray_starts"] == 1
    assert daemon["latency_p50_seconds"] == pytest.approx(0.35)
    assert daemon["latency_max_seconds"] == 0.5
