"""Model bundles: a folder with `manifest.yaml`, hashed model files and a model card.

The manifest is the contract between the trainer (or whoever packs a third-party model) and
the edge; its fields are documented in the README. Loading checks every field and every hash
and refuses a bundle with a message that names the field or file. Unknown `format` versions are
refused, not guessed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge import schema
from edge.errors import BundleError, ConfigError, RuntimeUnavailable
from edge.model.frontend import LogMelSpec, n_frames
from edge.model.rules import EventTiming
from edge.model.runtime.base import FILE_KEYS, FileKey
from edge.schema import field
from edge.yamlfile import Where, parse_yaml, read_text

logger = logging.getLogger(__name__)

FORMAT = "soundwatch-bundle/1"
# `auto` tries the file keys in this order: int8 first (that is what the device is for), LiteRT
# before ONNX Runtime where it is installed: scan of 2 h of fly song took 18.8 s against 35.7 s
# and the daemon takes ~19 MiB less (onnxruntime is never imported); README "Latency, start-up
# and what the defaults cost".
PREFERENCE: tuple[FileKey, ...] = tuple(
    sorted(FILE_KEYS, key=lambda k: (k.endswith("-fp32"), k.startswith("onnx-")))
)
ModelFile = Literal["auto", FileKey]  # what a config or the command line may ask for


@dataclass(frozen=True)
class FrontendManifest:
    """The manifest's `frontend` block: a LogMelSpec (without the rate, which is the bundle's
    `sample_rate`) under the names in `_MANIFEST_NAMES`, or `kind: waveform`."""

    kind: Literal["logmel", "waveform"] = field(help="logmel features, or raw samples")
    n_fft: int | None = field(None, ge=1, le=1 << 16, help="FFT size in samples")
    win_length: int | None = field(None, ge=1, help="analysis window in samples (<= n_fft)")
    hop_length: int | None = field(None, ge=1, help="samples between frames")
    window: Literal["hann", "hamming", "rect"] = field("hann", help="analysis window")
    n_mels: int | None = field(None, ge=1, le=1024, help="mel bands")
    fmin: float = field(0.0, ge=0, help="lowest mel frequency, Hz")
    fmax: float | None = field(None, gt=0, help="highest mel frequency, Hz (null: Nyquist)")
    power: float = field(2.0, gt=0, help="1 magnitude, 2 power")
    log_offset: float = field(1e-6, gt=0, help="features are ln(mel + log_offset)")
    mel_scale: Literal["htk", "slaney"] = field("htk", help="mel formula")
    norm: Literal["slaney"] | None = field(None, help="filter normalisation")

    def problems(self) -> list[tuple[str, str]]:
        needed = ("n_fft", "win_length", "hop_length", "n_mels")
        if self.kind == "waveform":
            # Frame sizes on a waveform bundle mean the manifest is confused about its input.
            return [
                (k, "only for kind logmel (this frontend is waveform)")
                for k in needed
                if getattr(self, k) is not None
            ]
        return [(k, "required when kind is logmel") for k in needed if getattr(self, k) is None]

    def spec(self, sample_rate_hz: int) -> LogMelSpec:
        """The log-mel spec this block describes (kind logmel, checked by `problems`)."""
        values = {name: getattr(self, key) for name, key in _MANIFEST_NAMES.items()}
        return LogMelSpec(sample_rate_hz=sample_rate_hz, **values)

    @classmethod
    def of(cls, spec: LogMelSpec) -> FrontendManifest:
        """The block that describes `spec` (the trainer writes it into the bundles it exports)."""
        values = {key: getattr(spec, name) for name, key in _MANIFEST_NAMES.items()}
        for key in ("fmin", "fmax", "power", "log_offset"):  # YAML shows them as floats
            values[key] = None if values[key] is None else float(values[key])
        return cls(kind="logmel", **values)


# LogMelSpec field -> its key in the `frontend` block: the one map between the two shapes (the
# spec's `sample_rate_hz` is the manifest's top-level `sample_rate`).
_MANIFEST_NAMES: dict[str, str] = {
    f.name: {"fmin_hz": "fmin", "fmax_hz": "fmax"}.get(f.name, f.name)
    for f in dataclasses.fields(LogMelSpec)
    if f.name != "sample_rate_hz"
}


@dataclass(frozen=True)
class OutputManifest:
    activation: Literal["sigmoid", "softmax", "none"] = field(
        help="applied to the model output: sigmoid, softmax, or none (already probabilities)"
    )
    name: str | None = field(None, help="which model output to use when there are several")


@dataclass(frozen=True)
class FileEntry:
    path: str = field(help="model file, relative to the bundle folder")
    sha256: str = field(help="hex SHA-256 of the file")

    def problems(self) -> list[tuple[str, str]]:
        out = []
        # The edge loads nothing from outside the bundle folder.
        parts = Path(self.path).parts
        if not parts or Path(self.path).is_absolute() or ".." in parts:
            out.append(("path", f"{self.path!r} must be a file name inside the bundle folder"))
        if len(self.sha256) != 64 or any(c not in "0123456789abcdefABCDEF" for c in self.sha256):
            out.append(("sha256", f"must be 64 hex digits, got {self.sha256!r}"))
        return out


@dataclass(frozen=True)
class BackboneBlock:
    """The manifest's `backbone` block: a two-stage bundle runs this pretrained model on each
    window first and its `files` (the head) on the embedding it gives (README, "Transfer
    learning"). Also the core of a backbone's own `backbone.yaml` (edge.model.backbone)."""

    name: str = field(help="backbone name, e.g. yamnet")
    licence: str = field(help="the backbone's licence, e.g. Apache-2.0")
    source: str = field(help="where the backbone comes from (URL)")
    path: str = field(help="backbone model file (.onnx or .tflite), relative to the folder")
    embedding: str = field(help="the output or intermediate tensor that holds the embedding")
    size: int = field(gt=0, help="values in one embedding")
    sha256: str | None = field(None, help="hex SHA-256 of the file (required in a bundle)")

    def problems(self) -> list[tuple[str, str]]:
        out = FileEntry(self.path, self.sha256 or "0" * 64).problems()
        if Path(self.path).suffix not in BACKBONE_FILE_KEYS:
            out.append(("path", f"{self.path!r} must end in .onnx or .tflite"))
        return out


# Backbone file suffix -> the files key whose runtime runs it (the precision part is unused).
BACKBONE_FILE_KEYS: dict[str, FileKey] = {".onnx": "onnx-fp32", ".tflite": "tflite-fp32"}


@dataclass(frozen=True)
class Manifest:
    format: str = field(help=f"always {FORMAT}")
    name: str = field(help="bundle name")
    version: str = field(help="bundle version")
    labels: list[str] = field(help="labels in model output order")
    task: Literal["multilabel", "multiclass"] = field(help="sigmoid per label, or softmax")
    sample_rate: int = field(gt=0, help="sample rate the model expects, Hz")
    window_seconds: float = field(gt=0, help="audio span of one model input, s")
    hop_seconds: float = field(gt=0, help="default stride between windows, s")
    frontend: FrontendManifest = field(help="feature extraction")
    output: OutputManifest = field(help="model output handling")
    thresholds: dict[str, float] = field(ge=0, le=1, help="per-label detection threshold")
    files: dict[str, FileEntry] = field(help="model files by kind")
    threshold_rule: dict[str, Any] = field(factory=dict, help="how thresholds were chosen")
    events: EventTiming = field(factory=EventTiming, help="event detector defaults")
    background: list[str] = field(
        factory=list,
        help="labels that mean 'none of the others' (e.g. ambient): scored, but no events",
    )
    metrics: dict[str, Any] = field(factory=dict, help="validation figures from the trainer")
    backbone: BackboneBlock | None = field(
        None, help="pretrained model run before `files` (which then take its embedding)"
    )
    provenance: dict[str, Any] = field(factory=dict, help="data, trainer, commit, date")

    def problems(self) -> list[tuple[str | tuple[str, ...], str]]:
        out: list[tuple[str | tuple[str, ...], str]] = []
        if not self.labels:
            out.append(("labels", "must name at least one label"))
        if len(set(self.labels)) != len(self.labels):
            out.append(("labels", "labels must be unique"))
        for label in self.labels:
            if label not in self.thresholds:
                out.append(("thresholds", f"no threshold for label '{label}'"))
        labels = set(self.labels)  # BirdNET's 6,522: a list would be searched 6,522 times
        for label in self.thresholds:
            # Tuple keys: a label may hold dots.
            if label not in labels:
                out.append((("thresholds", label), "not one of the labels"))
        for i, label in enumerate(self.background):
            if label not in self.labels:
                out.append((("background", str(i)), f"'{label}' is not one of the labels"))
        if not self.files:
            out.append(("files", "must list at least one model file"))
        for key in self.files:
            if key not in FILE_KEYS:
                out.append((("files", key), f"unknown kind (known: {', '.join(PREFERENCE)})"))
        if self.backbone is not None and self.backbone.sha256 is None:
            out.append((("backbone", "sha256"), "required in a bundle"))
        return out


@dataclass(frozen=True)
class Bundle:
    """A loaded, checked bundle with its derived sizes (all in samples at `sample_rate_hz`)."""

    folder: Path
    manifest: Manifest
    logmel: LogMelSpec | None  # None for waveform bundles
    window_samples: int
    hop_samples: int  # default stride; the config may override it

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def sample_rate_hz(self) -> int:
        return self.manifest.sample_rate

    @property
    def feature_shape(self) -> tuple[int, ...]:
        """What one model input holds: (frames, mels) or (samples,)."""
        if self.logmel is None:
            return (self.window_samples,)
        return (n_frames(self.window_samples, self.logmel), self.logmel.n_mels)

    def hop_for(self, hop_seconds: float | None) -> int:
        """Stride in samples for `hop_seconds` (None: the bundle's), checked against the frames."""
        if hop_seconds is None:
            return self.hop_samples
        if not (math.isfinite(hop_seconds) and hop_seconds > 0):
            raise ConfigError(f"hop_seconds {hop_seconds}: must be a positive number of seconds")
        hop = _samples(hop_seconds, self.sample_rate_hz)
        problem = _hop_problem(hop, self.logmel)
        if problem:
            raise ConfigError(f"hop_seconds {hop_seconds}: {problem}")
        return hop

    def choose_file(self, wanted: str = "auto") -> str:
        """The files key to run: `wanted`, or the first available in PREFERENCE."""
        from edge.model.runtime.base import backend_for

        if wanted != "auto":
            if wanted not in self.manifest.files:
                have = ", ".join(self.manifest.files)
                raise BundleError(f"{self.folder}: no '{wanted}' model in files (it has {have})")
            return wanted
        for key in PREFERENCE:
            # The files key names the format (tflite), not the backend (litert) that runs it.
            if key in self.manifest.files and backend_for(key).available():
                return key
        raise RuntimeUnavailable(
            f"{self.folder}: no installed runtime for its files ({', '.join(self.manifest.files)});"
            " for TFLite files: pip install 'soundwatch[tflite]'"
        )

    def open(self, wanted: str = "auto", threads: int = 1) -> Any:
        """Open the model file `wanted` ('auto' picks) with its runtime backend."""
        from edge.model.runtime import open_backend

        key = self.choose_file(wanted)
        entry = self.manifest.files[key]
        if self.manifest.backbone is not None:
            from edge.model.backbone import open_two_stage

            return open_two_stage(self, key, threads)
        return open_backend(
            key,
            self.folder / entry.path,
            feature_shape=self.feature_shape,
            n_labels=len(self.labels),
            threads=threads,
            output_name=self.manifest.output.name,
        )


def _samples(seconds: float, rate_hz: int) -> int:
    return round(seconds * rate_hz)


def _hop_problem(hop: int, logmel: LogMelSpec | None) -> str | None:
    if hop < 1:
        return "is shorter than one sample"
    if logmel is not None and hop % logmel.hop_length:
        return (
            f"is {hop} samples, not a multiple of the frontend's hop_length "
            f"({logmel.hop_length}), so windows would not start on a frame"
        )
    return None


def _frontend_problem(problem: str, lines: Where) -> str:
    """A LogMelSpec problem ("fmax_hz: ...") pointed at the manifest key that set it."""
    name, _, message = problem.partition(": ")
    key = ("sample_rate",) if name == "sample_rate_hz" else ("frontend", _MANIFEST_NAMES[name])
    return f"{lines.where(key)}: {message or problem}"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_bundle(folder: Path | str) -> Bundle:
    """Load and check the bundle in `folder`; raise BundleError naming the field or file."""
    folder = Path(folder)
    manifest_path = folder / "manifest.yaml"
    if folder.exists() and not folder.is_dir():
        raise BundleError(f"{folder}: not a folder (a bundle is a folder with manifest.yaml)")
    if not folder.is_dir():
        raise BundleError(f"{folder}: no such bundle folder")
    if not manifest_path.is_file():
        raise BundleError(f"{folder}: not a model bundle (no manifest.yaml)")
    try:
        text = read_text(manifest_path)
        data, lines = parse_yaml(text, str(manifest_path))
    except ConfigError as exc:
        raise BundleError(str(exc)) from None
    # The format is checked first and alone: a future format's other fields mean nothing here.
    fmt = data.get("format") if isinstance(data, dict) else None
    if fmt != FORMAT:
        where = lines.where(("format",))
        raise BundleError(
            f"{where}: unknown bundle format {fmt!r} (this soundwatch reads {FORMAT})"
        )
    try:
        manifest = schema.build(Manifest, data, lines)
    except ConfigError as exc:
        raise BundleError(str(exc)) from None

    logmel = None
    f = manifest.frontend
    if f.kind == "logmel":
        logmel = f.spec(manifest.sample_rate)
        issues = logmel.validate()
        if issues:
            raise BundleError("\n".join(_frontend_problem(p, lines) for p in issues))

    window = _samples(manifest.window_seconds, manifest.sample_rate)
    hop = _samples(manifest.hop_seconds, manifest.sample_rate)
    problem = _hop_problem(hop, logmel)
    if problem:
        raise BundleError(f"{lines.where(('hop_seconds',))}: {problem}")
    if logmel is not None and window < logmel.n_fft:
        raise BundleError(
            f"{lines.where(('window_seconds',))}: {window} samples is shorter than n_fft"
            f" ({logmel.n_fft})"
        )
    if not math.isclose(window / manifest.sample_rate, manifest.window_seconds, abs_tol=1e-6):
        logger.debug("window_seconds %s rounds to %d samples", manifest.window_seconds, window)

    entries: list[tuple[tuple[str, ...], FileEntry]] = [
        (("files", key), entry) for key, entry in manifest.files.items()
    ]
    if manifest.backbone is not None:
        b = manifest.backbone
        entries.append((("backbone",), FileEntry(b.path, b.sha256 or "")))
    for at, entry in entries:
        path = folder / entry.path
        where = lines.where((*at, "path"))
        try:
            if not path.is_file():
                raise BundleError(f"{where}: file {entry.path} not found in {folder}")
            actual = sha256_of(path)
        except OSError as exc:  # a name too long for the file system, a folder, no permission
            reason = exc.strerror or str(exc)
            raise BundleError(f"{where}: cannot read {entry.path} ({reason})") from None
        if actual != entry.sha256.lower():
            raise BundleError(
                f"{lines.where((*at, 'sha256'))}: {entry.path} has sha256 {actual},"
                f" not the manifest's {entry.sha256} (file changed or corrupt)"
            )
    return Bundle(folder, manifest, logmel, window, hop)
