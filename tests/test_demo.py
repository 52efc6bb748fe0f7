"""The demo source: the fly-song scene is what the bundled flysong model detects, the stream plays
that scene in real time and stops when told, and the tones scene is the first demo unchanged."""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.audio import demo
from edge.audio.demo import (
    BACKGROUND_RMS,
    FLYSONG_RATE_HZ,
    GAP_SECONDS,
    LEAD_SECONDS,
    PULSE_LABEL,
    PULSE_TRAIN_SECONDS,
    SCENES,
    SEGMENT_SECONDS,
    SINE_LABEL,
    SINE_TRAIN_SECONDS,
    TONES_RATE_HZ,
    Song,
    demo_stream,
    flysong_scene,
    tone_blocks,
)
from edge.audio.streams import Stream
from edge.detection.analysis import Analyzer, LabelSetup
from edge.errors import ConfigError
from edge.model.bundle import Bundle, load_bundle
from edge.model.rules import EventRules
from edge.records import Sink
from edge.scan import scan

FLYSONG = Path(__file__).resolve().parents[1] / "models" / "flysong"
HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None
ANCHOR = datetime(2026, 11, 22, 6, 0, 0, tzinfo=timezone.utc)

SCENE_SECONDS = 60.0
SCENE_SEED = 3
# Measured on 20 scenes of 40 s (275 trains; onnx-int8, tflite-int8, 2500 and 16000 Hz files,
# median 1 / merge 0 and median 3 / merge 0.1): every train found once, no false events;
# onsets -0.078..+0.037 s from the truth, offsets +0.010..+0.125 s (the last 0.2 s window that
# still holds song is centred ~0.1 s after it). The bounds leave a little room above that.
ONSET_TOLERANCE_SECONDS = 0.1
OFFSET_TOLERANCE_SECONDS = 0.15
AMBIENT_OVERLAP_SECONDS = 0.05  # measured at most 0.019 s of ambient event inside a train


class Instant(threading.Event):
    """A stop event that is never set and never waits: the demo runs as fast as it can."""

    def wait(self, timeout: float | None = None) -> bool:
        return False


@pytest.fixture(scope="module")
def flysong() -> Bundle:
    return load_bundle(FLYSONG)


def _next_block(stream: Stream) -> np.ndarray:
    """The stream's next item, which for the demo is always audio, never a Gap."""
    block = next(stream.blocks)
    assert isinstance(block, np.ndarray)
    return block


def _found(out: Path) -> list[Song]:
    """Complete events in a scan's JSONL, as (start, end, label) offsets."""
    found = []
    for line in (out / "scene.wav.events.jsonl").read_text().splitlines():
        msg = json.loads(line)
        if msg["type"] == "end":
            found.append(Song(msg["start_offset"], msg["end_offset"], msg["label"]))
    return found


def test_scene_is_alternating_trains_in_quiet() -> None:
    audio, songs = flysong_scene(SCENE_SECONDS, FLYSONG_RATE_HZ, np.random.default_rng(SCENE_SEED))
    assert audio.dtype == np.float32 and audio.shape == (round(SCENE_SECONDS * FLYSONG_RATE_HZ),)
    assert np.max(np.abs(audio)) < 0.5
    assert len(songs) >= 12
    assert all(a.label != b.label for a, b in pairwise(songs))
    assert songs[0].start_s >= LEAD_SECONDS and songs[-1].end_s <= SCENE_SECONDS - LEAD_SECONDS
    for song, after in pairwise(songs):
        assert after.start_s - song.end_s >= GAP_SECONDS[0]
    for song in songs:
        low, high = PULSE_TRAIN_SECONDS if song.label == PULSE_LABEL else SINE_TRAIN_SECONDS
        # A pulse train ends with its last whole pulse: up to one interval short of its draw.
        assert low - 0.05 <= song.end_s - song.start_s <= high + 1e-9
    # Between trains only the background, at its level.
    quiet = np.ones(len(audio), dtype=bool)
    for song in songs:
        quiet[round(song.start_s * FLYSONG_RATE_HZ) : round(song.end_s * FLYSONG_RATE_HZ)] = False
    assert np.sqrt(np.mean(audio[quiet] ** 2)) == pytest.approx(BACKGROUND_RMS, rel=0.05)
    again, same = flysong_scene(SCENE_SECONDS, FLYSONG_RATE_HZ, np.random.default_rng(SCENE_SEED))
    assert np.array_equal(audio, again) and songs == same


@pytest.mark.parametrize(
    ("file", "rate_hz", "median_windows", "merge_gap_seconds"),
    [
        ("onnx-int8", FLYSONG_RATE_HZ, 1, 0.0),  # the committed manifest's event defaults
        ("onnx-int8", FLYSONG_RATE_HZ, 3, 0.1),  # the re-exported bundle's
        ("onnx-int8", 16000, 1, 0.0),  # resampled to the model's rate on the way in
        ("tflite-int8", FLYSONG_RATE_HZ, 3, 0.1),
    ],
)
def test_flysong_model_finds_every_train(
    flysong: Bundle,
    tmp_path: Path,
    file: str,
    rate_hz: int,
    median_windows: int,
    merge_gap_seconds: float,
) -> None:
    """`scan` with models/flysong on the scene: per label, recall 1 and precision 1."""
    if file.startswith("tflite") and not HAS_LITERT:
        pytest.skip("ai_edge_litert not installed: pip install 'soundwatch[tflite]'")
    audio, songs = flysong_scene(SCENE_SECONDS, rate_hz, np.random.default_rng(SCENE_SEED))
    sf.write(tmp_path / "scene.wav", audio, rate_hz, subtype="PCM_16")
    labels = [
        LabelSetup(
            label,
            index,
            EventRules(
                threshold=flysong.manifest.thresholds[label],
                median_windows=median_windows,
                merge_gap_seconds=merge_gap_seconds,
            ),
        )
        for index, label in enumerate(flysong.labels)
    ]
    analyzer = Analyzer(
        flysong, flysong.open(file), labels, Sink(), hop_samples=flysong.hop_samples
    )
    scan(analyzer, [tmp_path / "scene.wav"], tmp_path / "out", device="test", progress=False)
    found = _found(tmp_path / "out")

    song_events = [f for f in found if f.label != "ambient"]
    for label in (PULSE_LABEL, SINE_LABEL):
        truth = [s for s in songs if s.label == label]
        events = [f for f in song_events if f.label == label]
        assert len(truth) >= 6
        assert len(events) == len(truth), f"{label}: {events} for {truth}"  # precision = recall
        for song, event in zip(truth, events, strict=True):
            assert abs(event.start_s - song.start_s) <= ONSET_TOLERANCE_SECONDS, (song, event)
            assert abs(event.end_s - song.end_s) <= OFFSET_TOLERANCE_SECONDS, (song, event)
    for event in (f for f in found if f.label == "ambient"):
        for song in songs:
            overlap = min(event.end_s, song.end_s) - max(event.start_s, song.start_s)
            assert overlap <= AMBIENT_OVERLAP_SECONDS, (event, song)


def test_flysong_stream_plays_consecutive_scenes() -> None:
    """The stream is the tested scene, segment after segment, in blocks of any size."""
    stream = demo_stream("flysong", 0.037, Instant(), ANCHOR, seed=11)
    assert (stream.name, stream.anchor, stream.rate_hz, stream.channels) == (
        "demo:flysong",
        ANCHOR,
        FLYSONG_RATE_HZ,
        1,
    )
    block = round(0.037 * FLYSONG_RATE_HZ)
    n_blocks = int(2.5 * SEGMENT_SECONDS * FLYSONG_RATE_HZ) // block
    played = np.concatenate([_next_block(stream)[:, 0].copy() for _ in range(n_blocks)])
    rng = np.random.default_rng(11)
    scenes = [flysong_scene(SEGMENT_SECONDS, FLYSONG_RATE_HZ, rng)[0] for _ in range(3)]
    assert np.array_equal(played, np.concatenate(scenes)[: len(played)])


def test_stream_is_paced_and_stops_when_told() -> None:
    stop = threading.Event()
    stream = demo_stream("flysong", 0.02, stop, ANCHOR)
    blocks = [_next_block(stream) for _ in range(3)]  # about 60 ms of real time
    assert all(b.shape == (50, 1) and b.dtype == np.float32 for b in blocks)
    stop.set()
    assert list(stream.blocks) == []
    # A stop set while the stream waits for its next block ends the wait: no block comes, so a
    # 60 s block is never delivered (the test would take a minute and fail if the wait went on).
    stop = threading.Event()
    stream = demo_stream("tones", 60.0, stop, ANCHOR)
    timer = threading.Timer(0.1, stop.set)
    timer.start()
    try:
        assert list(stream.blocks) == []
    finally:
        timer.cancel()


def _first_demo_blocks(block_seconds: float, seed: int) -> Iterator[np.ndarray]:
    """`edge.audio.streams._demo_blocks` as it was before
    edge/audio/demo.py, unpaced: the reference."""
    rate = 16000
    rng = np.random.default_rng(seed)
    block = round(block_seconds * rate)
    out = np.empty((block, 1), dtype=np.float32)
    index = np.arange(block)
    n = 0
    burst_start, burst_end, freq = rate, rate, 0.0
    while True:
        if n >= burst_end:
            burst_start = n + int(rng.uniform(1.0, 4.0) * rate)
            burst_end = burst_start + int(rng.uniform(0.4, 1.5) * rate)
            freq = float(rng.choice((1000.0, 3000.0)))
        out[:, 0] = rng.normal(0.0, 0.01, block)
        on = (n + index >= burst_start) & (n + index < burst_end)
        if on.any():
            out[on, 0] += 0.3 * np.sin(2 * np.pi * freq * (n + index[on]) / rate)
        n += block
        yield out


@pytest.mark.parametrize("block_seconds", [0.1, 0.0371])
def test_tones_are_the_first_demo_sample_for_sample(block_seconds: float) -> None:
    n_blocks = round(20.0 / block_seconds)
    reference = _first_demo_blocks(block_seconds, seed=7)
    expected = np.concatenate([next(reference).copy() for _ in range(n_blocks)])
    stream = demo_stream("tones", block_seconds, Instant(), ANCHOR)
    assert stream.rate_hz == TONES_RATE_HZ
    played = np.concatenate([_next_block(stream).copy() for _ in range(n_blocks)])
    assert np.array_equal(played, expected)
    assert np.mean(np.abs(played) > 0.1) > 0.1  # and there are bursts in it
    direct = tone_blocks(round(block_seconds * TONES_RATE_HZ), np.random.default_rng(7))
    assert np.array_equal(next(direct), expected[: round(block_seconds * TONES_RATE_HZ)])


def test_unknown_scene_is_refused() -> None:
    assert SCENES == ("flysong", "tones")
    with pytest.raises(ConfigError, match="demo scene 'birds': must be one of flysong, tones"):
        demo_stream("birds", 0.1, threading.Event(), ANCHOR)


def test_a_written_scene_is_a_dense_evaluation_set_for_the_fly_song_model(tmp_path: Path) -> None:
    """`python -m edge.audio.demo <folder>` writes a scene and a truth that covers every second; the
    trainer's `evaluate` scores the bundled model on it through the edge's scan path."""
    from trainer.annotations import load_csv
    from trainer.evaluate import evaluate

    assert demo.main([str(tmp_path), "--seconds", "40", "--seed", "5"]) == 0
    data = load_csv(tmp_path / "truth.csv")
    assert data.problems == []
    spans = sorted((a.start_seconds, a.end_seconds) for a in data.annotations)
    assert spans[0][0] == 0.0 and spans[-1][1] == 40.0
    assert all(a[1] == b[0] for a, b in pairwise(spans))  # no hole
    assert set(data.labels()) == {"ambient", "mel-pulse", "mel-sine"}
    report = evaluate(FLYSONG, data.annotations)
    assert report.seconds_scored >= 38
    assert report.annotated_fraction == 1.0  # ambient fills every stretch between the song
    for scores in report.labels:
        if scores.label == "ambient":  # the bundle's background label: scored, no events
            assert not scores.events and scores.event.tp + scores.event.fp == 0
            segment_f1 = scores.segment.figures()["f1"]
            assert segment_f1 is not None and segment_f1 >= 0.9
            continue
        f1 = scores.event.figures()["f1"]
        assert f1 is not None and f1 >= 0.9, (scores.label, scores.event.figures())
