"""Levels and clips wired into the pipeline (edge/outputs/evidence.py): `feed` drives a real
Analyzer with the tone model, the Evidence tap sees the source-rate audio, and the rows and
events that reach the sinks carry the right levels and clips.

Streams start at 10:00:00.300 (a second phase of 0.7 s), so the first row is a partial second.
Expected levels are computed here from the very samples the stream delivers: 10·log10 of their
mean square over the part of each row's second [0.7 + k, 1.7 + k) that holds audio.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge import schema
from edge.audio.levels import LevelSettings, bands_for
from edge.audio.streams import Gap, Stream, file_streams
from edge.builders import build_analyzer
from edge.clock import second_phase
from edge.config import Config, Loaded
from edge.detection.analysis import Analyzer
from edge.outputs.clips.recorder import ClipRecorder
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.evidence import Evidence
from edge.outputs.files import DaemonFiles, Fanout
from edge.pipeline import feed
from edge.records import Event, SecondRow, Sink, StreamInfo
from edge.yamlfile import Where
from tests.audio import noise, peak_frequency_hz, rms_dbfs, tone, tone_events, write_wav

ANCHOR = datetime(2026, 11, 22, 10, 0, 0, 300_000, tzinfo=timezone.utc)
PHASE = 0.7  # seconds from the first sample to 10:00:01
TONE_DBFS = 20 * math.log10(0.5 / math.sqrt(2))  # a sine of peak 0.5: -9.031 dBFS
OCTAVES = LevelSettings(enabled=True, bands="octave")
BLOCK_SECONDS = 0.1


class Recorder(Sink):
    """What reaches the sinks after Evidence."""

    def __init__(self) -> None:
        self.infos: list[StreamInfo] = []
        self.rows: list[SecondRow] = []
        self.events: list[Event] = []

    def begin(self, info: StreamInfo) -> None:
        self.infos.append(info)

    def second(self, row: SecondRow) -> None:
        self.rows.append(row)

    def event(self, event: Event) -> None:
        self.events.append(event)


def analyzer(bundle: Path, sink: Sink) -> Analyzer:
    config = schema.build(Config, {"model": {"path": str(bundle)}})
    return build_analyzer(Loaded(config, None, Where.nowhere("test")), sink)[1]


def run(stream: Stream, bundle: Path, sink: Sink, evidence: Evidence) -> None:
    """feed() as the daemon calls it: Evidence is both the tap and the Analyzer's sink."""
    scorer = analyzer(bundle, evidence)
    info = StreamInfo(stream.name, [s.label for s in scorer.labels], stream.anchor, stream.rate_hz)
    feed(stream, scorer, info, "mix", threading.Event(), None, evidence)


# -- the stream's truth ----------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """A stretch of the stream from `start_s`: audio at `rate_hz`, or a gap (`audio` None)."""

    start_s: float
    rate_hz: int
    audio: np.ndarray | None
    frames: int


def timeline(*pieces: tuple[int, np.ndarray | float]) -> list[Part]:
    """Parts from (rate, audio) and (rate, gap seconds) pieces, one after the other."""
    parts, at = [], 0.0
    for rate_hz, piece in pieces:
        if isinstance(piece, np.ndarray):
            parts.append(Part(at, rate_hz, piece, len(piece)))
        else:
            parts.append(Part(at, rate_hz, None, round(piece * rate_hz)))
        at += parts[-1].frames / rate_hz
    return parts


def expected(parts: list[Part], k: int, phase: float = PHASE) -> tuple[float, float] | None:
    """(dBFS, audio seconds) of row k's second, from the samples; None without audio."""
    low, high = phase + k, phase + k + 1
    chunks, seconds = [], 0.0
    for p in parts:
        if p.audio is None:
            continue
        first = max(0, math.ceil((low - p.start_s) * p.rate_hz - 1e-6))
        stop = min(p.frames, math.ceil((high - p.start_s) * p.rate_hz - 1e-6))
        if stop > first:
            chunks.append(p.audio[first:stop].astype(np.float64))
            seconds += (stop - first) / p.rate_hz
    if not chunks:
        return None
    x = np.concatenate(chunks)
    return 10 * math.log10(max(float(np.mean(x * x)), 1e-20)), seconds


def blocks(parts: list[Part], reason: str = "device") -> Iterator[np.ndarray | Gap]:
    """The parts as a device delivers them: 0.1 s blocks, a Gap for each gap (with the next
    part's rate when it changes)."""
    for i, p in enumerate(parts):
        if p.audio is None:
            after = parts[i + 1].rate_hz if i + 1 < len(parts) else p.rate_hz
            yield Gap(p.frames, reason, None if after == p.rate_hz else after)
            continue
        step = round(BLOCK_SECONDS * p.rate_hz)
        for at in range(0, p.frames, step):
            yield p.audio[at : at + step, None]


def stream(parts: list[Part], reason: str = "device") -> Stream:
    return Stream("mic", ANCHOR, parts[0].rate_hz, 1, blocks(parts, reason))


def check_levels(rows: list[SecondRow], parts: list[Part]) -> None:
    """Each row has its second's level, to the sample (audio seconds) and within 0.05 dB."""
    for row in rows:
        k = round(row.offset_seconds - PHASE)
        assert row.time == ANCHOR.replace(microsecond=0) + timedelta(seconds=k + 1)
        truth = expected(parts, k)
        if truth is None:
            assert row.levels is None, row
            continue
        assert row.levels is not None, f"no levels in {row}"
        db, seconds = truth
        assert row.levels.audio_seconds == pytest.approx(seconds, abs=1e-9), row
        assert row.levels.dbfs_or_db == pytest.approx(db, abs=0.05), row


# -- levels ----------------------------------------------------------------------------------


def test_score_cells_match_the_one_by_one_format() -> None:
    from edge.outputs.files import format_score, score_cells

    rng = np.random.default_rng(0)
    row = rng.random(521).astype(np.float32)
    row[:4] = [0.0, 1.0, -0.0, 0.99995]
    for scores in (row, np.where(rng.random(521) < 0.1, np.nan, row).astype(np.float32)):
        expected = ",".join(format_score(p) for p in scores.tolist())
        assert score_cells(scores) == expected
    assert score_cells(np.full(3, np.nan, np.float32)) == ",,"


def test_long_rows_are_made_with_numpy_to_the_last_digit() -> None:
    """Rows of 100 scores and more (BirdNET's 6,522) are made with numpy: the same text as
    `%.4f` one by one, at the roundings' halfway points too, and the rows numpy cannot make
    (values of 10 or more, negative, NaN cells) still right."""
    from edge.outputs.files import NUMPY_CELLS_FROM, format_score, score_cells

    rng = np.random.default_rng(1)
    n = 6522
    halfway = ((rng.integers(0, 100000, n) + 0.5) / 10000).astype(np.float32)  # d.dddd5
    rows = [
        rng.random(n).astype(np.float32),
        halfway,
        np.nextafter(halfway, np.float32(0)),
        np.nextafter(halfway, np.float32(10)),
        np.array([0.0, 1.0, 0.99995, 0.00005, 9.99994, 1e-30] * 20, np.float32),
        (np.arange(1, 320, 2) / 32).astype(np.float32),  # exact halves: 0.03125 is 0.0312
        np.array([9.99995, *rng.random(199)], np.float32),  # rounds to 10.0000
        np.array([-0.0, *rng.random(199)], np.float32),
        np.array([-3e-5, *rng.random(199)], np.float32),
        np.array([12.5, *rng.random(199)], np.float32),
        np.where(rng.random(n) < 0.1, np.nan, rng.random(n)).astype(np.float32),
        np.full(NUMPY_CELLS_FROM, np.nan, np.float32),
        rng.random(300),  # float64: %-format
    ]
    for scores in rows:
        assert len(scores) >= NUMPY_CELLS_FROM
        assert score_cells(scores) == ",".join(format_score(p) for p in scores.tolist())


def test_second_phase_is_exact_from_microseconds() -> None:
    # -timestamp() % 1 gives 0.70000005 here: one sample too many in the first second at 48 kHz.
    assert second_phase(ANCHOR) == 0.7
    assert second_phase(ANCHOR.replace(microsecond=0)) == 0.0
    assert second_phase(None) == 0.0


def test_levels_of_a_file_follow_its_rows(tone_bundle: Path, tmp_path: Path) -> None:
    rate = 48000
    signal = np.concatenate(
        [tone(1000.0, 2.0, rate, 0.5), noise(2.0, rate, 0.01, seed=1), tone(250.0, 1.5, rate, 0.1)]
    )
    wav = write_wav(tmp_path / "a.wav", signal, rate, subtype="FLOAT")
    (s,) = file_streams(
        [wav], block_seconds=BLOCK_SECONDS, speed=0, stop=threading.Event(), start=ANCHOR
    )
    sink = Recorder()
    evidence = Evidence(sink, OCTAVES, None)
    run(s, tone_bundle, sink, evidence)

    (info,) = sink.infos
    names = [b.name for b in bands_for(OCTAVES, rate)]
    assert (info.level_unit, list(info.level_bands)) == ("dBFS", names)
    rows = sink.rows
    assert [r.offset_seconds for r in rows] == [-0.3, 0.7, 1.7, 2.7, 3.7, 4.7]
    check_levels(rows, timeline((rate, signal)))
    levels = [r.levels for r in rows]
    assert all(x is not None for x in levels)
    first, whole, mixed, _, _, last = (x for x in levels if x is not None)
    assert [first.audio_seconds, last.audio_seconds] == [0.7, 0.8]  # partial at both ends
    for second in (first, whole):  # the tone's seconds: the tone's level, in its octave
        assert second.dbfs_or_db == pytest.approx(TONE_DBFS, abs=0.05)
        assert second.bands["1000"] == pytest.approx(TONE_DBFS, abs=0.05)
    # Whole periods in a whole second: nothing leaks to the other bands.
    assert max(db for name, db in whole.bands.items() if name != "1000") < -100
    # 10:00:02 holds 0.3 s of tone and 0.7 s of noise: (0.3·0.125 + 0.7·1e-4) mean square.
    assert mixed.dbfs_or_db == pytest.approx(10 * math.log10(0.3 * 0.125 + 0.7e-4), abs=0.05)
    assert max(last.bands, key=last.bands.__getitem__) == "250"
    assert last.bands["250"] == pytest.approx(20 * math.log10(0.1 / math.sqrt(2)), abs=0.05)


def test_gaps_give_no_levels_and_cut_seconds_are_measured_on_their_audio(
    tone_bundle: Path,
) -> None:
    """A device gap over a whole second, and a 50 ms overrun 0.2 s before a second ends: the
    Analyzer emits that second's row at the gap, before its last 0.2 s of audio arrives."""
    rate = 48000
    parts = timeline(
        (rate, tone(1000.0, 1.5, rate, 0.5)),
        (rate, 2.0),  # 1.5-3.5 s: 10:00:02 has no audio, 10:00:03 has 0.2 s
        (rate, noise(1.95, rate, 0.01, seed=2)),
        (rate, 0.05),  # 5.45-5.5 s, in 10:00:05 (offsets 4.7-5.7)
        (rate, noise(1.0, rate, 0.01, seed=3)),
    )
    sink = Recorder()
    run(stream(parts), tone_bundle, sink, Evidence(sink, OCTAVES, None))
    rows = sink.rows
    assert [r.offset_seconds for r in rows] == [-0.3, 0.7, 1.7, 2.7, 3.7, 4.7, 5.7]
    assert rows[2].status == "gap:device" and rows[2].levels is None
    check_levels(rows, parts)
    audio = [0.0 if r.levels is None else r.levels.audio_seconds for r in rows]
    assert audio == pytest.approx([0.7, 0.8, 0.0, 0.2, 1.0, 0.95, 0.8], abs=1e-9)


def retuned() -> list[Part]:
    """48 kHz with a 1 kHz event at 1-2 s, 2.5 s without the device, back at 16 kHz with a
    3 kHz event at 6.5-7.5 s (1 s after the gap)."""
    return timeline(
        (48000, tone_events(48000, 3.0, [(1.0, 2.0, 1000.0)], 0.01, 0.3, seed=4)),
        (48000, 2.5),
        (16000, tone_events(16000, 4.0, [(1.0, 2.0, 3000.0)], 0.01, 0.3, seed=5)),
    )


ROLLS = ClipSettings(
    enabled=True, pre_roll_seconds=0.5, post_roll_seconds=0.5, sample_format="float32"
)


def test_a_device_back_at_another_rate_keeps_levels_and_clips_right(
    tone_bundle: Path, tmp_path: Path
) -> None:
    parts = retuned()
    sink = Recorder()
    clips = ClipRecorder(ROLLS, tmp_path / "clips")
    run(stream(parts), tone_bundle, sink, Evidence(sink, OCTAVES, clips))

    rows = sink.rows
    assert [r.offset_seconds for r in rows] == [round(k + PHASE, 6) for k in range(-1, 9)]
    check_levels(rows, parts)
    assert rows[5].levels is not None and rows[5].levels.audio_seconds == pytest.approx(0.2)
    at_16k = [b.name for b in bands_for(OCTAVES, 16000)]  # up to 4 kHz: 8 kHz is not whole
    for row in rows[5:]:
        assert row.levels is not None and list(row.levels.bands) == at_16k
    tone_second = rows[7].levels  # 10:00:07: 0.8 s of the 3 kHz tone, in the 4 kHz octave
    assert tone_second is not None
    assert tone_second.bands["4000"] == pytest.approx(tone_second.dbfs_or_db, abs=0.2)

    starts = {e.label: e for e in sink.events if e.type == "start"}
    ends = {e.label: e for e in sink.events if e.type == "end"}
    assert sorted(starts) == sorted(ends) == ["tone-1k", "tone-3k"]
    for label, hz, rate, truth_s, part in (
        ("tone-1k", 1000.0, 48000, 1.0, parts[0]),
        ("tone-3k", 3000.0, 16000, 6.5, parts[2]),
    ):
        start, end = starts[label], ends[label]
        assert start.clip == end.clip and start.clip is not None
        assert end.end_offset is not None
        assert start.start_offset == pytest.approx(truth_s, abs=0.1)
        clip, clip_rate = sf.read(start.clip, dtype="float32")
        assert clip_rate == rate
        # Exactly the source samples from pre-roll before the start to post-roll after the end.
        first = round((start.start_offset - 0.5 - part.start_s) * rate)
        stop = round((end.end_offset + 0.5 - part.start_s) * rate)
        assert part.audio is not None
        np.testing.assert_array_equal(clip, part.audio[first:stop])
        tone_at = round((truth_s - part.start_s) * rate) - first  # the tone's first sample
        assert peak_frequency_hz(clip[tone_at : tone_at + rate // 2], rate) == pytest.approx(
            hz, abs=1.0
        )
        assert rms_dbfs(clip[tone_at + rate // 100 : tone_at + rate // 2]) == pytest.approx(
            20 * math.log10(0.3 / math.sqrt(2)), abs=0.1
        )
        assert rms_dbfs(clip[: max(0, tone_at - rate // 100)]) == pytest.approx(-40.0, abs=0.5)
    assert clips.clips_written == 2


def test_a_second_split_by_a_retune_is_measured_on_its_longer_part(tone_bundle: Path) -> None:
    """Noise at 48 kHz to 3.0 s, 0.3 s without the device, a 1 kHz tone at 16 kHz from 3.3 s:
    10:00:03 (offsets 2.7-3.7) holds 0.3 s of the one and 0.4 s of the other; the meter of
    each rate measured its own part, and the longer one speaks for the second."""
    parts = timeline(
        (48000, noise(3.0, 48000, 0.01, seed=7)),
        (48000, 0.3),
        (16000, tone(1000.0, 2.0, 16000, 0.5)),
    )
    sink = Recorder()
    run(stream(parts), tone_bundle, sink, Evidence(sink, OCTAVES, None))
    split = [r for r in sink.rows if r.offset_seconds == 2.7]
    assert len(split) == 1 and split[0].levels is not None
    assert split[0].levels.audio_seconds == pytest.approx(0.4, abs=1e-9)
    assert split[0].levels.dbfs_or_db == pytest.approx(TONE_DBFS, abs=0.05)
    check_levels([r for r in sink.rows if r.offset_seconds != 2.7], parts)


def test_a_device_back_at_another_rate_keeps_the_hourly_csv(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """After a retune to 16 kHz the 8 and 16 kHz octaves are not measured: their cells stay
    empty (the CSV's columns are the stream's), and the daemon's files go on."""
    parts = retuned()
    files = DaemonFiles(tmp_path / "out", "box")
    sink = Recorder()
    run(stream(parts), tone_bundle, sink, Evidence(Fanout([sink, files]), OCTAVES, None))
    files.close()
    (hour,) = (tmp_path / "out" / "box").glob("*/*.csv")
    header, *lines = hour.read_text().splitlines()
    names = [b.name for b in bands_for(OCTAVES, 48000)]
    assert header.split(",")[-11:] == ["dbfs", *(f"dbfs_{n}hz" for n in names)]
    assert len(lines) == 10
    last = lines[-1].split(",")
    assert last[-2:] == ["", ""]  # 8000 and 16000 Hz
    assert float(last[-3]) < -40  # the 4 kHz octave of noise RMS 0.01


def test_a_retune_below_every_band_stops_levels_not_the_stream(
    tone_bundle: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Only the 16 kHz octave is asked for: it fits below 24 kHz, not below 8 kHz."""
    high = LevelSettings(enabled=True, bands="octave", band_min_hz=16000)
    sink = Recorder()
    with caplog.at_level(logging.ERROR, logger="edge.outputs.evidence"):
        run(stream(retuned()), tone_bundle, sink, Evidence(sink, high, None))
    assert len(sink.rows) == 10
    assert [r.levels is not None for r in sink.rows] == [True] * 4 + [False] * 6
    assert "no octave band between 16000 Hz and the Nyquist frequency (8000 Hz)" in caplog.text


# -- clips of the tone model's events --------------------------------------------------------

SCENE = [(2.0, 3.0, 1000.0), (4.5, 5.2, 3000.0), (7.0, 8.5, 1000.0)]
LABELS = {1000.0: "tone-1k", 3000.0: "tone-3k"}


def test_clips_of_tone_events_hold_the_tone_with_their_rolls(
    tone_bundle: Path, tmp_path: Path
) -> None:
    rate = 16000
    signal = tone_events(rate, 10.0, SCENE, noise_amplitude=0.01, tone_amplitude=0.3, seed=6)
    wav = write_wav(tmp_path / "scene.wav", signal, rate, subtype="FLOAT")
    (s,) = file_streams([wav], block_seconds=0.25, speed=0, stop=threading.Event(), start=ANCHOR)
    settings = ClipSettings(
        enabled=True, pre_roll_seconds=1.0, post_roll_seconds=0.5, sample_format="float32"
    )
    sink = Recorder()
    clips = ClipRecorder(settings, tmp_path / "clips")
    run(s, tone_bundle, sink, Evidence(sink, LevelSettings(), clips))

    ends = [e for e in sink.events if e.type == "end"]
    assert [e.label for e in ends] == [LABELS[hz] for _, _, hz in SCENE]
    starts = {e.id: e for e in sink.events if e.type == "start"}
    assert len(starts) == len(ends) == clips.clips_written == 3
    for end, (t0, t1, hz) in zip(ends, SCENE, strict=True):
        start = starts[end.id]
        assert end.clip is not None and start.clip == end.clip and Path(end.clip).is_file()
        assert end.end_offset is not None
        assert abs(end.start_offset - t0) <= 0.1 + 1e-6 and abs(end.end_offset - t1) <= 0.1 + 1e-6
        clip, clip_rate = sf.read(end.clip, dtype="float32")
        assert clip_rate == rate
        event_s = end.end_offset - end.start_offset
        assert len(clip) == pytest.approx((event_s + 1.5) * rate, abs=1)
        assert len(clip) / rate == pytest.approx(t1 - t0 + 1.5, abs=0.1 + 1e-6)
        first = round((end.start_offset - 1.0) * rate)  # the clip's first stream sample
        np.testing.assert_array_equal(clip, signal[first : first + len(clip)])
        on = slice(round((t0 + 0.01) * rate) - first, round((t1 - 0.01) * rate) - first)
        assert peak_frequency_hz(clip[on], rate) == pytest.approx(hz, abs=1.0)
        assert rms_dbfs(clip[on]) == pytest.approx(20 * math.log10(0.3 / math.sqrt(2)), abs=0.1)
        before = clip[: round((t0 - 0.01) * rate) - first]  # the pre-roll, before the tone
        assert len(before) > 0.8 * rate and rms_dbfs(before) == pytest.approx(-40.0, abs=0.5)
