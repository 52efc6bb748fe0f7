"""The runtime interface on real ONNX and TFLite models built by trainer.toymodel.

Every model is the linear detector ``sigmoid(x.mean(1) @ W + b)``; scores are checked against
numpy. int8 models must agree within a few quantization steps of their logits.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest

from edge.errors import BundleError, RuntimeUnavailable
from edge.model.runtime import available_backends, open_backend
from edge.model.runtime.base import ONE_PER_CALL_BYTES, Backend, InputLayout, plan_input
from trainer import toymodel

FRAMES, MELS, LABELS = 24, 16, 3
FEATURES = (FRAMES, MELS)


def _log_mel_windows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Log-mel-like windows: a per-window spectrum level plus frame-to-frame variation."""
    level = rng.normal(-6.0, 2.0, (n, 1, MELS))
    return (level + rng.normal(0.0, 1.0, (n, FRAMES, MELS))).astype(np.float32)


@pytest.fixture(scope="module")
def weights() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    W = rng.normal(0.0, 0.4, (MELS, LABELS)).astype(np.float32)
    b = np.array([2.0, 1.0, -0.5], np.float32)
    return W, b


@pytest.fixture(scope="module")
def calibration() -> np.ndarray:
    return _log_mel_windows(np.random.default_rng(2), 256)


@pytest.fixture(scope="module")
def windows() -> np.ndarray:
    return _log_mel_windows(np.random.default_rng(3), 64)


def _int8_tolerance(
    calibration: np.ndarray, W: np.ndarray, b: np.ndarray, activation: str
) -> float:
    """Three quantization steps of the logits (int8 over their calibrated range, zero included);
    through a sigmoid (slope <= 1/4) plus one step of its 1/256 output grid."""
    logits = calibration.mean(axis=1) @ W + b
    step = (max(float(logits.max()), 0.0) - min(float(logits.min()), 0.0)) / 255.0
    return 3 * step if activation == "none" else 0.25 * 3 * step + 1.0 / 256.0


def _build(
    kind: str, directory: Path, W: np.ndarray, b: np.ndarray, cal: np.ndarray, **options: Any
) -> Path:
    """Build one model file for a bundle files key; options go to the toymodel builder."""
    if kind == "onnx-fp32":
        path = directory / "model.fp32.onnx"
        toymodel.build_onnx(path, W, b, FRAMES, **options)
    elif kind == "onnx-int8":
        fp32 = directory / "model.fp32.onnx"
        toymodel.build_onnx(fp32, W, b, FRAMES, **options)
        path = directory / "model.int8.onnx"
        toymodel.quantize_onnx(fp32, path, cal)
    else:
        pytest.importorskip("ai_edge_litert")
        int8 = kind == "tflite-int8"
        path = directory / f"model.{'int8' if int8 else 'fp32'}.tflite"
        toymodel.build_tflite(path, W, b, FRAMES, int8=int8, calibration=cal, **options)
    return path


KINDS = ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_scores_match_numpy(
    kind: str,
    activation: toymodel.Activation,
    tmp_path: Path,
    weights: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
    windows: np.ndarray,
) -> None:
    W, b = weights
    path = _build(kind, tmp_path, W, b, calibration, activation=activation)
    expected = toymodel.reference(windows, W, b, activation=activation)
    with open_backend(kind, path, feature_shape=FEATURES, n_labels=LABELS) as backend:
        scores = backend.predict(windows)
        assert backend.max_batch is None  # dynamic batch: the whole batch in one call
    assert scores.dtype == np.float32 and scores.shape == (64, LABELS)
    if kind.endswith("fp32"):
        np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)
    else:
        tolerance = _int8_tolerance(calibration, W, b, activation)
        assert np.abs(scores - expected).max() <= tolerance
    if activation == "none":
        # Raw logits come back untouched: well outside [0, 1].
        assert scores.min() < -0.5 and scores.max() > 1.5


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_of_one_equals_batch_of_64(
    kind: str,
    threads: int,
    tmp_path: Path,
    weights: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
    windows: np.ndarray,
) -> None:
    path = _build(kind, tmp_path, *weights, calibration)
    backend = open_backend(kind, path, feature_shape=FEATURES, n_labels=LABELS, threads=threads)
    batched = backend.predict(windows)
    one_by_one = np.concatenate([backend.predict(windows[i : i + 1]) for i in range(64)])
    np.testing.assert_allclose(one_by_one, batched, atol=1e-6, rtol=0)
    out = np.full((64, LABELS), np.nan, np.float32)
    assert backend.predict(windows, out=out) is out
    np.testing.assert_array_equal(out, batched)
    assert backend.predict(windows[:0]).shape == (0, LABELS)
    backend.close()
    with pytest.raises(RuntimeError, match="closed"):
        backend.predict(windows[:1])


@pytest.mark.parametrize(
    ("kind", "options", "max_batch"),
    [
        ("onnx-fp32", {"batch": "fixed1"}, 1),  # ONNX Runtime enforces the fixed 1: loop
        ("onnx-int8", {"batch": "fixed1"}, 1),
        ("onnx-fp32", {"batch": "none"}, 1),  # input [frames, mels]
        ("onnx-int8", {"batch": "none"}, 1),
        ("onnx-fp32", {"input_layout": "N1TM"}, None),  # input [N, 1, frames, mels]
        ("onnx-int8", {"input_layout": "N1TM"}, None),
        ("onnx-fp32", {"input_layout": "N1TM", "batch": "fixed1"}, 1),
        ("tflite-fp32", {"batch": "fixed1"}, None),  # LiteRT resizes the batch of 1
        ("tflite-int8", {"batch": "fixed1"}, None),
    ],
)
def test_input_layouts(
    kind: str,
    options: dict[str, Any],
    max_batch: int | None,
    tmp_path: Path,
    weights: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
    windows: np.ndarray,
) -> None:
    W, b = weights
    path = _build(kind, tmp_path, W, b, calibration, **options)
    backend = open_backend(kind, path, feature_shape=FEATURES, n_labels=LABELS)
    assert backend.max_batch == max_batch
    expected = toymodel.reference(windows, W, b, activation="sigmoid")
    tolerance = 1e-5 if kind.endswith("fp32") else _int8_tolerance(calibration, W, b, "sigmoid")
    assert np.abs(backend.predict(windows) - expected).max() <= tolerance
    single = backend.predict(windows[5:6])
    np.testing.assert_allclose(single, backend.predict(windows)[5:6], atol=1e-6, rtol=0)


@pytest.mark.parametrize("batch", ["dynamic", "none"])
def test_waveform_input(batch: Literal["dynamic", "none"], tmp_path: Path) -> None:
    """A model on raw samples: [N, samples, 1] or [samples, 1] takes (samples,) windows."""
    samples = 400
    W = np.array([[2.0, -3.0]], np.float32)
    b = np.array([0.1, 0.2], np.float32)
    waves = np.random.default_rng(4).uniform(-1, 1, (8, samples)).astype(np.float32)
    expected = toymodel.reference(waves[:, :, None], W, b, activation="none")
    path = tmp_path / "wave.onnx"
    toymodel.build_onnx(path, W, b, samples, activation="none", batch=batch)
    backend = open_backend("onnx-fp32", path, feature_shape=(samples,), n_labels=2)
    np.testing.assert_allclose(backend.predict(waves), expected, atol=1e-5)


def test_output_selection(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    W, b = weights
    path = tmp_path / "multi.onnx"
    toymodel.build_onnx(path, W, b, FRAMES, extra_outputs=True)  # logits, embedding, scores
    logits = toymodel.reference(windows, W, b, activation="none")
    default = open_backend("onnx-fp32", path, feature_shape=FEATURES, n_labels=LABELS)
    assert default.output_name == "logits"  # the first output
    np.testing.assert_allclose(default.predict(windows), logits, atol=1e-5)
    named = open_backend(
        "onnx-fp32", path, feature_shape=FEATURES, n_labels=LABELS, output_name="scores"
    )
    np.testing.assert_allclose(named.predict(windows), 1 / (1 + np.exp(-logits)), atol=1e-5)

    with pytest.raises(BundleError) as unknown:
        open_backend("onnx-fp32", path, feature_shape=FEATURES, n_labels=3, output_name="prob")
    assert str(path) in str(unknown.value)
    assert "'prob'" in str(unknown.value) and "logits, embedding, scores" in str(unknown.value)
    with pytest.raises(
        BundleError, match=r"output 'embedding' gives 16 values per window .* 3 labels"
    ):
        open_backend("onnx-fp32", path, feature_shape=FEATURES, n_labels=3, output_name="embedding")


@pytest.mark.parametrize("kind", KINDS)
def test_shape_mismatches_name_file_and_shapes(
    kind: str,
    tmp_path: Path,
    weights: tuple[np.ndarray, np.ndarray],
    calibration: np.ndarray,
) -> None:
    path = _build(kind, tmp_path, *weights, calibration)
    with pytest.raises(BundleError) as frames:
        open_backend(kind, path, feature_shape=(113, 32), n_labels=LABELS)
    message = str(frames.value)
    assert message.startswith(f"{path}: input 'features' has shape [")
    assert f"{FRAMES}, {MELS}]" in message and "windows of 113 x 32 features" in message
    with pytest.raises(BundleError) as labels:
        open_backend(kind, path, feature_shape=FEATURES, n_labels=5)
    assert str(path) in str(labels.value)
    assert "gives 3 values per window" in str(labels.value) and "lists 5 labels" in str(
        labels.value
    )
    with pytest.raises(BundleError, match="different layout"):
        open_backend(kind, path, feature_shape=(MELS, FRAMES), n_labels=LABELS)


def test_unloadable_files(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="model file not found"):
        open_backend("onnx-int8", tmp_path / "absent.onnx", feature_shape=FEATURES, n_labels=1)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    with pytest.raises(BundleError, match=r"junk.onnx: ONNX Runtime cannot load it"):
        open_backend("onnx-int8", junk, feature_shape=FEATURES, n_labels=1)
    with pytest.raises(BundleError, match="unknown model file key 'pt-fp32'"):
        open_backend("pt-fp32", junk, feature_shape=FEATURES, n_labels=1)
    if available_backends()["litert"]:
        with pytest.raises(BundleError, match=r"junk.onnx: LiteRT cannot load it"):
            open_backend("tflite-int8", junk, feature_shape=FEATURES, n_labels=1)


def test_integer_onnx_input_is_refused(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        "int_input",
        [helper.make_tensor_value_info("x", TensorProto.INT8, ["N", FRAMES, MELS])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", FRAMES, MELS])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    path = tmp_path / "int.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BundleError, match=r"int.onnx: input 'x' is tensor\(int8\)"):
        open_backend("onnx-int8", path, feature_shape=FEATURES, n_labels=1)


@pytest.mark.parametrize(
    ("dims", "feature_shape", "layout"),
    [
        (["N", 24, 16], (24, 16), InputLayout((24, 16), True, None)),
        ([-1, 24, 16], (24, 16), InputLayout((24, 16), True, None)),
        ([1, 24, 16], (24, 16), InputLayout((24, 16), True, 1)),
        ([4, 24, 16], (24, 16), InputLayout((24, 16), True, 4)),
        ([24, 16], (24, 16), InputLayout((24, 16), False, 1)),
        ([None, 1, 24, 16], (24, 16), InputLayout((1, 24, 16), True, None)),
        ([None, 24, 16, 1], (24, 16), InputLayout((24, 16, 1), True, None)),
        ([None, "frames", 16], (24, 16), InputLayout((24, 16), True, None)),
        ([None, 384], (24, 16), InputLayout((384,), True, None)),
        ([16000], (16000,), InputLayout((16000,), False, 1)),
        (["batch", 16000], (16000,), InputLayout((16000,), True, None)),
        ([1, 16000], (16000,), InputLayout((16000,), True, 1)),
    ],
)
def test_plan_input(
    dims: list[int | str | None], feature_shape: tuple[int, ...], layout: InputLayout
) -> None:
    assert plan_input("m.onnx: input 'x'", dims, feature_shape) == layout


@pytest.mark.parametrize(
    ("dims", "text"),
    [
        ([1, 100, 40], "has shape [1, 100, 40] but"),
        (["N", 100, 40], "has shape [N, 100, 40] but"),
        ([None, None, None], "has shape [?, ?, ?] but"),
        ([None, 32, 113], "same size as the frontend's 113 x 32 windows but a different layout"),
    ],
)
def test_plan_input_refuses(dims: list[int | str | None], text: str) -> None:
    with pytest.raises(BundleError) as error:
        plan_input("model.int8.onnx: input 'x'", dims, (113, 32))
    assert str(error.value).startswith("model.int8.onnx: input 'x' has shape")
    assert text in str(error.value)


class _NumpyBackend(Backend):
    """The toy detector in numpy behind the Backend machinery, declaring a given input.

    ``broken_batching`` mimics an export that hard-codes batch 1 inside the graph: a batched
    call returns the first window's scores for every row.
    """

    key = "numpy-test"
    install_command = ""

    def __init__(
        self, W: np.ndarray, b: np.ndarray, dims: list[int | str | None], broken_batching: bool
    ) -> None:
        self.W, self.b, self.broken, self.calls = W, b, broken_batching, 0
        self.dims = dims
        super().__init__(Path("toy.npy"), feature_shape=FEATURES, n_labels=LABELS)

    def _load(self, output_name: str | None) -> None:
        self._open(plan_input("toy.npy: input 'x'", self.dims, FEATURES))

    @classmethod
    def available(cls) -> bool:
        return True

    def _run(self, model_input: np.ndarray) -> np.ndarray:
        self.calls += 1
        scores = toymodel.reference(model_input, self.W, self.b, activation="sigmoid")
        return np.repeat(scores[:1], len(scores), axis=0) if self.broken else scores

    def _release(self) -> None:
        pass


def test_heavy_windows_go_one_per_call(tmp_path: Path) -> None:
    """Windows of ONE_PER_CALL_BYTES or more (BirdNET's 563 KiB) go one per model call even
    where the model takes any batch: a batched call is no faster a window, only a larger arena.
    The scores are the batch's all the same."""
    samples = ONE_PER_CALL_BYTES // 4
    W = np.array([[2.0, -3.0]], np.float32)
    b = np.array([0.1, 0.2], np.float32)
    waves = np.random.default_rng(5).uniform(-1, 1, (3, samples)).astype(np.float32)
    heavy, light = tmp_path / "heavy.onnx", tmp_path / "light.onnx"
    toymodel.build_onnx(heavy, W, b, samples, activation="none", batch="dynamic")
    toymodel.build_onnx(light, W, b, samples - 1, activation="none", batch="dynamic")
    backend = open_backend("onnx-fp32", heavy, feature_shape=(samples,), n_labels=2)
    assert backend.max_batch == 1
    expected = toymodel.reference(waves[:, :, None], W, b, activation="none")
    np.testing.assert_allclose(backend.predict(waves), expected, atol=1e-5)
    smaller = open_backend("onnx-fp32", light, feature_shape=(samples - 1,), n_labels=2)
    assert smaller.max_batch is None  # a window a sample smaller still batches


def test_batching_is_trusted_only_when_it_agrees(
    weights: tuple[np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    W, b = weights
    expected = toymodel.reference(windows, W, b, activation="sigmoid")
    good = _NumpyBackend(W, b, ["N", FRAMES, MELS], broken_batching=False)
    assert good.max_batch is None
    broken = _NumpyBackend(W, b, ["N", FRAMES, MELS], broken_batching=True)
    assert broken.max_batch == 1  # fell back to one window per call
    np.testing.assert_allclose(broken.predict(windows), expected, atol=1e-6)


def test_fixed_batch_larger_than_one_is_padded(
    weights: tuple[np.ndarray, np.ndarray], windows: np.ndarray
) -> None:
    W, b = weights
    backend = _NumpyBackend(W, b, [4, FRAMES, MELS], broken_batching=False)
    assert backend.max_batch == 4
    backend.calls = 0
    scores = backend.predict(windows[:10])
    assert backend.calls == 3  # 4 + 4 + 2 windows (the last call padded)
    expected = toymodel.reference(windows[:10], W, b, activation="sigmoid")
    np.testing.assert_allclose(scores, expected, atol=1e-6)


# The one test that fakes: a runtime cannot be uninstalled here, so a None entry in
# sys.modules makes its import fail exactly as on a device without it.
@pytest.mark.parametrize(
    ("kind", "modules", "command"),
    [
        ("onnx-int8", ["onnxruntime"], "pip install onnxruntime"),
        (
            "tflite-int8",
            ["ai_edge_litert", "ai_edge_litert.interpreter", "tflite_runtime",
             "tflite_runtime.interpreter"],
            "pip install 'soundwatch[tflite]'",
        ),
    ],
)  # fmt: skip
def test_missing_runtime_gives_install_command(
    kind: str,
    modules: list[str],
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = tmp_path / "model.bin"
    path.write_bytes(b"\0")
    for module in modules:
        monkeypatch.setitem(sys.modules, module, None)
    backend_key = "onnx" if kind.startswith("onnx") else "litert"
    assert available_backends()[backend_key] is False
    with pytest.raises(RuntimeUnavailable) as error:
        open_backend(kind, path, feature_shape=FEATURES, n_labels=1)
    assert str(error.value).endswith(command)


def test_available_backends_here() -> None:
    backends = available_backends()
    assert set(backends) == {"onnx", "litert"}
    assert backends["onnx"] is True


def test_toymodel_int8_files_are_quantized(
    tmp_path: Path, weights: tuple[np.ndarray, np.ndarray], calibration: np.ndarray
) -> None:
    """The int8 files really are int8, so the backends' quantization paths are exercised."""
    import onnx

    onnx_path = _build("onnx-int8", tmp_path, *weights, calibration)
    graph = onnx.load(str(onnx_path)).graph
    ops = [node.op_type for node in graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops
    scales = {init.name: init for init in graph.initializer}
    weight_dq = next(n for n in graph.node if n.op_type == "DequantizeLinear" and "W" in n.input[0])
    assert list(scales[weight_dq.input[1]].dims) == [LABELS]  # per-channel weight scales
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT

    pytest.importorskip("ai_edge_litert")
    from ai_edge_litert.interpreter import Interpreter

    tflite_path = _build("tflite-int8", tmp_path, *weights, calibration)
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    output = interpreter.get_output_details()[0]
    assert output["dtype"] == np.int8
    assert output["quantization"] == (1.0 / 256.0, -128)  # the int8 LOGISTIC output grid
    dtypes = {d["name"]: d["dtype"] for d in interpreter.get_tensor_details()}
    assert dtypes["W"] == np.int8 and dtypes["b"] == np.int32
    assert dtypes["embedding"] == np.int8 and dtypes["logits"] == np.int8
