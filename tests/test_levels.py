"""Per-second sound levels (edge/audio/levels.py): known signals give known dB,
in the right seconds."""

from __future__ import annotations

import itertools
import math
from datetime import datetime, timezone

import numpy as np
import pytest

from edge import schema
from edge.audio.levels import LevelMeter, LevelSettings, bands_for, calibration_offset_db
from edge.detection.seconds import SecondAggregator
from edge.errors import ConfigError
from edge.records import Levels, StreamInfo
from tests.audio import noise, tone

RATE_HZ = 48000
OCTAVES = LevelSettings(enabled=True, bands="octave")
THIRDS = LevelSettings(enabled=True, bands="third-octave")


def measure(
    signal: np.ndarray, settings: LevelSettings, rate_hz: int = RATE_HZ, phase: float = 0.0
) -> dict[int, Levels]:
    """Offline: the whole signal in one push, then the stream's end."""
    meter = LevelMeter(rate_hz, settings, phase)
    meter.push(signal)
    meter.finish()
    return meter.pop(10**9)


def power_sum_db(levels_db: list[float]) -> float:
    return 10 * math.log10(sum(10 ** (db / 10) for db in levels_db))


def test_sine_levels_in_dbfs() -> None:
    # RMS re full scale 1.0: a sine of peak A reads 20·log10(A / √2).
    for amplitude, expected in ((0.5, -9.0309), (1.0, -3.0103), (0.01, -43.0103)):
        levels = measure(tone(1000.0, 3.0, RATE_HZ, amplitude), LevelSettings(enabled=True))
        assert sorted(levels) == [0, 1, 2]
        for second in levels.values():
            assert second.dbfs_or_db == pytest.approx(expected, abs=0.001)
            assert second.audio_seconds == 1.0
            assert second.bands == {}


def test_silence_is_floored_not_minus_infinity() -> None:
    levels = measure(np.zeros(RATE_HZ, dtype=np.float32), OCTAVES)
    assert levels[0].dbfs_or_db == -200.0
    assert set(levels[0].bands.values()) == {-200.0}


def test_one_khz_tone_lands_in_the_one_khz_band() -> None:
    signal = tone(1000.0, 2.0, RATE_HZ, 0.5)
    for settings, neighbours in ((OCTAVES, ("500", "2000")), (THIRDS, ("800", "1250"))):
        second = measure(signal, settings)[0]
        assert second.bands["1000"] == pytest.approx(-9.0309, abs=0.001)
        loudest = max(second.bands, key=second.bands.__getitem__)
        assert loudest == "1000"
        for name in neighbours:
            assert second.bands[name] < -100.0  # whole periods in a second: no leakage at all


def test_off_bin_tone_stays_in_its_third_octave() -> None:
    # 1234.5 Hz is not a whole number of periods per second: the rectangular window leaks,
    # but the 1250 Hz band (1122..1413 Hz) still holds all but a sliver of the power.
    second = measure(tone(1234.5, 1.0, RATE_HZ, 0.5), THIRDS)[0]
    assert second.bands["1250"] == pytest.approx(second.dbfs_or_db, abs=0.05)
    assert second.bands["1000"] < second.dbfs_or_db - 30


def test_band_levels_of_white_noise_add_up_to_the_broadband_level() -> None:
    signal = noise(2.0, RATE_HZ, 0.1, seed=3)
    for settings in (OCTAVES, THIRDS):
        bands = bands_for(settings, RATE_HZ)
        low, high = bands[0].lower_hz, bands[-1].upper_hz
        for second in measure(signal, settings).values():
            total = power_sum_db(list(second.bands.values()))
            # Flat noise: the bands hold the fraction of 0..Nyquist they cover.
            covered_db = 10 * math.log10((high - low) / (RATE_HZ / 2))
            assert total == pytest.approx(second.dbfs_or_db + covered_db, abs=0.1)
            assert second.dbfs_or_db == pytest.approx(-20.0, abs=0.05)

    # Noise as an anti-aliased ADC delivers it: nothing outside the bands' range, so the band
    # levels add up to the broadband level itself.
    bands = bands_for(THIRDS, RATE_HZ)
    spectrum = np.fft.rfft(signal.astype(np.float64).reshape(2, RATE_HZ), axis=1)
    hz = np.arange(spectrum.shape[1])
    spectrum[:, (hz < bands[0].lower_hz) | (hz >= bands[-1].upper_hz)] = 0
    limited = np.fft.irfft(spectrum, n=RATE_HZ, axis=1).reshape(-1).astype(np.float32)
    for second in measure(limited, THIRDS).values():
        total = power_sum_db(list(second.bands.values()))
        assert total == pytest.approx(second.dbfs_or_db, abs=0.01)


def test_band_names_are_iec_nominal_centres() -> None:
    names = [band.name for band in bands_for(OCTAVES, RATE_HZ)]
    assert names == ["31.5", "63", "125", "250", "500", "1000", "2000", "4000", "8000", "16000"]
    thirds = bands_for(THIRDS, 16000)
    assert [b.name for b in thirds[:4]] == ["20", "25", "31.5", "40"]
    assert thirds[-1].name == "6300"  # the 8 kHz band (7079..8913 Hz) is not whole below 8 kHz
    one_k = next(b for b in thirds if b.name == "1000")
    assert one_k.lower_hz == pytest.approx(891.25, abs=0.01)
    assert one_k.upper_hz == pytest.approx(1122.02, abs=0.01)
    for lower, upper in itertools.pairwise(thirds):
        assert upper.lower_hz == pytest.approx(lower.upper_hz)  # contiguous
    limited = LevelSettings(bands="octave", band_min_hz=100, band_max_hz=1000)
    assert [b.name for b in bands_for(limited, RATE_HZ)] == ["125", "250", "500", "1000"]


def test_no_band_fits_below_nyquist_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="Nyquist"):
        LevelMeter(8000, LevelSettings(bands="octave", band_min_hz=5000))


def test_streaming_equals_offline_for_any_blocks_and_gaps() -> None:
    rng = np.random.default_rng(11)
    rate = 16000
    signal = noise(7.3, rate, 0.05, seed=5) + tone(440.0, 7.3, rate, 0.2)
    gap_at, gap_frames = round(2.6 * rate), round(1.7 * rate)
    for settings in (LevelSettings(enabled=True), THIRDS):
        offline = LevelMeter(rate, settings, 0.37)
        offline.push(signal[:gap_at])
        offline.gap(gap_frames)
        offline.push(signal[gap_at:])
        offline.finish()
        expected = offline.pop(10**9)

        streaming = LevelMeter(rate, settings, 0.37)
        got: dict[int, Levels] = {}
        i = 0
        gapped = False
        while i < len(signal):
            if i >= gap_at and not gapped:
                streaming.gap(gap_frames)
                gapped = True
            stop = min(len(signal), i + int(rng.integers(1, 9000)))
            if i < gap_at < stop:
                stop = gap_at
            streaming.push(signal[i:stop])
            i = stop
            got.update(streaming.pop(int(rng.integers(-2, 12))))
        streaming.finish()
        got.update(streaming.pop(10**9))
        assert got == expected  # bit-identical, not just close


def test_seconds_follow_the_anchor_phase_with_partial_ends() -> None:
    rate = 8000
    anchor = datetime(2026, 11, 22, 10, 23, 14, 750000, tzinfo=timezone.utc)
    info = StreamInfo("test", ["x"], anchor, rate)
    aggregator = SecondAggregator(info, 1, lambda row: None)
    assert aggregator.phase == pytest.approx(0.25)
    # 3.5 s from 10:23:14.750: seconds 14 (0.25 s), 15, 16, 17, and 18 (0.25 s).
    signal = tone(1000.0, 3.5, rate, 0.5)
    meter = LevelMeter(rate, LevelSettings(enabled=True), aggregator.phase)
    meter.push(signal)
    done = meter.pop(10**9)
    assert sorted(done) == [-1, 0, 1, 2]  # the last partial second is still open
    assert meter.pop(10**9) == {}  # popped once only
    meter.finish()
    last = meter.pop(10**9)
    assert list(last) == [3]
    seconds = {**done, **last}
    assert [seconds[k].audio_seconds for k in sorted(seconds)] == [0.25, 1.0, 1.0, 1.0, 0.25]
    for second in seconds.values():  # whole periods of 1 kHz in every quarter second
        assert second.dbfs_or_db == pytest.approx(-9.0309, abs=0.001)
    # Same bin numbers as the per-second rows: each sample's bin by SecondAggregator.bin_of.
    boundaries = [0, 2000, 10000, 18000, 26000, 28000]
    for k, (first, stop) in enumerate(itertools.pairwise(boundaries), start=-1):
        assert aggregator.bin_of(first / rate) == k
        assert aggregator.bin_of((stop - 1) / rate) == k


def test_gap_seconds_are_absent_and_partly_missing_ones_measured_on_what_came() -> None:
    rate = 8000
    meter = LevelMeter(rate, LevelSettings(enabled=True), 0.0)
    meter.push(tone(1000.0, 1.5, rate, 0.5))
    meter.gap(round(1.75 * rate))  # 1.5 .. 3.25 s missing
    meter.push(tone(1000.0, 1.0, rate, 0.5))  # 3.25 .. 4.25 s
    meter.finish()
    seconds = meter.pop(10**9)
    assert sorted(seconds) == [0, 1, 3, 4]  # second 2 had no audio at all
    assert [seconds[k].audio_seconds for k in (0, 1, 3, 4)] == [1.0, 0.5, 0.75, 0.25]
    for second in seconds.values():
        assert second.dbfs_or_db == pytest.approx(-9.0309, abs=0.001)


def test_calibration_worked_examples() -> None:
    # Air: a -38 dBV/Pa microphone, 20 dB preamp, ADC full scale 1 V peak. 1 Pa RMS (94 dB SPL)
    # -> 12.6 mV -> 126 mV -> 0.126 digital RMS = -18 dBFS; L = -18 + 0 - 20 + 38 + 93.98.
    assert calibration_offset_db(-38.0, 20.0, 1.0, "air") == pytest.approx(111.979, abs=0.001)
    air = LevelSettings(enabled=True, sensitivity_db=-38.0, gain_db=20.0, adc_full_scale_volts=1.0)
    assert air.unit == "dB re 20 µPa"
    rms = 10 ** (-18 / 20)
    second = measure(tone(1000.0, 1.0, RATE_HZ, rms * math.sqrt(2)), air)[0]
    assert second.dbfs_or_db == pytest.approx(93.979, abs=0.001)  # 20·log10(1 Pa / 20 µPa)

    # Water: a -180 dB re 1 V/µPa hydrophone, 40 dB gain, ADC full scale 2 V peak. 120 dB re
    # 1 µPa -> 1e6 µPa · 1e-9 V/µPa = 1 mV -> 100 mV -> 0.05 digital RMS = -26.02 dBFS;
    # L = -26.02 + 6.02 - 40 + 180 - 0 = 120.
    water = LevelSettings(
        enabled=True,
        bands="octave",
        medium="water",
        sensitivity_db=-180.0,
        gain_db=40.0,
        adc_full_scale_volts=2.0,
    )
    assert water.unit == "dB re 1 µPa"
    second = measure(tone(1000.0, 1.0, RATE_HZ, 0.05 * math.sqrt(2)), water)[0]
    assert second.dbfs_or_db == pytest.approx(120.0, abs=0.001)
    assert second.bands["1000"] == pytest.approx(120.0, abs=0.001)  # bands are calibrated too
    assert LevelSettings().unit == "dBFS"
    assert LevelSettings().offset_db == 0.0


def test_settings_problems_name_the_key() -> None:
    assert LevelSettings().problems() == []
    assert LevelSettings(sensitivity_db=-38.0, adc_full_scale_volts=1.0).problems() == []
    keys = [key for key, _ in LevelSettings(sensitivity_db=-38.0).problems()]
    assert keys == ["adc_full_scale_volts"]
    # A hydrophone's sensitivity with medium air (the default) is caught, and vice versa.
    wrong = LevelSettings(sensitivity_db=-180.0, adc_full_scale_volts=1.0).problems()
    assert wrong and wrong[0][0] == "sensitivity_db" and "medium: water" in wrong[0][1]
    wrong = LevelSettings(medium="water", sensitivity_db=-38.0, adc_full_scale_volts=1).problems()
    assert wrong and "medium: air" in wrong[0][1]
    # Cross-field rules stay here; plain ranges are on the fields (checked at load, below).
    keys = [key for key, _ in LevelSettings(band_min_hz=50.0, band_max_hz=40.0).problems()]
    assert keys == ["band_max_hz"]


def test_settings_load_from_yaml_with_line_numbers() -> None:
    text = "enabled: true\nbands: third-octave\nmedium: water\nsensitivity_db: -38\n"
    with pytest.raises(ConfigError, match=r"levels.yaml:4: sensitivity_db: .*medium: air"):
        schema.from_text(LevelSettings, text, "levels.yaml")
    text = text.replace("-38", "-180") + "adc_full_scale_volts: 2.5\n"
    settings, _ = schema.from_text(LevelSettings, text, "levels.yaml")
    assert settings.bands == "third-octave"
    assert settings.offset_db == pytest.approx(20 * math.log10(2.5) + 180.0)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("band_min_hz: 5\n", "levels.yaml:1: band_min_hz: must be within 10..1,000,000, got 5"),
        (
            "adc_full_scale_volts: 0\n",
            "levels.yaml:1: adc_full_scale_volts: must be more than 0 and at most 1000",
        ),
    ],
)
def test_ranges_are_checked_on_load_naming_the_line(line: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        schema.from_text(LevelSettings, line, "levels.yaml")
    assert message in str(error.value)
