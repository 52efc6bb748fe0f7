"""Transfer learning on generated tone scenes, with a tiny backbone built here.

The backbone is a real ONNX model made with onnx.helper (no pretrained model can exist in a
test): waveform windows in, the log power of a fixed bank of 16 DFT frequencies out (output
`embedding`), plus a second output (`scores`) so the manifest must name the embedding. A
head learns the tones from it; the exported two-stage bundle is scanned by the edge.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.errors import BundleError, ConfigError
from edge.model.backbone import load_backbone
from edge.model.bundle import load_bundle
from tests.audio import tone_events, write_wav
from tests.scenes import write_annotated
from trainer import cli
from trainer.annotations import load_any
from trainer.config import load_config, with_overrides
from trainer.transfer import fit_transfer

RATE_HZ = 4000
WINDOW = 1024  # samples: 0.256 s
SECONDS = 30.0
TONES_HZ = {"low": 460.0, "high": 1540.0}  # two of the backbone's bands
BANDS = 16


def write_backbone(folder: Path, *, seed: int = 0) -> Path:
    """A tiny ONNX backbone and its backbone.yaml in `folder`; `seed` shifts its frequencies
    (another backbone, another file hash)."""
    folder.mkdir(parents=True, exist_ok=True)
    freqs = np.linspace(100, 1900, BANDS) + seed * 7.0
    t = np.arange(WINDOW) / RATE_HZ
    cos = np.cos(2 * np.pi * freqs[None, :] * t[:, None]).astype(np.float32)
    sin = np.sin(2 * np.pi * freqs[None, :] * t[:, None]).astype(np.float32)
    nodes = [
        helper.make_node("MatMul", ["waveform", "cos"], ["re"]),
        helper.make_node("MatMul", ["waveform", "sin"], ["im"]),
        helper.make_node("Mul", ["re", "re"], ["re2"]),
        helper.make_node("Mul", ["im", "im"], ["im2"]),
        helper.make_node("Add", ["re2", "im2"], ["power"]),
        helper.make_node("Add", ["power", "eps"], ["floored"]),
        helper.make_node("Log", ["floored"], ["embedding"]),
        helper.make_node("ReduceSum", ["embedding", "axes"], ["scores"], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-backbone",
        [helper.make_tensor_value_info("waveform", TensorProto.FLOAT, ["n", WINDOW])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", BANDS]),
        ],
        initializer=[
            numpy_helper.from_array(cos, "cos"),
            numpy_helper.from_array(sin, "sin"),
            numpy_helper.from_array(np.array([1e-3], np.float32), "eps"),
            numpy_helper.from_array(np.array([1], np.int64), "axes"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "tiny.onnx")
    (folder / "backbone.yaml").write_text(
        "backbone:\n  name: tiny\n  licence: CC0-1.0\n  source: https://example.org/tiny\n"
        f"  path: tiny.onnx\n  embedding: embedding\n  size: {BANDS}\n"
        f"sample_rate: {RATE_HZ}\nwindow_samples: {WINDOW}\nfrontend:\n  kind: waveform\n"
    )
    return folder


MELS = 16


def write_logmel_backbone(folder: Path) -> Path:
    """A tiny ONNX backbone fed this project's log-mel (the edge computes the features): each
    band's mean over the window's frames is the embedding."""
    folder.mkdir(parents=True, exist_ok=True)
    nodes = [
        helper.make_node("ReduceMean", ["logmel"], ["embedding"], axes=[1], keepdims=0),
        helper.make_node("ReduceMax", ["embedding"], ["scores"], axes=[1], keepdims=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny-logmel-backbone",
        [helper.make_tensor_value_info("logmel", TensorProto.FLOAT, ["n", "frames", MELS])],
        [
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["n", 1]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["n", MELS]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, folder / "mel.onnx")
    (folder / "backbone.yaml").write_text(
        "backbone:\n  name: tiny-mel\n  licence: CC0-1.0\n  source: https://example.org/mel\n"
        f"  path: mel.onnx\n  embedding: embedding\n  size: {MELS}\n"
        f"sample_rate: {RATE_HZ}\nwindow_samples: {WINDOW}\nfrontend:\n  kind: logmel\n"
        f"  n_fft: 256\n  win_length: 256\n  hop_length: 128\n  window: hann\n  n_mels: {MELS}\n"
        "  fmin: 50.0\n  fmax: null\n  power: 2.0\n  log_offset: 1.0e-06\n  mel_scale: htk\n"
        "  norm: null\n"
    )
    return folder


def _scene(seed: int) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Low and high tones (0.6-1.0 s) in noise, with gaps of 0.5-0.9 s, and their annotations."""
    rng = np.random.default_rng(seed)
    events, rows = [], []
    t, i = 0.4, 0
    while t < SECONDS - 1.5:
        label = ("low", "high")[int(rng.integers(2))]
        duration = float(rng.uniform(0.6, 1.0))
        events.append((t, t + duration, TONES_HZ[label]))
        rows.append((t, t + duration, label))
        t += duration + float(rng.uniform(0.5, 0.9))
        i += 1
    samples = tone_events(RATE_HZ, SECONDS, events, noise_amplitude=0.02, tone_amplitude=0.3)
    return samples, rows


def _write_scenes(folder: Path, seeds: tuple[int, ...]) -> Path:
    return write_annotated(folder, seeds, _scene, RATE_HZ)


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("transfer")
    write_backbone(folder / "backbone")
    _write_scenes(folder / "data", (1, 2, 3))
    return folder


def _fit_args(made: Path, out: Path, cache: Path) -> list[str]:
    return [
        "fit", "--data", str(made / "data" / "annotations.csv"), "--out", str(out),
        "--backbone", str(made / "backbone"), "--cache", str(cache), "--dense",
        "--epochs", "20", "--validation", "recordings", "--seed", "1", "-q",
    ]  # fmt: skip


def fit_and_export(made: Path, backbone: Path, folder: Path) -> Path:
    """fit --backbone then export, as a user types them: the bundle."""
    stderr = io.StringIO()
    args = _fit_args(made, folder / "run", folder / "cache")
    args[args.index("--backbone") + 1] = str(backbone)
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(args)
    assert code == 0, stderr.getvalue()
    name = load_backbone(backbone).block.name
    assert f"backbone {name}: embedded 3 recording(s), 0 from the cache" in stderr.getvalue()
    exported = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "export", str(folder / "run"), "--bundle",
         str(folder / "bundle"), "--min-positives", "1000"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    return folder / "bundle"


@pytest.fixture(scope="module")
def bundle(made: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fit_and_export(made, made / "backbone", tmp_path_factory.mktemp("fitted"))


def test_fit_export_scan_with_a_backbone(bundle: Path, tmp_path: Path) -> None:
    """The two-stage bundle names its backbone; the edge's own scan finds the tones in a new
    recording with it."""
    loaded = load_bundle(bundle)
    assert loaded.manifest.backbone is not None
    assert loaded.manifest.backbone.licence == "CC0-1.0"
    assert set(loaded.manifest.files) == {"onnx-int8", "onnx-fp32"}
    assert loaded.feature_shape == (WINDOW,)
    card = (bundle / "README.md").read_text()
    assert "**Backbone:** tiny" in card and "licence **CC0-1.0**" in card
    checked = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check", "--model", str(bundle)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    assert "onnx: model.int8.onnx" in checked.stdout  # the head, behind the backbone
    assert "background: background, scored every second, no events" in checked.stdout

    assert_scan_finds_the_tones(bundle, tmp_path)


def test_a_log_mel_backbone_gets_the_edge_s_features(made: Path, tmp_path: Path) -> None:
    """A backbone that takes this project's log-mel: the trainer embeds through the edge's own
    frontend, the bundle carries the backbone's frontend block, and the edge's scan computes
    the same features before the backbone and finds the tones in a new recording."""
    backbone = write_logmel_backbone(tmp_path / "mel")
    bundle = fit_and_export(made, backbone, tmp_path)
    loaded = load_bundle(bundle)
    assert loaded.logmel is not None and loaded.logmel.n_mels == MELS
    assert loaded.feature_shape == (1 + (WINDOW - 256) // 128, MELS)
    assert_scan_finds_the_tones(bundle, tmp_path)


def assert_scan_finds_the_tones(bundle: Path, tmp_path: Path) -> None:
    """The edge's own scan of a new scene finds each tone: recall >= 0.9, precision >= 0.8."""
    samples, rows = _scene(seed=99)
    write_wav(tmp_path / "fresh.wav", samples, RATE_HZ)
    scanned = subprocess.run(
        [sys.executable, "-m", "edge.cli", "scan", str(tmp_path / "fresh.wav"),
         "--model", str(bundle), "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr
    found = [
        json.loads(line)
        for line in (tmp_path / "out" / "fresh.wav.events.jsonl").read_text().splitlines()
    ]
    ends = [(m["label"], m["start_offset"], m["end_offset"]) for m in found if m["type"] == "end"]
    assert not [e for e in ends if e[0] == "background"]  # scored, never an event
    for label in TONES_HZ:
        truth = [(a, b) for a, b, name in rows if name == label]
        got = [(a, b) for name, a, b in ends if name == label]
        hits = sum(any(a < t1 and b > t0 for a, b in got) for t0, t1 in truth)
        true_events = sum(any(a < t1 and b > t0 for t0, t1 in truth) for a, b in got)
        recall, precision = hits / len(truth), true_events / max(1, len(got))
        assert recall >= 0.9 and precision >= 0.8, (label, precision, recall, got, truth)


def _fit(data: Path, backbone: Path, cache: Path) -> dict[str, int]:
    config = with_overrides(
        load_config(None), {"training.epochs": 2, "validation.split": "recordings"}
    )
    run = fit_transfer(
        config,
        load_any(data),
        load_backbone(backbone),
        backbone / "backbone.yaml",
        cache,
        log=lambda line: None,
    )
    counts: dict[str, int] = run.trained.metrics["backbone"]
    return counts


def test_embeddings_are_cached_and_invalidated(made: Path, tmp_path: Path) -> None:
    """The backbone runs once per recording; changed audio or another backbone run it again."""
    data = _write_scenes(tmp_path, (4, 5))
    backbone, cache = made / "backbone", tmp_path / "cache"
    first = _fit(data, backbone, cache)
    assert (first["recordings_embedded"], first["recordings_from_cache"]) == (2, 0)
    again = _fit(data, backbone, cache)
    assert (again["recordings_embedded"], again["recordings_from_cache"]) == (0, 2)
    samples, _ = _scene(4)
    write_wav(tmp_path / "scene4.wav", samples * 0.5, RATE_HZ)  # same events, other audio
    changed = _fit(data, backbone, cache)
    assert (changed["recordings_embedded"], changed["recordings_from_cache"]) == (1, 1)
    other = write_backbone(tmp_path / "other", seed=1)
    moved = _fit(data, other, cache)
    assert (moved["recordings_embedded"], moved["recordings_from_cache"]) == (2, 0)
    assert len(list(cache.glob("*.npy"))) == 5


@pytest.mark.parametrize(
    ("line", "replacement", "expected"),
    [
        ("  size: 16", "  size: 0", "backbone.yaml:7: backbone.size"),
        ("  path: tiny.onnx", "  path: ../tiny.onnx", "backbone.yaml:5: backbone.path"),
        ("  path: tiny.onnx", "  path: tiny.pb", "must end in .onnx or .tflite"),
        ("  kind: waveform", "  kind: spectrum", "backbone.yaml:11: frontend.kind"),
    ],
)
def test_bad_backbone_fields_name_the_key_and_line(
    made: Path, tmp_path: Path, line: str, replacement: str, expected: str
) -> None:
    folder = write_backbone(tmp_path / "bad")
    text = (folder / "backbone.yaml").read_text()
    assert line in text
    (folder / "backbone.yaml").write_text(text.replace(line, replacement))
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")) as err:
        load_backbone(folder)
    assert "\n" not in str(err.value)


def test_an_embedding_that_is_no_output_is_refused_by_name(tmp_path: Path) -> None:
    folder = write_backbone(tmp_path / "bad")
    text = (folder / "backbone.yaml").read_text()
    (folder / "backbone.yaml").write_text(text.replace("embedding: embedding", "embedding: emb"))
    with pytest.raises(BundleError, match=r"backbone tiny: .*'emb' is not an output"):
        load_backbone(folder).open((WINDOW,))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda text: text.replace("  size: 16", "  size: 0"),
            r"manifest\.yaml:\d+: backbone\.size",
        ),
        (
            lambda text: text.replace("  licence: CC0-1.0\n", ""),
            r"manifest\.yaml:\d+: backbone: missing required key 'licence'",
        ),
        (lambda text: _drop_line(text, "  sha256:", after="backbone:"), "required in a bundle"),
    ],
)
def test_bad_backbone_block_in_a_bundle_is_refused_in_one_line(
    bundle: Path, tmp_path: Path, change: Callable[[str], str], expected: str
) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = copy / "manifest.yaml"
    manifest.write_text(change(manifest.read_text()))
    with pytest.raises(BundleError, match=expected) as err:
        load_bundle(copy)
    assert "\n" not in str(err.value)


def test_a_changed_backbone_file_is_refused_by_its_hash(bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    write_backbone(tmp_path / "other", seed=3)
    shutil.copyfile(tmp_path / "other" / "tiny.onnx", copy / "backbone.onnx")
    with pytest.raises(BundleError, match=r"manifest\.yaml:\d+: backbone\.sha256: backbone\.onnx"):
        load_bundle(copy)


def _drop_line(text: str, start: str, *, after: str) -> str:
    """`text` without the first line starting with `start` after the line `after`."""
    lines = text.splitlines(keepends=True)
    begin = lines.index(after + "\n")
    drop = next(i for i in range(begin, len(lines)) if lines[i].startswith(start))
    return "".join(lines[:drop] + lines[drop + 1 :])
