"""`soundwatch scan`: score recordings as fast as the machine allows.

Each input file gets, under a mirror of its path in `--out`, per-second probabilities, events
as JSONL and events as SongExplorer CSV (see `edge.outputs.files.ScanFiles`).
Files that cannot be read are skipped with the reason logged; files already scored keep their
outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from edge.audio.files import AudioFile, find_audio_files
from edge.audio.levels import LevelSettings
from edge.audio.streams import Gap, file_streams, repaired
from edge.detection.analysis import Analyzer
from edge.errors import AudioError, SoundwatchError
from edge.ops.progress import audio_bar, logs_above, on_terminal
from edge.outputs.evidence import Evidence
from edge.outputs.files import ScanFiles
from edge.pipeline import feed
from edge.records import Event, SecondRow, Sink, StreamInfo

logger = logging.getLogger(__name__)

# Large reads and batches: scan is throughput, not latency. 10 s blocks are past where a
# larger read is any faster, and a block is held twice (as read, then mixed to mono): 3.4 MiB
# each at 44.1 kHz, where 30 s held 10 MiB more. A batch is also capped in bytes
# (edge.detection.analysis.MAX_BATCH_BYTES), which only heavy models reach.
SCAN_BLOCK_SECONDS = 10.0
SCAN_BATCH_WINDOWS = 256


@dataclass
class ScanReport:
    files_scored: int = 0
    files_skipped: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    wall_seconds: float = 0.0
    windows: int = 0

    def add(self, other: ScanReport) -> None:
        """Count `other` (a part of the same scan, scored elsewhere) in this one."""
        self.files_scored += other.files_scored
        self.files_skipped += other.files_skipped
        self.audio_seconds += other.audio_seconds
        self.wall_seconds += other.wall_seconds
        self.windows += other.windows

    @property
    def x_real_time(self) -> float:
        return self.audio_seconds / self.wall_seconds if self.wall_seconds else 0.0


# The longest name scan writes is `<file>.probabilities.csv.partial`; a file system takes 255
# bytes a name.
NAME_BYTES = 255 - len(".probabilities.csv.partial")


def output_bases(inputs: list[Path], out: Path) -> dict[Path, Path]:
    """Where each file's outputs go: `out` / its path below the folder it was found in, each
    name cut to fit the file system (with a hash of the whole name, so two stay apart)."""
    bases: dict[Path, Path] = {}
    for given in inputs:
        for path in find_audio_files([given]):
            rel = path.relative_to(given) if given.is_dir() else Path(path.name)
            bases.setdefault(path, out.joinpath(*(fitted(part) for part in rel.parts)))
    return bases


def fitted(name: str) -> str:
    """`name`, or its first bytes, `~` and 8 hex digits of its hash when it is too long for an
    output name (README: "What comes out")."""
    raw = os.fsencode(name)
    if len(raw) <= NAME_BYTES:
        return name
    digest = hashlib.sha256(raw).hexdigest()[:8]
    head = raw[: NAME_BYTES - 9].decode("utf-8", errors="ignore")  # whole characters only
    return f"{head}~{digest}"


class _PerFile(Sink):
    """Routes each stream to its own ScanFiles, chosen by the stream's name.

    A file whose outputs cannot be written (a name or a path the file system refuses, a full
    disk) is failed alone: its partial outputs go, `failed` says why, and the next file is
    scored as usual."""

    def __init__(self, bases: dict[str, Path], device: str, stop: threading.Event) -> None:
        self.bases, self.device = bases, device
        self.stop = stop  # set when interrupted: the file in progress is discarded, not kept
        self.current: ScanFiles | None = None
        self.failed: str | None = None  # why the current file's outputs could not be written

    def begin(self, info: StreamInfo) -> None:
        self.failed = None
        base = self.bases[info.source]
        self.current = ScanFiles(base, self.device)
        self._guard(lambda files: files.begin(info))

    def _guard(self, write: Callable[[ScanFiles], None]) -> None:
        if self.current is None:
            return
        try:
            write(self.current)
        except (OSError, UnicodeError) as exc:
            self.failed = f"cannot write its outputs ({getattr(exc, 'strerror', None) or exc})"
            self.close()

    def second(self, row: SecondRow) -> None:
        self._guard(lambda files: files.second(row))

    def event(self, event: Event) -> None:
        self._guard(lambda files: files.event(event))

    def end(self) -> None:
        if self.current is not None:
            if self.stop.is_set():
                self.current.close()
            else:
                self._guard(lambda files: files.end())
            self.current = None

    def close(self) -> None:
        if self.current is not None:
            with contextlib.suppress(OSError):  # what could not be made cannot be removed
                self.current.close()
            self.current = None


def scan(
    analyzer: Analyzer,
    inputs: list[Path],
    out: Path,
    *,
    device: str,
    start: datetime | None = None,
    stop: threading.Event | None = None,
    progress: bool | None = None,
    levels: LevelSettings | None = None,
    bases: dict[Path, Path] | None = None,
    anchors: dict[Path, datetime | None] | None = None,
    names: Mapping[Path, str] | None = None,
) -> ScanReport:
    """Score every audio file under `inputs` into `out`; with `levels` enabled, each second's
    sound levels go into the probabilities CSV too. `bases`: the files to score and where
    their outputs go, when the caller chose them (`output_bases` of `inputs` otherwise);
    `anchors`: each file's start, when worked out over more files than these
    (`edge.scanplan.anchors`); `names`: what a file is called in its outputs (events' `source`
    and ids, SongExplorer's `wav`) when not its path: the URL a downloaded copy came from."""
    stop = stop or threading.Event()
    bases = output_bases(inputs, out) if bases is None else bases
    files = list(bases)
    names = names or {}
    per_file = _PerFile({names.get(p, str(p)): b for p, b in bases.items()}, device, stop)
    evidence = None
    if levels is not None and levels.enabled:
        evidence = Evidence(per_file, levels, None)
    analyzer.sink = evidence or per_file
    report = ScanReport()
    show = on_terminal() if progress is None else progress
    labels = [s.label for s in analyzer.labels]

    def skipped(path: Path, error: AudioError) -> None:
        report.files_skipped.append(names.get(path, str(path)))
        copy_of = f" (a copy of {names[path]})" if path in names else ""
        logger.error("skipped: %s%s", error, copy_of)

    began = time.perf_counter()
    streams = file_streams(
        files,
        block_seconds=SCAN_BLOCK_SECONDS,
        speed=0,
        stop=stop,
        start=start,
        on_error=skipped,
        anchors=anchors,
    )
    bar = audio_bar(total_seconds(files) if show else 0.0, "scan", show)
    # "file 3/10", skipped ones counted
    number = {names.get(path, str(path)): i for i, path in enumerate(files, 1)}
    try:
        with logs_above(bar):
            for stream in streams:
                stream.name = names.get(Path(stream.name), stream.name)
                info = StreamInfo(stream.name, labels, stream.anchor, stream.rate_hz)
                windows_before = analyzer.windows_scored
                if not bar.disable:
                    file = number.get(stream.name, 0)
                    bar.set_postfix_str(f"file {file}/{len(files)}", refresh=False)
                    stream.blocks = _counted(stream.blocks, stream.rate_hz, bar)
                try:
                    conditioner = feed(stream, analyzer, info, "mix", stop, None, evidence)
                except SoundwatchError as exc:  # this file's audio cannot be scored (its rate)
                    report.files_skipped.append(stream.name)
                    logger.error("skipped: %s: %s", stream.name, exc)
                    continue
                if stop.is_set():
                    break
                if per_file.failed is not None:
                    report.files_skipped.append(stream.name)
                    logger.error("skipped: %s: %s", stream.name, per_file.failed)
                    continue
                report.files_scored += 1
                report.windows += analyzer.windows_scored - windows_before
                report.audio_seconds += conditioner.frames_in / stream.rate_hz
                if conditioner.bad_samples:
                    logger.warning(repaired(stream.name, conditioner.bad_samples))
    finally:
        per_file.close()
        bar.close()
    report.wall_seconds = time.perf_counter() - began
    return report


def total_seconds(files: list[Path]) -> float:
    """Seconds of audio in `files`, from their headers: the bar's total (unreadable: 0)."""
    total = 0.0
    for path in files:
        try:
            with AudioFile.open(path) as audio:
                total += audio.duration_seconds
        except AudioError:
            continue  # skipped by scan too, with the reason logged
    return total


def _counted(
    blocks: Iterator[np.ndarray | Gap], rate_hz: int, bar: tqdm
) -> Iterator[np.ndarray | Gap]:
    """The blocks, unchanged, advancing `bar` by each one's seconds (blocks are 10 s here)."""
    for block in blocks:
        if not isinstance(block, Gap):
            bar.update(len(block) / rate_hz)
        yield block
