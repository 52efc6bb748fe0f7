"""The daemon's configuration: typed, frozen, validated at load, every default documented.

A minimal config is a few lines; everything else has a default:

    model: {path: models/tone}
    source: {kind: device, device: USB}

Relative paths are taken from the config file's folder. Errors name the YAML path, line and
value. Secrets (the MQTT password, later) never live here: they come from the environment.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge import schema
from edge.audio.levels import LevelSettings
from edge.errors import ConfigError
from edge.model.bundle import PREFERENCE, ModelFile
from edge.model.rules import EventRules, agreement_problems
from edge.outputs.clips.settings import ClipSettings
from edge.outputs.mqtt.settings import MqttConfig
from edge.schema import field, like
from edge.yamlfile import Where

DEFAULT_MODEL = "flysong"
DEFAULT_CONFIG = Path("/etc/soundwatch/config.yaml")


@dataclass(frozen=True)
class ModelConfig:
    path: str = field(
        DEFAULT_MODEL, help="bundle folder, or the name of a bundled model (e.g. tone)"
    )
    file: ModelFile = field(
        "auto", help=f"which model file to run; auto tries {', '.join(PREFERENCE)}"
    )
    threads: int = field(1, ge=1, le=256, help="inference threads")
    hop_seconds: float | None = field(
        None,
        gt=0,
        le=3600,
        help="stride between windows, s (null: the bundle's); a multiple of its frame hop",
    )
    batch_windows: int = field(16, ge=1, le=4096, help="most windows scored in one model call")


# The ring buffer holds float32 samples of every channel; past this it would not fit a Pi.
MAX_RING_BYTES = 1 << 30
ASSUMED_RATE_HZ = 48_000  # a device's usual default rate, when the config leaves it to it


@dataclass(frozen=True)
class SourceConfig:
    kind: Literal["auto", "device", "files", "demo"] = field(
        "auto",
        help="auto: the input device if there is one, else the demo; device; files; demo"
        " (synthetic audio in real time)",
    )
    demo_scene: Literal["auto", "flysong", "tones"] = field(
        "auto",
        help="the demo's audio: flysong (pulse and sine song), tones (1 and 3 kHz bursts);"
        " auto: the one made for the model's labels",
    )
    device: int | str | None = field(
        None, help="input device index or name substring (null: the default input)"
    )
    sample_rate_hz: int | None = field(
        None,
        gt=0,
        le=2_000_000,
        help="capture rate, Hz (null: the device's default); resampled for the model",
    )
    channels: int = field(1, ge=1, le=64, help="channels to open on the device")
    channel: Literal["mix", "each"] | int = field(
        "mix",
        help="mix: average the channels; a channel index (0-based): that one; each: a detector"
        " per channel, events and rows tagged with it",
    )
    block_seconds: float = field(
        0.05,
        ge=0.001,
        le=10,
        help="audio block per callback or file read, s: a smaller one cuts latency, costs CPU",
    )
    buffer_seconds: float = field(
        30.0,
        ge=1,
        le=3600,
        help="ring buffer, s: how far analysis may fall behind before audio is dropped",
    )
    paths: list[str] = field(factory=list, help="files or folders to replay (kind: files)")
    speed: float = field(
        1.0,
        ge=0,
        le=10_000,
        zero="as fast as possible",
        help="file replay speed: 1 real time, 10 ten times faster, 0 as fast as possible",
    )
    start: str | None = field(
        None, help="UTC start time (ISO 8601) of files without a timestamp in their names"
    )
    device_timeout_seconds: float = field(
        5.0,
        ge=0.01,
        le=86400,
        help="no audio from the device for this long: it is lost, closed and reopened, s",
    )
    reconnect_min_seconds: float = field(
        0.5,
        ge=0.01,
        le=86400,
        help="first retry after the device is lost, s; doubles per failed retry",
    )
    reconnect_max_seconds: float = field(
        30.0, ge=0.01, le=86400, help="longest wait between retries, s"
    )
    max_lag_seconds: float | None = field(
        5.0,
        help="analysis further behind than this drops the unread audio (gap:overload) to"
        " stay real-time, s; less than buffer_seconds (null: never; overruns drop it instead)",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.kind == "files" and not self.paths:
            out.append(("paths", "kind is files, so paths must name at least one file or folder"))
        if isinstance(self.channel, int) and not 0 <= self.channel < self.channels:
            out.append(("channel", f"{self.channel} is not one of the {self.channels} channels"))
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            out.append(("reconnect_max_seconds", "must be at least reconnect_min_seconds"))
        ring = self.channels * self.buffer_seconds * (self.sample_rate_hz or ASSUMED_RATE_HZ) * 4
        if ring > MAX_RING_BYTES:
            rate = f"{self.sample_rate_hz} Hz" if self.sample_rate_hz else "48 kHz (rate unset)"
            out.append(
                (
                    "buffer_seconds",
                    f"{self.buffer_seconds:g} s of {self.channels} channel(s) at {rate} is"
                    f" {ring / 2**30:.1f} GiB of ring buffer; at most {MAX_RING_BYTES / 2**30:g}"
                    " GiB: fewer seconds or channels",
                )
            )
        lag = self.max_lag_seconds
        if lag is not None and not self.block_seconds < lag < self.buffer_seconds:
            out.append(
                (
                    "max_lag_seconds",
                    f"must be more than block_seconds ({self.block_seconds:g}) and less than"
                    f" buffer_seconds ({self.buffer_seconds:g}), got {lag:g}",
                )
            )
        if self.start is not None:
            from edge.clock import parse_start

            try:
                parse_start(self.start)
            except ValueError as exc:
                out.append(("start", str(exc)))
        return out


@dataclass(frozen=True)
class LabelRules:
    """Overrides of the bundle's event rules (edge/model/rules.py): null keeps the bundle's."""

    threshold: float | None = like(
        EventRules, "threshold", help="on threshold (null: the bundle's)"
    )
    off_threshold: float | None = like(
        EventRules,
        "off_threshold",
        help="stay on while the score is at least this (null: threshold - hysteresis)",
    )
    median_windows: int | None = like(EventRules, "median_windows")
    min_duration_seconds: float | None = like(EventRules, "min_duration_seconds")
    merge_gap_seconds: float | None = like(EventRules, "merge_gap_seconds")
    max_duration_seconds: float | None = like(EventRules, "max_duration_seconds")
    refractory_seconds: float | None = like(EventRules, "refractory_seconds")

    def problems(self) -> list[tuple[str, str]]:
        # Checked at load, so `soundwatch check` finds them without the bundle; how these
        # combine with the bundle's defaults is checked again in label_setups.
        return agreement_problems(self)


@dataclass(frozen=True)
class EventsConfig(LabelRules):
    hysteresis: float = field(
        0.0, ge=0, le=1, help="off threshold = threshold - hysteresis, unless given"
    )
    background: bool = field(
        False,
        help="events (and clips, Home Assistant sensors) for the bundle's background labels too",
    )
    labels: dict[str, LabelRules] = field(
        factory=dict,
        help="per-label overrides of the keys above, e.g. {mel-pulse: {threshold: 0.7}}",
    )


DEVICE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")
DEVICE_ID_RULE = "letters, digits, '.', '_', '-'; at most 64; not starting with '.' or '-'"


@dataclass(frozen=True)
class OutputConfig:
    dir: str = field("soundwatch-out", help="folder for per-second CSVs and event files")
    device_id: str | None = field(
        None,
        help="this device's name in paths and MQTT topics (null: host name): letters, digits,"
        " '.', '_', '-', at most 64, not starting with '.' or '-'",
    )
    files: bool = field(True, help="write per-second CSVs and event files")
    print: Literal["events", "seconds", "both", "none"] = field(
        "both", help="what to print on stdout as it happens"
    )

    def problems(self) -> list[tuple[str, str]]:
        # It becomes a folder under `dir` and an MQTT topic level: `../x` wrote two levels
        # above `dir`, `a/b` made folders, `#` or `+` break the topic.
        if self.device_id is not None and not DEVICE_ID.fullmatch(self.device_id):
            return [("device_id", f"{self.device_id!r} is not a plain name ({DEVICE_ID_RULE})")]
        return []

    @property
    def device(self) -> str:
        return self.device_id or socket.gethostname()


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (edge/ops/metrics.py)."""

    enabled: bool = field(True, help="serve Prometheus metrics")
    address: str = field(
        "127.0.0.1:9464",
        help="host:port to serve /metrics on; 0.0.0.0:9464 for every interface, port 0 for"
        " any free port (logged)",
    )

    def problems(self) -> list[tuple[str, str]]:
        from edge.ops.metrics import parse_address

        try:
            parse_address(self.address)
        except ValueError as exc:
            return [("address", str(exc))]
        return []


@dataclass(frozen=True)
class WebConfig:
    """The review page and JSON API served by the daemon (edge/review/)."""

    enabled: bool = field(
        False,
        help="serve the page (Now, Detections, Coverage, Model) and the API; off by default: a"
        " Pi in the field saves the thread and its memory until someone wants to look",
    )
    host: str = field(
        "127.0.0.1",
        help="address to listen on; any but 127.0.0.1, ::1 or localhost needs a token from"
        " SOUNDWATCH_REVIEW_TOKEN or the systemd credential soundwatch-review-token",
    )
    port: int = field(8088, ge=0, le=65535, zero="any free port (logged)", help="TCP port")
    max_upload_mb: float = field(
        20.0, gt=0, le=1024, help="largest WAV that POST /api/infer takes, MiB"
    )
    reviewer: str = field("reviewer", help="name stored with each verdict given on the page")


@dataclass(frozen=True)
class ShadowConfig:
    """A candidate bundle scoring the same audio beside the model (edge/shadow.py)."""

    bundle: str | None = field(
        None,
        help="bundle folder, or the name of a bundled model, scored beside the model on its own"
        " thread; rows and events go to <output.dir>/shadow/, never to MQTT (null: off)",
    )
    buffer_seconds: float = field(
        30.0,
        gt=0,
        le=3600,
        help="audio held for the shadow while it is behind, s; older audio is skipped, counted"
        " in soundwatch_shadow_skipped_seconds",
    )


@dataclass(frozen=True)
class Config:
    model: ModelConfig = field(factory=ModelConfig, help="the model bundle")
    source: SourceConfig = field(factory=SourceConfig, help="where audio comes from")
    labels: list[str] | None = field(None, help="keep only these labels in outputs (null: all)")
    events: EventsConfig = field(factory=EventsConfig, help="event detection")
    output: OutputConfig = field(factory=OutputConfig, help="outputs")
    mqtt: MqttConfig = field(factory=MqttConfig, help="MQTT broker and topics")
    metrics: MetricsConfig = field(factory=MetricsConfig, help="Prometheus metrics")
    levels: LevelSettings = field(factory=LevelSettings, help="per-second sound levels")
    clips: ClipSettings = field(factory=ClipSettings, help="a WAV clip of each event")
    web: WebConfig = field(factory=WebConfig, help="the review page and HTTP API")
    shadow: ShadowConfig = field(
        factory=ShadowConfig, help="a candidate model in shadow, to compare before promoting"
    )
    log_level: Literal["debug", "info", "warning", "error"] = field("info", help="log level")

    def problems(self) -> list[tuple[str | tuple[str | int, ...], str]]:
        out: list[tuple[str | tuple[str | int, ...], str]] = []
        if self.labels is not None:
            if not self.labels:
                out.append(("labels", "must name at least one label (or null: all)"))
            for i, label in enumerate(self.labels):
                if label in self.labels[:i]:
                    out.append((("labels", i), f"'{label}' is listed twice"))
        return out


@dataclass(frozen=True)
class Loaded:
    """A config with where it came from, to resolve paths and point at lines."""

    config: Config
    path: Path | None
    where: Where

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        if p.is_absolute() or self.path is None:
            return p
        return self.path.parent / p


def load_config(path: Path | None) -> Loaded:
    """Load `path` (None: built-in defaults)."""
    if path is None:
        return Loaded(Config(), None, Where.nowhere("<defaults>"))
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    config, where = schema.load_located(Config, path)
    return Loaded(config, path, where)
