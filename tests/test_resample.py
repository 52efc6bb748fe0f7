"""Streaming resampler: block independence, exact length and timing, pass band and stop band."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import AudioError
from edge.resample import StreamingResampler, resample

RATE_PAIRS = [(48000, 16000), (44100, 16000), (48000, 2500), (16000, 48000), (44100, 48000)]


def _tone(freq_hz: float, rate_hz: int, seconds: float, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate_hz)) / rate_hz
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


def _middle(x: np.ndarray) -> np.ndarray:
    """Drop the first and last quarter: the stream starts and ends with silence around it."""
    return x[x.shape[0] // 4 : 3 * x.shape[0] // 4]


def _stream(resampler: StreamingResampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    parts = []
    position = 0
    for size in sizes:
        parts.append(resampler.process(x[position : position + size]))
        position += size
    parts.append(resampler.process(x[position:]))
    parts.append(resampler.flush())
    return np.concatenate(parts)


@settings(max_examples=60, deadline=None)
@given(
    pair=st.sampled_from([*RATE_PAIRS, (8000, 2500), (16000, 16000)]),
    n_samples=st.integers(0, 30000),
    sizes=st.lists(
        st.one_of(st.integers(0, 2), st.integers(0, 1000), st.integers(0, 100_000)), max_size=30
    ),
    seed=st.integers(0, 2**16),
)
def test_streaming_equals_offline_for_any_blocks(
    pair: tuple[int, int], n_samples: int, sizes: list[int], seed: int
) -> None:
    x = np.random.default_rng(seed).uniform(-1.0, 1.0, n_samples).astype(np.float32)
    want = resample(x, *pair)
    got = _stream(StreamingResampler(*pair), x, sizes)
    assert got.dtype == want.dtype == np.float32
    assert got.shape == want.shape == (math.ceil(n_samples * pair[1] / pair[0]),)
    assert np.max(np.abs(got - want), initial=0.0) <= 1e-5


def test_one_sample_blocks() -> None:
    x = np.random.default_rng(0).uniform(-1.0, 1.0, 3000).astype(np.float32)
    resampler = StreamingResampler(44100, 16000)
    got = _stream(resampler, x, [1] * 3000)
    assert np.allclose(got, resample(x, 44100, 16000), atol=1e-5, rtol=0)


@pytest.mark.parametrize("n_in", [0, 1, 2, 3, 440, 441, 442, 44100, 100_003])
@pytest.mark.parametrize("pair", RATE_PAIRS)
def test_length_after_flush_is_exact(pair: tuple[int, int], n_in: int) -> None:
    in_rate_hz, out_rate_hz = pair
    expected = -(-n_in * out_rate_hz // in_rate_hz)
    assert resample(np.zeros(n_in, dtype=np.float32), *pair).shape == (expected,)


@pytest.mark.parametrize("in_rate_hz", [48000, 44100])
def test_one_khz_tone_keeps_frequency_and_level(in_rate_hz: int) -> None:
    tone = _tone(1000.0, in_rate_hz, 2.0)
    out = resample(tone, in_rate_hz, 16000)
    assert out.shape == (32000,)
    middle = out[8000:24000]  # exactly one second: 1 Hz FFT bins
    peak_hz = np.argmax(np.abs(np.fft.rfft(middle))) * 16000 / middle.shape[0]
    assert peak_hz == 1000.0
    assert _rms(middle) == pytest.approx(_rms(_middle(tone)), rel=0.01)
    # Delay compensated: sample n is the input at n / 16000 s, so it matches the ideal tone.
    ideal = _tone(1000.0, 16000, 2.0)
    assert np.max(np.abs(middle - ideal[8000:24000])) < 1e-3


@pytest.mark.parametrize(
    ("in_rate_hz", "out_rate_hz", "freq_hz"),
    [
        (48000, 16000, 8500.0),
        (48000, 16000, 12000.0),
        (44100, 16000, 9000.0),
        (44100, 16000, 20000.0),
        (48000, 2500, 1300.0),
        (48000, 2500, 7000.0),
    ],
)
def test_tone_above_output_nyquist_is_attenuated_50_db(
    in_rate_hz: int, out_rate_hz: int, freq_hz: float
) -> None:
    tone = _tone(freq_hz, in_rate_hz, 2.0)
    out = resample(tone, in_rate_hz, out_rate_hz)
    attenuation_db = 20 * np.log10(_rms(_middle(out)) / _rms(tone))
    assert attenuation_db <= -50.0


def test_upsampling_rejects_images() -> None:
    """16 kHz -> 48 kHz: a 3 kHz tone has images at 13 and 19 kHz that must be removed."""
    out = resample(_tone(3000.0, 16000, 1.0), 16000, 48000)
    spectrum = np.abs(np.fft.rfft(_middle(out)))
    bin_hz = 48000 / _middle(out).shape[0]
    image = spectrum[int(12000 / bin_hz) :].max()
    assert 20 * np.log10(image / spectrum.max()) <= -50.0


@pytest.mark.parametrize("pair", RATE_PAIRS)
@pytest.mark.parametrize("click_at", [5000, 12345, 20001])
def test_click_position_is_preserved(pair: tuple[int, int], click_at: int) -> None:
    in_rate_hz, out_rate_hz = pair
    x = np.zeros(30000, dtype=np.float32)
    x[click_at] = 1.0
    out = resample(x, in_rate_hz, out_rate_hz)
    expected = click_at * out_rate_hz / in_rate_hz
    assert abs(int(np.argmax(np.abs(out))) - expected) <= 1.0


def test_dc_gain_is_one() -> None:
    for pair in RATE_PAIRS:
        out = resample(np.ones(20000, dtype=np.float32), *pair)
        assert np.allclose(_middle(out), 1.0, atol=1e-3), pair


def test_equal_rates_pass_through_without_copy() -> None:
    x = np.arange(10, dtype=np.float32)
    resampler = StreamingResampler(16000, 16000)
    assert resampler.passthrough and (resampler.up, resampler.down) == (1, 1)
    assert resampler.process(x) is x
    assert resampler.flush().shape == (0,)
    assert resample(x, 16000, 16000) is x


def test_factors_come_from_the_gcd() -> None:
    assert (StreamingResampler(48000, 16000).up, StreamingResampler(48000, 16000).down) == (1, 3)
    assert (StreamingResampler(44100, 16000).up, StreamingResampler(44100, 16000).down) == (
        160,
        441,
    )
    assert (StreamingResampler(48000, 2500).up, StreamingResampler(48000, 2500).down) == (5, 96)


def test_reset_forgets_history() -> None:
    rng = np.random.default_rng(1)
    old = rng.uniform(-1.0, 1.0, 4998).astype(np.float32)  # 1666 outputs at 1/3
    new = rng.uniform(-1.0, 1.0, 5000).astype(np.float32)
    resampler = StreamingResampler(48000, 16000)
    resampler.process(old)
    resampler.reset()
    got = _stream(resampler, new, [1234])
    assert np.allclose(got, resample(new, 48000, 16000), atol=1e-5, rtol=0)
    # Without reset the tail of `old` leaks into the first outputs.
    resampler = StreamingResampler(48000, 16000)
    leaked = np.concatenate([resampler.process(old), _stream(resampler, new, [])])
    assert np.allclose(leaked[1800:2000], got[134:334], atol=1e-5, rtol=0)  # past the filter
    assert np.max(np.abs(leaked[1666:1686] - got[:20])) > 0.01


def test_flush_ends_the_stream_and_starts_a_new_one() -> None:
    x = np.random.default_rng(2).uniform(-1.0, 1.0, 7000).astype(np.float32)
    resampler = StreamingResampler(44100, 16000)
    first = _stream(resampler, x, [3000])
    second = _stream(resampler, x, [10])
    assert np.allclose(first, second, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("in_rate_hz", "out_rate_hz"), [(0, 16000), (16000, -1), (44100, 16001)])
def test_unusable_rates_are_refused_with_a_clear_message(in_rate_hz: int, out_rate_hz: int) -> None:
    with pytest.raises(AudioError, match=r"resample|rate"):
        StreamingResampler(in_rate_hz, out_rate_hz)


def test_rejects_two_dimensional_input() -> None:
    with pytest.raises(ValueError, match="1-D"):
        StreamingResampler(48000, 16000).process(np.zeros((2, 10), dtype=np.float32))
