"""The clip recorder's two halves alone: planning (edge/outputs/clips/plan.py) with plain numbers,
and the store (edge/outputs/clips/store.py) on a real folder with time passed in."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from edge.outputs.clips.plan import PlannedClip, clip_path
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.clips.store import ClipStore
from edge.records import Event

RATE_HZ = 8000
ROLLS = ClipSettings(enabled=True, pre_roll_seconds=1.0, post_roll_seconds=0.5)
DAY = datetime(2026, 11, 22, 10, 23, 14, 350_000, tzinfo=timezone.utc)


def event(start: float, anchor: datetime | None = DAY, channel: int | None = None) -> Event:
    return Event(
        id="e1",
        type="start",
        label="bird song/2",
        start_offset=start,
        end_offset=None,
        start=anchor,
        end=None,
        score_max=0.9,
        score_mean=0.8,
        threshold=0.5,
        source="/recordings/site 4.wav",
        channel=channel,
    )


def test_a_clip_holds_pre_roll_the_event_and_post_roll_in_samples() -> None:
    clip = PlannedClip.starting(Path("c.wav"), 5.0, 0.0, ROLLS, RATE_HZ)
    assert (clip.first, clip.due) == (4 * RATE_HZ, 35 * RATE_HZ)  # max_clip_seconds 30 at most
    clip.end(6.0, 0.0, ROLLS, RATE_HZ)
    assert (clip.first, clip.due, clip.ended) == (4 * RATE_HZ, 6.5 * RATE_HZ, True)
    clip.end(9.0, 0.0, ROLLS, RATE_HZ)  # only the first end counts
    assert clip.due == 6.5 * RATE_HZ


def test_pre_roll_stops_at_the_stretch_start_and_long_events_at_max_clip() -> None:
    early = PlannedClip.starting(Path("c.wav"), 0.4, 0.0, ROLLS, RATE_HZ)
    assert early.first == 0
    long = PlannedClip.starting(Path("c.wav"), 2.0, 0.0, ROLLS, RATE_HZ)
    long.end(60.0, 0.0, ROLLS, RATE_HZ)
    assert long.due == 32 * RATE_HZ
    # After a device came back at another rate 10 s in, samples count from there.
    later = PlannedClip.starting(Path("c.wav"), 12.0, 10.0, ROLLS, 16000)
    assert (later.first, later.due) == (16000, 32 * 16000)
    # An end that comes before the pre-roll's start (offsets rounded) never makes due < first.
    later.end(10.0, 10.0, ROLLS, 16000)
    assert later.due == later.first == 16000


def test_names_by_utc_start_label_and_channel_and_never_taken(tmp_path: Path) -> None:
    first = clip_path(tmp_path, event(5.0, channel=1), "mic", set())
    assert first == tmp_path / "2026-11-22" / "20261122T102314.350Z_bird_song_2_ch1.wav"
    # Planned (not yet written) and on-disk names are both taken.
    second = clip_path(tmp_path, event(5.0, channel=1), "mic", {first})
    assert second.name == "20261122T102314.350Z_bird_song_2_ch1_2.wav"
    second.parent.mkdir(parents=True)
    second.touch()
    third = clip_path(tmp_path, event(5.0, channel=1), "mic", {first})
    assert third.name == "20261122T102314.350Z_bird_song_2_ch1_3.wav"
    # No anchor: by the source's name and the offset.
    plain = clip_path(tmp_path, event(5.0, anchor=None), "/recordings/site 4.wav", set())
    assert plain == tmp_path / "site_4" / "000005.000s_bird_song_2.wav"


def test_the_store_pauses_for_retry_seconds_of_stream_time_after_a_failure(
    tmp_path: Path,
) -> None:
    blocked = tmp_path / "clips"
    blocked.write_text("a file where the folder should be")
    store = ClipStore(ClipSettings(enabled=True), blocked, retry_seconds=5.0)
    audio = np.zeros(RATE_HZ, dtype=np.float32)
    assert store.admit(100.0)
    assert not store.write(blocked / "d" / "a.wav", audio, RATE_HZ, 100.0, 0.0)
    assert (store.written, store.failed, store.paused) == (0, 1, True)
    assert not store.admit(104.9)
    assert not store.admit(104.99)
    assert store.skipped == 2
    assert store.admit(105.0)  # 5 s of stream time later: tried again
    assert not store.paused
    blocked.unlink()
    assert store.write(blocked / "d" / "b.wav", audio, RATE_HZ, 105.0, 0.0)
    assert (store.written, store.failed, store.skipped) == (1, 1, 2)
    assert store.bytes_total == (blocked / "d" / "b.wav").stat().st_size == 44 + 2 * RATE_HZ


def test_the_store_deletes_clips_older_than_max_age_by_the_time_it_is_given(
    tmp_path: Path,
) -> None:
    """Ages count from `now` as passed in, not the wall clock: a clip stamped 8 days before it
    goes under a 7-day limit, one stamped 6 days before stays."""
    now = 2_000_000_000.0
    for name, days in (("old", 8), ("young", 6)):
        path = tmp_path / "2026-11-01" / f"{name}.wav"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes(1000))
        os.utime(path, (now - days * 86400, now - days * 86400))
    store = ClipStore(ClipSettings(enabled=True, max_age_days=7.0), tmp_path)
    assert store.bytes_total == 2000
    new = tmp_path / "2026-11-22" / "new.wav"
    assert store.write(new, np.zeros(RATE_HZ, dtype=np.float32), RATE_HZ, 0.0, now)
    assert store.deleted == 1
    assert sorted(p.name for p in tmp_path.glob("*/*.wav")) == ["new.wav", "young.wav"]
    assert store.bytes_total == 1000 + new.stat().st_size
