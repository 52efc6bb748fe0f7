"""Per-second probabilities: the max over windows whose centre falls in each second.

Seconds are aligned to whole UTC seconds when the stream has an anchor (so hourly CSVs from a
live device read 10:23:14, 10:23:15, ...), else to whole seconds from the stream's start. Every
second between the stream's start and end gets exactly one row: `analysed` when a window is
centred in it, or when windows covered all of its audio (a hop over a second: BirdNET's 3 s
windows every 3 s centre a window in one second of three), then with the max of the windows
covering it; `gap:<reason>` when audio was missing (overrun, device, overload); `edge` when
audio was there but no window covered it all: a partial first or last second, or the end of a
stream or run too short for another window.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import numpy as np

from edge.clock import second_phase
from edge.records import ANALYSED, EDGE, SecondRow, StreamInfo, gap_status


class SecondAggregator:
    """Turns window scores (centre time, scores) into SecondRows, in order, each exactly once.

    `window_seconds` is the windows' length: a second no window is centred in, but whose audio
    windows covered whole (with a hop over a second), takes the max of the windows covering it.
    """

    def __init__(
        self,
        info: StreamInfo,
        n_labels: int,
        emit: Callable[[SecondRow], None],
        window_seconds: float = 0.0,
    ) -> None:
        self.info = info
        self.emit = emit
        # Seconds from the stream start to the next whole (UTC) second boundary, in [0, 1).
        self.phase = second_phase(info.anchor)
        self.n_labels = n_labels
        # Half a window, for the seconds windows cover. A window of a second or less covers no
        # whole second without being centred in it: those take the plain per-centre path.
        self.half = window_seconds / 2 if window_seconds > 1 else 0.0
        self._bin = self.bin_of(0.0)  # the second holding the stream's first sample
        # Seconds not yet emitted, in a ring: a window reaches at most this many seconds ahead.
        slots = math.ceil(window_seconds) + 3
        self._centred = np.full((slots, n_labels), np.nan, dtype=np.float32)  # max, centred
        self._has_centre = np.zeros(slots, dtype=bool)
        self._cover = np.full((slots, n_labels), np.nan, dtype=np.float32)  # max, overlapping
        # The span of window audio reaching into the second without a hole: [from, to].
        self._from = np.full(slots, np.inf)
        self._to = np.full(slots, -np.inf)
        self._reduced = np.empty(n_labels, dtype=np.float32)
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
        if len(centres) == 1 and self.half == 0:  # live, mostly: one window, no numpy set-up
            b = self.bin_of(float(centres[0]))
            self._finish_until(b)
            slot = b % len(self._has_centre)
            np.fmax(self._centred[slot], scores[0], out=self._centred[slot])
            self._has_centre[slot] = True
            return
        bins = np.floor(centres - self.phase + 1e-9).astype(np.int64)
        # Windows arrive in time order, so each run of equal bins is one second's windows.
        starts = np.flatnonzero(bins[1:] != bins[:-1]) + 1
        firsts = [0, *starts.tolist()]
        ends = [*firsts[1:], len(centres)]
        reduced = self._reduced
        for first, end in zip(firsts, ends, strict=True):
            b = int(bins[first])
            # Seconds that end before this window starts can get nothing more.
            self._finish_until(self.bin_of(float(centres[first]) - self.half))
            slot = b % len(self._has_centre)
            # One reduce per second, not one reduceat over the batch: along axis 0 that took
            # 100 µs for a single window of BirdNET's 6,522 labels, against 4 µs.
            np.fmax.reduce(scores[first:end], axis=0, out=reduced)
            np.fmax(self._centred[slot], reduced, out=self._centred[slot])
            self._has_centre[slot] = True
            if self.half > 0:
                self._overlap(b, centres[first:end], scores[first:end])

    def _overlap(self, b: int, centres: np.ndarray, scores: np.ndarray) -> None:
        """Windows centred in second `b` (`centres`, `scores`): fold them into the other
        seconds their audio reaches."""
        half = self.half
        first = self.bin_of(float(centres[0]) - half)
        last = self.bin_of(float(centres[-1]) + half - 1e-6)
        for k in range(first, last + 1):
            if k == b:
                continue  # its own windows are centred in it: the cover does not matter
            start = self.bin_start(k)
            # Windows overlapping [start, start + 1): centre within half a window of it.
            a = int(np.searchsorted(centres, start - half + 1e-9, side="right"))
            e = int(np.searchsorted(centres, start + 1 + half - 1e-9, side="left"))
            if a >= e:
                continue
            slot = k % len(self._has_centre)
            np.fmax.reduce(scores[a:e], axis=0, out=self._reduced)
            np.fmax(self._cover[slot], self._reduced, out=self._cover[slot])
            # Evenly spaced windows no further apart than their length leave no hole.
            joined = centres[e - 1] - centres[a] <= (e - 1 - a) * 2 * half + 1e-9
            begin = float(centres[a] if joined else centres[e - 1]) - half
            if self._to[slot] < begin - 1e-9:  # nothing yet, or a hole before these windows
                self._from[slot] = begin
            self._to[slot] = max(self._to[slot], float(centres[e - 1]) + half)

    def gap(self, start: float, end: float, reason: str) -> None:
        """Audio from `start` to `end` (offsets, s) was not received or not analysed."""
        if end <= start:
            return
        if self._gaps and self._gaps[-1][2] == reason and abs(self._gaps[-1][1] - start) < 1e-9:
            self._gaps[-1] = (self._gaps[-1][0], end, reason)
        else:
            self._gaps.append((start, end, reason))

    def finish_before(self, offset_seconds: float) -> None:
        """No window will be centred before `offset_seconds`: emit the seconds no later window
        can reach."""
        self._finish_until(self.bin_of(offset_seconds - self.half))

    def close(self, end_offset: float) -> None:
        """The stream ends at `end_offset`: emit the rest, including a last partial second."""
        if end_offset > 0:
            self._finish_until(self.bin_of(end_offset - 1e-6) + 1)

    def _finish_until(self, b: int) -> None:
        """Emit rows for every bin before `b`."""
        while self._bin < b:
            start = self.bin_start(self._bin)
            slot = self._bin % len(self._has_centre)
            if self._has_centre[slot]:
                status, scores = ANALYSED, self._centred[slot].copy()
            elif self._from[slot] <= start + 1e-9 and self._to[slot] >= start + 1 - 1e-9:
                status, scores = ANALYSED, self._cover[slot].copy()  # windows covered it all
            else:
                reason = self._gap_reason(start, start + 1.0)
                status = gap_status(reason) if reason else EDGE
                scores = self._nan_row
            time = None
            if self.info.anchor is not None:
                time = self.info.anchor + timedelta(seconds=start)
            self.emit(SecondRow(round(start, 6), time, status, scores, None, self.info.channel))
            self._centred[slot].fill(np.nan)
            self._cover[slot].fill(np.nan)
            self._has_centre[slot] = False
            self._from[slot], self._to[slot] = np.inf, -np.inf
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
