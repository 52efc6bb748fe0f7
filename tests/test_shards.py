"""One long recording in time shards (edge/shards.py): the merged outputs are the one-process
scan's, byte for byte, whatever the shard length, the batch size and the file's rate, and an
event across a shard boundary comes out as one event (issue 11, item 5)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from edge import schema, shards
from edge.builders import build_analyzer
from edge.config import Config, Loaded
from edge.detection.analysis import Analyzer
from edge.scan import scan
from edge.scanplan import OUTPUT_SUFFIXES
from edge.yamlfile import Where
from tests.audio import tone_events, write_wav
from tests.test_cluster import outputs, soundwatch


def analyzer(bundle: Path, batch: int) -> Analyzer:
    config = schema.build(Config, {"model": {"path": str(bundle)}})
    return build_analyzer(Loaded(config, None, Where.nowhere("test")), None, batch_windows=batch)[1]


def long_recording(path: Path, rate_hz: int, seconds: float, rng: random.Random) -> list[float]:
    """Noise with two tones at every 30 s mark (the block grid shards start on): a 1 kHz one
    that begins before the mark and ends after it, and a 3 kHz one that begins on the mark;
    returns the marks."""
    marks = [30.0 * k for k in range(1, int(seconds // 30) + 1) if 30.0 * k < seconds - 2]
    tones = []
    for mark in marks:
        tones.append((mark - rng.choice([0.3, 0.6, 1.5]), mark + rng.uniform(0.3, 2.0), 1000.0))
        tones.append((mark, mark + rng.uniform(0.5, 2.0), 3000.0))
    x = tone_events(rate_hz, seconds, tones, noise_amplitude=0.01, tone_amplitude=0.3, seed=7)
    write_wav(path, x, rate_hz)
    return marks


def read(base: Path) -> dict[str, bytes]:
    return {suffix: base.with_name(base.name + suffix).read_bytes() for suffix in OUTPUT_SUFFIXES}


@pytest.mark.parametrize("case", range(5))
def test_shards_merge_into_the_one_process_outputs(
    case: int, tone_bundle: Path, tmp_path: Path
) -> None:
    rng = random.Random(case)
    rate = [16000, 22050, 44100, 48000, 8000][case]  # the model's 16 kHz, down and up
    seconds = rng.uniform(95.0, 160.0)
    batch = rng.choice([3, 17, 64, 256])  # small batches: many straddle a shard boundary
    scorer = analyzer(tone_bundle, batch)
    file = tmp_path / "in" / "long.wav"
    file.parent.mkdir()
    marks = long_recording(file, rate, seconds, rng)
    one = tmp_path / "one" / "long.wav"
    scan(scorer, [file], one.parent, device="test", progress=False, bases={file: one})

    shard_seconds = rng.choice([30.0, 60.0, 90.0])
    plan = shards.plan(file, scorer, shard_seconds)
    assert len(plan) == -(-int(seconds * rate) // int(shard_seconds * rate))
    parts = [shards.score(scorer, shard, None) for shard in reversed(plan)][::-1]  # any order
    merged = tmp_path / "merged" / "long.wav"
    report = shards.merge(scorer, file, merged, device="test", anchor=None, parts=parts)

    assert report.files_scored == 1 and report.audio_seconds == pytest.approx(seconds, abs=1e-3)
    assert read(merged) == read(one)
    ends = [json.loads(line) for line in read(merged)[".events.jsonl"].splitlines()]
    ends = [e for e in ends if e["type"] == "end"]
    assert len(ends) == 2 * len(marks)  # one event a tone: none cut in two at a boundary
    boundaries = [shard.first / rate for shard in plan[1:]]
    assert set(boundaries) <= set(marks)
    low = [e for e in ends if e["label"] == "tone-1k"]
    for b in boundaries:  # the 1 kHz tone across it is one event
        assert len([e for e in low if e["start_offset"] < b < e["end_offset"]]) == 1


def test_a_file_shorter_than_two_shards_or_not_seekable_is_scored_whole(
    tone_bundle: Path, tmp_path: Path
) -> None:
    scorer = analyzer(tone_bundle, 256)
    file = tmp_path / "short.wav"
    long_recording(file, 16000, 50.0, random.Random(1))
    assert shards.plan(file, scorer, 30.0) != []
    assert shards.plan(file, scorer, 60.0) == []
    ogg = tmp_path / "long.ogg"
    import soundfile as sf

    sf.write(ogg, sf.read(file)[0], 16000, format="OGG")
    assert shards.plan(ogg, scorer, 30.0) == []


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    long_recording(folder / "day" / "rec_20261122T000000.wav", 22050, 100.0, random.Random(5))
    long_recording(folder / "short.wav", 16000, 20.0, random.Random(6))
    return folder


@pytest.fixture(scope="module")
def archive_one(archive: Path, tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("archive_one") / "out"
    result = soundwatch("scan", str(archive), "--model", str(tone_bundle), "--out", str(out), "-q")
    assert result.returncode == 0, result.stderr
    return out


def test_two_workers_score_one_long_file_in_shards(
    archive: Path, archive_one: Path, tone_bundle: Path, tmp_path: Path
) -> None:
    """A real local Dask cluster, the long file in 4 shards of 30 s; and a sharded file cut
    short (its .partial outputs left) is scored again, the other file kept."""
    out = tmp_path / "out"
    result = soundwatch("scan", str(archive), "--model", str(tone_bundle), "--out", str(out),
                        "--workers", "2", "--shard-minutes", "0.5", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "2 file(s) scored, 120.0 s of audio" in result.stderr
    assert outputs(out) == outputs(archive_one)

    again = Path(shutil.copytree(archive_one, tmp_path / "again"))
    for suffix in OUTPUT_SUFFIXES:
        (again / "day" / f"rec_20261122T000000.wav{suffix}").unlink()
    (again / "day" / "rec_20261122T000000.wav.events.jsonl.partial").write_text('{"half')
    result = soundwatch("scan", str(archive), "--model", str(tone_bundle), "--out", str(again),
                        "--workers", "2", "--shard-minutes", "0.5", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 of 2 file(s) already scored" in result.stderr
    assert "1 file(s) scored, 100.0 s of audio" in result.stderr
    assert outputs(again) == outputs(archive_one)


def test_a_dask_scheduler_and_two_workers_on_127_0_0_1(
    archive: Path, archive_one: Path, tone_bundle: Path, tmp_path: Path
) -> None:
    """A real cluster as on SLURM or in the cloud: `dask scheduler` and two `dask worker`
    processes, and `scan --scheduler` sending them the shards and the whole files."""
    import os
    import subprocess
    import sys
    import time

    address_file = tmp_path / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    dask = str(Path(sys.executable).parent / "dask")
    scheduler = [dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard"]
    scheduler += ["--scheduler-file", str(address_file)]
    processes = [subprocess.Popen(scheduler, env=env, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(address_file.read_text())["address"]
        worker = [dask, "worker", address, "--nthreads", "1", "--host", "127.0.0.1"]
        worker += ["--no-dashboard"]
        for _ in range(2):
            processes.append(subprocess.Popen(worker, env=env, stderr=subprocess.DEVNULL))
        out = tmp_path / "out"
        result = soundwatch("scan", str(archive), "--model", str(tone_bundle), "--out",
                            str(out), "--scheduler", address, "--shard-minutes", "0.5")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "2 file(s) scored, 120.0 s of audio" in result.stderr
        assert outputs(out) == outputs(archive_one)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def test_a_file_cut_short_is_scored_again_whole_as_one_process_does(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """A FLAC whose header promises 100 s and whose data stops about half-way: the shards
    past the cut cannot read their stretch, so the merge scores the file whole, and the
    outputs are again the one-process scan's (what it could read)."""
    scorer = analyzer(tone_bundle, 64)
    full = tmp_path / "full.flac"
    long_recording(full, 16000, 100.0, random.Random(3))
    file = tmp_path / "in" / "cut.flac"
    file.parent.mkdir()
    data = full.read_bytes()
    file.write_bytes(data[: len(data) * 2 // 5])  # cut at about 32 s: inside shard 0's last block
    one = tmp_path / "one" / "cut.flac"
    scan(scorer, [file], one.parent, device="test", progress=False, bases={file: one})

    plan = shards.plan(file, scorer, 30.0)
    assert len(plan) == 4
    parts = [shards.score(scorer, shard, None) for shard in plan]
    problems = [p.problem or "" for p in parts]
    assert problems[0].endswith("flac decoder lost sync")  # read past its stretch, into the cut
    assert problems[3].endswith("cannot seek to frame 1430400 (Internal psf_fseek() failed)")
    merged = tmp_path / "merged" / "cut.flac"
    report = shards.merge(scorer, file, merged, device="test", anchor=None, parts=parts)
    assert report.files_scored == 1
    assert read(merged) == read(one)


def test_the_progress_bar_counts_shards_audio_and_whole_files(
    archive: Path, tone_bundle: Path, tmp_path: Path
) -> None:
    """On a terminal: the long file's shards advance the audio as each finishes, the file
    count moves when a file is done (its merge), and the two add up to the total."""
    from tests.progress import soundwatch_stderr

    args = ["scan", str(archive), "--model", str(tone_bundle), "--out", str(tmp_path / "out"),
            "--workers", "2", "--shard-minutes", "0.5"]  # fmt: skip
    code, drawn = soundwatch_stderr(args, tmp_path, terminal=True)
    assert code == 0, drawn[-2000:]
    done = [part for part in drawn.split("\r") if part.startswith("scan: 100%")]
    assert done, drawn[-2000:]
    assert "| 120/120 s audio" in done[-1] and done[-1].rstrip().endswith("file 2/2")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--shard-minutes", "5"], "scan --shard-minutes: shards need workers: add --workers"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:1"],
         "scan: --workers and --scheduler: choose one"),
        (["--shard-minutes", "-1", "--workers"],
         "argument --shard-minutes: must be a positive number of minutes, got '-1'"),
    ],
)  # fmt: skip
def test_scan_options_that_do_not_go_together(
    flags: list[str], message: str, tmp_path: Path
) -> None:
    result = soundwatch("scan", str(tmp_path), "--out", str(tmp_path / "out"), *flags)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(message)
    assert not (tmp_path / "out").exists()
