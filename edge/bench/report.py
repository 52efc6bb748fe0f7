"""The report of a `soundwatch bench` run: the machine it ran on and the tables people read."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edge.bench.measure import STAGES

# Issue 14's targets: scan at 0.9 of bare inference for a small model, 0.95 for a heavy one
# (milliseconds a window), and peak RSS within about 30 MiB of a bare runtime loop.
TARGET_RATIO_SMALL, TARGET_RATIO_HEAVY, TARGET_RSS_EXTRA_MIB = 0.9, 0.95, 30
# (header, result field, format) of the main table.
COLUMNS = (
    ("scan win/s", "scan_windows_per_second", "{:,.0f}"),
    ("scan xRT", "scan_x_real_time", "{:,.0f}x"),
    ("bare win/s", "bare_windows_per_second", "{:,.0f}"),
    ("bare xRT", "bare_x_real_time", "{:,.0f}x"),
    ("scan/bare", "ratio", "{:.3g}"),
    ("CPU s/b", "cpu_ratio", "{:.3g}"),
    ("p50 ms", "latency_p50_ms", "{:.3g}"),
    ("p99 ms", "latency_p99_ms", "{:.3g}"),
    ("RSS MiB", "peak_rss_mib", "{:.0f}"),
    ("bare RSS", "bare_rss_mib", "{:.0f}"),
    ("RSS/bare", "rss_ratio", "{:.2f}"),
)


def machine() -> dict[str, Any]:
    """CPU model (as lscpu names it), cores, Python and the packages that set the speed."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    names = [ln for ln in text.splitlines() if ln.startswith("model name")]
    cpu = names[0].split(":", 1)[1].strip() if names else cpu
    versions: dict[str, str | None] = {}
    for package in ("numpy", "scipy", "onnxruntime", "ai-edge-litert", "soundfile"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "packages": versions,
    }


def format_table(result: dict[str, Any]) -> str:
    """The human-readable report of a `bench` result."""
    b, a, m, h = result["bundle"], result["audio"], result["method"], result["machine"]
    rates = ", ".join(f"{r} Hz" for r in a["rates_hz"])
    cpus = m["pinned_cpus"]
    pinned = f"pinned to CPU {', '.join(map(str, cpus))}" if cpus else "not pinned"
    packages = ", ".join(f"{k} {v}" for k, v in h["packages"].items() if v)
    table: list[tuple[str, ...]] = [("backend", *(c[0] for c in COLUMNS))]
    profile: list[tuple[str, ...]] = [("backend", *STAGES, "scan s")]
    notes = []
    for row in result["backends"]:
        key = row["file_key"]
        if "error" in row:
            notes.append(f"{key}: not measured: {row['error']}")
            continue
        cells = (form.format(row[f]) if f in row else "-" for _, f, form in COLUMNS)
        table.append((key, *cells))
        if "bare_error" in row:
            notes.append(f"{key}: bare runtime loop failed: {row['bare_error']}")
        share, total = row["profile"]["share"], row["profile"]["seconds"]["total"]
        profile.append((key, *(f"{100 * share[s]:.0f}%" for s in STAGES), f"{total:.3g}"))
        if row["bare_windows"] < row["windows"]:
            notes.append(
                f"{key}: bare inference timed on the first {row['bare_windows']:,} of"
                f" {row['windows']:,} windows"
            )
        if row["files_skipped"]:
            notes.append(f"{key}: skipped (unreadable): {', '.join(row['files_skipped'])}")
    return "\n".join(
        [
            f"model {b['name']} {b['version']} ({b['folder']}): {b['sample_rate_hz']} Hz,"
            f" {b['window_seconds']:g} s windows every {b['hop_seconds']:g} s",
            f"audio: {a['source']}, {a['files']} file(s), {a['seconds']:.1f} s at {rates}",
            f"machine: {h['cpu']}, {h['cores']} cores, Python {h['python']}, {packages}",
            f"method: a fresh process per backend, {pinned}, {m['threads']} inference and BLAS"
            f" thread(s), batch {m['batch_windows']}; times are the best of {m['repeats']}"
            " runs; RSS is that whole process's peak after its first scan; bare RSS is the"
            " peak of a bare runtime loop over as many windows in a process of its own",
            "",
            *_columns(table),
            "",
            "where the fastest scan's time goes (inference timed inside it; read, resample and",
            "frontend timed alone on the same audio; rest = the remainder: cutting windows,",
            "activation, per-second rows, event detection, writing files):",
            "",
            *_columns(profile),
            "",
            f"targets: scan/bare >= {TARGET_RATIO_SMALL:g} for a small model,"
            f" >= {TARGET_RATIO_HEAVY:g} for one that takes milliseconds a window; RSS at most"
            f" {TARGET_RSS_EXTRA_MIB} MiB above bare RSS",
            *notes,
        ]
    )


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned text: the first column left-aligned, the numbers right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    cells = [[r[0].ljust(widths[0]), *map(str.rjust, r[1:], widths[1:])] for r in rows]
    return ["  ".join(c) for c in cells]


# -- the child: one backend, measured ---------------------------------------------------------
