"""The report of `soundwatch bench --live`: its rounds summed up, and the table people read.

The ratio between two runs of the same code moved by 0.2x on a shared machine (BENCHMARKS.md,
issue 14), so the bench can alternate daemon and bare loop several times in one sandbox: every
round keeps its own figures and ratio, and the summary takes the median of each (the ratio's
median is of the rounds' ratios, not a ratio of medians). Latencies are pooled over rounds.
"""

from __future__ import annotations

import statistics
from typing import Any

import numpy as np

MEDIANS = ("cpu_percent", "rss_steady_mib", "startup_seconds", "steady_seconds")
THREADS_SHOWN = 6  # per process in the table; the JSON has them all


def combine(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any]:
    """`rounds` (each daemon and bare as measured, its ratio and RSS gap) and their summary:
    `daemon` and `bare` (medians; the highest peak RSS; per-thread medians; the daemon's
    latencies pooled), `cpu_ratio` and `rss_gap_mib` (medians of the rounds')."""
    rounds = [
        {
            "daemon": daemon,
            "bare": bare,
            "cpu_ratio": (
                daemon["cpu_percent"] / bare["cpu_percent"] if bare["cpu_percent"] else None
            ),
            "rss_gap_mib": daemon["rss_steady_mib"] - bare["rss_steady_mib"],
        }
        for daemon, bare in pairs
    ]
    ratios = [r["cpu_ratio"] for r in rounds if r["cpu_ratio"] is not None]
    daemon = _summary([d for d, _ in pairs])
    daemon.update(_latency([d for d, _ in pairs]))
    return {
        "daemon": daemon,
        "bare": _summary([b for _, b in pairs]),
        "cpu_ratio": statistics.median(ratios) if ratios else None,
        "rss_gap_mib": statistics.median(r["rss_gap_mib"] for r in rounds),
        "rounds": rounds,
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {key: statistics.median(run[key] for run in runs) for key in MEDIANS}
    out["rss_peak_mib"] = max(run["rss_peak_mib"] for run in runs)
    names = {name for run in runs for name in run["threads"]}
    threads = {
        name: statistics.median(run["threads"].get(name, 0.0) for run in runs) for name in names
    }
    out["threads"] = dict(sorted(threads.items(), key=lambda kv: -kv[1]))
    return out


def _latency(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Events found and stray starts over all rounds, and latency p50/p95/max, s, pooled."""
    if any("latency" in run for run in runs):  # not measured (no broker, not heard)
        return {"latency": next(run["latency"] for run in runs if "latency" in run)}
    found = [x for run in runs for x in run["latencies_seconds"]]
    out: dict[str, Any] = {
        "events_found": len(found),
        "stray_starts": sum(run["stray_starts"] for run in runs),
    }
    if found:
        out["latency_p50_seconds"] = float(np.percentile(found, 50))
        out["latency_p95_seconds"] = float(np.percentile(found, 95))
        out["latency_max_seconds"] = max(found)
        out["latency_median_abs_dev"] = statistics.median(
            abs(x - out["latency_p50_seconds"]) for x in found
        )
    return out


def format_live(result: dict[str, Any]) -> str:
    d, b = result["daemon"], result["bare"]
    m = result["machine"]
    rounds = result["rounds"]
    lines = [
        f"{result['bundle']['name']} ({result['bundle']['file']}, blocks of"
        f" {result['block_seconds']:g} s): window"
        f" {result['window_seconds']:.3g} s, hop {result['hop_seconds']:.3g} s;"
        f" {result['recording']['kind']}, {result['recording']['seconds']:.0f} s,"
        f" {result['onsets_played']} onsets"
        + (f" in {len(rounds)} rounds" if len(rounds) > 1 else ""),
        "",
        f"{'':8} {'CPU %':>7} {'RSS MiB':>8} {'peak MiB':>9} {'start s':>8}"
        + (f"  (medians of {len(rounds)} rounds; peak: the highest)" if len(rounds) > 1 else ""),
    ]
    for name, row in (("daemon", d), ("bare", b)):
        lines.append(
            f"{name:8} {row['cpu_percent']:7.2f} {row['rss_steady_mib']:8.1f}"
            f" {row['rss_peak_mib']:9.1f} {row['startup_seconds']:8.2f}"
        )
    if len(rounds) > 1:
        for i, r in enumerate(rounds, 1):
            ratio = "-" if r["cpu_ratio"] is None else f"{r['cpu_ratio']:.2f}x"
            lines.append(
                f"round {i}: daemon {r['daemon']['cpu_percent']:.2f} %, bare"
                f" {r['bare']['cpu_percent']:.2f} %, {ratio}, RSS gap {r['rss_gap_mib']:+.1f} MiB"
            )
    ratio = result["cpu_ratio"]
    median = "median " if len(rounds) > 1 else ""
    lines.append(
        f"daemon/bare CPU {median}{ratio:.2f}x, RSS gap {result['rss_gap_mib']:+.1f} MiB"
        if ratio is not None
        else f"RSS gap {result['rss_gap_mib']:+.1f} MiB (bare CPU too small to divide by)"
    )
    for name, row in (("daemon", d), ("bare", b)):
        shown = list(row["threads"].items())[:THREADS_SHOWN]
        lines.append(f"{name} threads, CPU %: " + ", ".join(f"{t} {c:.2f}" for t, c in shown))
    if "latency" in d:
        lines.append(f"latency {d['latency']}")
    else:
        found = f"events found {d['events_found']}/{result['onsets_played']}"
        lines.append(f"{found}, stray starts {d['stray_starts']}")
        if "latency_p50_seconds" in d:
            lines.append(
                f"sound to MQTT start: p50 {d['latency_p50_seconds']:.3f} s,"
                f" p95 {d['latency_p95_seconds']:.3f} s"
                f" (target {result['latency_target_seconds']:.3f} s)"
            )
    lines.append(f"machine: {m.get('cpu')}, {m.get('cores')} cores")
    return "\n".join(lines)
