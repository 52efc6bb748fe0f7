"""Sound events per label: a small pure state machine fed one window score at a time.

One :class:`EventDetector` per label. The caller passes each window's centre time (seconds,
on whatever time axis it uses, normally seconds since the stream's anchored start) and score;
nothing here reads a clock, starts a thread or logs. Window times must not decrease.

Semantics, in the order a window goes through them:

- **NaN.** A NaN score counts as 0.0: no evidence for the label (a NaN comes from a broken
  model output, and it must neither start nor prolong an event).
- **Median smoothing** (``median_windows = k``, odd). Every window gets exactly one smoothed
  score, stamped with that window's own time: the median of the window and up to
  ``(k - 1) / 2`` neighbours on each side. Near the start of a stream and at ``close()``
  fewer neighbours exist, so the window shrinks symmetrically (the first window is its own
  median, the second the median of the first three, ...) and stays centred and odd. The price
  is latency, not time error: window ``j`` is decided when window ``j + (k - 1) / 2`` arrives,
  so transitions come ``(k - 1) / 2`` windows late but carry the right times. ``close()``
  flushes the windows still waiting, so the tail is not lost.
- **Hysteresis.** An event starts at the first smoothed window ``>= threshold`` and stays on
  while windows are ``>= off_threshold``; it ends at the time of the first window below
  ``off_threshold`` (the crossing). The event spans ``[start, crossing)``.
- **Merge gap.** After the crossing the event is pending. If a window ``>= threshold`` (the on
  threshold, not the off one) arrives less than ``merge_gap_seconds`` after the crossing, the
  off-spell is merged: the event continues and nothing is emitted. Once a window arrives at or
  after ``crossing + merge_gap_seconds`` without that, the event ends at the crossing (with a
  merge gap of 0 this is the crossing window itself) and that window is then treated as a
  fresh window, so it may start the next event.
- **Minimum duration.** An event is kept only if ``end - start >= min_duration_seconds``. Its
  ``start`` is emitted at the first window that is still on with ``time - start >=
  min_duration_seconds`` (with 0, at the first window); an event that ends before that is
  emitted as start and end together if it still lasted long enough (the crossing comes one
  window after the last on window), and dropped silently otherwise. A dropped event uses no
  index and starts no refractory time.
- **Maximum duration** (0 = unlimited, else ``>= min_duration_seconds``). At the first on
  window at or after ``start + max_duration_seconds`` the event is split: ``end`` at that
  window's time (preceded by its ``start`` if it was not yet emitted) and at once a new
  ``start`` at the same time with the next index, containing that window. Pieces
  after a split are continuations: they are confirmed at once, ignore refractory time, and may
  be shorter than ``min_duration_seconds``. Splits happen only on on windows, so a piece can
  exceed the maximum by up to one hop plus a merged off-spell.
- **Refractory time.** After an emitted end at ``t_end`` (not a split), windows before
  ``t_end + refractory_seconds`` cannot start an event.
- **Scores in messages.** ``score_max`` and ``score_mean`` are over the *raw* window scores
  (the numbers the per-second rows take their maximum of), not the smoothed ones the rules
  compare, so a message's maximum is one a user finds in the rows: the row of the second that
  holds the event's best window shows at least that number. The windows counted are those
  centred in the event so far: for an end ``[start, end)``, for a start ``[start, the window
  that confirmed it]`` (only the event's first window when ``min_duration_seconds`` is 0, so a
  start's maximum is a lower bound of the end's); a merged off-spell's windows are inside the
  event. With median smoothing the two can disagree near a threshold: a start's raw maximum
  can be below ``threshold`` when the median carried a dip between two high windows, and a
  one-window spike the median removed never starts an event yet counts in the maximum of an
  event that contains it.
- **Continuations.** The pieces after a max-duration split carry ``continued=True``: they start
  on a window ``>= off_threshold`` without crossing ``threshold`` again, so their scores can be
  below it.
- **close(t)** ends the stream (shutdown, end of file, or a gap): it flushes the median, ends an
  open event at ``t`` (or at its crossing when it is pending in an off-spell), keeping an
  unconfirmed one only if it already lasted ``min_duration_seconds``, and starts the next
  ``update`` on a fresh stream. Indices and the refractory end carry on across ``close()``.

Durations are compared with a 1 ns tolerance so that window times computed in floating point
(``0.7 - 0.4 < 0.3``) do not miss a boundary by a rounding error.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final, Literal

from edge.detection.batches import _IDLE, _ON, _PENDING_OFF, BatchFeed
from edge.errors import ConfigError
from edge.model.rules import EventRules

# Tolerance for comparing durations, in seconds; far below any hop, far above float rounding.
_TIME_EPS_SECONDS: Final = 1e-9

# Shared return value of update() when nothing happens, so the hot path allocates nothing.
_NO_TRANSITIONS: Final[tuple[()]] = ()


@functools.lru_cache(maxsize=64)
def _problems(rules: EventRules) -> tuple[str, ...]:
    """`rules.validate()`, once per distinct rules: a bundle of 6,522 labels has a few."""
    return tuple(rules.validate())


@dataclass(frozen=True, slots=True)
class Transition:
    """One event message: a start (``end_seconds`` None) or an end. Times in seconds."""

    type: Literal["start", "end"]
    start_seconds: float
    end_seconds: float | None
    score_max: float
    """Maximum raw window score over the event's windows so far (see the module docstring)."""
    score_mean: float
    """Mean raw window score over the event's windows so far."""
    index: int
    """The event's sequence number in this detector (0, 1, 2...), same for its start and end."""
    continued: bool = False
    """True for a piece after a max-duration split: it began without crossing ``threshold``."""

    @property
    def seconds(self) -> float:
        """The time this message carries: its start for a start, its end for an end."""
        return self.start_seconds if self.end_seconds is None else self.end_seconds


class EventDetector(BatchFeed):
    """Turns one label's window scores into start/end transitions; see the module docstring."""

    __slots__ = (
        "_confirmed",
        "_continued",
        "_half",
        "_index",
        "_k",
        "_max_eps",
        "_merge_eps",
        "_min_eps",
        "_next_index",
        "_off",
        "_off_time",
        "_on",
        "_out",
        "_refractory",
        "_refractory_until",
        "_ring_scores",
        "_ring_times",
        "_rules",
        "_scratch",
        "_start",
        "_state",
    )

    def __init__(self, rules: EventRules) -> None:
        problems = _problems(rules)
        if problems:
            raise ConfigError("event rules: " + "; ".join(problems))
        self._rules = rules
        self._on = float(rules.threshold)
        self._off = float(rules.effective_off_threshold)
        self._min_eps = rules.min_duration_seconds - _TIME_EPS_SECONDS
        self._merge_eps = rules.merge_gap_seconds - _TIME_EPS_SECONDS
        # 0 (unlimited) becomes infinity, so the hot path needs no separate check.
        max_s = rules.max_duration_seconds
        self._max_eps = max_s - _TIME_EPS_SECONDS if max_s > 0.0 else math.inf
        self._refractory = float(rules.refractory_seconds)
        self._k = rules.median_windows
        self._half = (self._k - 1) // 2
        # Ring of the last k raw windows, and one scratch list per median size (1, 3, ... k),
        # so smoothing sorts in place and allocates nothing per window.
        self._ring_times = [0.0] * self._k
        self._ring_scores = [0.0] * self._k
        self._scratch = [[0.0] * (2 * r + 1) for r in range(self._half + 1)]
        self._out: list[Transition] | None = None
        self._next_index = 0
        self.reset()

    @property
    def rules(self) -> EventRules:
        return self._rules

    @property
    def horizon_seconds(self) -> float:
        """No transition still to come carries an earlier time than this (seconds; infinity
        when nothing is waiting), provided later windows are not earlier than those fed so far.

        The analyzer holds messages of other labels until they are not later than every
        detector's horizon, so that messages leave in the order of the time they carry. What
        holds the horizon back is what makes a message late here: an unconfirmed event (its
        start waits for ``min_duration_seconds``), an off-spell (its end waits for the merge
        gap) and the median's look-ahead (windows fed but not yet smoothed).
        """
        horizon = math.inf
        if self._half and self._received:  # the oldest window still waiting in the median ring
            j = self._received - self._half
            horizon = self._ring_times[(j if j > 0 else 0) % self._k]
        if self._state != _IDLE:
            if not self._confirmed and self._start < horizon:
                horizon = self._start
            if self._state == _PENDING_OFF and self._off_time < horizon:
                horizon = self._off_time
        return horizon

    @property
    def active(self) -> bool:
        """True while a confirmed event is open (its start emitted, its end not yet)."""
        return self._state != _IDLE and self._confirmed

    def reset(self) -> None:
        """Forget everything: pending windows, an open event (no end is emitted), refractory
        time. The index counter keeps counting, so indices stay unique for this detector."""
        self._received = 0
        self._refractory_until = -math.inf
        self._clear_event()

    def update(self, time_seconds: float, score: float) -> list[Transition] | tuple[()]:
        """Feed one window (its centre time in seconds and its score); return what happened.

        Returns a shared empty tuple when nothing happened, else a new list of transitions in
        order. With median smoothing the transitions concern an earlier window (see module).
        """
        score = float(score)
        if score != score:  # NaN: no evidence
            score = 0.0
        if self._k == 1:
            self._step(time_seconds, score, score)
        else:
            k = self._k
            slot = self._received % k
            self._ring_times[slot] = time_seconds
            self._ring_scores[slot] = score
            self._received += 1
            j = self._received - 1 - self._half  # the window now centred in the ring
            if j >= 0:
                radius = j if j < self._half else self._half
                slot = j % k
                self._step(self._ring_times[slot], self._median(j, radius), self._ring_scores[slot])
        out = self._out
        if out is None:
            return _NO_TRANSITIONS
        self._out = None
        return out

    def close(self, time_seconds: float) -> list[Transition]:
        """End the stream at ``time_seconds`` (shutdown, end of file, gap) and return the last
        transitions: the median tail is flushed and an open event is ended (see module)."""
        n = self._received
        for j in range(max(0, n - self._half), n):
            radius = min(self._half, j, n - 1 - j)
            slot = j % self._k
            self._step(self._ring_times[slot], self._median(j, radius), self._ring_scores[slot])
        self._received = 0
        if self._state == _ON:
            self._finish(max(time_seconds, self._start))
        elif self._state == _PENDING_OFF:
            self._finish(self._off_time)
        out = self._out if self._out is not None else []
        self._out = None
        return out

    # -- internals ---------------------------------------------------------------------------

    def _clear_event(self) -> None:
        self._state = _IDLE
        self._confirmed = False
        self._continued = False
        self._index = -1
        self._start = 0.0
        self._off_time = 0.0
        self._sum = 0.0
        self._count = 0
        self._max_score = 0.0
        self._gap_sum = 0.0
        self._gap_count = 0
        self._gap_max = 0.0

    def _median(self, j: int, radius: int) -> float:
        """Median of raw windows ``j - radius .. j + radius`` (all still in the ring)."""
        ring = self._ring_scores
        k = self._k
        if radius == 0:
            return ring[j % k]
        buf = self._scratch[radius]
        first = j - radius
        for i in range(2 * radius + 1):
            buf[i] = ring[(first + i) % k]
        buf.sort()
        return buf[radius]

    def _step(self, t: float, s: float, raw: float) -> None:
        """Advance the state machine by one window: ``s`` its smoothed score (what the rules
        compare), ``raw`` its own score (what the message scores count)."""
        state = self._state
        if state == _PENDING_OFF:
            if t - self._off_time >= self._merge_eps:
                self._finish(self._off_time)  # the off-spell lasted the merge gap: it ends
                state = _IDLE  # and this window is judged afresh below
            elif s >= self._on:
                # Back on within the merge gap: the off-spell's windows join the event.
                self._sum += self._gap_sum
                self._count += self._gap_count
                if self._gap_max > self._max_score:
                    self._max_score = self._gap_max
                self._state = _ON
                self._on_window(t, s, raw)
                return
            else:
                self._add_gap(raw)
                return
        if state == _IDLE:
            if s >= self._on and t >= self._refractory_until - _TIME_EPS_SECONDS:
                self._begin(t, raw)
                if self._min_eps <= 0.0:
                    self._confirm()
            return
        # _ON
        if s >= self._off:
            self._on_window(t, s, raw)
            return
        self._state = _PENDING_OFF
        self._off_time = t
        # The crossing window joins the event if the off-spell is merged.
        self._gap_sum = raw
        self._gap_count = 1
        self._gap_max = raw
        if self._merge_eps <= 0.0:  # no merge gap: the crossing ends the event now
            self._finish(t)

    def _on_window(self, t: float, s: float, raw: float) -> None:
        """A window whose smoothed score ``s`` is at or above the off threshold, in an event."""
        if t - self._start >= self._max_eps:
            # Split. The piece so far lasted max >= min, so it counts even if no window
            # confirmed it yet (it was in an off-spell); this window starts the next piece,
            # a continuation that needs no confirmation.
            if not self._confirmed:
                self._confirm()
            self._emit("end", t)
            self._begin(t, raw)
            self._continued = True
            self._confirm()
            return
        self._add(raw)
        if not self._confirmed and t - self._start >= self._min_eps:
            self._confirm()

    def _begin(self, t: float, raw: float) -> None:
        self._state = _ON
        self._confirmed = False
        self._continued = False
        self._start = t
        self._sum = raw
        self._count = 1
        self._max_score = raw

    def _add(self, s: float) -> None:
        self._sum += s
        self._count += 1
        if s > self._max_score:
            self._max_score = s

    def _add_gap(self, s: float) -> None:
        """A raw score of an off-spell window: it joins the event if the off-spell is merged."""
        self._gap_sum += s
        self._gap_count += 1
        if s > self._gap_max:
            self._gap_max = s

    def _confirm(self) -> None:
        self._confirmed = True
        self._index = self._next_index
        self._next_index += 1
        self._emit("start", None)

    def _finish(self, end_seconds: float) -> None:
        """End the event at ``end_seconds``: emit it if it counts, else drop it silently."""
        if not self._confirmed and end_seconds - self._start >= self._min_eps:
            self._confirm()  # ended before a window confirmed it, but it lasted long enough
        if self._confirmed:
            self._emit("end", end_seconds)
            self._refractory_until = end_seconds + self._refractory
        self._clear_event()

    def _emit(self, kind: Literal["start", "end"], end_seconds: float | None) -> None:
        transition = Transition(
            type=kind,
            start_seconds=float(self._start),
            end_seconds=None if end_seconds is None else float(end_seconds),
            score_max=self._max_score,
            # min(): a sum of equal floats can round the mean a hair above the max.
            score_mean=min(self._sum / self._count, self._max_score),
            index=self._index,
            continued=self._continued,
        )
        if self._out is None:
            self._out = []
        self._out.append(transition)
