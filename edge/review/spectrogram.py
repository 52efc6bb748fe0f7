"""Spectrogram PNGs with numpy and the standard library's zlib: no matplotlib or Pillow on a Pi.

A log-magnitude STFT, scaled to the excerpt's own range (80 dB below its peak is black), drawn
as an 8-bit greyscale PNG with low frequencies at the bottom.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

FFT_SAMPLES = 512
HEIGHT_PX = 128
PIXELS_PER_SECOND = 100
DYNAMIC_RANGE_DB = 80.0


def spectrogram(samples: np.ndarray, rate_hz: int) -> np.ndarray:
    """uint8 image (HEIGHT_PX rows, about PIXELS_PER_SECOND columns per second), row 0 the
    highest frequency."""
    hop = max(1, rate_hz // PIXELS_PER_SECOND)
    x = np.asarray(samples, dtype=np.float32)
    if len(x) < FFT_SAMPLES:
        x = np.pad(x, (0, FFT_SAMPLES - len(x)))
    frames = 1 + (len(x) - FFT_SAMPLES) // hop
    index = np.arange(FFT_SAMPLES)[None, :] + hop * np.arange(frames)[:, None]
    power = np.abs(np.fft.rfft(x[index] * np.hanning(FFT_SAMPLES), axis=1)) ** 2
    # Fold the FFT bins into HEIGHT_PX rows by averaging equal slices.
    bins = power.shape[1] - 1
    edges = np.linspace(0, bins, HEIGHT_PX + 1).astype(int)
    rows = np.add.reduceat(power[:, :bins], edges[:-1], axis=1) / np.diff(edges).clip(1)
    db = 10.0 * np.log10(rows + 1e-12)
    scaled = (db - (db.max() - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8).T[::-1]


def png(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of a 2-D uint8 array (PNG spec, ISO/IEC 15948: filter 0 rows)."""
    height, width = image.shape

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = np.hstack([np.zeros((height, 1), np.uint8), image.astype(np.uint8)]).tobytes()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 6))
        + chunk(b"IEND", b"")
    )
