"""Per-second probabilities: the max over windows whose centre falls in each second.

Seconds are aligned to whole UTC seconds when the stream has an anchor (so hourly CSVs from a
live device read 10:23:14, 10:23:15, ...), else to whole seconds from the stream's start. Every
second between the stream's start and end gets exactly one row: `analysed` when a window is
centred in it, `gap:<reason>` when audio was missing (overrun, device, overload), `edge` when
audio was there but too near a start, end or gap to centre a window on it.

With a hop over a second (a 3 s window every 3 s), most seconds hold no window centre though
their audio was scored: such a second takes the max of the windows that cover it, and is
`analysed` too. (With a hop of a second or less every second but a stream's first and last
holds a centre, and the rows are the centre rule's alone.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import numpy as np

from edge.clock import second_phase
from edge.records import ANALYSED, EDGE, SecondRow, StreamInfo, gap_status


class SecondAggregator:
    """Turns window scores (centre time, scores) into SecondRows, in order, each exactly once."""

    def __init__(
        self,
        info: StreamInfo,
        n_labels: int,
        emit: Callable[[SecondRow], None],
        *,
        cover_seconds: float | None = None,
    ) -> None:
        """`cover_seconds`: the window's length, when seconds without a window centre take
        the max of the windows covering them (a hop over a second); None: centres only."""
        self.info = info
        self.half = None if cover_seconds is None else cover_seconds / 2
        self._covered: dict[int, np.ndarray] = {}  # bin -> max of the windows covering it
        self.emit = emit
        # Seconds from the stream start to the next whole (UTC) second boundary, in [0, 1).
        self.phase = second_phase(info.anchor)
        self.n_labels = n_labels
        self._bin = self.bin_of(0.0)  # the second holding the stream's first sample
        self._max = np.full(n_labels, np.nan, dtype=np.float32)
        self._analysed = False
        self._gaps: list[tuple[float, float, str]] = []  # (start, end) offsets, reason
        self._nan_row = np.full(n_labels, np.nan, dtype=np.float32)

    def bin_of(self, offset_seconds: float) -> int:
        """Second `k` covers offsets [phase + k, phase + k + 1)."""
        return math.floor(offset_seconds - self.phase + 1e-9)

    def bin_start(self, k: int) -> float:
        return self.phase + k

    def add(self, centres: np.ndarray, scores: np.ndarray) -> None:
        """Windows in time order: centres (n,) offsets in s, scores (n, n_labels)."""
        if len(centres) == 0:
            return
        bins = np.floor(centres - self.phase + 1e-9).astype(np.int64)
        # Windows arrive in time order, so each run of equal bins is one second's windows.
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        maxima = np.fmax.reduceat(scores, starts, axis=0)
        if self.half is not None:  # a hop over a second: about one window per second or less
            for centre, row in zip(centres.tolist(), scores, strict=True):
                # The window is [centre - half, centre + half): its end is the next second's.
                first, last = (
                    self.bin_of(centre - self.half),
                    self.bin_of(centre + self.half - 1e-6),
                )
                for b in range(first, last + 1):
                    held = self._covered.get(b)
                    self._covered[b] = row.copy() if held is None else np.fmax(held, row)
        for i, start in enumerate(starts):
            b = int(bins[start])
            if b != self._bin:
                self._finish_until(b)
            np.fmax(self._max, maxima[i], out=self._max)
            self._analysed = True

    def gap(self, start: float, end: float, reason: str) -> None:
        """Audio from `start` to `end` (offsets, s) was not received or not analysed."""
        if end <= start:
            return
        if self._gaps and self._gaps[-1][2] == reason and abs(self._gaps[-1][1] - start) < 1e-9:
            self._gaps[-1] = (self._gaps[-1][0], end, reason)
        else:
            self._gaps.append((start, end, reason))

    def finish_before(self, offset_seconds: float) -> None:
        """No window will be centred before `offset_seconds`: emit the seconds ended by then."""
        self._finish_until(self.bin_of(offset_seconds))

    def close(self, end_offset: float) -> None:
        """The stream ends at `end_offset`: emit the rest, including a last partial second."""
        if end_offset > 0:
            self._finish_until(self.bin_of(end_offset - 1e-6) + 1)

    def _finish_until(self, b: int) -> None:
        """Emit rows for every bin before `b`."""
        while self._bin < b:
            start = self.bin_start(self._bin)
            covered = self._covered.pop(self._bin, None) if self._covered else None
            if self._analysed:
                status, scores = ANALYSED, self._max.copy()
            elif covered is not None:  # no centre here, but a window's audio
                status, scores = ANALYSED, covered
            else:
                reason = self._gap_reason(start, start + 1.0)
                status = gap_status(reason) if reason else EDGE
                scores = self._nan_row
            time = None
            if self.info.anchor is not None:
                time = self.info.anchor + timedelta(seconds=start)
            self.emit(SecondRow(round(start, 6), time, status, scores, None, self.info.channel))
            self._max.fill(np.nan)
            self._analysed = False
            self._bin += 1
            if self._gaps and self._gaps[0][1] <= start + 1.0:
                self._gaps = [g for g in self._gaps if g[1] > start + 1.0]

    def _gap_reason(self, start: float, end: float) -> str | None:
        """Reason of the gap that covers most of [start, end), if any gap touches it."""
        best, best_len = None, 0.0
        for g0, g1, reason in self._gaps:
            overlap = min(end, g1) - max(start, g0)
            if overlap > best_len:
                best, best_len = reason, overlap
        return best
