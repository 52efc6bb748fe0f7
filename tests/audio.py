"""Synthetic audio for tests: tones, noise, tone events in noise, WAV writing, and measurements.

Every generator returns float32 at full scale ±1.0 and is deterministic (seeded), so tests can
assert exact numbers. Import as `from tests.audio import tone, noise, ...`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

RAMP_SECONDS = 0.005
"""Raised-cosine fade at each end of a tone event, so onsets do not click (broadband energy)."""


def tone(freq_hz: float, seconds: float, sr: int, amplitude: float = 0.5) -> np.ndarray:
    """A sine of `freq_hz` and peak `amplitude`, `round(seconds * sr)` samples, starting at phase 0.

    Its RMS is amplitude / sqrt(2).
    """
    n = round(seconds * sr)
    t = np.arange(n, dtype=np.float64) / sr
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def noise(seconds: float, sr: int, amplitude: float = 0.05, seed: int = 0) -> np.ndarray:
    """White Gaussian noise with RMS (standard deviation) `amplitude`, `round(seconds * sr)` long.

    Not clipped: keep `amplitude` below ~0.2 if the result must stay within ±1.0.
    """
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(round(seconds * sr))).astype(np.float32)


def tone_events(
    sr: int,
    seconds: float,
    events: list[tuple[float, float, float]],
    noise_amplitude: float = 0.01,
    tone_amplitude: float = 0.5,
    seed: int = 0,
) -> np.ndarray:
    """`seconds` of noise (RMS `noise_amplitude`) with tones added at `events`.

    Each event is (start_s, end_s, freq_hz); its tone has peak `tone_amplitude` and 5 ms
    raised-cosine ramps inside [start_s, end_s], so the event's full-level part is
    [start_s + 5 ms, end_s - 5 ms]. Events may overlap (they add). Events reaching past the end
    are cut at the end.
    """
    signal = noise(seconds, sr, noise_amplitude, seed).astype(np.float64)
    total = len(signal)
    for start_s, end_s, freq_hz in events:
        if not 0 <= start_s < end_s:
            raise ValueError(f"event ({start_s}, {end_s}, {freq_hz}) needs 0 <= start < end")
        first = round(start_s * sr)
        last = min(round(end_s * sr), total)
        if first >= total:
            continue
        n = last - first
        t = np.arange(n, dtype=np.float64) / sr
        burst = tone_amplitude * np.sin(2 * np.pi * freq_hz * t)
        ramp = min(round(RAMP_SECONDS * sr), n // 2)
        if ramp > 0:
            fade = 0.5 - 0.5 * np.cos(np.pi * np.arange(ramp) / ramp)
            burst[:ramp] *= fade
            burst[n - ramp :] *= fade[::-1]
        signal[first:last] += burst
    return signal.astype(np.float32)


def write_wav(path: str | Path, samples: np.ndarray, sr: int, subtype: str = "PCM_16") -> Path:
    """Write `samples` ((n,) or (n, channels), full scale ±1.0) and return the path.

    The container follows the extension (.wav, .flac, ...); `subtype` is the sample format:
    "PCM_16" (default; values beyond ±1.0 clip), "PCM_24", or "FLOAT" for exact float32.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, samples, sr, subtype=subtype)
    return path


# --- measurements -----------------------------------------------------------------------------


def rms(samples: np.ndarray) -> float:
    """Root mean square over all samples (full scale 1.0)."""
    x = np.asarray(samples, dtype=np.float64)
    return float(np.sqrt(np.mean(x * x)))


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB relative to full scale 1.0 (a full-scale sine is -3.01 dBFS)."""
    return 20.0 * float(np.log10(max(rms(samples), 1e-12)))


def peak_frequency_hz(samples: np.ndarray, sr: int) -> float:
    """Frequency of the largest FFT magnitude (Hann window, DC excluded), refined by parabola.

    Resolution before refinement is sr / len(samples); the parabolic fit on log magnitudes
    brings a clean tone to well under a tenth of a bin.
    """
    x = np.asarray(samples, dtype=np.float64)
    x = x - x.mean()
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    spectrum[0] = 0.0
    k = int(np.argmax(spectrum))
    offset = 0.0
    if 0 < k < len(spectrum) - 1:
        a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-300)
        denominator = a - 2 * b + c
        if denominator != 0:
            offset = 0.5 * (a - c) / denominator
    return (k + offset) * sr / len(x)
