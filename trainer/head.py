"""The small model trained on backbone embeddings: linear, or one hidden layer (MLP).

The embedding is standardised inside the model (mean and scale of the training embeddings as
fixed buffers), so the exported head takes the backbone's raw embedding. Like SoundCNN it ends
in its softmax or sigmoid (probabilities out) and offers `logits` for the loss. Only Linear,
ReLU, Sub, Mul and the activation: all quantize to int8 in ONNX.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

HeadKind = Literal["linear", "mlp"]
HIDDEN = 256  # MLP hidden units
HEAD_FORMAT = "soundwatch-head/1"


class EmbeddingHead(nn.Module):
    """(N, size) embeddings -> (N, labels) probabilities."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, size: int, n_labels: int, task: str, kind: HeadKind) -> None:
        super().__init__()
        self.size, self.n_labels, self.task, self.kind = size, n_labels, task, kind
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("scale", torch.ones(size))
        if kind == "mlp":
            self.layers: nn.Module = nn.Sequential(
                nn.Linear(size, HIDDEN), nn.ReLU(), nn.Dropout(0.2), nn.Linear(HIDDEN, n_labels)
            )
        else:
            self.layers = nn.Sequential(nn.Dropout(0.2), nn.Linear(size, n_labels))
        self.activation: nn.Module = nn.Softmax(dim=1) if task == "multiclass" else nn.Sigmoid()

    def standardise_on(self, x: np.ndarray) -> None:
        """Set the fixed input standardisation from training embeddings (N, size)."""
        self.mean.copy_(torch.from_numpy(x.mean(axis=0)))
        self.scale.copy_(torch.from_numpy(1.0 / (x.std(axis=0) + 1e-3)))

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.mean) * self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.logits(x))


def save_head(path: Path, head: EmbeddingHead) -> None:
    saved: dict[str, Any] = {
        "format": HEAD_FORMAT,
        "size": head.size,
        "n_labels": head.n_labels,
        "task": head.task,
        "kind": head.kind,
        "state_dict": head.state_dict(),
    }
    torch.save(saved, path)


def load_head(path: Path) -> EmbeddingHead:
    saved = torch.load(path, map_location="cpu", weights_only=True)
    head = EmbeddingHead(saved["size"], saved["n_labels"], saved["task"], saved["kind"])
    head.load_state_dict(saved["state_dict"])
    return head.eval()
