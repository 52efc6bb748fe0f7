"""Backbone embeddings of whole recordings, computed once and cached on disk.

A recording is cut into backbone windows on a fixed grid (window `i` starts at `i * hop`; the
last is zero-padded; a recording shorter than a window gives one), each window goes through
the backbone with the edge's own runtime (and, for a log-mel backbone, the edge's `logmel`),
and the (windows, size) float32 array is saved as `.npy` under the cache folder. The file name
holds the recording's SHA-256, the backbone file's SHA-256 and the window and hop in samples,
so changed audio, another backbone or another grid miss the cache; identical audio under
another name hits it. Files are written to a temporary name and renamed: an interrupted run
leaves no half file.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from edge.model.backbone import Backbone
from edge.model.bundle import sha256_of
from edge.model.runtime.base import Backend
from trainer.dataset import read_mono, window_features

_BATCH = 64  # windows per backbone call from here: bounds memory on long recordings


def default_cache() -> Path:
    """`$XDG_CACHE_HOME/soundwatch/embeddings` (~/.cache/... when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "soundwatch" / "embeddings"


class EmbeddingCache:
    """Embeddings of recordings by one backbone on one window grid.

    computed / reused: recordings the backbone ran on, and recordings read from the cache.
    """

    def __init__(self, backbone: Backbone, folder: Path, hop_samples: int, threads: int = 1):
        self.backbone, self.folder, self.hop, self.threads = backbone, folder, hop_samples, threads
        self.window = backbone.manifest.window_samples
        self.computed = self.reused = 0
        self._model: Backend | None = None

    def file_for(self, recording: Path) -> Path:
        key = f"{sha256_of(recording)[:24]}-{self.backbone.sha256[:24]}-w{self.window}-h{self.hop}"
        return self.folder / f"{key}.npy"

    def recording(self, path: Path) -> np.ndarray:
        """float32 (windows, size): the embedding of each grid window of `path`."""
        cached = self.file_for(path)
        if cached.is_file():
            self.reused += 1
            return np.load(cached)
        embeddings = self._embed(read_mono(path, self.backbone.manifest.sample_rate))
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.folder, suffix=".partial", delete=False) as f:
            np.save(f, embeddings)
        Path(f.name).replace(cached)
        self.computed += 1
        return embeddings

    def _embed(self, signal: np.ndarray) -> np.ndarray:
        n = 1 + max(0, -(-(len(signal) - self.window) // self.hop))
        padded = np.zeros((n - 1) * self.hop + self.window, np.float32)
        padded[: len(signal)] = signal
        starts = np.arange(n) * self.hop
        features = self._features()
        parts = []
        for i in range(0, n, _BATCH):
            windows = padded[starts[i : i + _BATCH, None] + np.arange(self.window)]
            parts.append(self._backend().predict(features(windows)).copy())
        return np.concatenate(parts)

    def _features(self) -> Callable[[np.ndarray], np.ndarray]:
        spec = self.backbone.logmel
        return (lambda w: w) if spec is None else (lambda w: window_features(w, spec))

    def _backend(self) -> Backend:
        if self._model is None:
            spec = self.backbone.logmel
            shape = (
                (self.window,)
                if spec is None
                else window_features(np.zeros((1, self.window), np.float32), spec).shape[1:]
            )
            self._model = self.backbone.open(tuple(shape), self.threads)
        return self._model

    def close(self) -> None:
        if self._model is not None:
            self._model.close()
            self._model = None
