"""Training end to end on generated tone scenes: fit, run folder, report, reproducibility.

Every test here runs on the CPU (the CUDA mixed-precision path is exercised only where a GPU
exists; here only its choice of precision is checked). Models are tiny (two conv blocks of 4
and 8 channels) and train for a few seconds.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from edge.errors import ConfigError
from edge.model.bundle import load_bundle
from edge.model.frontend import logmel
from edge.model.rules import EventTiming
from tests.audio import tone_events, write_wav
from trainer import cli
from trainer.annotations import AnnotationSet, load_any
from trainer.config import EventsConfig, TrainConfig, load_config, with_overrides
from trainer.dataset import DataError
from trainer.model import masked_bce
from trainer.resolve import resolve
from trainer.run import Trained, TrainError, load_run
from trainer.scoring import choose_threshold, pr_curve
from trainer.train import fit
from trainer.trainloop import precision_for, resolve_device

RATE_HZ = 4000
SECONDS = 24.0
TONES_HZ = {"low": 500.0, "high": 1500.0, "beep": 2500.0}
TINY: dict[str, dict[str, Any]] = {
    "model": {"channels": [4, 8], "convs_per_block": 1, "dropout": 0.0},
    "windows": {"windows_per_epoch": 256, "validation_windows": 3, "calibration_windows": 16},
    "training": {"epochs": 4, "batch_size": 32, "patience": 0, "threads": 1},
}


def _scene(seed: int) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Tones in noise, cycling low, high, beep; and the annotations that describe them.

    low and high are ranges (0.4-0.8 s tones); beep is a 40 ms tone annotated as a point at
    its centre. Every gap gets not_low and not_high annotations, each tone the other's `not_`.
    """
    rng = np.random.default_rng(seed)
    events: list[tuple[float, float, float]] = []
    rows: list[tuple[float, float, str]] = []
    t, i = 0.3, 0
    while t < SECONDS - 1.2:
        label = ("low", "high", "beep")[i % 3]
        duration = 0.04 if label == "beep" else float(rng.uniform(0.4, 0.8))
        events.append((t, t + duration, TONES_HZ[label]))
        if label == "beep":
            rows.append((t + duration / 2, t + duration / 2, "beep"))
        else:
            rows.append((t, t + duration, label))
            rows.append((t, t + duration, "not_high" if label == "low" else "not_low"))
        gap = float(rng.uniform(0.35, 0.6))
        rows += [
            (t + duration + 0.1, t + duration + gap - 0.1, f"not_{x}") for x in ("low", "high")
        ]
        t += duration + gap
        i += 1
    return tone_events(
        RATE_HZ, SECONDS, events, noise_amplitude=0.02, tone_amplitude=0.3, seed=seed
    ), rows


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two recordings and `annotations.csv` (plain CSV) describing both."""
    folder = tmp_path_factory.mktemp("scenes")
    lines = ["file,start_seconds,end_seconds,label"]
    for n in range(2):
        samples, rows = _scene(seed=10 + n)
        write_wav(folder / f"scene{n}.wav", samples, RATE_HZ)
        lines += [f"scene{n}.wav,{a:.4f},{b:.4f},{label}" for a, b, label in rows]
    (folder / "annotations.csv").write_text("\n".join(lines) + "\n")
    return folder / "annotations.csv"


@pytest.fixture(scope="module")
def data(scenes: Path) -> AnnotationSet:
    loaded = load_any(scenes)
    assert not loaded.problems
    return loaded


def _config(**overrides: object) -> TrainConfig:
    config = load_config(None)
    base = {
        f"{section}.{key}": value for section, keys in TINY.items() for key, value in keys.items()
    }
    return with_overrides(config, {**base, **overrides})


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def exclusive_run(tmp_path_factory: pytest.TempPathFactory, scenes: Path) -> Path:
    """One run through the command line, with a bad row in its annotations.

    What the command printed on stderr is kept in `<run>/../stderr.txt`.
    """
    folder = tmp_path_factory.mktemp("run")
    annotations = folder / "annotations.csv"
    text = scenes.read_text().replace("scene0.wav", str(scenes.parent / "scene0.wav"))
    text = text.replace("scene1.wav", str(scenes.parent / "scene1.wav"))
    # The first row again (a second annotator), then a row past the recording's end.
    first = text.splitlines()[1]
    annotations.write_text(text + f"{first}\n{scenes.parent / 'scene0.wav'},30.0,31.0,low\n")
    config = folder / "train.yaml"
    config.write_text(json.dumps(TINY))  # JSON is YAML
    run = folder / "out"
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = cli.main(
            ["fit", "--data", str(annotations), "--out", str(run), "-c", str(config),
             "--labels", "low,high,beep", "--epochs", "5", "--seed", "1", "--device", "cpu",
             "-q"]
        )  # fmt: skip
    (folder / "stderr.txt").write_text(stderr.getvalue())
    assert code == 0, stderr.getvalue()
    return run


# --- the run folder ------------------------------------------------------------------------------


def test_fit_learns_the_tones_and_writes_a_complete_run(exclusive_run: Path) -> None:
    report = exclusive_run / "report"
    for name in ("checkpoint.pt", "train.yaml", "arrays.npz", "run.json"):
        assert (exclusive_run / name).is_file(), name
    for name in ("summary.md", "metrics.json", "confusion.csv", "confusion.png", "curves.csv",
                 "curves.png", "thresholds.csv"):  # fmt: skip
        assert (report / name).stat().st_size > 0, name
    for label in ("low", "high", "beep"):
        assert (report / f"pr_{label}.png").stat().st_size > 0
        assert (report / f"pr_{label}.csv").stat().st_size > 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["task"] == "multiclass"
    assert metrics["labels"] == ["low", "high", "beep"]
    for label in ("low", "high", "beep"):
        m = metrics["per_label"][label]
        assert m["f1"] > 0.8, (label, m)
        assert 0.0 <= m["threshold"] <= 1.0
    assert metrics["macro_f1"] > 0.9
    with (report / "thresholds.csv").open() as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["precision/recall", "low", "high", "beep"]
    assert [r[0] for r in rows[1:]] == ["0.5", "1", "2"]
    assert all(0.0 <= float(v) <= 1.0 for r in rows[1:] for v in r[1:])
    with (report / "curves.csv").open() as f:
        curves = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in curves] == [1, 2, 3, 4, 5]
    assert "Macro F1" in (report / "summary.md").read_text()


def test_load_run_gives_the_model_and_what_export_needs(exclusive_run: Path) -> None:
    trained = load_run(exclusive_run)
    assert isinstance(trained, Trained)
    c = trained.config
    assert c.labels == ["low", "high", "beep"] and c.task == "multiclass"
    assert c.sample_rate_hz == RATE_HZ and c.frontend.n_fft == 128 and c.frontend.hop_length == 8
    # The default hop is about a quarter window in whole frame hops: 26 x 8 samples = 0.052 s.
    assert c.hop_seconds == 0.052
    # Event defaults: a 3-window median and a merge gap of 2.5 hops (0.13 s), resolved.
    assert c.events == EventsConfig(median_windows=3, merge_gap_seconds=0.13)
    n, frames, mels = trained.validation_x.shape
    assert (frames, mels) == (1 + (round(0.2048 * RATE_HZ) - 128) // 8, 32)
    assert trained.validation_y.shape == (n, 3)
    assert trained.calibration.shape == (16, frames, mels)
    with torch.no_grad():
        p = trained.model(torch.from_numpy(trained.validation_x)).numpy()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)  # softmax inside the model
    assert set(trained.thresholds) == {"low", "high", "beep"}
    assert trained.threshold_rule == {
        "precision_recall_ratio": 1.0,
        "chosen_on": "validation windows",  # one split, no folds to score recordings out of
    }
    assert "--labels low,high,beep" in trained.command
    assert "2 recording(s)" in trained.data_description
    accuracy = np.mean(p.argmax(axis=1) == trained.validation_y.argmax(axis=1))
    assert accuracy == pytest.approx(trained.metrics["accuracy"])


def test_bad_rows_are_reported_and_the_rest_trains(exclusive_run: Path) -> None:
    printed = (exclusive_run.parent / "stderr.txt").read_text()
    csv_path = exclusive_run.parent / "annotations.csv"
    line = len(csv_path.read_text().splitlines())  # the bad row is the last one
    assert f"skipped: {csv_path}:{line}: interval 30.0-31.0 s ends past the end" in printed
    assert "not used: " in printed and "'not_low' (exclusive mode)" in printed
    assert "dropped 1 duplicate annotations (same recording, label, start and end)" in printed
    assert "validation: low F1" in printed  # and the rest trained


def test_fit_refuses_to_overwrite_a_run(
    exclusive_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(
        [
            "fit",
            "--data",
            str(exclusive_run.parent / "annotations.csv"),
            "--out",
            str(exclusive_run),
        ]
    )
    assert code == 2
    assert "already holds a run" in capsys.readouterr().err


def test_recordings_at_mixed_rates_need_rate_which_the_command_line_takes(
    scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """scene1 again at twice the rate: refused, saying how to choose; with --rate it trains."""
    import soundfile

    samples, _ = soundfile.read(scenes.parent / "scene1.wav", dtype="float32")
    write_wav(tmp_path / "scene1.wav", np.repeat(samples, 2), 2 * RATE_HZ)
    text = scenes.read_text().replace("scene0.wav", str(scenes.parent / "scene0.wav"))
    (tmp_path / "annotations.csv").write_text(text)  # scene1.wav: the one here
    config = tmp_path / "train.yaml"
    config.write_text(json.dumps(TINY))
    fit_ = ["fit", "--data", str(tmp_path / "annotations.csv"), "-c", str(config), "-q"]
    fit_ += ["--labels", "low,high,beep", "--epochs", "1", "--device", "cpu"]
    assert cli.main([*fit_, "--out", str(tmp_path / "refused")]) == 2
    message = capsys.readouterr().err
    assert "different sample rates (scene0.wav 4000 Hz, scene1.wav 8000 Hz)" in message
    assert "--rate HZ" in message
    assert cli.main([*fit_, "--out", str(tmp_path / "run"), "--rate", str(RATE_HZ)]) == 0
    assert load_run(tmp_path / "run").config.sample_rate_hz == RATE_HZ


# --- modes, splits, reproducibility ---------------------------------------------------------------


def test_same_seed_same_weights_on_the_cpu(data: AnnotationSet) -> None:
    config = _config(**{"training.epochs": 2, "labels": ["low", "high"], "training.device": "cpu"})
    first = fit(config, data, log=_quiet, progress=False)
    second = fit(config, data, log=_quiet, progress=False)
    for (name, a), (_, b) in zip(
        first.model.state_dict().items(), second.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    other = fit(with_overrides(config, {"training.seed": 5}), data, log=_quiet, progress=False)
    weights = next(iter(other.model.state_dict().values()))
    assert not torch.equal(weights, next(iter(first.model.state_dict().values())))


def test_unannotated_stretches_become_background_intervals(tmp_path: Path) -> None:
    from trainer.annotations import Annotation
    from trainer.annotations.gaps import dense_matcher, gap_annotations

    wav = tmp_path / "rec.wav"
    write_wav(wav, np.zeros(8 * RATE_HZ, dtype=np.float32), RATE_HZ)
    marks = [(1.0, 2.0), (3.0, 3.0), (5.0, 6.0), (5.5, 5.8)]  # a point, and one inside another
    data = AnnotationSet([Annotation(wav, a, b, "x", "t") for a, b in marks])
    gaps = gap_annotations(
        data, dense_matcher(["*"]), ["background"], margin_seconds=0.1, min_seconds=0.5
    )
    spans = [(round(g.start_seconds, 3), round(g.end_seconds, 3), g.label) for g in gaps]
    assert spans == [
        (0.0, 0.9, "background"),
        (2.1, 2.9, "background"),
        (3.1, 4.9, "background"),
        (6.1, 8.0, "background"),
    ]
    assert (
        gap_annotations(
            data, dense_matcher(["other*.wav"]), ["background"], margin_seconds=0.1, min_seconds=0.5
        )
        == []
    )


def test_dense_annotations_give_the_model_a_way_to_say_nothing(data: AnnotationSet) -> None:
    """Exclusive model, tones annotated densely with noise between (issue 12, item 2).
    Without --dense it has no class for the noise and calls it a tone; with it, the noise is
    `background`, which the bundle marks as its background label."""
    lines: list[str] = []
    labels = {"labels": ["low", "high", "beep"], "training.epochs": 6}
    sparse = fit(_config(**labels), data, log=_quiet, progress=False)
    dense = fit(_config(**labels, dense=["*"]), data, log=lines.append, progress=False)
    assert dense.config.labels == ["low", "high", "beep", "background"]
    assert dense.config.background == ["background"]
    assert any(line.startswith("dense annotations: ") for line in lines)
    noise = dense.validation_x[dense.validation_y[:, 3] == 1]  # held-out background windows
    assert len(noise) >= 6
    with torch.no_grad():
        said_sparse = sparse.model(torch.from_numpy(noise)).numpy()
        said_dense = dense.model(torch.from_numpy(noise)).numpy()
    # The sparse model must give noise to a tone (softmax over three tones sums to 1).
    assert said_sparse.max(axis=1).mean() > 0.5
    assert (said_dense.argmax(axis=1) == 3).mean() >= 0.8
    assert "annotations sparse" in sparse.data_description
    assert "annotations dense (*)" in dense.data_description


def test_overlapped_mode_learns_from_not_labels(data: AnnotationSet) -> None:
    lines: list[str] = []
    config = _config(**{"mode": "overlapped", "labels": ["low", "high"], "training.epochs": 5})
    trained = fit(config, data, log=lines.append, progress=False)
    assert trained.config.task == "multilabel"
    y = trained.validation_y
    assert np.isnan(y).any() and (y == 0).any() and (y == 1).any()
    with torch.no_grad():
        p = trained.model(torch.from_numpy(trained.validation_x)).numpy()
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert not np.allclose(p.sum(axis=1), 1.0)  # sigmoid per label, not softmax
    for label in ("low", "high"):
        assert trained.metrics["per_label"][label]["f1"] > 0.8, trained.metrics
        assert trained.metrics["per_label"][label]["negatives"] > 0
    assert not any("warning" in line for line in lines)
    # beep has no not_beep annotations: training it in overlapped mode says so.
    fit(
        with_overrides(config, {"labels": ["low", "beep"], "training.epochs": 1}),
        data,
        log=lines.append,
        progress=False,
    )
    assert any("no not_beep annotations" in line for line in lines)


def test_holdout_by_recordings_validates_on_unseen_recordings(data: AnnotationSet) -> None:
    config = _config(**{"validation.split": "recordings", "labels": ["low", "high"]})
    trained = fit(config, data, log=_quiet, progress=False)
    assert "whole recordings held out" in trained.data_description
    assert trained.metrics["per_label"]["low"]["f1"] > 0.8
    assert trained.metrics["per_label"]["high"]["f1"] > 0.8


def test_kfold_trains_k_models_and_reports_their_spread(
    data: AnnotationSet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import trainer.features

    passes: list[int] = []  # samples of each frontend pass (the real frontend still runs)

    def counted(signal: np.ndarray, spec: Any) -> np.ndarray:
        passes.append(len(signal))
        return logmel(signal, spec)

    monkeypatch.setattr(trainer.features, "logmel", counted)
    config = _config(**{"validation.folds": 3, "labels": ["low", "high"], "training.epochs": 2})
    trained = fit(config, data, tmp_path / "run", log=_quiet, progress=False)
    # Features once per recording (and once for the noise augmentation's white noise), not per
    # epoch, fold or window: 3 folds x 2 epochs x 256 windows drew from these passes.
    padding = 2 * trained.config.window_samples + 2 * trained.config.frontend.hop_length
    recordings = [n for n in passes if n - padding == round(SECONDS * RATE_HZ)]
    assert len(recordings) == len(data.recordings()) == 2
    assert len(passes) == len(recordings) + 1
    cv = trained.metrics["cross_validation"]
    assert cv["folds"] == 3 and len(cv["per_fold"]) == 3
    f1s = [f["macro_f1"] for f in cv["per_fold"]]
    assert cv["macro_f1_mean"] == pytest.approx(np.mean(f1s))
    assert cv["macro_f1_std"] == pytest.approx(np.std(f1s))
    assert trained.metrics["macro_f1"] == pytest.approx(max(f1s))  # the best fold is kept
    assert cv["kept_fold"] == int(np.argmax(f1s)) + 1
    assert {r["fold"] for r in trained.history} == {1, 2, 3}
    with (tmp_path / "run" / "report" / "folds.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 3
    assert (
        "Cross-validation over 3 folds" in (tmp_path / "run" / "report" / "summary.md").read_text()
    )


def test_a_label_without_annotations_stops_with_a_clear_error(data: AnnotationSet) -> None:
    with pytest.raises(DataError, match="no usable windows for label 'hum'"):
        fit(_config(labels=["low", "hum"]), data, log=_quiet, progress=False)


# --- loss, device, thresholds, config ------------------------------------------------------------


def test_masked_bce_ignores_unknown_targets() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 4.0, -2.0]], requires_grad=True)
    targets = torch.tensor([[1.0, float("nan"), 0.0], [float("nan"), float("nan"), 1.0]])
    loss = masked_bce(logits, targets)
    known = [(0, 0, 1.0), (0, 2, 0.0), (1, 2, 1.0)]
    expected = np.mean([
        torch.nn.functional.binary_cross_entropy_with_logits(logits[i, j], torch.tensor(t)).item()
        for i, j, t in known
    ])  # fmt: skip
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad is not None
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0 and logits.grad[1, 1] == 0
    assert logits.grad[0, 0] != 0 and logits.grad[1, 2] != 0


def test_precision_follows_the_device() -> None:
    # No GPU on the test machines: CUDA's choices are checked through the explicit argument.
    assert precision_for(torch.device("cpu")).autocast_dtype is None
    assert not precision_for(torch.device("cpu")).grad_scaler
    bf16 = precision_for(torch.device("cuda"), bf16_supported=True)
    assert bf16.autocast_dtype == torch.bfloat16 and not bf16.grad_scaler
    fp16 = precision_for(torch.device("cuda"), bf16_supported=False)
    assert fp16.autocast_dtype == torch.float16 and fp16.grad_scaler
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert resolve_device("auto").type == "cpu"
        with pytest.raises(TrainError, match="sees no CUDA GPU"):
            resolve_device("cuda")


def test_threshold_is_where_precision_meets_recall() -> None:
    truth = np.array([1, 1, 1, 1, 0, 1, 0, 0, 0, 0])
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.65, 0.6, 0.4, 0.3, 0.2, 0.1])
    thresholds, precision, recall = pr_curve(truth, scores)
    assert list(thresholds) == sorted(scores, reverse=True)
    assert precision[5] == pytest.approx(5 / 6) and recall[5] == 1.0
    # At 0.65: 4 of 5 said yes are right and 4 of 5 found, P/R = 1 exactly; the threshold sits
    # halfway to the next score down, 0.6.
    assert choose_threshold(truth, scores, 1.0) == pytest.approx(0.625)
    # P/R is 1.67 at 0.8 and 1.25 at 0.7: asking for 2 takes 0.8, halfway to 0.7.
    assert choose_threshold(truth, scores, 2.0) == pytest.approx(0.75)
    # Asking for precision twice recall moves it up, never out of 0..1.
    assert choose_threshold(np.zeros(4), np.ones(4) * 0.3, 1.0) == 0.5  # no positives: default


def test_config_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    path.write_text(
        "mode: exclusive\ntraining:\n  epochs: 0\n  sed: 3\n"
        "events:\n  median_windows: 2\n  merge_gap_seconds: -0.1\n"
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert f"{path}:3: training.epochs: must be at least 1, got 0" in message
    assert f"{path}:4: training.sed: unknown key" in message
    # Event defaults are checked by the edge's own rules, so no bundle a device refuses is made.
    assert f"{path}:6: events.median_windows: must be an odd integer >= 1, got 2" in message
    assert f"{path}:7: events.merge_gap_seconds: must be within 0..86400, got -0.1" in message
    with pytest.raises(
        ConfigError,
        match=r"hop_seconds 0.05 is 200 samples at 4000 Hz, not a multiple of the frame hop",
    ):
        resolve(
            with_overrides(TrainConfig(), {"hop_seconds": 0.05, "features.hop_length": 64}),
            RATE_HZ,
            ["a"],
        )


def test_a_mel_scale_spent_on_low_frequencies_is_warned_about() -> None:
    """At 384 kHz (bats) the default mel bands put half their number below ~11 kHz."""
    from trainer.resolve import mel_spread_warning

    def warning(rate: int, **features: object) -> str | None:
        overrides = {f"features.{k}": v for k, v in features.items()}
        config = resolve(with_overrides(load_config(None), overrides), rate, ["a"])
        return mel_spread_warning(config.frontend)

    bats = warning(384_000)
    assert bats is not None
    assert bats.startswith("warning: half of the 32 mel bands lie below 12.4 kHz of the 192 kHz")
    assert "features.fmin_hz" in bats
    assert warning(384_000, fmin_hz=15_000.0) is None
    assert warning(2500) is None and warning(44_100) is None and warning(16_000) is None


def test_event_defaults_follow_the_hop_unless_given(tmp_path: Path) -> None:
    """merge_gap_seconds null is 2.5 hops once the hop is known; a value in train.yaml stays."""
    fly = resolve(TrainConfig(), 2500, ["pulse"])  # the fly-song rate: hop 0.0512 s
    assert fly.hop_seconds == 0.0512
    assert fly.events == EventsConfig(median_windows=3, merge_gap_seconds=0.128)
    path = tmp_path / "train.yaml"
    path.write_text("events:\n  median_windows: 1\n  merge_gap_seconds: 0\n")
    given = resolve(load_config(path), 2500, ["pulse"]).events
    assert (given.median_windows, given.merge_gap_seconds) == (1, 0.0)


def test_fit_export_scan_from_the_command_lines(exclusive_run: Path, tmp_path: Path) -> None:
    """The whole user path: `soundwatch-train fit` (the fixture), `export`, then the edge's
    `soundwatch scan` on a recording the model has never heard; events scored against truth."""
    bundle = tmp_path / "bundle"
    exported = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "export", str(exclusive_run), "--bundle",
         str(bundle)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    # Only soundwatch's own lines: the figures table and "wrote"; the converters' chatter
    # (torch, torchao, litert, TensorFlow Lite: 19 lines before) and no progress bar, as
    # stderr is not a terminal.
    lines = (exported.stdout + exported.stderr).splitlines()
    ours = ("format ", "pytorch ", "onnx-fp32 ", "onnx-int8 ", "tflite-int8 ", "wrote ")
    assert [line for line in lines if not line.startswith(ours)] == []
    assert len(lines) == 6 and lines[-1].startswith(f"wrote {bundle} in ")
    samples, rows = _scene(seed=99)
    write_wav(tmp_path / "fresh.wav", samples, RATE_HZ)
    scanned = subprocess.run(
        [sys.executable, "-m", "edge.cli", "scan", str(tmp_path / "fresh.wav"),
         "--model", str(bundle), "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert scanned.returncode == 0, scanned.stderr
    # The run's event defaults reach the manifest and the model card.
    events = load_bundle(bundle).manifest.events
    assert events == EventTiming(median_windows=3, merge_gap_seconds=0.13)
    assert (
        "- event defaults: median_windows 3, min_duration_seconds 0.0, merge_gap_seconds 0.13,"
        " max_duration_seconds 0.0, refractory_seconds 0.0" in (bundle / "README.md").read_text()
    )
    found = [
        json.loads(line)
        for line in (tmp_path / "out" / "fresh.wav.events.jsonl").read_text().splitlines()
    ]
    ends = [(m["label"], m["start_offset"], m["end_offset"]) for m in found if m["type"] == "end"]
    for label in ("low", "high"):
        truth = [(a, b) for a, b, name in rows if name == label]
        got = [(a, b) for name, a, b in ends if name == label]
        # A true tone is found when a detected event of its label overlaps it.
        hits = sum(any(a < t1 and b > t0 for a, b in got) for t0, t1 in truth)
        true_events = sum(any(a < t1 and b > t0 for t0, t1 in truth) for a, b in got)
        recall, precision = hits / len(truth), true_events / max(1, len(got))
        f1 = 2 * precision * recall / max(1e-9, precision + recall)
        assert f1 >= 0.8, (label, precision, recall, got, truth)
