"""The CNN: a few conv blocks over a log-mel window, an average over time, and a classifier.

Built only from ops that quantize cleanly to int8 both in ONNX (static QDQ) and in TFLite
(litert-torch PT2E): Conv2d, BatchNorm2d (folded into the conv at export), ReLU, MaxPool2d or
AvgPool2d (also to average the last feature map over time), Linear, and a final Sigmoid or
Softmax. The final activation is part of the model: its output is probabilities in 0..1, which
quantize well to int8 and need no activation on the edge (`output.activation: none`). The
losses used in training are at the end of this file.

Sized for Pi-class CPUs: the default (blocks of 16, 32 and 64 channels, one 3x3 conv each) has
about 24 thousand parameters (for 32 mel bands and 3 labels) and costs about 9 million
multiply-adds per 113 x 32 window. On the fly-song data a second conv per block (73 thousand
parameters, 3x the compute) scored no better.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from edge import schema
from edge.errors import SoundwatchError
from edge.schema import field


@dataclass(frozen=True)
class ModelConfig:
    """The CNN's shape; stored in every checkpoint so it rebuilds without the training config."""

    channels: list[int] = field(
        factory=lambda: [16, 32, 64], help="output channels of each conv block"
    )
    convs_per_block: int = field(1, help="conv + batch norm + ReLU layers in each block")
    kernel: int = field(3, help="conv kernel, frames x mel bands (odd)")
    pool: Literal["max", "avg"] = field("max", help="2 x 2 pooling after each block")
    dropout: float = field(0.1, help="dropout before the classifier, 0..1")

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if not self.channels or any(c < 1 for c in self.channels):
            out.append(("channels", f"must be positive channel counts, got {self.channels}"))
        if self.convs_per_block < 1:
            out.append(("convs_per_block", f"must be at least 1, got {self.convs_per_block}"))
        if self.kernel < 1 or self.kernel % 2 == 0:
            out.append(("kernel", f"must be an odd number >= 1, got {self.kernel}"))
        if not 0.0 <= self.dropout < 1.0:
            out.append(("dropout", f"must be within 0..1, got {self.dropout}"))
        return out


class SoundCNN(nn.Module):
    """(N, frames, mels) float32 log-mel windows -> (N, labels) probabilities.

    `task` "multiclass" ends in a softmax over labels, "multilabel" in a sigmoid per label.
    `logits` gives the scores before that activation (what the loss needs).
    """

    def __init__(
        self,
        config: ModelConfig,
        input_shape: tuple[int, int],
        n_labels: int,
        task: Literal["multiclass", "multilabel"],
    ) -> None:
        super().__init__()
        self.config, self.input_shape, self.n_labels, self.task = (
            config,
            input_shape,
            n_labels,
            task,
        )
        layers: list[nn.Module] = []
        frames, mels = input_shape
        in_channels = 1
        for channels in config.channels:
            for _ in range(config.convs_per_block):
                layers += [
                    # No conv bias: the batch norm right after has one.
                    nn.Conv2d(in_channels, channels, config.kernel, padding="same", bias=False),
                    nn.BatchNorm2d(channels),
                    nn.ReLU(),
                ]
                in_channels = channels
            # Halve each axis that is still at least 2 long; a 1-long axis is left alone.
            pool = (2 if frames >= 2 else 1, 2 if mels >= 2 else 1)
            if pool != (1, 1):
                layers.append(nn.MaxPool2d(pool) if config.pool == "max" else nn.AvgPool2d(pool))
                frames, mels = frames // pool[0], mels // pool[1]
        self.features = nn.Sequential(*layers)
        # Average over time only: the classifier still sees which mel bands hold the energy (a
        # global average would leave only the borders' padding to tell a low tone from a high
        # one). A fixed-size AvgPool2d, not an adaptive one, exports to int8 everywhere.
        self.pool = nn.AvgPool2d((frames, 1))
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(in_channels * mels, n_labels)
        self.activation: nn.Module = nn.Softmax(dim=1) if task == "multiclass" else nn.Sigmoid()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Scores before the final activation, (N, labels)."""
        h = self.features(x.unsqueeze(1))  # (N, 1, frames, mels): one input channel
        h = torch.flatten(self.pool(h), 1)
        return self.classifier(self.dropout(h))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.logits(x))


CHECKPOINT_FORMAT = "soundwatch-checkpoint/1"


class CheckpointError(SoundwatchError):
    """A checkpoint file cannot be read as a SoundCNN; the message names the file."""


def save_checkpoint(path: Path, model: SoundCNN) -> None:
    """Weights plus what rebuilds the model (its config, input shape, labels, task)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    saved = {
        "format": CHECKPOINT_FORMAT,
        "model_config": asdict(model.config),
        "input_shape": list(model.input_shape),
        "n_labels": model.n_labels,
        "task": model.task,
        "state_dict": model.state_dict(),
    }
    torch.save(saved, path)


def load_checkpoint(path: Path) -> SoundCNN:
    """The model saved by `save_checkpoint`, float32 on the CPU, in eval mode."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a missing or damaged file
        raise CheckpointError(f"{path}: cannot read ({exc})") from None
    if not isinstance(saved, dict) or saved.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a {CHECKPOINT_FORMAT} checkpoint")
    frames, mels = saved["input_shape"]
    config = schema.build(ModelConfig, saved["model_config"])
    model = SoundCNN(config, (frames, mels), saved["n_labels"], saved["task"])
    model.load_state_dict(saved["state_dict"])
    return model.eval()


def count_parameters(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --- losses ---------------------------------------------------------------------------------------


def masked_bce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy over the known targets only (NaN = unknown, no gradient)."""
    known = ~torch.isnan(targets)
    losses = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(targets), reduction="none")
    return (losses * known).sum() / known.sum().clamp(min=1)


def loss_for(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "multiclass":
        return lambda logits, targets: F.cross_entropy(logits, targets.argmax(dim=1))
    return masked_bce
