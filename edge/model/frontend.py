"""Log-mel frontend: one offline function and a streaming twin that gives the same numbers.

The trainer calls :func:`logmel` on whole recordings; the edge feeds audio blocks of any size to
:class:`StreamingLogMel`. Both run every frame through the same :class:`_FrameKernel` (window,
``rfft``, power, mel matmul, log), so a frame computed from a stream is the frame computed
offline: no train/serve skew. Framing has no centre padding: frame ``i`` covers samples
``[i * hop_length, i * hop_length + n_fft)``.

Everything is float32, the FFT included. A row's FFT does not depend on the batch it sits in
(numpy's pocketfft transforms row by row), so streaming and offline agree to about 1e-6 (one
float32 ulp of the log). Against a float64 computation the features differ by up to ~5e-5, in
bands whose energy is near ``log_offset``.

Why ``rfft(..., norm="forward")``: numpy 2.x (2.4 measured) passes the default normalisation to
its FFT ufunc as the Python int 1, which selects the float64 loop, so a float32 batch is cast to
a float64 copy and the result cast back: two frame-sized temporaries per call, and 2-9 us per
512-point frame (the most when those temporaries are fresh pages) against 0.5-0.7 us for the
float32 loop. ``norm="forward"`` passes a float32 factor ``1 / n_fft`` instead, which keeps the
float32 loop; the analysis window is scaled by ``n_fft`` to cancel it (exactly, for power-of-two
``n_fft``).

Windows are computed here (``scipy.signal.get_window``'s formulas), so importing the frontend
does not import scipy (``scipy.signal`` adds about 75 MiB of resident memory on the device).

The mel filterbank ports ``librosa.filters.mel`` (librosa 0.11; ``htk`` and ``slaney`` mel
scales, ``norm=None`` or ``"slaney"``) so librosa is not a dependency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.errors import ConfigError

__all__ = [
    "LogMelSpec",
    "StreamingLogMel",
    "frames_for_window",
    "logmel",
    "mel_filterbank",
    "n_frames",
]

# Periodic windows as a0 - (1 - a0) * cos(2 pi n / N): hann 0.5, hamming 0.54, rect 1.
_WINDOW_A0 = {"hann": 0.5, "hamming": 0.54, "rect": 1.0}
_MEL_SCALES = ("htk", "slaney")
_NORMS = (None, "slaney")
# Frames per chunk in the offline path: bounds working memory (n_fft=512: ~10 MB) while keeping
# numpy calls large enough that per-call overhead does not matter.
_OFFLINE_CHUNK_FRAMES = 2048
# Mel bands per matmul tile: 16 columns is the width OpenBLAS's sgemm kernels handle at once here.
_MEL_TILE = 16
# numpy >= 2 accepts out= in np.fft and keeps float32 input in float32.
_FFT_HAS_OUT = int(np.__version__.split(".")[0]) >= 2


@dataclass(frozen=True)
class LogMelSpec:
    """How audio becomes log-mel features. All lengths are in samples at ``sample_rate_hz``.

    ``win_length <= n_fft``: the window is zero-padded and centred in ``n_fft`` (as
    ``torch.stft`` does). Windows are periodic (``scipy.signal.get_window(..., fftbins=True)``;
    ``rect`` is its ``boxcar``).
    Features are ``ln(mel + log_offset)`` where ``mel`` is the mel-weighted magnitude
    (``power=1``) or power (``power=2``) spectrum.
    """

    sample_rate_hz: int
    n_fft: int
    win_length: int
    hop_length: int
    n_mels: int
    window: str = "hann"
    fmin_hz: float = 0.0
    fmax_hz: float | None = None
    power: float = 2.0
    log_offset: float = 1e-6
    mel_scale: str = "htk"
    norm: str | None = None

    @property
    def fmax_or_nyquist_hz(self) -> float:
        """Upper edge of the mel range in Hz (``fmax_hz``, or Nyquist when that is None)."""
        return self.sample_rate_hz / 2.0 if self.fmax_hz is None else float(self.fmax_hz)

    def validate(self) -> list[str]:
        """Problems as ``"field: message"`` strings; an empty list means the spec is usable."""
        problems: list[str] = []
        for name in ("sample_rate_hz", "n_fft", "win_length", "hop_length", "n_mels"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                problems.append(f"{name}: {value!r} is not an integer")
            elif value < 1:
                problems.append(f"{name}: {value} must be at least 1")
        if problems:
            return problems  # the checks below compare these integers
        if self.win_length > self.n_fft:
            problems.append(f"win_length: {self.win_length} is larger than n_fft {self.n_fft}")
        if self.window not in _WINDOW_A0:
            problems.append(f"window: {self.window!r} is not one of {sorted(_WINDOW_A0)}")
        nyquist_hz = self.sample_rate_hz / 2.0
        if not 0.0 <= self.fmin_hz < nyquist_hz:
            problems.append(f"fmin_hz: {self.fmin_hz} must be in [0, Nyquist {nyquist_hz:g})")
        if self.fmax_hz is not None and not 0.0 < self.fmax_hz <= nyquist_hz:
            problems.append(f"fmax_hz: {self.fmax_hz} must be in (0, Nyquist {nyquist_hz:g}]")
        elif self.fmin_hz >= self.fmax_or_nyquist_hz:
            problems.append(
                f"fmin_hz: {self.fmin_hz} must be below fmax_hz {self.fmax_or_nyquist_hz:g}"
            )
        if not self.power > 0.0:
            problems.append(f"power: {self.power} must be positive (1 magnitude, 2 power)")
        if not self.log_offset > 0.0:
            problems.append(f"log_offset: {self.log_offset} must be positive")
        if self.mel_scale not in _MEL_SCALES:
            problems.append(f"mel_scale: {self.mel_scale!r} is not one of {list(_MEL_SCALES)}")
        if self.norm not in _NORMS:
            problems.append(f"norm: {self.norm!r} is not one of {list(_NORMS)}")
        return problems


def _check_spec(spec: LogMelSpec) -> None:
    problems = spec.validate()
    if problems:
        raise ConfigError("invalid log-mel frontend: " + "; ".join(problems))


def n_frames(n_samples: int, spec: LogMelSpec) -> int:
    """Number of complete frames in ``n_samples`` samples (no centre padding)."""
    if n_samples < spec.n_fft:
        return 0
    return 1 + (n_samples - spec.n_fft) // spec.hop_length


def frames_for_window(window_samples: int, spec: LogMelSpec) -> int:
    """Frames in one model input window of ``window_samples`` samples (the model's time axis)."""
    return n_frames(window_samples, spec)


# ---- mel filterbank (port of librosa.filters.mel) ----


def _hz_to_mel(freqs_hz: np.ndarray, mel_scale: str) -> np.ndarray:
    freqs_hz = np.asarray(freqs_hz, dtype=np.float64)
    if mel_scale == "htk":
        return 2595.0 * np.log10(1.0 + freqs_hz / 700.0)
    # Slaney (Auditory Toolbox): linear below 1 kHz, logarithmic above.
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    mels = freqs_hz / f_sp
    above = freqs_hz >= min_log_hz
    mels[above] = min_log_mel + np.log(freqs_hz[above] / min_log_hz) / logstep
    return mels


def _mel_to_hz(mels: np.ndarray, mel_scale: str) -> np.ndarray:
    mels = np.asarray(mels, dtype=np.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0
    freqs = f_sp * mels
    above = mels >= min_log_mel
    freqs[above] = min_log_hz * np.exp(logstep * (mels[above] - min_log_mel))
    return freqs


def mel_band_edges_hz(spec: LogMelSpec) -> np.ndarray:
    """The ``n_mels + 2`` band edges in Hz: filter ``m`` rises from edge m, peaks at m+1."""
    mel_lo, mel_hi = _hz_to_mel(np.array([spec.fmin_hz, spec.fmax_or_nyquist_hz]), spec.mel_scale)
    return _mel_to_hz(np.linspace(mel_lo, mel_hi, spec.n_mels + 2), spec.mel_scale)


def mel_filterbank(spec: LogMelSpec) -> np.ndarray:
    """Triangular mel weights, float32, shape ``(n_fft // 2 + 1, n_mels)``: ``power @ weights``.

    Same numbers as ``librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax, htk, norm)`` (transposed).
    With ``norm=None`` triangles peak at 1; with ``norm="slaney"`` each triangle is scaled by
    ``2 / bandwidth_hz`` so it has unit area in Hz.
    """
    _check_spec(spec)
    fft_freqs_hz = np.fft.rfftfreq(spec.n_fft, d=1.0 / spec.sample_rate_hz)
    edges_hz = mel_band_edges_hz(spec)
    widths_hz = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_freqs_hz[None, :]
    lower = -ramps[:-2] / widths_hz[:-1, None]
    upper = ramps[2:] / widths_hz[1:, None]
    # Rounded to float32 before the norm, as librosa does, so the numbers match bit for bit.
    weights = np.maximum(0.0, np.minimum(lower, upper)).astype(np.float32)
    if spec.norm == "slaney":
        weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    return np.ascontiguousarray(weights.T)


def _periodic_window(name: str, length: int) -> np.ndarray:
    """The periodic (DFT-even) window ``name`` of ``length`` samples, float64.

    The numbers of ``scipy.signal.get_window(name, length, fftbins=True)`` for ``hann``,
    ``hamming`` and ``boxcar`` (here ``rect``), computed as scipy does: the symmetric window of
    ``length + 1`` samples, cosine terms on ``linspace(-pi, pi)``, without its last sample.
    """
    a0 = _WINDOW_A0[name]
    if length <= 1 or a0 == 1.0:
        return np.ones(length)
    angles = np.linspace(-np.pi, np.pi, length + 1)
    window = a0 + (1.0 - a0) * np.cos(angles)
    return window[:-1]


def analysis_window(spec: LogMelSpec) -> np.ndarray:
    """The periodic window, float32, zero-padded and centred in ``n_fft`` like ``torch.stft``."""
    _check_spec(spec)
    window = np.zeros(spec.n_fft, dtype=np.float32)
    left = (spec.n_fft - spec.win_length) // 2
    window[left : left + spec.win_length] = _periodic_window(spec.window, spec.win_length)
    return window


# ---- the per-frame computation shared by offline and streaming ----


def _mel_tiles(filterbank: np.ndarray) -> list[tuple[slice, np.ndarray, slice]]:
    """Split ``(n_bins, n_mels)`` weights into ``(bins, weights[bins, bands], bands)`` tiles.

    Each tile holds ``_MEL_TILE`` neighbouring bands and only the bins where one of them is
    non-zero, so ``power[:, bins] @ weights`` over all tiles is ``power @ filterbank``. A band
    with no bin at all (possible with many mels and a short FFT) gets an all-zero tile.
    """
    tiles = []
    for first in range(0, filterbank.shape[1], _MEL_TILE):
        bands = slice(first, min(first + _MEL_TILE, filterbank.shape[1]))
        used = np.flatnonzero(filterbank[:, bands].any(axis=1))
        bins = slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 1)
        weights = np.ascontiguousarray(filterbank[bins, bands])
        weights.setflags(write=False)
        tiles.append((bins, weights, bands))
    return tiles


class _FrameKernel:
    """Turns up to ``max_frames`` frames into log-mel rows using preallocated work buffers.

    Work that cannot change a feature is skipped. The window multiply covers only the
    ``win_length`` samples it can be non-zero on (the padding of the windowed buffer is zeroed
    once). The mel matmul runs on tiles of ``_MEL_TILE`` neighbouring bands, each over just the
    FFT bins those bands weigh: a triangle spans a few bins, so the dense matmul would mostly
    multiply by zero (speech spec: 3,368 of 10,280 weights kept, half the time).
    """

    def __init__(self, spec: LogMelSpec, max_frames: int) -> None:
        n_bins = spec.n_fft // 2 + 1
        left = (spec.n_fft - spec.win_length) // 2
        self._taper = slice(left, left + spec.win_length)
        # Scaled by n_fft to cancel rfft's norm="forward" factor (see the module docstring).
        self._window = analysis_window(spec)[self._taper] * np.float32(spec.n_fft)
        self._mel_tiles = _mel_tiles(mel_filterbank(spec))
        self._power = float(spec.power)
        self._log_offset = np.float32(spec.log_offset)
        self._windowed = np.zeros((max_frames, spec.n_fft), dtype=np.float32)
        self._spectrum = np.empty((max_frames, n_bins), dtype=np.complex64)
        # Power on every bin, not only the used ones: whole rows make one contiguous loop
        # for numpy, which is faster than skipping a few bins per row.
        self._bin_power = np.empty((max_frames, n_bins), dtype=np.float32)
        self._scratch = np.empty((max_frames, n_bins), dtype=np.float32)

    def compute(self, frames: np.ndarray, out: np.ndarray) -> None:
        """Write log-mel rows for ``frames`` (k, n_fft) float32 into ``out`` (k, n_mels)."""
        k = frames.shape[0]
        windowed = self._windowed[:k]
        spectrum = self._spectrum[:k]
        bin_power = self._bin_power[:k]
        scratch = self._scratch[:k]
        np.multiply(frames[:, self._taper], self._window, out=windowed[:, self._taper])
        if _FFT_HAS_OUT:
            # The stubs expect complex128, but numpy 2 keeps float32 input in complex64.
            np.fft.rfft(windowed, axis=1, norm="forward", out=spectrum)  # type: ignore[arg-type]
        else:  # numpy 1.x computes in float64 and allocates: the same features within 1e-5
            spectrum[...] = np.fft.rfft(windowed, axis=1, norm="forward")
        # re^2 + im^2 directly: np.abs on complex goes through hypot, which is slower.
        np.square(spectrum.real, out=bin_power)
        np.square(spectrum.imag, out=scratch)
        np.add(bin_power, scratch, out=bin_power)
        if self._power == 1.0:
            np.sqrt(bin_power, out=bin_power)
        elif self._power != 2.0:
            np.power(bin_power, np.float32(self._power / 2.0), out=bin_power)
        for bins, weights, bands in self._mel_tiles:
            np.matmul(bin_power[:, bins], weights, out=out[:, bands])
        np.add(out, self._log_offset, out=out)
        np.log(out, out=out)


def _frame_view(samples: np.ndarray, count: int, spec: LogMelSpec) -> np.ndarray:
    """Read-only (count, n_fft) view of overlapping frames of a contiguous float32 array."""
    step = samples.strides[0]
    return np.lib.stride_tricks.as_strided(
        samples, shape=(count, spec.n_fft), strides=(spec.hop_length * step, step), writeable=False
    )


def logmel(signal: np.ndarray, spec: LogMelSpec) -> np.ndarray:
    """Log-mel features of a whole 1-D signal: float32, shape ``(n_frames, n_mels)``.

    The offline reference (used by the trainer). Works through the signal in chunks of
    frames, so memory stays bounded for hours of audio.
    """
    _check_spec(spec)
    samples = np.ascontiguousarray(signal, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"logmel expects a 1-D signal, got shape {samples.shape}")
    total = n_frames(samples.shape[0], spec)
    out = np.empty((total, spec.n_mels), dtype=np.float32)
    kernel = _FrameKernel(spec, max(1, min(total, _OFFLINE_CHUNK_FRAMES)))
    for first in range(0, total, _OFFLINE_CHUNK_FRAMES):
        count = min(_OFFLINE_CHUNK_FRAMES, total - first)
        frames = _frame_view(samples[first * spec.hop_length :], count, spec)
        kernel.compute(frames, out[first : first + count])
    return out


class StreamingLogMel:
    """Incremental log-mel: each :meth:`push` computes only the frames its samples complete.

    The rows returned over a stream equal :func:`logmel` of the concatenated stream (within
    1e-5; measured 1e-6) whatever the block sizes. Between pushes it keeps the samples
    not yet consumed by a frame (at most ``n_fft - 1``) in a preallocated buffer; a push of at
    most ``max_block_samples`` samples allocates nothing beyond numpy's own temporaries.
    """

    def __init__(self, spec: LogMelSpec, max_block_samples: int) -> None:
        _check_spec(spec)
        if max_block_samples < 1:
            raise ValueError(f"max_block_samples must be at least 1, got {max_block_samples}")
        self.spec = spec
        self.max_block_samples = int(max_block_samples)
        capacity = spec.n_fft - 1 + self.max_block_samples
        self._max_frames = max(1, n_frames(capacity, spec))
        self._buffer = np.zeros(capacity, dtype=np.float32)
        self._all_frames = _frame_view(self._buffer, self._max_frames, spec)
        self._kernel = _FrameKernel(spec, self._max_frames)
        self._out = np.empty((self._max_frames, spec.n_mels), dtype=np.float32)
        self._held = 0  # samples at the start of _buffer waiting for a frame
        self._skip = 0  # samples to drop before the next frame (only when hop_length > n_fft)

    def reset(self) -> None:
        """Forget all history (after a gap): the next push starts a new signal at frame 0."""
        self._held = 0
        self._skip = 0

    def pending_frames(self, n_new_samples: int) -> int:
        """How many frames a push of ``n_new_samples`` samples would complete."""
        available = self._held + max(0, n_new_samples - self._skip)
        return n_frames(available, self.spec)

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add a block of samples; return the (k, n_mels) float32 frames it completes (k >= 0).

        For blocks of at most ``max_block_samples`` the result is a view into an internal
        buffer, valid only until the next call to :meth:`push` or :meth:`reset`: copy it to
        keep it. Larger blocks are processed in pieces and return a newly allocated array.
        Pass float32 to avoid a conversion copy.
        """
        block = np.asarray(samples, dtype=np.float32)
        if block.ndim != 1:
            raise ValueError(f"push expects a 1-D block, got shape {block.shape}")
        if block.shape[0] <= self.max_block_samples:
            count = self._push_piece(block, self._out)
            return self._out[:count]
        out = np.empty((self.pending_frames(block.shape[0]), self.spec.n_mels), dtype=np.float32)
        written = 0
        for start in range(0, block.shape[0], self.max_block_samples):
            piece = block[start : start + self.max_block_samples]
            written += self._push_piece(piece, out[written:])
        return out

    def _push_piece(self, piece: np.ndarray, out: np.ndarray) -> int:
        if self._skip:
            dropped = min(self._skip, piece.shape[0])
            piece = piece[dropped:]
            self._skip -= dropped
        total = self._held + piece.shape[0]
        self._buffer[self._held : total] = piece
        count = n_frames(total, self.spec)
        if count:
            self._kernel.compute(self._all_frames[:count], out[:count])
        consumed = count * self.spec.hop_length
        if consumed <= total:
            # Keep the tail that starts the next frame (numpy handles the overlapping move).
            self._buffer[: total - consumed] = self._buffer[consumed:total]
            self._held = total - consumed
        else:
            self._skip = consumed - total
            self._held = 0
        return count
