"""Home Assistant MQTT discovery: a binary_sensor per label (and channel), a last-detection
sensor and, with levels on, a sound-level sensor per channel; and the removal of the entities
of labels a new model no longer has.

Every entity is available while `status` says online; the broker's last will sets offline, so
after a crash or a lost connection Home Assistant shows the sensors as unavailable, not as the
ON they may have had (https://www.home-assistant.io/integrations/mqtt/#using-availability-topics).
A label's binary_sensor reads its own retained `state/<label>` topic (ON or OFF), which the sink
sets at every start and end and sets again for every label at each connect: so a sensor that
was ON when the daemon crashed is OFF once it is back, not ON until that label's next end.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

from edge import __version__
from edge.outputs.mqtt.settings import MqttConfig

logger = logging.getLogger(__name__)

# Who announced these entities (HA shows it in the MQTT info of each); no support_url, as the
# project has no public address yet.
ORIGIN = {"name": "soundwatch", "sw_version": __version__}
# Levels come every second: past this with none, HA shows the level sensor as unavailable (a
# stopped stream is not a steady level).
LEVEL_EXPIRE_SECONDS = 10


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def state_topic(root: str, label: str, channel: int | None) -> str:
    """The retained ON/OFF topic of one label's (and channel's) binary_sensor."""
    obj = _slug(label) if channel is None else f"{_slug(label)}_ch{channel}"
    return f"{root}/state/{obj}"


def discovery_messages(
    config: MqttConfig,
    root: str,
    device: str,
    model: str,
    model_version: str,
    labels: list[str],
    channels: Sequence[int | None] = (None,),
    level_unit: str | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery: a binary_sensor per label (on while an event is open), a
    sensor of the last detected label and, when `level_unit` is given (levels on), a sound
    level sensor in that unit; all available while `status` says online.

    With a detector per channel (`channels` 0, 1, ...), one binary_sensor per label and
    channel, each following only its own channel's events, and a level sensor per channel."""
    node = _slug(f"soundwatch_{device}")
    common = {
        "availability_topic": f"{root}/status",
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
        "device": {
            "identifiers": [node],
            "name": f"soundwatch {device}",
            "manufacturer": "soundwatch",
            "model": f"{model} {model_version}",
            "sw_version": __version__,
        },
        "origin": ORIGIN,
    }
    events = {**common, "state_topic": f"{root}/events"}
    out = []
    for label, channel in ((label, channel) for label in labels for channel in channels):
        obj, name = _slug(label), label
        if channel is not None:
            obj, name = f"{obj}_ch{channel}", f"{label} ch{channel}"
        sensor = {**common, "name": name, "unique_id": f"{node}_{obj}", "device_class": "sound"}
        sensor.update(state_topic=state_topic(root, label, channel), payload_on="ON")
        sensor.update(payload_off="OFF")
        out.append((f"{config.homeassistant_prefix}/binary_sensor/{node}/{obj}/config", sensor))
    last = {**events, "name": "last detection", "unique_id": f"{node}_last_detection"}
    last.update(value_template="{{ value_json.label }}", json_attributes_topic=f"{root}/events")
    out.append((f"{config.homeassistant_prefix}/sensor/{node}/last_detection/config", last))
    if level_unit is not None and config.levels:
        key = "dbfs" if level_unit == "dBFS" else "db"
        for channel in channels:
            obj, name, template = "sound_level", "sound level", f"{{{{ value_json.{key} }}}}"
            if channel is not None:
                obj, name = f"{obj}_ch{channel}", f"{name} ch{channel}"
                # Another channel's second renders empty, which Home Assistant ignores.
                template = f"{{% if value_json.channel == {channel} %}}{template}{{% endif %}}"
            level: dict[str, Any] = {**common, "name": name, "unique_id": f"{node}_{obj}"}
            level.update(
                state_topic=f"{root}/levels",
                value_template=template,
                unit_of_measurement=level_unit,
                state_class="measurement",
                expire_after=LEVEL_EXPIRE_SECONDS,
            )
            out.append((f"{config.homeassistant_prefix}/sensor/{node}/{obj}/config", level))
    return out


class Announcements:
    """Publishes discovery and removes what is no longer announced.

    The topics announced last are kept in `path` (JSON, next to the outbox), so an entity for
    a label the model lost is removed (an empty retained config, which is how Home Assistant
    deletes an entity) after a reload, and after a restart with another model too. Called from
    paho's network thread (connect) and the processing thread (a new stream), so locked.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._sent: dict[str, str] = {}  # topic -> config, as published on this connection
        self._known = self._load()

    def _load(self) -> set[str]:
        try:
            topics = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return set()
        except (OSError, ValueError) as exc:
            logger.warning("%s: cannot read the Home Assistant topics (%s)", self.path, exc)
            return set()
        return {t for t in topics if isinstance(t, str)} if isinstance(topics, list) else set()

    def _save(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        try:
            temporary.write_text(json.dumps(sorted(self._known)), encoding="utf-8")
            os.replace(temporary, self.path)
        except OSError as exc:
            logger.warning("%s: cannot save the Home Assistant topics (%s)", self.path, exc)

    def publish(
        self, client: mqtt.Client, messages: list[tuple[str, dict[str, Any]]], *, again: bool
    ) -> None:
        """Announce `messages` and remove earlier topics not among them. `again`: a new
        connection, so send everything; else only what changed since the last call."""
        configs = {topic: json.dumps(config) for topic, config in messages}
        with self._lock:
            if again:
                self._sent = {}
            for topic, config in configs.items():
                if self._sent.get(topic) != config:
                    client.publish(topic, config, qos=1, retain=True)
            gone = (self._known | self._sent.keys()) - configs.keys()
            for topic in sorted(gone):
                client.publish(topic, b"", qos=1, retain=True)
            if gone:
                logger.info("Home Assistant: removed %d entities no longer announced", len(gone))
            self._sent = configs
            if self._known != configs.keys():
                self._known = set(configs)
                self._save()


class SensorStates:
    """The binary sensors that are ON, published retained to their `state/<label>` topics:
    one at each start and end (when connected), all at a connect, so a sensor ON when the
    daemon died is OFF again. Called from the processing thread and paho's, so locked."""

    def __init__(self, root: str) -> None:
        self.root = root
        self._on: set[tuple[str, int | None]] = set()
        self._lock = threading.Lock()

    def set(self, client: mqtt.Client, label: str, channel: int | None, on: bool) -> None:
        with self._lock:
            (self._on.add if on else self._on.discard)((label, channel))
            if client.is_connected():
                self._publish(client, label, channel)

    def publish_all(
        self, client: mqtt.Client, labels: Sequence[str], channels: Sequence[int | None]
    ) -> None:
        with self._lock:
            for label in labels:
                for channel in channels:
                    self._publish(client, label, channel)

    def _publish(self, client: mqtt.Client, label: str, channel: int | None) -> None:
        on = (label, channel) in self._on
        client.publish(state_topic(self.root, label, channel), b"ON" if on else b"OFF", 1, True)
