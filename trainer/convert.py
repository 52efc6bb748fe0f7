"""Model files from a PyTorch model: ONNX fp32, ONNX int8 (static QDQ) and TFLite int8 (PT2E).

The model takes float32 log-mel windows (N, frames, mels) and returns probabilities. Each
writer takes the model in eval mode on the CPU and a path; `trainer.export` checks the result
through the edge's runtime. Converter imports stay inside the writers: litert-torch pulls in
JAX and takes seconds to import.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import torch

from trainer import toymodel

logger = logging.getLogger(__name__)

INPUT_NAME = toymodel.INPUT_NAME  # "features": the input toymodel.quantize_onnx feeds
OUTPUT_NAME = "scores"
ONNX_OPSET = 18  # the dynamo exporter's lowest; onnxruntime 1.17 (the edge's floor) runs <= 20
ONNX_IR_VERSION = 9  # onnxruntime 1.17 reads IR 9; onnx writes 10 without needing it here
BATCH_WINDOWS = 256  # windows per PyTorch call when scoring and calibrating


def predict_torch(model: torch.nn.Module, windows: np.ndarray) -> np.ndarray:
    """The model's float32 (N, labels) outputs for (N, frames, mels) windows, on the CPU."""
    out = []
    with torch.inference_mode():
        for start in range(0, len(windows), BATCH_WINDOWS):
            batch = np.ascontiguousarray(windows[start : start + BATCH_WINDOWS], np.float32)
            out.append(model(torch.from_numpy(batch)).float().numpy())
    return np.concatenate(out).astype(np.float32)


def write_onnx_fp32(model: torch.nn.Module, path: Path, window_shape: tuple[int, int]) -> None:
    """ONNX fp32 with a dynamic batch axis: input `features` (N, frames, mels), output `scores`.

    The dynamo exporter first (it folds BatchNorm of an eval model into the convolutions); the
    legacy TorchScript exporter when dynamo cannot trace the model.
    """
    import onnx

    sample = (torch.zeros(2, *window_shape),)
    try:
        # The exporter reports each step on stdout; keep the trainer's output readable.
        with contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(
                model,
                sample,
                str(path),
                dynamo=True,
                external_data=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=ONNX_OPSET,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
            )
    except Exception as err:  # any tracing failure: the legacy exporter may still manage
        logger.warning("dynamo ONNX export failed (%s); using the legacy exporter", _first(err))
        torch.onnx.export(
            model,
            sample,
            str(path),
            dynamo=False,
            opset_version=17,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
        )
    proto = onnx.load(str(path))
    proto.ir_version = min(proto.ir_version, ONNX_IR_VERSION)
    onnx.checker.check_model(proto, full_check=True)
    onnx.save(proto, str(path))


def write_onnx_int8(fp32_path: Path, path: Path, calibration: np.ndarray) -> None:
    """Static QDQ int8 of an fp32 ONNX file: `quant_pre_process`, then `quantize_static` with
    per-channel int8 weights and uint8 activations whose min/max ranges come from
    `calibration` (float32 (K, frames, mels)); input and output stay float."""
    toymodel.quantize_onnx(fp32_path, path, calibration)


def write_tflite_int8(
    model: torch.nn.Module, path: Path, calibration: np.ndarray, window_shape: tuple[int, int]
) -> None:
    """Full-integer TFLite via PT2E: int8 input and output, per-channel int8 weights.

    Symmetric int8 activations with histogram observers fed `calibration`; a final sigmoid
    gets TFLite's fixed output quantization (scale 1/256, zero point -128). Calibrated with a
    dynamic batch, converted with a batch of 1: litert-torch 0.10 cannot lower a dynamic batch
    through the model's unsqueeze, and the edge's LiteRT backend resizes or loops.
    """
    os.environ.setdefault("LITERT_TORCH_SHOW_PROGRESS", "n")  # no progress lines per stage
    import litert_torch
    from litert_torch.quantize import pt2e_quantizer
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    exported = torch.export.export(
        model, (torch.zeros(2, *window_shape),), dynamic_shapes=({0: batch},)
    ).module()
    _softmax_for_quantizer(exported)
    quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
        pt2e_quantizer.get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False)
    )
    prepared = prepare_pt2e(exported, quantizer)
    predict_torch(prepared, calibration)  # the observers record activation ranges
    quantized = convert_pt2e(prepared, fold_quantize=False)
    move_exported_model_to_eval(quantized)
    # litert-torch warns about modules left in training mode by reading this flag, which
    # eval() may not set on an exported graph; the graph above is already in eval form.
    quantized.training = False
    edge_model = litert_torch.convert(
        quantized, (torch.zeros(1, *window_shape),), quant_config=QuantConfig(quantizer)
    )
    edge_model.export(str(path))


def explicit_padding(model: torch.nn.Module) -> None:
    """Give convolutions with `padding="same"` the equal explicit padding, in place.

    "same" exports as `aten.conv2d.padding`, which litert-torch's PT2E quantizer does not
    match (it annotates `aten.conv2d.default`), so those convolutions would stay float in
    the TFLite file. With stride 1 and an odd (dilated) kernel, "same" is symmetric padding
    of (kernel - 1) / 2 and the results are identical; other cases are left as they are.
    """
    for module in model.modules():
        if not isinstance(module, torch.nn.Conv2d) or module.padding != "same":
            continue
        spans = [d * (k - 1) for d, k in zip(module.dilation, module.kernel_size, strict=True)]
        if module.padding_mode == "zeros" and all(span % 2 == 0 for span in spans):
            module.padding = tuple(span // 2 for span in spans)
        else:
            logger.warning("%s: asymmetric 'same' padding stays float in TFLite", module)


def _softmax_for_quantizer(graph: torch.fx.GraphModule) -> None:
    """Spell softmax as `aten._softmax`, the form the quantizer gives int8 output (fixed
    scale 1/256); torch.export writes `aten.softmax.int`, which would stay float."""
    for node in graph.graph.nodes:
        if node.op == "call_function" and node.target == torch.ops.aten.softmax.int:
            x, dim = node.args[:2]
            node.target = torch.ops.aten._softmax.default
            node.args, node.kwargs = (x, dim, False), {}
    graph.recompile()


def _first(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
