"""`soundwatch bench` on the tone bundle and a few seconds of audio: shapes and counts, no speeds.

Each bench call measures every backend in its own child process, so these tests take a few
seconds each; they assert that every backend gets a row of positive, consistent numbers.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import soundfile as sf
import yaml

from edge.bench import STAGES, BenchError, bench, format_table, write_synthetic
from edge.cli import main
from edge.errors import BundleError, ConfigError
from edge.model.runtime import available_backends
from tests.audio import peak_frequency_hz, tone_events, write_wav
from tests.progress import soundwatch_stderr
from trainer.toybundle import make_tone_bundle

TONE_KEYS = ("onnx-int8", "onnx-fp32", "tflite-int8")  # what make_tone_bundle writes
RUNTIME = {"onnx-int8": "onnx", "onnx-fp32": "onnx", "tflite-int8": "litert"}


@pytest.fixture(scope="module")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone")


@pytest.fixture(scope="module")
def synthetic_result(tone_bundle: Path) -> dict[str, Any]:
    """One bench run on 4 s of synthetic 44.1 kHz audio, as JSON."""
    result: dict[str, Any] = json.loads(
        bench(tone_bundle, seconds=4.0, files=[], repeats=2, as_json=True)
    )
    return result


def _check_row(row: dict[str, Any], audio_seconds: float, windows: int) -> None:
    assert row["audio_seconds"] == pytest.approx(audio_seconds, abs=1e-6)
    assert row["windows"] == windows
    assert row["bare_windows"] == windows  # a few seconds: every window is recorded
    for field in (
        "scan_windows_per_second",
        "scan_x_real_time",
        "bare_windows_per_second",
        "bare_x_real_time",
        "latency_p50_ms",
        "latency_p99_ms",
        "peak_rss_mib",
    ):
        assert row[field] > 0, field
    assert 0 < row["ratio"] <= 1.5
    assert row["scan_cpu_seconds"] > 0
    assert row["bare_cpu_seconds"] > 0
    assert 0 < row["cpu_ratio"] <= 1.5
    # The bare runtime loop ran in its own process: a peak of its own, below scan's (which
    # holds soundwatch besides the runtime), and the two compared.
    assert 20 < row["bare_rss_mib"] < row["peak_rss_mib"]
    assert row["rss_extra_mib"] == pytest.approx(row["peak_rss_mib"] - row["bare_rss_mib"])
    assert row["rss_ratio"] == pytest.approx(row["peak_rss_mib"] / row["bare_rss_mib"])
    assert row["latency_p50_ms"] <= row["latency_p99_ms"]
    assert row["latency_calls"] >= 10
    # Same audio, same windows: x real time and windows/s give the same ratio.
    assert row["scan_x_real_time"] / row["bare_x_real_time"] == pytest.approx(row["ratio"])
    shares = row["profile"]["share"]
    assert set(shares) == set(STAGES)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert all(shares[s] >= 0 for s in ("read", "resample", "frontend", "inference"))


def test_every_backend_gets_a_row_of_positive_numbers(synthetic_result: dict[str, Any]) -> None:
    rows = {row["file_key"]: row for row in synthetic_result["backends"]}
    assert set(rows) == set(TONE_KEYS)
    available = available_backends()
    for key, row in rows.items():
        if not available[RUNTIME[key]]:
            assert "not installed" in row["error"]
            continue
        assert "error" not in row, row.get("error")
        # 4 s at 16 kHz, 0.5 s windows every 0.1 s: (64000 - 8000) // 1600 + 1 windows.
        _check_row(row, audio_seconds=4.0, windows=36)
    audio = synthetic_result["audio"]
    assert audio["rates_hz"] == [44100]  # not the model's 16 kHz: scan resamples
    assert audio["seconds"] == pytest.approx(4.0)
    assert synthetic_result["method"]["threads"] == 1
    assert synthetic_result["machine"]["packages"]["numpy"]


def test_table_has_a_line_per_backend(synthetic_result: dict[str, Any]) -> None:
    text = format_table(synthetic_result)
    lines = text.splitlines()
    measured = [r["file_key"] for r in synthetic_result["backends"] if "error" not in r]
    for key in measured:
        rows = [line for line in lines if line.startswith(key + " ")]
        assert len(rows) == 2, key  # the speed table and the time breakdown
        ratio = float(rows[0].split()[5])
        assert 0 < ratio <= 1.5
    assert "best of 2 runs" in text
    assert "scan/bare" in text


def test_bench_on_recordings_scores_them(tone_bundle: Path, tmp_path: Path) -> None:
    events = [(0.5, 1.5, 1000.0), (2.0, 2.8, 3000.0)]
    first = write_wav(tmp_path / "rec" / "a.wav", tone_events(48000, 3.0, events), 48000)
    write_wav(tmp_path / "rec" / "b.wav", tone_events(16000, 2.0, events, seed=1), 16000)
    result = json.loads(
        bench(tone_bundle, seconds=99.0, files=[tmp_path / "rec"], repeats=1, as_json=True)
    )
    assert result["audio"] == {
        "source": "recordings",
        "files": 2,
        "seconds": pytest.approx(5.0),
        "rates_hz": [16000, 48000],
    }
    for row in result["backends"]:
        if "error" in row:
            continue
        # Per file: 3 s gives 26 windows, 2 s gives 16.
        _check_row(row, audio_seconds=5.0, windows=42)
        assert row["files_scored"] == 2
    assert first.exists()  # inputs untouched


def test_cli_prints_the_table(tone_bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--model", str(tone_bundle), "--seconds", "2"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("model tone ")
    assert "onnx-fp32" in out
    assert err == ""  # stderr is no terminal here: no progress bars


@pytest.mark.slow
def test_terminal_gets_a_bar_per_phase(tone_bundle: Path, tmp_path: Path) -> None:
    """The real CLI on a pseudo-terminal: the synthetic audio's bar, then one bar per backend
    over its 3 * repeats + 2 steps. One backend only, to keep it short (each child times
    one-window latency for 2 s)."""
    one = tmp_path / "one"
    shutil.copytree(tone_bundle, one)
    manifest = yaml.safe_load((one / "manifest.yaml").read_text())
    manifest["files"] = {"onnx-int8": manifest["files"]["onnx-int8"]}
    (one / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    args = ["bench", "--model", str(one), "--seconds", "3", "--repeats", "1"]
    code, drawn = soundwatch_stderr(args, tmp_path, terminal=True)
    assert code == 0, drawn[-2000:]
    parts = drawn.split("\r")
    assert any(re.match(r"synthetic audio: 100%\|.*\| 3\.0/3(\.0)? \[", p) for p in parts), drawn
    steps = [p for p in parts if p.startswith("onnx-int8: ")]
    assert any(re.match(r"onnx-int8:   0%\|.*\| 0/5 \[", p) for p in steps), drawn
    assert re.match(r"onnx-int8: 100%\|.*\| 5/5 \[.*, latency\]", steps[-1]), steps[-1]
    assert any(", stages]" in p for p in steps)


def test_synthetic_audio_has_the_tones(tmp_path: Path) -> None:
    path = write_synthetic(tmp_path / "s.wav", 8.0, 22050)
    audio, rate = sf.read(path, dtype="float32")
    assert rate == 22050
    assert len(audio) == 8 * 22050
    # The last second of every 4 s holds a tone: 1 kHz first, then 3 kHz.
    assert peak_frequency_hz(audio[3 * rate : 4 * rate], rate) == pytest.approx(1000.0, abs=1.0)
    assert peak_frequency_hz(audio[7 * rate : 8 * rate], rate) == pytest.approx(3000.0, abs=1.0)
    quiet = audio[: 3 * rate]
    assert float(quiet.std()) == pytest.approx(0.01, rel=0.05)


def test_audio_shorter_than_a_window_is_an_error(tone_bundle: Path, tmp_path: Path) -> None:
    short = write_wav(tmp_path / "short.wav", tone_events(16000, 0.2, []), 16000)
    with pytest.raises(BenchError, match="shorter than one model window"):
        bench(tone_bundle, seconds=1.0, files=[short], repeats=1)


def test_unreadable_recordings_are_an_error(tone_bundle: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    with pytest.raises(BenchError, match="no file could be read"):
        bench(tone_bundle, seconds=1.0, files=[bad], repeats=1)


def test_bad_options_and_bundles_are_user_errors(tone_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--seconds must be positive"):
        bench(tone_bundle, seconds=0.0, files=[])
    with pytest.raises(ConfigError, match="--repeats"):
        bench(tone_bundle, seconds=1.0, files=[], repeats=0)
    with pytest.raises(BundleError, match="no such bundle folder"):
        bench(tmp_path / "missing", seconds=1.0, files=[])
