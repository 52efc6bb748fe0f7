"""RingBuffer: drop-oldest semantics against a reference model, wrap-around, two threads."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio.ringbuffer import RingBuffer


def _numbered(start: int, n: int, channels: int = 1) -> np.ndarray:
    """Frames whose channel c holds ``index * 10 + c``, so order and channel are both checked."""
    index = np.arange(start, start + n, dtype=np.float64)[:, None]
    return (index * 10 + np.arange(channels)[None, :]).astype(np.float32)


class _ReferenceRing:
    """The same drop-oldest rule on a plain deque of frame indices."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.frames: deque[int] = deque()
        self.dropped_pending = 0
        self.dropped_total = 0
        self.overruns = 0

    def write(self, indices: range) -> None:
        before = self.dropped_total
        for i in indices:
            if len(self.frames) == self.capacity:
                self.frames.popleft()
                self.dropped_pending += 1
                self.dropped_total += 1
            self.frames.append(i)
        if self.dropped_total > before:
            self.overruns += 1

    def read(self, n: int) -> tuple[list[int], int]:
        got = [self.frames.popleft() for _ in range(min(n, len(self.frames)))]
        dropped, self.dropped_pending = self.dropped_pending, 0
        return got, dropped


@settings(max_examples=300, deadline=None)
@given(
    capacity=st.integers(1, 40),
    channels=st.integers(1, 3),
    ops=st.lists(
        st.tuples(st.sampled_from(["write", "read"]), st.integers(0, 90)), min_size=1, max_size=60
    ),
)
def test_matches_reference_model(capacity: int, channels: int, ops: list[tuple[str, int]]) -> None:
    ring = RingBuffer(capacity, channels)
    reference = _ReferenceRing(capacity)
    written = 0
    copied_total = 0
    reported_dropped = 0
    for op, size in ops:
        if op == "write":
            ring.write(_numbered(written, size, channels))
            reference.write(range(written, written + size))
            written += size
        else:
            out = np.full((size, channels), -1.0, dtype=np.float32)
            n_copied, n_dropped = ring.read(out)
            expected, expected_dropped = reference.read(size)
            assert n_copied == len(expected)
            assert n_dropped == expected_dropped
            expected_frames = np.array(
                [[i * 10 + c for c in range(channels)] for i in expected], dtype=np.float32
            ).reshape(-1, channels)
            np.testing.assert_array_equal(out[:n_copied], expected_frames)
            assert np.all(out[n_copied:] == -1.0)  # nothing written past what was copied
            copied_total += n_copied
            reported_dropped += n_dropped
        assert ring.overruns == reference.overruns
        assert ring.dropped_frames_total == reference.dropped_total
        assert ring.written_frames_total == written
        assert ring.fill_ratio == pytest.approx(len(reference.frames) / capacity)
    # Every frame written was read, reported dropped, or is still waiting.
    assert copied_total + reported_dropped + reference.dropped_pending + len(reference.frames) == (
        written
    )


def test_wrap_around_keeps_order() -> None:
    ring = RingBuffer(8)
    out = np.zeros((8, 1), dtype=np.float32)
    ring.write(_numbered(0, 6))
    assert ring.read(out[:5]) == (5, 0)
    ring.write(_numbered(6, 6))  # slots 6, 7 then 0..3: wraps, still fits (7 unread)
    assert ring.fill_ratio == pytest.approx(7 / 8)
    assert ring.read(out) == (7, 0)
    np.testing.assert_array_equal(out[:7, 0], np.arange(5, 12) * 10)
    assert ring.overruns == 0


def test_overrun_drops_oldest_and_reports_before_next_frames() -> None:
    ring = RingBuffer(4)
    out = np.zeros((10, 1), dtype=np.float32)
    ring.write(_numbered(0, 3))
    ring.write(_numbered(3, 3))  # 6 frames into 4: frames 0 and 1 are dropped
    assert (ring.overruns, ring.dropped_frames_total) == (1, 2)
    assert ring.read(out) == (4, 2)
    np.testing.assert_array_equal(out[:4, 0], [20, 30, 40, 50])
    assert ring.read(out) == (0, 0)  # the drop was reported once


def test_block_larger_than_capacity_keeps_newest_frames() -> None:
    ring = RingBuffer(5)
    out = np.zeros((10, 1), dtype=np.float32)
    ring.write(_numbered(0, 2))
    ring.write(_numbered(2, 12))  # frames 0..8 are lost: 2 unread + 7 of the block
    assert ring.written_frames_total == 14
    assert ring.dropped_frames_total == 9
    assert ring.overruns == 1
    assert ring.fill_ratio == 1.0
    assert ring.read(out) == (5, 9)
    np.testing.assert_array_equal(out[:5, 0], np.arange(9, 14) * 10)


def test_multichannel_frames_stay_together() -> None:
    ring = RingBuffer(6, channels=2)
    ring.write(_numbered(0, 4, 2))
    ring.write(_numbered(4, 5, 2))  # wraps and drops frames 0..2
    out = np.zeros((6, 2), dtype=np.float32)
    assert ring.read(out) == (6, 3)
    np.testing.assert_array_equal(out[:, 0], np.arange(3, 9) * 10)
    np.testing.assert_array_equal(out[:, 1], np.arange(3, 9) * 10 + 1)


def test_empty_write_and_read() -> None:
    ring = RingBuffer(3)
    ring.write(np.zeros((0, 1), dtype=np.float32))
    assert ring.read(np.zeros((0, 1), dtype=np.float32)) == (0, 0)
    assert ring.read(np.zeros((4, 1), dtype=np.float32)) == (0, 0)
    assert (ring.written_frames_total, ring.overruns, ring.fill_ratio) == (0, 0, 0.0)


@pytest.mark.parametrize(("capacity", "channels"), [(0, 1), (4, 0)])
def test_rejects_bad_sizes(capacity: int, channels: int) -> None:
    with pytest.raises(ValueError, match="RingBuffer"):
        RingBuffer(capacity, channels)


def test_two_threads_no_silent_loss() -> None:
    """A producer writes samples equal to their absolute index; a slow consumer reads.

    Whatever the interleaving, what is read increases, and every jump in the indices equals
    the dropped count reported with that read: nothing is lost without being reported.
    """
    total_frames = 400_000  # float32 holds integers exactly up to 2**24
    capacity = 1024
    ring = RingBuffer(capacity)
    done = threading.Event()

    def produce() -> None:
        rng = np.random.default_rng(1)
        position = 0
        pause = threading.Event()  # never set: wait() is a short pause like the audio period
        while position < total_frames:
            if rng.integers(0, 8) == 0:
                pause.wait(0.0002)
            n = min(int(rng.integers(1, 300)), total_frames - position)
            ring.write(np.arange(position, position + n, dtype=np.float32)[:, None])
            position += n
        done.set()

    producer = threading.Thread(target=produce, name="test-producer")
    producer.start()
    out = np.zeros((300, 1), dtype=np.float32)
    expected_next = 0
    copied_total = 0
    dropped_total = 0
    reads = 0
    while True:
        finished = done.is_set()  # read before draining so the last frames are not missed
        n, dropped = ring.read(out[: 1 + reads % 300])
        reads += 1
        if n:
            values = out[:n, 0].astype(np.int64)
            assert values[0] == expected_next + dropped
            np.testing.assert_array_equal(np.diff(values), 1)
            expected_next = int(values[-1]) + 1
        else:
            assert dropped == 0  # after an overrun the ring is full, so a read gets frames
        copied_total += n
        dropped_total += dropped
        if finished and n == 0 and ring.fill_ratio == 0.0:
            break
        if reads % 40 == 0:
            threading.Event().wait(0.0005)  # a slow consumer, so overruns do happen
    producer.join(timeout=10)
    assert not producer.is_alive()
    assert expected_next == total_frames
    assert copied_total + dropped_total == total_frames
    assert dropped_total == ring.dropped_frames_total
    assert ring.written_frames_total == total_frames
