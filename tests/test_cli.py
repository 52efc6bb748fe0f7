"""The commands as a user runs them: `soundwatch scan`, `run`, `check`, `devices`, as subprocesses
on generated recordings with known events, checked against the truth."""

from __future__ import annotations

import csv
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.audio import noise, tone, write_wav
from tests.scenes import SECONDS, TRUTH, check_against_truth, events_from_jsonl, scene, write_scene

SOUNDWATCH = [sys.executable, "-m", "edge.cli"]
OCTAVES_48K = ["31.5", "63", "125", "250", "500", "1000", "2000", "4000", "8000", "16000"]


def soundwatch(
    *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SOUNDWATCH, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        check=False,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- scan ----------------------------------------------------------------------------------------


def test_scan_finds_every_event_and_writes_all_outputs(tone_bundle: Path, tmp_path: Path) -> None:
    wav = write_scene(tmp_path / "in" / "site1" / "rec_20261122T100000.wav")
    result = soundwatch(
        "scan", str(tmp_path / "in"), "--model", str(tone_bundle), "--out", str(tmp_path / "out")
    )
    assert result.returncode == 0, result.stderr
    base = tmp_path / "out" / "site1" / wav.name

    check_against_truth(events_from_jsonl(Path(f"{base}.events.jsonl")))

    rows = read_csv(Path(f"{base}.probabilities.csv"))
    assert list(rows[0]) == ["time", "offset_seconds", "status", "tone-1k", "tone-3k"]
    assert len(rows) == SECONDS  # one row per second, no more, no less
    assert [r["offset_seconds"] for r in rows] == [str(s) for s in range(int(SECONDS))]
    assert rows[0]["time"] == "2026-11-22T10:00:00.000Z"  # from the file name
    assert rows[11]["time"] == "2026-11-22T10:00:11.000Z"
    assert {r["status"] for r in rows} == {"analysed"}
    assert float(rows[11]["tone-1k"]) > 0.9 and float(rows[11]["tone-3k"]) < 0.1
    assert float(rows[8]["tone-1k"]) < 0.1 and float(rows[8]["tone-3k"]) < 0.1

    predicted = Path(f"{base}-predicted.csv").read_text().splitlines()
    assert len(predicted) == len(TRUTH)
    wav_name, start_tic, stop_tic, kind, label = predicted[0].split(",")
    assert (wav_name, kind, label) == (wav.name, "predicted", "tone-1k")
    assert abs(int(start_tic) - 2.0 * 16000) <= 0.1 * 16000  # tics are samples of the recording
    assert abs(int(stop_tic) - 3.0 * 16000) <= 0.1 * 16000
    assert not list((tmp_path / "out").rglob("*.partial"))


def test_scan_levels_add_each_seconds_level_to_the_csv(tone_bundle: Path, tmp_path: Path) -> None:
    """`scan --levels octave`: a dBFS column and one per octave, right for known audio."""
    rate = 48000
    signal = np.concatenate([tone(1000.0, 2.0, rate, 0.5), noise(3.0, rate, 0.01, seed=3)])
    wav = write_wav(tmp_path / "in" / "rec_20261122T100000.wav", signal, rate, subtype="FLOAT")
    out = tmp_path / "out"
    result = soundwatch(
        "scan", str(wav), "--model", str(tone_bundle), "--out", str(out), "--levels", "octave"
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(out / f"{wav.name}.probabilities.csv")
    assert list(rows[0])[3:6] == ["tone-1k", "tone-3k", "dbfs"]
    assert list(rows[0])[6:] == [f"dbfs_{b}hz" for b in OCTAVES_48K]
    assert len(rows) == 5
    for k, row in enumerate(rows):
        second = signal[k * rate : (k + 1) * rate].astype(np.float64)
        expected = 10 * np.log10(np.mean(second**2))
        assert float(row["dbfs"]) == pytest.approx(expected, abs=0.01)
    assert float(rows[0]["dbfs"]) == pytest.approx(-9.03, abs=0.01)  # peak 0.5: -9.03 dBFS
    assert float(rows[0]["dbfs_1000hz"]) == pytest.approx(-9.03, abs=0.01)
    assert float(rows[4]["dbfs"]) == pytest.approx(-40.0, abs=0.2)  # noise of RMS 0.01
    # Without --levels (and no levels: in a config), the CSV keeps only the scores.
    plain = soundwatch("scan", str(wav), "--model", str(tone_bundle), "--out", str(tmp_path / "p"))
    assert plain.returncode == 0, plain.stderr
    assert list(read_csv(tmp_path / "p" / f"{wav.name}.probabilities.csv")[0])[3:] == [
        "tone-1k",
        "tone-3k",
    ]


def test_scan_resamples_and_mixes_down(tone_bundle: Path, tmp_path: Path) -> None:
    """A 44.1 kHz stereo recording: resampled to the model's 16 kHz, channels averaged."""
    write_scene(tmp_path / "rec.wav", rate_hz=44100, channels=2)
    result = soundwatch(
        "scan",
        str(tmp_path / "rec.wav"),
        "--model",
        str(tone_bundle),
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    check_against_truth(events_from_jsonl(tmp_path / "out" / "rec.wav.events.jsonl"))
    rows = read_csv(tmp_path / "out" / "rec.wav.probabilities.csv")
    assert rows[0]["time"] == ""  # no timestamp in the name, no --start
    assert len(rows) == SECONDS


@pytest.mark.parametrize("model_file", ["onnx-fp32", "onnx-int8", "tflite-int8"])
def test_scan_every_model_format_finds_the_events(
    tone_bundle: Path, tmp_path: Path, model_file: str
) -> None:
    write_scene(tmp_path / "rec.wav")
    result = soundwatch(
        "scan",
        str(tmp_path / "rec.wav"),
        "--model",
        str(tone_bundle),
        "--model-file",
        model_file,
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    check_against_truth(events_from_jsonl(tmp_path / "out" / "rec.wav.events.jsonl"))


def test_scan_label_filter_keeps_only_those_labels(tone_bundle: Path, tmp_path: Path) -> None:
    write_scene(tmp_path / "rec.wav")
    result = soundwatch(
        "scan",
        str(tmp_path / "rec.wav"),
        "--model",
        str(tone_bundle),
        "--labels",
        "tone-3k",
        "--out",
        str(tmp_path / "out"),
    )
    assert result.returncode == 0, result.stderr
    rows = read_csv(tmp_path / "out" / "rec.wav.probabilities.csv")
    assert list(rows[0]) == ["time", "offset_seconds", "status", "tone-3k"]
    labels = {e.label for e in events_from_jsonl(tmp_path / "out" / "rec.wav.events.jsonl")}
    assert labels == {"tone-3k"}


def test_scan_skips_bad_files_and_keeps_the_good(tone_bundle: Path, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    write_scene(folder / "a_good.wav")
    (folder / "b_corrupt.wav").write_bytes(os.urandom(5000))
    (folder / "c_empty.wav").write_bytes(b"")
    write_wav(folder / "d_nosamples.wav", np.zeros(0, dtype=np.float32), 16000)
    # NaNs where nothing happens: repaired (counted, logged), and the events still come out.
    x = scene()
    x[8 * 16000 : 9 * 16000] = np.nan
    sf.write(folder / "e_nan.wav", x, 16000, subtype="FLOAT")
    # A broken float file: values of 1e30, whose squares overflow (issue 13, item 12).
    x = scene()
    x[13 * 16000 : 14 * 16000] = 1e30
    sf.write(folder / "f_absurd.wav", x, 16000, subtype="FLOAT")
    result = soundwatch(
        "scan", str(folder), "--model", str(tone_bundle), "--out", str(tmp_path / "out")
    )

    assert result.returncode == 1  # some files were skipped: scripts can notice
    assert "Traceback" not in result.stderr
    assert "b_corrupt.wav: not a readable audio file" in result.stderr
    assert "c_empty.wav: empty" in result.stderr
    assert "d_nosamples.wav: empty" in result.stderr
    assert "e_nan.wav: 16000 bad samples (NaN, infinite, beyond ±1000) replaced or clipped" in (
        result.stderr
    )
    assert "f_absurd.wav: 16000 bad samples" in result.stderr
    assert "Warning" not in result.stderr and "overflow" not in result.stderr
    check_against_truth(events_from_jsonl(tmp_path / "out" / "f_absurd.wav.events.jsonl"))
    check_against_truth(events_from_jsonl(tmp_path / "out" / "a_good.wav.events.jsonl"))
    check_against_truth(events_from_jsonl(tmp_path / "out" / "e_nan.wav.events.jsonl"))
    assert not (tmp_path / "out" / "b_corrupt.wav.events.jsonl").exists()


def test_scan_refuses_a_tampered_bundle(tone_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "tone"
    bundle.mkdir()
    for f in tone_bundle.iterdir():
        (bundle / f.name).write_bytes(f.read_bytes())
    model = bundle / "model.int8.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\x00")
    write_scene(tmp_path / "rec.wav")
    result = soundwatch(
        "scan", str(tmp_path / "rec.wav"), "--model", str(bundle), "--out", str(tmp_path / "out")
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "model.int8.onnx has sha256" in result.stderr and "manifest.yaml:" in result.stderr


# -- run -----------------------------------------------------------------------------------------


def _run_config(tmp_path: Path, bundle: Path, source: str, extra: str = "") -> Path:
    return write_config(
        tmp_path / "config.yaml",
        f"model: {{path: {bundle}}}\n"
        f"source: {source}\n"
        f"output: {{dir: {tmp_path / 'out'}, device_id: box, print: events}}\n" + extra,
    )


def test_run_on_a_file_equals_scan(tone_bundle: Path, tmp_path: Path) -> None:
    """The daemon's per-second rows and events equal scan's for the same file."""
    wav = write_scene(tmp_path / "rec_20261122T100000.wav", rate_hz=48000)
    config = _run_config(tmp_path, tone_bundle, f"{{kind: files, paths: [{wav}], speed: 0}}")
    ran = soundwatch("run", "-c", str(config))
    assert ran.returncode == 0, ran.stderr
    scanned = soundwatch(
        "scan", str(wav), "--model", str(tone_bundle), "--out", str(tmp_path / "scan")
    )
    assert scanned.returncode == 0, scanned.stderr

    day = tmp_path / "out" / "box" / "2026-11-22"
    hourly = read_csv(day / "20261122T10.csv")
    per_file = read_csv(tmp_path / "scan" / f"{wav.name}.probabilities.csv")
    assert len(hourly) == len(per_file) == SECONDS
    for h, s in zip(hourly, per_file, strict=True):
        assert (h["time"], h["status"], h["tone-1k"], h["tone-3k"]) == (
            s["time"],
            s["status"],
            s["tone-1k"],
            s["tone-3k"],
        )
    assert events_from_jsonl(day / "events.jsonl") == events_from_jsonl(
        tmp_path / "scan" / f"{wav.name}.events.jsonl"
    )
    check_against_truth(events_from_jsonl(day / "events.jsonl"))
    assert (day / "predicted.csv").read_text() == (
        tmp_path / "scan" / f"{wav.name}-predicted.csv"
    ).read_text()
    assert "START  tone-1k" in ran.stdout and "END    tone-3k" in ran.stdout


def _read_until(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """Read proc's stdout until a line containing `text` (or fail after `timeout` s)."""
    assert proc.stdout is not None
    seen = ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            seen += line
            if text in line:
                return seen
    raise AssertionError(f"no {text!r} within {timeout} s; stdout so far:\n{seen}")


def test_sigterm_closes_open_events_and_flushes(tone_bundle: Path, tmp_path: Path) -> None:
    wav = write_scene(tmp_path / "rec_20261122T100000.wav")
    config = _run_config(tmp_path, tone_bundle, f"{{kind: files, paths: [{wav}], speed: 1}}")
    proc = subprocess.Popen(
        [*SOUNDWATCH, "run", "-c", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _read_until(proc, "START  tone-1k", timeout=30)  # the 2.0-3.0 s tone is now open
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "END    tone-1k" in out
    messages = [
        json.loads(line)
        for line in (tmp_path / "out" / "box" / "2026-11-22" / "events.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [m["type"] for m in messages] == ["start", "end"]
    assert messages[0]["id"] == messages[1]["id"]
    assert abs(messages[0]["start_offset"] - 2.0) <= 0.1
    hourly = read_csv(tmp_path / "out" / "box" / "2026-11-22" / "20261122T10.csv")
    assert 2 <= len(hourly) <= 4  # the seconds heard before the signal, all written


def test_run_demo_source_detects_its_tones(tone_bundle: Path, tmp_path: Path) -> None:
    """The built-in demo (what the README's first command shows without a microphone)."""
    config = _run_config(tmp_path, tone_bundle, "{kind: demo}", "labels: [tone-1k, tone-3k]\n")
    proc = subprocess.Popen(
        [*SOUNDWATCH, "run", "-c", str(config), "--print", "both"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        seen = _read_until(proc, "END ", timeout=30)
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert "START  tone-" in seen
    assert "tone-1k 0.0" in seen  # per-second rows printed, quiet seconds score near 0


# -- check, devices and mistakes -----------------------------------------------------------------


def test_check_accepts_a_good_config(tone_bundle: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        f"model:\n  path: {tone_bundle}\nevents:\n  labels:\n    tone-1k: {{threshold: 0.7}}\n",
    )
    result = soundwatch("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "tone-1k: threshold 0.7" in result.stdout and "tone-3k: threshold 0.5" in result.stdout


def test_check_lists_every_problem_with_its_line(tone_bundle: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml",
        f"model:\n  path: {tone_bundle}\n  threads: two\n"
        "source:\n  kind: microphone\n  speeed: 2\n",
    )
    result = soundwatch("check", "-c", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 3
    assert f"{config}:3: model.threads: expected a whole number, got 'two'" in lines[0]
    assert f"{config}:5: source.kind: must be one of" in lines[1]
    assert f"{config}:6: source.speeed: unknown key" in lines[2]


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "source: {kind: files, paths: [/nonexistent/rec.wav]}\n"
            "output: {dir: plain-file/out}\nclips: {enabled: true}\n",
            [
                "source.paths: /nonexistent/rec.wav: no such file or folder",
                "output.dir: {tmp}/plain-file/out: cannot write there (Not a directory)",
                "clips.folder: {tmp}/plain-file/out/clips: cannot write there (Not a directory)",
            ],
        ),
        (
            "source: {kind: demo}\nmqtt: {host: 127.0.0.1, username: sw, password_env:"
            " SW_UNSET_PASSWORD, outbox: /proc/soundwatch/outbox.sqlite3}\n",
            [
                "mqtt.password_env: environment variable SW_UNSET_PASSWORD is not set",
                "mqtt.outbox: /proc/soundwatch: cannot write there (No such file or directory)",
            ],
        ),
    ],
)
def test_check_refuses_what_run_refuses_with_the_same_lines(
    tone_bundle: Path, tmp_path: Path, extra: str, expected: list[str]
) -> None:
    """Once `check` passed these and `run` refused them, or crashed writing its first row
    (issue 13, item 7); now both run the same preflight and print every problem."""
    (tmp_path / "plain-file").write_text("not a folder")
    config = write_config(tmp_path / "c.yaml", f"model:\n  path: {tone_bundle}\n{extra}")
    wanted = [f"soundwatch: error: {line.format(tmp=tmp_path)}" for line in expected]
    for command in ("check", "run"):
        result = subprocess.run(
            [*SOUNDWATCH, command, "-c", str(config)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env={k: v for k, v in os.environ.items() if k != "SW_UNSET_PASSWORD"},
        )
        assert result.returncode == 2, (command, result.stderr)
        assert result.stderr.strip().splitlines() == wanted, command


def test_check_names_labels_the_bundle_lacks(tone_bundle: Path, tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "c.yaml", f"model: {{path: {tone_bundle}}}\nlabels: [tone-1k, whistle]\n"
    )
    result = soundwatch("check", "-c", str(config))
    assert result.returncode == 2
    assert (
        f"{config}:2: labels[1]: 'whistle' is not a label of tone (its labels: tone-1k, tone-3k)"
        in result.stderr
    )


def test_devices_lists_the_pulse_device(pulse_server: object) -> None:
    result = soundwatch("devices")
    assert result.returncode == 0, result.stderr
    assert "pulse" in result.stdout


def test_run_with_a_missing_device_says_which_and_waits_for_it(
    tone_bundle: Path, tmp_path: Path, pulse_server: object
) -> None:
    """A microphone absent at boot is waited for (issue 5), and the log says which one and
    what devices there are; SIGTERM still ends the daemon cleanly."""
    config = _run_config(tmp_path, tone_bundle, "{kind: device, device: 'USB Mic 9000'}")
    log = tmp_path / "daemon.log"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [*SOUNDWATCH, "run", "-c", str(config)],
            stdout=subprocess.DEVNULL,
            stderr=err,
            text=True,
        )
        try:
            deadline = time.monotonic() + 30
            while "waiting for it to come back" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        finally:
            proc.kill()
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "Traceback" not in text
    assert "USB Mic 9000" in text and "pulse" in text


def test_run_with_a_refused_sample_rate_says_so(
    tone_bundle: Path, tmp_path: Path, pulse_server: object
) -> None:
    config = _run_config(
        tmp_path, tone_bundle, "{kind: device, device: pulse, sample_rate_hz: 1000000}"
    )
    result = soundwatch("run", "-c", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "1000000" in result.stderr


# -- command-line overrides: checked like the config file's own values ---------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--threads", "-2"], "--threads: must be within 1..256, got -2"),
        (["--threads", "0"], "--threads: must be within 1..256, got 0"),  # was silently ignored
        (
            ["--hop", "0"],
            "--hop: must be more than 0 and at most 3600, got 0.0",
        ),  # was silently ignored
        (["--hop", "-0.5"], "--hop: must be more than 0 and at most 3600, got -0.5"),
        (["--labels", ","], "--labels: must name at least one label (or null: all)"),
    ],
)
def test_check_refuses_a_bad_override_naming_its_flag(
    tone_bundle: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    assert main(["check", "--model", str(tone_bundle), *flags]) == 2
    assert capsys.readouterr().err == f"soundwatch: error: {message}\n"


def test_check_override_beats_the_file_and_names_the_flag(
    tone_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    config = write_config(tmp_path / "c.yaml", f"model:\n  path: {tone_bundle}\n  threads: 2\n")
    assert main(["check", "-c", str(config), "--threads", "0"]) == 2
    assert capsys.readouterr().err == "soundwatch: error: --threads: must be within 1..256, got 0\n"


@pytest.mark.parametrize("name", ["tone", "flysong"])
def test_model_flag_takes_a_bundled_name_like_the_config(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from edge.cli import main

    monkeypatch.chdir(tmp_path)  # no models/ folder here: the name must be found as a bundled one
    assert main(["check", "--model", name]) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert f"model {name} " in out.splitlines()[1]


def test_scan_refuses_bad_start_and_batch_in_one_line(tone_bundle: Path, tmp_path: Path) -> None:
    wav = write_wav(tmp_path / "a.wav", tone(1000, 1.0, 16000), 16000)
    for flags, message in [
        (
            ["--start", "yesterday"],
            "--start: not an ISO 8601 time: 'yesterday' (e.g. 2026-11-22T10:23:14Z)",
        ),
        (["--batch", "0"], "--batch: must be within 1..4096, got 0"),  # 0 was silently ignored
    ]:
        args = ["scan", str(wav), "--model", str(tone_bundle), "--out", str(tmp_path / "o")]
        result = soundwatch(*args, *flags)
        assert result.returncode == 2, result.stderr
        assert result.stderr == f"soundwatch: error: {message}\n"
        assert not (tmp_path / "o").exists()


def test_scan_takes_odd_names_and_fails_a_file_alone(tone_bundle: Path, tmp_path: Path) -> None:
    """A name that is not UTF-8 and one of 245 characters used to end the folder's scan with a
    traceback, losing every good file's outputs (issue 13, item 1). Now both are scored, their
    outputs named within the file system's 255 bytes; a file whose outputs cannot be written
    (a file sits where its output folder would go) is skipped alone, with its reason."""
    folder = tmp_path / "in"
    write_scene(folder / "a_good.wav")
    odd = os.fsdecode(os.fsencode(str(folder)) + b"/b_\xff\xfe.wav")
    os.rename(write_scene(folder / "b.wav"), odd)  # libsndfile's writer wants UTF-8 names
    long = folder / ("c_" + "L" * 243 + ".wav")
    write_scene(long)
    write_scene(folder / "sub" / "d_blocked.wav")
    out = tmp_path / "out"
    out.mkdir()
    (out / "sub").write_text("a file where the folder would go")
    result = soundwatch("scan", str(folder), "--model", str(tone_bundle), "--out", str(out))

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "d_blocked.wav: cannot write its outputs" in result.stderr
    assert "3 file(s) scored" in result.stderr and "1 skipped" in result.stderr
    names = [p.name for p in out.iterdir() if p.name.endswith(".events.jsonl")]
    assert len(names) == 3 and all(len(os.fsencode(n)) <= 255 for n in names)
    for name in names:
        check_against_truth(events_from_jsonl(out / name))
    cut = [n for n in names if n.startswith("c_")]
    assert len(cut) == 1 and "~" in cut[0]  # cut, with a hash of the whole name
    predicted = (out / (Path(odd).name + "-predicted.csv")).read_bytes()
    assert b"b_\\udcff\\udcfe.wav" in predicted  # the name's bytes, escaped, in valid UTF-8
