"""The Now page's data: the last hour, second by second, from the rows the daemon already wrote.

The daemon appends one line per second to the hour's CSV (`<day>/<YYYYMMDDTHH>.csv`, whole
lines only, edge/outputs/lines.py). Reading those back costs the processing thread nothing: no
lock, no copy, no call on the hot path. Each file is read on from where the last poll stopped,
so a poll parses only the seconds written since.

With a detector per channel (`..._ch<n>.csv`), a second's status is the best of its channels
and its scores and levels the highest, as the Prometheus gauges show them.

A second with no row at all is shaded as `gap:not running` (the daemon was stopped, or not
writing), or `pending` in the last few seconds: the page shows every second of the hour as
analysed, at an edge, or a gap by reason.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from edge.audio.levels import UNIT_COLUMNS
from edge.review.daemonfolder import HOUR_FILE

WINDOW_SECONDS = 3600
NO_ROW = "gap:not running"
PENDING = "pending"
"""The seconds after the newest row, up to CURRENT_SECONDS ago: analysis is a few seconds
behind the clock (the window, the hop), so these are not written yet, not missing."""
CURRENT_SECONDS = 10
"""A row older than this is no longer "now": the scores show as none."""
TOP = 3

Values = dict[str, float | None]
Row = tuple[int, str, Values, Values]
"""(unix second, status, score by label, level by column) of one CSV line."""


class HourTail:
    """One growing hour CSV: its header and its rows, each line parsed once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0  # bytes read so far (whole lines)
        self.header: list[str] = []
        self.rows: list[Row] = []

    def read(self) -> list[Row]:
        try:
            size = self.path.stat().st_size
        except OSError:  # removed: nothing more
            return self.rows
        if size < self.offset:  # replaced: read again
            self.offset, self.header, self.rows = 0, [], []
        if size == self.offset:
            return self.rows
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read(size - self.offset)
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        for line in whole.decode("utf-8", errors="replace").splitlines():
            cells = line.split(",")
            if not self.header:
                self.header = cells
                continue
            try:
                when = datetime.fromisoformat(cells[0].replace("Z", "+00:00"))
            except ValueError:
                continue  # not a row of ours; the file stays readable after it
            scores: Values = {}
            levels: Values = {}
            for column, cell in zip(self.header[2:], cells[2:], strict=False):
                (levels if _is_level(column) else scores)[column] = _number(cell)
            self.rows.append((int(when.timestamp()), cells[1], scores, levels))
        return self.rows


def _is_level(column: str) -> bool:
    return any(column == n or column.startswith(n + "_") for n in UNIT_COLUMNS.values())


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


class Now:
    """The last hour of the daemon writing under `root` (`<output.dir>/<device>`)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._tails: dict[Path, HourTail] = {}

    def _files(self, start: datetime, end: datetime) -> list[Path]:
        found = []
        for hour in {start.strftime("%Y%m%dT%H"), end.strftime("%Y%m%dT%H")}:
            day = self.root / f"{hour[:4]}-{hour[4:6]}-{hour[6:8]}"
            if day.is_dir():
                found += [p for p in day.glob(f"{hour}*.csv") if HOUR_FILE.match(p.name)]
        return sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name))

    def snapshot(self, now: datetime) -> dict[str, Any]:
        """Segments of equal status over the hour before `now`, the per-second peak score,
        and the latest second's scores and levels."""
        end = int(now.timestamp())
        start = end - WINDOW_SECONDS
        begin = datetime.fromtimestamp(start, timezone.utc)
        files = self._files(begin, datetime.fromtimestamp(end, timezone.utc))
        self._tails = {p: self._tails.get(p) or HourTail(p) for p in files}
        by_second: dict[int, tuple[str, Values, Values]] = {}
        for tail in self._tails.values():
            for second, status, scores, levels in tail.read():
                if start <= second < end:
                    by_second[second] = _merged(by_second.get(second), (status, scores, levels))
        segments: list[list[Any]] = []
        peak: list[float | None] = []
        totals: Counter[str] = Counter()
        newest = max(by_second, default=start - 1)
        for offset in range(WINDOW_SECONDS):
            second = start + offset
            missing = PENDING if newest < second and end - second <= CURRENT_SECONDS else NO_ROW
            status, scores, _ = by_second.get(second, (missing, {}, {}))
            totals[status] += 1
            if segments and segments[-1][2] == status:
                segments[-1][1] = offset + 1
            else:
                segments.append([offset, offset + 1, status])
            known = [v for v in scores.values() if v is not None]
            peak.append(round(max(known), 3) if known else None)
        return {
            "start": _iso(start),
            "end": _iso(end),
            "seconds": WINDOW_SECONDS,
            "segments": segments,
            "totals": dict(totals),
            "peak": peak,
            **self._latest(by_second, end),
        }

    def _latest(self, by_second: dict[int, tuple[str, Values, Values]], end: int) -> dict[str, Any]:
        """The newest second's time and status; its scores (if recent) and levels."""
        if not by_second:
            return {"latest": None, "scores": {}, "top": [], "levels": None}
        second = max(by_second)
        status, scores, levels = by_second[second]
        if end - second > CURRENT_SECONDS:
            scores = dict.fromkeys(scores)
        ranked = sorted(((v, k) for k, v in scores.items() if v is not None), reverse=True)
        return {
            "latest": _iso(second),
            "status": status,
            "scores": scores,
            "top": [[k, v] for v, k in ranked[:TOP]],
            "levels": levels or None,
        }


_RANK = {"analysed": 0, "edge": 1}  # then every gap


def _merged(
    old: tuple[str, Values, Values] | None, new: tuple[str, Values, Values]
) -> tuple[str, Values, Values]:
    """One second from several files (a detector per channel; a model change within the
    hour): the best status, and the highest score and level of each, as the metrics show."""
    if old is None:
        return new

    def highest(a: Values, b: Values) -> Values:
        both = {**a, **b}
        return {k: max((v for v in (a.get(k), b.get(k)) if v is not None), default=None)
                for k in both}  # fmt: skip

    status = min(old[0], new[0], key=lambda s: _RANK.get(s, 2))
    return status, highest(old[1], new[1]), highest(old[2], new[2])


def _iso(second: int) -> str:
    when = datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=second)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
