"""Home Assistant MQTT discovery: one binary_sensor per label and a last-detection sensor."""

from __future__ import annotations

import json
import re
from typing import Any

from edge import __version__
from edge.config import MqttConfig


def discovery_messages(
    config: MqttConfig, root: str, device: str, model: str, model_version: str, labels: list[str]
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery: a binary_sensor per label (on while an event is open) and a
    sensor of the last detected label, both available while `status` says online."""
    node = re.sub(r"[^A-Za-z0-9_-]", "_", f"soundwatch_{device}")
    common = {
        "state_topic": f"{root}/events",
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
    }
    out = []
    for label in labels:
        obj = re.sub(r"[^A-Za-z0-9_-]", "_", label)
        # Every label's messages share the events topic: a message about another label renders
        # empty, which Home Assistant ignores, so each sensor follows its own label only.
        template = (
            f"{{% if value_json.label == {json.dumps(label)} %}}"
            "{{ 'ON' if value_json.type == 'start' else 'OFF' }}{% endif %}"
        )
        sensor = {**common, "name": label, "unique_id": f"{node}_{obj}", "device_class": "sound"}
        sensor.update(value_template=template, payload_on="ON", payload_off="OFF")
        out.append((f"{config.homeassistant_prefix}/binary_sensor/{node}/{obj}/config", sensor))
    last = {**common, "name": "last detection", "unique_id": f"{node}_last_detection"}
    last.update(value_template="{{ value_json.label }}", json_attributes_topic=f"{root}/events")
    out.append((f"{config.homeassistant_prefix}/sensor/{node}/last_detection/config", last))
    return out
