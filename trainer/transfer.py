"""Transfer learning: `fit --backbone`, a small head trained on a frozen backbone's embeddings.

Reads top to bottom like `trainer.train.fit`: the same annotations, labels, dense background
and validation splits, but windows are the backbone's, on a fixed grid per recording, and
their embeddings come from `trainer.embeddings` (computed once, cached on disk). A grid window
takes an annotation's target when its centre lies within the annotation (at least half the
window in it; `--dense` background keeps half a window from every sound, so its windows hold
none of one) or, for a point or a sound shorter than half a window, within a quarter window of
its middle.
The head (trainer.head) trains in seconds on those rows; the epoch with the best validation
macro F1 is kept and thresholds are chosen on its validation rows, as for the CNN.

The run folder holds what `fit` writes (train.yaml, arrays.npz, run.json, report/) with
`head.pt` instead of `checkpoint.pt`, and `run.json` names the backbone (its manifest path and
file hash); `trainer.transfer_export` turns it into a two-stage bundle.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.audio.files import AudioFile
from edge.model.backbone import Backbone
from trainer import outoffold, report, scoring
from trainer.annotations import AnnotationSet
from trainer.config import TrainConfig
from trainer.dataset import DataError, Examples, label_examples
from trainer.embeddings import EmbeddingCache
from trainer.head import EmbeddingHead, HeadKind, load_head, save_head
from trainer.model import count_parameters, loss_for
from trainer.outoffold import Grid, OutOfFold, threshold_lines
from trainer.resolve import resolve
from trainer.run import Trained, read_run, run_file, write_run
from trainer.splits import splits
from trainer.train import _check_split, _f, with_gaps
from trainer.trainloop import epoch_row

_BATCH = 256
_MIN_STEPS_PER_EPOCH = 20


@dataclass
class TransferRun:
    """A trained head with its run's data, and the backbone it reads."""

    trained: Trained
    backbone_manifest: Path
    backbone_sha256: str


def fit_transfer(
    config: TrainConfig,
    data: AnnotationSet,
    backbone: Backbone,
    backbone_manifest: Path,
    cache: Path,
    run_dir: Path | None = None,
    *,
    head: HeadKind = "linear",
    command: str = "",
    log: Callable[[str], None] | None = None,
) -> TransferRun:
    """Train a head on `backbone` embeddings of `data`; with `run_dir`, write the run folder."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    began = time.perf_counter()
    m = backbone.manifest
    window_seconds = m.window_samples / m.sample_rate
    # The backbone fixes rate and window; the hop defaults to half a window.
    hop = max(1, round((config.hop_seconds or window_seconds / 2) * m.sample_rate))
    gap = config.events.merge_gap_seconds
    config = replace(config, window_seconds=window_seconds, hop_seconds=None)
    data, duplicates = data.without_duplicates()
    if duplicates:
        say(f"dropped {duplicates} duplicate annotations (same recording, label, start and end)")
    if config.dense:
        data = with_gaps(config, data, say)
        if config.mode == "exclusive" and config.labels and "background" not in config.labels:
            config = replace(config, labels=[*config.labels, "background"])
    prefix = config.negative_prefix or "\0"
    found = [label for label in data.labels() if not label.startswith(prefix)]
    config = replace(config, sample_rate_hz=m.sample_rate)
    config = resolve(config, m.sample_rate, config.labels or found)
    # The log-mel settings resolve ignores are the CNN's; hop and merge gap are the backbone's.
    events = replace(config.events, merge_gap_seconds=gap or round(2.5 * hop / m.sample_rate, 6))
    config = replace(config, hop_seconds=hop / m.sample_rate, events=events)
    examples = label_examples(data.annotations, config.labels, config.mode, config.negative_prefix)
    for label, count in sorted(examples.ignored.items()):
        say(f"not used: {count} annotations labelled {label!r} ({config.mode} mode)")

    # Small matrices: more threads only contend (training.threads overrides).
    torch.set_num_threads(config.training.threads or 1)
    embedder = EmbeddingCache(backbone, cache, hop, config.training.threads or 1)
    try:
        recordings = sorted({e.annotation.recording for e in examples.items})
        embedded = {path: embedder.recording(path) for path in recordings}
    finally:
        embedder.close()
    say(
        f"backbone {backbone.block.name}: embedded {embedder.computed} recording(s),"
        f" {embedder.reused} from the cache ({cache})"
    )
    rows, example_of = _rows(examples, embedded, window_seconds, hop / m.sample_rate)
    x = np.concatenate([embedded[p][i][None] for p, i in rows]) if rows else np.zeros((0, 1))
    y = np.stack([examples.items[e].target for e in example_of])
    v, t = config.validation, config.training
    folds = splits(examples, v.split, v.share, v.folds, t.seed, v.block_seconds)
    results = []
    head_began = time.perf_counter()
    for fold, (train_idx, val_idx) in enumerate(folds):
        _check_split(examples, train_idx, val_idx, config.labels, fold, len(folds), say)
        train_rows = np.flatnonzero(np.isin(example_of, train_idx))
        val_rows = np.flatnonzero(np.isin(example_of, val_idx))
        results.append(_train(config, x, y, train_rows, val_rows, examples, example_of, head, fold))
    head_seconds = time.perf_counter() - head_began
    kept = int(np.argmax([r["macro"] for r in results]))
    chosen = results[kept]
    ratio = v.precision_recall_ratio
    val_y = y[chosen["val_rows"]]
    scored = scoring.score_labels(config.labels, val_y, chosen["scores"], ratio)
    thresholds = {label: s["threshold"] for label, s in scored["per_label"].items()}
    rule: dict[str, Any] = {"precision_recall_ratio": ratio, "chosen_on": "validation windows"}
    oof = None
    if v.thresholds != "validation":
        grid = Grid(window_seconds, hop, m.sample_rate)
        oof = _out_of_fold(
            config,
            x,
            y,
            embedded,
            examples,
            example_of,
            data,
            grid,
            head,
            thresholds,
            chosen["epoch"],
            say,
        )
    if oof is not None:
        thresholds, rule = {**thresholds, **oof.thresholds}, oof.rule(ratio)
        scored = scoring.score_labels(config.labels, val_y, chosen["scores"], ratio, thresholds)
    seconds = time.perf_counter() - began
    model: EmbeddingHead = chosen["model"]
    metrics: dict[str, Any] = {
        "task": config.task,
        "labels": config.labels,
        **scored,
        "threshold_rule": rule,
        "best_epoch": chosen["epoch"],
        "train_seconds": round(seconds, 1),
        "head_train_seconds": round(head_seconds, 2),
        "device": "cpu",
        "parameters": count_parameters(model),
        "backbone": {
            "name": backbone.block.name,
            "recordings_embedded": embedder.computed,
            "recordings_from_cache": embedder.reused,
        },
    }
    if config.task == "multiclass":
        metrics["accuracy"] = float(
            np.mean(chosen["scores"].argmax(axis=1) == val_y.argmax(axis=1))
        )
    metrics = report.clean(metrics)
    train_rows = chosen["train_rows"]
    calibration = x[train_rows[: config.windows.calibration_windows]]
    description = (
        f"{len(examples.items)} annotations in {len(recordings)} recording(s), embedded by"
        f" backbone {backbone.block.name} into {len(x)} windows of {window_seconds:g} s;"
        f" {len(chosen['train_rows'])} training and {len(val_y)} validation windows"
        f" ({v.split} split)"
    )
    trained = Trained(
        model=model,
        config=config,
        thresholds=thresholds,
        threshold_rule=rule,
        metrics=metrics,
        calibration=calibration.astype(np.float32),
        validation_x=x[chosen["val_rows"]].astype(np.float32),
        validation_y=val_y,
        data_description=description,
        command=command,
        history=[row for r in results for row in r["history"]],
    )
    line = ", ".join(f"{k} F1 {_f(s['f1'])}" for k, s in scored["per_label"].items())
    say(
        f"validation: {line}; macro F1 {_f(scored['macro_f1'])} ({seconds:.1f} s, of which"
        f" {head_seconds:.1f} s training the head)"
    )
    run = TransferRun(trained, backbone_manifest.resolve(), backbone.sha256)
    if run_dir is not None:
        save_transfer_run(run_dir, run)
        report.write_report(
            run_dir / "report",
            trained,
            chosen["scores"],
            summary_lines=[
                f"Command: `{command}`" if command else "",
                f"Data: {description}",
                f"Model: {model.kind} head, {count_parameters(model):,} parameters on backbone"
                f" {backbone.block.name} ({backbone.block.licence}); trained {seconds:.1f} s.",
                *threshold_lines(oof, len(val_y)),
            ],
        )
    return run


def _rows(
    examples: Examples, embedded: dict[Path, np.ndarray], window_s: float, hop_s: float
) -> tuple[list[tuple[Path, int]], np.ndarray]:
    """(recording, grid window) of every row, and the example each row comes from."""
    rows: list[tuple[Path, int]] = []
    owners: list[int] = []
    for e, example in enumerate(examples.items):
        a = example.annotation
        n = len(embedded[a.recording])
        centres = np.arange(n) * hop_s + window_s / 2
        if a.duration_seconds >= window_s / 2:  # windows at least half inside it
            inside = (centres >= a.start_seconds) & (centres <= a.end_seconds)
        else:  # a point or a short sound: the windows centred near its middle
            middle = (a.start_seconds + a.end_seconds) / 2
            inside = np.abs(centres - middle) <= window_s / 4
        hit = np.flatnonzero(inside)
        if not len(hit):  # a sound at the very end: its nearest window
            hit = np.array([int(np.argmin(np.abs(centres - a.start_seconds)))])
        rows += [(a.recording, int(i)) for i in hit]
        owners += [e] * len(hit)
    return rows, np.array(owners, dtype=np.int64)


def _train(
    config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    train_rows: np.ndarray,
    val_rows: np.ndarray,
    examples: Examples,
    example_of: np.ndarray,
    kind: HeadKind,
    fold: int,
    epochs: int | None = None,
) -> dict[str, Any]:
    """One head on `train_rows`, kept at its best validation epoch (macro F1, then loss); with
    `epochs`, trained that many and kept at the last (an out-of-fold head: no epoch is chosen
    on the rows it scores)."""
    t = config.training
    torch.manual_seed(t.seed * 1000 + fold)
    rng = np.random.default_rng([t.seed, fold])
    model = EmbeddingHead(x.shape[1], len(config.labels), config.task, kind)
    model.standardise_on(x[train_rows])
    optimizer = torch.optim.AdamW(model.parameters(), lr=t.learning_rate, weight_decay=1e-2)
    loss_fn = loss_for(config.task)
    # Balanced draws: each group (label, negative label) equally often, as the CNN's windows.
    group_of = np.array([examples.items[e].group for e in example_of[train_rows]])
    members = [train_rows[group_of == g] for g in np.unique(group_of)]
    steps = max(_MIN_STEPS_PER_EPOCH, -(-len(train_rows) // _BATCH))
    xv, yv = torch.from_numpy(x[val_rows]), torch.from_numpy(y[val_rows])
    best: dict[str, Any] = {"macro": -math.inf, "loss": math.inf}
    history = []
    for epoch in range(1, (epochs or t.epochs) + 1):
        model.train()
        started, total = time.perf_counter(), 0.0
        for _ in range(steps):
            groups = rng.integers(len(members), size=_BATCH)
            pick = np.array([members[g][rng.integers(len(members[g]))] for g in groups])
            loss = loss_fn(model.logits(torch.from_numpy(x[pick])), torch.from_numpy(y[pick]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item()
        model.eval()
        with torch.no_grad():
            logits = model.logits(xv)
            val_loss = float(loss_fn(logits, yv))
            scores = model.activation(logits).numpy()
        macro = scoring.validation_macro(config.labels, y[val_rows], scores, 1.0)
        history.append(
            epoch_row(fold, epoch, total / steps, val_loss, macro, t.learning_rate, started)
        )
        if epochs or (macro, -val_loss) > (best["macro"], -best["loss"]):
            best = {"macro": macro, "loss": val_loss, "epoch": epoch, "scores": scores}
            best["model"] = copy.deepcopy(model).eval()
    best.update(train_rows=train_rows, val_rows=val_rows, history=history)
    return best


def _out_of_fold(
    config: TrainConfig,
    x: np.ndarray,
    y: np.ndarray,
    embedded: dict[Path, np.ndarray],
    examples: Examples,
    example_of: np.ndarray,
    data: AnnotationSet,
    grid: Grid,
    kind: HeadKind,
    validation: dict[str, float],
    epochs: int,
    say: Callable[[str], None],
) -> OutOfFold | None:
    """Thresholds out of fold (trainer.outoffold): k heads, each trained `epochs` epochs (the
    kept head's best) on k-1 folds, score every window of the recordings they hold out; None,
    loudly, when the recordings cannot be dealt into k folds."""
    v = config.validation
    try:
        folds = outoffold.deal(examples, v.threshold_folds, config.training.seed, v.block_seconds)
    except DataError as err:
        say(f"WARNING thresholds: chosen on the validation windows only: {err}")
        return None
    heads = []
    for fold, (train_idx, held_idx) in enumerate(folds.pairs):
        train_rows = np.flatnonzero(np.isin(example_of, train_idx))
        held_rows = np.flatnonzero(np.isin(example_of, held_idx))
        trained = _train(
            config, x, y, train_rows, held_rows, examples, example_of, kind, fold, epochs
        )
        heads.append(trained["model"])
    scored = []
    for path, windows in embedded.items():
        with AudioFile.open(path) as audio:
            end = audio.duration_seconds
        n = min(len(windows), grid.count(int(end * grid.rate_hz)))
        centres = grid.centres(n)
        with torch.no_grad():
            every = np.stack([h(torch.from_numpy(windows[:n])).numpy() for h in heads])
        scores = every[folds.fold_of(path, centres), np.arange(n)]
        scored.append(outoffold.per_second(path, centres, scores, grid.window_seconds, end))
    ratio, background = v.precision_recall_ratio, config.background or []
    oof = outoffold.choose(
        config.labels, scored, data.annotations, ratio, validation, folds, background
    )
    for line in oof.lines():
        say(line)
    return oof


def save_transfer_run(run_dir: Path, run: TransferRun) -> None:
    """The run folder: head.pt, train.yaml, arrays.npz, run.json (with the backbone)."""
    trained = run.trained
    run_dir.mkdir(parents=True, exist_ok=True)
    assert isinstance(trained.model, EmbeddingHead)
    save_head(run_dir / "head.pt", trained.model)
    backbone = {"manifest": str(run.backbone_manifest), "sha256": run.backbone_sha256}
    write_run(run_dir, trained, {"backbone": backbone})


def is_transfer_run(run_dir: Path) -> bool:
    return (Path(run_dir) / "head.pt").is_file()


def load_transfer_run(run_dir: Path) -> TransferRun:
    """Read a run folder written by `save_transfer_run`; TrainError names what is missing."""
    head = run_file(run_dir, "head.pt")
    trained = read_run(run_dir, "head.pt", load_head(head))
    saved = json.loads((run_dir / "run.json").read_text())
    b = saved["backbone"]
    return TransferRun(trained, Path(b["manifest"]), b["sha256"])
