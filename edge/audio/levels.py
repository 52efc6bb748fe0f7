"""Per-second sound levels: the soundscape view acousticians use, beside the model's scores.

Every second of a stream gets a broadband level and, optionally, octave or third-octave band
levels. Seconds are the same as in edge/detection/seconds.py: second `k` covers stream offsets
[phase + k, phase + k + 1) s, phase = -anchor.timestamp() % 1 (0 without an anchor), so level
`k` belongs next to the per-second row `k` (the first and last seconds may be partial).

Units and conventions
---------------------
- **dBFS** (no calibration): 10·log10(mean(x²)) with x the samples at full scale ±1.0, i.e. the
  RMS level re a full-scale *DC* value of 1.0. A full-scale sine (peak 1.0) reads -3.01 dBFS and
  a 1 kHz sine of peak 0.5 reads -9.03 dBFS. (AES17 would add 3.01 dB so a full-scale sine
  reads 0; we do not.) Digital silence is floored at -200 dBFS (mean square 1e-20), so every
  value is finite and fits JSON.
- **Calibrated dB** when `sensitivity_db` is set: sound pressure level re 20 µPa in air, or
  re 1 µPa in water. With
      S   sensitivity of the microphone in dB re 1 V/Pa (dBV/Pa), or of the hydrophone in
          dB re 1 V/µPa (negative numbers, e.g. -38 and -180),
      G   preamplifier gain between transducer and ADC, dB,
      Vfs the ADC input voltage (peak, volts) that reads as digital full scale 1.0,
  a digital RMS level of D dBFS is a voltage of D + 20·log10(Vfs) dBV at the ADC, so
  D + 20·log10(Vfs) - G dBV at the transducer and a pressure of D + 20·log10(Vfs) - G - S
  dB re 1 Pa (air) or re 1 µPa (water). Re the reference pressure:
      L = D + 20·log10(Vfs) - G - S - 20·log10(p_ref / p_unit)
  with p_ref / p_unit = 20e-6 Pa / 1 Pa in air (so +93.98 dB) and 1 µPa / 1 µPa in water (0 dB).
  Worked example (air): S = -38 dBV/Pa, G = 20 dB, Vfs = 1 V. A 94 dB SPL tone (1 Pa RMS) makes
  10^(-38/20) = 12.6 mV RMS at the microphone, 126 mV after the preamp, 0.126 RMS digital,
  i.e. -18.0 dBFS; L = -18.0 + 0 - 20 + 38 + 93.98 = 93.98 dB re 20 µPa.

Bands (IEC 61260-1, base 10)
----------------------------
Exact mid-band frequencies fm = 1000 Hz · 10^(3x/10b) for b = 1 (octave) or 3 (third-octave),
x integer; band edges fm · 10^(±3/20b). Bands are named by their nominal centre ("31.5", "1000",
"12500"). A band is kept when its nominal centre is within [band_min_hz, band_max_hz] and the
whole band lies below the Nyquist frequency (as sound level meters do: at 48 kHz third-octaves
stop at 20 kHz, octaves at 16 kHz). The kept bands tile [lowest lower edge, highest upper
edge] without gaps or overlaps, so their powers add up to the broadband power minus whatever
lies outside that range (for white noise at 48 kHz and third-octaves from 20 Hz, 0.30 dB;
for audio from an anti-aliased ADC, usually almost nothing).

Method: each completed second is one real FFT of `rate_hz` points (1 Hz bins, rectangular
window, missing samples zero-filled) and each band's level is the power of the bins with
lower edge <= f < upper edge, scaled by Parseval's theorem to the mean square over the samples
that arrived. These are brick-wall bands on 1 Hz bins: cheap (one FFT a second, no per-sample
filter state), exact energy bookkeeping, but not a certified IEC 61260 class-1 filter bank;
tones within ~1 Hz of a band edge spill into the neighbour.

Interface (one `LevelMeter` per stream, on the processing thread)::

    meter = LevelMeter(info.source_rate_hz, settings, phase_seconds=aggregator.phase)
    meter.push(mono)        # source-rate float32 mono audio, any block sizes
    meter.gap(n_frames)     # n_frames of the stream missing
    meter.pop(k + 1)        # {second: Levels} for completed seconds < k + 1
    meter.finish()          # at the stream end: the last partial second completes; pop again

Feed the meter each block (and gap) before the Analyzer gets it, and call `finish()` before
`Analyzer.end()`: then second k's levels are always complete by the time the per-second row k
is emitted, and a sink can `pop(k + 1)` as it writes row k.

`push` costs one copy per block; the FFT runs once per completed second. Streaming and offline
results are identical for any block sizes. Seconds with no audio at all (inside a gap) are
absent from what `pop` returns; partly missing seconds are measured on the audio that arrived
(`Levels.audio_seconds` says how much).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from edge.errors import ConfigError
from edge.records import Levels
from edge.schema import field

FLOOR_MEAN_SQUARE = 1e-20  # -200 dBFS: silence stays a finite number
MAX_PENDING_SECONDS = 3600  # completed seconds kept for `pop`; older ones are dropped
AIR_REFERENCE_DB = 20 * math.log10(20e-6)  # 20 µPa re 1 Pa: -93.98 dB
NOMINAL_MANTISSAS = (1.0, 1.25, 1.6, 2.0, 2.5, 3.15, 4.0, 5.0, 6.3, 8.0)  # IEC 61260 preferred
MIN_BAND_HZ = 10.0  # below this, bands hold too few 1 Hz bins to mean much


@dataclass(frozen=True)
class LevelSettings:
    enabled: bool = field(False, help="compute per-second sound levels")
    bands: Literal["none", "octave", "third-octave"] = field(
        "none", help="band levels beside the broadband level: none, octave or third-octave"
    )
    band_min_hz: float = field(
        20.0, ge=MIN_BAND_HZ, le=1_000_000, help="lowest band kept, by nominal centre frequency, Hz"
    )
    band_max_hz: float | None = field(
        None,
        gt=0,
        le=1_000_000,
        help="highest band kept, by nominal centre, Hz (null: up to the Nyquist frequency)",
    )
    medium: Literal["air", "water"] = field(
        "air", help="air: dB re 20 µPa, sensitivity in dBV/Pa; water: dB re 1 µPa, dB re 1 V/µPa"
    )
    sensitivity_db: float | None = field(
        None,
        help="microphone sensitivity, dB re 1 V/Pa (air), or hydrophone sensitivity, dB re"
        " 1 V/µPa (water); null: levels in dBFS",
    )
    gain_db: float = field(
        0.0, ge=-200, le=200, help="preamplifier gain between transducer and ADC, dB"
    )
    adc_full_scale_volts: float | None = field(
        None, gt=0, le=1000, help="ADC input voltage (peak, V) that reads as digital full scale 1.0"
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.band_max_hz is not None and self.band_max_hz < self.band_min_hz:
            message = f"must be >= band_min_hz ({self.band_min_hz}), got {self.band_max_hz}"
            out.append(("band_max_hz", message))
        s = self.sensitivity_db
        if s is not None:
            if self.adc_full_scale_volts is None:
                out.append(("adc_full_scale_volts", "needed with sensitivity_db (e.g. 1.0)"))
            # Air sensitivities (dBV/Pa) and water ones (dB re 1 V/µPa) differ by 120 dB, so a
            # value in the wrong range is almost surely the wrong medium.
            if self.medium == "air" and not -100.0 <= s <= 20.0:
                message = f"{s} dBV/Pa is not a microphone's; for a hydrophone set medium: water"
                out.append(("sensitivity_db", message))
            if self.medium == "water" and not -250.0 <= s <= -100.0:
                message = f"{s} dB re 1 V/µPa is not a hydrophone's; for a microphone: medium: air"
                out.append(("sensitivity_db", message))
        return out

    @property
    def offset_db(self) -> float:
        """Added to dBFS to give the reported level: 0 uncalibrated."""
        if self.sensitivity_db is None or self.adc_full_scale_volts is None:
            return 0.0
        return calibration_offset_db(
            self.sensitivity_db, self.gain_db, self.adc_full_scale_volts, self.medium
        )

    @property
    def unit(self) -> str:
        """What the numbers are: dBFS, dB re 20 µPa or dB re 1 µPa."""
        if self.sensitivity_db is None:
            return "dBFS"
        return "dB re 20 µPa" if self.medium == "air" else "dB re 1 µPa"


UNIT_COLUMNS = {"dBFS": "dbfs", "dB re 20 µPa": "db_re_20upa", "dB re 1 µPa": "db_re_1upa"}


def level_columns(unit: str, bands: tuple[str, ...] | list[str]) -> list[str]:
    """CSV column names: the broadband level (`dbfs`, `db_re_20upa`, `db_re_1upa`), then one
    per band (`dbfs_31.5hz`, ...)."""
    name = UNIT_COLUMNS[unit]
    return [name, *(f"{name}_{band}hz" for band in bands)]


def calibration_offset_db(
    sensitivity_db: float,
    gain_db: float,
    adc_full_scale_volts: float,
    medium: Literal["air", "water"],
) -> float:
    """dB to add to a dBFS level for sound pressure level (see the module docstring)."""
    reference = AIR_REFERENCE_DB if medium == "air" else 0.0
    return 20 * math.log10(adc_full_scale_volts) - gain_db - sensitivity_db - reference


@dataclass(frozen=True)
class Band:
    name: str  # nominal centre, Hz
    centre_hz: float  # exact mid-band frequency
    lower_hz: float
    upper_hz: float


def bands_for(settings: LevelSettings, rate_hz: int) -> list[Band]:
    """The IEC 61260 base-10 bands kept at this sample rate (empty when bands are off)."""
    if settings.bands == "none":
        return []
    b = 1 if settings.bands == "octave" else 3
    nyquist = rate_hz / 2
    top = math.inf if settings.band_max_hz is None else settings.band_max_hz
    out = []
    # x counts third-octaves from 1 kHz; an octave band is every third one.
    step = 3 if b == 1 else 1
    x = step * math.floor(10 * math.log10(settings.band_min_hz / 1000) / step) - step
    while True:
        third = x  # index in third-octaves
        centre = 1000.0 * 10 ** (third / 10)
        half = 10 ** (3 / (20 * b))
        lower, upper = centre / half, centre * half
        nominal = NOMINAL_MANTISSAS[third % 10] * 10 ** (3 + third // 10)
        if upper > nyquist * (1 + 1e-12) or nominal > top * (1 + 1e-9):
            break
        if nominal >= settings.band_min_hz * (1 - 1e-9):
            out.append(Band(_name(nominal), centre, lower, upper))
        x += step
    return out


def _first_bin(frequency_hz: float) -> int:
    """The first 1 Hz FFT bin at or above `frequency_hz`."""
    return math.ceil(frequency_hz - 1e-9)


def _name(nominal_hz: float) -> str:
    rounded = round(nominal_hz, 6)
    return str(int(rounded)) if rounded == int(rounded) else f"{rounded:g}"


class LevelMeter:
    """Per-second broadband and band levels of one stream's source-rate mono audio.

    `phase_seconds` is the stream's second phase (SecondAggregator.phase): second k holds
    samples [c0 + k·rate, c0 + (k+1)·rate) with c0 = ceil(phase·rate), the samples whose time
    falls in [phase + k, phase + k + 1).
    """

    def __init__(self, rate_hz: int, settings: LevelSettings, phase_seconds: float = 0.0) -> None:
        if rate_hz < 1:
            raise ValueError(f"LevelMeter: rate_hz must be >= 1, got {rate_hz}")
        self.rate_hz = int(rate_hz)
        self.settings = settings
        self.unit = settings.unit
        self._offset_db = settings.offset_db
        self.bands = bands_for(settings, self.rate_hz)
        if settings.bands != "none" and not self.bands:
            raise ConfigError(
                f"levels: no {settings.bands} band between {settings.band_min_hz:g} Hz and the"
                f" Nyquist frequency ({self.rate_hz / 2:g} Hz) of the {self.rate_hz} Hz input"
            )
        self.band_names = [band.name for band in self.bands]
        n_bins = self.rate_hz // 2 + 1
        # rfft keeps one side of the spectrum: every bin but DC (and Nyquist, for even lengths)
        # stands for two, so it counts twice in Parseval's sum.
        self._weights = np.full(n_bins, 2.0)
        self._weights[0] = 1.0
        if self.rate_hz % 2 == 0:
            self._weights[-1] = 1.0
        # Bin j is j Hz (an FFT of rate_hz points). Band i holds bins [first_i, first_{i+1}),
        # so adjacent bands share their edge exactly; the top band stops at its upper edge.
        firsts = [_first_bin(band.lower_hz) for band in self.bands]
        self._bins_from = firsts[0] if firsts else 0
        self._bins_to = _first_bin(self.bands[-1].upper_hz) if self.bands else 0
        self._band_starts = np.array([f - self._bins_from for f in firsts], dtype=np.intp)

        c0 = math.ceil(round(phase_seconds * self.rate_hz, 6))
        self._c0 = c0 % self.rate_hz
        self._buffer = np.zeros(self.rate_hz, dtype=np.float64)  # the current second
        self._position = 0  # stream samples so far, gaps included
        self._bin = -1 if self._c0 > 0 else 0  # the second being filled
        self._bin_start = self._c0 - self.rate_hz if self._c0 > 0 else 0  # its first sample
        self._valid = 0  # samples received in the current second
        self._done: dict[int, Levels] = {}

    def push(self, mono: np.ndarray) -> None:
        """Source-rate mono float audio (1-D), continuing the stream."""
        n = len(mono)
        i = 0
        while i < n:
            at = self._position - self._bin_start
            take = min(self.rate_hz - at, n - i)
            self._buffer[at : at + take] = mono[i : i + take]
            self._valid += take
            self._position += take
            i += take
            if self._position - self._bin_start == self.rate_hz:
                self._complete()

    def gap(self, n_frames: int) -> None:
        """`n_frames` source-rate frames are missing: they count for time, not for level."""
        remaining = max(0, int(n_frames))
        while remaining > 0:
            at = self._position - self._bin_start
            take = min(self.rate_hz - at, remaining)
            self._position += take  # the buffer is already zero there (cleared per second)
            remaining -= take
            if self._position - self._bin_start == self.rate_hz:
                self._complete()

    def finish(self) -> None:
        """The stream ended: the partial second in progress (if it had audio) completes."""
        if self._position > self._bin_start:
            self._complete()

    @property
    def filling(self) -> int:
        """The second being filled now: every second before it is complete."""
        return self._bin

    def pop(self, until_bin: int) -> dict[int, Levels]:
        """Completed seconds with index < `until_bin`, removed from the meter, in time order."""
        ready = [k for k in self._done if k < until_bin]
        return {k: self._done.pop(k) for k in ready}

    def _complete(self) -> None:
        if self._valid > 0:
            self._done[self._bin] = self._measure()
            # A memory bound: Evidence pops every second, so only a meter nobody reads gets here.
            if len(self._done) > MAX_PENDING_SECONDS:
                del self._done[next(iter(self._done))]
        self._buffer.fill(0.0)
        self._valid = 0
        self._bin += 1
        self._bin_start += self.rate_hz

    def _measure(self) -> Levels:
        n = self._valid
        x = self._buffer
        # einsum, not np.dot: BLAS dot of 48 000 doubles was measured 40x slower here, its
        # threads contending on 2 cores; einsum's own loop is steady (~20 µs).
        broadband = float(np.einsum("i,i->", x, x)) / n
        bands: dict[str, float] = {}
        if self.bands:
            spectrum = np.fft.rfft(x)
            power = spectrum.real**2 + spectrum.imag**2
            power *= self._weights
            # Parseval: sum x² = sum(weights·|X|²) / N, and the level is the mean over n samples.
            used = power[self._bins_from : self._bins_to]
            sums = np.add.reduceat(used, self._band_starts)[: len(self.bands)]
            sums /= self.rate_hz * n
            for band, mean_square in zip(self.bands, sums.tolist(), strict=True):
                bands[band.name] = self._db(mean_square)
        return Levels(self._db(broadband), bands, n / self.rate_hz)

    def _db(self, mean_square: float) -> float:
        return 10 * math.log10(max(mean_square, FLOOR_MEAN_SQUARE)) + self._offset_db
