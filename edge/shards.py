"""One long recording on every core: time shards, scored apart, merged into one scan's bytes.

A shard scores the windows of one stretch of a file with the model (the expensive part) and
hands back their scores, in the batches it scored them in; the merge replays every shard's
batches, in order, through one Analyzer (`Analyzer.replay`): the per-second rows, the event
detectors (min duration, merge gap, median, refractory time) and the event ids then run once
over the whole file, as in a one-process scan, so an event across a shard boundary is one event
and the outputs are the one-process scan's, byte for byte.

What makes the batches identical to a one-process scan's is how a shard reads. Its stretch
begins on the scan's own block grid (`SCAN_BLOCK_SECONDS`), so from there on it pushes the very
blocks a one-process scan pushes. Before it, it reads from a sample on a row of the resampler
and on the window hop (so its resampled samples, frames and windows fall where the whole
file's do) at least a window and the resampler's reach earlier: by its first block its
resampler and frontend hold what the one-process scan's hold, and every push cuts the same
windows into the same batches (the model's numbers can depend on a batch's size). A shard
keeps the batches whose first window starts in its stretch, and reads on past it until the
next shard's first batch appears.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from itertools import chain, islice
from pathlib import Path

import numpy as np

from edge.audio.files import AudioFile
from edge.audio.resample import StreamingResampler
from edge.audio.streams import Conditioner, repaired
from edge.detection.analysis import Analyzer
from edge.errors import SoundwatchError
from edge.outputs.files import ScanFiles
from edge.records import Sink, StreamInfo
from edge.scan import SCAN_BLOCK_SECONDS, ScanReport, scan

logger = logging.getLogger(__name__)

# Containers libsndfile seeks in to the exact frame (compressed Ogg and MP3 are scored whole).
SEEKABLE = ("WAV", "WAVEX", "W64", "RF64", "FLAC", "AIFF", "CAF")
SHARDS_PER_CORE = 4  # default shard length: the audio spread over this many shards a core
MIN_SHARD_SECONDS = 15 * 60.0  # what a shard scores twice (a batch or two) stays a few percent


class _Past(Exception):
    """A shard met the first batch of the next shard's stretch: it has all of its own."""


@dataclass(frozen=True)
class Shard:
    """Frames `first` to `end` (None: the end) of `file`, read from `warm` on (file frames)."""

    file: Path
    first: int
    end: int | None
    warm: int
    up: int  # model samples per `down` file frames
    down: int
    seconds: float  # of audio in its own stretch

    def model_sample(self, frame: int) -> int:
        return frame * self.up // self.down


@dataclass
class ShardResult:
    batches: list[tuple[np.ndarray, np.ndarray]]  # (centres s, kept scores) as scored
    report: ScanReport  # this stretch's audio and windows
    samples: int | None = None  # model samples in the whole stream, when it read to the end
    rate_hz: int = 0  # the recording's
    bad_samples: int = 0
    problem: str | None = None  # why this shard could not be scored: the file is scored whole


def plan(file: Path, analyzer: Analyzer, shard_seconds: float) -> list[Shard]:
    """`file`'s shards of about `shard_seconds`; none when it is scored whole: shorter than
    two shards, not seekable to the frame, or a rate the model cannot take."""
    try:
        with AudioFile.open(file) as audio:
            rate, frames, kind = audio.sample_rate_hz, audio.frames, audio.format_name
        resampler = StreamingResampler(rate, analyzer.rate_hz)
    except SoundwatchError:
        return []  # scored whole, which skips it with the reason
    if kind.split()[0] not in SEEKABLE:
        return []
    up = analyzer.rate_hz // math.gcd(analyzer.rate_hz, rate)
    down = rate // math.gcd(analyzer.rate_hz, rate)
    block = max(1, round(SCAN_BLOCK_SECONDS * rate))
    # A shard reads from a resampler row on the window hop (hop_in frames: a whole number of
    # model samples), this far before its stretch: its first window, the resampler's reach.
    hop_in = analyzer.hop_samples * down // math.gcd(up, analyzer.hop_samples * down)
    align = math.lcm(resampler.row_input_samples, hop_in)
    lead = -(-analyzer.window_samples * down // up) + resampler.reach_samples + align
    size = max(1, round(shard_seconds * rate / block)) * block
    starts = list(range(0, frames, size))
    if len(starts) < 2:
        return []
    ends: list[int | None] = [*starts[1:], None]
    warm = [max(0, (first - lead) // align * align) for first in starts]
    return [
        Shard(file, first, end, start, up, down, ((end or frames) - first) / rate)
        for first, end, start in zip(starts, ends, warm, strict=True)
    ]


def stream_info(
    analyzer: Analyzer, file: Path, rate_hz: int, anchor: datetime | None
) -> StreamInfo:
    """What a one-process scan begins `file`'s stream with (edge.scan.scan)."""
    return StreamInfo(str(file), [s.label for s in analyzer.labels], anchor, rate_hz)


def score(analyzer: Analyzer, shard: Shard, anchor: datetime | None) -> ShardResult:
    """The model's scores of `shard`'s windows, in the batches a one-process scan makes."""
    began = time.perf_counter()
    result = ShardResult([], ScanReport())
    own_from = shard.model_sample(shard.first)
    own_to = math.inf if shard.end is None else shard.model_sample(shard.end)
    half = analyzer.window_samples / 2

    def keep(centres: np.ndarray, scores: np.ndarray) -> None:
        first = round(float(centres[0]) * analyzer.rate_hz - half)  # its first window's start
        if first >= own_to:
            raise _Past  # the next shard's first batch: stop here, mid-block
        if first >= own_from:
            result.batches.append((centres.copy(), scores.copy()))
            result.report.windows += len(centres)

    try:
        with AudioFile.open(shard.file) as audio:
            conditioner = Conditioner(audio.sample_rate_hz, analyzer.rate_hz, "mix")
            block = max(1, round(SCAN_BLOCK_SECONDS * audio.sample_rate_hz))
            audio.seek(shard.warm)
            head = shard.first - shard.warm  # up to its stretch, then the scan's blocks
            blocks = chain(islice(audio.blocks(head), 1) if head else (), audio.blocks(block))
            analyzer.sink = Sink()  # no rows or events come out of a shard
            analyzer.windows_to = keep
            result.rate_hz = audio.sample_rate_hz
            info = stream_info(analyzer, shard.file, result.rate_hz, anchor)
            analyzer.begin(info, position=shard.model_sample(shard.warm))
            at = shard.warm
            for samples in blocks:
                bad = conditioner.bad_samples
                out = conditioner.process(samples)
                if at >= shard.first and (shard.end is None or at < shard.end):
                    result.report.audio_seconds += len(samples) / audio.sample_rate_hz
                    result.bad_samples += conditioner.bad_samples - bad
                at += len(samples)
                analyzer.push(out)
            analyzer.push(conditioner.flush())
            result.samples = shard.model_sample(shard.warm) + conditioner.frames_out
            if audio.read_error is not None:
                result.problem = audio.read_error
    except _Past:
        pass  # (the analyzer is left mid-stream: its next begin() resets it)
    except SoundwatchError as exc:
        result.problem = str(exc)
    finally:
        analyzer.windows_to = None
    result.report.wall_seconds = time.perf_counter() - began
    return result


def merge(
    analyzer: Analyzer,
    file: Path,
    base: Path,
    *,
    device: str,
    anchor: datetime | None,
    parts: list[ShardResult],
) -> ScanReport:
    """`file`'s outputs at `base` from its shards' scores: the one-process scan's bytes. A file
    a shard could not read to the frame is scored again whole, as a one-process scan does."""
    began = time.perf_counter()
    report = ScanReport()
    for part in parts:
        report.add(part.report)
    samples = parts[-1].samples if parts else None
    if samples is None or any(p.problem for p in parts):
        whole = scan(analyzer, [file], base.parent, device=device, progress=False,
                     bases={file: base}, anchors={file: anchor})  # fmt: skip
        whole.audio_seconds -= report.audio_seconds  # the shards' part is counted already
        whole.windows -= report.windows
        return whole
    info = stream_info(analyzer, file, parts[-1].rate_hz, anchor)
    files = ScanFiles(base, device)
    analyzer.sink = files
    try:
        analyzer.replay(info, chain.from_iterable(p.batches for p in parts), samples)
    except (OSError, UnicodeError) as exc:
        files.close()
        reason = getattr(exc, "strerror", None) or exc
        report.files_skipped.append(str(file))
        logger.error("skipped: %s: cannot write its outputs (%s)", file, reason)
    else:
        report.files_scored += 1
    bad = sum(p.bad_samples for p in parts)
    if bad:
        logger.warning(repaired(str(file), bad))
    report.wall_seconds += time.perf_counter() - began
    return report
