"""EventDetector: examples with plain score lists, a batch reference, and invariants."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.detection.events import EventDetector, Transition
from edge.errors import ConfigError
from edge.model.rules import EventRules

HOP = 0.25  # seconds; a power of two, so window times are exact in floating point


def run(
    rules: EventRules, scores: Sequence[float], hop: float = HOP, close: bool = True
) -> list[tuple[int, Transition]]:
    """Feed window ``i`` at time ``i * hop``; return (window index of the call, transition)."""
    detector = EventDetector(rules)
    out: list[tuple[int, Transition]] = []
    for i, score in enumerate(scores):
        out.extend((i, t) for t in detector.update(i * hop, score))
    if close:
        out.extend((len(scores), t) for t in detector.close(len(scores) * hop))
    return out


def spans(transitions: list[tuple[int, Transition]]) -> list[tuple[float, float]]:
    return [(t.start_seconds, t.end_seconds) for _, t in transitions if t.end_seconds is not None]


def test_single_clean_event() -> None:
    scores = [0.1, 0.2, 0.9, 0.8, 0.95, 0.3, 0.1, 0.0]
    out = run(EventRules(threshold=0.5), scores)
    assert [(i, t.type) for i, t in out] == [(2, "start"), (5, "end")]
    start, end = out[0][1], out[1][1]
    assert (start.start_seconds, start.end_seconds, start.index) == (0.5, None, 0)
    assert (start.score_max, start.score_mean) == (0.9, 0.9)
    assert (end.start_seconds, end.end_seconds, end.index) == (0.5, 1.25, 0)
    assert end.score_max == 0.95
    assert end.score_mean == pytest.approx((0.9 + 0.8 + 0.95) / 3)


def test_nothing_happening_returns_the_shared_empty_tuple() -> None:
    detector = EventDetector(EventRules(threshold=0.5, median_windows=3))
    results = [detector.update(i * HOP, 0.1) for i in range(5)]
    assert all(r == () for r in results)
    assert all(r is results[0] for r in results)
    assert detector.close(5 * HOP) == []


def test_hysteresis_keeps_event_on_between_off_and_on() -> None:
    scores = [0.0, 0.7, 0.45, 0.35, 0.45, 0.2, 0.45, 0.0]
    assert spans(run(EventRules(threshold=0.6, off_threshold=0.3), scores)) == [(0.25, 1.25)]
    # Without hysteresis the same scores end the event at the first window below 0.6, and
    # 0.45 never restarts it.
    assert spans(run(EventRules(threshold=0.6), scores)) == [(0.25, 0.5)]


FLAPPING = [0.9, 0.2, 0.9, 0.1, 0.8, 0.2, 0.2, 0.2, 0.9, 0.9, 0.0]


def test_flapping_with_merge_gap_is_one_event() -> None:
    # Off-spells of one window (0.25 s) merge; the three-window one (0.75 s) does not.
    out = run(EventRules(threshold=0.5, merge_gap_seconds=0.5), FLAPPING)
    assert spans(out) == [(0.0, 1.25), (2.0, 2.5)]
    # The end is emitted once the off-spell has lasted the merge gap (window 7); the last
    # event is still within its merge gap when the stream ends, so close() ends it.
    assert [(i, t.type) for i, t in out] == [(0, "start"), (7, "end"), (8, "start"), (11, "end")]
    first_end = out[1][1]
    assert first_end.score_mean == pytest.approx((0.9 + 0.2 + 0.9 + 0.1 + 0.8) / 5)


def test_flapping_without_merge_gap_is_several_events() -> None:
    out = run(EventRules(threshold=0.5), FLAPPING)
    assert spans(out) == [(0.0, 0.25), (0.5, 0.75), (1.0, 1.25), (2.0, 2.5)]
    assert [t.index for _, t in out] == [0, 0, 1, 1, 2, 2, 3, 3]


def test_min_duration_drops_short_blips_and_delays_start() -> None:
    scores = [0.9, 0.0, 0.0, 0.9, 0.9, 0.0, 0.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.0]
    out = run(EventRules(threshold=0.5, min_duration_seconds=0.75), scores)
    # 0.25 s and 0.5 s blips are dropped; the 1.25 s event starts at 1.75 but is only
    # confirmed (and emitted) at window 10, 0.75 s later.
    assert [(i, t.type, t.start_seconds, t.end_seconds) for i, t in out] == [
        (10, "start", 1.75, None),
        (12, "end", 1.75, 3.0),
    ]
    assert out[0][1].index == 0  # dropped blips use no index


def test_event_ending_exactly_at_min_duration_is_kept() -> None:
    # On for windows 1-2, crossing at 0.75: it lasted 0.5 s although no on window confirmed it.
    out = run(EventRules(threshold=0.5, min_duration_seconds=0.5), [0.0, 0.9, 0.9, 0.0, 0.0])
    assert [(i, t.type, t.start_seconds, t.end_seconds) for i, t in out] == [
        (3, "start", 0.25, None),
        (3, "end", 0.25, 0.75),
    ]


def test_float_rounding_does_not_miss_min_duration() -> None:
    # With hop 0.1, 0.7 - 0.4 == 0.29999999999999993 < 0.3; confirmation must still be at 0.7.
    scores = [0.0] * 4 + [0.9] * 6
    out = run(EventRules(threshold=0.5, min_duration_seconds=0.3), scores, hop=0.1, close=False)
    assert [(i, t.type) for i, t in out] == [(7, "start")]
    assert out[0][1].start_seconds == pytest.approx(0.4)


def test_max_duration_splits() -> None:
    scores = [0.9] * 10 + [0.0]
    out = run(EventRules(threshold=0.5, max_duration_seconds=1.0), scores)
    assert [(i, t.type, t.index, t.start_seconds, t.end_seconds) for i, t in out] == [
        (0, "start", 0, 0.0, None),
        (4, "end", 0, 0.0, 1.0),
        (4, "start", 1, 1.0, None),
        (8, "end", 1, 1.0, 2.0),
        (8, "start", 2, 2.0, None),
        (10, "end", 2, 2.0, 2.5),
    ]


def test_split_pieces_are_continued_and_may_score_below_threshold() -> None:
    # Hysteresis 0.6/0.3 and a 1 s maximum: the piece after the split starts on 0.4, below the
    # on threshold, and says so instead of showing a number that contradicts the threshold.
    scores = [0.9] * 4 + [0.4] * 3 + [0.0]
    out = run(EventRules(threshold=0.6, off_threshold=0.3, max_duration_seconds=1.0), scores)
    assert [(t.type, t.start_seconds, t.continued, t.score_max) for _, t in out] == [
        ("start", 0.0, False, 0.9),
        ("end", 0.0, False, 0.9),
        ("start", 1.0, True, 0.4),
        ("end", 1.0, True, 0.4),
    ]


def test_refractory_suppresses_restart_but_not_splits() -> None:
    scores = [0.9, 0.9, 0.0, 0.9, 0.9, 0.9, 0.9, 0.0]
    rules = EventRules(threshold=0.5, refractory_seconds=0.75)
    # The first event ends at 0.5; windows before 1.25 cannot start, so the second starts at 1.25.
    assert spans(run(rules, scores)) == [(0.0, 0.5), (1.25, 1.75)]
    assert spans(run(EventRules(threshold=0.5), scores)) == [(0.0, 0.5), (0.75, 1.75)]
    split = EventRules(threshold=0.5, refractory_seconds=5.0, max_duration_seconds=0.5)
    assert spans(run(split, [0.9] * 4)) == [(0.0, 0.5), (0.5, 1.0)]


def test_median_removes_one_window_spike_and_shifts_nothing() -> None:
    spike = [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert run(EventRules(threshold=0.5, median_windows=3), spike) == []
    # A clean event keeps its exact start and end times under a 5-window median; only the
    # emission comes two windows (the median's half width) later.
    scores = [0.0] * 4 + [0.9] * 6 + [0.0] * 5
    plain = run(EventRules(threshold=0.5), scores)
    smoothed = run(EventRules(threshold=0.5, median_windows=5), scores)
    assert spans(plain) == spans(smoothed) == [(1.0, 2.5)]
    assert [i for i, _ in smoothed] == [i + 2 for i, _ in plain]


def test_message_scores_are_the_raw_window_scores_the_rows_show() -> None:
    # Under a 3-window median the spike 1.0 never reaches the smoothed scores (they stay 0.7),
    # but it is a window inside the event and the per-second row shows it: the end shows it too.
    scores = [0.0, 0.7, 0.7, 1.0, 0.7, 0.7, 0.0, 0.0]
    out = run(EventRules(threshold=0.5, median_windows=3), scores)
    start, end = out[0][1], out[1][1]
    assert (start.start_seconds, end.end_seconds) == (0.25, 1.5)
    assert start.score_max == 0.7  # only the first window so far
    assert end.score_max == 1.0
    assert end.score_mean == pytest.approx((0.7 + 0.7 + 1.0 + 0.7 + 0.7) / 5)
    # A merged off-spell's windows are inside the event and count in its maximum too: here the
    # off-spell is window 2 alone (smoothed 0.1), whose raw score 0.95 is the event's best.
    flap = [0.9, 0.1, 0.95, 0.1, 0.9, 0.0, 0.0]  # smoothed: 0.9 0.9 0.1 0.9 0.1 0.0 0.0
    merged = run(EventRules(threshold=0.5, median_windows=3, merge_gap_seconds=0.5), flap)
    assert spans(merged) == [(0.0, 1.0)]
    assert merged[-1][1].score_max == 0.95


def test_horizon_is_the_earliest_time_a_message_can_still_carry() -> None:
    detector = EventDetector(
        EventRules(threshold=0.5, min_duration_seconds=0.5, merge_gap_seconds=0.5)
    )
    assert detector.horizon_seconds == math.inf  # nothing waits: no message is held back
    detector.update(0.0, 0.9)
    assert detector.horizon_seconds == 0.0  # the start at 0.0 is not confirmed yet
    detector.update(0.25, 0.9)
    assert [t.type for t in detector.update(0.5, 0.9)] == ["start"]
    assert detector.horizon_seconds == math.inf
    detector.update(0.75, 0.1)
    assert detector.horizon_seconds == 0.75  # an end at the crossing waits for the merge gap
    median = EventDetector(EventRules(threshold=0.5, median_windows=5))
    for i in range(4):
        median.update(i * HOP, 0.0)
    assert median.horizon_seconds == 2 * HOP  # windows 2 and 3 wait for their look-ahead


def test_close_flushes_median_tail() -> None:
    # The event's only windows are the last ones: they wait in the median until close().
    scores = [0.0, 0.0, 0.0, 0.9, 0.9]
    out = run(EventRules(threshold=0.5, median_windows=5), scores)
    assert [(i, t.type, t.start_seconds, t.end_seconds) for i, t in out] == [
        (5, "start", 0.75, None),
        (5, "end", 0.75, 1.25),
    ]


def test_event_open_at_end_of_stream_is_closed() -> None:
    detector = EventDetector(EventRules(threshold=0.5))
    detector.update(0.0, 0.9)
    detector.update(0.25, 0.8)
    assert detector.active
    (end,) = detector.close(3.0)
    assert (end.type, end.start_seconds, end.end_seconds, end.index) == ("end", 0.0, 3.0, 0)
    assert not detector.active
    # The next stream starts fresh; the index carries on.
    (start,) = detector.update(10.0, 0.9)
    assert (start.start_seconds, start.index) == (10.0, 1)


def test_close_uses_crossing_when_pending_and_drops_unconfirmed() -> None:
    pending = EventDetector(EventRules(threshold=0.5, merge_gap_seconds=1.0))
    pending.update(0.0, 0.9)
    pending.update(0.25, 0.9)
    pending.update(0.5, 0.1)  # crossing; the merge gap is not over yet
    assert pending.active
    assert [(t.type, t.end_seconds) for t in pending.close(0.75)] == [("end", 0.5)]

    short = EventDetector(EventRules(threshold=0.5, min_duration_seconds=1.0))
    short.update(0.0, 0.9)
    short.update(0.25, 0.9)
    assert short.close(0.5) == []  # 0.5 s < 1 s: dropped
    long_enough = EventDetector(EventRules(threshold=0.5, min_duration_seconds=1.0))
    long_enough.update(0.0, 0.9)
    assert [(t.type, t.end_seconds) for t in long_enough.close(1.0)] == [
        ("start", None),
        ("end", 1.0),
    ]


def test_nan_scores_count_as_zero() -> None:
    nan = math.nan
    out = run(EventRules(threshold=0.5), [nan, 0.9, nan, 0.9, 0.9, nan])
    assert spans(out) == [(0.25, 0.5), (0.75, 1.25)]
    merged = run(EventRules(threshold=0.5, merge_gap_seconds=0.5), [nan, 0.9, nan, 0.9, nan])
    assert spans(merged) == [(0.25, 1.0)]
    assert merged[-1][1].score_mean == pytest.approx((0.9 + 0.0 + 0.9) / 3)


def test_reset_forgets_open_event_without_ending_it() -> None:
    detector = EventDetector(EventRules(threshold=0.5, median_windows=3))
    for i in range(4):
        detector.update(i * HOP, 0.9)
    assert detector.active
    detector.reset()
    assert not detector.active
    assert detector.close(2.0) == []


def test_validate_messages() -> None:
    assert EventRules(threshold=0.5).validate() == []
    bad = EventRules(
        threshold=1.5,
        off_threshold=-0.1,
        median_windows=4,
        min_duration_seconds=-1.0,
        merge_gap_seconds=math.nan,
        refractory_seconds=math.inf,
    )
    assert bad.validate() == [
        "threshold: must be within 0..1, got 1.5",
        "off_threshold: must be within 0..1, got -0.1",
        "min_duration_seconds: must be within 0..86400, got -1.0",
        "merge_gap_seconds: must be a finite number, got nan",
        "refractory_seconds: must be a finite number, got inf",
        "median_windows: must be an odd integer >= 1, got 4",
    ]
    assert EventRules(threshold=0.5, off_threshold=0.6).validate() == [
        "off_threshold: must be <= threshold (0.5), got 0.6"
    ]
    assert EventRules(threshold=0.5, median_windows=0).validate() == [
        "median_windows: must be within 1..999, got 0"
    ]
    assert EventRules(
        threshold=0.5, min_duration_seconds=2.0, max_duration_seconds=1.0
    ).validate() == [
        "max_duration_seconds: must be 0 (unlimited) or >= min_duration_seconds (2.0), got 1.0"
    ]
    with pytest.raises(ConfigError, match=r"^event rules: threshold: must be within 0..1, got 2.0"):
        EventDetector(EventRules(threshold=2.0))


# -- properties --------------------------------------------------------------------------------

scores_strategy = st.lists(
    st.one_of(st.floats(0.0, 1.0), st.just(math.nan), st.sampled_from([0.0, 0.5, 1.0])),
    max_size=120,
)


@st.composite
def rules_strategy(draw: st.DrawFn, with_max_and_refractory: bool = True) -> EventRules:
    threshold = draw(st.sampled_from([0.0, 0.3, 0.5, 0.7, 1.0]))
    off = draw(st.one_of(st.none(), st.sampled_from([0.0, 0.2, 0.4, 0.5])))
    if off is not None:
        off = min(off, threshold)
    min_s = draw(st.sampled_from([0.0, 0.1, 0.25, 0.6, 1.0]))
    max_s = 0.0
    refractory = 0.0
    if with_max_and_refractory:
        max_s = draw(st.sampled_from([0.0, 0.5, 1.0, 2.3]))
        max_s = max(max_s, min_s) if max_s else 0.0
        refractory = draw(st.sampled_from([0.0, 0.25, 0.7]))
    return EventRules(
        threshold=threshold,
        off_threshold=off,
        median_windows=draw(st.sampled_from([1, 3, 5])),
        min_duration_seconds=min_s,
        merge_gap_seconds=draw(st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.8])),
        max_duration_seconds=max_s,
        refractory_seconds=refractory,
    )


def reference_spans(
    rules: EventRules, scores: Sequence[float], hop: float
) -> list[tuple[float, float]]:
    """Batch definition of median + hysteresis + merge gap + min duration, for comparison."""
    eps = 1e-9
    raw = [0.0 if math.isnan(s) else s for s in scores]
    n = len(raw)
    half = (rules.median_windows - 1) // 2
    smoothed = []
    for j in range(n):
        r = min(half, j, n - 1 - j)
        smoothed.append(sorted(raw[j - r : j + r + 1])[r])
    off = rules.effective_off_threshold
    segments: list[list[float]] = []
    start: float | None = None
    for j, value in enumerate(smoothed):
        t = j * hop
        if start is None and value >= rules.threshold:
            start = t
        elif start is not None and value < off:
            segments.append([start, t])
            start = None
    if start is not None:
        segments.append([start, n * hop])  # closed by close(n * hop)
    merged: list[list[float]] = []
    for segment in segments:
        if merged and segment[0] - merged[-1][1] < rules.merge_gap_seconds - eps:
            merged[-1][1] = segment[1]
        else:
            merged.append(segment)
    return [(s, e) for s, e in merged if e - s >= rules.min_duration_seconds - eps]


@settings(max_examples=400, deadline=None)
@given(
    rules=rules_strategy(with_max_and_refractory=False),
    scores=scores_strategy,
    hop=st.sampled_from([0.1, 0.25]),
)
def test_matches_batch_reference(rules: EventRules, scores: list[float], hop: float) -> None:
    # Both sides stamp window j with j * hop, so times compare exactly.
    assert spans(run(rules, scores, hop)) == reference_spans(rules, scores, hop)


@settings(max_examples=400, deadline=None)
@given(rules=rules_strategy(), scores=scores_strategy, hop=st.sampled_from([0.1, 0.25]))
def test_invariants(rules: EventRules, scores: list[float], hop: float) -> None:
    out = [t for _, t in run(rules, scores, hop)]
    starts = out[0::2]
    ends = out[1::2]
    # Starts and ends alternate, every start is ended (the stream was closed), indices count up.
    assert [t.type for t in starts] == ["start"] * len(starts)
    assert [t.type for t in ends] == ["end"] * len(ends)
    assert len(starts) == len(ends)
    assert [t.index for t in starts] == list(range(len(starts)))
    previous_end = -math.inf
    for start, end in zip(starts, ends, strict=True):
        assert end.index == start.index
        assert end.start_seconds == start.start_seconds
        assert end.end_seconds is not None
        assert end.end_seconds >= start.start_seconds
        assert start.start_seconds >= previous_end - 1e-9  # no overlap
        is_split_piece = start.start_seconds == previous_end
        if not is_split_piece:
            assert end.end_seconds - start.start_seconds >= rules.min_duration_seconds - 1e-9
            assert start.start_seconds >= previous_end + rules.refractory_seconds - 1e-9
        if rules.max_duration_seconds:
            # Split on the first on window at or after the maximum, or ended by an off-spell.
            limit = rules.max_duration_seconds + hop + rules.merge_gap_seconds + 1e-9
            assert end.end_seconds - start.start_seconds <= limit
        assert start.score_max <= end.score_max
        assert 0.0 <= end.score_mean <= end.score_max <= 1.0
        assert start.continued == end.continued == is_split_piece
        if not is_split_piece and rules.median_windows == 1:
            # Without a median the raw scores are the ones compared: a start is above threshold.
            assert start.score_max >= rules.threshold
        previous_end = end.end_seconds


# Long runs of one level, so batches fall wholly inside events and wholly between them.
runs_strategy = st.lists(
    st.tuples(
        st.sampled_from([0.0, 0.1, 0.35, 0.45, 0.55, 0.8, 1.0, math.nan]), st.integers(1, 40)
    ),
    max_size=12,
).map(lambda runs: [score for score, length in runs for _ in range(length)])


@settings(max_examples=300, deadline=None)
@given(
    rules=rules_strategy(),
    scores=st.one_of(scores_strategy, runs_strategy),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=8),
)
def test_update_batch_matches_update(
    rules: EventRules, scores: list[float], cuts: list[int]
) -> None:
    """Batches (any sizes) give the transitions, the horizon and the close of one window at a
    time: the fast paths change nothing."""
    one, batched = EventDetector(rules), EventDetector(rules)
    values = np.array(scores, dtype=np.float32)
    times = [i * HOP for i in range(len(scores))]
    start, turn = 0, 0
    while start < len(scores):
        stop = min(start + cuts[turn % len(cuts)], len(scores))
        expected = [t for i in range(start, stop) for t in one.update(times[i], values[i])]
        assert batched.update_batch(times[start:stop], values[start:stop]) == expected
        assert batched.horizon_seconds == one.horizon_seconds
        start, turn = stop, turn + 1
    assert batched.close(len(scores) * HOP) == one.close(len(scores) * HOP)


def test_a_detector_is_quiet_only_while_idle_without_a_median() -> None:
    """`quiet`: what lets the bank skip a batch below the threshold (edge/detection/bank.py)."""
    detector = EventDetector(EventRules(threshold=0.5))
    assert detector.quiet and detector.horizon_seconds == math.inf
    detector.update(0.0, 0.9)
    assert not detector.quiet  # an open event: 0.1 ends it
    detector.update(0.5, 0.1)
    assert detector.quiet  # ended (no merge gap)
    assert not EventDetector(EventRules(threshold=0.5, median_windows=3)).quiet


@pytest.mark.parametrize("median", [1, 3])
def test_update_batch_merges_an_off_spell_as_update_does(median: int) -> None:
    """An off-spell of several windows inside the merge gap, taken as one stretch: its raw
    scores join the event's mean when it turns back on, exactly as one window at a time."""
    rules = EventRules(threshold=0.5, merge_gap_seconds=1.1, median_windows=median)
    scores = [0.9] * 6 + [0.2, 0.3, 0.1, 0.2] + [0.8] * 6 + [0.0] * 10
    times = [i * HOP for i in range(len(scores))]
    one, batched = EventDetector(rules), EventDetector(rules)
    values = np.array(scores, dtype=np.float32)
    expected = [t for i, s in enumerate(values.tolist()) for t in one.update(times[i], s)]
    got = batched.update_batch(times, values)
    assert got == expected
    assert [t.type for t in got] == ["start", "end"]
    end = got[1]
    assert end.score_mean == pytest.approx(float(np.mean(values[:16])), abs=1e-6)
