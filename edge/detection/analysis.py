"""The shared scoring path: audio at the model's rate in, per-second rows and events out.

`run` and `scan` both feed an Analyzer, so a file gives the same scores whichever command reads
it. Audio arrives in blocks of any size; features are computed incrementally, windows are cut
from a preallocated feature buffer, scored in batches, and each window's scores go to the
per-second aggregator and to one event detector per kept label.

A gap (overrun, lost device, shed load) resets the frontend: no window spans missing audio.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from edge.detection.bank import DetectorBank
from edge.detection.events import Transition
from edge.detection.seconds import SecondAggregator
from edge.model.bundle import Bundle
from edge.model.frontend import StreamingLogMel
from edge.model.rules import EventRules
from edge.model.runtime.base import Backend, one_per_call
from edge.records import Event, Sink, StreamInfo

# Audio is pushed through the frontend in pieces of at most this many samples, which bounds the
# feature buffer whatever block size the caller uses.
MAX_PIECE_SAMPLES = 1 << 15
# A batch holds at most this many bytes of model input: past a few windows of a heavy model
# (YAMNet's 0.975 s waveform is 61 KiB a window, BirdNET's 3 s 563 KiB) a larger batch buys no
# speed, only memory (the batch and the feature buffer behind it both grow with it).
MAX_BATCH_BYTES = 4 << 20


def capped_batch(feature_shape: tuple[int, ...], batch_windows: int) -> int:
    """`batch_windows`, or fewer where that many windows would pass MAX_BATCH_BYTES; one
    window of ONE_PER_CALL_BYTES or more, which the model is given one a call anyway: a batch
    of them would only hold memory (BirdNET: 7 windows, 8 MiB with the samples behind them)."""
    if one_per_call(feature_shape):
        return 1
    window_bytes = 4 * int(np.prod(feature_shape))
    return max(1, min(batch_windows, MAX_BATCH_BYTES // window_bytes))


@dataclass(frozen=True)
class LabelSetup:
    """One kept label: its index in the model output and its detector rules."""

    label: str
    index: int
    rules: EventRules
    events: bool = True  # False for a background label: scored per second, never an event


class Analyzer:
    """Scores one stream at a time; reusable across streams (files, reconnects)."""

    def __init__(
        self,
        bundle: Bundle,
        backend: Backend,
        labels: list[LabelSetup],
        sink: Sink,
        *,
        hop_samples: int,
        batch_windows: int = 64,
    ) -> None:
        self.bundle = bundle
        self.backend = backend
        self.labels = labels
        self.sink = sink
        self.rate_hz = bundle.sample_rate_hz
        self.window_samples = bundle.window_samples
        self.hop_samples = hop_samples
        self.batch_windows = batch_windows = capped_batch(bundle.feature_shape, batch_windows)
        self._keep = np.array([s.index for s in labels], dtype=np.intp)
        self._activation = bundle.manifest.output.activation

        spec = bundle.logmel
        if spec is None:  # waveform bundles: a "frame" is one sample of width 1
            self._frontend: StreamingLogMel | None = None
            self._frame_hop, width = 1, 1
        else:
            self._frontend = StreamingLogMel(spec, MAX_PIECE_SAMPLES)
            self._frame_hop, width = spec.hop_length, spec.n_mels
        self._window_frames = bundle.feature_shape[0]
        self._hop_frames = hop_samples // self._frame_hop
        capacity = (
            self._window_frames
            + self._hop_frames * batch_windows
            + MAX_PIECE_SAMPLES // self._frame_hop
            + 1
        )
        self._features = np.zeros((capacity, width), dtype=np.float32)
        # A backend that takes one window a call is given the batch as a view of the feature
        # buffer: each window is contiguous there, and copying the batch out (16 KB a window,
        # fly song) was the work of cutting windows. Others get a copy in one array.
        self._in_place = backend.max_batch == 1
        rows = 0 if self._in_place else batch_windows
        self._batch = np.zeros((rows, self._window_frames, width), dtype=np.float32)
        self._batch_model = self._batch.reshape((rows, *bundle.feature_shape))
        self._batch_first = 0  # in place: the buffer index of the batch's first window
        self._centres = np.zeros(batch_windows, dtype=np.float64)
        self._window_index = np.arange(batch_windows, dtype=np.int64)
        self._raw = np.zeros((batch_windows, len(bundle.labels)), dtype=np.float32)
        self._kept = np.zeros((batch_windows, len(labels)), dtype=np.float32)
        self._keep_all = self._keep.tolist() == list(range(len(bundle.labels)))
        # A detector for each label that makes events (background labels have none), made
        # once: a stream's `begin` resets them.
        makes_events = [i for i, s in enumerate(labels) if s.events]
        self._bank = DetectorBank(makes_events, [labels[i].rules for i in makes_events])
        self._event_labels = tuple(labels[i].label for i in makes_events)
        self.windows_scored = 0
        self._pending = 0  # windows cut into the batch but not yet scored
        self._info: StreamInfo | None = None
        # Where each batch's (centres, scores) go instead of the rows and events: a shard of a
        # long file (edge/shards.py), whose rows and events come from `replay` of all shards.
        self.windows_to: Callable[[np.ndarray, np.ndarray], None] | None = None

    # -- stream lifecycle -------------------------------------------------------------------

    def begin(self, info: StreamInfo, position: int = 0) -> None:
        """Start a new stream (a file, or a live stream): everything is reset. `position`:
        the stream sample its audio starts at, when a shard of a file begins mid-stream."""
        m = self.bundle.manifest
        info = replace(
            info,
            event_labels=self._event_labels,
            model=m.name,
            model_version=m.version,
        )
        self._info = info
        self._seconds = SecondAggregator(
            info, len(self.labels), self.sink.second, self.window_samples / self.rate_hz
        )
        self._bank.begin()
        self._open_ids: list[str | None] = [None] * len(self.labels)  # open event per label
        self._position = position  # samples of this stream so far, gaps included
        self._restart(position)
        self.sink.begin(info)

    def replay(
        self, info: StreamInfo, batches: Iterable[tuple[np.ndarray, np.ndarray]], samples: int
    ) -> None:
        """Score a stream of `samples` samples from its windows' scores, in the batches they
        were scored in elsewhere (the shards of a long file): the same rows and events as
        pushing its audio, which the model already scored."""
        self.begin(info)
        for centres, scores in batches:
            self.windows_scored += len(centres)
            self._deliver(centres, scores)
        self._position = samples
        self.end()

    def _restart(self, position: int) -> None:
        """Begin a run of contiguous audio at stream sample `position` (after a start or gap)."""
        self._run_start = position
        self._n_features = 0  # frames held in the buffer
        self._features_base = 0  # run frame index of self._features[0]
        self._next_window = 0  # run index of the next window to cut
        if self._frontend is not None:
            self._frontend.reset()

    def push(self, samples: np.ndarray) -> None:
        """Mono float32 audio at the bundle's rate, continuing the current stream."""
        for start in range(0, len(samples), MAX_PIECE_SAMPLES):
            piece = samples[start : start + MAX_PIECE_SAMPLES]
            frames = piece[:, None] if self._frontend is None else self._frontend.push(piece)
            self._append(frames)
            self._position += len(piece)
            self._cut_windows()
            if self._in_place:  # the next piece may move the frames the batch views
                self._score()
        self._score()

    def gap(self, n_samples: int, reason: str) -> None:
        """`n_samples` of this stream are missing (overrun, device, overload)."""
        if n_samples <= 0:
            return
        self._score()
        start = self._position / self.rate_hz
        self._position += n_samples
        end = self._position / self.rate_hz
        self._seconds.gap(start, end, reason)
        self._close_events(start)
        self._restart(self._position)
        # No window of the next run can be centred before half a window after the gap.
        self._seconds.finish_before(end + self.window_samples / 2 / self.rate_hz)

    def end(self) -> None:
        """The stream is over: score what is left, close open events, emit the last seconds."""
        if self._info is None:
            return
        self._score()
        end = self._position / self.rate_hz
        self._close_events(end)
        self._seconds.close(end)
        self.sink.end()
        self._info = None

    def samples_wanted(self) -> int:
        """Samples still to come before the next window is complete (at least 1)."""
        spec = self._frontend.spec if self._frontend is not None else None
        frame_length = 1 if spec is None else spec.n_fft
        last_frame = self._next_window * self._hop_frames + self._window_frames - 1
        end = self._run_start + last_frame * self._frame_hop + frame_length
        return max(1, end - self._position)

    @property
    def position_seconds(self) -> float:
        return self._position / self.rate_hz

    # -- the per-window path ----------------------------------------------------------------

    def _append(self, frames: np.ndarray) -> None:
        n = len(frames)
        if n == 0:
            return
        if self._n_features + n > len(self._features):
            # Drop frames no future window needs, moving the rest to the front.
            needed_from = self._next_window * self._hop_frames - self._features_base
            keep_from = min(needed_from, self._n_features)
            keep = self._n_features - keep_from
            self._features[:keep] = self._features[keep_from : self._n_features]
            self._features_base += keep_from
            self._n_features = keep
        self._features[self._n_features : self._n_features + n] = frames
        self._n_features += n

    def _cut_windows(self) -> None:
        """Add every complete window to the batch (a copy, or in place the batch's start in the
        buffer); score whenever the batch fills."""
        hop, width = self._hop_frames, self._window_frames
        while True:
            first = self._next_window * hop - self._features_base  # buffer index of next window
            ready = (self._n_features - first - width) // hop + 1
            if ready <= 0:
                return
            m = min(ready, self.batch_windows - self._pending)
            slots = slice(self._pending, self._pending + m)
            if self._in_place:
                if self._pending == 0:
                    self._batch_first = first
            elif m == 1:  # live, mostly: a plain copy
                self._batch[self._pending] = self._features[first : first + width]
            else:
                frames = self._features[first : first + (m - 1) * hop + width]
                # (m, mels, frames) views of the buffer, copied as (m, frames, mels) in one go.
                windows = sliding_window_view(frames, width, axis=0)[::hop]
                self._batch[slots] = windows.transpose(0, 2, 1)
            if m == 1:  # scalar arithmetic (the same float64)
                start = self._run_start + self.hop_samples * self._next_window
                self._centres[self._pending] = (start + self.window_samples / 2) / self.rate_hz
            else:
                starts = self._run_start + self.hop_samples * (
                    self._next_window + self._window_index[:m]
                )
                np.divide(starts + self.window_samples / 2, self.rate_hz, out=self._centres[slots])
            self._pending += m
            self._next_window += m
            if self._pending == self.batch_windows:
                self._score()

    def _score(self) -> None:
        n = self._pending
        if n == 0:
            return
        raw = self.backend.predict(self._windows(n), out=self._raw[:n])
        _activate(raw, self._activation)
        scores = raw if self._keep_all else np.take(raw, self._keep, axis=1, out=self._kept[:n])
        centres = self._centres[:n]
        self._pending = 0
        self.windows_scored += n
        if self.windows_to is not None:
            self.windows_to(centres, scores)
        else:
            self._deliver(centres, scores)

    def _windows(self, n: int) -> np.ndarray:
        """The batch's `n` windows as the model takes them: a copy, or views in place."""
        if not self._in_place:
            return self._batch_model[:n]
        rows = self._features[self._batch_first :]
        step, item = rows.strides
        windows = as_strided(
            rows,
            shape=(n, self._window_frames, rows.shape[1]),
            strides=(self._hop_frames * step, step, item),
            writeable=False,
        )
        return windows.reshape((n, *self.bundle.feature_shape))

    def _deliver(self, centres: np.ndarray, scores: np.ndarray) -> None:
        """One batch's windows (centre offsets in s, kept scores) into rows and events."""
        self._seconds.add(centres, scores)
        # The next window is centred a hop later, and no gap can fall in audio already here:
        # the seconds before both are final now, not when the next batch comes (the first
        # second of a stream comes out up to a hop sooner; with BirdNET's 3 s windows, a
        # window sooner).
        next_centre = float(centres[-1]) + self.hop_samples / self.rate_hz
        received = self._position / self.rate_hz + self._seconds.half
        self._seconds.finish_before(min(next_centre, received))
        # Labels decide at different delays (min duration, merge gap, median): the messages go
        # out in the order of the time they carry, once no label can still precede them.
        self._publish(self._bank.feed(centres.tolist(), scores))

    def _close_events(self, at_seconds: float) -> None:
        """End every label's stream at ``at_seconds`` and send all messages still held."""
        self._publish(self._bank.close(at_seconds))

    def _publish(self, messages: Sequence[tuple[int, Transition]]) -> None:
        info = self._info
        assert info is not None
        # An event on from the run's first window was sounding when the run began: it starts
        # there, not half a window in (a clip that opens on its sound would otherwise miss
        # every onset match by half a window).
        run_start = self._run_start / self.rate_hz
        first_centre = (self._run_start + self.window_samples / 2) / self.rate_hz
        for i, tr in messages:
            setup = self.labels[i]
            start = tr.start_seconds
            if abs(start - first_centre) < 1e-9:
                start = run_start
            if tr.type == "start":
                self._open_ids[i] = event_id_for(info, setup.label, start)
            event_id = self._open_ids[i]
            assert event_id is not None, "an end without a start"
            if tr.type == "end":
                self._open_ids[i] = None
            self.sink.event(
                Event(
                    id=event_id,
                    type=tr.type,
                    label=setup.label,
                    start_offset=start,
                    end_offset=tr.end_seconds,
                    start=info.at(start),
                    end=None if tr.end_seconds is None else info.at(tr.end_seconds),
                    score_max=tr.score_max,
                    score_mean=tr.score_mean,
                    threshold=setup.rules.threshold,
                    source=info.source,
                    channel=info.channel,
                    continued=tr.continued,
                )
            )


_EVENT_IDS = uuid.UUID("5f1d8a4e-2b7c-4c1e-9a63-0d2f6e8b7a10")  # soundwatch's uuid5 namespace


def event_id_for(info: StreamInfo, label: str, start_seconds: float) -> str:
    """An event's id, from what makes it that event: the model, the source and channel, the
    label and its start (absolute when the stream has an anchor, else the offset). The same
    recording scored again gives the same ids, so a scan run twice, or on any number of
    workers, writes the same bytes, and a subscriber can drop a message it already has."""
    at = info.at(start_seconds)
    when = at.isoformat() if at is not None else f"{info.offset_seconds + start_seconds:.6f}"
    key = f"{info.model}/{info.model_version}|{info.source}|{info.channel}|{label}|{when}"
    key = key.encode("utf-8", "backslashreplace").decode("utf-8")  # a source name not UTF-8
    return uuid.uuid5(_EVENT_IDS, key).hex


def _activate(raw: np.ndarray, activation: str) -> None:
    """Model outputs (float32) to probabilities, in place."""
    if activation == "sigmoid":
        # exp overflows to inf for very negative logits, which still gives exactly 0.
        with np.errstate(over="ignore"):
            np.negative(raw, out=raw)
            np.exp(raw, out=raw)
            raw += 1.0
            np.reciprocal(raw, out=raw)
    elif activation == "softmax":
        raw -= raw.max(axis=1, keepdims=True)
        np.exp(raw, out=raw)
        raw /= raw.sum(axis=1, keepdims=True)
