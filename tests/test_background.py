"""A bundle's background labels (flysong's `ambient`): scored every second like any label, but
no events, no clips and no Home Assistant sensor, unless the config asks (`events.background`).

The tone bundle stands in for a model with a background class: its `tone-3k` is declared
background, and a recording with bursts of both tones shows what each label still produces.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.audio import tone_events, write_wav
from tests.conftest import daemon_config, run_to_end
from tests.mqtt_broker import Mosquitto, Subscriber

RATE = 16000
BURSTS = [(1.0, 2.0, 1000.0), (3.0, 4.0, 3000.0), (5.0, 6.0, 1000.0), (7.0, 8.0, 3000.0)]


def with_background(tone_bundle: Path, folder: Path, background: object) -> Path:
    """A copy of the tone bundle whose manifest names `background`."""
    copy = folder / "tone-bg"
    shutil.copytree(tone_bundle, copy)
    manifest = yaml.safe_load((copy / "manifest.yaml").read_text())
    manifest["background"] = background
    (copy / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return copy


def run_on_bursts(folder: Path, bundle: Path, extra: str = "") -> tuple[list[dict], list[dict]]:
    """The daemon over a 9 s recording of the bursts: (per-second rows, event messages)."""
    wav = write_wav(folder / "rec_20261122T100000.wav", tone_events(RATE, 9.0, BURSTS), RATE)
    config = folder / "config.yaml"
    source = f"{{kind: files, paths: [{wav}], speed: 0}}"
    config.write_text(daemon_config(folder, bundle, source, extra))
    run_to_end(config)
    day = folder / "out" / "box" / "2026-11-22"
    with (day / "20261122T10.csv").open() as f:
        rows = list(csv.DictReader(f))
    events = [json.loads(line) for line in (day / "events.jsonl").read_text().splitlines()]
    return rows, events


def loud_seconds(rows: list[dict], label: str) -> list[int]:
    return [i for i, row in enumerate(rows) if row[label] and float(row[label]) > 0.5]


def test_a_background_label_is_scored_every_second_but_makes_no_events(
    tone_bundle: Path, tmp_path: Path
) -> None:
    bundle = with_background(tone_bundle, tmp_path, ["tone-3k"])
    rows, events = run_on_bursts(tmp_path, bundle)
    # Both labels are in the rows, and the background one is high exactly in its bursts.
    assert loud_seconds(rows, "tone-3k") == [3, 7]
    assert loud_seconds(rows, "tone-1k") == [1, 5]
    assert {e["label"] for e in events} == {"tone-1k"}
    assert len([e for e in events if e["type"] == "end"]) == 2


def test_the_config_can_ask_for_background_events(tone_bundle: Path, tmp_path: Path) -> None:
    bundle = with_background(tone_bundle, tmp_path, ["tone-3k"])
    _, events = run_on_bursts(tmp_path, bundle, "events: {background: true}\n")
    ends = sorted((e["label"], round(e["start_offset"])) for e in events if e["type"] == "end")
    assert ends == [("tone-1k", 1), ("tone-1k", 5), ("tone-3k", 3), ("tone-3k", 7)]


def test_home_assistant_gets_no_sensor_for_a_background_label(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto
) -> None:
    bundle = with_background(tone_bundle, tmp_path, ["tone-3k"])
    mqtt = f"mqtt: {{host: {broker.host}, port: {broker.port}, homeassistant: true}}\n"
    run_on_bursts(tmp_path, bundle, mqtt)
    # Discovery is retained: a subscriber after the run still sees every sensor announced.
    subscriber = Subscriber(broker, ["homeassistant/#"])
    try:
        seen = subscriber.wait_for(lambda ms: len(ms) >= 2, 10, "retained discovery")
    finally:
        subscriber.close()
    sensors = sorted(m.topic for m in seen if "/binary_sensor/" in m.topic)
    assert sensors == ["homeassistant/binary_sensor/soundwatch_box/tone-1k/config"]


@pytest.mark.parametrize(
    ("background", "message"),
    [
        (["tone-2k"], "background.0: 'tone-2k' is not one of the labels"),
        ("tone-3k", "background"),
    ],
)
def test_a_background_that_is_not_a_list_of_labels_is_refused_naming_the_field(
    tone_bundle: Path, tmp_path: Path, background: object, message: str
) -> None:
    bundle = with_background(tone_bundle, tmp_path, background)
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check", "--model", str(bundle)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_the_trainer_marks_background_labels_for_the_bundle() -> None:
    from edge.errors import ConfigError
    from trainer.config import TrainConfig
    from trainer.resolve import resolve

    labels = ["ambient", "mel-pulse", "mel-sine"]
    # By name when the config says nothing; as given when it does; an unknown one is refused.
    assert resolve(TrainConfig(), 2500, labels).background == ["ambient"]
    assert resolve(TrainConfig(), 2500, ["a", "b"]).background == []
    assert resolve(TrainConfig(background=["mel-sine"]), 2500, labels).background == ["mel-sine"]
    with pytest.raises(ConfigError, match="background: noise not among the labels"):
        resolve(TrainConfig(background=["noise"]), 2500, labels)


def test_wrong_detections_train_as_background_unless_they_lie_on_a_labelled_sound() -> None:
    """Fine-tuning an exclusive model: `not_<label>` rows become its background label, but a
    row within a window of an annotated sound (SongExplorer's notsong rows often lie on the
    other song type) is left out: it is no background."""
    from trainer.annotations import Annotation, AnnotationSet
    from trainer.config import TrainConfig
    from trainer.finetune import wrong_as_background
    from trainer.resolve import resolve

    config = resolve(TrainConfig(), 2500, ["ambient", "mel-pulse", "mel-sine"])
    rec, other = Path("/r/a.wav"), Path("/r/b.wav")
    rows = [
        Annotation(rec, 10.0, 12.0, "mel-sine", "a:1"),
        Annotation(rec, 20.0, 20.0, "mel-pulse", "a:2"),
        Annotation(rec, 11.0, 11.0, "not_mel-pulse", "a:3"),  # inside the sine song
        Annotation(rec, 12.15, 12.15, "not_mel-pulse", "a:4"),  # 0.15 s after it: one window
        Annotation(rec, 12.25, 12.25, "not_mel-pulse", "a:5"),  # 0.25 s after: clear of it
        Annotation(rec, 19.9, 19.9, "not_mel-sine", "a:6"),  # on a pulse
        Annotation(other, 11.0, 11.0, "not_mel-pulse", "b:1"),  # another recording
        Annotation(rec, 30.0, 31.0, "ambient", "a:7"),
        Annotation(rec, 30.5, 30.5, "not_mel-sine", "a:8"),  # on background: still background
    ]
    said: list[str] = []
    kept = wrong_as_background(AnnotationSet(rows), config, said.append)
    assert [(a.origin, a.label) for a in kept.annotations] == [
        ("a:1", "mel-sine"), ("a:2", "mel-pulse"), ("a:5", "ambient"), ("b:1", "ambient"),
        ("a:7", "ambient"), ("a:8", "ambient"),
    ]  # fmt: skip
    assert said == [
        "3 wrong detections (not_<label>) train as ambient",
        "3 not_<label> rows lie within a window of a label's annotated sound: left out",
    ]
