"""Event clips: a WAV of each event with pre- and post-roll, for people to listen to.

A `ClipRecorder` keeps a preallocated ring of the last `pre_roll + max_clip + lag margin`
seconds of the stream's source-rate mono audio. For an event that starts at s and ends at e
(stream offsets, s) the clip covers

    [max(0, s - pre_roll), min(e + post_roll, s + max_clip)]

so a long event's clip is cut `max_clip_seconds` after its start (the clip is then written
without waiting for the end). Missing audio (gaps) is silence in the clip, so the clip's time
axis stays the stream's. Clips are written when the audio up to their end has arrived, or at
the stream's end (`end()`, `close()`) with what there is. Events may trail the audio by up to
`lag_margin_seconds` (the analyzer's latency); a clip whose event came later than that loses
the beginning that has left the ring.

Files: `<folder>/<YYYY-MM-DD>/<YYYYMMDDTHHMMSS.mmmZ>_<label>[_ch<n>][_<k>].wav`, named by the
event's UTC start (streams without an anchor: `<folder>/<source name>/<offset>s_<label>.wav`).
Each is encoded in memory, written to `<name>.partial` and renamed, so no half clip is ever
seen under a final name.

Retention, checked before each write: clips older than `max_age_days` (by file mtime) go, then
the oldest until the folder's clips plus the new one fit in `max_total_mb`. A clip that cannot
fit, a filesystem with less than `min_free_mb` free after the write, ENOSPC, or a folder that
cannot be written all mean the same: the clip is counted in `clips_failed`, one warning is
logged, and new events get no clip (`plan` returns None, counted in `clips_skipped`) until
`retry_seconds` of stream time have passed; then clips are tried again. Nothing here raises into
the pipeline for a disk problem: events go on. A recovery is logged once.

Interface (the processing thread, one recorder for the daemon's life)::

    recorder = ClipRecorder(settings, folder)   # folder resolved by the caller (e.g. <out>/clips)
    recorder.begin(info)                        # Sink: each stream (rate, anchor, source)
    recorder.push(mono)                         # source-rate float32 mono, BEFORE the analyzer
    recorder.gap(n_frames)                      #   sees the same block, so events find it here
    recorder.retune(rate_hz, at_seconds)        # the device came back at another rate
    event = recorder.stamp(event)               # start and end: clip path set (or None)
    recorder.event(event)                       # Sink: idempotent with stamp/plan
    recorder.end(); recorder.close()            # Sink: write what is pending

`stamp(event)` is `dataclasses.replace(event, clip=plan(event))`: call it before the event goes
to the other sinks, so `start` and `end` messages carry the same path. Counters for metrics
(plain ints, read any time): clips_written, clips_failed, clips_skipped, clips_deleted,
bytes_total (bytes of clips in the folder: at start, then after each write), and `paused`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import io
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from edge.records import Event, Sink, StreamInfo, iso
from edge.schema import field

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
MAX_PATHS = 1024  # event ids remembered so an `end` finds its start's clip path
SUBTYPES = {"int16": "PCM_16", "float32": "FLOAT"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ClipSettings:
    enabled: bool = field(False, help="write a WAV clip of each event")
    folder: str = field("clips", help="where clips go; relative paths are under output.dir")
    pre_roll_seconds: float = field(2.0, help="audio kept before each event's start, s")
    post_roll_seconds: float = field(2.0, help="audio kept after each event's end, s")
    max_clip_seconds: float = field(
        30.0, help="a clip stops this long after its event's start (post-roll included), s"
    )
    max_total_mb: float = field(1000.0, help="oldest clips are deleted beyond this total, MB")
    max_age_days: float = field(30.0, help="clips older than this are deleted, days (0: keep)")
    min_free_mb: float = field(
        200.0, help="no clip is written that would leave less free disk than this, MB"
    )
    sample_format: Literal["int16", "float32"] = field(
        "int16", help="WAV samples: int16 (smaller, plays anywhere) or float32 (exact)"
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for name in ("pre_roll_seconds", "post_roll_seconds", "min_free_mb"):
            value = getattr(self, name)
            if value < 0:
                out.append((name, f"must be 0 or more, got {value}"))
        for name in ("max_clip_seconds", "max_total_mb"):
            value = getattr(self, name)
            if value <= 0:
                out.append((name, f"must be positive, got {value}"))
        if self.max_age_days < 0:
            out.append(("max_age_days", f"must be 0 (keep) or more, got {self.max_age_days}"))
        return out


@dataclass
class _Clip:
    path: Path
    first: int  # stream sample of the clip's first frame
    due: int  # stream sample one past its last frame (the end may move earlier)
    ended: bool = False


class ClipStopped(Exception):
    """A clip cannot be written now (limit or disk); carries the one-line reason."""


class ClipRecorder(Sink):
    def __init__(
        self,
        settings: ClipSettings,
        folder: Path,
        *,
        lag_margin_seconds: float = 10.0,
        retry_seconds: float = 60.0,
    ) -> None:
        """`lag_margin_seconds`: how far the analyzer's events may trail the audio pushed here."""
        self.lag_margin_seconds = lag_margin_seconds
        self.settings = settings
        self.folder = Path(folder)
        self.retry_seconds = retry_seconds
        self.clips_written = 0
        self.clips_failed = 0
        self.clips_skipped = 0
        self.clips_deleted = 0
        # Clips kept from earlier runs count from the start, not from the first new clip.
        self.bytes_total = sum(size for _, size, _ in _clips_in(self.folder))
        self._retry_at: float | None = None  # stream seconds (all streams) when paused
        self._seconds_total = 0.0  # audio seconds pushed over all streams, gaps included
        self._ring = np.zeros(0, dtype=np.float32)
        self._rate_hz = 0
        self._info: StreamInfo | None = None
        self._written = 0  # samples of this stream pushed since `_origin`, gaps included
        self._origin = 0.0  # stream offset of `_written` 0, s (moves on a retune)
        self._clips: dict[str, _Clip] = {}  # by event id, until written
        self._paths: dict[str, Path] = {}  # by event id, the last MAX_PATHS events
        self._failing = False  # the last write failed: log once, and once when it recovers
        self._next_due = math.inf

    @property
    def paused(self) -> bool:
        return self._retry_at is not None

    @property
    def ring_seconds(self) -> float:
        """Audio kept for clips, s: pre-roll, the longest clip, and the analyzer's lag."""
        s = self.settings
        return s.pre_roll_seconds + s.max_clip_seconds + self.lag_margin_seconds

    def reconfigure(self, settings: ClipSettings, folder: Path) -> None:
        """New settings (a reloaded config) from the next `begin` on; pending clips are
        written first, with the old ones."""
        self._finish_all()
        self.settings, self.folder = settings, Path(folder)
        self._rate_hz = 0  # the ring is made anew, at its new length, by `begin`

    # -- the stream ---------------------------------------------------------------------------

    def begin(self, info: StreamInfo) -> None:
        self._finish_all()
        self._info = info
        self._restart(info.source_rate_hz, 0.0)

    def retune(self, rate_hz: int, at_seconds: float) -> None:
        """From stream offset `at_seconds` (after a gap) the audio comes at `rate_hz`.

        Pending clips are written with the audio they have; events keep their clip paths."""
        self._write_pending()
        self._restart(rate_hz, at_seconds)

    def _restart(self, rate_hz: int, origin_seconds: float) -> None:
        """An empty ring for `rate_hz` audio from stream offset `origin_seconds` on."""
        if rate_hz != self._rate_hz:
            self._rate_hz = rate_hz
            self._ring = np.zeros(math.ceil(self.ring_seconds * rate_hz), dtype=np.float32)
        self._written = 0
        self._origin = origin_seconds

    def push(self, mono: np.ndarray) -> None:
        """Source-rate mono float32 audio (1-D) of the current stream."""
        self._feed(mono, len(mono))

    def gap(self, n_frames: int) -> None:
        """`n_frames` source-rate frames are missing: silence in any clip that spans them."""
        self._feed(None, max(0, int(n_frames)))

    def end(self) -> None:
        self._finish_all()

    def close(self) -> None:
        self._finish_all()

    # -- events -------------------------------------------------------------------------------

    def stamp(self, event: Event) -> Event:
        """The event with its clip path set (None when it gets no clip)."""
        return dataclasses.replace(event, clip=self.plan(event))

    def event(self, event: Event) -> None:
        self.plan(event)

    def plan(self, event: Event) -> str | None:
        """The clip path for this event (its start or end message); registers the clip.

        Idempotent per event id and message type, so `stamp` and `event` may both see it.
        """
        if not self.settings.enabled or self._info is None:
            return None
        if event.type == "end":
            path = self._paths.get(event.id)
            clip = self._clips.get(event.id)
            if clip is not None and event.end_offset is not None and not clip.ended:
                end = event.end_offset + self.settings.post_roll_seconds - self._origin
                clip.due = min(clip.due, max(clip.first, round(end * self._rate_hz)))
                clip.ended = True
                self._next_due = min(self._next_due, clip.due)
                if self._written >= clip.due:
                    self._write_due()
            return None if path is None else str(path)
        if event.id in self._paths:
            return str(self._paths[event.id])
        if self._retry_at is not None:
            if self._seconds_total < self._retry_at:
                self.clips_skipped += 1
                return None
            self._retry_at = None  # try again; a failure pauses once more
        path = self._name(event)
        s = self.settings
        start = event.start_offset - self._origin
        first = max(0, round((start - s.pre_roll_seconds) * self._rate_hz))
        due = round((start + s.max_clip_seconds) * self._rate_hz)
        self._clips[event.id] = _Clip(path, first, due)
        self._paths[event.id] = path
        if len(self._paths) > MAX_PATHS:  # bounded: far more than events open at once
            del self._paths[next(iter(self._paths))]
        self._next_due = min(self._next_due, due)
        if self._written >= due:  # the start came later than max_clip after it happened
            self._write_due()
        return str(path)

    def _name(self, event: Event) -> Path:
        label = _UNSAFE.sub("_", event.label).strip("._") or "event"
        if event.channel is not None:
            label += f"_ch{event.channel}"
        if event.start is not None:
            stamp = iso(event.start)  # 2026-11-22T10:23:14.350Z
            day = stamp[:10]
            base = stamp[:10].replace("-", "") + "T" + stamp[11:23].replace(":", "") + "Z"
        else:
            assert self._info is not None
            day = _UNSAFE.sub("_", Path(self._info.source).stem).strip("._") or "stream"
            base = f"{event.start_offset:010.3f}s"
        folder = self.folder / day
        taken = {clip.path for clip in self._clips.values()}
        path = folder / f"{base}_{label}.wav"
        k = 1
        while path in taken or path.exists():
            k += 1
            path = folder / f"{base}_{label}_{k}.wav"
        return path

    # -- the ring -----------------------------------------------------------------------------

    def _feed(self, mono: np.ndarray | None, n: int) -> None:
        """Store `n` frames (`mono`, or silence for None), writing clips as they fall due.

        A block is cut at each due point, so a block longer than the ring cannot overwrite a
        clip's audio before the clip is written.
        """
        if self._info is None:
            raise RuntimeError("ClipRecorder: push or gap before begin")
        i = 0
        while i < n:
            take = n - i
            if self._next_due < math.inf:
                take = min(take, max(1, int(self._next_due) - self._written))
            self._store(None if mono is None else mono[i : i + take], take)
            i += take
            if self._written >= self._next_due:
                self._write_due()

    def _store(self, mono: np.ndarray | None, n: int) -> None:
        cap = len(self._ring)
        kept = min(n, cap)  # a block longer than the ring leaves only its tail
        at = (self._written + n - kept) % cap
        head = min(kept, cap - at)
        if mono is None:
            self._ring[at : at + head] = 0.0
            self._ring[: kept - head] = 0.0
        else:
            self._ring[at : at + head] = mono[n - kept : n - kept + head]
            self._ring[: kept - head] = mono[n - kept + head :]
        self._written += n
        self._seconds_total += n / self._rate_hz

    def _read(self, first: int, stop: int) -> np.ndarray:
        """Stream samples [first, stop) still in the ring (older ones are gone), as a copy."""
        cap = len(self._ring)
        first = max(first, self._written - cap, 0)
        stop = min(stop, self._written)
        out = np.zeros(max(0, stop - first), dtype=np.float32)
        if len(out):
            at = first % cap
            head = min(len(out), cap - at)
            out[:head] = self._ring[at : at + head]
            out[head:] = self._ring[: len(out) - head]
        return out

    # -- writing ------------------------------------------------------------------------------

    def _write_due(self) -> None:
        for event_id, clip in list(self._clips.items()):
            if clip.due <= self._written:
                del self._clips[event_id]
                self._write(clip, clip.due)
        self._next_due = min((c.due for c in self._clips.values()), default=math.inf)

    def _write_pending(self) -> None:
        """Every pending clip is written now, with the audio there is."""
        for clip in self._clips.values():
            self._write(clip, min(clip.due, self._written))
        self._clips.clear()
        self._next_due = math.inf

    def _finish_all(self) -> None:
        """The stream is over: pending clips are written, and event ids forgotten."""
        self._write_pending()
        self._paths.clear()

    def _write(self, clip: _Clip, stop: int) -> None:
        audio = self._read(clip.first, stop)
        if len(audio) == 0:
            return
        try:
            self._save(clip.path, audio)
        except (OSError, ClipStopped) as exc:
            self.clips_failed += 1
            if not self._failing:
                logger.warning(
                    "clips paused, retried after %g s of audio (events go on): %s",
                    self.retry_seconds,
                    _reason(exc, clip.path),
                )
            self._failing = True
            self._retry_at = self._seconds_total + self.retry_seconds
            return
        if self._failing:
            logger.info("clips resumed: %s written", clip.path)
            self._failing = False
        self.clips_written += 1

    def _save(self, path: Path, audio: np.ndarray) -> None:
        s = self.settings
        if s.sample_format == "int16":
            np.clip(audio, -1.0, 1.0, out=audio)
        encoded = io.BytesIO()
        sf.write(encoded, audio, self._rate_hz, subtype=SUBTYPES[s.sample_format], format="WAV")
        data = encoded.getbuffer()
        size = len(data)
        limit = s.max_total_mb * 1e6
        if size > limit:
            raise ClipStopped(f"a {size} byte clip is over max_total_mb ({s.max_total_mb:g} MB)")
        max_age = s.max_age_days * 86400 if s.max_age_days > 0 else None
        kept = prune(self.folder, limit - size, max_age, time.time())
        self.clips_deleted += kept.deleted
        self.bytes_total = kept.bytes
        # After pruning, which may remove an emptied day folder, this one included.
        path.parent.mkdir(parents=True, exist_ok=True)
        free = shutil.disk_usage(path.parent).free
        if free - size < s.min_free_mb * 1e6:
            raise ClipStopped(
                f"{path.parent}: {free / 1e6:.0f} MB free, min_free_mb is {s.min_free_mb:g}"
            )
        partial = path.with_name(path.name + PARTIAL_SUFFIX)
        try:
            with partial.open("wb") as f:
                f.write(data)
            partial.replace(path)
        except OSError:
            partial.unlink(missing_ok=True)
            raise
        self.bytes_total += size


def _reason(exc: BaseException, path: Path) -> str:
    """One line: what failed, and on which file."""
    if isinstance(exc, OSError):
        what = "disk full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
        return f"{what} ({exc.filename or path})"
    return str(exc)


@dataclass(frozen=True)
class Kept:
    bytes: int  # clips left in the folder, bytes
    deleted: int  # clips deleted now


def prune(folder: Path, max_bytes: float, max_age_seconds: float | None, now: float) -> Kept:
    """Delete clips (`*.wav` under `folder`) older than `max_age_seconds` before `now` (Unix s,
    compared with mtimes), then the oldest until the rest total at most `max_bytes`.

    Empty day folders left behind are removed. Files that vanish meanwhile are ignored.
    """
    clips = sorted(_clips_in(folder))
    total = sum(size for _, size, _ in clips)
    deleted = 0
    for mtime, size, path in clips:
        too_old = max_age_seconds is not None and now - mtime > max_age_seconds
        if not too_old and total <= max_bytes:
            break
        path.unlink(missing_ok=True)
        total -= size
        deleted += 1
        with contextlib.suppress(OSError):
            path.parent.rmdir()  # only succeeds once the day's folder is empty
    return Kept(total, deleted)


def _clips_in(folder: Path) -> list[tuple[float, int, Path]]:
    """(mtime, size, path) of every clip under `folder`; files that vanish meanwhile skipped."""
    clips = []
    for path in folder.glob("*/*.wav") if folder.is_dir() else ():
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        clips.append((st.st_mtime, st.st_size, path))
    return clips
