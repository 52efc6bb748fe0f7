"""`soundwatch summarize` on a real scan of recordings whose names place known events at known
hours (issue 11, item 6): detections per hour and per day, coverage per day, and the PNGs."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests.scenes import LABEL_OF, SECONDS, TRUTH, write_scene

# The scene holds 3 tone-1k and 3 tone-3k events, at 2.0, 5.5, 10.0, 15.05, 17.0, 17.3 s.
ONE_K = [s for s, _, hz in TRUTH if LABEL_OF[hz] == "tone-1k"]
THREE_K = [s for s, _, hz in TRUTH if LABEL_OF[hz] == "tone-3k"]


def soundwatch(*args: str, code: str = "pass") -> subprocess.CompletedProcess[str]:
    run = f"import sys; {code}; from edge.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", run, *args], capture_output=True, text=True, timeout=120
    )


def table(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def scanned(tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("summary")
    write_scene(root / "in" / "rec_20261122T100000.wav")  # all in hour 10
    write_scene(root / "in" / "rec_20261122T105950.wav")  # 10 s in hour 10, 10 s in hour 11
    write_scene(root / "in" / "far" / "rec_20261124T230000.wav")  # two days later
    write_scene(root / "in" / "untimed.wav")  # no time: left out, and said so
    done = soundwatch("scan", str(root / "in"), "--model", str(tone_bundle),
                      "--out", str(root / "out"), "-q")  # fmt: skip
    assert done.returncode == 0, done.stderr
    return root / "out"


def test_detections_and_coverage_by_hour_and_day(scanned: Path) -> None:
    done = soundwatch("summarize", str(scanned))
    assert done.returncode == 0, done.stderr
    assert "1 file(s) without an absolute time left out" in done.stderr
    summary = scanned / "summary"
    # The second file starts at 10:59:50: events before its 10th second fall in hour 10.
    early = (sum(s < 10 for s in ONE_K), sum(s < 10 for s in THREE_K))
    assert early == (1, 1)
    per_hour = [(r["hour"], r["analysed_seconds"], r["tone-1k"], r["tone-3k"])
                for r in table(summary / "detections_per_hour.csv")]  # fmt: skip
    assert per_hour == [
        ("2026-11-22T10:00Z", "30", str(len(ONE_K) + early[0]), str(len(THREE_K) + early[1])),
        ("2026-11-22T11:00Z", "10", str(len(ONE_K) - early[0]), str(len(THREE_K) - early[1])),
        ("2026-11-24T23:00Z", "20", str(len(ONE_K)), str(len(THREE_K))),
    ]
    per_day = [tuple(r.values()) for r in table(summary / "detections_per_day.csv")]
    assert per_day == [("2026-11-22", "40", "6", "6"), ("2026-11-23", "0", "0", "0"),
                       ("2026-11-24", "20", "3", "3")]  # fmt: skip
    coverage = table(summary / "coverage_per_day.csv")
    assert [(r["day"], r["analysed_seconds"], r["gap_seconds"]) for r in coverage] == [
        ("2026-11-22", str(2 * int(SECONDS)), "0"),
        ("2026-11-23", "0", "0"),
        ("2026-11-24", str(int(SECONDS)), "0"),
    ]
    # A heat map is 10 x (1.5 + 0.4 a day) inches at 100 dpi; the coverage bars 10 x 4.
    sizes = {"detections_tone-1k.png": (1000, 270), "detections_tone-3k.png": (1000, 270),
             "coverage.png": (1000, 400)}  # fmt: skip
    for name, size in sizes.items():
        with Image.open(summary / name) as image:
            image.load()  # decodes every pixel: a truncated PNG fails here
            assert image.size == size


def test_gaps_are_counted_by_reason(tmp_path: Path) -> None:
    """Outputs as `run` or a replayed stream leave them: a device gone for 3 s."""
    rows = ["time,offset_seconds,status,bird"]
    statuses = ["edge", *["analysed"] * 4, *["gap:device"] * 3, "gap:overrun", "analysed"]
    rows += [f"2026-11-25T06:00:{n:02d}.000Z,{n},{s},0.1" for n, s in enumerate(statuses)]
    (tmp_path / "r.wav.probabilities.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "r.wav.events.jsonl").write_text("")
    done = soundwatch("summarize", str(tmp_path), "--to", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    assert table(tmp_path / "s" / "coverage_per_day.csv") == [
        {
            "day": "2026-11-25",
            "analysed_seconds": "5",
            "edge_seconds": "1",
            "gap_seconds": "4",
            "gap_device_seconds": "3",
            "gap_overrun_seconds": "1",
        }
    ]
    assert table(tmp_path / "s" / "detections_per_hour.csv") == [
        {"hour": "2026-11-25T06:00Z", "analysed_seconds": "5", "bird": "0"}
    ]


def test_without_matplotlib_the_csvs_and_one_line(scanned: Path, tmp_path: Path) -> None:
    """matplotlib is installed here; the summary is run as where it is not (import blocked)."""
    done = soundwatch("summarize", str(scanned), "--to", str(tmp_path),
                      code="sys.modules['matplotlib'] = None")  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "no PNG plots: they need matplotlib (pip install 'soundwatch[plots]')" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "coverage_per_day.csv", "detections_per_day.csv", "detections_per_hour.csv"]  # fmt: skip


def test_a_folder_without_scan_outputs_is_one_line(tmp_path: Path) -> None:
    done = soundwatch("summarize", str(tmp_path))
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == f"soundwatch: error: {tmp_path}: no scan outputs (*.events.jsonl) in it"
    )


def test_a_broken_csv_or_a_summary_that_cannot_be_written_is_one_line(
    scanned: Path, tmp_path: Path
) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("in the way of the summary folder")
    done = soundwatch("summarize", str(scanned), "--to", str(blocked))
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"soundwatch: error: {blocked}: cannot write the summary (File exists)"
    )
    (tmp_path / "r.wav.events.jsonl").write_text("")
    csv_text = "time,offset_seconds,status,bird\n,x,analysed,0\n"  # "x": not a number
    (tmp_path / "r.wav.probabilities.csv").write_text(csv_text)
    done = soundwatch("summarize", str(tmp_path), "--to", str(tmp_path / "s"))
    assert done.returncode == 2
    assert done.stderr.startswith(f"soundwatch: error: {tmp_path}: a *.probabilities.csv is not")
    assert len(done.stderr.strip().splitlines()) == 1
