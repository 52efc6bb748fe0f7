"""One model's training loop: the device and precision it runs in, its epochs, and the epoch
it keeps (`trainer.train.fit` calls `_train_fold` once per fold).

Devices: `training.device` auto picks CUDA when torch sees a GPU, else the CPU. On CUDA the
forward pass runs under `torch.autocast` in bfloat16 where the GPU supports it (no loss scaling
needed), else float16 with a `GradScaler`; on the CPU everything is float32. The CPU path is
bit-for-bit reproducible for a seed (same machine, same thread count); CUDA runs are seeded
and use deterministic cuDNN, but autocast reductions may still differ in the last bits.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer import report, scoring
from trainer.config import TrainConfig
from trainer.dataset import Windows
from trainer.finetune import Init, start_from
from trainer.model import SoundCNN, loss_for, save_checkpoint
from trainer.run import TrainError

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
        macro = scoring.validation_macro(config.labels, val_y, epoch_scores, ratio)
        lr = float(schedule.get_last_lr()[0])
        history.append(epoch_row(fold, epoch, total / steps, val_loss, macro, lr, started))
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


def epoch_row(
    fold: int,
    epoch: int,
    train_loss: float,
    validation_loss: float,
    macro_f1: float,
    learning_rate: float,
    started: float,
) -> dict[str, Any]:
    """One epoch's line of the run's history (`fold` counted from 0, written from 1)."""
    return {
        "fold": fold + 1,
        "epoch": epoch,
        "train_loss": train_loss,
        "validation_loss": validation_loss,
        "validation_macro_f1": macro_f1,
        "learning_rate": learning_rate,
        "seconds": round(time.perf_counter() - started, 3),
    }
