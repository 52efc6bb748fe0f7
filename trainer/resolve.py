"""What a training config leaves to the data, filled in once the recordings are known: the rate,
the labels, the frontend's frame sizes, the hop and the merge gap (counted in hops); and the
warning for mel bands spread badly over a high rate."""

from __future__ import annotations

import math
from dataclasses import replace

from edge.errors import ConfigError
from edge.model.frontend import LogMelSpec, mel_band_edges_hz
from trainer.config import BACKGROUND_NAMES, TrainConfig

# Frame sizes derived from the sample rate when not given: the power of two nearest 25.6 ms of
# audio (64 samples at 2500 Hz, 512 at 16 kHz) and a hop of 1/16 of it (4 and 32 samples), so
# a 0.2 s window holds about 100 frames at any rate.
_FFT_TARGET_SECONDS = 0.0256
_HOPS_PER_FFT = 16
# The default merge gap, in hops. The edge merges an off-spell of n windows when n hops are
# strictly less than the gap (edge.detection.events), so 2.5 hops bridges off-spells of one or two
# windows with half a hop of margin either side. (A gap of 2 hops bridges only one window,
# which the 3-window median already removes: on the fly-song recording it changed nothing.)
_MERGE_GAP_HOPS = 2.5
LOW_BAND_SHARE = 0.1
"""A warning when half the mel bands lie below this share of Nyquist: the mel scale spends
its bands on low frequencies, right for birds at 44.1 kHz, wrong for bats at 384 kHz."""


def mel_spread_warning(spec: LogMelSpec) -> str | None:
    """A line for the user when half the mel bands sit low in the spectrum, else None."""
    edges = mel_band_edges_hz(spec)
    middle = float(edges[len(edges) // 2])
    nyquist = spec.sample_rate_hz / 2
    if middle >= LOW_BAND_SHARE * nyquist:
        return None
    return (
        f"warning: half of the {spec.n_mels} mel bands lie below {middle / 1000:.3g} kHz of"
        f" the {nyquist / 1000:.3g} kHz at {spec.sample_rate_hz} Hz; for sounds high in the"
        " spectrum (ultrasound) raise features.fmin_hz towards their lowest frequency"
    )


def resolve(config: TrainConfig, sample_rate_hz: int, labels: list[str]) -> TrainConfig:
    """Fill in what depends on the data: rate, labels, frame sizes, hop, merge gap; check them.

    `sample_rate_hz` is the recordings' rate (used when the config gives none) and `labels`
    the labels found (used when the config lists none). Raises ConfigError naming the key.
    """
    rate = config.sample_rate_hz or sample_rate_hz
    f = config.features
    n_fft = f.n_fft or 2 ** max(3, round(math.log2(_FFT_TARGET_SECONDS * rate)))
    hop_length = f.hop_length or max(1, n_fft // _HOPS_PER_FFT)
    features = replace(f, n_fft=n_fft, win_length=f.win_length or n_fft, hop_length=hop_length)
    kept = list(config.labels or labels)
    background = config.background
    if background is None:  # the names this project gives "nothing of interest"
        background = [label for label in kept if label in BACKGROUND_NAMES]
    missing = [label for label in background if label not in kept]
    if missing:
        raise ConfigError(
            f"trainer config: background: {', '.join(missing)} not among the labels"
            f" ({', '.join(kept)})"
        )
    resolved = replace(
        config,
        sample_rate_hz=rate,
        labels=kept,
        background=background,
        features=features,
    )
    spec_problems = resolved.frontend.validate()
    if spec_problems:
        raise ConfigError("trainer config: features: " + "; ".join(spec_problems))
    window = resolved.window_samples
    if window < n_fft:
        raise ConfigError(
            f"trainer config: window_seconds {config.window_seconds} is {window} samples at"
            f" {rate} Hz, shorter than n_fft ({n_fft})"
        )
    if config.hop_seconds is None:
        hops = max(1, round(window / 4 / hop_length))
        hop_seconds = hops * hop_length / rate
    else:
        hop_seconds = config.hop_seconds
        hop = round(hop_seconds * rate)
        if hop < 1 or hop % hop_length:
            raise ConfigError(
                f"trainer config: hop_seconds {hop_seconds} is {hop} samples at {rate} Hz, not a"
                f" multiple of the frame hop ({hop_length} samples); try"
                f" {max(1, round(hop / hop_length)) * hop_length / rate:g}"
            )
    events = config.events
    if events.merge_gap_seconds is None:
        # Rounded to the microsecond so the manifest reads 0.128, not 0.12800000000000003.
        merge_gap_seconds = round(_MERGE_GAP_HOPS * hop_seconds, 6)
        events = replace(events, merge_gap_seconds=merge_gap_seconds)
    return replace(resolved, hop_seconds=hop_seconds, events=events)
