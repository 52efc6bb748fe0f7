"""Where rows and events go: the terminal, CSV and JSONL files, and (later) MQTT.

A sink gets `begin(stream)`, then `second(row)` and `event(event)` in time order, then `end()`
when the stream is over, and `close()` when the program stops. New sinks (MQTT, clips) plug in
by implementing the same four methods; `Fanout` hands everything to several.

Output layouts (documented in the README):
- scan, per input file, under a mirror of its path: `<file>.probabilities.csv`
  (`time,offset_seconds,status,<label>...`), `<file>.events.jsonl`, `<file>-predicted.csv`
  (SongExplorer: `wav,start_tic,stop_tic,predicted,label`). Written to a temporary name and
  renamed when the file is done, so an interrupted scan never leaves half a result.
- run: `<out>/<device>/<YYYY-MM-DD>/<YYYYMMDDTHH>.csv` (`time,status,<label>...`, one per UTC
  hour; with `levels:` on, then `dbfs` and a column per band, e.g. `dbfs_1000hz`) and
  `events.jsonl` (and `predicted.csv` when the source is a file) in the day's folder. With a
  detector per channel, the CSVs are per channel: `<YYYYMMDDTHH>_ch<n>.csv`, `predicted_ch<n>.csv`.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
from pathlib import Path
from typing import IO, Literal

import numpy as np

from edge.audio.levels import level_columns
from edge.outputs.lines import Failures, LineFile
from edge.records import ANALYSED, Event, SecondRow, Sink, StreamInfo, iso

logger = logging.getLogger(__name__)


class Fanout(Sink):
    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = sinks

    def begin(self, info: StreamInfo) -> None:
        for s in self.sinks:
            s.begin(info)

    def second(self, row: SecondRow) -> None:
        for s in self.sinks:
            s.second(row)

    def event(self, event: Event) -> None:
        for s in self.sinks:
            s.event(event)

    def end(self) -> None:
        for s in self.sinks:
            s.end()

    def close(self) -> None:
        for s in self.sinks:
            s.close()


def format_score(p: float) -> str:
    return "" if math.isnan(p) else f"{p:.4f}"


@functools.lru_cache(maxsize=8)
def _cells_format(n: int) -> str:
    return ",".join(["%.4f"] * n)


# The four decimals of 0 ... 9999 as ASCII digits, the four bytes of one little-endian uint32
# each, and a cell `d.dddd,` as a packed record: a row's cells are looked up (np.take) and
# written field by field, not divided digit by digit.
_DECIMALS = (
    (np.arange(10000)[:, None] // np.array([1000, 100, 10, 1]) % 10 + ord("0"))
    .astype(np.uint8)
    .view("<u4")
    .ravel()
)
_CELL = np.dtype([("unit", "u1"), ("point", "u1"), ("decimals", "<u4"), ("comma", "u1")])


# Rows of fewer scores are faster through one %-format (2 labels: 0.5 against 12 µs).
NUMPY_CELLS_FROM = 100


def score_cells(scores: np.ndarray) -> str:
    """`format_score` of each score, comma-separated. Long rows of float32 scores in [0, 10)
    (probabilities: BirdNET's 6,522 a second, 32 µs here against 870 µs by %-format) are
    made with numpy; rows with other values or NaN cells, and short rows, by `%`-format."""
    if scores.dtype == np.float32 and len(scores) >= NUMPY_CELLS_FROM:
        # A float32 times 10,000 is exact in float64 (24 + 14 bits), and rint rounds half to
        # even as "%.4f" does on that exact value: the same digits, to the last one.
        tens = np.rint(scores.astype(np.float64) * 10000.0)
        low, high = tens.min(), tens.max()  # NaN anywhere: both NaN, and the test fails
        if low >= 0 and high < 100000 and not np.signbit(scores).any():
            return _fixed_cells(tens)
        if np.isnan(scores).all():
            return "," * (len(scores) - 1)
    values = scores.tolist()
    if np.isnan(scores).any():
        return ",".join(format_score(p) for p in values)
    return _cells_format(len(values)) % tuple(values)


def _fixed_cells(tens: np.ndarray) -> str:
    """`d.dddd,` for each of `tens` (scores times 10,000, in [0, 100000)), the last comma cut."""
    whole = tens.astype(np.uint32)
    units = whole // 10000
    cells = np.empty(len(tens), dtype=_CELL)
    cells["unit"] = units
    cells["unit"] += ord("0")
    cells["point"] = ord(".")
    cells["decimals"] = np.take(_DECIMALS, whole - units * 10000)
    cells["comma"] = ord(",")
    # Decoded from the array's own memory: tobytes, the cut and decode each copied the row.
    return str(cells.view(np.uint8)[:-1].data, "ascii")


def columns(info: StreamInfo) -> list[str]:
    """The per-second CSV columns after `time`/`offset_seconds`/`status`: a score per label,
    then the sound levels when they are on (`dbfs`, `dbfs_1000hz`, ...)."""
    levels = [] if info.level_unit is None else level_columns(info.level_unit, info.level_bands)
    return [*info.labels, *levels]


def row_cells(row: SecondRow, info: StreamInfo | None) -> str:
    """The scores (4 decimals) and levels (2 decimals) of a row, comma-separated; empty cells
    where there is nothing (not analysed, no audio)."""
    cells = score_cells(row.scores)
    if info is None or info.level_unit is None:
        return cells
    levels = row.levels
    if levels is None:
        return cells + "," * (1 + len(info.level_bands))
    # A device back at a lower rate has no levels for its top bands: those cells stay empty.
    bands = "".join(
        "," + ("" if (db := levels.bands.get(b)) is None else f"{db:.2f}") for b in info.level_bands
    )
    return f"{cells},{levels.dbfs_or_db:.2f}{bands}"


def songexplorer_row(event: Event, info: StreamInfo) -> str:
    """`wav,start_tic,stop_tic,predicted,label`, tics in samples at the recording's rate."""
    assert event.end_offset is not None
    start = round((info.offset_seconds + event.start_offset) * info.source_rate_hz)
    stop = round((info.offset_seconds + event.end_offset) * info.source_rate_hz)
    return f"{Path(info.source).name},{start},{stop},predicted,{event.label}\n"


class Printer(Sink):
    """Human-readable lines on stdout: events, and per-second rows when asked."""

    def __init__(
        self, what: Literal["events", "seconds", "both"], stream: IO[str] | None = None
    ) -> None:
        self.what = what
        self.out = stream or sys.stdout
        self._labels: list[str] = []
        self._unit = ""

    def begin(self, info: StreamInfo) -> None:
        self._labels = info.labels
        self._unit = info.level_unit or ""
        if info.channel:  # one detector per channel: one header for the stream, not each
            return
        when = iso(info.anchor) if info.anchor else "no timestamp"
        self.out.write(f"# {info.source} ({when})\n")
        self.out.flush()

    def second(self, row: SecondRow) -> None:
        if self.what == "events":
            return
        when = iso(row.time)[11:19] if row.time else f"{row.offset_seconds:9.1f}s"
        if row.channel is not None:
            when += f"  ch{row.channel}"
        if row.status == ANALYSED:
            scores = "  ".join(
                f"{label} {p:.2f}"
                for label, p in zip(self._labels, row.scores.tolist(), strict=True)
            )
        else:
            scores = f"({row.status})"
        if row.levels is not None:
            scores += f"  {row.levels.dbfs_or_db:.1f} {self._unit}"
        self.out.write(f"{when}  {scores}\n")
        self.out.flush()

    def event(self, event: Event) -> None:
        if self.what == "seconds":
            return
        t = event.start if event.type == "start" else event.end
        offset = event.start_offset if event.type == "start" else event.end_offset
        when = iso(t) if t else f"{offset:.3f}s"
        if event.channel is not None:
            when += f"  ch{event.channel}"
        # The scores are raw window scores, as in the per-second rows; a start's are over the
        # windows up to the one that confirmed it, hence "so far".
        score = f"max {event.score_max:.2f}"
        extra = ""
        if event.type == "end" and event.end_offset is not None:
            extra = f"  {event.end_offset - event.start_offset:.2f}s"
            if event.clip is not None:
                extra += f"  clip {event.clip}"
        else:
            score += " so far"
        if event.continued:  # a piece after a max-duration split: it needs only the off threshold
            extra += "  (continues a split event)"
        self.out.write(f"{when}  {event.type.upper():5}  {event.label}  {score}{extra}\n")
        self.out.flush()


class ScanFiles(Sink):
    """Per-file outputs for `scan`, written to temporary names and renamed at the end."""

    def __init__(self, out_base: Path, device: str) -> None:
        self.out_base = out_base  # <out>/<relative path of the input file>, without suffixes
        self.device = device
        self._files: dict[str, tuple[Path, IO[str]]] = {}
        self._info: StreamInfo | None = None

    def _open(self, suffix: str) -> IO[str]:
        final = self.out_base.with_name(self.out_base.name + suffix)
        tmp = final.with_name(final.name + ".partial")
        # A source name that is not valid UTF-8 is written with backslash escapes.
        f = tmp.open("w", encoding="utf-8", errors="backslashreplace", newline="")
        self._files[suffix] = (final, f)
        return f

    def begin(self, info: StreamInfo) -> None:
        self._info = info
        self.out_base.parent.mkdir(parents=True, exist_ok=True)
        self._csv = self._open(".probabilities.csv")
        self._csv.write(",".join(["time", "offset_seconds", "status", *columns(info)]) + "\n")
        self._jsonl = self._open(".events.jsonl")
        self._predicted = self._open("-predicted.csv")

    def second(self, row: SecondRow) -> None:
        time = iso(row.time) if row.time else ""
        cells = row_cells(row, self._info)
        self._csv.write(f"{time},{row.offset_seconds:g},{row.status},{cells}\n")

    def event(self, event: Event) -> None:
        info = self._info
        assert info is not None
        payload = event.to_json(info.model, info.model_version, self.device, info.offset_seconds)
        self._jsonl.write(json.dumps(payload) + "\n")
        if event.type == "end":
            self._predicted.write(songexplorer_row(event, info))

    def end(self) -> None:
        for final, f in self._files.values():
            f.close()
            final.with_name(final.name + ".partial").replace(final)
        self._files.clear()

    def close(self) -> None:
        """Interrupted: remove partial files so no half result is mistaken for a whole one."""
        for final, f in self._files.values():
            f.close()
            final.with_name(final.name + ".partial").unlink(missing_ok=True)
        self._files.clear()


class DaemonFiles(Sink):
    """The daemon's files: one per-second CSV per UTC hour (and channel, with one detector per
    channel: `<hour>_ch<n>.csv`), events per UTC day.

    With a detector per channel, every lane begins its own segments: what a `begin` says
    (labels, level columns, the segment's offset) is kept per channel. A write the disk
    refuses (full, gone read-only) is counted in `failures` and skipped; the next row or event
    tries again, and no file is ever left with half a line (edge/outputs/lines.py)."""

    def __init__(self, root: Path, device: str) -> None:
        self.root = root / device
        self.device = device
        self.failures = Failures("output files")
        self._infos: dict[int | None, StreamInfo] = {}  # by channel: its current segment
        self._hours: dict[int | None, tuple[str, LineFile, str]] = {}  # (hour, file, header due)

    def begin(self, info: StreamInfo) -> None:
        before = self._infos.get(info.channel)
        self._infos[info.channel] = info
        if before is not None and columns(before) != columns(info):
            self._close_hour(info.channel)  # a new header: the next row starts another file

    def _hour_file(self, key: str, info: StreamInfo) -> tuple[LineFile, str]:
        """The hour's file and the header it still needs ("" once written)."""
        channel = info.channel
        open_ = self._hours.get(channel)
        if open_ is not None and open_[0] == key:
            return open_[1], open_[2]
        self._close_hour(channel)
        folder = self.root / f"{key[:4]}-{key[4:6]}-{key[6:8]}"
        folder.mkdir(parents=True, exist_ok=True)
        header = ",".join(["time", "status", *columns(info)]) + "\n"
        name = key if channel is None else f"{key}_ch{channel}"
        path = folder / f"{name}.csv"
        n = 1
        # After a restart, append to this hour's file; after a model change, start another.
        while _has_text(path) and not _starts_with(path, header):
            n += 1
            path = folder / f"{name}-{n}.csv"
        f = LineFile(path)
        due = "" if _has_text(path) else header
        self._hours[channel] = (key, f, due)
        return f, due

    def _close_hour(self, channel: int | None) -> None:
        open_ = self._hours.pop(channel, None)
        if open_ is not None:
            open_[1].close()

    def second(self, row: SecondRow) -> None:
        info = self._infos.get(row.channel)
        if row.time is None or info is None:
            return
        stamp = iso(row.time)
        key = stamp[:4] + stamp[5:7] + stamp[8:10] + "T" + stamp[11:13]
        try:
            f, header = self._hour_file(key, info)
            # The header goes with the first row, in one write: a new file is never just a
            # header, nor a row without one.
            f.append(f"{header}{stamp},{row.status},{row_cells(row, info)}\n")
        except OSError as exc:
            self.failures.failed("rows", exc)
            return
        if header:
            self._hours[row.channel] = (key, f, "")
        self.failures.worked("rows")

    def _append(self, when: str, name: str, line: str) -> None:
        folder = self.root / when[:10]
        folder.mkdir(parents=True, exist_ok=True)
        f = LineFile(folder / name)
        try:
            f.append(line)
        finally:
            f.close()

    def event(self, event: Event) -> None:
        t = event.start if event.type == "start" else event.end
        info = self._infos.get(event.channel)
        if t is None or info is None:
            return
        when = iso(t)
        payload = event.to_json(info.model, info.model_version, self.device, info.offset_seconds)
        try:
            self._append(when, "events.jsonl", json.dumps(payload) + "\n")
            if event.type == "end" and Path(info.source).is_file():
                # SongExplorer has no channel column: one file per channel, as it has per wav.
                channel = event.channel
                name = "predicted.csv" if channel is None else f"predicted_ch{channel}.csv"
                self._append(when, name, songexplorer_row(event, info))
        except OSError as exc:
            self.failures.failed("events", exc)
            return
        self.failures.worked("events")

    def close(self) -> None:
        for channel in list(self._hours):
            self._close_hour(channel)


def _has_text(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:
        return False


def _starts_with(path: Path, header: str) -> bool:
    with path.open(encoding="utf-8") as f:
        return f.readline() == header
