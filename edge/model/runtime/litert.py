"""LiteRT backend: ``ai_edge_litert``, or the older ``tflite_runtime`` where it is the only one.

Integer (int8, uint8, int16) input and output tensors are quantized and dequantized here with
the tensor's scale and zero point, so callers always see float windows and float scores.

An output name that is not a model output but an intermediate tensor (a backbone's embedding
layer, edge.model.backbone) is read after each call from an interpreter that keeps all its
tensors; that interpreter runs without the XNNPACK delegate, so it is slower.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from edge.errors import BundleError, RuntimeUnavailable
from edge.model.runtime.base import Backend, pick_output, plan_input, register

INSTALL_COMMAND = "pip install 'soundwatch[tflite]'"


def _interpreter_class() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            # Only 32-bit Arm lacks ai_edge_litert wheels; tflite_runtime needs numpy<2 there.
            from tflite_runtime.interpreter import Interpreter
        except ImportError:
            raise RuntimeUnavailable(
                f"LiteRT is not installed (needed for .tflite models): {INSTALL_COMMAND}"
            ) from None
    return Interpreter


class _Quantization:
    """Per-tensor affine quantization of an integer IO tensor: real = scale * (q - zero_point)."""

    def __init__(self, where: str, details: dict[str, Any]) -> None:
        params = details.get("quantization_parameters", {})
        scales = np.asarray(params.get("scales", []), np.float64)
        zero_points = np.asarray(params.get("zero_points", []), np.int64)
        if scales.size == 0:  # older runtimes only fill the (scale, zero_point) pair
            scale, zero_point = details.get("quantization", (0.0, 0))
            scales, zero_points = np.array([scale]), np.array([zero_point])
        if scales.size != 1 or not scales[0] > 0:
            raise BundleError(
                f"{where} is {np.dtype(details['dtype']).name} without one per-tensor "
                "scale; cannot map float values onto it"
            )
        self.scale = np.float32(scales[0])
        self.zero_point = np.float32(zero_points[0] if zero_points.size else 0)
        info = np.iinfo(details["dtype"])
        self.low, self.high = np.float32(info.min), np.float32(info.max)


DELEGATE_NOTICE = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@contextlib.contextmanager
def _without_delegate_notice() -> Iterator[None]:
    """LiteRT's C++ side prints DELEGATE_NOTICE on stderr at its first interpreter, a line that
    `soundwatch check` and the daemon's log would show as if it meant something. Meanwhile
    file descriptor 2 goes to a temporary file; whatever else lands there is passed on."""
    sys.stderr.flush()
    with tempfile.TemporaryFile() as caught:
        saved = os.dup(2)
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            lines = caught.read().splitlines(keepends=True)
            rest = b"".join(line for line in lines if not line.startswith(DELEGATE_NOTICE))
            if rest:
                os.write(2, rest)


@register
class LiteRTBackend(Backend):
    """A ``.tflite`` model run by the LiteRT interpreter (XNNPACK on the CPU).

    threads: interpreter threads. output_name: the output tensor's name as the interpreter
    reports it (or an intermediate tensor's); the first output when None. A fixed batch of 1
    is resized to the batch at hand when the model still gives the same scores that way;
    otherwise windows go one per call.
    """

    key = "litert"
    install_command = INSTALL_COMMAND

    def _load(self, output_name: str | None) -> None:
        path, threads = self.path, self.threads
        interpreter_class = _interpreter_class()
        try:
            with _without_delegate_notice():
                self._interpreter = interpreter_class(model_path=str(path), num_threads=threads)
                self._interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as err:
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise BundleError(f"{path}: LiteRT cannot load it: {message}") from None

        inputs = self._interpreter.get_input_details()
        if len(inputs) != 1:
            names = ", ".join(d["name"] for d in inputs)
            raise BundleError(f"{path}: the model has {len(inputs)} inputs ({names}); expected 1")
        model_input = inputs[0]
        where = f"{path}: input '{model_input['name']}'"
        self._input_index: int = model_input["index"]
        self._input_quant = self._quantization(where, model_input)

        outputs = self._interpreter.get_output_details()
        output_names = [d["name"] for d in outputs]
        if output_name is not None and output_name not in output_names:
            chosen = self._intermediate(interpreter_class, output_name, output_names)
        else:
            chosen = outputs[pick_output(path, output_names, output_name)]
        self.output_name = chosen["name"]
        self._output_index: int = chosen["index"]
        self._output_quant = self._quantization(f"{path}: output '{chosen['name']}'", chosen)

        # shape_signature keeps -1 for dynamic dimensions; shape reports them as 1.
        dims = [int(d) for d in model_input.get("shape_signature", model_input["shape"])]
        self._input_shape: tuple[int, ...] | None = tuple(int(d) for d in model_input["shape"])
        # Scratch buffers, resized only when the batch size changes.
        self._quantized = np.empty(0, np.float32)
        self._scores = np.empty(0, np.float32)
        layout = plan_input(where, dims, self.feature_shape)
        self._open(layout, try_batching=layout.fixed_batch == 1)

    def _intermediate(self, interpreter_class: Any, name: str, outputs: list[str]) -> Any:
        """Reload keeping every tensor; the details of tensor `name` (BundleError if none)."""
        with warnings.catch_warnings():  # LiteRT warns that this is meant for debugging
            warnings.simplefilter("ignore")
            self._interpreter = interpreter_class(
                model_path=str(self.path),
                num_threads=self.threads,
                experimental_preserve_all_tensors=True,
            )
        self._interpreter.allocate_tensors()
        for details in self._interpreter.get_tensor_details():
            if details["name"] == name:
                return details
        raise BundleError(
            f"{self.path}: '{name}' is neither an output nor a tensor of the model; its outputs"
            f" are: {', '.join(outputs)}"
        )

    @staticmethod
    def _quantization(where: str, details: dict[str, Any]) -> _Quantization | None:
        dtype = np.dtype(details["dtype"])
        if dtype == np.float32:
            return None
        if dtype in (np.int8, np.uint8, np.int16):
            return _Quantization(where, details)
        raise BundleError(f"{where} is {dtype.name}; expected float32, int8, uint8 or int16")

    @classmethod
    def available(cls) -> bool:
        try:
            _interpreter_class()
        except RuntimeUnavailable:
            return False
        return True

    def _resize(self, shape: tuple[int, ...]) -> None:
        self._input_shape = None  # unknown until the resize succeeds: a failure retries it
        # strict=False also allows resizing a batch dimension the model declares fixed.
        self._interpreter.resize_tensor_input(self._input_index, list(shape), strict=False)
        self._interpreter.allocate_tensors()
        self._input_shape = shape

    def _run(self, model_input: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        # A new batch size (or a dynamic frames dimension filled in) resizes once, not per call.
        if model_input.shape != self._input_shape:
            self._resize(model_input.shape)
        # tensor() gives views of the interpreter's own buffers: no copies through set_tensor
        # and get_tensor. The views must be dropped before invoke() (LiteRT checks).
        source = model_input
        quant = self._input_quant
        if quant is not None:
            if self._quantized.shape != model_input.shape:
                self._quantized = np.empty(model_input.shape, np.float32)
            source = self._quantized
            np.divide(model_input, quant.scale, out=source)
            np.add(source, quant.zero_point, out=source)
            np.rint(source, out=source)
            np.clip(source, quant.low, quant.high, out=source)
        target = interpreter.tensor(self._input_index)()
        np.copyto(target, source, casting="unsafe")
        del target
        interpreter.invoke()
        raw = interpreter.tensor(self._output_index)()
        if self._scores.shape != raw.shape:
            self._scores = np.empty(raw.shape, np.float32)
        scores = self._scores
        quant = self._output_quant
        if quant is None:
            np.copyto(scores, raw)
        else:
            np.subtract(raw, quant.zero_point, out=scores, casting="unsafe")
            np.multiply(scores, quant.scale, out=scores)
        del raw
        return scores

    def _release(self) -> None:
        self._interpreter = None
