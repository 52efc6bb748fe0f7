"""Log-mel frontend: filterbank values, offline reference, streaming == offline for any blocks."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.signal
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.errors import ConfigError
from edge.model.frontend import (
    LogMelSpec,
    StreamingLogMel,
    _mel_tiles,
    _periodic_window,
    analysis_window,
    frames_for_window,
    logmel,
    mel_band_edges_hz,
    mel_filterbank,
    n_frames,
)

# The flysong bundle example from ARCHITECTURE.md.
BUNDLE = LogMelSpec(2500, 64, 64, 4, 32, window="hann", fmin_hz=50.0, fmax_hz=1250.0)
SPEECH = LogMelSpec(16000, 512, 400, 160, 40)
# Odd corners: magnitude, slaney scale and norm, hop longer than the frame (samples skipped).
ODD = LogMelSpec(
    8000,
    64,
    50,
    80,
    12,
    window="hamming",
    power=1.0,
    mel_scale="slaney",
    norm="slaney",
    log_offset=1e-3,
)
RECT = LogMelSpec(4000, 32, 32, 7, 10, window="rect", power=1.5, fmin_hz=100.0)
# n_fft not a power of two (the window's n_fft scaling is then not exact), fmax below Nyquist
# (the top bins are unused), more mels than one matmul tile.
UNEVEN = LogMelSpec(22050, 300, 256, 100, 24, window="hamming", fmax_hz=8000.0)
SPECS = [BUNDLE, SPEECH, ODD, RECT, UNEVEN]


def _test_signal(n_samples: int, seed: int) -> np.ndarray:
    """Noise with a tone, a stretch of digital silence and a very quiet stretch."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples)
    x = 0.3 * np.sin(0.05 * t) + 0.05 * rng.standard_normal(n_samples)
    x[n_samples // 4 : n_samples // 2] = 0.0
    x[n_samples // 2 : 3 * n_samples // 4] *= 1e-4
    return x.astype(np.float32)


def _reference_logmel(x: np.ndarray, spec: LogMelSpec) -> np.ndarray:
    """Frame by frame in float64, written independently of the module's vectorised path."""
    pad = spec.n_fft - spec.win_length
    name = {"rect": "boxcar"}.get(spec.window, spec.window)
    window = np.pad(scipy.signal.get_window(name, spec.win_length), (pad // 2, pad - pad // 2))
    weights = mel_filterbank(spec).astype(np.float64)
    rows = []
    for i in range(n_frames(x.shape[0], spec)):
        frame = x[i * spec.hop_length : i * spec.hop_length + spec.n_fft].astype(np.float64)
        magnitude = np.abs(np.fft.rfft(frame * window))
        rows.append(np.log(magnitude**spec.power @ weights + spec.log_offset))
    return np.array(rows).reshape(-1, spec.n_mels)


# ---- spec, framing ----


def test_bundle_example_spec_is_valid() -> None:
    assert BUNDLE.validate() == []
    assert SPEECH.validate() == []


def test_validate_names_field_and_problem() -> None:
    bad = LogMelSpec(2500, 64, 80, 0, 32, window="blackman", fmax_hz=2000.0, log_offset=0.0)
    problems = bad.validate()
    assert "hop_length: 0 must be at least 1" in problems
    bad = LogMelSpec(2500, 64, 80, 4, 32, window="blackman", fmax_hz=2000.0, log_offset=0.0)
    problems = bad.validate()
    assert "win_length: 80 is larger than n_fft 64" in problems
    assert any(p.startswith("window: 'blackman'") for p in problems)
    assert any(p.startswith("fmax_hz: 2000.0") for p in problems)
    assert any(p.startswith("log_offset:") for p in problems)
    assert len(problems) == 4
    assert LogMelSpec(2500, 64, 64, 4, 32, fmin_hz=900.0, fmax_hz=800.0).validate() == [
        "fmin_hz: 900.0 must be below fmax_hz 800"
    ]


def test_invalid_spec_is_refused_with_one_line_error() -> None:
    bad = LogMelSpec(2500, 64, 80, 4, 32)
    with pytest.raises(ConfigError, match="win_length: 80 is larger than n_fft 64"):
        logmel(np.zeros(100, dtype=np.float32), bad)
    with pytest.raises(ConfigError):
        StreamingLogMel(bad, 128)


def test_frame_counts() -> None:
    assert [n_frames(n, BUNDLE) for n in (0, 63, 64, 67, 68, 72)] == [0, 0, 1, 1, 2, 3]
    # 0.2048 s at 2500 Hz = 512 samples -> 1 + (512 - 64) // 4 frames.
    assert frames_for_window(512, BUNDLE) == 113
    assert frames_for_window(16000, SPEECH) == 97
    assert logmel(np.zeros(63, dtype=np.float32), BUNDLE).shape == (0, 32)


# ---- filterbank ----


def test_filterbank_matches_librosa_values() -> None:
    """Numbers taken from librosa 0.11 ``librosa.filters.mel`` (transposed)."""
    htk = mel_filterbank(BUNDLE)  # htk=True, norm=None
    assert htk.shape == (33, 32) and htk.dtype == np.float32
    assert float(htk.sum()) == pytest.approx(29.7019, abs=1e-4)
    assert htk[2, 0] == pytest.approx(0.7314316630363464, abs=1e-7)
    assert htk[8, 9] == pytest.approx(0.6387936472892761, abs=1e-7)
    assert htk[23, 26] == pytest.approx(0.13237743079662323, abs=1e-7)
    assert htk[32, 31] == 0.0
    slaney = mel_filterbank(LogMelSpec(16000, 512, 512, 160, 40, mel_scale="slaney", norm="slaney"))
    assert slaney.shape == (257, 40)
    assert float(slaney.sum()) == pytest.approx(1.2793331146240234, rel=1e-6)
    assert slaney[3, 0] == pytest.approx(0.009864136576652527, rel=1e-6)
    assert slaney[53, 19] == pytest.approx(0.006189176347106695, rel=1e-6)
    assert slaney[255, 39] == pytest.approx(9.49339009821415e-05, rel=1e-5)


def test_htk_centres_and_triangles_overlap_to_one() -> None:
    edges_hz = mel_band_edges_hz(SPEECH)
    # HTK mel: 1000 Hz is 1000 mel; the edges are evenly spaced in mel.
    mels = 2595.0 * np.log10(1.0 + edges_hz / 700.0)
    assert np.allclose(np.diff(mels), mels[-1] / 41)
    assert edges_hz[0] == 0.0 and edges_hz[-1] == pytest.approx(8000.0)
    weights = mel_filterbank(SPEECH)
    assert weights.max() <= 1.0
    # Between the first and the last centre, neighbouring triangles sum to exactly 1.
    freqs_hz = np.fft.rfftfreq(512, 1 / 16000)
    inside = (freqs_hz >= edges_hz[1]) & (freqs_hz <= edges_hz[-2])
    assert np.allclose(weights[inside].sum(axis=1), 1.0, atol=1e-6)
    assert np.all(weights[freqs_hz > edges_hz[-1]] == 0.0)


def test_slaney_norm_gives_unit_area_triangles() -> None:
    spec = LogMelSpec(16000, 8192, 8192, 160, 40, mel_scale="slaney", norm="slaney")
    bin_hz = 16000 / 8192
    areas = mel_filterbank(spec).sum(axis=0) * bin_hz
    assert np.allclose(areas, 1.0, rtol=0.01)


def test_one_khz_tone_peaks_in_the_band_centred_nearest_one_khz() -> None:
    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * t)).astype(np.float32)
    features = logmel(tone, SPEECH)
    centres_hz = mel_band_edges_hz(SPEECH)[1:-1]
    expected = int(np.argmin(np.abs(centres_hz - 1000.0)))
    assert np.all(np.argmax(features, axis=1) == expected)
    assert centres_hz[expected] == pytest.approx(955.02, abs=0.01)  # librosa mel_frequencies


@pytest.mark.parametrize("spec", [*SPECS, LogMelSpec(8000, 32, 32, 8, 40)])
def test_mel_tiles_hold_every_non_zero_weight(spec: LogMelSpec) -> None:
    """The tiled matmul multiplies by exactly the filterbank (40 mels on 17 bins: empty bands)."""
    weights = mel_filterbank(spec)
    rebuilt = np.zeros_like(weights)
    for bins, tile, bands in _mel_tiles(weights):
        assert np.all(rebuilt[bins, bands] == 0.0)  # tiles do not overlap
        rebuilt[bins, bands] = tile
    assert np.array_equal(rebuilt, weights)


def test_speech_tiles_skip_two_thirds_of_the_matmul() -> None:
    tiles = _mel_tiles(mel_filterbank(SPEECH))
    assert [(bins.start, bins.stop) for bins, _, _ in tiles] == [(1, 42), (38, 148), (138, 257)]
    assert sum(tile.size for _, tile, _ in tiles) == 3368  # of 257 * 40 = 10,280


def test_mel_bands_without_bins_give_the_log_offset() -> None:
    spec = LogMelSpec(8000, 32, 32, 8, 40, log_offset=1e-3)
    features = logmel(_test_signal(800, seed=7), spec)
    empty = ~mel_filterbank(spec).any(axis=0)
    assert 0 < empty.sum() < 40
    assert np.all(features[:, empty] == np.float32(np.log(np.float32(1e-3))))
    assert np.max(np.abs(features - _reference_logmel(_test_signal(800, seed=7), spec))) < 2e-4


# ---- windows: numpy, no scipy at import ----


@pytest.mark.parametrize(
    ("name", "scipy_name"), [("hann", "hann"), ("hamming", "hamming"), ("rect", "boxcar")]
)
@pytest.mark.parametrize("length", [1, 2, 3, 50, 64, 255, 400, 512, 1024])
def test_periodic_windows_equal_scipy(name: str, scipy_name: str, length: int) -> None:
    got = _periodic_window(name, length)
    want = scipy.signal.get_window(scipy_name, length, fftbins=True)
    assert got.dtype == np.float64 and got.shape == (length,)
    assert np.max(np.abs(got - want)) <= 1e-12


def test_analysis_window_is_centred_and_zero_padded() -> None:
    window = analysis_window(SPEECH)  # 400 of 512
    assert window.dtype == np.float32
    assert np.all(window[:56] == 0.0) and np.all(window[456:] == 0.0)
    want = scipy.signal.get_window("hann", 400, fftbins=True).astype(np.float32)
    assert np.array_equal(window[56:456], want)


# ---- offline reference ----


@pytest.mark.parametrize("spec", SPECS, ids=["bundle", "speech", "odd", "rect", "uneven"])
def test_logmel_matches_float64_frame_by_frame_reference(spec: LogMelSpec) -> None:
    x = _test_signal(3 * spec.sample_rate_hz // 4, seed=1)
    got = logmel(x, spec)
    want = _reference_logmel(x, spec)
    assert got.shape == want.shape == (n_frames(x.shape[0], spec), spec.n_mels)
    assert got.dtype == np.float32
    # float32 FFT: bands near the log offset carry a little rounding noise.
    assert np.max(np.abs(got - want)) < 2e-4


def test_logmel_is_chunk_independent_on_long_signals() -> None:
    x = _test_signal(70_000, seed=2)  # > 2048 frames per chunk with hop 4
    whole = logmel(x, BUNDLE)
    assert whole.shape == (n_frames(70_000, BUNDLE), 32)
    part = logmel(x[20000 : 20000 + 9 * 4 + 64], BUNDLE)  # frames 5000..5009 on their own
    assert np.allclose(whole[5000:5010], part, atol=1e-5, rtol=0)


# ---- streaming ----


def _stream(streamer: StreamingLogMel, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    rows = []
    position = 0
    for size in sizes:
        rows.append(streamer.push(x[position : position + size]).copy())  # views are reused
        position += size
    rows.append(streamer.push(x[position:]).copy())
    return np.concatenate(rows)


@settings(max_examples=60, deadline=None)
@given(
    spec_index=st.integers(0, len(SPECS) - 1),
    n_samples=st.integers(0, 6000),
    max_block=st.sampled_from([1, 7, 160, 1024]),
    sizes=st.lists(
        st.one_of(st.integers(0, 3), st.integers(0, 400), st.integers(0, 5000)), max_size=40
    ),
    seed=st.integers(0, 2**16),
)
def test_streaming_equals_offline_for_any_blocks(
    spec_index: int, n_samples: int, max_block: int, sizes: list[int], seed: int
) -> None:
    spec = SPECS[spec_index]
    x = _test_signal(n_samples, seed)
    got = _stream(StreamingLogMel(spec, max_block), x, sizes)
    want = logmel(x, spec)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want), initial=0.0) <= 1e-5


def test_one_sample_blocks_and_block_sizes_per_push() -> None:
    x = _test_signal(400, seed=3)
    streamer = StreamingLogMel(BUNDLE, max_block_samples=4)
    counts = [streamer.push(x[i : i + 1]).shape[0] for i in range(400)]
    # The first frame completes at sample 64, then one every hop of 4 samples.
    assert sum(counts) == n_frames(400, BUNDLE) == 85
    assert counts.index(1) == 63 and counts[64:68] == [0, 0, 0, 1]


def test_small_pushes_reuse_the_internal_buffer_and_large_ones_do_not() -> None:
    streamer = StreamingLogMel(BUNDLE, max_block_samples=256)
    x = _test_signal(2000, seed=4)
    first = streamer.push(x[:256])
    second = streamer.push(x[256:512])
    assert np.shares_memory(first, second)
    big = streamer.push(x[512:2000])
    assert not np.shares_memory(big, second)
    assert np.allclose(big, logmel(x, BUNDLE)[n_frames(512, BUNDLE) :], atol=1e-5, rtol=0)


def test_reset_forgets_history() -> None:
    x = _test_signal(3000, seed=5)
    y = _test_signal(3000, seed=6)
    streamer = StreamingLogMel(SPEECH, max_block_samples=1000)
    streamer.push(x[:2950])  # leaves 2950 - 160*16 = 390 samples of x pending
    streamer.reset()
    after_reset = _stream(streamer, y, [1000, 1000])
    assert np.allclose(after_reset, logmel(y, SPEECH), atol=1e-5, rtol=0)
    # Without the reset the pending samples of x would have formed the next frames.
    streamer = StreamingLogMel(SPEECH, max_block_samples=1000)
    streamer.push(x[:2950])
    assert _stream(streamer, y, [1000, 1000]).shape[0] == n_frames(2950 + 3000, SPEECH) - 16


def test_push_rejects_two_dimensional_blocks() -> None:
    with pytest.raises(ValueError, match="1-D"):
        StreamingLogMel(BUNDLE, 64).push(np.zeros((2, 64), dtype=np.float32))
