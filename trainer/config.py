"""The training configuration: typed, frozen, validated at load, every default documented.

Read with `edge.schema` like the edge's config, so a bad `train.yaml` names the key, the line and
the value. Every key has a default; an empty file trains with them:

    labels: [mel-pulse, mel-sine, ambient]
    mode: exclusive
    training: {epochs: 40, seed: 1}

Some defaults depend on the data and are filled in by `trainer.resolve` once the recordings
are known (`sample_rate_hz`, the frontend's frame sizes, `hop_seconds`, `labels`, and
`events.merge_gap_seconds`, which is counted in hops); the run folder keeps the resolved file
(`<run>/train.yaml`), which trains the same model again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from edge import schema
from edge.errors import ConfigError
from edge.model.frontend import LogMelSpec
from edge.model.rules import EventTiming, agreement_problems
from edge.schema import field, like
from edge.yamlfile import Where, parse_yaml, read_text
from trainer.model import ModelConfig

# Labels taken as background when the config names none: the fly-song model's `ambient`, and
# `background`, the name for unannotated audio.
BACKGROUND_NAMES = ("background", "ambient")


@dataclass(frozen=True)
class FeaturesConfig:
    """Log-mel features, as the edge computes them (`edge.model.frontend.logmel`): the fields of
    a LogMelSpec but its rate, under the same names."""

    n_fft: int | None = field(
        None, help="FFT size, samples (null: the power of two nearest 25.6 ms at the rate)"
    )
    win_length: int | None = field(None, help="analysis window, samples, <= n_fft (null: n_fft)")
    hop_length: int | None = field(None, help="samples between frames (null: n_fft / 16)")
    n_mels: int = field(32, help="mel bands")
    window: Literal["hann", "hamming", "rect"] = field("hann", help="analysis window shape")
    fmin_hz: float = field(50.0, help="lowest mel frequency, Hz")
    fmax_hz: float | None = field(None, help="highest mel frequency, Hz (null: Nyquist)")
    power: float = field(2.0, help="1: magnitude, 2: power spectrum")
    log_offset: float = field(1e-6, help="features are ln(mel + log_offset)")
    mel_scale: Literal["htk", "slaney"] = field("htk", help="mel formula")
    norm: Literal["slaney"] | None = field(None, help="mel filter normalisation")


@dataclass(frozen=True)
class WindowsConfig:
    """How training windows are drawn from the annotations."""

    point_jitter: float = field(
        0.25,
        help="point annotations: window centre drawn within +-this fraction of a window",
    )
    balance: bool = field(
        True,
        help="draw each label (and each not_ label) equally often; false: each annotation",
    )
    windows_per_epoch: int = field(2048, help="training windows drawn per epoch")
    validation_windows: int = field(
        5,
        help="validation windows per annotation: spread over a range, or over the jitter of a"
        " point",
    )
    calibration_windows: int = field(
        256, help="training windows kept in the run for int8 calibration at export"
    )


@dataclass(frozen=True)
class AugmentConfig:
    """Random changes to each training window (never to validation windows)."""

    gain_db: float = field(6.0, ge=0, zero="off", help="random gain within +-this, dB (0: off)")
    noise_probability: float = field(
        0.5, ge=0, le=1, help="share of windows that get white noise added"
    )
    noise_snr_db: list[float] = field(
        factory=lambda: [10.0, 40.0],
        help="signal-to-noise ratio of the added noise, dB: [low, high], drawn uniformly",
    )
    shift_seconds: float = field(
        0.0,
        ge=0,
        zero="off",
        help="extra random shift of every window centre within +-this, s (0: off)",
    )
    background: str | None = field(
        None, help="folder of recordings to mix in (null: none); relative to the config file"
    )
    background_probability: float = field(
        0.5, ge=0, le=1, help="share of windows that get background mixed"
    )
    background_snr_db: list[float] = field(
        factory=lambda: [0.0, 20.0],
        help="window-to-background level ratio, dB: [low, high], drawn uniformly",
    )
    time_masks: int = field(0, ge=0, help="SpecAugment: time masks per window (0: off)")
    time_mask_frames: int = field(8, ge=0, help="SpecAugment: widest time mask, frames")
    freq_masks: int = field(0, ge=0, help="SpecAugment: frequency masks per window (0: off)")
    freq_mask_bands: int = field(4, ge=0, help="SpecAugment: widest frequency mask, mel bands")

    def problems(self) -> list[tuple[str, str]]:
        out = []
        for name in ("noise_snr_db", "background_snr_db"):
            pair = getattr(self, name)
            if len(pair) != 2 or pair[0] > pair[1]:
                out.append((name, f"must be [low, high] with low <= high, got {pair}"))
        return out


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = field(40, ge=1, help="most epochs per model (early stopping may end sooner)")
    patience: int = field(
        10, ge=0, help="stop after this many epochs without a better validation macro F1 (0: never)"
    )
    batch_size: int = field(64, ge=1, help="windows per optimisation step")
    learning_rate: float = field(
        3e-3, gt=0, help="AdamW learning rate (cosine decay to 0 over epochs)"
    )
    weight_decay: float = field(1e-2, ge=0, help="AdamW weight decay")
    seed: int = field(0, help="seeds every random draw: same seed, same weights (on the CPU)")
    device: Literal["auto", "cpu", "cuda"] = field(
        "auto", help="auto: CUDA with mixed precision when a GPU is visible, else the CPU"
    )
    threads: int | None = field(None, ge=1, help="CPU threads for torch (null: torch's default)")


@dataclass(frozen=True)
class ValidationConfig:
    split: Literal["share", "recordings", "blocks"] = field(
        "share",
        help="share: hold out a share of each label's annotations; recordings: hold out whole"
        " recordings (tests generalisation to new recordings); blocks: hold out stretches of"
        " block_seconds within each recording (for one or few long recordings)",
    )
    block_seconds: float = field(
        30.0, gt=0, help="split blocks: length of a held-out stretch of a recording, s"
    )
    share: float = field(
        0.2, gt=0, lt=1, help="share held out for validation, 0..1 (unused with folds > 1)"
    )
    folds: int = field(
        1,
        ge=1,
        help="k > 1: k-fold cross-validation, k models; the run keeps the best fold's model and"
        " reports the mean and spread over folds",
    )
    precision_recall_ratio: float = field(
        1.0,
        gt=0,
        help="per-label thresholds: where precision / recall is closest to this",
    )
    thresholds: Literal["auto", "out-of-fold", "validation"] = field(
        "auto",
        help="out-of-fold: per-second scores of the training recordings by models that did not"
        " train on them; validation: the validation windows; auto: out-of-fold for backbone"
        " heads and for a CNN split by recordings or blocks (README, How thresholds are chosen)",
    )
    threshold_folds: int = field(5, ge=2, help="out-of-fold thresholds of a backbone head: folds")


@dataclass(frozen=True)
class EventsConfig:
    """The event detector defaults written to the bundle's manifest (`events:`).

    The fields of `edge.model.rules.EventTiming` (their help and ranges from there), with
    defaults for a trained model, whose window scores flicker near a threshold: a 3-window
    median and a merge gap of a few hops, so one sound gives one event rather than a burst of
    fragments. The edge's config can still override each of them per label.
    """

    median_windows: int = like(EventTiming, "median_windows", 3)
    min_duration_seconds: float = like(EventTiming, "min_duration_seconds", 0.0)
    merge_gap_seconds: float | None = like(
        EventTiming,
        "merge_gap_seconds",
        help="shorter silences inside an event are merged, s (null: 2.5 hops, which bridges"
        " off-spells of one or two windows; 0.128 s at a 0.0512 s hop)",
    )
    max_duration_seconds: float = like(EventTiming, "max_duration_seconds", 0.0)
    refractory_seconds: float = like(EventTiming, "refractory_seconds", 0.0)

    def problems(self) -> list[tuple[str, str]]:
        # The edge's own check, so the trainer refuses what a device would refuse.
        return agreement_problems(self)


@dataclass(frozen=True)
class TrainConfig:
    labels: list[str] = field(
        factory=list,
        help="labels in model output order (empty: every label found, negatives excluded)",
    )
    mode: Literal["exclusive", "overlapped"] = field(
        "exclusive",
        help="exclusive: one label per window (softmax); overlapped: a yes/no per label"
        " (sigmoid), negatives from not_<label> annotations, other labels unknown",
    )
    negative_prefix: str = field("not_", help="overlapped mode: '<prefix><label>' means 'not'")
    background: list[str] | None = field(
        None,
        help="labels that mean 'none of the others': scored on the edge, never events"
        " (null: the labels named background or ambient, if any)",
    )
    dense: list[str] = field(
        factory=list,
        help="recordings whose annotations are dense (every sound of interest marked), as"
        " glob patterns of their path or name, '*' for all: their unannotated audio becomes"
        " `background` (exclusive) or not_<label> (overlapped)",
    )
    sample_rate_hz: int | None = field(
        None, gt=0, help="model sample rate, Hz (null: the recordings'); others are resampled"
    )
    window_seconds: float = field(0.2048, gt=0, help="audio span of one model input, s")
    hop_seconds: float | None = field(
        None,
        gt=0,
        help="default stride between windows on the edge, s; a multiple of the frame hop"
        " (null: about a quarter window)",
    )
    features: FeaturesConfig = field(factory=FeaturesConfig, help="log-mel features")
    windows: WindowsConfig = field(factory=WindowsConfig, help="window drawing")
    augment: AugmentConfig = field(factory=AugmentConfig, help="augmentation")
    model: ModelConfig = field(factory=ModelConfig, help="the CNN")
    training: TrainingConfig = field(factory=TrainingConfig, help="optimisation")
    validation: ValidationConfig = field(factory=ValidationConfig, help="validation")
    events: EventsConfig = field(
        factory=EventsConfig, help="event detector defaults written to the bundle"
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if len(set(self.labels)) != len(self.labels):
            out.append(("labels", "labels must be unique"))
        for label in self.labels:
            if self.negative_prefix and label.startswith(self.negative_prefix):
                message = f"{label!r} is a negative label (prefix {self.negative_prefix!r})"
                out.append(("labels", message))
        for label in self.background or []:
            if self.labels and label not in self.labels:
                out.append(("background", f"{label!r} is not one of the labels"))
        if self.mode == "overlapped" and not self.negative_prefix:
            out.append(("negative_prefix", "overlapped mode needs a prefix for negatives"))
        return out

    @property
    def task(self) -> Literal["multiclass", "multilabel"]:
        """The bundle's task: multiclass (softmax) for exclusive, multilabel (sigmoid)."""
        return "multiclass" if self.mode == "exclusive" else "multilabel"

    @property
    def frontend(self) -> LogMelSpec:
        """The log-mel spec; only on a resolved config (sample rate and frame sizes known)."""
        f = self.features
        if self.sample_rate_hz is None or f.n_fft is None or f.hop_length is None:
            raise ConfigError("trainer config: frontend asked for before the config was resolved")
        # FeaturesConfig is a LogMelSpec without the rate, whose sizes the data may fill in.
        values = {**dataclasses.asdict(f), "win_length": f.win_length or f.n_fft}
        return LogMelSpec(sample_rate_hz=self.sample_rate_hz, **values)

    @property
    def window_samples(self) -> int:
        """Samples in one model input window at the model rate (resolved config only)."""
        assert self.sample_rate_hz is not None
        return round(self.window_seconds * self.sample_rate_hz)


def load_config(path: Path | None, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """The config in `path` (None: the defaults) with dotted-key `overrides` applied.

    Overrides come from the command line (`{"training.epochs": 5}`) and are checked like the
    file's own values. A relative `augment.background` is taken from the file's folder.
    """
    data: dict[str, Any] = {}
    lines = Where.nowhere("<defaults>")
    if path is not None:
        loaded, lines = parse_yaml(read_text(path), str(path))
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of settings at the top level")
        data = loaded or {}
    config = schema.build(TrainConfig, data, lines)
    background = config.augment.background
    if path is not None and background and not Path(background).is_absolute():
        augment = replace(config.augment, background=str(path.parent / background))
        config = replace(config, augment=augment)
    if overrides:
        config = with_overrides(config, overrides)
    return config


def with_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """`config` with dotted keys set (`"training.seed": 3`), checked like a config file."""
    data = to_dict(config)
    for key, value in overrides.items():
        *parents, last = key.split(".")
        section = data
        for part in parents:
            section = section[part]
        section[last] = value
    return schema.build(TrainConfig, data, Where.nowhere("<command line>"))


def to_dict(config: TrainConfig) -> dict[str, Any]:
    """Plain data (dicts, lists, scalars) that `schema.build` turns back into `config`."""
    return dataclasses.asdict(config)


def dump(config: TrainConfig) -> str:
    """The config as YAML text, loadable with `load_config`."""
    return yaml.safe_dump(to_dict(config), sort_keys=False, default_flow_style=None, width=100)
