"""Model runtimes behind one interface: `open_backend` loads a bundle's model file.

Backends register by key ("onnx", "litert"); each imports its runtime only when a model is
opened, so a device needs only the runtime its bundle uses.
"""

from __future__ import annotations

from pathlib import Path

from edge.errors import BundleError
from edge.model.runtime.base import BACKENDS, FILE_KEYS, Backend, backend_for, load_backends

__all__ = ["FILE_KEYS", "Backend", "available_backends", "open_backend"]


def available_backends() -> dict[str, bool]:
    """Backend key -> whether its runtime imports here, e.g. {"onnx": True, "litert": False}."""
    load_backends()
    return {key: cls.available() for key, cls in BACKENDS.items()}


def open_backend(
    file_key: str,
    path: Path,
    *,
    feature_shape: tuple[int, ...],
    n_labels: int,
    threads: int = 1,
    output_name: str | None = None,
) -> Backend:
    """Load one model file of a bundle.

    file_key: the bundle files key ("onnx-int8", "onnx-fp32", "tflite-int8", "tflite-fp32");
        its prefix picks the backend.
    feature_shape: one window as the frontend gives it: (frames, mels) or (samples,).
    n_labels: scores per window. threads: runtime threads per model call.
    output_name: the model output holding the scores (the first output when None).
    Raises BundleError when the file is missing or does not fit the shapes, and
    RuntimeUnavailable (with the install command) when the runtime is not installed.
    """
    backend = backend_for(file_key)
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: model file not found (files key '{file_key}')")
    return backend(
        path,
        feature_shape=tuple(feature_shape),
        n_labels=n_labels,
        threads=threads,
        output_name=output_name,
    )
