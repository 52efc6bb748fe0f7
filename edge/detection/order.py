"""Event messages of several labels, let out in the order of the time they carry.

Each label's detector emits its messages in its own time order, but not at the time they carry:
a start is sent once the event has lasted ``min_duration_seconds``, an end once the merge gap
has passed, and median smoothing decides ``(median_windows - 1) / 2`` windows late. So label A's
start at 12.0 s, confirmed at 12.3 s, would follow label B's start at 12.1 s, sent at once.

:class:`MessageOrder` holds each message until no detector can still emit one that carries an
earlier time (every detector's :attr:`~edge.detection.events.EventDetector.horizon_seconds` has
reached it), and then lets it out. The price is latency: a message waits at most as long as the
slowest other label takes to decide about an earlier time, i.e. the largest of that label's
``min_duration_seconds`` (while it has an unconfirmed event), ``merge_gap_seconds`` (while it is
in an off-spell) and median look-ahead. A message that no other label holds back goes out in the
same batch it was decided in.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge.detection.events import EventDetector, Transition


def _carried(item: tuple[float, int, int, Transition]) -> tuple[float, int]:
    # (time carried, arrival number): ties keep arrival order, so a split's end stays before
    # the start of its next piece, which carries the same time.
    return item[0], item[1]


class MessageOrder:
    """Holds the transitions of one detector per label and releases them in time order."""

    __slots__ = ("_arrived", "_detectors", "_held")

    def __init__(self, detectors: Sequence[EventDetector]) -> None:
        self._detectors = detectors
        self._held: list[tuple[float, int, int, Transition]] = []
        self._arrived = 0

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, label: int, transitions: Sequence[Transition]) -> None:
        """Keep the transitions of detector ``label`` (in the order it emitted them)."""
        for tr in transitions:
            self._held.append((tr.seconds, self._arrived, label, tr))
            self._arrived += 1

    def release(self, horizon: float | None = None) -> list[tuple[int, Transition]]:
        """The held messages no detector can now precede, in time order: (label, transition).

        Call after every detector has been fed the same windows. `horizon`: the earliest of
        the detectors' horizons, when the caller knows it cheaper (edge/detection/bank.py)."""
        if not self._held:
            return []
        if horizon is None:
            horizon = min(d.horizon_seconds for d in self._detectors)
        self._held.sort(key=_carried)
        n = 0
        while n < len(self._held) and self._held[n][0] <= horizon:
            n += 1
        out = [(label, tr) for _, _, label, tr in self._held[:n]]
        del self._held[:n]
        return out

    def flush(self) -> list[tuple[int, Transition]]:
        """Everything held, in time order: after every detector was closed (end, gap)."""
        self._held.sort(key=_carried)
        out = [(label, tr) for _, _, label, tr in self._held]
        self._held.clear()
        return out
