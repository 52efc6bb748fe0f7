"""The review -> retrain loop, measured on generated audio (tests/loop.py builds it).

The deployed model calls a buzz it never heard `low`; 20 detections marked wrong by the
simulated reviewer, exported by the review's code and fed to `fit --init`, make a candidate
whose precision on a fresh recording rises while its recall holds. Then the same verdicts'
use for comparing and recalibrating, and `--init`'s contract (labels kept then extended,
weights copied, a clear error for a bundle without float weights).
"""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests import loop
from trainer import cli
from trainer.config import load_config
from trainer.finetune import Init, labels_from, load_init, start_from
from trainer.model import ModelConfig, SoundCNN
from trainer.scoring import threshold_for_precision


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """The deployed bundle, a recording it was deployed on, a fresh one and a held-out one."""
    folder = tmp_path_factory.mktemp("loop")
    deployed = loop.first_model(folder)
    low, buzz = {}, {}
    for name, seed, seconds in (("deployed", 2, 60.0), ("fresh", 3, 40.0), ("held", 4, 40.0)):
        low[name], buzz[name] = loop.scene(folder / f"{name}.wav", seconds, seed, True)
    return {"folder": folder, "deployed": deployed, "low": low, "buzz": buzz}


@pytest.fixture(scope="module")
def candidate(world: dict[str, object]) -> Path:
    """Fine-tuned with 20 wrong verdicts (and the right ones met on the way)."""
    folder, deployed, low = world["folder"], world["deployed"], world["low"]
    assert isinstance(folder, Path) and isinstance(deployed, Path) and isinstance(low, dict)
    sub = folder / "n20"
    sub.mkdir()
    verdicts = loop.review(
        deployed, folder / "deployed.wav", loop.overlaps(low["deployed"]), 20, sub
    )
    return loop.fine_tune(deployed, folder / "original.csv", verdicts, sub, "n20")


def _held_out_verdicts(world: dict[str, object]) -> Path:
    folder, deployed, low = world["folder"], world["deployed"], world["low"]
    assert isinstance(folder, Path) and isinstance(deployed, Path) and isinstance(low, dict)
    sub = folder / "held"
    if not (sub / "verdicts").is_dir():
        sub.mkdir(exist_ok=True)
        loop.review(
            deployed, folder / "held.wav", loop.overlaps(low["held"]), 1000, sub
        )  # every detection
    return sub / "verdicts"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv)
    return code, out.getvalue(), err.getvalue()


def test_twenty_wrong_verdicts_raise_precision_on_a_fresh_recording(
    world: dict[str, object], candidate: Path
) -> None:
    folder, deployed, low = world["folder"], world["deployed"], world["low"]
    assert isinstance(folder, Path) and isinstance(deployed, Path) and isinstance(low, dict)
    fit_log = (candidate.parent / "fit-n20.txt").read_text()
    assert "20 wrong detections (not_<label>) train as background" in fit_log
    before = loop.measure(deployed, folder / "fresh.wav", low["fresh"], folder)
    after = loop.measure(candidate, folder / "fresh.wav", low["fresh"], candidate.parent)
    # The buzz fools the deployed model about as often as a low tone occurs: precision ~0.5.
    assert before[0] <= 0.7 and before[1] >= 0.9, before
    assert after[0] >= 0.9, (before, after)
    assert after[1] >= before[1] - 0.1, (before, after)
    # The candidate kept the deployed labels in order, and carries its own float weights.
    assert yaml.safe_load((candidate / "manifest.yaml").read_text())["labels"] == [
        "low",
        "background",
    ]
    assert load_init(candidate).labels == ["low", "background"]


def test_relabelled_detections_extend_the_labels(world: dict[str, object]) -> None:
    """The reviewer calls the buzzes `buzz`: the candidate keeps `low` and `background` first,
    adds `buzz`, and finds the buzzes of the fresh recording as buzz, not low."""
    folder, deployed, low = world["folder"], world["deployed"], world["low"]
    assert isinstance(folder, Path) and isinstance(deployed, Path) and isinstance(low, dict)
    sub = folder / "buzz"
    sub.mkdir()
    verdicts = loop.review(
        deployed, folder / "deployed.wav", loop.overlaps(low["deployed"]), 20, sub, "buzz"
    )
    candidate = loop.fine_tune(deployed, folder / "original.csv", verdicts, sub, "buzz")
    manifest = yaml.safe_load((candidate / "manifest.yaml").read_text())
    assert manifest["labels"] == ["low", "background", "buzz"]
    buzzes = world["buzz"]
    assert isinstance(buzzes, dict)
    low_p, low_r = loop.measure(candidate, folder / "fresh.wav", low["fresh"], sub)
    buzz_p, buzz_r = loop.measure(candidate, folder / "fresh.wav", buzzes["fresh"], sub, "buzz")
    assert low_p >= 0.9 and low_r >= 0.9, (low_p, low_r)
    assert buzz_p >= 0.9 and buzz_r >= 0.8, (buzz_p, buzz_r)


def test_compare_counts_both_models_on_the_same_held_out_verdicts(
    world: dict[str, object], candidate: Path
) -> None:
    verdicts = _held_out_verdicts(world)
    code, out, err = _run(
        ["compare", "--model", str(world["deployed"]), "--candidate", str(candidate),
         "--data", str(verdicts)]
    )  # fmt: skip
    assert code == 0, err
    row = next(line for line in out.splitlines() if line.startswith("low "))
    cells = row.replace("|", " ").replace("(", " ").replace(")", " ").split()
    right, wrong = int(cells[1]), int(cells[2])
    deployed_tp, deployed_fp, deployed_fn = map(int, cells[5:8])
    candidate_tp, candidate_fp, candidate_fn = map(int, cells[10:13])
    assert right >= 10 and wrong >= 10, out  # every detection reviewed: about half are buzzes
    assert (deployed_tp, deployed_fp, deployed_fn) == (right, wrong, 0), out
    assert candidate_fp <= wrong // 5 and candidate_tp >= right - 2, out
    assert candidate_tp + candidate_fn == right
    assert f"({right + wrong} reviewed events;" in out


def test_recalibrate_raises_the_threshold_to_the_precision_asked(
    world: dict[str, object], tmp_path: Path
) -> None:
    verdicts = _held_out_verdicts(world)
    bundle = tmp_path / "bundle"
    shutil.copytree(Path(str(world["deployed"])), bundle)
    before = yaml.safe_load((bundle / "manifest.yaml").read_text())["thresholds"]["low"]
    code, out, err = _run(
        ["calibrate", "--model", str(bundle), "--verdicts", str(verdicts), "--precision", "0.9"]
    )
    assert code == 0, err
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    after = manifest["thresholds"]["low"]
    rests = manifest["threshold_rule"]["rests_on"]["low"]
    assert after > before, out
    assert rests["right"] >= 10 and rests["wrong"] >= 10 and not rests["kept"]
    assert f"low: {before:.3g} -> {after:.3g}, precision " in out
    assert f"on {rests['right']} right and {rests['wrong']} wrong verdicts" in out


def test_too_few_verdicts_keep_the_threshold_loudly(
    world: dict[str, object], tmp_path: Path
) -> None:
    folder, deployed, low = world["folder"], world["deployed"], world["low"]
    assert isinstance(folder, Path) and isinstance(deployed, Path) and isinstance(low, dict)
    verdicts = loop.review(deployed, folder / "held.wav", loop.overlaps(low["held"]), 3, tmp_path)
    bundle = tmp_path / "bundle"
    shutil.copytree(deployed, bundle)
    manifest = (bundle / "manifest.yaml").read_text()
    code, out, err = _run(
        ["calibrate", "--model", str(bundle), "--verdicts", str(verdicts), "--precision", "0.9"]
    )
    assert code == 0, err
    assert "low: KEPT " in out and "fewer than 20 verdicts" in out
    assert "WARNING: some thresholds were KEPT" in err
    assert (bundle / "manifest.yaml").read_text() == manifest  # nothing written


def test_threshold_for_precision_is_the_lowest_that_reaches_it() -> None:
    truth = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], dtype=np.float32)
    # Precision 1.0 holds down to 0.8 (2 of 2); 0.75 to 0.6 (3 of 4); halfway to the next.
    assert threshold_for_precision(truth, scores, 1.0) == pytest.approx(0.75)
    assert threshold_for_precision(truth, scores, 0.75) == pytest.approx(0.55)
    assert threshold_for_precision(np.zeros(3, bool), scores[:3], 0.5) is None


def test_init_keeps_the_weights_and_labels_and_adds_a_new_label(tmp_path: Path) -> None:
    config = ModelConfig(channels=[4], dropout=0.0)
    old = SoundCNN(config, (8, 16), 2, "multiclass")
    init = Init(tmp_path, old, load_config(None, {"labels": ["low", "background"]}))
    labels = labels_from(init, ["whistle", "low", "background"])
    assert labels == ["low", "background", "whistle"]
    torch.manual_seed(5)
    new = SoundCNN(config, (8, 16), 3, "multiclass")
    fresh_row = new.classifier.weight[2].detach().clone()
    start_from(init, new, labels)
    assert torch.equal(new.state_dict()["features.0.weight"], old.state_dict()["features.0.weight"])
    assert torch.equal(new.classifier.weight[:2], old.classifier.weight)
    assert torch.equal(new.classifier.bias[:2], old.classifier.bias)
    assert torch.equal(new.classifier.weight[2], fresh_row)


def test_init_from_a_bundle_without_float_weights_says_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "old"  # a bundle exported before bundles kept their float weights
    shutil.copytree("models/flysong", old, ignore=shutil.ignore_patterns("*.pt", "train.yaml"))
    code, _, err = _run(
        ["fit", "--init", str(old), "--data", str(tmp_path), "--out", str(tmp_path / "r")]
    )
    assert code == 2
    assert err.strip().splitlines() == [
        f"soundwatch-train: --init {old}: no checkpoint.pt or train.yaml: not a bundle"
        " exported by this version (export copies the run's float weights into the bundle) nor"
        " a run folder; re-export the bundle from its run, or pass the run folder"
    ]


def test_the_bundled_fly_song_model_can_be_fine_tuned() -> None:
    """models/flysong carries its float weights: `fit --init flysong` starts from the very
    model the int8 files were made from (same scores on the same input as its fp32 ONNX)."""
    import onnxruntime as ort

    init = load_init(Path("models/flysong"))
    assert init.labels == ["ambient", "mel-pulse", "mel-sine"]
    x = np.random.default_rng(0).standard_normal((4, *init.model.input_shape)).astype(np.float32)
    init.model.eval()
    with torch.no_grad():
        ours = init.model(torch.from_numpy(x)).numpy()
    session = ort.InferenceSession("models/flysong/model.fp32.onnx")
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert np.abs(ours - theirs).max() < 1e-4
