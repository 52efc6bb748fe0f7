"""The Analyzer in process: block sizes do not matter, every second gets one row, gaps are
explicit, events come out in time order."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.audio.streams import Gap, Stream
from edge.builders import label_setups
from edge.config import Loaded, load_config
from edge.detection.analysis import Analyzer
from edge.detection.events import EventDetector
from edge.detection.order import MessageOrder
from edge.detection.seconds import SecondAggregator
from edge.model.bundle import Bundle, load_bundle
from edge.pipeline import feed
from edge.records import ANALYSED, EDGE, Event, SecondRow, Sink, StreamInfo
from tests.scenes import SECONDS, Found, check_against_truth, scene


class Collect(Sink):
    def __init__(self) -> None:
        self.rows: list[SecondRow] = []
        self.events: list[Event] = []
        self.begun = self.ended = 0

    def begin(self, info: StreamInfo) -> None:
        self.begun += 1

    def second(self, row: SecondRow) -> None:
        self.rows.append(row)

    def event(self, event: Event) -> None:
        self.events.append(event)

    def end(self) -> None:
        self.ended += 1

    def found(self) -> list[Found]:
        return [
            Found(e.label, e.start_offset, e.end_offset or 0.0)
            for e in self.events
            if e.type == "end"
        ]


@pytest.fixture(scope="module")
def bundle(tone_bundle: Path) -> Bundle:
    return load_bundle(tone_bundle)


def make(bundle: Bundle, *, batch: int = 16, file: str = "onnx-int8") -> tuple[Analyzer, Collect]:
    sink = Collect()
    labels = label_setups(Loaded(load_config(None).config, None, load_config(None).where), bundle)
    analyzer = Analyzer(
        bundle, bundle.open(file), labels, sink, hop_samples=bundle.hop_samples, batch_windows=batch
    )
    return analyzer, sink


def info(anchor: datetime | None = None) -> StreamInfo:
    return StreamInfo("test", ["tone-1k", "tone-3k"], anchor, 16000)


def run_blocks(
    analyzer: Analyzer, x: np.ndarray, sizes: list[int], anchor: datetime | None = None
) -> None:
    analyzer.begin(info(anchor))
    i = 0
    for n in sizes:
        analyzer.push(x[i : i + n])
        i += n
    analyzer.push(x[i:])
    analyzer.end()


def test_one_block_finds_the_truth(bundle: Bundle) -> None:
    analyzer, sink = make(bundle)
    run_blocks(analyzer, scene(), [])
    check_against_truth(sink.found())
    assert len(sink.rows) == SECONDS
    assert [r.offset_seconds for r in sink.rows] == list(range(int(SECONDS)))
    assert {r.status for r in sink.rows} == {"analysed"}
    # 0.5 s windows every 0.1 s over 20 s: (20 - 0.5) / 0.1 + 1
    assert analyzer.windows_scored == 196
    times = [e.start_offset if e.end_offset is None else e.end_offset for e in sink.events]
    assert times == sorted(times)  # time order across labels
    assert [e.id for e in sink.events if e.type == "start"] == [
        e.id for e in sink.events if e.type == "end"
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=20000), max_size=60), batch=st.integers(1, 40)
)
def test_block_sizes_and_batch_sizes_do_not_change_anything(
    bundle: Bundle, sizes: list[int], batch: int
) -> None:
    x = scene()
    reference, ref_sink = make(bundle, batch=64, file="onnx-fp32")
    run_blocks(reference, x, [])
    analyzer, sink = make(bundle, batch=batch, file="onnx-fp32")
    run_blocks(analyzer, x, sizes)
    assert [r.status for r in sink.rows] == [r.status for r in ref_sink.rows]
    np.testing.assert_allclose(
        np.array([r.scores for r in sink.rows]),
        np.array([r.scores for r in ref_sink.rows]),
        atol=1e-5,
    )
    assert sink.found() == ref_sink.found()


def test_seconds_align_to_utc_when_the_anchor_is_not_whole(bundle: Bundle) -> None:
    analyzer, sink = make(bundle)
    anchor = datetime(2026, 11, 22, 10, 0, 0, 600000, tzinfo=timezone.utc)
    run_blocks(analyzer, scene(), [12345, 777], anchor=anchor)
    times = [r.time for r in sink.rows]
    assert times[0] == datetime(2026, 11, 22, 10, 0, 0, tzinfo=timezone.utc)
    assert times[-1] == datetime(2026, 11, 22, 10, 0, 20, tzinfo=timezone.utc)
    assert len(times) == 21 and all(t is not None and t.microsecond == 0 for t in times)
    assert sink.rows[0].offset_seconds == pytest.approx(-0.6)
    # Events keep their exact times, from samples: the 2.0 s tone starts near 10:00:02.65.
    first = sink.events[0]
    assert first.start is not None
    assert abs((first.start - anchor).total_seconds() - first.start_offset) < 1e-6


def test_a_gap_is_written_as_gap_seconds_and_closes_events(bundle: Bundle) -> None:
    """3.5 s lost in an overrun in the middle of the long 1 kHz tone (10.0-12.5 s)."""
    x = scene()
    rate = 16000
    cut_from, cut_to = int(11.0 * rate), int(14.5 * rate)
    analyzer, sink = make(bundle)
    analyzer.begin(info())
    analyzer.push(x[:cut_from])
    analyzer.gap(cut_to - cut_from, "overrun")
    analyzer.push(x[cut_to:])
    analyzer.end()

    status = {int(r.offset_seconds): r.status for r in sink.rows}
    assert len(sink.rows) == SECONDS  # still one row per second, the lost ones included
    assert [status[s] for s in (12, 13)] == ["gap:overrun", "gap:overrun"]
    assert status[10] == "analysed" and status[16] == "analysed"
    assert all(np.isnan(r.scores).all() for r in sink.rows if r.status.startswith("gap"))
    # The open 1 kHz event is ended where the audio stopped, not stretched over the gap.
    long_tone = [f for f in sink.found() if f.label == "tone-1k" and 9 < f.start < 11]
    assert len(long_tone) == 1 and long_tone[0].end == pytest.approx(11.0)


def test_a_sound_there_from_the_first_sample_starts_its_event_at_the_run_start(
    bundle: Bundle,
) -> None:
    """A clip that opens on its sound, and a tone that goes on after a gap: the first window
    (centred half a window in) is on, so the sound was there when the run began. Elsewhere an
    event starts at its first window's centre."""
    rate = 16000
    x = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(6 * rate) / rate).astype(np.float32)
    x[3 * rate :] = 0.0  # 0-3 s: 1 kHz from the first sample; then silence
    analyzer, sink = make(bundle)
    analyzer.begin(info())
    analyzer.push(x[: 2 * rate])
    analyzer.gap(rate // 2, "overrun")  # 2.0-2.5 s lost, mid-tone
    analyzer.push(x[2 * rate + rate // 2 :])
    analyzer.end()
    found = [f for f in sink.found() if f.label == "tone-1k"]
    assert [f.start for f in found] == pytest.approx([0.0, 2.5])
    assert found[0].end == pytest.approx(2.0) and 2.9 < found[1].end < 3.4
    # Starts agree between the start message, its end and the event id.
    starts = {e.id: e.start_offset for e in sink.events if e.type == "start"}
    assert sorted(starts.values()) == pytest.approx([0.0, 2.5])
    # A tone that begins inside the run starts at its first window's centre, as before.
    analyzer, sink = make(bundle)
    run_blocks(analyzer, np.concatenate([np.zeros(rate, np.float32), x[: 2 * rate]]), [])
    (late,) = [f for f in sink.found() if f.label == "tone-1k"]
    assert 0.7 < late.start < 1.3 and (late.start * rate - bundle.window_samples / 2) % 1600 == 0


def test_feed_turns_stream_gaps_into_gap_seconds_at_the_stream_rate(bundle: Bundle) -> None:
    """A 48 kHz stream with an overrun of 2 s: resampled, and the gap converted to model time."""
    from scipy.signal import resample_poly

    x48 = resample_poly(scene(), 3, 1).astype(np.float32)[:, None]
    rate = 48000
    blocks: list[np.ndarray | Gap] = [x48[: 4 * rate], Gap(2 * rate, "overrun"), x48[6 * rate :]]
    analyzer, sink = make(bundle)
    import threading

    stream = Stream("s", None, rate, 1, iter(blocks))
    conditioner = feed(stream, analyzer, info(), "mix", threading.Event())
    assert conditioner.frames_in == len(x48)
    assert analyzer.position_seconds == pytest.approx(SECONDS)
    status = [r.status for r in sink.rows]
    assert status[4:6] == ["gap:overrun", "gap:overrun"]
    assert status.count("analysed") == 18
    found = [f for f in sink.found() if f.start > 6]
    assert [f.label for f in found] == ["tone-1k", "tone-3k", "tone-1k", "tone-3k"]


def test_with_a_hop_over_a_second_every_covered_second_is_analysed() -> None:
    """A 3 s window every 3 s (BirdNET's way): centres at 1.5, 4.5, 7.5 s. Two of every three
    seconds held no centre and were written as `edge` though their audio was scored (issue 13,
    item 13); each now takes the max of the windows covering it."""
    from edge.detection.seconds import SecondAggregator

    rows: list[SecondRow] = []
    seconds = SecondAggregator(info(), 2, rows.append, 3.0)
    scores = np.array([[0.1, 0.0], [0.9, 0.2], [0.3, 0.7]], dtype=np.float32)
    seconds.add(np.array([1.5, 4.5, 7.5]), scores)
    seconds.close(9.0)
    assert [r.status for r in rows] == [ANALYSED] * 9
    assert [float(r.scores[0]) for r in rows] == pytest.approx([0.1] * 3 + [0.9] * 3 + [0.3] * 3)
    # The centre rule alone, as with a hop of a second or less: the rest are `edge`.
    rows.clear()
    centred = SecondAggregator(info(), 2, rows.append)
    centred.add(np.array([1.5, 4.5, 7.5]), scores)
    centred.close(9.0)
    assert [r.status for r in rows] == [EDGE, ANALYSED, EDGE] * 3


class PerWindow(Analyzer):
    """The reference: every window through every label's detector one at a time (`update`),
    fresh detectors for each stream, as the analyzer did before detectors took whole batches
    and were kept from stream to stream."""

    def begin(self, info: StreamInfo, position: int = 0) -> None:
        super().begin(info, position)
        labels = enumerate(self.labels)
        self._detectors = [(i, EventDetector(s.rules)) for i, s in labels if s.events]
        self._order = MessageOrder([detector for _, detector in self._detectors])

    def _deliver(self, centres: np.ndarray, scores: np.ndarray) -> None:
        self._seconds.add(centres, scores)
        for i, detector in self._detectors:
            for t, score in zip(centres.tolist(), scores[:, i].tolist(), strict=True):
                transitions = detector.update(t, score)
                if transitions:
                    self._order.hold(i, transitions)
        self._publish(self._order.release())

    def _close_events(self, at_seconds: float) -> None:
        for i, detector in self._detectors:
            self._order.hold(i, detector.close(at_seconds))
        self._publish(self._order.flush())


@pytest.mark.parametrize("batch", [1, 16, 256])
def test_batched_detectors_give_the_per_window_rows_and_events(bundle: Bundle, batch: int) -> None:
    fast, fast_sink = make(bundle, batch=batch)
    sink = Collect()
    slow = PerWindow(
        bundle, fast.backend, fast.labels, sink, hop_samples=bundle.hop_samples, batch_windows=batch
    )
    for seed in (3, 4):  # two streams: the second on the detectors the first one used
        x = scene(seed=seed)
        run_blocks(fast, x, [12_345, 40_000])
        run_blocks(slow, x, [12_345, 40_000])
    assert len(sink.events) >= 4  # the scene's tones made events: the paths were exercised
    assert fast_sink.events == sink.events
    assert [(r.offset_seconds, r.status) for r in fast_sink.rows] == [
        (r.offset_seconds, r.status) for r in sink.rows
    ]
    np.testing.assert_array_equal(
        np.array([r.scores for r in fast_sink.rows]), np.array([r.scores for r in sink.rows])
    )


def test_a_live_source_is_asked_for_just_the_audio_of_the_next_window(bundle: Bundle) -> None:
    """`feed` tells a stream with `want` how many frames the next window still needs (through
    the resampler and the frontend), exactly: delivered as all but one frame and then that one,
    the first part scores no window and the last frame one, also after a gap restarts them."""
    import threading

    from scipy.signal import resample_poly

    rate = 44100
    x = resample_poly(scene(), 441, 160).astype(np.float32)[:, None]
    analyzer, sink = make(bundle)
    asked = [2205]  # the first block comes before any ask
    per_block: list[int] = []

    def blocks() -> Iterator[np.ndarray | Gap]:
        at, gapped = 0, False
        while at < len(x):
            if not gapped and at > 7 * rate:
                gapped = True
                yield Gap(rate, "overrun")
                at += rate
                continue
            for n in (asked[-1] - 1, 1):
                before = analyzer.windows_scored
                yield x[at : at + n]
                at += n
                per_block.append(analyzer.windows_scored - before)

    stream = Stream("s", None, rate, 1, blocks(), want=asked.append)
    feed(stream, analyzer, info(), "mix", threading.Event())
    assert len(per_block) > 200
    pairs = per_block[2:-2]  # not the first block (asked for nothing) nor the end (no more)
    assert pairs == [0, 1] * (len(pairs) // 2)
    assert [r.status for r in sink.rows].count("gap:overrun") == 1


def test_a_second_comes_out_with_the_last_window_centred_in_it(bundle: Bundle) -> None:
    """The stream starts 0.3 s before a whole second: windows (0.5 s every 0.1 s) are centred at
    0.25, 0.35, ... s, so the first (partial) second is final with the first window, whose
    successor is centred past it. Its row comes with that window's last sample, not a hop
    later with the next window's."""
    analyzer, sink = make(bundle, batch=1)
    x = scene()
    analyzer.begin(info(datetime(2026, 1, 1, 0, 0, 0, 700_000, tzinfo=timezone.utc)))
    last = 46 * 160 + 512  # the end of the first window's 47th frame: its last sample needed
    analyzer.push(x[: last - 1])
    assert sink.rows == []
    analyzer.push(x[last - 1 : last])
    assert [(r.offset_seconds, r.status) for r in sink.rows] == [(-0.7, ANALYSED)]


def test_one_window_at_a_time_gives_the_rows_of_one_batch() -> None:
    """The per-second aggregator's one-window path (live) and its batch path (files) agree to
    the bit, NaN scores and seconds without a window included."""
    rng = np.random.default_rng(5)
    anchor = datetime(2026, 12, 5, 10, 0, 0, 300_000, tzinfo=timezone.utc)
    info = StreamInfo("x", ["a", "b", "c"], anchor, 16000)
    hop = 0.13
    centres = 0.25 + hop * np.arange(60)
    centres[30:] += 2.0  # a stretch of two seconds with no window centred in it
    scores = rng.random((60, 3)).astype(np.float32)
    scores[::7, 1] = np.nan
    batched: list[SecondRow] = []
    one_by_one: list[SecondRow] = []
    whole = SecondAggregator(info, 3, batched.append, window_seconds=0.5)
    whole.add(centres, scores)
    whole.close(centres[-1] + 0.25)
    single = SecondAggregator(info, 3, one_by_one.append, window_seconds=0.5)
    for i in range(len(centres)):
        single.add(centres[i : i + 1], scores[i : i + 1])
    single.close(centres[-1] + 0.25)
    assert len(batched) == 11  # offsets -0.3 (the anchor is 0.3 s into its second) to 9.7
    assert [(r.offset_seconds, r.time, r.status) for r in one_by_one] == [
        (r.offset_seconds, r.time, r.status) for r in batched
    ]
    np.testing.assert_array_equal([r.scores for r in one_by_one], [r.scores for r in batched])
    assert [r.offset_seconds for r in batched if r.status != ANALYSED] == [4.7]


def test_a_model_of_one_window_a_call_is_given_views_of_the_feature_buffer(
    bundle: Bundle,
) -> None:
    # A model that does not batch (the fly-song TFLite file) is given each window where the
    # features are, not a copied batch: blocks of several frontend pieces (the first is 10 of
    # them) must not move frames a window still to be scored reads. The same ONNX file run
    # one window a call (max_batch 1, as the backend sets for such a model) stands in for it.
    x = scene()
    reference, ref_sink = make(bundle, batch=64, file="onnx-fp32")
    run_blocks(reference, x, [])
    one = bundle.open("onnx-fp32")
    one.max_batch = 1
    sink = Collect()
    analyzer = Analyzer(
        bundle, one, reference.labels, sink, hop_samples=bundle.hop_samples, batch_windows=64
    )
    run_blocks(analyzer, x, [len(x) - 40_000, 12_345])
    assert analyzer.windows_scored == reference.windows_scored == 196
    assert [r.status for r in sink.rows] == [r.status for r in ref_sink.rows]
    np.testing.assert_allclose(
        np.array([r.scores for r in sink.rows]),
        np.array([r.scores for r in ref_sink.rows]),
        atol=1e-5,
    )
    assert len(sink.found()) >= 2
    assert sink.found() == ref_sink.found()
