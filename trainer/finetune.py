"""Fine-tuning: `fit --init <bundle or run>` starts from a deployed model's float weights.

A bundle's model files are int8 (and an fp32 ONNX whose batch norms the exporter may have
folded into the convolutions), so none of them gives back the PyTorch weights exactly. `export`
therefore copies the run's float checkpoint (`checkpoint.pt`, about 4 bytes a parameter:
120 kB for the fly-song model) and its resolved `train.yaml` into the bundle; the edge never
reads them, and `--init` takes either a bundle or a run folder, which hold the same two files.

The candidate keeps the init's features, window, rate and network (so its weights fit), its
labels in their order, and adds any new label found in the data (a relabelled detection) with
a fresh row in the classifier. A wrong detection (`not_<label>`, edge/review/export.py) is a
negative of its label: in overlapped mode the trainer reads it so already; in exclusive mode
it trains as the model's background label (`background` or `ambient`: "nothing of interest
here"), when it has one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from trainer.annotations import AnnotationSet
from trainer.config import BACKGROUND_NAMES, TrainConfig, load_config
from trainer.model import SoundCNN, load_checkpoint
from trainer.run import TrainError

INIT_FILES = ("checkpoint.pt", "train.yaml")
"""What `--init` reads from a bundle or a run folder (export copies them into bundles)."""


@dataclass(frozen=True)
class Init:
    """The model to start from: float weights and the resolved config that trained them."""

    folder: Path
    model: SoundCNN
    config: TrainConfig

    @property
    def labels(self) -> list[str]:
        return list(self.config.labels)


def load_init(folder: Path) -> Init:
    """The float model and config of a bundle written by `export`, or of a run folder."""
    folder = Path(folder)
    missing = [name for name in INIT_FILES if not (folder / name).is_file()]
    if missing:
        raise TrainError(
            f"--init {folder}: no {' or '.join(missing)}: not a bundle exported by this version"
            " (export copies the run's float weights into the bundle) nor a run folder;"
            " re-export the bundle from its run, or pass the run folder"
        )
    model = load_checkpoint(folder / "checkpoint.pt")
    return Init(folder, model, load_config(folder / "train.yaml"))


def labels_from(init: Init, wanted: list[str]) -> list[str]:
    """The init's labels in their order, then the wanted ones it lacks (new labels)."""
    return init.labels + [label for label in wanted if label not in init.labels]


def wrong_as_background(
    data: AnnotationSet, config: TrainConfig, say: Callable[[str], None]
) -> AnnotationSet:
    """Exclusive mode: `not_<label>` rows of the model's labels train as `background`."""
    prefix = config.negative_prefix
    if config.mode != "exclusive" or not prefix:
        return data
    negatives = {prefix + label for label in config.labels}
    wrong = sum(a.label in negatives for a in data.annotations)
    if not wrong:
        return data
    names = config.background or [x for x in config.labels if x in BACKGROUND_NAMES]
    if not names:
        say(
            f"warning: {wrong} wrong detections ({prefix}<label>) not used: an exclusive model"
            " needs a background label to learn them as (train it with --dense)"
        )
        return data
    # A `not_<label>` window that would hold another label's annotated sound is no background
    # (e.g. SongExplorer's notsong rows, written for overlapped training): left out.
    sounds = _sounds_by_recording(data, config)
    margin = config.window_seconds / 2
    on_other = {
        id(a)
        for a in data.annotations
        if a.label in negatives
        and any(
            start - margin < a.end_seconds + margin and a.start_seconds - margin < end + margin
            for start, end in sounds.get(a.recording, ())
        )
    }
    rows = [
        replace(a, label=names[0]) if a.label in negatives else a
        for a in data.annotations
        if id(a) not in on_other
    ]
    say(f"{wrong - len(on_other)} wrong detections ({prefix}<label>) train as {names[0]}")
    if on_other:
        say(
            f"{len(on_other)} {prefix}<label> rows lie within a window of a label's"
            " annotated sound: left out"
        )
    return AnnotationSet(rows, data.problems)


def _sounds_by_recording(
    data: AnnotationSet, config: TrainConfig
) -> dict[Path, list[tuple[float, float]]]:
    """(start, end) of the annotations of the model's labels, background aside, by recording."""
    quiet = set(config.background or BACKGROUND_NAMES)
    sounds: dict[Path, list[tuple[float, float]]] = {}
    for a in data.annotations:
        if a.label in config.labels and a.label not in quiet:
            sounds.setdefault(a.recording, []).append((a.start_seconds, a.end_seconds))
    return sounds


def start_from(init: Init, model: SoundCNN, labels: list[str]) -> None:
    """Copy the init's weights into `model` (same network, `labels` extending the init's);
    a new label's classifier row keeps its fresh initialisation."""
    old, n = init.model, len(init.labels)
    if labels[:n] != init.labels:  # labels_from keeps them first; a guard for other callers
        raise TrainError(f"--init {init.folder}: labels {labels} do not start with {init.labels}")
    if (old.input_shape, old.config, old.task) != (model.input_shape, model.config, model.task):
        raise TrainError(
            f"--init {init.folder}: its network ({old.config}, input {old.input_shape},"
            f" {old.task}) differs from this run's ({model.config}, input"
            f" {model.input_shape}, {model.task}); fine-tuning keeps the init's settings"
        )
    state = old.state_dict()
    fresh = model.state_dict()
    with torch.no_grad():
        for name in ("classifier.weight", "classifier.bias"):
            tensor = fresh[name].clone()
            tensor[:n] = state[name]
            state[name] = tensor
    model.load_state_dict(state)
