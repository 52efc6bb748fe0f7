"""Log-mel of every recording, computed once; training windows are rows gathered from it.

Computing the features of each drawn window afresh cost a frontend pass per window per epoch
(per fold). Here `edge.model.frontend.logmel` runs once over each recording (zero-padded by a
window either side, as `Audio` pads it) and a window is `frames` consecutive rows of that
array: a batch is one fancy-index gather, with no per-window Python.

A window starts on the frame grid: its start is rounded to the nearest hop (1.5 ms at 22 kHz
with the default frontend), so its rows are exactly what `logmel` gives on that window alone
(a frame depends only on its own samples; see `trainer.dataset.window_features`).

Level-dependent augmentation needs each window's RMS: the energy of every hop is kept as a
running sum (float64, one value per hop), so a window's energy is one subtraction. It covers
the window's whole hops (`round(window / hop)` of them), a few samples more or less than the
window itself.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.model.frontend import LogMelSpec, logmel, n_frames


class FeatureStore:
    """The log-mel rows of a list of signals, end to end, with where each signal's rows start.

    `keys` name the signals (recording paths) for `index`. `pad_samples` zeros are put before
    and after each signal (a window, for recordings, so a window centred at either end is
    whole; 0 for background recordings). Every signal also gets two hops of zeros at its end,
    so a window whose start was rounded up still has all its rows.
    """

    def __init__(
        self,
        signals: list[np.ndarray],
        spec: LogMelSpec,
        window_samples: int,
        pad_samples: int,
        keys: list[Path] | None = None,
    ) -> None:
        self.spec, self.window_samples, self.pad_samples = spec, window_samples, pad_samples
        self.index = {key: i for i, key in enumerate(keys or [])}  # signal index of each key
        self.frames = n_frames(window_samples, spec)
        self.hops_per_window = max(1, round(window_samples / spec.hop_length))
        hop = spec.hop_length
        rows, energy = [], []
        self.row_base = np.zeros(len(signals), dtype=np.int64)  # first row of each signal
        self.row_count = np.zeros(len(signals), dtype=np.int64)
        self.energy_base = np.zeros(len(signals), dtype=np.int64)
        self.lengths = np.array([len(s) for s in signals], dtype=np.int64)
        row, hops = 0, 0
        for i, signal in enumerate(signals):
            pad = np.zeros(pad_samples, dtype=np.float32)
            tail = np.zeros(pad_samples + 2 * hop, dtype=np.float32)
            padded = np.concatenate([pad, signal.astype(np.float32, copy=False), tail])
            features = logmel(padded, spec)
            per_hop = np.square(padded[: len(padded) // hop * hop], dtype=np.float64)
            cumulative = np.concatenate([[0.0], np.cumsum(per_hop.reshape(-1, hop).sum(axis=1))])
            # Flat past the end (silence): a window of the last rows may reach a hop beyond.
            cumulative = np.pad(cumulative, (0, self.hops_per_window), mode="edge")
            self.row_base[i], self.row_count[i], self.energy_base[i] = row, len(features), hops
            rows.append(features)
            energy.append(cumulative)
            row, hops = row + len(features), hops + len(cumulative)
        self.rows = np.concatenate(rows) if rows else np.zeros((0, spec.n_mels), np.float32)
        self.energy = np.concatenate(energy) if energy else np.zeros(1)
        self._frame_steps = np.arange(self.frames)

    def starts(self, signal: np.ndarray, start_samples: np.ndarray) -> np.ndarray:
        """Global row of each window starting at `start_samples` of signal index `signal`.

        Starts are relative to the signal's sample 0 (negative: in the padding before it),
        clamped to the padded signal and rounded to the nearest hop.
        """
        hop = self.spec.hop_length
        shifted = start_samples + self.pad_samples
        last = self.lengths[signal] + 2 * self.pad_samples - self.window_samples
        shifted = np.clip(shifted, 0, np.maximum(last, 0))
        rows = (shifted + hop // 2) // hop
        return self.row_base[signal] + np.minimum(rows, self.row_count[signal] - self.frames)

    def windows(self, starts: np.ndarray) -> np.ndarray:
        """(n, frames, mels) float32 features of the windows at global rows `starts` (a gather)."""
        return self.rows[starts[:, None] + self._frame_steps]

    def rms(self, signal: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """RMS of each window at global rows `starts` (of signal indices `signal`), float64."""
        first = self.energy_base[signal] + starts - self.row_base[signal]
        total = self.energy[first + self.hops_per_window] - self.energy[first]
        samples = self.hops_per_window * self.spec.hop_length
        return np.sqrt(np.maximum(total, 0.0) / samples + 1e-20)

    def sample_starts(self, signal: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Where the windows at global rows `starts` begin, in samples of their signal."""
        return (starts - self.row_base[signal]) * self.spec.hop_length - self.pad_samples
