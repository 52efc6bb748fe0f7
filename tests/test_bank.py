"""DetectorBank against the analyzer's way before it: fresh detectors for each stream, every
batch through every label's detector, messages released over every detector's horizon. Many labels
with mixed rules (median, merge gap, minimum and maximum duration, refractory time), most of
them quiet most of the time, as with BirdNET's 6,522."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from edge.detection.bank import DetectorBank
from edge.detection.events import EventDetector, Transition
from edge.detection.order import MessageOrder
from edge.errors import ConfigError
from edge.model.rules import EventRules

LABELS = 60


def rules(rng: np.random.Generator) -> list[EventRules]:
    out = []
    for _ in range(LABELS):
        threshold = float(rng.choice([0.5, 0.7, 0.9]))
        out.append(
            EventRules(
                threshold=threshold,
                off_threshold=threshold - float(rng.choice([0.0, 0.2])),
                median_windows=int(rng.choice([1, 1, 1, 3])),
                min_duration_seconds=float(rng.choice([0.0, 1.0])),
                merge_gap_seconds=float(rng.choice([0.0, 0.5, 2.0])),
                max_duration_seconds=float(rng.choice([0.0, 4.0])),
                refractory_seconds=float(rng.choice([0.0, 3.0])),
            )
        )
    return out


def streams(rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """Three streams of window times and scores (columns: LABELS + 2 more the bank skips):
    quiet noise with bursts, a few labels loud for a while, some NaN."""
    out = []
    for n in (40, 7, 55):
        times = 0.5 + 0.48 * np.arange(n)
        scores = rng.uniform(0, 0.45, (n, LABELS + 2)).astype(np.float32)
        for _ in range(25):
            label, first = rng.integers(0, LABELS + 2), rng.integers(0, n)
            scores[first : first + rng.integers(1, 12), label] = rng.uniform(0.4, 1.0)
        scores[rng.integers(0, n), rng.integers(0, LABELS)] = np.nan
        out.append((times, scores))
    return out


def reference(
    all_rules: list[EventRules],
    columns: list[int],
    data: list[tuple[np.ndarray, np.ndarray]],
    batch: int,
) -> list[list[tuple[int, Transition]]]:
    """The analyzer's way before the bank: fresh detectors for each stream, each batch into
    every label's detector in column order (`update_batch`, which test_events holds against
    `update`), messages released over every detector's horizon."""
    out = []
    for times, scores in data:
        detectors = [EventDetector(r) for r in all_rules]
        order = MessageOrder(detectors)
        got: list[tuple[int, Transition]] = []
        for first in range(0, len(times), batch):
            part = slice(first, first + batch)
            for detector, column in zip(detectors, columns, strict=True):
                order.hold(
                    column, detector.update_batch(times[part].tolist(), scores[part, column])
                )
            got += order.release()
        for detector, column in zip(detectors, columns, strict=True):
            order.hold(column, detector.close(float(times[-1]) + 0.5))
        out.append(got + order.flush())
    return out


@pytest.mark.parametrize("batch", [1, 5, 64])
@pytest.mark.parametrize(("seed", "skipped"), [(0, 3), (1, 3), (2, LABELS)])
def test_the_bank_gives_the_reference_messages(batch: int, seed: int, skipped: int) -> None:
    """Column `skipped` (and the last) make no events: background labels, in the middle or
    after the others."""
    rng = np.random.default_rng(seed)
    all_rules = rules(rng)
    columns = [c for c in range(LABELS + 2) if c != skipped][:LABELS]
    data = streams(rng)
    bank = DetectorBank(columns, all_rules)
    got = []
    for times, scores in data:
        bank.begin()
        messages: list[tuple[int, Transition]] = []
        for first in range(0, len(times), batch):
            part = slice(first, first + batch)
            messages += bank.feed(times[part].tolist(), scores[part])
        messages += bank.close(float(times[-1]) + 0.5)
        got.append(messages)
    expected = reference(all_rules, columns, data, batch)
    assert sum(len(m) for m in expected) >= 20  # events started and ended: the paths ran
    # A detector's event index counts on from stream to stream (nothing outside it reads it).
    assert unindexed(got) == unindexed(expected)


def unindexed(streams: list[list[tuple[int, Transition]]]) -> list[list[tuple[int, Transition]]]:
    return [[(c, replace(tr, index=0)) for c, tr in messages] for messages in streams]


def test_a_stream_left_open_leaves_nothing_to_the_next() -> None:
    """A stream that ends without `close` (its reader failed): the next `begin` starts from
    detectors as if new and no message held, as fresh detectors would."""
    held = EventRules(threshold=0.5, merge_gap_seconds=5.0, refractory_seconds=10.0)
    bank = DetectorBank([0, 1], [held, EventRules(threshold=0.5)])
    bank.begin()
    times = [0.5, 1.0, 1.5, 2.0]
    scores = np.array([[0.9, 0.9], [0.9, 0.9], [0.1, 0.9], [0.1, 0.1]], np.float32)
    early = bank.feed(times, scores)
    # Label 0's end (from 1.5 s) waits for its merge gap and holds label 1's end (2.0 s) back.
    assert [(c, tr.type) for c, tr in early] == [(0, "start"), (1, "start")]
    bank.begin()  # no close: the first stream was cut off
    again = bank.feed([0.5], np.array([[0.9, 0.2]], np.float32))
    assert [(c, tr.type, tr.start_seconds) for c, tr in again] == [(0, "start", 0.5)]
    closed = bank.close(1.0)
    assert [(c, tr.type, tr.end_seconds) for c, tr in closed] == [(0, "end", 1.0)]


def test_a_label_gets_its_detector_when_a_batch_first_moves_it() -> None:
    """BirdNET's 6,522 labels are almost all quiet: only the labels a batch moves hold a
    detector, and rules that cannot work are still refused when the bank is made."""
    quiet, smoothed = EventRules(threshold=0.5), EventRules(threshold=0.5, median_windows=3)
    bank = DetectorBank(range(1000), [quiet] * 999 + [smoothed])
    bank.begin()
    scores = np.full((4, 1000), 0.1, np.float32)
    scores[1:3, 7] = 0.9
    messages = bank.feed([0.5, 1.0, 1.5, 2.0], scores)
    assert [(c, tr.type, tr.start_seconds, tr.end_seconds) for c, tr in messages] == [
        (7, "start", 1.0, None),
        (7, "end", 1.0, 2.0),
    ]
    # The median label is never quiet: it has its detector from the start.
    assert [j for j, d in enumerate(bank.detectors) if d is not None] == [7, 999]
    bad = EventRules(threshold=0.5, off_threshold=0.8)
    with pytest.raises(ConfigError, match="off_threshold"):
        DetectorBank(range(3), [quiet, quiet, bad])
