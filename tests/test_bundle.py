"""Model bundles (ARCHITECTURE.md, Contract 1): the tone bundle loads with the right sizes and
opens in every format; each broken manifest or file is refused with a BundleError that names the
field or file and the manifest line.

Broken bundles are copies of a session-built tone bundle with one thing changed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from edge.errors import BundleError, ConfigError
from edge.model.bundle import PREFERENCE, Bundle, FrontendManifest, load_bundle, sha256_of
from edge.model.frontend import LogMelSpec
from trainer.config import FeaturesConfig
from trainer.toybundle import make_tone_bundle

HAS_LITERT = importlib.util.find_spec("ai_edge_litert") is not None

# The tone bundle: 16 kHz, 0.5 s windows every 0.1 s, 512-point FFT, hop 160, 40 mels.
TONE_WINDOW_SAMPLES = 8000
TONE_HOP_SAMPLES = 1600
TONE_FRAMES = 1 + (TONE_WINDOW_SAMPLES - 512) // 160  # 47 frames without centre padding
TONE_FEATURES = (TONE_FRAMES, 40)


@pytest.fixture(scope="session")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, valid tone bundle (ONNX fp32, ONNX int8, TFLite int8); do not modify it."""
    return make_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone")


def _copy(bundle: Path, to: Path) -> Path:
    return Path(shutil.copytree(bundle, to / bundle.name))


def _edit(folder: Path, change: Callable[[dict[str, Any]], None]) -> Path:
    """Load the manifest as data, apply `change`, write it back (block style, as the trainer)."""
    path = folder / "manifest.yaml"
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return folder


def _line(folder: Path, text: str, after: str | None = None) -> int:
    """1-based line of the first manifest line starting (after indent) with `text`; with
    `after`, the first such line below the line starting with `after`."""
    lines = (folder / "manifest.yaml").read_text().splitlines()
    start = 0 if after is None else _line(folder, after)
    for number, line in enumerate(lines[start:], start + 1):
        if line.strip().startswith(text):
            return number
    raise AssertionError(f"{text!r} not in the manifest")


def _refused(folder: Path) -> str:
    with pytest.raises(BundleError) as caught:
        load_bundle(folder)
    return str(caught.value)


def _manifest(folder: Path) -> str:
    return str(folder / "manifest.yaml")


# --- the valid bundle --------------------------------------------------------------------------


def test_tone_bundle_loads_with_derived_sizes(tone_bundle: Path) -> None:
    bundle = load_bundle(tone_bundle)
    assert bundle.folder == tone_bundle
    assert bundle.labels == ["tone-1k", "tone-3k"]
    assert bundle.sample_rate_hz == 16000
    assert bundle.window_samples == TONE_WINDOW_SAMPLES
    assert bundle.hop_samples == TONE_HOP_SAMPLES
    assert bundle.feature_shape == (47, 40) == TONE_FEATURES
    assert bundle.logmel is not None
    assert (bundle.logmel.n_fft, bundle.logmel.hop_length, bundle.logmel.n_mels) == (512, 160, 40)
    assert bundle.manifest.output.activation == "none"
    assert bundle.manifest.thresholds == {"tone-1k": 0.5, "tone-3k": 0.5}
    assert bundle.manifest.events.min_duration_seconds == 0.0
    assert bundle.manifest.events.merge_gap_seconds == 0.1
    assert bundle.manifest.events.median_windows == 1
    assert bundle.manifest.events.max_duration_seconds == 0.0  # not in the manifest: default
    assert sorted(bundle.manifest.files) == ["onnx-fp32", "onnx-int8", "tflite-int8"]
    for entry in bundle.manifest.files.values():
        assert sha256_of(tone_bundle / entry.path) == entry.sha256


@pytest.mark.parametrize("key", ["onnx-int8", "onnx-fp32", "tflite-int8"])
def test_every_file_opens_and_scores(tone_bundle: Path, key: str) -> None:
    if key.startswith("tflite") and not HAS_LITERT:
        pytest.skip("ai_edge_litert not installed: pip install 'soundwatch[tflite]'")
    bundle = load_bundle(tone_bundle)
    backend = bundle.open(key, threads=1)
    assert backend.feature_shape == TONE_FEATURES
    # Flat log-mel windows score low: the tone's bands are no louder than the rest.
    scores = backend.predict(np.full((3, *TONE_FEATURES), -5.0, np.float32))
    assert scores.shape == (3, 2)
    assert np.all((scores >= 0.0) & (scores <= 0.05))


def test_choose_file_auto_prefers_int8_and_litert_where_installed(tone_bundle: Path) -> None:
    bundle = load_bundle(tone_bundle)
    assert PREFERENCE == ("tflite-int8", "onnx-int8", "tflite-fp32", "onnx-fp32")
    expected = "tflite-int8" if HAS_LITERT else "onnx-int8"
    assert bundle.choose_file("auto") == expected
    assert bundle.choose_file("onnx-int8") == "onnx-int8"
    backend = "LiteRTBackend" if HAS_LITERT else "OnnxBackend"
    assert type(bundle.open("auto")).__name__ == backend


def test_choose_file_auto_falls_back_in_preference_order(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["files"].pop("tflite-int8"))
    assert load_bundle(folder).choose_file() == "onnx-int8"
    _edit(folder, lambda m: m["files"].pop("onnx-int8"))
    assert load_bundle(folder).choose_file() == "onnx-fp32"


@pytest.mark.skipif(not HAS_LITERT, reason="ai_edge_litert not installed")
def test_tflite_only_bundle_opens_with_auto(tone_bundle: Path, tmp_path: Path) -> None:
    def tflite_only(m: dict[str, Any]) -> None:
        del m["files"]["onnx-int8"], m["files"]["onnx-fp32"]

    bundle = load_bundle(_edit(_copy(tone_bundle, tmp_path), tflite_only))
    assert bundle.choose_file("auto") == "tflite-int8"
    assert type(bundle.open("auto")).__name__ == "LiteRTBackend"


def test_asking_for_a_missing_file_kind_names_what_the_bundle_has(tone_bundle: Path) -> None:
    bundle = load_bundle(tone_bundle)
    with pytest.raises(BundleError) as caught:
        bundle.choose_file("tflite-fp32")
    message = str(caught.value)
    assert str(tone_bundle) in message
    assert "'tflite-fp32'" in message
    assert "onnx-fp32, onnx-int8, tflite-int8" in message


def test_hop_for_checks_the_frame_grid(tone_bundle: Path) -> None:
    bundle = load_bundle(tone_bundle)
    assert bundle.hop_for(None) == TONE_HOP_SAMPLES
    assert bundle.hop_for(0.2) == 3200
    assert bundle.hop_for(0.01) == 160
    with pytest.raises(ConfigError, match=r"1680 samples, not a multiple of .*\(160\)"):
        bundle.hop_for(0.105)
    for bad in (0.0, -0.1, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match="hop_seconds"):
            bundle.hop_for(bad)


# --- refused bundles ---------------------------------------------------------------------------


def test_folder_without_manifest_is_refused(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\0")
    message = _refused(tmp_path)
    assert message == f"{tmp_path}: not a model bundle (no manifest.yaml)"


def test_a_file_or_missing_path_is_not_a_bundle(tone_bundle: Path, tmp_path: Path) -> None:
    manifest = tone_bundle / "manifest.yaml"
    assert "not a folder" in _refused(manifest)
    assert str(manifest) in _refused(manifest)
    assert _refused(tmp_path / "nothing") == f"{tmp_path / 'nothing'}: no such bundle folder"


def test_unknown_format_is_refused_before_anything_else(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)

    def future(m: dict[str, Any]) -> None:
        m["format"] = "soundwatch-bundle/2"
        del m["labels"]  # would be a missing field in format 1
        m["frontend"] = {"kind": "spectrogram"}  # would be a bad choice in format 1

    _edit(folder, future)
    (folder / "model.int8.onnx").unlink()  # would be a missing file in format 1
    message = _refused(folder)
    assert message.splitlines() == [
        f"{_manifest(folder)}:1: format: unknown bundle format 'soundwatch-bundle/2'"
        " (this soundwatch reads soundwatch-bundle/1)"
    ]


@pytest.mark.parametrize("missing", ["labels", "task", "sample_rate", "frontend", "files"])
def test_missing_required_field_is_named(tone_bundle: Path, tmp_path: Path, missing: str) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m.pop(missing))
    message = _refused(folder)
    assert f"{_manifest(folder)}:1: (top level): missing required key '{missing}'" in message


def test_label_without_threshold(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["thresholds"].pop("tone-3k"))
    line = _line(folder, "thresholds:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: thresholds: no threshold for label 'tone-3k'"
    )


@pytest.mark.parametrize("value", [1.5, -0.01])
def test_threshold_outside_0_1(tone_bundle: Path, tmp_path: Path, value: float) -> None:
    folder = _edit(
        _copy(tone_bundle, tmp_path), lambda m: m["thresholds"].update({"tone-3k": value})
    )
    line = _line(folder, "tone-3k:", after="thresholds:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: thresholds.tone-3k: must be within 0..1, got {value}"
    )


def test_threshold_for_an_unknown_label(tone_bundle: Path, tmp_path: Path) -> None:
    # A label with a dot: the message must still find its line.
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["thresholds"].update({"tone.5k": 0.5}))
    line = _line(folder, "tone.5k:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: thresholds.tone.5k: not one of the labels"
    )


def test_unknown_files_key(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)
    entry = yaml.safe_load((folder / "manifest.yaml").read_text())["files"]["onnx-int8"]
    _edit(folder, lambda m: m["files"].update({"onnx-int4": dict(entry)}))
    line = _line(folder, "onnx-int4:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: files.onnx-int4: unknown kind"
        " (known: tflite-int8, onnx-int8, tflite-fp32, onnx-fp32)"
    )


def test_missing_model_file(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)
    (folder / "model.int8.tflite").unlink()
    line = _line(folder, "path: model.int8.tflite")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: files.tflite-int8.path: file model.int8.tflite"
        f" not found in {folder}"
    )


def test_sha256_mismatch_after_one_flipped_byte(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)
    model = folder / "model.int8.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    line = _line(folder, "sha256:", after="path: model.int8.onnx")
    message = _refused(folder)
    assert message.startswith(f"{_manifest(folder)}:{line}: files.onnx-int8.sha256: ")
    assert f"model.int8.onnx has sha256 {sha256_of(model)}" in message
    assert "file changed or corrupt" in message


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("../tone/model.int8.onnx", "outside the folder"),
        ("/etc/hostname", "absolute"),
    ],
)
def test_model_file_outside_the_bundle_is_refused(
    tone_bundle: Path, tmp_path: Path, path: str, reason: str
) -> None:
    folder = _edit(
        _copy(tone_bundle, tmp_path), lambda m: m["files"]["onnx-int8"].update(path=path)
    )
    line = _line(folder, f"path: {path}")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: files.onnx-int8.path: {path!r} must be a file name"
        " inside the bundle folder"
    ), reason


def test_malformed_sha256(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(
        _copy(tone_bundle, tmp_path), lambda m: m["files"]["onnx-fp32"].update(sha256="abc")
    )
    line = _line(folder, "sha256: abc")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: files.onnx-fp32.sha256: must be 64 hex digits, got 'abc'"
    )


def test_hop_not_a_multiple_of_the_frame_hop(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m.update(hop_seconds=0.105))
    line = _line(folder, "hop_seconds:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: hop_seconds: is 1680 samples, not a multiple of the"
        " frontend's hop_length (160), so windows would not start on a frame"
    )


def test_window_shorter_than_n_fft(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m.update(window_seconds=0.02))
    line = _line(folder, "window_seconds:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: window_seconds: 320 samples is shorter than n_fft (512)"
    )


def test_logmel_frontend_without_n_mels(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["frontend"].pop("n_mels"))
    line = _line(folder, "frontend:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: frontend.n_mels: required when kind is logmel"
    )


def test_frontend_problem_points_at_its_key(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["frontend"].update(fmax=9000.0))
    line = _line(folder, "fmax:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: frontend.fmax: 9000.0 must be in (0, Nyquist 8000]"
    )


@pytest.mark.parametrize("key", ["n_fft", "hop_length", "win_length", "n_mels"])
def test_a_zero_frame_size_is_refused_at_its_key(
    tone_bundle: Path, tmp_path: Path, key: str
) -> None:
    """Once an AssertionError (issue 13, item 9)."""
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["frontend"].update({key: 0}))
    line = _line(folder, f"{key}:")
    message = _refused(folder)
    assert message.startswith(f"{_manifest(folder)}:{line}: frontend.{key}: must be")
    assert message.endswith("got 0") and "\n" not in message


def test_the_frontend_block_and_the_log_mel_spec_are_one_shape(tone_bundle: Path) -> None:
    """The trainer writes `FrontendManifest.of(spec)`; the edge reads it back as `spec`."""
    spec = load_bundle(tone_bundle).logmel
    assert spec is not None
    block = FrontendManifest.of(spec)
    assert block.kind == "logmel"
    assert block.fmin == spec.fmin_hz and block.n_fft == spec.n_fft == 512
    assert block.spec(spec.sample_rate_hz) == spec
    # The trainer's features section is the same spec under the same names, but the rate.
    names = {f.name for f in dataclasses.fields(LogMelSpec)} - {"sample_rate_hz"}
    assert {f.name for f in dataclasses.fields(FeaturesConfig)} == names


def test_even_median_windows(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["events"].update(median_windows=4))
    line = _line(folder, "median_windows:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: events.median_windows: must be an odd integer >= 1, got 4"
    )


def test_all_manifest_problems_are_reported_together(tone_bundle: Path, tmp_path: Path) -> None:
    def broken(m: dict[str, Any]) -> None:
        m["thresholds"]["tone-1k"] = 2.0
        m["events"]["median_windows"] = 2
        m["colour"] = "blue"
        m["files"]["onnx-fp32"]["sha256"] = "abc"
        del m["frontend"]["n_mels"]

    folder = _edit(_copy(tone_bundle, tmp_path), broken)
    manifest = _manifest(folder)
    assert _refused(folder).splitlines() == [  # in file order
        f"{manifest}:{_line(folder, 'frontend:')}: frontend.n_mels: required when kind is logmel",
        f"{manifest}:{_line(folder, 'tone-1k: 2.0')}: thresholds.tone-1k: must be within 0..1,"
        " got 2.0",
        f"{manifest}:{_line(folder, 'median_windows:')}: events.median_windows: must be an odd"
        " integer >= 1, got 2",
        f"{manifest}:{_line(folder, 'sha256: abc')}: files.onnx-fp32.sha256: must be 64 hex"
        " digits, got 'abc'",
        f"{manifest}:{_line(folder, 'colour:')}: colour: unknown key (known keys: format, name,"
        " version, labels, task, sample_rate, window_seconds, hop_seconds, frontend, output,"
        " thresholds, files, threshold_rule, events, background, metrics, backbone,"
        " provenance)",
    ]


def test_wrong_types_in_the_manifest(tone_bundle: Path, tmp_path: Path) -> None:
    def broken(m: dict[str, Any]) -> None:
        m["sample_rate"] = "16k"
        m["thresholds"]["tone-1k"] = "high"
        m["window_seconds"] = float("inf")
        m["labels"] = "tone-1k"

    folder = _edit(_copy(tone_bundle, tmp_path), broken)
    manifest = _manifest(folder)
    assert _refused(folder).splitlines() == [
        f"{manifest}:{_line(folder, 'labels:')}: labels: expected a list, got 'tone-1k'",
        f"{manifest}:{_line(folder, 'sample_rate:')}: sample_rate: expected a whole number,"
        " got '16k'",
        f"{manifest}:{_line(folder, 'window_seconds:')}: window_seconds: expected a finite"
        " number, got .inf",
        f"{manifest}:{_line(folder, 'tone-1k: high')}: thresholds.tone-1k: expected a number,"
        " got 'high'",
    ]


def test_repeated_key_is_refused(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text() + "hop_seconds: 0.2\n")
    last = len(manifest.read_text().splitlines())
    first = _line(folder, "hop_seconds:")
    assert _refused(folder) == (
        f"{manifest}:{last}: hop_seconds: written twice (also on line {first}); remove one"
    )


def test_manifest_that_is_not_yaml_or_not_utf8(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)
    manifest = folder / "manifest.yaml"
    manifest.write_text("format: soundwatch-bundle/1\nlabels: [a, b\n")
    assert _refused(folder).startswith(f"{manifest}:3: not valid YAML (")
    manifest.write_bytes(b"format: soundwatch-bundle/1\nname: caf\xe9\n")
    assert _refused(folder) == f"{manifest}: not UTF-8 text (byte 37)"


def test_version_is_kept_as_written(tone_bundle: Path, tmp_path: Path) -> None:
    folder = _copy(tone_bundle, tmp_path)
    manifest = folder / "manifest.yaml"
    manifest.write_text(manifest.read_text().replace("version: 2026.11.22", "version: 2026.10"))
    assert load_bundle(folder).manifest.version == "2026.10"


def test_model_input_that_does_not_match_the_frontend(tone_bundle: Path, tmp_path: Path) -> None:
    """n_mels edited to 32: the manifest is consistent and its hashes match, but every model
    takes 40 mels; open() refuses with the file and both shapes."""
    folder = _edit(_copy(tone_bundle, tmp_path), lambda m: m["frontend"].update(n_mels=32))
    bundle = load_bundle(folder)
    assert bundle.feature_shape == (47, 32)
    keys = ["onnx-int8", "onnx-fp32"] + (["tflite-int8"] if HAS_LITERT else [])
    for key in keys:
        with pytest.raises(BundleError) as caught:
            bundle.open(key)
        message = str(caught.value)
        assert str(folder / bundle.manifest.files[key].path) in message
        assert "47, 40]" in message  # the model's input
        assert "47 x 32" in message  # what the frontend gives


def test_more_labels_than_model_outputs(tone_bundle: Path, tmp_path: Path) -> None:
    def third_label(m: dict[str, Any]) -> None:
        m["labels"].append("tone-5k")
        m["thresholds"]["tone-5k"] = 0.5

    bundle = load_bundle(_edit(_copy(tone_bundle, tmp_path), third_label))
    with pytest.raises(BundleError, match=r"gives 2 values per window .* lists 3 labels"):
        bundle.open("onnx-fp32")


# --- waveform bundles --------------------------------------------------------------------------

WAVE_RATE_HZ = 8000
WAVE_WINDOW_SAMPLES = 4000  # 0.5 s
WAVE_LABELS = ["loud", "quiet"]
WAVE_GAIN = np.array([[40.0, -40.0]], np.float32)  # logit per unit of mean absolute amplitude
WAVE_BIAS = np.array([-4.0, 4.0], np.float32)


def _waveform_model(path: Path) -> None:
    """[N, samples] -> mean |x| -> * gain + bias -> sigmoid -> [N, 2]: 'loud' when the mean
    absolute amplitude is above 0.1, 'quiet' below."""
    nodes = [
        helper.make_node("Abs", ["samples"], ["magnitude"]),
        helper.make_node("ReduceMean", ["magnitude"], ["level"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["level", "gain"], ["scaled"]),
        helper.make_node("Add", ["scaled", "bias"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "waveform_level",
        [helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["N", WAVE_WINDOW_SAMPLES])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 2])],
        initializer=[
            numpy_helper.from_array(WAVE_GAIN, "gain"),
            numpy_helper.from_array(WAVE_BIAS, "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9  # what our oldest onnxruntime reads
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _waveform_bundle(folder: Path, **frontend: Any) -> Path:
    folder.mkdir(parents=True)
    _waveform_model(folder / "level.onnx")
    manifest = {
        "format": "soundwatch-bundle/1",
        "name": "level",
        "version": "1",
        "labels": WAVE_LABELS,
        "task": "multilabel",
        "sample_rate": WAVE_RATE_HZ,
        "window_seconds": 0.5,
        "hop_seconds": 0.25,
        "frontend": {"kind": "waveform", **frontend},
        "output": {"activation": "none"},
        "thresholds": {"loud": 0.5, "quiet": 0.5},
        "files": {"onnx-fp32": {"path": "level.onnx", "sha256": sha256_of(folder / "level.onnx")}},
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return folder


def test_waveform_bundle_loads_and_scores_samples(tmp_path: Path) -> None:
    bundle = _waveform_bundle(tmp_path / "level")
    loaded = load_bundle(bundle)
    assert isinstance(loaded, Bundle)
    assert loaded.logmel is None
    assert loaded.window_samples == WAVE_WINDOW_SAMPLES
    assert loaded.hop_samples == 2000
    assert loaded.feature_shape == (WAVE_WINDOW_SAMPLES,)
    assert loaded.hop_for(0.001) == 8  # no frame grid: any whole number of samples
    assert loaded.choose_file() == "onnx-fp32"

    backend = loaded.open("auto", threads=1)
    t = np.arange(WAVE_WINDOW_SAMPLES) / WAVE_RATE_HZ
    windows = np.stack(
        [
            0.5 * np.sin(2 * np.pi * 440.0 * t),  # mean |x| = 0.5 * 2/pi = 0.318
            np.full(WAVE_WINDOW_SAMPLES, 0.01),  # mean |x| = 0.01
        ]
    ).astype(np.float32)
    scores = backend.predict(windows)
    level = np.abs(windows.astype(np.float64)).mean(axis=1, keepdims=True)
    expected = 1.0 / (1.0 + np.exp(-(level * WAVE_GAIN + WAVE_BIAS)))
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    assert scores[0, 0] > 0.9 and scores[0, 1] < 0.1  # loud
    assert scores[1, 0] < 0.1 and scores[1, 1] > 0.9  # quiet


def test_waveform_bundle_with_logmel_fields_is_refused(tmp_path: Path) -> None:
    folder = _waveform_bundle(tmp_path / "level", n_mels=40)
    line = _line(folder, "n_mels:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: frontend.n_mels: only for kind logmel"
        " (this frontend is waveform)"
    )


def test_an_alias_fan_out_in_a_manifest_is_one_line(tone_bundle: Path, tmp_path: Path) -> None:
    """Once it hung `check`, and a SIGHUP reload on the processing thread (issue 13, item 8)."""
    from tests.test_config import ALIAS_BOMB

    folder = _copy(tone_bundle, tmp_path)
    path = folder / "manifest.yaml"
    path.write_text(
        path.read_text() + "extra:\n" + "".join(f"  {ln}\n" for ln in ALIAS_BOMB.splitlines())
    )
    assert _refused(folder) == (
        f"{path}: more than 100,000 values once its aliases are expanded; write the values out,"
        " or use fewer aliases"
    )


def test_a_negative_event_default_is_reported_against_the_manifest(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """It was reported against the config file that chose the bundle (issue 13, item 9)."""
    folder = _edit(
        _copy(tone_bundle, tmp_path), lambda m: m["events"].update(min_duration_seconds=-1.0)
    )
    line = _line(folder, "min_duration_seconds:")
    assert _refused(folder) == (
        f"{_manifest(folder)}:{line}: events.min_duration_seconds: must be within 0..86400,"
        " got -1.0"
    )
