"""One detector per input channel (`source.channel: each`): events and rows tagged with their
channel, the stream counted once, levels and clips from each channel's own audio, a reload that
switches every channel at one second; against `mix` and a picked channel on the same recording.

The recordings are stereo at 48 kHz: channel 0 holds 1 kHz bursts, channel 1 3 kHz bursts (one
of them overlapping a channel-0 burst), each channel in its own noise. A file named
`rec_20261122T100000.wav` starts at 10:00:00.000 UTC, so row k is the file's second
[k, k + 1). The daemon runs as a subprocess where its command line and stdout matter, in this
process (`App`) where its registry or a reload at a chosen moment do, and against a stereo
PulseAudio null sink for the live path.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import yaml
from prometheus_client import generate_latest

from edge.app import App
from edge.audio.streams import Conditioner
from edge.config import Loaded, load_config
from edge.detection.analysis import Analyzer
from edge.pipeline import Lane
from tests.audio import peak_frequency_hz, tone_events, write_wav
from tests.conftest import Daemon, PulseServer, Scrape, daemon_config, run_to_end
from tests.mqtt_broker import Mosquitto, Subscriber

RATE_HZ = 48000
SECONDS = 11.0
DAY = "2026-11-22"
NAME = "rec_20261122T100000.wav"  # starts at 10:00:00.000: row k is the file's second k
ORIGIN = datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
# (start s, end s, Hz) per channel; channel 1's second burst overlaps channel 0's second.
CH0 = [(1.0, 2.0, 1000.0), (4.0, 5.5, 1000.0), (7.3, 8.1, 1000.0)]
CH1 = [(2.5, 3.5, 3000.0), (5.0, 6.0, 3000.0), (9.0, 9.8, 3000.0)]
LABEL_OF = {1000.0: "tone-1k", 3000.0: "tone-3k"}
HOP_SECONDS = 0.1  # the tone bundle's hop: onsets and offsets within one hop of the truth
TONE_AMPLITUDE = 0.3  # the tone model's design level
NOISE_AMPLITUDE = 0.01  # -40 dBFS


def stereo(
    ch0: list[tuple[float, float, float]] = CH0,
    ch1: list[tuple[float, float, float]] = CH1,
    seconds: float = SECONDS,
) -> np.ndarray:
    """(frames, 2) float32: each channel's bursts in its own noise."""
    return np.stack(
        [
            tone_events(RATE_HZ, seconds, events, NOISE_AMPLITUDE, TONE_AMPLITUDE, seed=seed)
            for seed, events in enumerate((ch0, ch1), start=3)
        ],
        axis=1,
    )


def write_recording(folder: Path, x: np.ndarray | None = None, name: str = NAME) -> Path:
    """`x` (default: `stereo()`) as a float32 WAV, so what the daemon reads is exactly `x`."""
    return write_wav(folder / name, stereo() if x is None else x, RATE_HZ, subtype="FLOAT")


@dataclass(frozen=True)
class Found:
    channel: int | None
    label: str
    start: float
    end: float


def ended(messages: list[dict[str, Any]], origin: datetime | None = None) -> list[Found]:
    """The complete events (their `end` messages): by stream offsets, or by their times from
    `origin` (across a reload, which begins a new segment, offsets start again)."""

    def since(stamp: str) -> float:
        assert origin is not None
        return (datetime.fromisoformat(stamp.replace("Z", "+00:00")) - origin).total_seconds()

    return [
        Found(m["channel"], m["label"], m["start_offset"], m["end_offset"])
        if origin is None
        else Found(m["channel"], m["label"], since(m["start"]), since(m["end"]))
        for m in messages
        if m["type"] == "end"
    ]


def check_found(
    found: list[Found],
    truth: Sequence[tuple[int | None, tuple[float, float, float]]],
    tolerance: float = HOP_SECONDS,
) -> None:
    """Every true (channel, burst) found once, on that channel with its label, onset and offset
    within `tolerance`; nothing else found."""
    unmatched = list(found)
    for channel, (start, end, hz) in truth:
        label = LABEL_OF[hz]
        hits = [
            f
            for f in unmatched
            if f.channel == channel and f.label == label and f.start < end and f.end > start
        ]
        assert len(hits) == 1, f"ch{channel} {label} {start}-{end}: found {hits} in {found}"
        hit = hits[0]
        assert abs(hit.start - start) <= tolerance + 1e-6, f"onset {hit} vs {start}"
        assert abs(hit.end - end) <= tolerance + 1e-6, f"offset {hit} vs {end}"
        unmatched.remove(hit)
    assert unmatched == [], f"false events: {unmatched}"


def both_channels() -> list[tuple[int, tuple[float, float, float]]]:
    return [(0, burst) for burst in CH0] + [(1, burst) for burst in CH1]


def messages(out: Path) -> list[dict[str, Any]]:
    """Every event message the daemon wrote under `out` (device `box`)."""
    return [
        json.loads(line)
        for path in sorted((out / "box").glob("*/events.jsonl"))
        for line in path.read_text().splitlines()
    ]


def hour_files(out: Path) -> list[str]:
    """Names of the per-second CSVs (`20261122T10.csv`, `20261122T10_ch1.csv`)."""
    return sorted(p.name for p in (out / "box" / DAY).glob("????????T??*.csv"))


def hour_rows(out: Path, name: str) -> list[dict[str, str]]:
    with (out / "box" / DAY / name).open(newline="") as f:
        return list(csv.DictReader(f))


def dbfs(x: np.ndarray) -> float:
    """10·log10 of the mean square, as the level meter computes it."""
    mean_square = float(np.mean(x.astype(np.float64) ** 2))
    return 10 * math.log10(max(mean_square, 1e-20))


def second_of(burst: tuple[float, float, float]) -> int:
    """The whole second the burst's middle is in: its row scores the burst fully."""
    return math.floor((burst[0] + burst[1]) / 2)


def quiet_seconds(bursts: list[tuple[float, float, float]]) -> list[int]:
    """Seconds k of the recording whose windows (0.5 s, centred in [k, k + 1)) reach none of
    `bursts`."""
    return [
        k
        for k in range(math.ceil(SECONDS))
        if not any(start < k + 1.25 and end > k - 0.25 for start, end, _ in bursts)
    ]


# -- the daemon in this process ------------------------------------------------------------------


def write_config(
    folder: Path, bundle: Path, source: dict[str, Any], name: str = "config.yaml", **sections: Any
) -> Path:
    """A daemon config in `folder`/`name`: files under `folder`/out as device `box`."""
    config = {
        "model": {"path": str(bundle)},
        "source": source,
        "output": {"dir": str(folder / "out"), "device_id": "box", "print": "none"},
        "metrics": {"enabled": False},
        **sections,
    }
    path = folder / name
    folder.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def run_app(folder: Path, bundle: Path, source: dict[str, Any], **sections: Any) -> App:
    """`App.run()` at full speed on a config of `sections` (files under folder/out)."""
    app = App(load_config(write_config(folder, bundle, source, **sections)))
    assert app.run() == 0
    return app


def scrape(app: App) -> Scrape:
    """The app's metrics as its endpoint would serve them."""
    return Scrape(generate_latest(app.metrics.registry).decode())


def files_source(*paths: Path, channel: str | int = "each") -> dict[str, Any]:
    return {"kind": "files", "paths": [str(p) for p in paths], "speed": 0, "channel": channel}


# -- 1. events and rows per channel --------------------------------------------------------------


def test_each_channel_finds_its_own_events_in_its_own_rows(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """`soundwatch run` on a stereo file with channel: each: every burst once, on its channel,
    within a hop; a CSV per channel with the same seconds and that channel's scores; stdout
    lines say the channel."""
    wav = write_recording(tmp_path)
    source = f"{{kind: files, paths: [{wav}], speed: 0, channel: each}}"
    config = tmp_path / "config.yaml"
    config.write_text(
        daemon_config(tmp_path, tone_bundle, source).replace("print: none", "print: both")
    )
    result = run_to_end(config)
    out = tmp_path / "out"

    found = ended(messages(out))
    check_found(found, both_channels())
    assert {f.label for f in found if f.channel == 0} == {"tone-1k"}
    assert {f.label for f in found if f.channel == 1} == {"tone-3k"}

    assert hour_files(out) == ["20261122T10_ch0.csv", "20261122T10_ch1.csv"]
    rows = [hour_rows(out, name) for name in hour_files(out)]
    seconds = [f"{DAY}T10:00:{k:02d}.000Z" for k in range(11)]
    assert [r["time"] for r in rows[0]] == [r["time"] for r in rows[1]] == seconds
    assert all(r["status"] == "analysed" for r in rows[0] + rows[1])
    # A channel's row scores its own tone high in the second of each of its bursts and low
    # where no window reaches one of them (also where the other channel sounds alone), and the
    # other channel's tone never, not even in the second where both channels sound.
    for channel, bursts, other in ((0, CH0, CH1), (1, CH1, CH0)):
        own, foreign = LABEL_OF[bursts[0][2]], LABEL_OF[other[0][2]]
        for burst in bursts:
            assert float(rows[channel][second_of(burst)][own]) > 0.99, (channel, burst)
        quiet = quiet_seconds(bursts)
        assert any(second_of(burst) in quiet for burst in other)
        for k in quiet:
            assert float(rows[channel][k][own]) < 0.01, (channel, k)
        assert max(float(r[foreign]) for r in rows[channel]) < 0.01, channel
    assert float(rows[0][5]["tone-1k"]) > 0.99 and float(rows[1][5]["tone-3k"]) > 0.99  # overlap

    starts = [line for line in result.stdout.splitlines() if "START" in line]
    assert len(starts) == len(CH0) + len(CH1)
    assert sum("  ch0  START  tone-1k" in line for line in starts) == len(CH0)
    assert sum("  ch1  START  tone-3k" in line for line in starts) == len(CH1)
    lines = result.stdout.splitlines()
    assert sum(line.startswith("10:00:03  ch1  tone-1k 0.00  tone-3k 1.00") for line in lines) == 1


def test_mix_and_a_picked_channel_are_not_tagged(tone_bundle: Path, tmp_path: Path) -> None:
    """The same file with channel: mix finds both channels' bursts, with channel null, in one
    CSV; channel: 1 finds only channel 1's, with channel null too (picking one does not tag)."""
    wav = write_recording(tmp_path)
    mix = tmp_path / "mix"
    run_app(mix, tone_bundle, files_source(wav, channel="mix"))
    check_found(ended(messages(mix / "out")), [(None, b) for b in CH0 + CH1])
    assert all(m["channel"] is None for m in messages(mix / "out"))
    assert hour_files(mix / "out") == ["20261122T10.csv"]

    one = tmp_path / "one"
    run_app(one, tone_bundle, {**files_source(wav, channel=1), "channels": 2})
    check_found(ended(messages(one / "out")), [(None, b) for b in CH1])
    assert hour_files(one / "out") == ["20261122T10.csv"]
    rows = hour_rows(one / "out", "20261122T10.csv")
    assert max(float(r["tone-1k"]) for r in rows) < 0.01


# -- 2. the stream is counted once ---------------------------------------------------------------


def test_the_stream_is_counted_once_and_gauges_show_the_highest_channel(
    tone_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Audio seconds are the file's duration, not twice it; 100 NaN samples in channel 1 and 50
    full-scale samples in channel 0 count 100 and 50. The probability and level gauges show the
    last second's highest channel (channel 0 sounds at the end, channel 1 does not)."""
    x = stereo(ch0=[(9.4, 11.0, 1000.0)], ch1=[(0.5, 2.0, 3000.0)])
    x[3 * RATE_HZ : 3 * RATE_HZ + 100, 1] = np.nan
    x[6 * RATE_HZ : 6 * RATE_HZ + 50, 0] = 1.0
    wav = write_recording(tmp_path, x)
    with caplog.at_level(logging.WARNING):
        app = run_app(tmp_path, tone_bundle, files_source(wav), levels={"enabled": True})
    got = scrape(app)

    assert got.value("soundwatch_audio_seconds_total") == pytest.approx(SECONDS, abs=1e-9)
    assert got.value("soundwatch_nonfinite_samples_total") == 100
    assert got.value("soundwatch_clipped_samples_total") == 50
    replaced = [r.getMessage() for r in caplog.records if "bad samples" in r.getMessage()]
    assert replaced == [f"{wav}: 100 bad samples (NaN, infinite, beyond ±1000) replaced or clipped"]

    out = tmp_path / "out"
    last = [hour_rows(out, name)[-1] for name in hour_files(out)]
    assert [r["time"] for r in last] == [f"{DAY}T10:00:10.000Z"] * 2
    assert float(last[0]["tone-1k"]) > 0.99 > 0.01 > float(last[1]["tone-1k"])
    for label in ("tone-1k", "tone-3k"):
        highest = max(float(r[label]) for r in last)
        assert got.value("soundwatch_probability", label=label) == pytest.approx(highest, abs=1e-4)
    level = got.value("soundwatch_sound_level_db", band="broadband", unit="dBFS")
    assert level == pytest.approx(float(last[0]["dbfs"]), abs=0.005)  # channel 0's tone
    assert level > float(last[1]["dbfs"]) + 20


# -- MQTT ---------------------------------------------------------------------------------------


def test_mqtt_payloads_name_their_channel(
    tone_bundle: Path, tmp_path: Path, broker: Mosquitto
) -> None:
    """Probabilities, levels and events on MQTT carry the channel, and each per-second payload
    holds that channel's row (the file replayed in real time, so the broker is connected)."""
    x = stereo(ch0=[(0.5, 2.5, 1000.0)], ch1=[(0.5, 2.5, 3000.0)], seconds=4.0)
    wav = write_recording(tmp_path, x)
    subscriber = Subscriber(broker, ["soundwatch/box/#"])
    try:
        run_app(
            tmp_path,
            tone_bundle,
            {**files_source(wav), "speed": 1},
            mqtt={"host": broker.host, "port": broker.port, "probabilities": True},
            levels={"enabled": True},
        )
        subscriber.wait_for(
            lambda got: sum(m.topic.endswith("/events") for m in got) == 4, 10, "four events"
        )
    finally:
        subscriber.close()
    out = tmp_path / "out"
    rows = {
        (channel, row["time"]): row
        for channel, name in enumerate(hour_files(out))
        for row in hour_rows(out, name)
    }
    # QoS 0, best effort: a second published before the connection is up may be missing;
    # every one that came must be its channel's.
    scores = [m.json() for m in subscriber.messages("/probabilities")]
    levels = [m.json() for m in subscriber.messages("/levels")]
    for channel in (0, 1):
        assert sum(p["channel"] == channel for p in scores) >= 2, scores
        assert sum(p["channel"] == channel for p in levels) >= 2, levels
    for payload in scores:
        row = rows[payload["channel"], payload["time"]]
        assert payload["scores"] == {label: float(row[label]) for label in LABEL_OF.values()}
    for payload in levels:
        assert payload["dbfs"] == float(rows[payload["channel"], payload["time"]]["dbfs"])
    events = [m.json() for m in subscriber.messages("/events")]
    assert sorted((e["channel"], e["label"], e["type"]) for e in events) == [
        (0, "tone-1k", "end"),
        (0, "tone-1k", "start"),
        (1, "tone-3k", "end"),
        (1, "tone-3k", "start"),
    ]


# -- 3. a live stereo device ---------------------------------------------------------------------

STEREO_SINK = "stereo"
LIVE_SECONDS = 7.0
LIVE_CH0 = [(1.0, 2.0, 1000.0), (4.0, 5.0, 1000.0)]
LIVE_CH1 = [(2.5, 3.5, 3000.0), (4.5, 5.5, 3000.0)]  # the second overlaps channel 0's


@pytest.fixture
def stereo_sink(pulse_server: PulseServer) -> Iterator[PulseServer]:
    """The session's PulseAudio server with a second, two-channel null sink: play into the
    returned server's `sink`; capture from `<sink>.monitor` (PULSE_SOURCE)."""
    module = pulse_server.pactl(
        "load-module",
        "module-null-sink",
        f"sink_name={STEREO_SINK}",
        f"rate={pulse_server.sample_rate_hz}",
        "channels=2",
    ).strip()
    try:
        yield dataclasses.replace(pulse_server, sink=STEREO_SINK)
    finally:
        pulse_server.pactl("unload-module", module)


def test_a_live_stereo_device_is_detected_per_channel(
    tone_bundle: Path, tmp_path: Path, stereo_sink: PulseServer
) -> None:
    """Stereo played into a stereo null sink and captured from its monitor with channels: 2,
    channel: each: every burst found on its channel at its place relative to the others."""
    x = stereo(LIVE_CH0, LIVE_CH1, LIVE_SECONDS)
    wav = write_wav(tmp_path / "stereo.wav", x, RATE_HZ)
    source = "{kind: device, device: pulse, channels: 2, channel: each}"
    env = {"PULSE_SOURCE": f"{STEREO_SINK}.monitor"}  # libpulse's default source for the daemon
    truth = [(0, b) for b in LIVE_CH0] + [(1, b) for b in LIVE_CH1]
    with Daemon(tmp_path, daemon_config(tmp_path, tone_bundle, source), env) as daemon:
        daemon.wait_for_log("listening to pulse")
        stereo_sink.play(wav)
        deadline = time.monotonic() + 10
        while len(ended(daemon.events())) < len(truth) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)  # anything false would come with the last windows
        code, _ = daemon.stop()
    assert code == 0, daemon.log()

    found = sorted(ended(daemon.events()), key=lambda f: f.start)
    assert len(found) == len(truth), found
    # Playback starts at an unknown moment after capture: the delay is measured from the
    # events themselves (matched in time order), then every one must sit where it was played.
    ordered = sorted(truth, key=lambda t: t[1][0])
    delay = float(np.median([f.start - t[1][0] for f, t in zip(found, ordered, strict=True)]))
    assert 0 < delay < 10
    shifted = [dataclasses.replace(f, start=f.start - delay, end=f.end - delay) for f in found]
    # One hop, plus what a live path adds (tests/test_live.py).
    check_found(shifted, truth, tolerance=HOP_SECONDS + 0.07)

    # A CSV per channel (and no other), with the same seconds, each analysed all through.
    box = tmp_path / "out" / "box"
    assert {p.name[-8:] for p in box.glob("*/*.csv")} == {"_ch0.csv", "_ch1.csv"}
    times = []
    for channel in (0, 1):
        rows = []
        for hour in sorted(box.glob(f"*/????????T??_ch{channel}.csv")):
            with hour.open(newline="") as f:
                rows += list(csv.DictReader(f))
        assert len(rows) >= LIVE_SECONDS
        assert sum(r["status"] == "analysed" for r in rows) >= LIVE_SECONDS
        times.append([r["time"] for r in rows])
    assert times[0] == times[1]


# -- 4. levels and clips per channel -------------------------------------------------------------

CLIPS = {
    "enabled": True,
    "pre_roll_seconds": 0.5,
    "post_roll_seconds": 0.5,
    "sample_format": "float32",
}


def test_levels_and_clips_come_from_each_channels_own_audio(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """Each event's clip is named with its channel and holds exactly that channel's samples
    (the 1 kHz clip of the overlap has no 3 kHz in it); each CSV's levels are its channel's."""
    x = stereo()
    wav = write_recording(tmp_path, x)
    levels = {"enabled": True, "bands": "octave"}
    app = run_app(tmp_path, tone_bundle, files_source(wav), levels=levels, clips=CLIPS)
    out = tmp_path / "out"

    ends = [m for m in messages(out) if m["type"] == "end"]
    assert len(ends) == len(CH0) + len(CH1)
    clips = sorted((out / "clips" / DAY).glob("*.wav"))
    assert sorted(str(p) for p in clips) == sorted(m["clip"] for m in ends)
    for m in ends:
        channel, label = m["channel"], m["label"]
        path = Path(m["clip"])
        assert path.name.endswith(f"_{label}_ch{channel}.wav"), path
        clip, rate = sf.read(path, dtype="float32")
        assert rate == RATE_HZ and clip.ndim == 1
        first = round((m["start_offset"] - CLIPS["pre_roll_seconds"]) * RATE_HZ)
        np.testing.assert_array_equal(clip, x[first : first + len(clip), channel])
        want = 1000.0 if label == "tone-1k" else 3000.0
        assert peak_frequency_hz(clip, RATE_HZ) == pytest.approx(want, abs=5), path
    assert scrape(app).labelled("soundwatch_clips_total") == {
        "written": 6,
        "failed": 0,
        "skipped": 0,
    }

    rows = [hour_rows(out, name) for name in hour_files(out)]
    for channel in (0, 1):
        assert len(rows[channel]) == 11
        for k, row in enumerate(rows[channel]):
            want_db = dbfs(x[k * RATE_HZ : (k + 1) * RATE_HZ, channel])
            assert float(row["dbfs"]) == pytest.approx(want_db, abs=0.006), (channel, row)
    # Where one channel sounds alone, its level is far above the other's, and its loudest
    # octave is its tone's (3 kHz lies in the 4 kHz octave, 2.8-5.7 kHz).
    for channel, bursts, band in ((0, CH0, "1000"), (1, CH1, "4000")):
        for burst in (bursts[0], bursts[2]):
            k = second_of(burst)
            mine, other = rows[channel][k], rows[1 - channel][k]
            assert float(mine["dbfs"]) > float(other["dbfs"]) + 20, (channel, k)
            octaves = {key: float(v) for key, v in mine.items() if key.startswith("dbfs_")}
            assert max(octaves, key=octaves.__getitem__) == f"dbfs_{band}hz"


# -- 5. a reload switches every channel at one second ---------------------------------------------


class ReloadingApp(App):
    """The daemon, asked to reload `newer` (as by SIGHUP) once the stream (the one whose name
    ends with `in_stream`, if given) has passed `at_seconds`; records the lanes each switch
    began, as (channel, anchor). It waits for the reload to load where the daemon would go on
    scoring: a replay at full speed passes seconds of audio meanwhile, and these tests pin the
    second of the switch."""

    def __init__(self, loaded: Loaded, newer: Path, at_seconds: float, in_stream: str = "") -> None:
        super().__init__(loaded, lambda: load_config(newer))
        self.at_seconds, self.in_stream = at_seconds, in_stream
        self.asked = False
        self.switches: list[list[tuple[int | None, datetime | None]]] = []

    def tick(self, conditioner: Conditioner) -> list[Analyzer] | None:
        stream = self._stream
        if (
            not self.asked
            and stream is not None
            and stream.name.endswith(self.in_stream)
            and conditioner.seconds_in >= self.at_seconds
        ):
            self.asked = True
            self.reload.set()
            ready = super().tick(conditioner)  # starts preparing it
            if ready is not None or self._pending is None:
                return ready
            assert self._pending.wait(60)
        return super().tick(conditioner)

    def switched(self, lanes: list[Lane]) -> None:
        self.switches.append([(lane.info.channel, lane.info.anchor) for lane in lanes])
        super().switched(lanes)


def test_a_reload_switches_both_channels_at_the_same_second(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """Reloaded 6.3 s in with threshold 0.7 instead of the bundle's 0.5: both lanes switch at
    10:00:07 (no burst spans it); events before carry 0.5 and after 0.7 on both channels; each
    CSV has every second exactly once."""
    wav = write_recording(tmp_path)
    source = files_source(wav)
    loaded = load_config(write_config(tmp_path, tone_bundle, source))
    newer = write_config(tmp_path, tone_bundle, source, "newer.yaml", events={"threshold": 0.7})
    app = ReloadingApp(loaded, newer, at_seconds=6.3)
    assert app.run() == 0

    switch = datetime(2026, 11, 22, 10, 0, 7, tzinfo=timezone.utc)
    assert app.switches == [[(0, switch), (1, switch)]]
    assert len(app.analyzers) == 2
    assert all(a.labels[0].rules.threshold == 0.7 for a in app.analyzers)
    out = tmp_path / "out"
    found = ended(messages(out), ORIGIN)
    check_found(found, both_channels())
    thresholds = {(m["channel"], m["start"][11:19], m["threshold"]) for m in messages(out)}
    assert thresholds == {
        (0, "10:00:01", 0.5),
        (1, "10:00:02", 0.5),
        (0, "10:00:04", 0.5),
        (1, "10:00:05", 0.5),
        (0, "10:00:07", 0.7),
        (1, "10:00:09", 0.7),
    }
    seconds = [f"{DAY}T10:00:{k:02d}.000Z" for k in range(11)]
    assert hour_files(out) == ["20261122T10_ch0.csv", "20261122T10_ch1.csv"]
    for name in hour_files(out):
        assert [r["time"] for r in hour_rows(out, name)] == seconds


def test_a_reload_turns_levels_and_clips_on_at_the_switch(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """Reloaded 6.3 s in with `levels:` and `clips:` on: from the switch at 10:00:07 every
    row has its level (in a new CSV, as its columns changed) and every event its clip on disk;
    before it, neither. Capture never stops: each channel has every second exactly once."""
    wav = write_recording(tmp_path)
    source = files_source(wav)
    loaded = load_config(write_config(tmp_path, tone_bundle, source))
    newer = write_config(
        tmp_path,
        tone_bundle,
        source,
        "newer.yaml",
        levels={"enabled": True},
        clips={"enabled": True, "pre_roll_seconds": 0.5, "post_roll_seconds": 0.5},
    )
    app = ReloadingApp(loaded, newer, at_seconds=6.3)
    assert app.run() == 0

    out = tmp_path / "out"
    assert hour_files(out) == [
        "20261122T10_ch0-2.csv",
        "20261122T10_ch0.csv",
        "20261122T10_ch1-2.csv",
        "20261122T10_ch1.csv",
    ]
    for channel in (0, 1):
        before = hour_rows(out, f"20261122T10_ch{channel}.csv")
        after = hour_rows(out, f"20261122T10_ch{channel}-2.csv")
        assert "dbfs" not in before[0] and "dbfs" in after[0]
        times = [r["time"] for r in before + after]
        assert times == [f"{DAY}T10:00:{k:02d}.000Z" for k in range(11)]
        assert after[0]["time"] == f"{DAY}T10:00:07.000Z"
        x = stereo()[:, channel].astype(np.float64)
        for row in after:
            k = int(row["time"][17:19])
            second = x[k * RATE_HZ : (k + 1) * RATE_HZ]
            assert float(row["dbfs"]) == pytest.approx(10 * np.log10(np.mean(second**2)), abs=0.01)
    clips = {(m["channel"], m["start"][11:19]): m["clip"] for m in messages(out)}
    assert [k for k, clip in sorted(clips.items()) if clip is not None] == [
        (0, "10:00:07"),
        (1, "10:00:09"),
    ]
    assert all(Path(clip).is_file() for clip in clips.values() if clip is not None)
    # Offsets count from the file's start on both sides of the switch, as its times do.
    for m in messages(out):
        at = datetime.strptime(m["start"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        assert m["start_offset"] == pytest.approx((at - ORIGIN).total_seconds(), abs=1e-3)
    # SongExplorer tics too: samples of the recording, so the 7.3 s burst is at 7.3 s.
    predicted = (out / "box" / DAY / "predicted_ch0.csv").read_text().splitlines()
    starts = sorted(int(line.split(",")[1]) / RATE_HZ for line in predicted)
    assert starts == pytest.approx([start for start, _, _ in CH0], abs=0.1)


def test_a_channel_added_after_a_reload_gets_its_own_levels_and_clips(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """Files of 3, 2 and 3 channels, reloaded during the 2-channel one: the third file's
    channel 2 is a new lane after the reload, and its rows and events must still meet its own
    audio (levels in every row, a clip on disk for every event)."""
    seconds = 4.0

    def recording(name: str, channels: int) -> Path:
        bursts = [[(1.0, 2.0, 1000.0 if c % 2 == 0 else 3000.0)] for c in range(channels)]
        x = np.stack(
            [
                tone_events(RATE_HZ, seconds, b, NOISE_AMPLITUDE, TONE_AMPLITUDE, seed=c)
                for c, b in enumerate(bursts)
            ],
            axis=1,
        )
        return write_recording(tmp_path, x, name)

    wavs = [
        recording("a_20261122T100000.wav", 3),
        recording("b_20261122T100010.wav", 2),
        recording("c_20261122T100020.wav", 3),
    ]
    source = files_source(*wavs)
    levels = {"enabled": True}
    path = write_config(tmp_path, tone_bundle, source, levels=levels, clips=CLIPS)

    app = ReloadingApp(load_config(path), path, at_seconds=1.5, in_stream=wavs[1].name)
    assert app.run() == 0
    assert len(app.switches) == 1 and [c for c, _ in app.switches[0]] == [0, 1]

    out = tmp_path / "out"
    ends = [m for m in messages(out) if m["type"] == "end"]
    assert sorted((m["start"][11:19], m["channel"]) for m in ends) == sorted(
        (f"10:00:{s}1", c) for s, n in ((0, 3), (1, 2), (2, 3)) for c in range(n)
    )
    rows = hour_rows(out, "20261122T10_ch2.csv")
    assert [r["time"][11:19] for r in rows] == [f"10:00:{s}{k}" for s in (0, 2) for k in range(4)]
    no_clip = [m["clip"] for m in ends if m["clip"] is None or not Path(m["clip"]).is_file()]
    no_level = [r["time"][11:19] for r in rows if r["dbfs"] == ""]
    assert (no_clip, no_level) == ([], [])
