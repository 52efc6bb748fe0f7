"""One event detector per label, fed a batch at a time, their messages let out in time order.

With thousands of labels (BirdNET: 6,522) the work is knowing which detectors a batch can
move. A detector with no median ring and no event open is *quiet*: a batch whose highest score
for its label is below its threshold leaves it as it was, and it holds back no message of
another label. Which are quiet is kept in a numpy mask, so a batch costs one comparison over
the labels and a Python call only for the few it can move; the message order's horizon is the
earliest of the detectors that are not quiet.

The detectors are made once and reused stream after stream: a stream's `begin` resets only the
ones the last stream fed, since making (and checking the rules of) 6,522 detectors took 0.2 s
a file. A label whose fresh detector is quiet gets its detector only when a batch first moves
it: until then it is as a fresh one would be, and BirdNET's 6,522 detectors, of which a day
of audio moves a few dozen, held 3.8 MiB.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from edge.detection.events import EventDetector, Transition
from edge.detection.order import MessageOrder
from edge.model.rules import EventRules

# Batches of at most this many windows go through the event detectors a window at a time.
FEW_WINDOWS = 4


class DetectorBank:
    """The detectors of `rules`, one per column of `columns` in the scores fed."""

    def __init__(self, columns: Sequence[int], rules: Sequence[EventRules]) -> None:
        self.columns = np.asarray(columns, dtype=np.intp)
        # Columns 0, 1, ... n - 1: scores of n columns (no background label) need no gather.
        self._leading = self.columns.tolist() == list(range(len(self.columns)))
        self._rules = list(rules)
        # One detector made per distinct rules, which checks them (a ConfigError here, not
        # mid-stream) and says whether a fresh one is quiet; the others are made when needed.
        fresh: dict[EventRules, EventDetector] = {}
        for r in self._rules:
            if r not in fresh:
                fresh[r] = EventDetector(r)
        self.detectors: list[EventDetector | None] = [
            None if fresh[r].quiet else EventDetector(r) for r in self._rules
        ]
        self._labels = [int(c) for c in columns]
        self._on = np.array([r.threshold for r in self._rules], dtype=np.float64)
        self._quiet = np.array([fresh[r].quiet for r in self._rules], dtype=bool)
        self._fed = np.zeros(len(self._rules), dtype=bool)  # since the last `begin`
        # The bank gives `release` the horizon itself: the order needs no detectors.
        self._order = MessageOrder(())

    def begin(self) -> None:
        """A new stream: every detector as if new but for its event index, which counts on
        (nothing reads it outside the detector), and no message held, even where the last
        stream was not closed."""
        for j in np.flatnonzero(self._fed).tolist():
            detector = self._detector(j)
            detector.reset()
            self._quiet[j] = detector.quiet
        self._fed[:] = False
        self._order = MessageOrder(())

    def _detector(self, j: int) -> EventDetector:
        """Label `j`'s detector, made fresh the first time it is needed."""
        detector = self.detectors[j]
        if detector is None:
            detector = self.detectors[j] = EventDetector(self._rules[j])
        return detector

    def feed(self, times: list[float], scores: np.ndarray) -> list[tuple[int, Transition]]:
        """Windows in time order (centre times in s, scores (n, columns of the model's kept
        labels)): the messages that can now go out, in time order, as (column, transition)."""
        # NaN counts as 0 in the detectors; fmax skips it, and a column all NaN gives NaN,
        # which `<` does not take for quiet.
        every = self._leading and scores.shape[1] == len(self.columns)
        peaks = np.fmax.reduce(scores if every else scores[:, self.columns], axis=0)
        moved = np.flatnonzero(~(self._quiet & (peaks < self._on))).tolist()
        order, labels = self._order, self._labels
        # Live, a batch is a window or two: one `update` each costs microseconds, where the
        # batch path's numpy set-up (medians, searches) costs a tenth of a millisecond.
        few = len(times) <= FEW_WINDOWS
        for j in moved:
            detector = self._detector(j)
            column = scores[:, labels[j]]
            if few:
                transitions = [
                    tr
                    for t, v in zip(times, column.tolist(), strict=True)
                    for tr in detector.update(t, v)
                ]
            else:
                transitions = detector.update_batch(times, column)
            if transitions:
                order.hold(labels[j], transitions)
            self._quiet[j] = detector.quiet
        self._fed[moved] = True
        return order.release(self._horizon()) if len(order) else []

    def close(self, at_seconds: float) -> list[tuple[int, Transition]]:
        """End every label's stream at `at_seconds` (an end, a gap): every message held."""
        for j in np.flatnonzero(~self._quiet).tolist():  # a quiet one has nothing to close
            detector = self._detector(j)
            self._order.hold(self._labels[j], detector.close(at_seconds))
            self._quiet[j] = detector.quiet
        return self._order.flush()

    def _horizon(self) -> float:
        """The earliest time a message still to come can carry (quiet detectors: none)."""
        busy = np.flatnonzero(~self._quiet).tolist()
        return min((self._detector(j).horizon_seconds for j in busy), default=math.inf)
