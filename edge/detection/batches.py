"""Whole batches of windows into an event detector: `EventDetector.update_batch`.

Most windows change nothing: a label with no event open whose smoothed score stays below its
threshold, or one inside an event whose score stays above the off threshold. Fed one at a
time through ``update`` they cost a Python call each per label (YAMNet: 521 labels per
window). Here the smoothed scores of a batch are computed at once, the runs of windows that
cannot change the state are added up in one go, and only the windows that can go through
``update``. The transitions are those of ``update`` on each window in turn, to the bit.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

if TYPE_CHECKING:
    from edge.detection.events import Transition

_IDLE: Final = 0  # no event
_ON: Final = 1  # an event is on (confirmed or not)
_PENDING_OFF: Final = 2  # an event has crossed below off_threshold; merge gap not yet over


class BatchFeed:
    """The batch half of ``EventDetector`` (edge/detection/events.py), which holds the state
    these methods read and the one-window ``update`` they fall back on."""

    # The state this half writes lives here; EventDetector's slots hold the rest.
    __slots__ = ("_count", "_gap_count", "_gap_max", "_gap_sum", "_max_score", "_received", "_sum")
    _k: int
    _half: int
    _received: int
    _state: int
    _confirmed: bool
    _on: float
    _off: float
    _min_eps: float
    _max_eps: float
    _merge_eps: float
    _start: float
    _off_time: float
    _sum: float
    _count: int
    _max_score: float
    _gap_sum: float
    _gap_count: int
    _gap_max: float
    _ring_times: list[float]
    _ring_scores: list[float]

    def update(self, time_seconds: float, score: float) -> list[Transition] | tuple[()]:
        raise NotImplementedError

    @property
    def quiet(self) -> bool:
        """No event open and no median ring to keep: a batch whose every window is below
        ``threshold`` leaves this detector as it was, and it holds back no message (its
        horizon is infinity). The bank then skips the batch for this label (BirdNET: 6,522
        labels, almost all quiet)."""
        return self._k == 1 and self._state == _IDLE

    def update_batch(self, times: Sequence[float], scores: np.ndarray) -> list[Transition]:
        """Feed windows in time order (centre times in s, scores (n,)): the transitions of
        ``update`` on each in turn, in order.

        The smoothed scores of the whole batch are computed at once (numpy); the runs of
        windows that cannot change the state (below ``threshold`` with no event open, at or
        above ``off_threshold`` in an event no split or confirmation is due in, an off-spell
        still within the merge gap) are added up in one go, and only the windows that do
        change it go through ``update`` one by one.
        """
        out: list[Transition] = []
        n, first = len(times), 0
        while first < n and self._received < 2 * self._half:  # the median's shrunk start
            out.extend(self.update(times[first], float(scores[first])))
            first += 1
        if first == n:
            return out
        raw = np.asarray(scores[first:], dtype=np.float64)
        raw = np.where(np.isnan(raw), 0.0, raw)  # NaN counts as 0, as in `update`
        times = times[first:]
        n, half = len(times), self._half
        # Feeding window m decides window m - half: its smoothed score, raw score and time.
        if half:
            joined = np.concatenate((self._history(2 * half), raw))
            smoothed = _running_median(joined, half)
            ring = self._ring_times
            waiting = [ring[j % self._k] for j in range(self._received - half, self._received)]
            decided, decided_times = joined[half : half + n], [*waiting, *times[: n - half]]
        else:
            smoothed, decided, decided_times = raw, raw, list(times)
        stretch = _Stretch(smoothed, decided, decided_times, self._on, self._off)
        values = raw.tolist()
        m = 0
        while m < n:
            stop = self._quiet_until(stretch, m)
            if stop > m:
                self._take(stretch.decided[m:stop])
                self._absorb(times[m:stop], values[m:stop])
                m = stop
            if m < n:
                out.extend(self.update(times[m], values[m]))
                m += 1
        return out

    def _quiet_until(self, s: _Stretch, m: int) -> int:
        """The first decided window from ``m`` on that may change the state (its smoothed
        score crosses a threshold, or its time makes a confirmation, split or end due); the
        ones before it ``_take`` adds up without stepping."""
        times = s.times
        if self._state == _IDLE:
            return s.next(s.on, m)
        if self._state == _ON:
            due = self._max_eps if self._confirmed else min(self._max_eps, self._min_eps)
            start = self._start
            late = bisect_left(times, True, m, key=lambda t: t - start >= due)
            return min(s.next(s.below_off, m), late)
        off_time, merge = self._off_time, self._merge_eps
        late = bisect_left(times, True, m, key=lambda t: t - off_time >= merge)
        return min(s.next(s.on, m), late)

    def _take(self, decided: list[float]) -> None:
        """Windows ``_quiet_until`` passed: their raw scores join the event or its off-spell,
        added one after another as ``_add`` does, so the mean is the same float."""
        if self._state == _ON:
            total = self._sum
            for score in decided:
                total += score
            self._sum, self._count = total, self._count + len(decided)
            self._max_score = max(self._max_score, *decided)
        elif self._state == _PENDING_OFF:
            total = self._gap_sum
            for score in decided:
                total += score
            self._gap_sum, self._gap_count = total, self._gap_count + len(decided)
            self._gap_max = max(self._gap_max, *decided)

    def _history(self, count: int) -> np.ndarray:
        """The raw scores of the last ``count`` windows fed (``count <= k``), oldest first."""
        first = self._received - count
        return np.array([self._ring_scores[j % self._k] for j in range(first, self._received)])

    def _absorb(self, times: Sequence[float], raw: list[float]) -> None:
        """Keep the last windows of a stretch in the median ring, as ``update`` would."""
        k, n = self._k, len(times)
        if k == 1:
            return  # no median: `update` keeps no ring
        for j in range(max(0, n - k), n):
            slot = (self._received + j) % k
            self._ring_times[slot] = times[j]
            self._ring_scores[slot] = raw[j]
        self._received += n


def _running_median(values: np.ndarray, half: int) -> np.ndarray:
    """The median of every ``2 * half + 1`` neighbouring values (no NaN): the middle one of
    each, the number ``update`` takes from its sorted ring. Three (the usual median) by
    min/max, 3 us a batch against np.median's 48 (its set-up is per call); more by a
    partition."""
    if half == 1:
        a, b, c = values[:-2], values[1:-1], values[2:]
        return np.maximum(np.minimum(a, b), np.minimum(np.maximum(a, b), c))
    return np.partition(sliding_window_view(values, 2 * half + 1), half, axis=1)[:, half]


class _Stretch:
    """One batch's decided windows for ``EventDetector.update_batch``: raw scores and times,
    and where the smoothed scores reach the on threshold and fall below the off one."""

    __slots__ = ("below_off", "decided", "on", "times")

    def __init__(
        self, smoothed: np.ndarray, decided: np.ndarray, times: list[float], on: float, off: float
    ) -> None:
        self.decided, self.times = decided.tolist(), times
        self.on: list[int] = np.flatnonzero(smoothed >= on).tolist()
        self.below_off: list[int] = np.flatnonzero(smoothed < off).tolist()

    def next(self, indices: list[int], m: int) -> int:
        """The first of ``indices`` at or after ``m``; the stretch's length if none."""
        i = bisect_left(indices, m)
        return indices[i] if i < len(indices) else len(self.times)
