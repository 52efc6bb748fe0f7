"""Thresholds chosen out of fold at fit, on generated scenes with a tiny backbone built here.

The scenes hold low and high tones (annotated) and a 1 kHz hum that nobody annotated, between
stretches of noise. The head learns low against high from the annotated windows only, so the
validation windows separate at a middling threshold, while on whole recordings the hum scores
high for one of the two labels. Thresholds chosen out of fold on the training recordings'
per-second scores see the hum; the exported bundle is then evaluated by the edge's own scan on
recordings it never saw.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.audio import tone_events
from tests.scenes import write_annotated
from tests.test_transfer import RATE_HZ, write_backbone
from trainer import cli
from trainer.annotations import Annotation, load_any
from trainer.evaluate import evaluate
from trainer.outoffold import Folds, Grid, Scored, choose, per_second
from trainer.scoring import counts_at

SECONDS = 40.0
HZ = {"low": 460.0, "high": 1540.0, "hum": 1000.0}


def _scene(seed: int) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Tones of 1.5-3 s with 0.5-1.5 s of noise between; half of them the unannotated hum."""
    rng = np.random.default_rng(seed)
    events, rows, t = [], [], 0.5
    while t < SECONDS - 3:
        kind = str(rng.choice(["low", "high", "hum", "hum"]))
        duration = float(rng.uniform(1.5, 3.0))
        events.append((t, t + duration, HZ[kind]))
        if kind != "hum":
            rows.append((t, t + duration, kind))
        t += duration + float(rng.uniform(0.5, 1.5))
    samples = tone_events(RATE_HZ, SECONDS, events, 0.02, 0.3, seed=seed)
    return samples, rows


def _write(folder: Path, seeds: range | tuple[int, ...]) -> Path:
    return write_annotated(folder, seeds, _scene, RATE_HZ)


def _fit(args: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.main(["fit", *args, "-q", "--seed", "1", "--overwrite"])
    return code, err.getvalue()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six training scenes, fit --backbone (thresholds out of fold, the default) and export."""
    folder = tmp_path_factory.mktemp("oof")
    write_backbone(folder / "backbone")
    train = _write(folder / "train", range(1, 7))
    _write(folder / "test", (100, 101))
    code, err = _fit(
        ["--data", str(train), "--out", str(folder / "run"), "--backbone",
         str(folder / "backbone"), "--cache", str(folder / "cache"), "--epochs", "20",
         "--validation", "recordings"]
    )  # fmt: skip
    assert code == 0, err
    (folder / "fit.log").write_text(err)
    exported = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "export", str(folder / "run"), "--bundle",
         str(folder / "bundle"), "--min-positives", "1000", "-q"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    return folder


def test_out_of_fold_thresholds_land_near_the_best_on_new_recordings(fitted: Path) -> None:
    """On held-out scenes, per-second F1 at the out-of-fold thresholds is within a few points
    of the best any threshold reaches there; the validation thresholds fire on the hum."""
    rule = yaml.safe_load((fitted / "bundle" / "manifest.yaml").read_text())["threshold_rule"]
    assert rule["chosen_on"].startswith("out-of-fold per-second scores")
    report = evaluate(fitted / "bundle", load_any(fitted / "test" / "annotations.csv").annotations)
    at_oof, at_validation, best = [], [], []
    for s in report.labels:
        truth, scores = np.array(s.second_truth), np.array(s.second_scores)
        rests = rule["rests_on"][s.label]
        assert rests["chosen"] and rests["true_seconds"] >= 20
        at_oof.append(s.segment.f1 or 0.0)
        at_validation.append(counts_at(truth, scores, rests["validation_threshold"])["f1"])
        best.append(s.best_segment()["f1"])  # type: ignore[index]
        assert at_oof[-1] >= best[-1] - 0.08, (s.label, at_oof[-1], best[-1])
    assert np.mean(at_oof) >= np.mean(best) - 0.05
    assert np.mean(at_validation) <= np.mean(at_oof) - 0.3  # the hum's seconds fire


def test_the_fit_says_what_the_thresholds_rest_on(fitted: Path) -> None:
    log = (fitted / "fit.log").read_text()
    assert "thresholds chosen out of fold: 5 folds by recordings, 240 s scored" in log
    summary = (fitted / "run" / "report" / "summary.md").read_text()
    for label in ("low", "high"):
        line = next(x for x in summary.splitlines() if x.startswith(f"- {label}: "))
        assert "out-of-fold per-second F1" in line and "annotations in" in line
    run = json.loads((fitted / "run" / "run.json").read_text())
    assert run["metrics"]["threshold_rule"]["rests_on"]["high"]["seconds"] == 240


def test_per_second_scores_are_the_edge_s(fitted: Path) -> None:
    """The windows fit scores, through outoffold.per_second, give the very rows the edge's
    scan gives for the exported fp32 head on a new recording."""
    from edge.model.backbone import load_backbone
    from trainer.embeddings import EmbeddingCache
    from trainer.transfer import load_transfer_run

    run = load_transfer_run(fitted / "run")
    recording = fitted / "test" / "scene100.wav"
    hop = round(run.trained.config.hop_seconds * RATE_HZ)  # type: ignore[operator]
    cache = EmbeddingCache(load_backbone(fitted / "backbone"), fitted / "cache", hop)
    windows = cache.recording(recording)
    cache.close()
    grid = Grid(run.trained.config.window_seconds, hop, RATE_HZ)
    n = grid.count(round(SECONDS * RATE_HZ))
    scores = run.trained.model(torch.from_numpy(windows[:n])).detach().numpy()
    mine = per_second(recording, grid.centres(n), scores, grid.window_seconds, SECONDS)
    annotations = load_any(fitted / "test" / "annotations.csv").annotations
    mine_only = [a for a in annotations if a.recording == recording]
    edge = evaluate(fitted / "bundle", mine_only, model_file="onnx-fp32")
    high = run.trained.config.labels.index("high")
    assert len(mine.seconds) == len(edge.labels[0].second_scores) == 40
    by_label = {s.label: np.array(s.second_scores) for s in edge.labels}
    # The scan writes 4 decimals.
    np.testing.assert_allclose(mine.scores[:, high], by_label["high"], atol=1e-4)


def test_a_label_with_few_true_seconds_keeps_its_validation_threshold() -> None:
    """Fewer than 20 true seconds out of fold: the validation threshold stays, loudly."""
    rng = np.random.default_rng(0)
    seconds = np.arange(100)
    scores = rng.uniform(0, 0.4, size=(100, 2)).astype(np.float32)
    scores[:30, 0] = 0.9  # 30 true seconds of "a", found above 0.4
    scored = [Scored(Path("r.wav"), seconds, scores)]
    marks = [
        Annotation(Path("r.wav"), 0.0, 30.0, "a", "made:1"),
        Annotation(Path("r.wav"), 50.0, 55.0, "b", "made:2"),
    ]
    folds = Folds("recordings", 30.0, [], {})
    oof = choose(["a", "b"], scored, marks, 1.0, {"a": 0.05, "b": 0.3}, folds)
    a, b = oof.choices
    assert a.chosen and 0.4 < a.threshold < 0.9 and a.f1 == 1.0 and a.true_seconds == 30
    assert not b.chosen and b.threshold == 0.3 and b.true_seconds == 5
    assert b.line().startswith("WARNING b: kept the validation threshold 0.3: only 5 true of 100 s")


def test_too_few_recordings_or_blocks_fall_back_loudly(tmp_path: Path) -> None:
    """One 40-s recording holds two 30-s blocks, fewer than 5 folds: validation thresholds,
    and a warning that says so."""
    write_backbone(tmp_path / "backbone")
    data = _write(tmp_path / "one", (1,))
    code, err = _fit(
        ["--data", str(data), "--out", str(tmp_path / "run"), "--backbone",
         str(tmp_path / "backbone"), "--cache", str(tmp_path / "cache"), "--epochs", "3"]
    )  # fmt: skip
    assert code == 0, err
    assert (
        "WARNING thresholds: chosen on the validation windows only: 5 folds need 5 annotated"
        " recordings, or 5 stretches of 30 s with annotations (validation.block_seconds);"
        " these hold 1 and 2"
    ) in err
    rule = json.loads((tmp_path / "run" / "run.json").read_text())["threshold_rule"]
    assert rule["chosen_on"] == "validation windows"


def test_a_cnn_chooses_out_of_fold_from_its_folds_models(fitted: Path, tmp_path: Path) -> None:
    """A CNN with k folds by recording: its folds' models score the recordings they held out;
    asked for out-of-fold thresholds without such folds, one clear line."""
    data = str(fitted / "train" / "annotations.csv")
    code, err = _fit(
        ["--data", data, "--out", str(tmp_path / "bad"), "--thresholds", "out-of-fold"]
    )
    assert code == 2
    assert "thresholds out-of-fold: a CNN needs --validation recordings or blocks" in err
    code, err = _fit(
        ["--data", data, "--out", str(tmp_path / "cnn"), "--folds", "3", "--validation",
         "recordings", "--epochs", "2"]
    )  # fmt: skip
    assert code == 0, err
    assert "thresholds chosen out of fold: 3 folds by recordings, 240 s scored" in err
    rule = json.loads((tmp_path / "cnn" / "run.json").read_text())["threshold_rule"]
    assert {r["seconds"] for r in rule["rests_on"].values()} == {240}


def test_a_cnn_with_one_split_by_recordings_uses_its_validation_recordings(
    fitted: Path, tmp_path: Path
) -> None:
    """One split by recordings: the validation model scores only the 40-s recordings it held
    out, not the ones it trained on."""
    data = str(fitted / "train" / "annotations.csv")
    code, err = _fit(
        ["--data", data, "--out", str(tmp_path / "cnn"), "--validation", "recordings",
         "--share", "0.5", "--epochs", "2"]
    )  # fmt: skip
    assert code == 0, err
    found = re.search(r"thresholds chosen out of fold: recordings held out, (\d+) s scored", err)
    assert found, err
    seconds = int(found.group(1))
    assert seconds in (40, 80, 120, 160, 200)  # whole held-out recordings, not all six
    rule = json.loads((tmp_path / "cnn" / "run.json").read_text())["threshold_rule"]
    assert {r["seconds"] for r in rule["rests_on"].values()} == {seconds}
