"""Windows and labels from annotations: what the model trains and is validated on.

Each usable annotation becomes an `Example`: where it is, and its target per label. Exclusive
mode (softmax): the target is one-hot on the annotation's label. Overlapped mode (sigmoid per
label, as SongExplorer does it): `<label>` means 1 for that label, `not_<label>` means 0 for it,
and every other label is unknown (NaN, masked out of the loss).

Training windows are drawn afresh each time: a range annotation gives a window centred on a
random point inside it; a point annotation gives one centred on it, moved by up to
`point_jitter` of a window either way. Validation windows are fixed: spread evenly over each
range, or over the jitter around each point.

Recordings are read once, mixed to mono, resampled to the model rate (`edge.audio.resample`) and
kept in memory in one float32 array (4 bytes per sample: an hour at 16 kHz is 230 MB). A batch of
windows is cut out with one gather, augmented in numpy, and turned into log-mel with the edge's
own `edge.model.frontend.logmel` (no train/serve skew), vectorised over the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.audio.files import AudioFile, find_audio_files
from edge.audio.resample import resample
from edge.errors import SoundwatchError
from edge.model.frontend import LogMelSpec, logmel, n_frames
from trainer.annotations import Annotation
from trainer.config import AugmentConfig, TrainConfig

_READ_BLOCK_FRAMES = 1 << 16


class DataError(SoundwatchError):
    """The annotations cannot train the model asked for (a label without windows, ...)."""


@dataclass(frozen=True)
class Example:
    """One usable annotation and what it teaches."""

    annotation: Annotation
    group: int
    """Index into `Examples.groups`: its label, or its negative label (for balance and splits)."""
    target: np.ndarray
    """float32 (labels,): 1 yes, 0 no, NaN unknown (overlapped mode only)."""


@dataclass(frozen=True)
class Examples:
    items: list[Example]
    groups: list[str]
    """Group names: the labels in output order, then (overlapped mode) their negative labels."""
    ignored: dict[str, int]
    """Annotations not used, counted per label (other labels; negatives in exclusive mode)."""
    overlapped: bool

    def without_negatives(self) -> list[str]:
        """Overlapped mode: labels without negative examples (their sigmoid never learns "no").

        Empty in exclusive mode, where every other label's windows are the negatives.
        """
        n = len(self.groups) // 2 if self.overlapped else 0
        counts = self.counts()
        return [
            label
            for label in self.groups[:n]
            if not counts[self.groups[n + self.groups.index(label)]]
        ]

    def counts(self) -> dict[str, int]:
        """Examples per group, in group order."""
        found = np.bincount([e.group for e in self.items], minlength=len(self.groups))
        return {name: int(n) for name, n in zip(self.groups, found, strict=True)}


def label_examples(
    annotations: list[Annotation], labels: list[str], mode: str, negative_prefix: str
) -> Examples:
    """Turn annotations into examples for `labels`; DataError if a label has none."""
    n = len(labels)
    groups = list(labels)
    if mode == "overlapped":
        groups += [negative_prefix + label for label in labels]
    index = {name: i for i, name in enumerate(groups)}
    items: list[Example] = []
    ignored: dict[str, int] = {}
    for a in annotations:
        group = index.get(a.label)
        if group is None:
            ignored[a.label] = ignored.get(a.label, 0) + 1
            continue
        if mode == "exclusive":
            target = np.zeros(n, dtype=np.float32)
            target[group] = 1.0
        else:
            target = np.full(n, np.nan, dtype=np.float32)
            target[group % n] = 1.0 if group < n else 0.0
        items.append(Example(a, group, target))
    found = Examples(items, groups, ignored, mode == "overlapped")
    counts = found.counts()
    missing = [label for label in labels if counts[label] == 0]
    if missing:
        have = sorted({a.label for a in annotations})
        raise DataError(
            f"no usable windows for label {', '.join(repr(m) for m in missing)}: no annotations"
            f" with that label (labels found: {', '.join(have) or 'none'})"
        )
    return found


# --- audio in memory ------------------------------------------------------------------------------


def read_mono(path: Path, rate_hz: int) -> np.ndarray:
    """A whole recording as float32 mono at `rate_hz` (channels averaged, resampled)."""
    with AudioFile.open(path) as audio:
        blocks = [b.mean(axis=1) for b in audio.blocks(_READ_BLOCK_FRAMES, reuse_buffer=False)]
        file_rate_hz = audio.sample_rate_hz
    signal = np.concatenate(blocks).astype(np.float32) if blocks else np.zeros(0, np.float32)
    return resample(signal, file_rate_hz, rate_hz) if file_rate_hz != rate_hz else signal


class Audio:
    """Recordings at the model rate, end to end in one array with zero padding around each.

    The padding (one window) lets a window centred near either end be cut without checks:
    audio before the start and after the end is silence.
    """

    def __init__(self, paths: list[Path], rate_hz: int, window_samples: int) -> None:
        self.rate_hz, self.window_samples = rate_hz, window_samples
        pad = np.zeros(window_samples, dtype=np.float32)
        pieces: list[np.ndarray] = [pad]
        self.offsets: dict[Path, int] = {}  # where each recording's sample 0 sits
        self.lengths: dict[Path, int] = {}
        position = window_samples
        for path in paths:
            signal = read_mono(path, rate_hz)
            self.offsets[path], self.lengths[path] = position, len(signal)
            pieces += [signal, pad]
            position += len(signal) + window_samples
        self.samples = np.concatenate(pieces)

    def cut(self, paths: list[Path], centres_seconds: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 windows centred on the given times (one gather)."""
        offsets = np.array([self.offsets[p] for p in paths], dtype=np.int64)
        centres = offsets + np.round(centres_seconds * self.rate_hz).astype(np.int64)
        # Clamp inside the padding: a shift can never reach into the next recording.
        lengths = np.array([self.lengths[p] for p in paths], dtype=np.int64)
        half = self.window_samples // 2
        centres = np.clip(centres, offsets - half, offsets + lengths + half)
        starts = centres - half
        return self.samples[starts[:, None] + np.arange(self.window_samples)]


def window_features(windows: np.ndarray, spec: LogMelSpec) -> np.ndarray:
    """Log-mel of each window, float32 (n, frames, mels), with the edge's `logmel`.

    The windows are laid end to end (each padded to a whole number of hops) and run through
    `logmel` in one call; frames that straddle two windows are dropped. Each kept frame is the
    one `logmel` gives on that window alone: FFT rows do not depend on their neighbours.
    """
    n, samples = windows.shape
    frames = n_frames(samples, spec)
    stride = -(-samples // spec.hop_length) * spec.hop_length
    laid = np.zeros((n, stride), dtype=np.float32)
    laid[:, :samples] = windows
    rows = logmel(laid.reshape(-1), spec)
    per_window = stride // spec.hop_length
    full = np.zeros((n * per_window, spec.n_mels), dtype=np.float32)
    full[: len(rows)] = rows  # the last window's straddling frames are simply not computed
    return np.ascontiguousarray(full.reshape(n, per_window, spec.n_mels)[:, :frames])


# --- augmentation ---------------------------------------------------------------------------------


def _rms(x: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=1) + 1e-20)


class Augmenter:
    """Random gain, white noise, background mixing (waveform), SpecAugment masks (features)."""

    def __init__(self, config: AugmentConfig, background: list[np.ndarray]) -> None:
        self.config = config
        self.background = [b for b in background if len(b)]

    def waveform(self, x: np.ndarray, rng: np.random.Generator) -> None:
        """Augment (n, samples) windows in place."""
        c, n = self.config, x.shape[0]
        if self.background and c.background_probability > 0:
            chosen = np.flatnonzero(rng.random(n) < c.background_probability)
            for i in chosen:
                source = self.background[int(rng.integers(len(self.background)))]
                segment = _segment(source, x.shape[1], rng)
                low, high = c.background_snr_db
                level_db = rng.uniform(low, high)
                scale = _rms(x[i : i + 1])[0] / _rms(segment[None])[0] / 10 ** (level_db / 20)
                x[i] += (scale * segment).astype(np.float32)
        if c.noise_probability > 0:
            chosen = np.flatnonzero(rng.random(n) < c.noise_probability)
            if len(chosen):
                low, high = c.noise_snr_db
                snr_db = rng.uniform(low, high, size=len(chosen))
                noise_rms = _rms(x[chosen]) / 10 ** (snr_db / 20)
                noise = rng.standard_normal((len(chosen), x.shape[1])) * noise_rms[:, None]
                x[chosen] += noise.astype(np.float32)
        if c.gain_db > 0:
            gain_db = rng.uniform(-c.gain_db, c.gain_db, size=n)
            x *= np.power(10.0, gain_db / 20).astype(np.float32)[:, None]

    def features(self, f: np.ndarray, rng: np.random.Generator) -> None:
        """SpecAugment (n, frames, mels) features in place: masks set to the window's mean."""
        c = self.config
        if not (c.time_masks or c.freq_masks):
            return
        n, frames, mels = f.shape
        means = f.mean(axis=(1, 2))
        for i in range(n):
            for _ in range(c.time_masks):
                width = int(rng.integers(0, min(c.time_mask_frames, frames) + 1))
                start = int(rng.integers(0, frames - width + 1))
                f[i, start : start + width, :] = means[i]
            for _ in range(c.freq_masks):
                width = int(rng.integers(0, min(c.freq_mask_bands, mels) + 1))
                start = int(rng.integers(0, mels - width + 1))
                f[i, :, start : start + width] = means[i]


def _segment(source: np.ndarray, samples: int, rng: np.random.Generator) -> np.ndarray:
    """A random `samples`-long piece of `source`, repeated end to end if it is shorter."""
    if len(source) < samples:
        source = np.tile(source, -(-samples // len(source)))
    start = int(rng.integers(0, len(source) - samples + 1))
    return source[start : start + samples]


def load_background(folder: str | None, rate_hz: int) -> list[np.ndarray]:
    """Every recording under `folder` (recursive) at `rate_hz`; DataError if there is none."""
    if not folder:
        return []
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"augment.background: {root}: no such folder")
    paths = find_audio_files([root])
    if not paths:
        raise DataError(f"augment.background: {root}: no audio files in it")
    return [read_mono(p, rate_hz) for p in paths]


# --- drawing windows ------------------------------------------------------------------------------


class Windows:
    """Draws training windows from examples; cuts fixed validation windows.

    All randomness comes from the generator passed in, so a seed fixes every window.
    """

    def __init__(
        self, examples: list[Example], audio: Audio, config: TrainConfig, augmenter: Augmenter
    ) -> None:
        if not examples:
            raise DataError("no annotations to draw training windows from")
        self.examples, self.audio, self.config, self.augmenter = (
            examples,
            audio,
            config,
            augmenter,
        )
        self.spec = config.frontend
        self.starts = np.array([e.annotation.start_seconds for e in examples])
        self.durations = np.array([e.annotation.duration_seconds for e in examples])
        self.targets = np.stack([e.target for e in examples])
        groups = np.array([e.group for e in examples])
        self.members = [np.flatnonzero(groups == g) for g in np.unique(groups)]

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`n` example indices and window centres in seconds, before any augmentation shift."""
        if self.config.windows.balance:
            group = rng.integers(len(self.members), size=n)
            pick = rng.random(n)
            chosen = np.array(
                [
                    self.members[g][int(p * len(self.members[g]))]
                    for g, p in zip(group, pick, strict=True)
                ]
            )
        else:
            chosen = rng.integers(len(self.examples), size=n)
        inside = rng.random(n) * self.durations[chosen]
        jitter = rng.uniform(-1.0, 1.0, size=n) * self.config.windows.point_jitter
        is_point = self.durations[chosen] == 0
        centres = self.starts[chosen] + inside + is_point * jitter * self.config.window_seconds
        return chosen, centres

    def batch(
        self, n: int, rng: np.random.Generator, *, augment: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, frames, mels) and targets (n, labels) of `n` freshly drawn windows."""
        chosen, centres = self.draw(n, rng)
        shift = self.config.augment.shift_seconds
        if augment and shift > 0:
            centres = centres + rng.uniform(-shift, shift, size=n)
        paths = [self.examples[i].annotation.recording for i in chosen]
        waves = self.audio.cut(paths, centres)
        if augment:
            self.augmenter.waveform(waves, rng)
        features = window_features(waves, self.spec)
        if augment:
            self.augmenter.features(features, rng)
        return features, self.targets[chosen]

    def fixed(self) -> tuple[np.ndarray, np.ndarray]:
        """Validation windows: `validation_windows` per example, spread evenly, no augmentation.

        A range gets centres at the middles of equal parts of it; a point gets centres spread
        evenly over its jitter (just the point when there is one window per example).
        """
        k = self.config.windows.validation_windows
        parts = (np.arange(k) + 0.5) / k
        spread = np.linspace(-1.0, 1.0, k) if k > 1 else np.zeros(1)
        jitter_seconds = self.config.windows.point_jitter * self.config.window_seconds
        centres = np.where(
            self.durations[:, None] > 0,
            self.starts[:, None] + parts[None, :] * self.durations[:, None],
            self.starts[:, None] + spread[None, :] * jitter_seconds,
        ).reshape(-1)
        paths = [e.annotation.recording for e in self.examples for _ in range(k)]
        features = window_features(self.audio.cut(paths, centres), self.spec)
        return features, np.repeat(self.targets, k, axis=0)
