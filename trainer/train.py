"""Training: annotations in, a run folder out (model, thresholds, validation figures, report).

`fit` reads top to bottom: label the annotations, read the recordings, split off validation,
train one model per fold, keep the best fold's model, choose thresholds on its validation
windows, and (with a run folder) `save_run` and write the report. The run folder and `Trained`,
the contract with export, are in `trainer.run`.

Devices: `training.device` auto picks CUDA when torch sees a GPU, else the CPU. On CUDA the
forward pass runs under `torch.autocast` in bfloat16 where the GPU supports it (no loss scaling
needed), else float16 with a `GradScaler`; on the CPU everything is float32. The CPU path is
bit-for-bit reproducible for a seed (same machine, same thread count); CUDA runs are seeded
and use deterministic cuDNN, but autocast reductions may still differ in the last bits.

k-fold (`validation.folds` k > 1): k models, each validated on its own fold. The run keeps the
model of the fold with the best validation macro F1, with its thresholds and windows, and the
report gives the mean and spread over folds as the estimate of accuracy on new data. (A final
model trained on all the data would have no validation windows left to choose its thresholds,
stop early, or check the int8 export against.)
"""

from __future__ import annotations

import copy
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
from trainer import report, scoring
from trainer.annotations import AnnotationSet
from trainer.annotations.gaps import dense_matcher, gap_annotations
from trainer.config import TrainConfig, mel_spread_warning, resolve
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
from trainer.finetune import Init, labels_from, start_from, wrong_as_background
from trainer.model import SoundCNN, count_parameters, loss_for, save_checkpoint
from trainer.run import Trained, TrainError, save_run
from trainer.splits import splits

_PREDICT_BATCH = 1024


# --- device and precision -------------------------------------------------------------------------


def resolve_device(wanted: str) -> torch.device:
    """`auto`: CUDA if torch sees a GPU, else the CPU; `cuda` without a GPU is an error."""
    if wanted == "cpu":
        return torch.device("cpu")
    if wanted == "cuda" and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}"
        raise TrainError(f"device cuda: torch ({torch.__version__}, {build}) sees no CUDA GPU")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class Precision:
    """How the forward pass runs: autocast dtype (None: float32) and whether to scale the loss."""

    autocast_dtype: torch.dtype | None
    grad_scaler: bool


def precision_for(device: torch.device, bf16_supported: bool | None = None) -> Precision:
    """Mixed precision on CUDA (bfloat16 where supported, else float16 + GradScaler); float32
    on the CPU. `bf16_supported` None asks the GPU."""
    if device.type != "cuda":
        return Precision(None, False)
    if bf16_supported is None:
        bf16_supported = torch.cuda.is_bf16_supported()
    # float16 has a narrow exponent: small gradients underflow unless the loss is scaled.
    return Precision(torch.bfloat16, False) if bf16_supported else Precision(torch.float16, True)


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
        "threshold_rule": {"precision_recall_ratio": ratio},
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
        threshold_rule={"precision_recall_ratio": ratio},
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
            ],
        )
    return trained


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


@dataclass
class FoldResult:
    """One fold's model at its best validation epoch, with what fit needs of that fold."""

    model: SoundCNN  # float32, eval(), on the CPU
    best_macro_f1: float  # validation macro F1 of the kept epoch (-inf if never defined)
    best_epoch: int  # 1-based
    history: list[dict[str, Any]]  # one row per epoch run
    train_windows: Windows  # draws the int8 calibration windows
    val_x: np.ndarray  # float32 (N, frames, mels)
    val_y: np.ndarray  # float32 (N, labels), NaN where unknown
    scores: np.ndarray  # (N, labels) probabilities of the kept epoch on val_x


def _train_fold(
    config: TrainConfig,
    windows: Windows,
    val_x: np.ndarray,
    val_y: np.ndarray,
    device: torch.device,
    fold: int,
    n_folds: int,
    run_dir: Path | None,
    say: Callable[[str], None],
    show: bool,
    init: Init | None = None,
) -> FoldResult:
    """Train one model; keep the weights of its best validation epoch (macro F1, then loss)."""
    t = config.training
    torch.manual_seed(t.seed * 1000 + fold)
    rng = np.random.default_rng([t.seed, fold])
    frames, mels = val_x.shape[1:]
    model = SoundCNN(config.model, (frames, mels), len(config.labels), config.task)
    if init is not None:
        start_from(init, model, config.labels)
    # Channels-last activations: the CPU (oneDNN) and GPU convolutions run faster on them;
    # the model goes back to the default layout before it is returned. (torch's stubs do not
    # list Module.to's memory_format.)
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t.learning_rate, weight_decay=t.weight_decay
    )
    steps = -(-config.windows.windows_per_epoch // t.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t.epochs * steps)
    precision = precision_for(device)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.grad_scaler)
    loss_fn = loss_for(config.task)
    ratio = config.validation.precision_recall_ratio
    best_macro, best_loss, best_epoch = -math.inf, math.inf, 0
    best_state = copy.deepcopy(model.state_dict())
    history: list[dict[str, Any]] = []
    scores = np.zeros_like(val_y)
    name = f"fold {fold + 1}/{n_folds} " if n_folds > 1 else ""
    for epoch in range(1, t.epochs + 1):
        started = time.perf_counter()
        model.train()
        total = 0.0
        bar = report.ProgressBar(f"{name}epoch {epoch}/{t.epochs}", steps) if show else None
        for step in range(steps):
            x, y = windows.batch(t.batch_size, rng)
            xb = torch.from_numpy(x).to(device, non_blocking=True)
            yb = torch.from_numpy(y).to(device, non_blocking=True)
            with torch.autocast(
                device.type,
                dtype=precision.autocast_dtype,
                enabled=precision.autocast_dtype is not None,
            ):
                logits = model.logits(xb)
            loss = loss_fn(logits.float(), yb)  # the loss in float32 whatever the autocast
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            total += loss.item()
            if bar is not None:
                bar.update(step + 1, total / (step + 1))
        if bar is not None:
            bar.done()
        logits_val = _predict_logits(model, val_x, device)
        val_loss = float(loss_fn(logits_val, torch.from_numpy(val_y)))
        epoch_scores = model.activation(logits_val).numpy()
        macro = scoring.score_labels(config.labels, val_y, epoch_scores, ratio)["macro_f1"]
        macro = -math.inf if math.isnan(macro) else macro
        history.append(
            {
                "fold": fold + 1,
                "epoch": epoch,
                "train_loss": total / steps,
                "validation_loss": val_loss,
                "validation_macro_f1": macro,
                "learning_rate": schedule.get_last_lr()[0],
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        improved = (macro, -val_loss) > (best_macro, -best_loss)
        say(
            f"{name}epoch {epoch:3d}: loss {total / steps:.4f}, validation loss {val_loss:.4f},"
            f" macro F1 {macro:.3f}{' *' if improved else ''}"
        )
        if improved:
            best_macro, best_loss, best_epoch = macro, val_loss, epoch
            best_state = copy.deepcopy(model.state_dict())
            scores = epoch_scores
            if run_dir is not None:
                save_checkpoint(run_dir / "checkpoints" / f"fold{fold + 1}-best.pt", model)
        elif t.patience and epoch - best_epoch >= t.patience:
            say(f"{name}stopping early: no better validation macro F1 for {t.patience} epochs")
            break
    model.load_state_dict(best_state)
    model = model.float().cpu().to(memory_format=torch.contiguous_format).eval()
    return FoldResult(model, best_macro, best_epoch, history, windows, val_x, val_y, scores)


@torch.no_grad()
def _predict_logits(model: SoundCNN, x: np.ndarray, device: torch.device) -> torch.Tensor:
    """Logits for (N, frames, mels) windows, float32 on the CPU; model left in eval mode."""
    model.eval()
    out = [
        model.logits(torch.from_numpy(x[i : i + _PREDICT_BATCH]).to(device)).float().cpu()
        for i in range(0, len(x), _PREDICT_BATCH)
    ]
    return torch.cat(out) if out else torch.zeros((0, model.n_labels))


def _f(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3f}"
