"""The daemon's configuration: typed, frozen, validated at load, every default documented.

A minimal config is a few lines; everything else has a default:

    model: {path: models/tone}
    source: {kind: device, device: USB}

Relative paths are taken from the config file's folder. Errors name the YAML path, line and
value. Secrets (the MQTT password, later) never live here: they come from the environment.
"""

from __future__ import annotations

import os
import socket
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from edge import schema
from edge.analysis import LabelSetup
from edge.bundle import PREFERENCE, Bundle
from edge.clips import ClipSettings
from edge.errors import ConfigError
from edge.events import EventRules
from edge.levels import LevelSettings
from edge.schema import Path_, field

DEFAULT_MODEL = "flysong"
DEFAULT_CONFIG = Path("/etc/soundwatch/config.yaml")
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


@dataclass(frozen=True)
class ModelConfig:
    path: str = field(
        DEFAULT_MODEL, help="bundle folder, or the name of a bundled model (e.g. tone)"
    )
    file: Literal["auto", "onnx-int8", "onnx-fp32", "tflite-int8", "tflite-fp32"] = field(
        "auto", help=f"which model file to run; auto tries {', '.join(PREFERENCE)}"
    )
    threads: int = field(1, help="inference threads")
    hop_seconds: float | None = field(
        None, help="stride between windows, s (null: the bundle's); a multiple of its frame hop"
    )
    batch_windows: int = field(16, help="most windows scored in one model call")

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.threads < 1:
            out.append(("threads", f"must be at least 1, got {self.threads}"))
        if self.batch_windows < 1:
            out.append(("batch_windows", f"must be at least 1, got {self.batch_windows}"))
        if self.hop_seconds is not None and self.hop_seconds <= 0:
            out.append(("hop_seconds", f"must be positive, got {self.hop_seconds}"))
        return out


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
        None, help="capture rate, Hz (null: the device's default); resampled for the model"
    )
    channels: int = field(1, help="channels to open on the device")
    channel: Literal["mix", "each"] | int = field(
        "mix",
        help="mix: average the channels; a channel index (0-based): that one; each: a detector"
        " per channel, events and rows tagged with it",
    )
    block_seconds: float = field(0.1, help="audio block per callback or file read, s")
    buffer_seconds: float = field(
        30.0, help="ring buffer, s: how far analysis may fall behind before audio is dropped"
    )
    paths: list[str] = field(factory=list, help="files or folders to replay (kind: files)")
    speed: float = field(
        1.0, help="file replay speed: 1 real time, 10 ten times faster, 0 as fast as possible"
    )
    start: str | None = field(
        None, help="UTC start time (ISO 8601) of files without a timestamp in their names"
    )
    device_timeout_seconds: float = field(
        5.0, help="no audio from the device for this long: it is lost, closed and reopened, s"
    )
    reconnect_min_seconds: float = field(
        0.5, help="first retry after the device is lost, s; doubles per failed retry"
    )
    reconnect_max_seconds: float = field(30.0, help="longest wait between retries, s")
    max_lag_seconds: float | None = field(
        5.0,
        help="analysis further behind than this drops the unread audio (gap:overload) to"
        " stay real-time, s; less than buffer_seconds (null: never; overruns drop it instead)",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.kind == "files" and not self.paths:
            out.append(("paths", "kind is files, so paths must name at least one file or folder"))
        if self.speed < 0:
            out.append(("speed", f"must be 0 (as fast as possible) or positive, got {self.speed}"))
        if not 0.001 <= self.block_seconds <= 10:
            out.append(("block_seconds", f"must be within 0.001..10, got {self.block_seconds}"))
        if self.buffer_seconds < 1:
            out.append(("buffer_seconds", f"must be at least 1, got {self.buffer_seconds}"))
        if self.channels < 1:
            out.append(("channels", f"must be at least 1, got {self.channels}"))
        if isinstance(self.channel, int) and not 0 <= self.channel < self.channels:
            out.append(("channel", f"{self.channel} is not one of the {self.channels} channels"))
        if self.sample_rate_hz is not None and self.sample_rate_hz <= 0:
            out.append(("sample_rate_hz", f"must be positive, got {self.sample_rate_hz}"))
        for name in ("device_timeout_seconds", "reconnect_min_seconds", "reconnect_max_seconds"):
            if not 0.01 <= getattr(self, name) <= 86400:
                out.append((name, f"must be within 0.01..86400, got {getattr(self, name)}"))
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            out.append(("reconnect_max_seconds", "must be at least reconnect_min_seconds"))
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
    threshold: float | None = field(None, help="on threshold, 0..1 (null: the bundle's)")
    off_threshold: float | None = field(
        None, help="stay on while the score is at least this (null: threshold - hysteresis)"
    )
    median_windows: int | None = field(None, help="median smoothing, odd number of windows")
    min_duration_seconds: float | None = field(None, help="shorter events are dropped, s")
    merge_gap_seconds: float | None = field(None, help="shorter off-spells are merged, s")
    max_duration_seconds: float | None = field(None, help="longer events are split, s (0: none)")
    refractory_seconds: float | None = field(None, help="no new event this soon after an end, s")

    def problems(self) -> list[tuple[str, str]]:
        # Checked at load, so `soundwatch check` finds them without the bundle; how these
        # combine with the bundle's defaults is checked again in label_setups.
        out = []
        for name in ("threshold", "off_threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                out.append((name, f"must be within 0..1, got {value}"))
        if (
            self.threshold is not None
            and self.off_threshold is not None
            and self.off_threshold > self.threshold
        ):
            message = f"must be <= threshold ({self.threshold}), got {self.off_threshold}"
            out.append(("off_threshold", message))
        k = self.median_windows
        if k is not None and (k < 1 or k % 2 == 0):
            out.append(("median_windows", f"must be an odd number >= 1, got {k}"))
        for name in RULE_SECONDS:
            value = getattr(self, name)
            if value is not None and value < 0:
                out.append((name, f"must be 0 or more, got {value}"))
        return out


RULE_SECONDS = (
    "min_duration_seconds",
    "merge_gap_seconds",
    "max_duration_seconds",
    "refractory_seconds",
)
RULE_FIELDS = ("threshold", "off_threshold", "median_windows", *RULE_SECONDS)


@dataclass(frozen=True)
class EventsConfig(LabelRules):
    hysteresis: float = field(0.0, help="off threshold = threshold - hysteresis, unless given")
    labels: dict[str, LabelRules] = field(
        factory=dict,
        help="per-label overrides of the keys above, e.g. {mel-pulse: {threshold: 0.7}}",
    )

    def problems(self) -> list[tuple[str, str]]:
        out = super().problems()
        if not 0.0 <= self.hysteresis <= 1.0:
            out.append(("hysteresis", f"must be within 0..1, got {self.hysteresis}"))
        return out


@dataclass(frozen=True)
class OutputConfig:
    dir: str = field("soundwatch-out", help="folder for per-second CSVs and event files")
    device_id: str | None = field(
        None, help="this device's name in paths and messages (null: host name)"
    )
    files: bool = field(True, help="write per-second CSVs and event files")
    print: Literal["events", "seconds", "both", "none"] = field(
        "both", help="what to print on stdout as it happens"
    )

    @property
    def device(self) -> str:
        return self.device_id or socket.gethostname()


@dataclass(frozen=True)
class MqttConfig:
    """The broker and topics (edge/mqtt.py); no `host`, no MQTT. The password is never here."""

    host: str | None = field(None, help="broker host name or address (null: no MQTT)")
    port: int | None = field(None, help="broker port (null: 1883, or 8883 with tls)")
    protocol: str = field("3.1.1", help="MQTT version: 3.1.1 or 5")
    client_id: str | None = field(None, help="client id (null: soundwatch-{device id})")
    topic_prefix: str = field("soundwatch", help="topics are {topic_prefix}/{device id}/...")
    keepalive_seconds: int = field(30, help="ping interval, s; silence for 1.5x: last will")
    username: str | None = field(None, help="user name (null: anonymous)")
    password_env: str | None = field(None, help="environment variable that holds the password")
    password_file: str | None = field(
        None, help="file that holds the password, e.g. ${CREDENTIALS_DIRECTORY}/mqtt-password"
    )
    tls: bool = field(False, help="connect with TLS")
    ca_file: str | None = field(None, help="CA certificates to trust, PEM (null: the system's)")
    cert_file: str | None = field(None, help="client certificate, PEM, if the broker asks for one")
    key_file: str | None = field(None, help="the client certificate's private key, PEM")
    tls_check_hostname: bool = field(True, help="check the broker's certificate names mqtt.host")
    probabilities: bool = field(False, help="publish per-second probabilities (QoS 0)")
    levels: bool = field(True, help="publish per-second sound levels (QoS 0) when levels are on")
    outbox: str | None = field(
        None, help="SQLite file of unsent events (null: mqtt-outbox.sqlite3 in output.dir)"
    )
    outbox_max_messages: int = field(
        100000, help="most unsent event messages kept; beyond, the oldest are dropped and counted"
    )
    flush_seconds: float = field(3.0, help="at shutdown, wait this long for unsent events, s")
    reconnect_min_seconds: int = field(1, help="first reconnect delay, s; doubles per failure")
    reconnect_max_seconds: int = field(60, help="longest reconnect delay, s")
    homeassistant: bool = field(False, help="announce sensors by Home Assistant MQTT discovery")
    homeassistant_prefix: str = field("homeassistant", help="Home Assistant's discovery prefix")

    @property
    def port_or_default(self) -> int:
        return self.port or (8883 if self.tls else 1883)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.protocol not in ("3.1.1", "5"):
            out.append(("protocol", f"must be 3.1.1 or 5, got {self.protocol!r}"))
        for name, low, high in MQTT_RANGES:
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                out.append((name, f"must be within {low}..{high}, got {value}"))
        if self.reconnect_max_seconds < self.reconnect_min_seconds:
            out.append(("reconnect_max_seconds", "must be at least reconnect_min_seconds"))
        if self.password_env and self.password_file:
            out.append(("password_file", "give password_env or password_file, not both"))
        if (self.password_env or self.password_file) and not self.username:
            out.append(("username", "a password needs a username"))
        if self.key_file and not self.cert_file:
            out.append(("key_file", "a key_file needs its cert_file"))
        for name in ("ca_file", "cert_file"):
            if getattr(self, name) and not self.tls:
                out.append((name, "only used with TLS: set tls: true"))
        for name in ("topic_prefix", "homeassistant_prefix"):
            value = getattr(self, name)
            if not value or value[0] == "/" or value[-1] == "/" or {"+", "#"} & set(value):
                out.append((name, f"must be a topic without + or # or outer slashes: {value!r}"))
        return out


MQTT_RANGES = (
    ("port", 1, 65535),
    ("keepalive_seconds", 1, 65535),
    ("outbox_max_messages", 1, 10**9),
    ("flush_seconds", 0, 3600),
    ("reconnect_min_seconds", 1, 3600),
    ("reconnect_max_seconds", 1, 86400),
)


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint (edge/metrics.py)."""

    enabled: bool = field(True, help="serve Prometheus metrics")
    address: str = field(
        "127.0.0.1:9464",
        help="host:port to serve /metrics on; 0.0.0.0:9464 for every interface, port 0 for"
        " any free port (logged)",
    )

    def problems(self) -> list[tuple[str, str]]:
        from edge.metrics import parse_address

        try:
            parse_address(self.address)
        except ValueError as exc:
            return [("address", str(exc))]
        return []


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
    where: schema.Where

    def resolve(self, value: str) -> Path:
        p = Path(value).expanduser()
        if p.is_absolute() or self.path is None:
            return p
        return self.path.parent / p


def load_config(path: Path | None) -> Loaded:
    """Load `path` (None: built-in defaults)."""
    if path is None:
        return Loaded(Config(), None, schema.Where.nowhere("<defaults>"))
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    config, where = schema.load_located(Config, path)
    return Loaded(config, path, where)


def model_folder(loaded: Loaded) -> Path:
    """The bundle folder for `model.path`: a folder, or the name of a bundled model."""
    value = loaded.config.model.path
    direct = loaded.resolve(value)
    if direct.is_dir() or "/" in value or os.sep in value:
        return direct
    for root in bundled_model_roots():
        if (root / value).is_dir():
            return root / value
    return direct


def bundled_model_roots() -> list[Path]:
    """Where bundled models live: the checkout (editable install) or <prefix>/share."""
    return [Path("models"), REPO_MODELS, Path(sys.prefix) / "share" / "soundwatch" / "models"]


def label_setups(loaded: Loaded, bundle: Bundle) -> list[LabelSetup]:
    """The kept labels with their detector rules: bundle defaults, then config overrides."""
    config, where = loaded.config, loaded.where
    problems: list[str] = []
    names = bundle.labels
    keep = config.labels if config.labels is not None else names
    for i, label in enumerate(keep):
        if label not in names:
            problems.append(
                f"{where(('labels', i))}: '{label}' is not a label of {bundle.manifest.name}"
                f" (its labels: {', '.join(names)})"
            )
    for label in config.events.labels:
        if label not in names:
            problems.append(
                f"{where(('events', 'labels', label))}: '{label}' is not a label of"
                f" {bundle.manifest.name} (its labels: {', '.join(names)})"
            )
    if problems:
        raise ConfigError("\n".join(problems))

    d = bundle.manifest.events
    base = EventRules(
        threshold=0.5,
        median_windows=d.median_windows,
        min_duration_seconds=d.min_duration_seconds,
        merge_gap_seconds=d.merge_gap_seconds,
        max_duration_seconds=d.max_duration_seconds,
        refractory_seconds=d.refractory_seconds,
    )
    setups = []
    for label in keep:
        rules = replace(base, threshold=bundle.manifest.thresholds[label])
        # Where each rule was last set, so a problem points at the line that set it.
        origin: dict[str, Path_] = {}
        layers: list[tuple[Path_, LabelRules | None]] = [
            (("events",), config.events),
            (("events", "labels", label), config.events.labels.get(label)),
        ]
        for at, layer in layers:
            if layer is None:
                continue
            for name in RULE_FIELDS:
                value = getattr(layer, name)
                if value is not None:
                    rules = replace(rules, **{name: value})
                    origin[name] = (*at, name)
        if rules.off_threshold is None and config.events.hysteresis:
            rules = replace(
                rules, off_threshold=max(0.0, rules.threshold - config.events.hysteresis)
            )
            origin["off_threshold"] = ("events", "hysteresis")
        for problem in rules.validate():
            key, _, message = problem.partition(": ")
            at = origin.get(key, ("events", key))
            source = "" if key in origin else ", the bundle's default"
            problems.append(f"{where(at)}: {message or problem} (label {label}{source})")
        setups.append(LabelSetup(label, names.index(label), rules))
    if problems:
        raise ConfigError("\n".join(problems))
    return setups
