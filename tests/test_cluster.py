"""`scan` on a real Dask cluster (a LocalCluster of worker processes on 127.0.0.1), and a scan
run again after it was cut short: the outputs are byte-identical to one uninterrupted
one-process scan (issue 11, items 1, 4 and 5 for whole files)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.scenes import write_scene


def soundwatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=300
    )


def outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for k, name in enumerate(["a.wav", "b.wav", "site2/c.wav", "site2/d.wav"]):
        write_scene(folder / name, seed=k)
    return folder


@pytest.fixture(scope="module")
def one_process(
    recordings: Path, tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("one") / "out"
    result = soundwatch("scan", str(recordings), "--model", str(tone_bundle), "--out", str(out),
                        "--start", "2026-11-22T10:00:00Z", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    return out


def test_two_workers_give_the_one_process_outputs(
    recordings: Path, tone_bundle: Path, one_process: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = soundwatch("scan", str(recordings), "--model", str(tone_bundle), "--out", str(out),
                        "--start", "2026-11-22T10:00:00Z", "--workers", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "4 file(s) scored" in result.stderr
    assert outputs(out) == outputs(one_process)  # every byte, the manifest included


def test_a_scan_cut_short_and_run_again_scores_only_what_is_missing(
    recordings: Path, tone_bundle: Path, one_process: Path, tmp_path: Path
) -> None:
    """As after a kill: one file finished, one left as .partial, two not begun. The second
    run scores the three and keeps the first; with --start each is anchored as before."""
    import shutil

    out = Path(shutil.copytree(one_process, tmp_path / "out"))
    for name in ("b.wav", "site2/c.wav", "site2/d.wav"):
        for suffix in (".probabilities.csv", ".events.jsonl", "-predicted.csv"):
            (out / (name + suffix)).unlink()
    (out / "b.wav.events.jsonl.partial").write_text('{"half a line')
    kept = (out / "a.wav.events.jsonl").stat().st_mtime_ns
    result = soundwatch("scan", str(recordings), "--model", str(tone_bundle), "--out", str(out),
                        "--start", "2026-11-22T10:00:00Z", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 of 4 file(s) already scored" in result.stderr and "3 file(s) scored" in result.stderr
    assert (out / "a.wav.events.jsonl").stat().st_mtime_ns == kept
    assert outputs(out) == outputs(one_process)


def test_another_model_or_settings_never_mix_in_one_folder(
    tone_bundle: Path, recordings: Path, one_process: Path
) -> None:
    result = soundwatch("scan", str(recordings), "--model", str(tone_bundle), "--out",
                        str(one_process), "--labels", "tone-1k", "-q")  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        "holds a scan with another model or settings (labels, rules, start differ): choose"
        " another --out, or empty this one"
    )
