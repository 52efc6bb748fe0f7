"""Pretrained backbones: a model whose embedding a small trained head classifies.

A backbone is any ONNX or TFLite model plus a `backbone.yaml` beside it (README, "Transfer
learning"): what it takes (rate, window length, and a frontend block as bundles have: raw
waveform or this project's log-mel) and which output or intermediate tensor is the embedding.
The trainer reads it with `load_backbone`; a bundle exported from such a run carries the
backbone file and a `backbone:` block (edge.model.bundle.BackboneBlock), and `Bundle.open`
gives a `TwoStageBackend`: backbone, then head, through the usual runtime backends, so the
rest of the edge sees one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge import schema
from edge.errors import BundleError, ConfigError
from edge.model.bundle import BACKBONE_FILE_KEYS, BackboneBlock, FrontendManifest, sha256_of
from edge.model.frontend import LogMelSpec
from edge.model.runtime import open_backend
from edge.model.runtime.base import Backend
from edge.schema import field

if TYPE_CHECKING:
    from edge.model.bundle import Bundle

MANIFEST_NAME = "backbone.yaml"


@dataclass(frozen=True)
class BackboneManifest:
    """`backbone.yaml`: the bundle's `backbone` block plus what one model input is."""

    backbone: BackboneBlock = field(help="the model file, its embedding, name and licence")
    sample_rate: int = field(gt=0, help="sample rate the backbone expects, Hz")
    window_samples: int = field(gt=0, help="samples in one backbone input")
    frontend: FrontendManifest = field(help="raw samples (kind: waveform) or log-mel")

    def problems(self) -> list[tuple[str, str]]:
        if self.frontend.kind != "logmel":
            return []
        issues = self.frontend.spec(self.sample_rate).validate()
        return [("frontend", "; ".join(issues))] if issues else []


@dataclass(frozen=True)
class Backbone:
    """A checked backbone: its manifest, model file and that file's SHA-256."""

    manifest: BackboneManifest
    file: Path
    sha256: str

    @property
    def block(self) -> BackboneBlock:
        return self.manifest.backbone

    @property
    def logmel(self) -> LogMelSpec | None:
        f = self.manifest.frontend
        return f.spec(self.manifest.sample_rate) if f.kind == "logmel" else None

    def open(self, feature_shape: tuple[int, ...], threads: int = 1) -> Backend:
        """The backbone as a Backend: windows of `feature_shape` in, embeddings out."""
        return open_embedder(self.file, self.block, feature_shape, threads)


def load_backbone(path: Path | str) -> Backbone:
    """Read `path` (a backbone.yaml, or the folder holding one) and hash its model file;
    ConfigError names the file, key and line of what is wrong."""
    path = Path(path)
    manifest_path = path / MANIFEST_NAME if path.is_dir() else path
    if not manifest_path.is_file():
        raise ConfigError(f"{manifest_path}: no backbone manifest there (write {MANIFEST_NAME})")
    manifest, lines = schema.load_located(BackboneManifest, manifest_path)
    file = manifest_path.parent / manifest.backbone.path
    if not file.is_file():
        where = lines.where(("backbone", "path"))
        raise ConfigError(f"{where}: file {manifest.backbone.path} not found beside it")
    actual = sha256_of(file)
    wanted = manifest.backbone.sha256
    if wanted is not None and wanted.lower() != actual:
        where = lines.where(("backbone", "sha256"))
        raise ConfigError(f"{where}: {file.name} has sha256 {actual} (file changed or corrupt)")
    return Backbone(manifest, file, actual)


def open_embedder(
    file: Path, block: BackboneBlock, feature_shape: tuple[int, ...], threads: int
) -> Backend:
    """The backbone model file run by its backend, giving `block.size` values per window."""
    key = BACKBONE_FILE_KEYS[file.suffix]
    try:
        return open_backend(
            key,
            file,
            feature_shape=feature_shape,
            n_labels=block.size,
            threads=threads,
            output_name=block.embedding,
        )
    except BundleError as err:
        raise BundleError(f"backbone {block.name}: {err}") from None


class TwoStageBackend(Backend):
    """Backbone then head, as one Backend: windows in, the head's scores out.

    The embeddings pass through one buffer kept between calls (grown, never shrunk), so a
    call at the usual batch size allocates nothing. `key`, `path` and `output_name` are the
    head's (what `soundwatch check` prints and the metrics name).
    """

    def __init__(self, backbone: Backend, head: Backend) -> None:  # no Backend.__init__: both
        self.backbone, self.head = backbone, head  # stages are loaded and checked already
        self.key = head.key  # type: ignore[misc]
        self.path, self.output_name = head.path, head.output_name
        self.feature_shape, self.n_outputs = backbone.feature_shape, head.n_outputs
        self.threads = backbone.threads
        self.max_batch = backbone.max_batch
        self._embeddings = np.zeros((0, backbone.n_outputs), np.float32)
        self._closed = False

    def _load(self, output_name: str | None) -> None:
        raise NotImplementedError  # both stages are loaded by open_two_stage

    @classmethod
    def available(cls) -> bool:
        return True

    def _run(self, model_input: np.ndarray) -> np.ndarray:
        raise NotImplementedError  # predict runs the two stages

    def _release(self) -> None:
        self.backbone.close()
        self.head.close()

    def predict(self, batch: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        n = batch.shape[0]
        if len(self._embeddings) < n:
            self._embeddings = np.zeros((n, self.backbone.n_outputs), np.float32)
        embeddings = self.backbone.predict(batch, out=self._embeddings[:n])
        return self.head.predict(embeddings, out=out)


def open_two_stage(bundle: Bundle, key: str, threads: int) -> TwoStageBackend:
    """Open a bundle's backbone and its head file `key` (Bundle.open calls this)."""
    block = bundle.manifest.backbone
    assert block is not None
    backbone = open_embedder(bundle.folder / block.path, block, bundle.feature_shape, threads)
    try:
        head = open_backend(
            key,
            bundle.folder / bundle.manifest.files[key].path,
            feature_shape=(block.size,),
            n_labels=len(bundle.labels),
            threads=threads,
            output_name=bundle.manifest.output.name,
        )
    except BaseException:
        backbone.close()
        raise
    return TwoStageBackend(backbone, head)
