"""MessageOrder: messages of several labels leave in the order of the time they carry."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio.demo import flysong_scene
from edge.builders import label_setups
from edge.config import Loaded, load_config
from edge.detection.analysis import Analyzer
from edge.detection.events import EventDetector, Transition
from edge.detection.order import MessageOrder
from edge.model.bundle import load_bundle
from edge.model.rules import EventRules
from edge.outputs.files import Printer
from edge.records import Event, StreamInfo
from tests.test_analysis import Collect
from tests.test_events import HOP, rules_strategy, scores_strategy


def ordered(
    rules: list[EventRules], scores: list[list[float]], batch: int
) -> list[tuple[int, Transition]]:
    """Feed every label window by window, releasing after each batch of windows."""
    detectors = [EventDetector(r) for r in rules]
    order = MessageOrder(detectors)
    out: list[tuple[int, Transition]] = []
    n = max(len(s) for s in scores)
    for first in range(0, n, batch):
        for i, detector in enumerate(detectors):
            for j in range(first, min(first + batch, n)):
                score = scores[i][j] if j < len(scores[i]) else 0.0
                order.hold(i, detector.update(j * HOP, score))
        out.extend(order.release())
    for i, detector in enumerate(detectors):
        order.hold(i, detector.close(n * HOP))
    out.extend(order.flush())
    return out


def test_a_later_start_waits_for_an_earlier_unconfirmed_one() -> None:
    # Label 0 starts at 0.25 s but is confirmed only at 0.75 s (min duration 0.5 s); label 1
    # starts at 0.5 s and is confirmed at once. Decided in that order, they would go back in time.
    slow = EventRules(threshold=0.5, min_duration_seconds=0.5)
    fast = EventRules(threshold=0.5)
    out = ordered([slow, fast], [[0.0, 0.9, 0.9, 0.9, 0.9, 0.0], [0.0, 0.0, 0.9, 0.9, 0.0]], 1)
    assert [(i, t.type, t.seconds) for i, t in out] == [
        (0, "start", 0.25),
        (1, "start", 0.5),
        (1, "end", 1.0),
        (0, "end", 1.25),
    ]


def test_nothing_is_held_when_no_label_can_precede() -> None:
    detectors = [EventDetector(EventRules(threshold=0.5)) for _ in range(2)]
    order = MessageOrder(detectors)
    order.hold(0, detectors[0].update(0.0, 0.9))
    detectors[1].update(0.0, 0.1)
    assert [t.type for _, t in order.release()] == ["start"]
    assert len(order) == 0


@settings(max_examples=150, deadline=None)
@given(
    rules=st.lists(rules_strategy(), min_size=2, max_size=3),
    scores=st.lists(scores_strategy, min_size=3, max_size=3),
    batch=st.sampled_from([1, 3, 16]),
)
def test_messages_follow_the_time_they_carry(
    rules: list[EventRules], scores: list[list[float]], batch: int
) -> None:
    # The same number of windows for every label (as the analyzer feeds them), ending quiet.
    n = max(len(s) for s in scores) + 1
    scores = [[*s, *[0.0] * (n - len(s))] for s in scores[: len(rules)]]
    out = ordered(rules, scores, batch)
    times = [t.seconds for _, t in out]
    assert times == sorted(times)
    # Nothing lost, nothing reordered within a label: each label reads as its detector alone.
    for i, r in enumerate(rules):
        alone = ordered([r], [scores[i]], batch)
        assert [t for j, t in out if j == i] == [t for _, t in alone]


@pytest.fixture(scope="module")
def flysong_run() -> tuple[list[str], Collect]:
    """The flysong model on 40 s of its demo scene: three labels, median 3, merge gap 0.128 s;
    two windows a batch, as live, so messages decided in different batches must be ordered."""
    bundle = load_bundle("models/flysong")
    loaded = load_config(None)
    labels = label_setups(Loaded(loaded.config, None, loaded.where), bundle)
    sink = Collect()
    analyzer = Analyzer(
        bundle,
        bundle.open("onnx-int8"),
        labels,
        sink,
        hop_samples=bundle.hop_samples,
        batch_windows=2,
    )
    x, _ = flysong_scene(40.0, bundle.sample_rate_hz, np.random.default_rng(0))
    names = [s.label for s in labels]
    analyzer.begin(StreamInfo("demo", names, None, bundle.sample_rate_hz))
    for first in range(0, len(x), 1000):
        analyzer.push(x[first : first + 1000])
    analyzer.end()
    return names, sink


def test_demo_messages_follow_event_time_across_labels(
    flysong_run: tuple[list[str], Collect],
) -> None:
    _, sink = flysong_run
    times = [e.start_offset if e.end_offset is None else e.end_offset for e in sink.events]
    assert len({e.label for e in sink.events}) >= 2 and len(times) > 20
    assert times == sorted(times)


def test_an_end_shows_a_max_found_in_the_rows_of_its_seconds(
    flysong_run: tuple[list[str], Collect],
) -> None:
    names, sink = flysong_run
    ends = [e for e in sink.events if e.type == "end"]
    for e in ends:
        assert e.end_offset is not None
        column = names.index(e.label)
        seconds = [
            float(r.scores[column])
            for r in sink.rows
            if r.offset_seconds < e.end_offset and r.offset_seconds + 1 > e.start_offset
        ]
        assert e.score_max <= max(seconds) + 1e-6
    # The row of the second holding the event's best window shows exactly that number (here
    # always; in general unless a better window of that second lay outside the event).
    matched = [
        e
        for e in ends
        if any(
            abs(float(r.scores[names.index(e.label)]) - e.score_max) < 1e-6
            for r in sink.rows
            if e.end_offset is not None
            and r.offset_seconds < e.end_offset
            and r.offset_seconds + 1 > e.start_offset
        )
    ]
    assert len(matched) == len(ends)


def test_printed_lines_say_what_their_numbers_are() -> None:
    out = io.StringIO()
    printer = Printer("events", out)
    printer.begin(StreamInfo("demo", ["a"], None, 16000))
    for id_, offset, score, continued in (("1", 1.0, 0.7, False), ("2", 11.0, 0.4, True)):
        printer.event(
            Event(id_, "start", "a", offset, None, None, None, score, score, 0.6, "demo",
                  continued=continued)
        )  # fmt: skip
    lines = out.getvalue().splitlines()[1:]
    assert lines == [
        "1.000s  START  a  max 0.70 so far",
        "11.000s  START  a  max 0.40 so far  (continues a split event)",
    ]
