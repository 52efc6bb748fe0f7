"""The model runtime interface: a batch of feature windows in, raw scores out.

Each backend (ONNX Runtime, LiteRT) lives in its own module, imports its runtime lazily and
registers itself here by key. The shared work happens in `Backend`: fitting feature windows
onto whatever input shape a third-party model declares (`plan_input`), splitting a batch into
model calls, and checking that every call returns one score per label.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, TypeVar, get_args

import numpy as np

from edge.errors import BundleError

logger = logging.getLogger(__name__)

# Bundle file keys are "<format>-<precision>"; the format picks the backend. Defined here once:
# the manifest's files, the config's model.file, the CLI's --model-file and auto's preference
# order (edge/model/bundle.py) are all made from FileKey.
FILE_FORMATS: dict[str, str] = {"onnx": "onnx", "tflite": "litert"}
FileKey = Literal["onnx-int8", "onnx-fp32", "tflite-int8", "tflite-fp32"]
FILE_KEYS: tuple[FileKey, ...] = get_args(FileKey)

# Batched calls must agree with one-window calls this closely (relative, absolute) before a
# model is trusted to batch; wrong batching differs by far more than float summation order.
_BATCH_RTOL = 1e-3
_BATCH_ATOL = 1e-4
# Windows at least this large go one per model call. Such a window is milliseconds of work,
# so a call's fixed cost is noise, while a batched call makes the runtime hold activations
# for every window at once: BirdNET (3 s of 48 kHz, 563 KiB) in batches of 7 was no faster a
# window (42.5 against 41.6 ms) and held 134 MiB more (BENCHMARKS.md, "Issue 14: heavy models").
ONE_PER_CALL_BYTES = 256 << 10


def one_per_call(feature_shape: tuple[int, ...]) -> bool:
    """Whether a float32 window of `feature_shape` is ONE_PER_CALL_BYTES or more."""
    return 4 * math.prod(feature_shape) >= ONE_PER_CALL_BYTES


Dim = int | str | None  # a model dimension: a size, or dynamic (None, -1, or a symbolic name)


def shape_text(dims: Sequence[Dim]) -> str:
    """A model shape as users read it: ``[N, 100, 40]``; unnamed dynamic dimensions are ``?``."""
    parts = [str(d) if isinstance(d, str) or (d is not None and d > 0) else "?" for d in dims]
    return "[" + ", ".join(parts) + "]"


def _fill(dims: Sequence[int | None], size: int) -> tuple[int, ...] | None:
    """``dims`` with at most one unknown filled in so their product is ``size``, else None."""
    unknown = [i for i, d in enumerate(dims) if d is None]
    known = math.prod(d for d in dims if d is not None)
    if len(unknown) > 1 or known == 0:
        return None
    if not unknown:
        return tuple(d for d in dims if d is not None) if known == size else None
    if size % known:
        return None
    return tuple(size // known if d is None else d for d in dims)


@dataclass(frozen=True)
class InputLayout:
    """How one feature window maps onto the model's input.

    window_shape: one window as the model takes it, without the batch axis.
    has_batch_axis: whether the model input has a leading batch axis.
    fixed_batch: the batch size the model declares; None when its batch axis is dynamic.
        Models without a batch axis take exactly one window per call (1).
    """

    window_shape: tuple[int, ...]
    has_batch_axis: bool
    fixed_batch: int | None

    def call_shape(self, rows: int) -> tuple[int, ...]:
        """The model input shape for a call on ``rows`` windows."""
        return (rows, *self.window_shape) if self.has_batch_axis else self.window_shape


def plan_input(where: str, dims: Sequence[Dim], feature_shape: tuple[int, ...]) -> InputLayout:
    """Decide how windows of ``feature_shape`` feed a model input declared as ``dims``.

    The rule, in order (a dimension is dynamic when None, negative or a symbolic name):
    1. dims[0] dynamic and the other dims hold one window: a batch axis of any size.
    2. dims[0] fixed and the other dims hold one window: a fixed batch of dims[0] windows
       ([1, frames, mels] is the common case).
    3. all dims together hold one window: no batch axis ([frames, mels] or [samples]).
    "Hold one window" means the same number of elements (at most one other dynamic dimension
    is inferred), so [N, 1, frames, mels] and [N, frames, mels, 1] take (frames, mels) windows
    by a reshape. A same-size but different layout ([N, mels, frames] for (frames, mels)) is
    refused rather than fed transposed. ``where`` names file and input for the error message.
    """
    size = math.prod(feature_shape)
    known: list[int | None] = [d if isinstance(d, int) and d > 0 else None for d in dims]
    layout: InputLayout | None = None
    if len(known) >= 2:
        window = _fill(known[1:], size)
        if window is not None:
            layout = InputLayout(window, has_batch_axis=True, fixed_batch=known[0])
    if layout is None and known:
        window = _fill(known, size)
        if window is not None:
            layout = InputLayout(window, has_batch_axis=False, fixed_batch=1)
    features = " x ".join(str(n) for n in feature_shape)
    if layout is None:
        raise BundleError(
            f"{where} has shape {shape_text(dims)} but the manifest's frontend gives windows "
            f"of {features} features"
        )
    model_core = [n for n in layout.window_shape if n != 1]
    feature_core = [n for n in feature_shape if n != 1]
    if len(model_core) >= 2 and len(feature_core) >= 2 and model_core != feature_core:
        raise BundleError(
            f"{where} has shape {shape_text(dims)}: same size as the frontend's {features} "
            "windows but a different layout (transposed?)"
        )
    return layout


class Backend(ABC):
    """One loaded model: ``predict`` maps float32 (N, *feature_shape) to (N, n_outputs).

    Subclasses load the model, call `_open` with the input layout, and implement `_run` (one
    model call on input shaped exactly as the model declares it). Not thread-safe: one caller.

    key: the backend's registry key ("onnx", "litert").
    path: the model file.
    feature_shape: one window as the edge computes it: (frames, mels) or (samples,).
    n_outputs: scores per window (the bundle's labels).
    max_batch: windows per model call; None when any batch goes through in one call.
        ``predict`` takes any batch size either way.
    output_name: the model output the scores come from.
    """

    key: ClassVar[str]
    install_command: ClassVar[str]

    path: Path
    feature_shape: tuple[int, ...]
    n_outputs: int
    max_batch: int | None

    def __init__(
        self,
        path: Path,
        *,
        feature_shape: tuple[int, ...],
        n_labels: int,
        threads: int = 1,
        output_name: str | None = None,
    ) -> None:
        """Check the arguments, then let the subclass load the model (``_load``)."""
        if not feature_shape or any(n < 1 for n in feature_shape) or n_labels < 1:
            raise ValueError(f"bad feature shape {feature_shape} or label count {n_labels}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.path = path
        self.feature_shape = tuple(feature_shape)
        self.n_outputs = n_labels
        self.threads = threads
        self.max_batch = 1
        self.output_name = ""
        self._layout = InputLayout(self.feature_shape, has_batch_axis=False, fixed_batch=1)
        self._padded: np.ndarray | None = None
        self._closed = False
        self._load(output_name)

    @abstractmethod
    def _load(self, output_name: str | None) -> None:
        """Load ``self.path`` with ``self.threads`` threads, pick the output, call ``_open``."""

    @classmethod
    @abstractmethod
    def available(cls) -> bool:
        """Whether this backend's runtime can be imported here."""

    @abstractmethod
    def _run(self, model_input: np.ndarray) -> np.ndarray:
        """One model call on float32 input of ``layout.call_shape(rows)``; the raw output."""

    @abstractmethod
    def _release(self) -> None:
        """Drop the runtime's session or interpreter."""

    def _open(self, layout: InputLayout, *, try_batching: bool = False) -> None:
        """Finish loading: check the label count with one window, then decide how to batch.

        A dynamic batch axis, or a fixed batch of 1 that the backend can resize
        (``try_batching``, LiteRT), runs a whole batch per call only if that gives the same
        scores as one-window calls: exported models sometimes hard-code batch 1 inside.
        Windows of ONE_PER_CALL_BYTES or more go one per call without trying.
        """
        self._layout = layout
        fixed = layout.fixed_batch
        self.max_batch = 1 if fixed is None else fixed
        if fixed is not None and fixed > 1:
            # A fixed batch larger than the windows at hand is padded; pad rows are ignored.
            self._padded = np.zeros((fixed, *self.feature_shape), np.float32)
        probe = np.random.default_rng(0).standard_normal((2, *self.feature_shape))
        probe = probe.astype(np.float32)
        try:
            one_by_one = np.concatenate([self.predict(probe[:1]), self.predict(probe[1:])])
        except BundleError:
            raise
        except Exception as err:  # the runtime's own errors: the model cannot run
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise BundleError(f"{self.path}: the model fails on a test window: {message}") from None
        if fixed is not None and not try_batching:
            return
        if one_per_call(self.feature_shape):
            self.max_batch = 1  # not even probed: a batched call would grow the arena
            return
        self.max_batch = None
        try:
            batched = self.predict(probe)
            agrees = np.allclose(batched, one_by_one, rtol=_BATCH_RTOL, atol=_BATCH_ATOL)
        except Exception as err:  # any failure means: this model does not batch
            logger.debug("%s: batched call failed: %s", self.path, err)
            agrees = False
        if not agrees:
            logger.info("%s: one window per model call (it does not take batches)", self.path)
            self.max_batch = 1

    def predict(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Raw model outputs (no activation applied) for a batch of windows.

        batch: float32 (N, *feature_shape). out: optional float32 (N, n_outputs) to fill
        (no allocation per call); a new array otherwise. Returns the (N, n_outputs) scores.
        """
        if self._closed:
            raise RuntimeError(f"{self.path}: backend is closed")
        # Windows may be views into a feature buffer (edge/detection/analysis.py), each one
        # contiguous: only a call on several is made contiguous, not the whole batch at once.
        x = np.asarray(batch, dtype=np.float32)
        if x.shape[1:] != self.feature_shape:
            raise ValueError(
                f"predict wants (N, {', '.join(map(str, self.feature_shape))}), got {x.shape}"
            )
        n = x.shape[0]
        if out is None:
            out = np.empty((n, self.n_outputs), np.float32)
        elif out.shape != (n, self.n_outputs):
            raise ValueError(f"out must be ({n}, {self.n_outputs}), got {out.shape}")
        step = n if self.max_batch is None else self.max_batch
        for start in range(0, n, max(step, 1)):
            stop = min(start + step, n)
            chunk = x[start:stop]
            if self._padded is not None and stop - start < len(self._padded):
                self._padded[: stop - start] = chunk
                chunk = self._padded
            elif not chunk.flags.c_contiguous:
                chunk = np.ascontiguousarray(chunk)
            rows = chunk.shape[0]
            raw = self._run(chunk.reshape(self._layout.call_shape(rows)))
            if raw.size != rows * self.n_outputs:
                raise BundleError(
                    f"{self.path}: output '{self.output_name}' gives {raw.size / rows:g} values "
                    f"per window (shape {list(raw.shape)} for {rows}) but the manifest lists "
                    f"{self.n_outputs} labels"
                )
            out[start:stop] = raw.reshape(rows, self.n_outputs)[: stop - start]
        return out

    def close(self) -> None:
        """Free the runtime's session or interpreter; ``predict`` fails afterwards."""
        self._closed = True
        self._release()

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def pick_output(where: Path, names: Sequence[str], wanted: str | None) -> int:
    """Index of the output named ``wanted`` (the first output when None)."""
    if wanted is None:
        return 0
    if wanted not in names:
        raise BundleError(
            f"{where}: the manifest's output name '{wanted}' is not an output of the model; "
            f"its outputs are: {', '.join(names)}"
        )
    return list(names).index(wanted)


BACKENDS: dict[str, type[Backend]] = {}
B = TypeVar("B", bound=type[Backend])


def register(cls: B) -> B:
    """Class decorator: make a backend available under its ``key``."""
    BACKENDS[cls.key] = cls
    return cls


def load_backends() -> None:
    """Import the backend modules, which register themselves here; imported when first asked
    for, so reading a config or a manifest (which only need the file keys) loads neither."""
    from edge.model.runtime import litert, onnx  # noqa: F401


def backend_for(file_key: str) -> type[Backend]:
    """The backend class for a bundle files key ("onnx-int8", "tflite-fp32", ...)."""
    load_backends()
    backend_key = FILE_FORMATS.get(file_key.partition("-")[0])
    if backend_key is None or backend_key not in BACKENDS:
        raise BundleError(
            f"unknown model file key '{file_key}': expected one of {', '.join(FILE_KEYS)}"
        )
    return BACKENDS[backend_key]
