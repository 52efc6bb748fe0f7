"""Fixed-size audio ring buffer between the audio callback and the processing thread.

The audio callback (``write``) only copies: no buffer allocation, no logging, no exceptions
on overflow, and it never waits longer than the reader's own memcpy. When the reader falls
behind, the OLDEST unread audio is dropped (the reader's position jumps forward), counted,
and reported to the reader with the next ``read`` as ``n_dropped_before``, so every gap is
explicit and none is silent. The buffer never grows.

Concurrency: one producer thread and one consumer thread. A ``threading.Lock`` is held only
for the index arithmetic and the memcpy on either side, never across anything that can wait.
A lock-free single-producer/single-consumer ring would be possible in C, but here the writer
must also move the reader's position when it overwrites unread audio, and doing that without
a lock in Python (where numpy may release the GIL during a copy) is hard to prove correct; the
lock makes every ``write`` and ``read`` atomic with respect to the other, and holding it costs
microseconds (a read copies at most ``capacity`` frames).

Positions are kept as absolute frame counts (Python ints never overflow), so "how much is
unread" is ``written - read`` and a slot is ``position % capacity``.
"""

from __future__ import annotations

import threading

import numpy as np


class RingBuffer:
    """Preallocated float32 ring of ``capacity_frames`` frames of ``channels`` samples each."""

    def __init__(self, capacity_frames: int, channels: int = 1) -> None:
        if capacity_frames < 1:
            raise ValueError(f"RingBuffer: capacity_frames must be >= 1, got {capacity_frames}")
        if channels < 1:
            raise ValueError(f"RingBuffer: channels must be >= 1, got {channels}")
        self._capacity = int(capacity_frames)
        self._channels = int(channels)
        self._buffer = np.zeros((self._capacity, self._channels), dtype=np.float32)
        self._lock = threading.Lock()
        self._write_pos = 0  # absolute frames ever written (including dropped ones)
        self._read_pos = 0  # absolute index of the next unread frame
        self._dropped_pending = 0  # frames dropped since the last read
        self._dropped_total = 0
        self._overruns = 0

    @property
    def capacity(self) -> int:
        """Size in frames."""
        return self._capacity

    @property
    def channels(self) -> int:
        return self._channels

    @property
    def fill_ratio(self) -> float:
        """Unread frames as a fraction of capacity, 0.0 to 1.0."""
        with self._lock:
            unread = self._write_pos - self._read_pos
        return unread / self._capacity

    @property
    def available_frames(self) -> int:
        """Frames that a ``read`` with a large enough ``out`` would return now."""
        with self._lock:
            return self._write_pos - self._read_pos

    @property
    def overruns(self) -> int:
        """Number of ``write`` calls that dropped audio."""
        return self._overruns

    @property
    def dropped_frames_total(self) -> int:
        """Frames dropped by overruns since construction."""
        return self._dropped_total

    @property
    def read_frames_total(self) -> int:
        """Frames read or dropped since construction: where the next ``read`` begins."""
        return self._read_pos

    @property
    def written_frames_total(self) -> int:
        """Frames passed to ``write`` since construction, dropped ones included."""
        return self._write_pos

    def write(self, block: np.ndarray) -> None:
        """Copy ``block`` (shape ``(n, channels)``, float32) in; called from the audio callback.

        If it does not fit, the oldest unread frames are dropped; a block longer than the
        capacity keeps only its newest ``capacity`` frames. Never raises on overflow.
        """
        n = block.shape[0]
        if n == 0:
            return
        capacity = self._capacity
        if n > capacity:
            block = block[n - capacity :]  # a view: the older frames are lost anyway
        kept = block.shape[0]
        with self._lock:
            start = self._write_pos + (n - kept)  # absolute index of block's first kept frame
            new_write_pos = self._write_pos + n
            slot = start % capacity
            first = min(kept, capacity - slot)
            self._buffer[slot : slot + first] = block[:first]
            if first < kept:  # wraps around the end of the buffer
                self._buffer[: kept - first] = block[first:]
            self._write_pos = new_write_pos
            oldest_kept = new_write_pos - capacity
            if oldest_kept > self._read_pos:
                dropped = oldest_kept - self._read_pos
                self._read_pos = oldest_kept
                self._dropped_pending += dropped
                self._dropped_total += dropped
                self._overruns += 1

    def read(self, out: np.ndarray) -> tuple[int, int]:
        """Copy up to ``len(out)`` unread frames into ``out`` (shape ``(m, channels)``).

        Returns ``(n_copied, n_dropped_before)``: the frames copied to ``out[:n_copied]``, and
        the frames dropped by overruns since the previous read, which lie just before them.
        """
        with self._lock:
            dropped = self._dropped_pending
            self._dropped_pending = 0
            n = min(out.shape[0], self._write_pos - self._read_pos)
            if n > 0:
                capacity = self._capacity
                slot = self._read_pos % capacity
                first = min(n, capacity - slot)
                out[:first] = self._buffer[slot : slot + first]
                if first < n:
                    out[first:n] = self._buffer[: n - first]
                self._read_pos += n
        return n, dropped
