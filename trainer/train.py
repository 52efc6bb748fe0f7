"""Training: annotations in, a run folder out (model, thresholds, validation figures, report).

`fit` reads top to bottom: label the annotations, read the recordings, split off validation,
train one model per fold, keep the best fold's model, choose thresholds on its validation
windows, and (with a run folder) `save_run` and write the report. The run folder and `Trained`,
the contract with export, are in `trainer.run`; one model's epochs, on which device and in
which precision, are in `trainer.trainloop`.

k-fold (`validation.folds` k > 1): k models, each validated on its own fold. The run keeps the
model of the fold with the best validation macro F1, with its thresholds and windows, and the
report gives the mean and spread over folds as the estimate of accuracy on new data. (A final
model trained on all the data would have no validation windows left to choose its thresholds,
stop early, or check the int8 export against.)
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edge.audio.files import AudioFile
from trainer import outoffold, report, scoring
from trainer.annotations import AnnotationSet
from trainer.annotations.gaps import dense_matcher, gap_annotations
from trainer.config import TrainConfig
from trainer.dataset import (
    Audio,
    Augmenter,
    DataError,
    Examples,
    Windows,
    label_examples,
    load_background,
    recording_features,
)
from trainer.features import FeatureStore
from trainer.finetune import Init, labels_from, wrong_as_background
from trainer.model import count_parameters
from trainer.outoffold import Grid, OutOfFold, threshold_lines
from trainer.resolve import mel_spread_warning, resolve
from trainer.run import Trained, save_run
from trainer.splits import splits
from trainer.trainloop import FoldResult, _predict_logits, _train_fold, resolve_device

_SCORE_WINDOWS = 4096  # windows scored at once out of fold: bounds memory on long recordings

# --- fit ------------------------------------------------------------------------------------------


def fit(
    config: TrainConfig,
    data: AnnotationSet,
    run_dir: Path | None = None,
    *,
    command: str = "",
    log: Callable[[str], None] | None = None,
    progress: bool | None = None,
    init: Init | None = None,
) -> Trained:
    """Train on `data` as `config` says; with `run_dir`, write the run folder and report.
    With `init`, start from its weights (fine-tuning, trainer.finetune): its labels first."""
    say = log or (lambda line: print(line, file=sys.stderr, flush=True))
    show = sys.stderr.isatty() if progress is None else progress
    began = time.perf_counter()
    t = config.training
    if t.threads:
        torch.set_num_threads(t.threads)
    device = resolve_device(t.device)
    if device.type == "cuda":  # seeded runs should not depend on cuDNN's algorithm search
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False

    data, duplicates = data.without_duplicates()
    if duplicates:
        say(f"dropped {duplicates} duplicate annotations (same recording, label, start and end)")

    if config.dense:
        data = with_gaps(config, data, say)
        if config.mode == "exclusive" and config.labels and "background" not in config.labels:
            config = replace(config, labels=[*config.labels, "background"])
    # Labels: the config's, or every positive label found; then each annotation's target.
    found = [
        label for label in data.labels() if not label.startswith(config.negative_prefix or "\0")
    ]
    labels = config.labels or found
    if init is not None:
        labels = labels_from(init, labels)
        config = replace(config, labels=labels)
        data = wrong_as_background(data, config, say)
    config = resolve(config, _sample_rate(config, data), labels)
    spread = mel_spread_warning(config.frontend)
    if spread:
        say(spread)
    examples = label_examples(data.annotations, config.labels, config.mode, config.negative_prefix)
    for label, count in sorted(examples.ignored.items()):
        say(f"not used: {count} annotations labelled {label!r} ({config.mode} mode)")
    for label in examples.without_negatives():
        say(
            f"warning: no {config.negative_prefix}{label} annotations: {label!r} learns from"
            " positives only, so it will say yes to everything"
        )

    # Audio once, in memory, at the model rate; its features once, for every epoch and fold.
    recordings = sorted({e.annotation.recording for e in examples.items})
    audio = Audio(recordings, config.sample_rate_hz or 0, config.window_samples)
    features = recording_features(audio, config.frontend)
    augmenter = Augmenter(
        config.augment,
        load_background(config.augment.background, config.sample_rate_hz or 0),
        config.frontend,
        config.window_samples,
    )
    v = config.validation
    folds = splits(examples, v.split, v.share, v.folds, t.seed, v.block_seconds)
    out_of_fold = v.split in ("recordings", "blocks")
    if v.thresholds == "out-of-fold" and not out_of_fold:
        raise DataError(
            "thresholds out-of-fold: a CNN needs --validation recordings or blocks (its"
            " validation model, or with --folds k each fold's, scores the audio it held out);"
            " or --thresholds validation"
        )

    results = []
    for fold, (train_idx, val_idx) in enumerate(folds):
        _check_split(examples, train_idx, val_idx, config.labels, fold, len(folds), say)
        train_windows = Windows([examples.items[i] for i in train_idx], features, config, augmenter)
        val_x, val_y = Windows(
            [examples.items[i] for i in val_idx], features, config, augmenter
        ).fixed()
        results.append(
            _train_fold(
                config,
                train_windows,
                val_x,
                val_y,
                device,
                fold,
                len(folds),
                run_dir,
                say,
                show,
                init,
            )
        )

    # The run's model: the best fold's (the only one without k-fold).
    kept = int(np.argmax([r.best_macro_f1 for r in results]))
    chosen = results[kept]
    ratio = v.precision_recall_ratio
    scored = scoring.score_labels(config.labels, chosen.val_y, chosen.scores, ratio)
    thresholds = {label: m["threshold"] for label, m in scored["per_label"].items()}
    rule: dict[str, Any] = {"precision_recall_ratio": ratio, "chosen_on": "validation windows"}
    oof = None
    if out_of_fold and v.thresholds != "validation":
        oof = _out_of_fold(config, examples, folds, results, audio, features, data, thresholds)
        for line in oof.lines():
            say(line)
        thresholds, rule = {**thresholds, **oof.thresholds}, oof.rule(ratio)
        scored = scoring.score_labels(config.labels, chosen.val_y, chosen.scores, ratio, thresholds)
    elif v.thresholds == "auto":
        say(
            "thresholds: chosen on the validation windows; for thresholds chosen on whole"
            " recordings, fit with --validation recordings (or blocks): the validation model"
            " scores the audio it held out (with --folds 5, all of it: five models)"
        )
    model = chosen.model
    rng = np.random.default_rng([t.seed, 104729])
    calibration, _ = chosen.train_windows.batch(
        config.windows.calibration_windows, rng, augment=False
    )
    history = [row for r in results for row in r.history]
    seconds = time.perf_counter() - began
    metrics: dict[str, Any] = {
        "task": config.task,
        "labels": config.labels,
        **scored,
        "threshold_rule": rule,
        "best_epoch": chosen.best_epoch,
        "epochs_run": chosen.history[-1]["epoch"],
        "train_seconds": round(seconds, 1),
        "device": str(device),
        "parameters": count_parameters(model),
    }
    if config.task == "multiclass":
        metrics["accuracy"] = float(
            np.mean(chosen.scores.argmax(axis=1) == chosen.val_y.argmax(axis=1))
        )
    if len(results) > 1:
        metrics["cross_validation"] = scoring.cross_validation(config.labels, results, kept, ratio)
    metrics = report.clean(metrics)  # undefined figures are None (null in JSON), not NaN
    description = report.describe_data(config, examples, folds[kept], kept, len(folds), audio)
    trained = Trained(
        model=model,
        config=config,
        thresholds=thresholds,
        threshold_rule=rule,
        metrics=metrics,
        calibration=calibration,
        validation_x=chosen.val_x,
        validation_y=chosen.val_y,
        data_description=description,
        command=command,
        history=history,
    )
    line = ", ".join(f"{k} F1 {_f(m['f1'])}" for k, m in scored["per_label"].items())
    say(f"validation: {line}; macro F1 {_f(scored['macro_f1'])} ({seconds:.0f} s)")
    if run_dir is not None:
        save_run(run_dir, trained)
        report.write_report(
            run_dir / "report",
            trained,
            chosen.scores,
            summary_lines=[
                f"Command: `{command}`" if command else "",
                f"Data: {description}",
                f"Model: {count_parameters(model):,} parameters ({config.model.channels} channels,"
                f" {config.task}); trained {seconds:.0f} s on {device}, best epoch"
                f" {metrics['best_epoch']} of {metrics['epochs_run']}.",
                *threshold_lines(oof, len(chosen.val_y)),
            ],
        )
    return trained


def _out_of_fold(
    config: TrainConfig,
    examples: Examples,
    folds: list[tuple[np.ndarray, np.ndarray]],
    results: list[FoldResult],
    audio: Audio,
    features: FeatureStore,
    data: AnnotationSet,
    validation: dict[str, float],
) -> OutOfFold:
    """Thresholds out of fold (trainer.outoffold) from a split by recordings or blocks: each
    fold's model (the one model of a single split) scores every window, on the edge's grid, of
    the audio it held out. (Its epoch was kept on that audio's annotated windows.)"""
    v, rate = config.validation, config.sample_rate_hz or 0
    dealt = outoffold.from_pairs(examples, v.split, v.block_seconds, folds)
    grid = Grid(config.window_seconds, round((config.hop_seconds or 0) * rate), rate)
    scored = []
    for path, length in audio.lengths.items():
        n = grid.count(length)
        which = dealt.fold_of(path, grid.centres(n))
        held = np.flatnonzero(which >= 0)  # a single split: only the audio it held out
        if not len(held):
            continue
        scores = np.zeros((n, len(config.labels)), dtype=np.float32)
        for fold in np.unique(which[held]).tolist():
            mine = np.flatnonzero(which == fold)
            model = results[fold].model
            for part in np.array_split(mine, -(-len(mine) // _SCORE_WINDOWS)):
                rows = features.starts(
                    np.full(len(part), features.index[path]), part * grid.hop_samples
                )
                logits = _predict_logits(model, features.windows(rows), torch.device("cpu"))
                scores[part] = model.activation(logits).numpy()
        centres, end = grid.centres(n)[held], length / rate
        scored.append(outoffold.per_second(path, centres, scores[held], grid.window_seconds, end))
    ratio, background = v.precision_recall_ratio, config.background or []
    return outoffold.choose(
        config.labels, scored, data.annotations, ratio, validation, dealt, background
    )


def with_gaps(
    config: TrainConfig, data: AnnotationSet, say: Callable[[str], None]
) -> AnnotationSet:
    """`data` and, for its densely annotated recordings, their unannotated stretches as
    `background` (exclusive mode) or as `not_<label>` of every label (overlapped mode)."""
    prefix = config.negative_prefix or ""
    positives = config.labels or [x for x in data.labels() if not (prefix and x.startswith(prefix))]
    names = ["background"] if config.mode == "exclusive" else [prefix + x for x in positives]
    window = config.window_seconds
    gaps = gap_annotations(
        data,
        dense_matcher(config.dense),
        names,
        margin_seconds=window / 2,
        min_seconds=window,
        negative_prefix=prefix,
    )
    seconds = sum(a.end_seconds - a.start_seconds for a in gaps) / max(1, len(names))
    dense = {a.recording for a in gaps}
    say(
        f"dense annotations: {seconds:.0f} s of unannotated audio in {len(dense)} recording(s)"
        f" taken as {', '.join(names) if len(names) < 4 else 'not_<label>'}"
    )
    if not gaps:
        raise DataError(
            f"dense: no recording matches {config.dense}, or none has unannotated audio of a"
            f" window ({window:g} s) or more"
        )
    return AnnotationSet(data.annotations + gaps, data.problems)


def _sample_rate(config: TrainConfig, data: AnnotationSet) -> int:
    """The model rate: the config's, else the recordings' (which must then agree)."""
    if config.sample_rate_hz:
        return config.sample_rate_hz
    rates: dict[int, Path] = {}
    for path in data.recordings():
        with AudioFile.open(path) as audio:
            rates.setdefault(audio.sample_rate_hz, path)
    if not rates:
        raise DataError("no usable annotations: nothing to train on")
    if len(rates) > 1:
        listed = ", ".join(f"{p.name} {r} Hz" for r, p in sorted(rates.items()))
        raise DataError(
            f"recordings have different sample rates ({listed}): choose the model's rate with"
            " --rate HZ (or sample_rate_hz in train.yaml); every recording is resampled to it"
        )
    return next(iter(rates))


def _check_split(
    examples: Examples,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    labels: list[str],
    fold: int,
    n_folds: int,
    say: Callable[[str], None],
) -> None:
    where = f"fold {fold + 1} of {n_folds}: " if n_folds > 1 else ""
    train_groups = {examples.items[i].group for i in train_idx}
    val_groups = {examples.items[i].group for i in val_idx}
    for g, label in enumerate(labels):
        if g not in train_groups:
            raise DataError(
                f"{where}no usable training windows for label {label!r}: its"
                f" {examples.counts()[label]} annotation(s) are all held out for validation"
            )
        if g not in val_groups:
            say(f"warning: {where}no validation annotations for {label!r}: its F1 is not measured")
    if len(val_idx) == 0:
        raise DataError(f"{where}no validation annotations: every label has a single annotation")


def _f(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
