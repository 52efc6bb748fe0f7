"""Export end to end: a tiny CNN trained here on tone events -> all three files -> the edge.

CPU only, no GPU used: the model is trained for a few seconds on synthetic log-mel windows of
1 kHz and 3 kHz tones in noise (this file's own loop, not the trainer's), exported as ONNX fp32,
ONNX int8 and TFLite int8, loaded with the edge, and `soundwatch scan` (a subprocess) runs each
file on a fresh recording whose events must be found. Also: the int8 F1 guard fails a model
whose int8 version really does lose its decisions, and a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

pytest.importorskip("torch")

import torch

from edge.model.bundle import load_bundle
from edge.model.frontend import LogMelSpec, logmel, n_frames
from tests.audio import tone_events, write_wav
from trainer.config import EventsConfig, FeaturesConfig, TrainConfig
from trainer.evaluate import evaluate, event_counts
from trainer.export import ExportError, ExportReport, export_bundle
from trainer.run import Trained as Run

RATE_HZ = 8000
SPEC = LogMelSpec(
    sample_rate_hz=RATE_HZ,
    n_fft=256,
    win_length=256,
    hop_length=128,
    n_mels=24,
    fmin_hz=50.0,
    fmax_hz=4000.0,
)
WINDOW_SECONDS = 0.256  # 2048 samples: 15 frames
HOP_SECONDS = 0.064  # 4 frames
LABELS = ["tone-1k", "tone-3k"]
TONES_HZ = (1000.0, 3000.0)
ONSET_TOLERANCE_SECONDS = 0.2
FRAMES = n_frames(round(WINDOW_SECONDS * RATE_HZ), SPEC)
Event = tuple[float, float, float]


def random_events(seconds: float, seed: int) -> list[Event]:
    """Tones of 0.3-1.2 s, one at a time, 0.3-1.5 s apart."""
    rng = np.random.default_rng(seed)
    events, t = [], 0.5
    while t < seconds - 1.5:
        length = float(rng.uniform(0.3, 1.2))
        events.append((t, t + length, TONES_HZ[int(rng.integers(2))]))
        t += length + float(rng.uniform(0.3, 1.5))
    return events


def recording(seconds: float, seed: int) -> tuple[np.ndarray, list[Event]]:
    events = random_events(seconds, seed)
    x = tone_events(RATE_HZ, seconds, events, noise_amplitude=0.01, tone_amplitude=0.3, seed=seed)
    return x, events


def windows(x: np.ndarray, events: list[Event]) -> tuple[np.ndarray, np.ndarray]:
    """Log-mel windows every 2 frames; a label is 1 when its tone covers the window's centre."""
    features = logmel(x, SPEC)
    starts = range(0, len(features) - FRAMES + 1, 2)
    X = np.stack([features[s : s + FRAMES] for s in starts]).astype(np.float32)
    centres = (np.array(starts) * SPEC.hop_length + WINDOW_SECONDS * RATE_HZ / 2) / RATE_HZ
    Y = np.zeros((len(X), len(LABELS)), np.float32)
    for start, end, hz in events:
        Y[(centres >= start) & (centres < end), TONES_HZ.index(hz)] = 1.0
    return X, Y


class TinyCNN(torch.nn.Module):
    """Conv-BN-ReLU-pool, Conv-BN-ReLU, mean, Linear, Sigmoid: (N, frames, mels) -> (N, 2)."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
        )
        self.head = nn.Linear(16, len(LABELS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x.unsqueeze(1)).mean(dim=(2, 3))
        return torch.sigmoid(self.head(h))


@dataclass
class Trained:
    model: torch.nn.Module
    calibration: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray


@pytest.fixture(scope="module")
def trained() -> Trained:
    """Two minutes of training audio, 300 Adam steps (a few seconds on a CPU)."""
    torch.manual_seed(0)
    X, Y = windows(*recording(120.0, seed=1))
    validation_x, validation_y = windows(*recording(30.0, seed=2))
    model = TinyCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = torch.nn.BCELoss()
    Xt, Yt = torch.from_numpy(X), torch.from_numpy(Y)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        batch = torch.randint(0, len(X), (64,), generator=generator)
        loss = loss_fn(model(Xt[batch]), Yt[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return Trained(model.eval(), X[::4][:256], validation_x, validation_y)


CONFIG = TrainConfig(
    labels=LABELS,
    mode="overlapped",  # multilabel: one sigmoid per tone
    sample_rate_hz=RATE_HZ,
    window_seconds=WINDOW_SECONDS,
    hop_seconds=HOP_SECONDS,
    features=FeaturesConfig(
        n_fft=SPEC.n_fft,
        win_length=SPEC.win_length,
        hop_length=SPEC.hop_length,
        n_mels=SPEC.n_mels,
        fmin_hz=SPEC.fmin_hz,
        fmax_hz=SPEC.fmax_hz,
    ),
    events=EventsConfig(median_windows=1, min_duration_seconds=0.1, merge_gap_seconds=0.1),
)


def export(
    trained: Trained,
    out: Path,
    formats: tuple[str, ...],
    *,
    hop_seconds: float = HOP_SECONDS,
    thresholds: dict[str, float] | None = None,
    **options: Any,
) -> ExportReport:
    """Export `trained` as the run `fit` would have made of it, with this file's settings."""
    run = Run(
        model=trained.model,
        config=replace(CONFIG, hop_seconds=hop_seconds),
        thresholds=dict.fromkeys(LABELS, 0.5) if thresholds is None else thresholds,
        threshold_rule={"fixed": 0.5},
        metrics={"macro_f1": 0.99},
        calibration=trained.calibration,
        validation_x=trained.validation_x,
        validation_y=trained.validation_y,
        data_description="synthetic tones in white noise (tests/test_export.py)",
        command="pytest tests/test_export.py",
    )
    options = {"name": "tones", "version": "1.0", "licence": "CC0 (generated)", **options}
    return export_bundle(run, out, formats=formats, **options)


ALL_FORMATS = ("onnx-int8", "tflite-int8", "onnx-fp32")
SCAN = [sys.executable, "-m", "edge.cli", "scan", "-q"]


@pytest.fixture(scope="module")
def bundle(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, ExportReport]:
    pytest.importorskip("litert_torch")
    out = tmp_path_factory.mktemp("models") / "tones"
    return out, export(trained, out, ALL_FORMATS)


def test_export_writes_a_bundle_the_edge_loads(bundle: tuple[Path, ExportReport]) -> None:
    folder, report = bundle
    loaded = load_bundle(folder)
    m = loaded.manifest
    assert m.labels == LABELS and m.output.activation == "none"
    assert m.background == []  # neither label is named background or ambient
    assert set(m.files) == set(ALL_FORMATS)
    assert loaded.feature_shape == (FRAMES, SPEC.n_mels)
    assert m.provenance["trainer"].startswith("soundwatch ")
    assert m.provenance["data"].startswith("synthetic tones")
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",
        "manifest.yaml",
        "model.fp32.onnx",
        "model.int8.onnx",
        "model.int8.tflite",
    ]
    # Nothing left beside the bundle: the staging folder was renamed into place.
    assert [p.name for p in folder.parent.iterdir()] == ["tones"]

    # The trained model is good, and every file keeps its decisions.
    assert all(f1 is not None and f1 >= 0.95 for f1 in report.reference_f1.values())
    by_key = {c.key: c for c in report.checks}
    assert by_key["onnx-fp32"].max_abs_diff < 1e-4
    for key in ("onnx-int8", "tflite-int8"):
        check = by_key[key]
        assert check.max_abs_diff < 0.1, check
        assert check.agreement >= 0.98, check
        assert max(check.f1_drop.values()) <= 0.01, check
    # int8 files are smaller than fp32.
    assert by_key["tflite-int8"].size_bytes < by_key["onnx-fp32"].size_bytes

    figures = m.metrics["export"]
    assert figures["validation_windows"] == report.validation_windows > 500
    assert figures["tflite-int8"]["f1"] == pytest.approx(by_key["tflite-int8"].f1, abs=1e-6)
    assert m.metrics["macro_f1"] == 0.99  # the trainer's own figures are kept

    card = (folder / "README.md").read_text()
    assert "pytest tests/test_export.py" in card and "CC0 (generated)" in card
    assert "`model.int8.tflite` (tflite-int8)" in card


@pytest.mark.parametrize("file_key", ALL_FORMATS)
def test_soundwatch_scan_finds_the_events_with_every_file(
    bundle: tuple[Path, ExportReport], tmp_path: Path, file_key: str
) -> None:
    folder, _ = bundle
    x, truth = recording(30.0, seed=7)  # a recording the model has never heard
    wav = write_wav(tmp_path / "fresh.wav", x, RATE_HZ)
    out = tmp_path / "scan"
    result = subprocess.run(
        [*SCAN, "--model", str(folder), "--model-file", file_key, "--out", str(out), str(wav)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    messages = [
        json.loads(line) for line in (out / "fresh.wav.events.jsonl").read_text().splitlines()
    ]
    ends = [m for m in messages if m["type"] == "end"]
    for label, hz in zip(LABELS, TONES_HZ, strict=True):
        true_onsets = [start for start, _, f in truth if f == hz]
        found = [m["start_offset"] for m in ends if m["label"] == label]
        counts = event_counts(true_onsets, found, ONSET_TOLERANCE_SECONDS)
        assert len(true_onsets) >= 5
        assert counts.f1 is not None and counts.f1 >= 0.9, (file_key, label, counts)


def test_evaluate_scores_the_exported_bundle(
    bundle: tuple[Path, ExportReport], tmp_path: Path
) -> None:
    from trainer.annotations import Annotation

    folder, _ = bundle
    x, truth = recording(30.0, seed=8)
    wav = write_wav(tmp_path / "dense.wav", x, RATE_HZ)
    annotations = [
        Annotation(wav, start, end, LABELS[TONES_HZ.index(hz)], f"test:{i}")
        for i, (start, end, hz) in enumerate(truth)
    ]
    report = evaluate(folder, annotations, model_file="tflite-int8")
    for scores in report.labels:
        assert scores.event.f1 is not None and scores.event.f1 >= 0.9, scores
        assert scores.segment.f1 is not None and scores.segment.f1 >= 0.85, scores
    assert report.seconds_scored == 30


# --- the int8 guard and half-written bundles --------------------------------------------------


class KnifeEdge(torch.nn.Module):
    """Decides on the window's mean log-mel value to within 0.005 (a steep sigmoid around `c`).

    int8 activations have a step of (range / 255) ~ 0.05 over log-mel ranges, far coarser than
    the 0.005 the decision needs, so the int8 file cannot keep these decisions: a real loss,
    not a mocked one.
    """

    def __init__(self, centre: float) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(SPEC.n_mels, len(LABELS))
        with torch.no_grad():
            self.linear.weight.fill_(2000.0 / SPEC.n_mels)
            self.linear.bias.fill_(-2000.0 * centre)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(x.mean(dim=1)))


def knife_edge_data(trained: Trained) -> tuple[KnifeEdge, np.ndarray, np.ndarray]:
    """Validation windows whose mean is the centre +- 0.004, labelled by the side they are on."""
    rng = np.random.default_rng(0)
    base = trained.validation_x[:200]
    centre = float(base.mean())
    offsets = rng.uniform(-0.004, 0.004, len(base)).astype(np.float32)
    x = base - base.mean(axis=(1, 2), keepdims=True) + centre + offsets[:, None, None]
    y = np.repeat((offsets > 0).astype(np.float32)[:, None], len(LABELS), axis=1)
    return KnifeEdge(centre), x.astype(np.float32), y


def test_an_int8_file_that_loses_f1_fails_the_export_and_writes_nothing(
    trained: Trained, tmp_path: Path
) -> None:
    model, x, y = knife_edge_data(trained)
    out = tmp_path / "models" / "edge"
    with pytest.raises(ExportError) as err:
        export(
            Trained(model, trained.calibration, x, y),
            out,
            ("onnx-int8", "onnx-fp32"),
        )
    message = str(err.value)
    assert "model.int8.onnx loses" in message and "points of F1" in message
    assert "nothing written" in message and "allowed drop: 1 F1 points" in message
    # The refusal names the flag that accepts the loss, with a value that would pass.
    assert "pass --max-f1-drop 0." in message and "at least 50 positive" in message
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []


def test_an_f1_drop_on_too_few_positives_is_reported_not_enforced(
    trained: Trained, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The knife-edge model again, with only 25 positive windows per label: one window then
    moves F1 by ~2 points, so the drop is logged and the bundle written (the manifest keeps
    the counts); with --min-positives 20 the same export is refused."""
    model, x, y = knife_edge_data(trained)
    keep = (y[:, 0] == 0) | (np.cumsum(y[:, 0]) <= 25)
    x, y = x[keep], y[keep]
    assert int(y[:, 0].sum()) == 25
    few = Trained(model, trained.calibration, x, y)
    out = tmp_path / "edge"
    with caplog.at_level("WARNING", logger="trainer.export"):
        export(few, out, ("onnx-int8",))
    warned = [r.getMessage() for r in caplog.records if "not enforced" in r.getMessage()]
    assert warned and "on 25 positive windows" in warned[0]
    figures = yaml.safe_load((out / "manifest.yaml").read_text())["metrics"]["export"]
    assert figures["validation_positives"] == {"tone-1k": 25, "tone-3k": 25}
    assert figures["onnx-int8"]["f1_drop"]["tone-1k"] > 0.01
    with pytest.raises(ExportError, match="at least 20 positive"):
        export(few, tmp_path / "strict", ("onnx-int8",), min_positives=20)


def test_export_refuses_an_existing_bundle_without_overwrite(
    trained: Trained, tmp_path: Path
) -> None:
    """As `fit` refuses an existing run: the second export names --overwrite and changes
    nothing; with overwrite it replaces the bundle."""
    out = tmp_path / "tones"
    export(trained, out, ("onnx-fp32",))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError, match=r"already holds a bundle; .* pass --overwrite"):
        export(trained, out, ("onnx-fp32",), version="2.0")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    export(trained, out, ("onnx-fp32",), version="2.0", overwrite=True)
    assert load_bundle(out).manifest.version == "2.0"


def test_export_shows_its_steps_when_asked(
    trained: Trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The progress bar names each step (on terminals; the CLI test shows it is off in pipes)."""
    export(trained, tmp_path / "tones", ("onnx-fp32",), progress=True)
    shown = capsys.readouterr().err
    assert "converting onnx-fp32" in shown and "checking onnx-fp32" in shown
    assert "loading the bundle" in shown and "/3 " in shown  # convert, check, load


def test_train_version_is_the_edge_version() -> None:
    def version(module: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert version("trainer.cli") == version("edge.cli")
    assert version("trainer.cli").startswith("soundwatch 0.")


def test_a_failed_export_keeps_the_previous_bundle(
    bundle: tuple[Path, ExportReport], trained: Trained, tmp_path: Path
) -> None:
    """Re-exporting over a bundle replaces it only when the new one passes every check.

    A negative allowed drop means "int8 must beat fp32 by 50 points of F1", which no file can
    do (the reference F1 is above 0.95), so the guard fires after every file was written and
    measured: the staging folder must be removed and the old bundle left as it was.
    """
    import shutil

    folder, _ = bundle
    out = tmp_path / "tones"
    shutil.copytree(folder, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ExportError, match=r"model.int8.onnx loses .* points of F1"):
        export(trained, out, ("onnx-int8",), max_f1_drop=-0.5, version="2.0", overwrite=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["tones"]
    assert yaml.safe_load((out / "manifest.yaml").read_text())["version"] == "1.0"


def test_export_replaces_an_old_bundle_when_it_passes(trained: Trained, tmp_path: Path) -> None:
    out = tmp_path / "tones"
    export(trained, out, ("onnx-fp32",))
    export(trained, out, ("onnx-int8",), version="2.0", overwrite=True)
    assert load_bundle(out).manifest.version == "2.0"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "manifest.yaml",
        "model.int8.onnx",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["tones"]


def test_bad_settings_are_refused_before_any_work(trained: Trained, tmp_path: Path) -> None:
    with pytest.raises(ExportError, match=r"hop_seconds 0.05 is 400 samples, not a positive"):
        export(trained, tmp_path / "a", ("onnx-fp32",), hop_seconds=0.05)
    with pytest.raises(ExportError, match=r"no threshold for label\(s\) tone-3k"):
        export(trained, tmp_path / "b", ("onnx-fp32",), thresholds={"tone-1k": 0.5})
    with pytest.raises(ExportError, match=r"formats \['onnx-int4'\]"):
        export(trained, tmp_path / "c", ("onnx-int4",))
    not_a_bundle = tmp_path / "d"
    not_a_bundle.mkdir()
    (not_a_bundle / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="exists and is not a bundle folder"):
        export(trained, not_a_bundle, ("onnx-fp32",))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_same_padding_and_softmax_still_give_a_fully_int8_tflite(tmp_path: Path) -> None:
    """`padding="same"` and a final softmax export to forms litert-torch's quantizer skips
    (they would stay float); the exporter rewrites both, so every tensor is int8 or int32."""
    pytest.importorskip("litert_torch")
    from ai_edge_litert.interpreter import Interpreter

    from trainer.convert import explicit_padding, write_tflite_int8

    nn = torch.nn
    model = nn.Sequential(
        nn.Unflatten(1, (1, FRAMES)),
        nn.Conv2d(1, 8, 3, padding="same", bias=False),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 3),
        nn.Softmax(dim=1),
    ).eval()
    x = np.random.default_rng(0).normal(-8, 2, (64, FRAMES, SPEC.n_mels)).astype(np.float32)
    before = model(torch.from_numpy(x)).detach().numpy()
    explicit_padding(model)
    assert model[1].padding == (1, 1)
    np.testing.assert_allclose(model(torch.from_numpy(x)).detach().numpy(), before, atol=1e-6)

    path = tmp_path / "model.int8.tflite"
    write_tflite_int8(model, path, x, (FRAMES, SPEC.n_mels))
    interpreter = Interpreter(str(path))
    kinds = {np.dtype(t["dtype"]).name for t in interpreter.get_tensor_details()}
    assert kinds <= {"int8", "int32"}, kinds
    output = interpreter.get_output_details()[0]
    assert np.dtype(output["dtype"]).name == "int8"
    assert output["quantization"] == (1 / 256, -128)  # TFLite's fixed softmax output scale


def test_the_export_command_exports_a_run(
    trained: Trained,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`soundwatch-train export` on a run as `trainer.run.load_run` returns it."""
    from types import SimpleNamespace

    import trainer.run
    from edge.model.rules import EventTiming
    from trainer.cli import main

    config = SimpleNamespace(
        labels=LABELS,
        task="multilabel",
        frontend=SPEC,
        window_seconds=WINDOW_SECONDS,
        hop_seconds=HOP_SECONDS,
        events=EventTiming(median_windows=3, min_duration_seconds=0.1),
        background=["tone-3k"],
    )
    run = SimpleNamespace(
        model=trained.model,
        config=config,
        thresholds=dict.fromkeys(LABELS, 0.5),
        threshold_rule={"precision_recall_ratio": 1.0},
        metrics={"macro_f1": 0.99},
        calibration=trained.calibration,
        validation_x=trained.validation_x,
        validation_y=trained.validation_y,
        data_description="synthetic tones",
        command="soundwatch-train fit --data truth.csv --out runs/tones",
    )
    seen: list[Path] = []

    def load_run(path: Path) -> SimpleNamespace:
        seen.append(path)
        return run

    monkeypatch.setattr(trainer.run, "load_run", load_run)
    out = tmp_path / "models" / "tones"

    code = main(["export", "runs/tones", "--bundle", str(out), "--formats", "onnx-int8"])

    assert code == 0 and seen == [Path("runs/tones")]
    printed = capsys.readouterr().out
    assert "onnx-int8" in printed and f"wrote {out}" in printed
    m = load_bundle(out).manifest
    assert m.name == "tones" and list(m.files) == ["onnx-int8"]
    # No --version: the export's UTC minute, so two candidates of one day differ.
    assert re.fullmatch(r"20\d\d\.[01]\d\.[0-3]\d\.[0-2]\d[0-5]\d", m.version), m.version
    assert m.events.median_windows == 3 and m.threshold_rule == {"precision_recall_ratio": 1.0}
    assert m.background == ["tone-3k"]  # the run's background labels reach the bundle
    card = (out / "README.md").read_text()
    assert "soundwatch-train fit --data truth.csv --out runs/tones\nsoundwatch-train export" in card
