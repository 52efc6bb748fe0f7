"""Streaming resampler: block independence, exact length and timing, pass band and stop band."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.audio.resample import (
    STOPBAND_DB,
    TRANSITION_FRACTION,
    StreamingResampler,
    _design,
    _kaiser_beta,
    _kaiser_order,
    _lowpass_taps,
    resample,
)
from edge.errors import AudioError

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


# ---- the filter and the polyphase kernel against scipy ----


def _scipy_filter(in_rate_hz: int, out_rate_hz: int) -> tuple[np.ndarray, int, int]:
    """``(up * taps, up, down)``: the low-pass designed with scipy, as the module specifies it."""
    gcd = math.gcd(in_rate_hz, out_rate_hz)
    up, down = out_rate_hz // gcd, in_rate_hz // gcd
    nyquist_hz = min(in_rate_hz, out_rate_hz) / 2.0
    transition_hz = TRANSITION_FRACTION * nyquist_hz
    n_taps, beta = scipy.signal.kaiserord(STOPBAND_DB, transition_hz / (in_rate_hz * up / 2.0))
    taps = scipy.signal.firwin(
        n_taps | 1, nyquist_hz - transition_hz / 2.0, window=("kaiser", beta), fs=in_rate_hz * up
    )
    return up * taps, up, down


def _float64_reference(x: np.ndarray, in_rate_hz: int, out_rate_hz: int) -> np.ndarray:
    """Zero-stuff, filter and keep every ``down``-th sample in float64, the delay removed.

    Output n is the filtered upsampled signal at ``n * down + centre``; zeros prepended to the
    filter make that index a multiple of ``down``, so ``upfirdn`` computes only those samples.
    """
    h, up, down = _scipy_filter(in_rate_hz, out_rate_hz)
    centre = (h.shape[0] - 1) // 2
    shift = -centre % down
    y = scipy.signal.upfirdn(np.concatenate([np.zeros(shift), h]), x.astype(np.float64), up, down)
    first = (centre + shift) // down
    n_out = -(-x.shape[0] * up // down)
    return np.concatenate([y, np.zeros(n_out)])[first : first + n_out]


@pytest.mark.parametrize("attenuation_db", [8.0, 20.0, 21.0, 35.5, 50.0, 65.0, 90.0])
def test_kaiser_order_and_beta_equal_scipy(attenuation_db: float) -> None:
    assert _kaiser_beta(attenuation_db) == pytest.approx(
        scipy.signal.kaiser_beta(attenuation_db), abs=1e-12
    )
    for width in (1e-4, 0.003, 0.05, 0.3):
        n_taps, beta = _kaiser_order(attenuation_db, width)
        want_taps, want_beta = scipy.signal.kaiserord(attenuation_db, width)
        assert n_taps == want_taps
        assert beta == pytest.approx(want_beta, abs=1e-12)


@pytest.mark.parametrize("pair", [*RATE_PAIRS, (8000, 2500), (2500, 16000)])
def test_lowpass_taps_equal_scipy_firwin(pair: tuple[int, int]) -> None:
    want, up, _ = _scipy_filter(*pair)
    nyquist_hz = min(pair) / 2.0
    transition_hz = TRANSITION_FRACTION * nyquist_hz
    n_taps, beta = _kaiser_order(STOPBAND_DB, transition_hz / (pair[0] * up / 2.0))
    got = up * _lowpass_taps(n_taps | 1, nyquist_hz - transition_hz / 2.0, beta, pair[0] * up)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-12


@pytest.mark.parametrize(
    "pair", [*RATE_PAIRS, (8000, 2500), (2500, 16000), (22050, 16000), (8000, 44100)]
)
def test_output_equals_a_float64_upfirdn_reference(pair: tuple[int, int]) -> None:
    """Same filter, same delay compensation: only float32 rounding separates the two.

    8000 -> 44100 has rows of 882 outputs, which 96-output tiles do not divide: its last tile
    is narrower.
    """
    x = np.random.default_rng(3).uniform(-1.0, 1.0, pair[0] // 2).astype(np.float32)
    got = resample(x, *pair)
    want = _float64_reference(x, *pair)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 2e-6  # measured <= 8.3e-7 on full-scale noise


@pytest.mark.parametrize(
    ("pair", "taps_per_phase", "max_multiply_adds"),
    [((44100, 16000), 220, 265), ((48000, 16000), 241, 290), ((48000, 2500), 1527, 1830)],
)
def test_polyphase_tiles_skip_the_zero_taps(
    pair: tuple[int, int], taps_per_phase: int, max_multiply_adds: int
) -> None:
    """Each output multiplies its own phase (plus a little padding), not a dense row kernel.

    The dense kernel this replaced did 658 multiply-adds per output at 44.1 -> 16 kHz.
    """
    d = _design(*pair)
    columns: list[int] = []
    for tile in d.tiles:
        columns.extend(range(d.row_outputs)[tile.columns])
        assert tile.weights.dtype == np.float32 and tile.weights.flags.c_contiguous
        # Rows of the input view are `block` apart: BLAS needs that to be >= the span.
        assert tile.weights.shape[0] <= d.block
        # Every output holds its whole phase (the last taps of some phases are padding zeros).
        nonzero = np.count_nonzero(tile.weights, axis=0)
        assert np.all((nonzero == taps_per_phase) | (nonzero == taps_per_phase - 1))
    assert columns == list(range(d.row_outputs))
    assert sum(tile.weights.size for tile in d.tiles) / d.row_outputs <= max_multiply_adds


def test_importing_frontend_and_resampler_does_not_import_scipy() -> None:
    """scipy.signal adds ~75 MiB of RSS on the device; the edge computes its filters itself.

    A fresh interpreter, because this test process has imported scipy already.
    """
    code = (
        "import sys, edge.model.frontend, edge.audio.resample\n"
        "edge.audio.resample.StreamingResampler(44100, 16000)\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'scipy'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("pair", [*RATE_PAIRS, (48000, 2500), (16000, 16000)])
@pytest.mark.parametrize("outputs", [1, 7, 160, 1000])
def test_inputs_wanted_is_exactly_what_gives_that_many_outputs(
    pair: tuple[int, int], outputs: int
) -> None:
    """Fed one sample at a time after a first block, the resampler has returned `outputs`
    more samples at the input `inputs_wanted` named, and not one input earlier."""
    resampler = StreamingResampler(*pair)
    resampler.process(np.zeros(1234, dtype=np.float32))
    wanted = resampler.inputs_wanted(outputs)
    got = 0
    for fed in range(wanted):
        assert got < outputs, (fed, wanted)  # not already before the last input named
        got += len(resampler.process(np.zeros(1, dtype=np.float32)))
    assert got >= outputs
