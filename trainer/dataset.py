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
kept in memory in one float32 array (4 bytes per sample: an hour at 16 kHz is 230 MB). Their
log-mel, with the edge's own `edge.model.frontend.logmel` (no train/serve skew), is computed
once per recording for the whole run, every epoch and fold (`trainer.features`: about as much
memory again at the default 32 bands per 32-sample hop); a batch of windows is one gather of
its rows, augmented on the batch at once in the feature domain (`Augmenter`).
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
from trainer.features import FeatureStore

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

NOISE_BANK_SECONDS = 10.0
"""Unit white noise whose log-mel rows the noise augmentation draws from, s (any window of it)."""


class Augmenter:
    """Random gain, white noise and background mixing, and SpecAugment masks, on log-mel windows.

    Gain, noise and background act on a batch's mel energies (`exp(features) - log_offset`):
    a gain g scales them by g**power, exactly what it does to the waveform's spectrum. Noise
    and background add their own mel energies (rows of unit white noise, or of a background
    recording, computed once), at the level drawn against the window's RMS: power-domain
    mixing, which leaves out the cross term of window and noise (zero on average). The order is
    the waveform path's: background, then noise against the mix, then gain.
    """

    def __init__(
        self,
        config: AugmentConfig,
        background: list[np.ndarray],
        spec: LogMelSpec,
        window_samples: int,
    ) -> None:
        self.config, self.spec = config, spec
        rate = spec.sample_rate_hz
        unit = np.random.default_rng(0).standard_normal(
            round(NOISE_BANK_SECONDS * rate) + window_samples
        )
        self.noise = FeatureStore([unit.astype(np.float32)], spec, window_samples, 0)
        # A background shorter than a window is repeated end to end until it is one.
        tiled = [np.tile(b, -(-window_samples // len(b))) for b in background if len(b)]
        self.background = FeatureStore(tiled, spec, window_samples, 0) if tiled else None

    def spectra(self, f: np.ndarray, rms: np.ndarray, rng: np.random.Generator) -> None:
        """Gain, noise and background on (n, frames, mels) features in place; `rms` per window."""
        c, n = self.config, f.shape[0]
        mixes: list[tuple[FeatureStore, np.ndarray, np.ndarray, np.ndarray]] = []
        mean_square = np.square(rms)  # of the mix so far, per window
        if self.background is not None and c.background_probability > 0:
            chosen = np.flatnonzero(rng.random(n) < c.background_probability)
            rows, scale, added = _draw(self.background, rms[chosen], c.background_snr_db, rng)
            mixes.append((self.background, chosen, rows, scale))
            mean_square[chosen] += np.square(added)  # uncorrelated: mean squares add
        if c.noise_probability > 0:
            chosen = np.flatnonzero(rng.random(n) < c.noise_probability)
            rows, scale, _ = _draw(self.noise, np.sqrt(mean_square[chosen]), c.noise_snr_db, rng)
            mixes.append((self.noise, chosen, rows, scale))
        gain_db = rng.uniform(-c.gain_db, c.gain_db, size=n) if c.gain_db > 0 else None
        if gain_db is None and not any(len(chosen) for _, chosen, _, _ in mixes):
            return
        power, offset = float(self.spec.power), np.float32(self.spec.log_offset)
        energy = np.maximum(np.exp(f) - offset, 0.0)
        for store, chosen, rows, scale in mixes:
            mixed = np.maximum(np.exp(store.windows(rows)) - offset, 0.0)
            energy[chosen] += mixed * _per_window(scale**power)
        if gain_db is not None:
            energy *= _per_window(np.power(10.0, gain_db / 20) ** power)
        np.log(energy + offset, out=f)

    def features(self, f: np.ndarray, rng: np.random.Generator) -> None:
        """SpecAugment (n, frames, mels) features in place: masks set to the window's mean."""
        c = self.config
        if not (c.time_masks or c.freq_masks):
            return
        n, frames, mels = f.shape
        means = f.mean(axis=(1, 2))
        masked = np.zeros(f.shape, dtype=bool)
        for count, widest, axis, size in (
            (c.time_masks, c.time_mask_frames, 1, frames),
            (c.freq_masks, c.freq_mask_bands, 2, mels),
        ):
            steps = np.arange(size)
            for _ in range(count):
                width = rng.integers(0, min(widest, size) + 1, size=n)
                start = (rng.random(n) * (size - width + 1)).astype(np.int64)
                inside = (steps >= start[:, None]) & (steps < (start + width)[:, None])
                masked |= np.expand_dims(inside, 3 - axis)
        np.copyto(f, np.broadcast_to(means[:, None, None], f.shape), where=masked)


def _draw(
    store: FeatureStore, rms: np.ndarray, level_db: list[float], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each of len(rms) windows: the rows of a random window of `store`, the amplitude
    scale that puts it `level_db` (drawn uniformly in [low, high]) below the window's RMS, and
    the RMS it then has."""
    n = len(rms)
    signal = rng.integers(len(store.row_count), size=n)
    room = store.row_count[signal] - store.frames + 1
    rows = store.row_base[signal] + (rng.random(n) * room).astype(np.int64)
    low, high = level_db
    level = rng.uniform(low, high, size=n)
    added = rms / 10 ** (level / 20)
    return rows, added / store.rms(signal, rows), added


def _per_window(values: np.ndarray) -> np.ndarray:
    return values.astype(np.float32)[:, None, None]


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
    """Draws training windows from examples; gives fixed validation windows.

    All randomness comes from the generator passed in, so a seed fixes every window. A window
    starts on the frame grid of its recording's features (`trainer.features`).
    """

    def __init__(
        self,
        examples: list[Example],
        features: FeatureStore,
        config: TrainConfig,
        augmenter: Augmenter,
    ) -> None:
        if not examples:
            raise DataError("no annotations to draw training windows from")
        self.examples, self.features, self.config, self.augmenter = (
            examples,
            features,
            config,
            augmenter,
        )
        self.signal = np.array([features.index[e.annotation.recording] for e in examples])
        self.starts = np.array([e.annotation.start_seconds for e in examples])
        self.durations = np.array([e.annotation.duration_seconds for e in examples])
        self.targets = np.stack([e.target for e in examples])
        groups = np.array([e.group for e in examples])
        # Examples sorted by group, and where each group's run begins: a balanced draw of
        # (group, share of it) is then one index op.
        self.by_group = np.argsort(groups, kind="stable")
        _, self.group_first, self.group_size = np.unique(
            groups[self.by_group], return_index=True, return_counts=True
        )

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """`n` example indices and window centres in seconds, before any augmentation shift."""
        if self.config.windows.balance:
            group = rng.integers(len(self.group_size), size=n)
            pick = (rng.random(n) * self.group_size[group]).astype(np.int64)
            chosen = self.by_group[self.group_first[group] + pick]
        else:
            chosen = rng.integers(len(self.examples), size=n)
        inside = rng.random(n) * self.durations[chosen]
        jitter = rng.uniform(-1.0, 1.0, size=n) * self.config.windows.point_jitter
        is_point = self.durations[chosen] == 0
        centres = self.starts[chosen] + inside + is_point * jitter * self.config.window_seconds
        return chosen, centres

    def rows(self, chosen: np.ndarray, centres_seconds: np.ndarray) -> np.ndarray:
        """Global feature rows where the windows centred on these times (of these examples)
        start, on the frame grid."""
        rate, half = self.features.spec.sample_rate_hz, self.config.window_samples // 2
        first = np.round(centres_seconds * rate).astype(np.int64) - half
        return self.features.starts(self.signal[chosen], first)

    def batch(
        self, n: int, rng: np.random.Generator, *, augment: bool = True
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features (n, frames, mels) and targets (n, labels) of `n` freshly drawn windows."""
        chosen, centres = self.draw(n, rng)
        shift = self.config.augment.shift_seconds
        if augment and shift > 0:
            centres = centres + rng.uniform(-shift, shift, size=n)
        rows = self.rows(chosen, centres)
        features = self.features.windows(rows)
        if augment:
            self.augmenter.spectra(features, self.features.rms(self.signal[chosen], rows), rng)
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
        chosen = np.repeat(np.arange(len(self.examples)), k)
        features = self.features.windows(self.rows(chosen, centres))
        return features, np.repeat(self.targets, k, axis=0)


def recording_features(audio: Audio, spec: LogMelSpec) -> FeatureStore:
    """The log-mel of each of `audio`'s recordings, computed once, padded as `Audio` pads."""
    signals = [
        audio.samples[audio.offsets[p] : audio.offsets[p] + n] for p, n in audio.lengths.items()
    ]
    return FeatureStore(
        signals, spec, audio.window_samples, audio.window_samples, list(audio.lengths)
    )
