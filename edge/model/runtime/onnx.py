"""ONNX Runtime backend (CPU). Quantized models are QDQ, so their input and output stay float."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge.errors import BundleError, RuntimeUnavailable
from edge.model.runtime.base import Backend, pick_output, plan_input, register

INSTALL_COMMAND = "pip install onnxruntime"

# ONNX element types we can feed (float windows, cast once per call) and read back.
_FLOAT_TYPES: dict[str, type[np.floating[Any]]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
}


def _import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeUnavailable(f"ONNX Runtime is not installed: {INSTALL_COMMAND}") from None
    return onnxruntime


@register
class OnnxBackend(Backend):
    """A model run by ONNX Runtime on the CPU.

    threads: intra-op threads for one call (inter-op 1, sequential execution: these models
    are a short chain of ops, and a Pi has few cores to share with the audio thread).
    output_name: which model output holds the scores; the first when None.
    """

    key = "onnx"
    install_command = INSTALL_COMMAND

    def _load(self, output_name: str | None) -> None:
        path, threads = self.path, self.threads
        ort = _import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle worker threads would otherwise spin between windows, burning a core on a Pi.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.log_severity_level = 3  # errors only: no per-load warnings in the daemon log
        try:
            self._session = ort.InferenceSession(
                str(path), options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own Exception subclasses
            message = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise BundleError(f"{path}: ONNX Runtime cannot load it: {message}") from None

        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise BundleError(f"{path}: the model has {len(inputs)} inputs ({names}); expected 1")
        model_input = inputs[0]
        dtype = _FLOAT_TYPES.get(model_input.type)
        if dtype is None:
            raise BundleError(
                f"{path}: input '{model_input.name}' is {model_input.type}, but soundwatch feeds "
                "float features; export with float input (QDQ quantization keeps float IO)"
            )
        self._input_name: str = model_input.name
        self._input_dtype = np.dtype(dtype)

        outputs = self._session.get_outputs()
        chosen = outputs[pick_output(path, [o.name for o in outputs], output_name)]
        if chosen.type not in _FLOAT_TYPES:
            raise BundleError(f"{path}: output '{chosen.name}' is {chosen.type}; expected float")
        self.output_name = chosen.name
        self._output_names = [chosen.name]
        self._feed: dict[str, np.ndarray] = {}

        layout = plan_input(
            f"{path}: input '{self._input_name}'", list(model_input.shape), self.feature_shape
        )
        # ONNX Runtime enforces fixed dimensions, so only a dynamic batch axis can batch.
        self._open(layout)

    @classmethod
    def available(cls) -> bool:
        try:
            _import_onnxruntime()
        except RuntimeUnavailable:
            return False
        return True

    def _run(self, model_input: np.ndarray) -> np.ndarray:
        if model_input.dtype != self._input_dtype:
            model_input = model_input.astype(self._input_dtype)
        # The feed dict is reused; only its one value changes per call.
        self._feed[self._input_name] = model_input
        result: np.ndarray = self._session.run(self._output_names, self._feed)[0]
        return result

    def _release(self) -> None:
        self._feed.clear()
        self._session = None
