"""The run folder: what `fit` writes and `export` reads, the contract between the two.

`fit` returns a `Trained` and, with a run folder, writes it with `save_run`; `export` reads it
back with `load_run`. Layout: `checkpoint.pt` (weights and model config), `train.yaml` (the
resolved config, which trains the same model again), `arrays.npz` (calibration and validation
windows) and `run.json` (thresholds, threshold rule, metrics, data description, command,
history); the report under `report/` is written beside them by `trainer.report`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.errors import SoundwatchError
from trainer.config import TrainConfig, dump, load_config
from trainer.model import SoundCNN, load_checkpoint, save_checkpoint
from trainer.report import to_json


class TrainError(SoundwatchError):
    """Training cannot start or a run folder cannot be read; the message says what and where."""


@dataclass
class Trained:
    """A trained model with everything export needs (see trainer.md / the run folder)."""

    model: torch.nn.Module  # float32, eval(); (N, frames, mels) -> (N, labels) probabilities
    config: TrainConfig  # resolved: labels, task, rate, window, hop, frontend, events
    thresholds: dict[str, float]
    threshold_rule: dict[str, Any]
    metrics: dict[str, Any]
    calibration: np.ndarray  # float32 (K, frames, mels) training windows, int8 calibration
    validation_x: np.ndarray  # float32 (N, frames, mels)
    validation_y: np.ndarray  # float32 (N, labels), NaN where unknown
    data_description: str
    command: str
    history: list[dict[str, Any]] = field(default_factory=list)


def save_run(run_dir: Path, trained: Trained) -> None:
    """Write `checkpoint.pt`, `train.yaml`, `arrays.npz` and `run.json` into `run_dir`."""
    run_dir.mkdir(parents=True, exist_ok=True)
    assert isinstance(trained.model, SoundCNN)
    save_checkpoint(run_dir / "checkpoint.pt", trained.model)
    write_run(run_dir, trained)


def write_run(run_dir: Path, trained: Trained, extra: dict[str, Any] | None = None) -> None:
    """Everything of a run but its weights: `train.yaml`, `arrays.npz` and `run.json` (with
    `extra` added to it), as `read_run` reads them."""
    (run_dir / "train.yaml").write_text(dump(trained.config))
    np.savez_compressed(
        run_dir / "arrays.npz",
        calibration=trained.calibration.astype(np.float32),
        validation_x=trained.validation_x.astype(np.float32),
        validation_y=trained.validation_y.astype(np.float32),
    )
    run = {
        "thresholds": trained.thresholds,
        "threshold_rule": trained.threshold_rule,
        "metrics": trained.metrics,
        "data_description": trained.data_description,
        "command": trained.command,
        "history": trained.history,
        **(extra or {}),
    }
    (run_dir / "run.json").write_text(to_json(run) + "\n")


def load_run(run_dir: Path | str) -> Trained:
    """Read a run folder written by `save_run`; TrainError names a missing or bad file."""
    run_dir = Path(run_dir)
    return read_run(run_dir, "checkpoint.pt", load_checkpoint(run_file(run_dir, "checkpoint.pt")))


def run_file(run_dir: Path, weights: str) -> Path:
    """`run_dir / weights`, once every file of a run is there."""
    for name in (weights, "train.yaml", "arrays.npz", "run.json"):
        if not (run_dir / name).is_file():
            raise TrainError(f"{run_dir}: not a training run (no {name}); make one with fit")
    return run_dir / weights


def read_run(run_dir: Path, weights: str, model: Any) -> Trained:
    """The run in `run_dir` around `model` (loaded from its `weights` file by the caller):
    its config, validation arrays and run.json."""
    run_file(run_dir, weights)
    config = load_config(run_dir / "train.yaml")
    with np.load(run_dir / "arrays.npz") as arrays:
        calibration = arrays["calibration"]
        validation_x, validation_y = arrays["validation_x"], arrays["validation_y"]
    run = json.loads((run_dir / "run.json").read_text())
    return Trained(
        model=model,
        config=config,
        thresholds={k: float(v) for k, v in run["thresholds"].items()},
        threshold_rule=run["threshold_rule"],
        metrics=run["metrics"],
        calibration=calibration,
        validation_x=validation_x,
        validation_y=validation_y,
        data_description=run["data_description"],
        command=run["command"],
        history=run.get("history", []),
    )
