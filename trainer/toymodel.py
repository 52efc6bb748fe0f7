"""Hand-built linear detectors in ONNX and TFLite, for tests and the demo bundle.

The model scores one log-mel window: ``features [N, frames, mels] -> mean over frames ->
@ W (mels, labels) + b -> sigmoid (or nothing) -> scores [N, labels]``. It is built straight
from the file formats (the ``onnx`` helper API, ``onnxruntime.quantization``, and the TFLite
flatbuffer schema that ships with ``ai_edge_litert``), so neither torch nor TensorFlow is needed.
``reference`` is the same computation in numpy.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import flatbuffers
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Activation = Literal["sigmoid", "none"]

INPUT_NAME = "features"
OUTPUT_NAME = "scores"
# ONNX opset 17 keeps ReduceMean's axes as an attribute; onnxruntime quantizes it fine.
ONNX_OPSET = 17
# Int8 TFLite LOGISTIC requires this fixed output quantization, scale 1/256 and zero point
# -128 (TFLite 8-bit quantization spec).
_LOGISTIC_QUANT = ([1.0 / 256.0], [-128], 0)


def reference(
    features: np.ndarray, W: np.ndarray, b: np.ndarray, *, activation: Activation
) -> np.ndarray:
    """The model in numpy: float32 (N, frames, mels) -> float32 (N, labels)."""
    logits = features.astype(np.float64).mean(axis=1) @ W.astype(np.float64) + b
    if activation == "sigmoid":
        logits = 1.0 / (1.0 + np.exp(-logits))
    return logits.astype(np.float32)


def _check_weights(W: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    if W.ndim != 2 or b.shape != (W.shape[1],):
        raise ValueError(f"W must be (mels, labels) and b (labels,), got {W.shape} and {b.shape}")
    return int(W.shape[0]), int(W.shape[1])


# ---------------------------------------------------------------------------------------- ONNX


def build_onnx(
    path: Path | str,
    W: np.ndarray,
    b: np.ndarray,
    n_frames: int,
    *,
    activation: Activation = "sigmoid",
    batch: Literal["dynamic", "fixed1", "none"] = "dynamic",
    extra_outputs: bool = False,
    input_layout: Literal["NTM", "N1TM"] = "NTM",
) -> None:
    """Write an fp32 ONNX model of the linear detector.

    batch: "dynamic" (symbolic ``N``), "fixed1" (batch dimension 1) or "none" (input is
    [frames, mels]). input_layout "N1TM" adds a channel axis: [N, 1, frames, mels].
    extra_outputs: the outputs become ``logits`` (raw, first), ``embedding`` (the mean log-mel,
    mels values) and ``scores`` (after the activation), to test output selection.
    """
    n_mels, n_labels = _check_weights(W, b)
    batch_dims: dict[str, list[int | str]] = {"dynamic": ["N"], "fixed1": [1], "none": []}
    batch_dim = batch_dims[batch]
    if input_layout == "N1TM":
        if batch == "none":
            raise ValueError("input_layout 'N1TM' needs a batch axis")
        in_dims: list[int | str] = [*batch_dim, 1, n_frames, n_mels]
        mean_axes = [1, 2]
    else:
        in_dims = [*batch_dim, n_frames, n_mels]
        mean_axes = [0] if batch == "none" else [1]
    out_dims: list[int | str] = [*batch_dim, n_labels]
    emb_dims: list[int | str] = [*batch_dim, n_mels]

    score_node = (
        helper.make_node("Sigmoid", ["logits"], [OUTPUT_NAME])
        if activation == "sigmoid"
        else helper.make_node("Identity", ["logits"], [OUTPUT_NAME])
    )
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["embedding"], axes=mean_axes, keepdims=0),
        helper.make_node("MatMul", ["embedding", "W"], ["matmul"]),
        helper.make_node("Add", ["matmul", "b"], ["logits"]),
        score_node,
    ]
    scores = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, out_dims)
    if extra_outputs:
        outputs = [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_dims),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, emb_dims),
            scores,
        ]
    else:
        outputs = [scores]
    graph = helper.make_graph(
        nodes,
        "linear_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, in_dims)],
        outputs,
        initializer=[
            numpy_helper.from_array(W.astype(np.float32), "W"),
            numpy_helper.from_array(b.astype(np.float32), "b"),
        ],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", ONNX_OPSET)],
        producer_name="soundwatch.toymodel",
    )
    # onnxruntime 1.17 (our floor) reads IR version 9; newer onnx writes 10+ by default.
    model.ir_version = 9
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


class _WindowReader:
    """Feeds calibration windows to onnxruntime one at a time, shaped like the model input."""

    def __init__(self, calibration: np.ndarray, input_shape: tuple[int, ...]) -> None:
        self._rows: Iterator[np.ndarray] = (
            row.reshape(input_shape) for row in calibration.astype(np.float32)
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        return None if row is None else {INPUT_NAME: row}


def quantize_onnx(fp32_path: Path | str, int8_path: Path | str, calibration: np.ndarray) -> None:
    """Static QDQ int8 quantization of an fp32 model (per-channel weights), float IO kept.

    calibration: float32 (K, frames, mels) log-mel windows whose ranges set the activation
    scales (min/max calibration).
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    model_input = onnx.load(str(fp32_path)).graph.input[0]
    # One window per calibration step: dynamic dimensions become 1.
    dims = model_input.type.tensor_type.shape.dim
    input_shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._reader = _WindowReader(calibration, input_shape)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self._reader.get_next()

    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and graph optimisation first, as onnxruntime's docs recommend. ONNX's
        # own shape inference covers this graph; the symbolic pass would need sympy.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(int8_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            # uint8 activations with int8 weights is onnxruntime's recommended CPU combination.
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


# -------------------------------------------------------------------------------------- TFLite


_Quant = tuple[list[float], list[int], int]  # scales, zero points, quantized dimension


def _int8_range(values: np.ndarray) -> _Quant:
    """Asymmetric per-tensor int8 quantization covering the values' range; zero stays exact."""
    low, high = min(float(values.min()), 0.0), max(float(values.max()), 0.0)
    scale = max((high - low) / 255.0, 1e-8)
    zero_point = int(np.clip(round(-128 - low / scale), -128, 127))
    return [scale], [zero_point], 0


def build_tflite(
    path: Path | str,
    W: np.ndarray,
    b: np.ndarray,
    n_frames: int,
    *,
    int8: bool,
    calibration: np.ndarray | None = None,
    activation: Activation = "sigmoid",
    batch: Literal["dynamic", "fixed1"] = "dynamic",
) -> None:
    """Write a TFLite model of the linear detector: MEAN, FULLY_CONNECTED, [LOGISTIC].

    int8: full-integer graph (int8 input, activations and output; int8 per-channel weights,
    int32 bias) with scales from the min/max of ``calibration`` (float32 (K, frames, mels)).
    batch "dynamic" marks the batch dimension -1 in the shape signature (resizable).
    """
    from ai_edge_litert import schema_py_generated as fb

    n_mels, n_labels = _check_weights(W, b)
    if int8 and calibration is None:
        raise ValueError("an int8 TFLite model needs calibration windows")
    W32, b32 = W.astype(np.float32), b.astype(np.float32)

    buffers: list[fb.BufferT] = [fb.BufferT()]  # buffer 0: the empty sentinel
    tensors: list[fb.TensorT] = []

    def add_tensor(
        name: str,
        shape: list[int],
        dtype: int,
        data: np.ndarray | None = None,
        quant: _Quant | None = None,
        signature: list[int] | None = None,
    ) -> int:
        tensor = fb.TensorT()
        tensor.name, tensor.shape, tensor.type = name, shape, dtype
        tensor.shapeSignature = signature
        tensor.buffer = 0
        if data is not None:
            buffer = fb.BufferT()
            buffer.data = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=np.uint8)
            buffers.append(buffer)
            tensor.buffer = len(buffers) - 1
        if quant is not None:
            params = fb.QuantizationParametersT()
            params.scale, params.zeroPoint, params.quantizedDimension = quant
            tensor.quantization = params
        tensors.append(tensor)
        return len(tensors) - 1

    batch_signature = -1 if batch == "dynamic" else 1
    act_type = fb.TensorType.INT8 if int8 else fb.TensorType.FLOAT32
    q_in = q_mean = q_logits = q_out = None
    if int8:
        assert calibration is not None
        # Min/max calibration of every activation: input, mean over frames, logits.
        x = calibration.astype(np.float64)
        q_in = _int8_range(x)
        q_mean = _int8_range(x.mean(axis=1))
        q_logits = _int8_range(x.mean(axis=1) @ W32 + b32)
        q_out = _LOGISTIC_QUANT if activation == "sigmoid" else q_logits

    x_id = add_tensor(
        INPUT_NAME,
        [1, n_frames, n_mels],
        act_type,
        quant=q_in,
        signature=[batch_signature, n_frames, n_mels],
    )
    axis_id = add_tensor("mean_axis", [1], fb.TensorType.INT32, np.array([1], np.int32))
    mean_id = add_tensor(
        "embedding", [1, n_mels], act_type, quant=q_mean, signature=[batch_signature, n_mels]
    )
    # FULLY_CONNECTED weights are (out, in).
    if int8:
        assert q_mean is not None
        # Per-channel symmetric int8 weights; bias in int32 at scale s_mean * s_weight.
        w_scale = np.maximum(np.abs(W32).max(axis=0), 1e-8) / 127.0
        w_q = np.clip(np.rint(W32.T / w_scale[:, None]), -127, 127).astype(np.int8)
        b_scale = q_mean[0][0] * w_scale
        b_q = np.rint(b32 / b_scale).astype(np.int32)
        zeros = [0] * n_labels
        w_quant, b_quant = (w_scale.tolist(), zeros, 0), (b_scale.tolist(), zeros, 0)
        w_id = add_tensor("W", [n_labels, n_mels], fb.TensorType.INT8, w_q, quant=w_quant)
        b_id = add_tensor("b", [n_labels], fb.TensorType.INT32, b_q, quant=b_quant)
    else:
        w_id = add_tensor("W", [n_labels, n_mels], fb.TensorType.FLOAT32, W32.T.copy())
        b_id = add_tensor("b", [n_labels], fb.TensorType.FLOAT32, b32)
    out_signature = [batch_signature, n_labels]
    if activation == "sigmoid":
        logits_id = add_tensor(
            "logits", [1, n_labels], act_type, quant=q_logits, signature=out_signature
        )
        out_id = add_tensor(
            OUTPUT_NAME, [1, n_labels], act_type, quant=q_out, signature=out_signature
        )
    else:
        logits_id = out_id = add_tensor(
            OUTPUT_NAME, [1, n_labels], act_type, quant=q_out, signature=out_signature
        )

    # Op versions as the TFLite converter writes them for these input types.
    codes: list[tuple[int, int]] = [
        (fb.BuiltinOperator.MEAN, 2 if int8 else 1),
        (fb.BuiltinOperator.FULLY_CONNECTED, 5 if int8 else 1),
    ]
    if activation == "sigmoid":
        codes.append((fb.BuiltinOperator.LOGISTIC, 2 if int8 else 1))
    operator_codes = []
    for builtin, version in codes:
        code = fb.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = builtin
        code.version = version
        operator_codes.append(code)

    operators: list[fb.OperatorT] = []

    def add_op(
        opcode: int, inputs: list[int], outputs: list[int], options_type: int, options: object
    ) -> None:
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, inputs, outputs
        op.builtinOptionsType, op.builtinOptions = options_type, options
        operators.append(op)

    reducer = fb.ReducerOptionsT()
    reducer.keepDims = False
    add_op(0, [x_id, axis_id], [mean_id], fb.BuiltinOptions.ReducerOptions, reducer)
    fully_connected = fb.FullyConnectedOptionsT()  # no fused activation
    add_op(
        1,
        [mean_id, w_id, b_id],
        [logits_id],
        fb.BuiltinOptions.FullyConnectedOptions,
        fully_connected,
    )
    if activation == "sigmoid":
        add_op(2, [logits_id], [out_id], fb.BuiltinOptions.NONE, None)

    subgraph = fb.SubGraphT()
    subgraph.name = "main"
    subgraph.tensors, subgraph.operators = tensors, operators
    subgraph.inputs, subgraph.outputs = [x_id], [out_id]
    model = fb.ModelT()
    model.version = 3  # the only TFLite schema version
    model.description = "soundwatch.toymodel linear detector"
    model.operatorCodes, model.subgraphs, model.buffers = operator_codes, [subgraph], buffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    Path(path).write_bytes(bytes(builder.Output()))
