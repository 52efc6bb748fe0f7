"""Event clips (edge/outputs/clips/): exact audio with pre- and post-roll, names,
retention, disks."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge import schema
from edge.errors import ConfigError
from edge.outputs.clips.recorder import ClipRecorder
from edge.outputs.clips.retention import Retention
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.clips.store import PARTIAL_SUFFIX
from edge.records import Event, StreamInfo
from tests.audio import noise

RATE_HZ = 8000
ANCHOR = datetime(2026, 11, 22, 10, 23, 14, tzinfo=timezone.utc)
EXACT = ClipSettings(
    enabled=True, pre_roll_seconds=1.0, post_roll_seconds=0.5, sample_format="float32"
)


def stream(source: str = "mic", anchor: datetime | None = ANCHOR) -> StreamInfo:
    return StreamInfo(source, ["bird"], anchor, RATE_HZ)


def event(
    event_id: str,
    kind: str,
    start: float,
    end: float | None = None,
    label: str = "bird",
    info: StreamInfo | None = None,
    channel: int | None = None,
) -> Event:
    info = info or stream()
    return Event(
        id=event_id,
        type="start" if kind == "start" else "end",
        label=label,
        start_offset=start,
        end_offset=end,
        start=info.at(start),
        end=None if end is None else info.at(end),
        score_max=0.9,
        score_mean=0.8,
        threshold=0.5,
        source=info.source,
        channel=channel,
    )


class Feeder:
    """Pushes a signal into a recorder in random blocks, up to a stream time."""

    def __init__(self, recorder: ClipRecorder, signal: np.ndarray, seed: int = 0) -> None:
        self.recorder, self.signal = recorder, signal
        self.rng = np.random.default_rng(seed)
        self.at = 0

    def to(self, seconds: float) -> None:
        stop = min(len(self.signal), round(seconds * RATE_HZ))
        while self.at < stop:
            n = min(stop - self.at, int(self.rng.integers(1, 3000)))
            self.recorder.push(self.signal[self.at : self.at + n])
            self.at += n


def samples(signal: np.ndarray, first_s: float, stop_s: float) -> np.ndarray:
    return signal[round(first_s * RATE_HZ) : round(stop_s * RATE_HZ)]


def read(path: str | None) -> np.ndarray:
    assert path is not None
    audio, rate = sf.read(path, dtype="float32")
    assert rate == RATE_HZ
    return np.asarray(audio)


def test_clip_is_the_source_audio_with_pre_and_post_roll(tmp_path: Path) -> None:
    signal = noise(20.0, RATE_HZ, 0.1, seed=1)
    recorder = ClipRecorder(EXACT, tmp_path / "clips")
    recorder.begin(stream())
    feed = Feeder(recorder, signal)
    feed.to(4.0)  # events arrive after the audio they describe
    start = recorder.stamp(event("e1", "start", 3.2))
    expected_path = tmp_path / "clips/2026-11-22/20261122T102317.200Z_bird.wav"
    assert start.clip == str(expected_path)
    recorder.event(start)  # the Sink hook sees the same start again: nothing changes
    assert recorder.plan(start) == start.clip
    feed.to(7.0)
    end = recorder.stamp(event("e1", "end", 3.2, 6.1))
    assert end.clip == start.clip  # both messages carry the path
    # Due at 6.1 + 0.5 s, and the audio is already at 7.0 s: the end wrote it at once.
    assert recorder.clips_written == 1
    assert np.array_equal(read(end.clip), samples(signal, 3.2 - 1.0, 6.1 + 0.5))
    assert recorder.bytes_total == expected_path.stat().st_size
    assert list(expected_path.parent.iterdir()) == [expected_path]  # no .partial left


def test_clip_written_when_its_post_roll_arrives(tmp_path: Path) -> None:
    signal = noise(20.0, RATE_HZ, 0.1, seed=2)
    recorder = ClipRecorder(EXACT, tmp_path)
    recorder.begin(stream())
    feed = Feeder(recorder, signal, seed=2)
    feed.to(5.0)
    path = recorder.plan(event("e1", "start", 4.5))
    recorder.plan(event("e1", "end", 4.5, 5.0))
    feed.to(5.49)
    assert recorder.clips_written == 0
    feed.to(5.51)
    assert recorder.clips_written == 1
    assert np.array_equal(read(path), samples(signal, 3.5, 5.5))


def test_int16_clips_match_within_one_step(tmp_path: Path) -> None:
    signal = noise(6.0, RATE_HZ, 0.1, seed=3)
    recorder = ClipRecorder(ClipSettings(enabled=True), tmp_path)  # default int16, 2 s rolls
    recorder.begin(stream())
    feed = Feeder(recorder, signal)
    feed.to(3.0)
    path = recorder.plan(event("e1", "start", 2.5))
    recorder.plan(event("e1", "end", 2.5, 3.0))
    feed.to(6.0)
    assert sf.info(str(path)).subtype == "PCM_16"
    got, want = read(path), samples(signal, 0.5, 5.0)
    assert len(got) == len(want)
    assert np.max(np.abs(got - want)) <= 1 / 32767


def test_long_event_capped_at_max_clip_seconds(tmp_path: Path) -> None:
    signal = noise(15.0, RATE_HZ, 0.1, seed=4)
    settings = ClipSettings(
        enabled=True, pre_roll_seconds=1.0, max_clip_seconds=3.0, sample_format="float32"
    )
    recorder = ClipRecorder(settings, tmp_path)
    recorder.begin(stream())
    feed = Feeder(recorder, signal)
    feed.to(2.5)
    path = recorder.plan(event("long", "start", 2.0))
    feed.to(4.99)
    assert recorder.clips_written == 0
    feed.to(5.01)  # start + max_clip: written without waiting for the end
    assert recorder.clips_written == 1
    assert np.array_equal(read(path), samples(signal, 1.0, 5.0))
    feed.to(12.0)
    assert recorder.plan(event("long", "end", 2.0, 11.0)) == path  # the end still names it
    recorder.close()
    assert recorder.clips_written == 1


def test_event_at_the_very_start_has_the_pre_roll_there_is(tmp_path: Path) -> None:
    signal = noise(5.0, RATE_HZ, 0.1, seed=5)
    recorder = ClipRecorder(EXACT, tmp_path)
    recorder.begin(stream())
    feed = Feeder(recorder, signal)
    feed.to(1.0)
    path = recorder.plan(event("e1", "start", 0.3))
    recorder.plan(event("e1", "end", 0.3, 0.8))
    feed.to(2.0)
    assert np.array_equal(read(path), samples(signal, 0.0, 1.3))


def test_close_and_stream_end_write_what_there_is(tmp_path: Path) -> None:
    signal = noise(5.0, RATE_HZ, 0.1, seed=6)
    recorder = ClipRecorder(EXACT, tmp_path)
    recorder.begin(stream())
    feed = Feeder(recorder, signal)
    feed.to(3.0)
    open_path = recorder.plan(event("open", "start", 2.0))  # never ends
    ending_path = recorder.plan(event("ends", "start", 2.5))
    feed.to(4.0)
    recorder.plan(event("ends", "end", 2.5, 3.8))  # post-roll would reach 4.3 s
    assert recorder.clips_written == 0
    recorder.end()  # the stream is over
    assert recorder.clips_written == 2
    assert np.array_equal(read(open_path), samples(signal, 1.0, 4.0))
    assert np.array_equal(read(ending_path), samples(signal, 1.5, 4.0))
    recorder.close()
    assert recorder.clips_written == 2


def test_gaps_are_silence_and_big_blocks_keep_clips_exact(tmp_path: Path) -> None:
    signal = noise(12.0, RATE_HZ, 0.1, seed=7)
    settings = ClipSettings(
        enabled=True,
        pre_roll_seconds=0.5,
        post_roll_seconds=0.5,
        max_clip_seconds=1.5,
        sample_format="float32",
    )
    recorder = ClipRecorder(settings, tmp_path, lag_margin_seconds=0.5)
    assert recorder.ring_seconds == 2.5
    recorder.begin(stream())
    timeline = signal.copy()  # the stream as the recorder sees it: the gap is zeros
    recorder.push(signal[: 2 * RATE_HZ])
    recorder.gap(RATE_HZ // 2)  # 2.0 .. 2.5 s missing
    timeline[2 * RATE_HZ : round(2.5 * RATE_HZ)] = 0
    path = recorder.plan(event("g", "start", 1.8))
    recorder.plan(event("g", "end", 1.8, 2.6))
    # One block of 9.5 s, far longer than the 2.5 s ring: cut at the clip's due point.
    recorder.push(signal[round(2.5 * RATE_HZ) :])
    assert np.array_equal(read(path), samples(timeline, 1.3, 3.1))


def test_names_channels_duplicates_and_streams_without_time(tmp_path: Path) -> None:
    recorder = ClipRecorder(EXACT, tmp_path)
    recorder.begin(stream())
    a = recorder.plan(event("a", "start", 1.25, label="mel pulse/1"))
    b = recorder.plan(event("b", "start", 1.25, label="mel pulse/1"))
    c = recorder.plan(event("c", "start", 1.25, channel=2))
    day = tmp_path / "2026-11-22"
    assert a == str(day / "20261122T102315.250Z_mel_pulse_1.wav")
    assert b == str(day / "20261122T102315.250Z_mel_pulse_1_2.wav")
    assert c == str(day / "20261122T102315.250Z_bird_ch2.wav")
    recorder.begin(stream("/data/site 3/rec.wav", anchor=None))
    info = stream("/data/site 3/rec.wav", anchor=None)
    assert recorder.plan(event("d", "start", 3.2, info=info)) == str(
        tmp_path / "rec" / "000003.200s_bird.wav"
    )


def test_disabled_gives_no_path(tmp_path: Path) -> None:
    recorder = ClipRecorder(ClipSettings(enabled=False), tmp_path)
    recorder.begin(stream())
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    assert recorder.stamp(event("a", "start", 0.5)).clip is None


def make_clip_file(folder: Path, name: str, size: int, age_days: float) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    mtime = time.time() - age_days * 86400
    os.utime(path, (mtime, mtime))
    return path


def test_clips_kept_from_an_earlier_run_count_from_the_start(tmp_path: Path) -> None:
    """`bytes_total` (the metric soundwatch_clips_bytes) is right before the first new clip."""
    for i, size in enumerate((1000, 2500, 40)):
        make_clip_file(tmp_path, f"2026-11-2{i}/c{i}.wav", size, 1)
    make_clip_file(tmp_path, "2026-11-20/notes.txt", 7777, 1)  # not a clip
    assert ClipRecorder(ClipSettings(enabled=True), tmp_path).bytes_total == 3540
    assert ClipRecorder(ClipSettings(enabled=True), tmp_path / "none").bytes_total == 0


def test_retention_by_total_size_deletes_the_oldest(tmp_path: Path) -> None:
    # Four 50 kB clips, oldest first, and something that is not a clip.
    files = [make_clip_file(tmp_path, f"2026-11-0{i}/c{i}.wav", 50_000, 10 - i) for i in range(4)]
    other = make_clip_file(tmp_path, "2026-11-00/notes.txt", 999_999, 100)
    # A 3 s int16 clip at 8 kHz is 44 + 48 000 bytes. With max 200 kB, the others may hold
    # 151 956 bytes: deleting the oldest (150 000 left) is enough.
    settings = ClipSettings(
        enabled=True, pre_roll_seconds=1.0, post_roll_seconds=1.0, max_total_mb=0.2
    )
    recorder = ClipRecorder(settings, tmp_path)
    recorder.begin(stream())
    recorder.push(np.zeros(2 * RATE_HZ, dtype=np.float32))
    path = recorder.plan(event("a", "start", 1.5))
    recorder.plan(event("a", "end", 1.5, 2.5))
    recorder.push(np.zeros(2 * RATE_HZ, dtype=np.float32))
    assert recorder.clips_written == 1
    assert Path(str(path)).stat().st_size == 44 + 3 * RATE_HZ * 2
    assert [f.exists() for f in files] == [False, True, True, True]
    assert files[0].parent.exists()  # its day folder still holds notes.txt
    assert other.exists()
    assert recorder.clips_deleted == 1
    assert recorder.bytes_total == 150_000 + 48_044


def test_retention_lists_each_day_folder_once_not_once_per_clip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At its limit, every new clip deletes one old one, oldest first across day folders whose
    names do not sort by time (a scan's folders are named after its files); a folder is listed
    once, when its turn comes, not before every clip. The listing is counted by wrapping the
    real os.scandir (the files are real)."""
    import edge.outputs.clips.retention as retention

    old = {"zeta_stream": 30, "alpha_stream": 20, "2026-12-01": 10}  # age of its clips, days
    expected = []
    for folder, days in old.items():
        for i in range(4):
            expected.append(make_clip_file(tmp_path, f"{folder}/c{i}.wav", 1000, days - i / 10))
    listings = []
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        listings.append(Path(path).name)
        return real_scandir(path)

    kept = Retention(tmp_path)
    assert kept.bytes == 12_000
    monkeypatch.setattr(retention.os, "scandir", scandir)
    for i in range(12):  # as the store does: room for a 1000-byte clip, then the clip
        assert kept.prune(max_bytes=11_000, max_age_seconds=None, now=time.time()) == 1
        assert [p for p in expected if not p.exists()] == expected[: i + 1]  # oldest first
        new = make_clip_file(tmp_path, f"2026-12-05/n{i}.wav", 1000, 0)
        kept.add(new, 1000, time.time())
        assert kept.bytes == 12_000
    assert listings == ["zeta_stream", "zeta_stream", "alpha_stream", "alpha_stream", "2026-12-01"]
    assert not (tmp_path / "zeta_stream").exists() and not (tmp_path / "alpha_stream").exists()
    # A clip deleted by hand in the folder listed next is noticed when it is listed.
    (tmp_path / "2026-12-05" / "n0.wav").unlink()
    for i in range(6):
        kept.add(make_clip_file(tmp_path, f"2026-12-05/m{i}.wav", 1000, 0), 1000, time.time())
        kept.prune(max_bytes=11_000, max_age_seconds=None, now=time.time())
    assert kept.bytes == sum(p.stat().st_size for p in tmp_path.glob("*/*.wav")) <= 11_000


def test_retention_holds_only_the_oldest_few_names_of_a_day_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A day folder of thousands of clips is never held whole: a listing keeps its `queue`
    oldest clips (here 2 of 5, written in shuffled order), and the folder is listed again
    when they are gone."""
    import edge.outputs.clips.retention as retention

    ages = [3.0, 5.0, 1.0, 4.0, 2.0]  # days
    files = {age: make_clip_file(tmp_path, f"day/c{age:g}.wav", 1000, age) for age in ages}
    listings = []
    real_scandir = os.scandir

    def scandir(path: os.PathLike[str]) -> object:
        listings.append(Path(path).name)
        return real_scandir(path)

    kept = Retention(tmp_path, queue=2)
    monkeypatch.setattr(retention.os, "scandir", scandir)
    for n in range(1, 6):
        assert kept.prune(max_bytes=5000 - 1000 * n, max_age_seconds=None, now=time.time()) == 1
        gone = sorted(age for age, path in files.items() if not path.exists())
        assert gone == sorted(sorted(ages, reverse=True)[:n])  # the oldest first
        assert kept.bytes == 5000 - 1000 * n
    assert listings == ["day"] * 3  # 2 + 2 + 1 oldest, never all 5 at once


def test_retention_by_age_and_empty_day_folders(tmp_path: Path) -> None:
    stale = make_clip_file(tmp_path, "2026-10-01/a.wav", 1000, 40)
    fresh = make_clip_file(tmp_path, "2026-11-12/b.wav", 1000, 10)
    kept = Retention(tmp_path)
    assert kept.prune(max_bytes=1e9, max_age_seconds=30 * 86400, now=time.time()) == 1
    assert kept.bytes == 1000
    assert not stale.exists() and not stale.parent.exists()  # the emptied day folder went too
    assert fresh.exists()
    # Through the recorder: max_age_days applies when a clip is written.
    make_clip_file(tmp_path, "2026-11-01/c.wav", 1000, 3)
    recorder = ClipRecorder(dataclasses.replace(EXACT, max_age_days=7.0), tmp_path)
    recorder.begin(stream())
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    recorder.plan(event("a", "start", 0.5))
    recorder.plan(event("a", "end", 0.5, 0.6))
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    assert recorder.clips_written == 1
    assert recorder.clips_deleted == 1  # b.wav (10 days), not c.wav (3 days)
    assert not fresh.exists() and (tmp_path / "2026-11-01/c.wav").exists()


def one_clip(recorder: ClipRecorder, event_id: str, start: float) -> str | None:
    """Plan a 0.5 s event at `start` and push audio until its clip is due."""
    path = recorder.plan(event(event_id, "start", start))
    recorder.plan(event(event_id, "end", start, start + 0.5))
    recorder.push(np.zeros(2 * RATE_HZ, dtype=np.float32))
    return path


def test_disk_full_stops_clips_not_events_and_retries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A real ENOSPC from the kernel without mounting a tiny filesystem (that needs root
    # tricks): the clip's temporary name is made a link to /dev/full, where every write fails
    # with ENOSPC, exactly as on a full disk.
    recorder = ClipRecorder(EXACT, tmp_path, retry_seconds=5.0)
    recorder.begin(stream())
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    caplog.set_level(logging.INFO, logger="edge.outputs.clips")
    path = recorder.plan(event("a", "start", 0.5))
    assert path is not None
    partial = Path(path + PARTIAL_SUFFIX)
    partial.parent.mkdir(parents=True)
    partial.symlink_to("/dev/full")
    recorder.plan(event("a", "end", 0.5, 0.6))
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))  # due: the write fails, nothing raises
    assert (recorder.clips_written, recorder.clips_failed) == (0, 1)
    assert recorder.paused
    assert not Path(path).exists() and not partial.is_symlink()  # the partial is cleaned up
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"disk full ({path}" in warnings[0]
    # Paused: new events go on without a clip, and nothing more is logged.
    assert recorder.stamp(event("b", "start", 2.0)).clip is None
    assert recorder.plan(event("b", "end", 2.0, 2.2)) is None
    assert recorder.clips_skipped == 1
    # After retry_seconds of audio, clips are tried again, and work.
    recorder.push(np.zeros(5 * RATE_HZ, dtype=np.float32))
    again = one_clip(recorder, "c", 7.5)
    assert again is not None and Path(again).exists()
    assert (recorder.clips_written, recorder.clips_failed) == (1, 1)
    assert not recorder.paused
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and messages[1].startswith("clips resumed")


def test_unwritable_folder_counts_and_goes_on(tmp_path: Path) -> None:
    # The clips folder is a file: mkdir fails (as root, a read-only folder would not).
    folder = tmp_path / "clips"
    folder.write_text("in the way")
    recorder = ClipRecorder(EXACT, folder)
    recorder.begin(stream())
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    assert one_clip(recorder, "a", 0.5) is not None
    assert (recorder.clips_written, recorder.clips_failed, recorder.paused) == (0, 1, True)


def test_limits_that_cannot_be_met_stop_clips(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # max_total_mb below one clip: the clip is refused rather than deleting everything else.
    small = dataclasses.replace(EXACT, max_total_mb=0.01)
    kept = make_clip_file(tmp_path, "2026-11-01/x.wav", 5000, 1)
    recorder = ClipRecorder(small, tmp_path)
    recorder.begin(stream())
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    with caplog.at_level(logging.WARNING, logger="edge.outputs.clips"):
        one_clip(recorder, "a", 0.5)
    assert (recorder.clips_written, recorder.clips_failed) == (0, 1)
    assert "max_total_mb" in caplog.records[0].getMessage()
    assert kept.exists()
    # min_free_mb beyond what the disk has: the same, with the free space in the message.
    greedy = dataclasses.replace(EXACT, min_free_mb=1e12)
    recorder = ClipRecorder(greedy, tmp_path / "greedy")
    recorder.begin(stream())
    recorder.push(np.zeros(RATE_HZ, dtype=np.float32))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.outputs.clips"):
        one_clip(recorder, "a", 0.5)
    assert (recorder.clips_written, recorder.clips_failed) == (0, 1)
    assert "MB free" in caplog.records[0].getMessage()


def test_settings_validate_with_line_numbers() -> None:
    schema.from_text(ClipSettings, "enabled: false\n", "clips.yaml")  # the defaults pass
    text = "enabled: true\npre_roll_seconds: -1\nmax_total_mb: 0\n"
    with pytest.raises(ConfigError) as error:
        schema.from_text(ClipSettings, text, "clips.yaml")
    assert "clips.yaml:2: pre_roll_seconds: must be within 0..600, got -1.0" in str(error.value)
    assert (
        "clips.yaml:3: max_total_mb: must be more than 0 and at most 1,000,000,000, got 0.0"
        in str(error.value)
    )
    settings, _ = schema.from_text(ClipSettings, "sample_format: float32\n", "clips.yaml")
    assert settings.sample_format == "float32"
