"""Levels and clips from the whole daemon: hourly CSV columns, event clips on disk, the metrics
endpoint, a full disk, retention, and the MQTT `levels` topic against a real mosquitto.

`soundwatch run` runs as a subprocess where the endpoint or the broker must see it while it
runs (files replayed in real time); the in-process `App` where the outcome is on disk after a
run at full speed (its registry then served by a fresh MetricsServer for the scrape).
"""

from __future__ import annotations

import csv
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import soundfile as sf
import yaml

from edge.app import App
from edge.audio.levels import LevelSettings, bands_for, calibration_offset_db
from edge.config import load_config
from edge.ops.metrics import MetricsServer
from tests.audio import noise, tone, tone_events, write_wav
from tests.conftest import Daemon, Scrape, daemon_config, run_to_end
from tests.mqtt_broker import Mosquitto, Subscriber
from tests.scenes import TRUTH, write_scene
from tests.test_evidence import TONE_DBFS, expected, timeline

ROOT = Path(__file__).resolve().parent.parent
LEVELS_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((ROOT / "schemas" / "levels.schema.json").read_text())
)
OCTAVE_NAMES = [b.name for b in bands_for(LevelSettings(bands="octave"), 48000)]
START = "2026-11-22T10:00:00.300Z"  # the first row is 10:00:00, 0.7 s long


def wait_scrape(daemon: Daemon, ready: Callable[[Scrape], bool], timeout: float = 30.0) -> Scrape:
    """Scrape until `ready`; fail naming the last scrape if it never is."""
    deadline = time.monotonic() + timeout
    while True:
        if daemon.process.poll() is not None:
            pytest.fail(f"daemon exited ({daemon.process.returncode}) first:\n{daemon.log()}")
        scrape = daemon.scrape()
        if ready(scrape):
            return scrape
        if time.monotonic() > deadline:
            pytest.fail(f"metrics never ready within {timeout} s:\n{scrape.text}\n{daemon.log()}")
        time.sleep(0.1)


def clips_on_disk(out: Path) -> list[Path]:
    return sorted((out / "clips").glob("*/*.wav"))


def hourly_csvs(out: Path) -> list[Path]:
    """The per-second CSVs (`<YYYYMMDDTHH>.csv`; a files source also writes predicted.csv)."""
    return sorted((out / "box").glob("*/????????T??.csv"))


def hourly_rows(out: Path) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = []
    for hour in hourly_csvs(out):
        with hour.open(newline="") as f:
            rows += list(csv.DictReader(f))
    return rows


def test_the_daemon_writes_levels_and_clips_and_serves_their_metrics(
    tone_bundle: Path, tmp_path: Path
) -> None:
    rate = 48000
    events = [(1.0, 2.0, 1000.0), (2.5, 3.3, 3000.0)]
    signal = tone_events(rate, 9.0, events, noise_amplitude=0.01, tone_amplitude=0.3, seed=8)
    wav = write_wav(tmp_path / "rec.wav", signal, rate)
    source = f"{{kind: files, paths: [{wav}], speed: 1, start: '{START}'}}"
    extra = (
        "levels: {enabled: true, bands: octave}\n"
        "clips: {enabled: true, pre_roll_seconds: 0.5, post_roll_seconds: 0.5}\n"
    )
    out = tmp_path / "out"
    with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle, source, extra)) as daemon:
        # Both clips are written once 3.8 s of audio are in; from 6 s on, rows are noise only.
        scrape = wait_scrape(
            daemon,
            lambda s: (
                s.value("soundwatch_clips_total", result="written") == 2
                and s.value("soundwatch_audio_seconds_total") >= 6.0
            ),
        )
        on_disk = clips_on_disk(out)  # while the daemon still runs: what the scrape counted
        code = daemon.process.wait(timeout=30)  # the file ends: so does the daemon
    assert code == 0, daemon.log()

    assert len(on_disk) == 2
    assert scrape.labelled("soundwatch_clips_total") == {"written": 2, "failed": 0, "skipped": 0}
    assert scrape.value("soundwatch_clips_bytes") == sum(p.stat().st_size for p in on_disk)
    assert scrape.value("soundwatch_clips_paused") == 0
    assert scrape.value("soundwatch_clips_deleted_total") == 0

    messages = daemon.events()
    assert [(m["type"], m["label"]) for m in messages] == [
        ("start", "tone-1k"),
        ("end", "tone-1k"),
        ("start", "tone-3k"),
        ("end", "tone-3k"),
    ]
    assert sorted({str(m["clip"]) for m in messages}) == [str(p) for p in on_disk]
    for start, end in (messages[0:2], messages[2:4]):
        assert start["clip"] == end["clip"] and start["id"] == end["id"]
        clip, clip_rate = sf.read(str(end["clip"]), dtype="float32")
        assert clip_rate == rate  # the source's rate, not the model's
        assert isinstance(end["end_offset"], float) and isinstance(end["start_offset"], float)
        seconds = end["end_offset"] - end["start_offset"] + 1.0
        assert len(clip) == pytest.approx(seconds * rate, abs=1)

    rows = hourly_rows(out)
    header = list(rows[0])
    assert header == [
        "time",
        "status",
        "tone-1k",
        "tone-3k",
        "dbfs",
        *(f"dbfs_{name}hz" for name in OCTAVE_NAMES),
    ]
    assert [r["time"] for r in rows] == [f"2026-11-22T10:00:0{s}.000Z" for s in range(10)]
    parts = timeline((rate, signal.astype(np.float32)))
    for k, row in enumerate(rows, start=-1):
        truth = expected(parts, k)
        assert truth is not None
        # int16 in the WAV, two decimals in the CSV.
        assert float(row["dbfs"]) == pytest.approx(truth[0], abs=0.05), row
    second = rows[1]  # 10:00:01: 0.7 s of the 1 kHz tone
    bands = {name: float(second[f"dbfs_{name}hz"]) for name in OCTAVE_NAMES}
    assert max(bands, key=bands.__getitem__) == "1000"

    level = scrape.value("soundwatch_sound_level_db", band="broadband", unit="dBFS")
    assert level == pytest.approx(-40.0, abs=0.3)  # a second of noise of RMS 0.01
    assert any(abs(float(r["dbfs"]) - level) <= 0.005 for r in rows)  # one row's own value
    gauges = {
        dict(labels)["band"]
        for name, labels in scrape.samples
        if name == "soundwatch_sound_level_db"
    }
    assert gauges == {"broadband", *OCTAVE_NAMES}


# -- the daemon in this process, at full speed --------------------------------------------------


def run_app(folder: Path, bundle: Path, source: dict[str, Any], **sections: Any) -> App:
    """`App.run()` on a config of `sections` (files under folder/out, device box)."""
    config = {
        "model": {"path": str(bundle)},
        "source": source,
        "output": {"dir": str(folder / "out"), "device_id": "box", "print": "none"},
        "metrics": {"enabled": False},
        **sections,
    }
    path = folder / "config.yaml"
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    app = App(load_config(path))
    assert app.run() == 0
    return app


def scrape_app(app: App) -> Scrape:
    """The app's metrics as the endpoint serves them."""
    server = MetricsServer(app.metrics, "127.0.0.1:0")
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as answer:
            return Scrape(answer.read().decode())
    finally:
        server.close()


def messages(out: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)
        for path in sorted((out / "box").glob("*/events.jsonl"))
        for line in path.read_text().splitlines()
    ]


def outline(message: dict[str, Any]) -> tuple[object, ...]:
    """An event message without its id (a fresh uuid per run) and clip."""
    return tuple(v for k, v in message.items() if k not in ("id", "clip"))


@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Any]:
    """A files source: 20 s at 16 kHz with six tone events (tests/scenes.py)."""
    wav = write_scene(tmp_path / "rec_20261122T100000.wav")
    return {"kind": "files", "paths": [str(wav)], "speed": 0}


CLIPS = {"enabled": True, "pre_roll_seconds": 1.0, "post_roll_seconds": 0.5}


def test_a_full_disk_stops_clips_not_events(
    tone_bundle: Path, tmp_path: Path, scene: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    kept = run_app(tmp_path / "kept", tone_bundle, scene, clips=CLIPS)
    made = messages(tmp_path / "kept" / "out")
    assert len(made) == 2 * len(TRUTH)
    assert all(m["clip"] is not None and Path(m["clip"]).is_file() for m in made)
    assert len(clips_on_disk(tmp_path / "kept" / "out")) == len(TRUTH)
    assert scrape_app(kept).labelled("soundwatch_clips_total") == {
        "written": 6,
        "failed": 0,
        "skipped": 0,
    }

    full = {**CLIPS, "min_free_mb": 10**9}  # a petabyte: no disk has it free
    with caplog.at_level(logging.WARNING):
        stopped = run_app(tmp_path / "full", tone_bundle, scene, clips=full)
    got = messages(tmp_path / "full" / "out")
    assert [outline(m) for m in got] == [outline(m) for m in made]  # every event, as before
    assert all(m["clip"] is None for m in got[2:])
    assert clips_on_disk(tmp_path / "full" / "out") == []
    scrape = scrape_app(stopped)
    # The first clip fails when its post-roll is in; clips then pause for 60 s of audio, so
    # the five later events get none.
    assert scrape.labelled("soundwatch_clips_total") == {"written": 0, "failed": 1, "skipped": 5}
    assert scrape.value("soundwatch_clips_paused") == 1
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "clips paused" in warnings[0].getMessage()
    assert "min_free_mb is 1e+09" in warnings[0].getMessage()


def test_retention_keeps_clips_under_max_total_mb(
    tone_bundle: Path, tmp_path: Path, scene: dict[str, Any]
) -> None:
    """Each clip is 64-128 kB (int16 at 16 kHz); 0.2 MB holds two or three."""
    app = run_app(tmp_path, tone_bundle, scene, clips={**CLIPS, "max_total_mb": 0.2})
    left = clips_on_disk(tmp_path / "out")
    total = sum(p.stat().st_size for p in left)
    assert 0 < total <= 200_000
    scrape = scrape_app(app)
    assert scrape.labelled("soundwatch_clips_total") == {"written": 6, "failed": 0, "skipped": 0}
    deleted = scrape.value("soundwatch_clips_deleted_total")
    assert deleted >= 2 and deleted == 6 - len(left)
    assert scrape.value("soundwatch_clips_bytes") == total
    paths = [m["clip"] for m in messages(tmp_path / "out") if m["type"] == "end"]
    assert Path(paths[-1]).is_file()  # the newest clip is kept
    assert sorted(str(p) for p in left) == sorted(p for p in paths if Path(p).is_file())


# -- MQTT ------------------------------------------------------------------------------------------


def loud_then_quiet(path: Path, rate: int = 48000) -> tuple[Path, np.ndarray]:
    """2 s of a 1 kHz sine of peak 0.5 (-9.03 dBFS), then 3 s of noise of RMS 0.01."""
    signal = np.concatenate([tone(1000.0, 2.0, rate, 0.5), noise(3.0, rate, 0.01, seed=9)])
    return write_wav(path, signal, rate, subtype="FLOAT"), signal


def test_levels_on_mqtt_match_the_audio(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto
) -> None:
    wav, signal = loud_then_quiet(tmp_path / "rec_20261122T100000.wav")
    config = {
        "model": {"path": str(tone_bundle)},
        "source": {"kind": "files", "paths": [str(wav)], "speed": 1},
        "output": {"dir": str(tmp_path / "out"), "device_id": "box", "print": "none"},
        "mqtt": {"host": broker.host, "port": broker.port},
        "metrics": {"enabled": False},
        "levels": {"enabled": True, "bands": "octave"},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    subscriber = Subscriber(broker, ["soundwatch/box/levels"])
    run_to_end(path)
    subscriber.wait_for(lambda ms: len(ms) >= 3, 10, "three levels messages")
    subscriber.close()
    # QoS 0, best effort: a second published before the connection is up (or while the daemon
    # stops) may be missing; every one that came must be right.
    got = [m.json() for m in subscriber.messages("/levels")]
    assert len(got) >= 3, got
    parts = timeline((48000, signal))
    for payload in got:
        LEVELS_SCHEMA.validate(payload)
        second = int(payload["time"][17:19])  # 2026-11-22T10:00:0S.000Z: the anchor is whole
        assert payload["time"] == f"2026-11-22T10:00:0{second}.000Z"
        truth = expected(parts, second, phase=0.0)
        assert truth is not None
        assert (payload["unit"], list(payload["bands"]), payload["audio_seconds"]) == (
            "dBFS",
            OCTAVE_NAMES,
            1.0,
        )
        assert payload["dbfs"] == pytest.approx(truth[0], abs=0.01), payload
        if second < 2:
            assert payload["dbfs"] == pytest.approx(TONE_DBFS, abs=0.01)
            assert payload["bands"]["1000"] == pytest.approx(TONE_DBFS, abs=0.01)
        else:
            assert payload["dbfs"] == pytest.approx(-40.0, abs=0.1)


def test_calibrated_levels_in_the_csv_on_mqtt_and_on_stdout(
    tone_bundle: Path,
    tmp_path: Path,
    broker: Mosquitto,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A -38 dBV/Pa microphone, no gain, 1 V full scale: dB re 20 µPa = dBFS + 38 + 93.98."""
    wav, signal = loud_then_quiet(tmp_path / "rec_20261122T100000.wav")
    offset = calibration_offset_db(-38.0, 0.0, 1.0, "air")
    assert offset == pytest.approx(38 + 93.98, abs=0.005)
    subscriber = Subscriber(broker, ["soundwatch/box/levels"])
    run_app(
        tmp_path,
        tone_bundle,
        {"kind": "files", "paths": [str(wav)], "speed": 1},
        output={"dir": str(tmp_path / "out"), "device_id": "box", "print": "seconds"},
        mqtt={"host": broker.host, "port": broker.port},
        levels={"enabled": True, "sensitivity_db": -38, "adc_full_scale_volts": 1, "gain_db": 0},
    )
    subscriber.wait_for(lambda ms: len(ms) >= 3, 10, "three levels messages")
    subscriber.close()
    parts = timeline((48000, signal))
    want = {}
    for second in range(5):
        truth = expected(parts, second, phase=0.0)
        assert truth is not None
        want[f"2026-11-22T10:00:0{second}.000Z"] = truth[0] + offset

    (hour,) = hourly_csvs(tmp_path / "out")
    rows = hour.read_text().splitlines()
    assert rows[0] == "time,status,tone-1k,tone-3k,db_re_20upa"
    cells = {line.split(",")[0]: float(line.split(",")[-1]) for line in rows[1:]}
    assert cells == pytest.approx(want, abs=0.01)
    assert cells["2026-11-22T10:00:00.000Z"] == pytest.approx(TONE_DBFS + offset, abs=0.01)

    got = [m.json() for m in subscriber.messages("/levels")]
    assert len(got) >= 3, got
    for payload in got:
        LEVELS_SCHEMA.validate(payload)
        assert "dbfs" not in payload and payload["unit"] == "dB re 20 µPa"
        assert payload["bands"] == {}
        assert payload["db"] == pytest.approx(want[payload["time"]], abs=0.01)

    printed = [line for line in capsys.readouterr().out.splitlines() if "dB re 20" in line]
    assert len(printed) == 5
    assert printed[0].endswith(f"{TONE_DBFS + offset:.1f} dB re 20 µPa")
