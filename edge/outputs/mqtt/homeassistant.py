"""Home Assistant MQTT discovery: one binary_sensor per label and a last-detection sensor."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from edge import __version__
from edge.outputs.mqtt.settings import MqttConfig


def discovery_messages(
    config: MqttConfig,
    root: str,
    device: str,
    model: str,
    model_version: str,
    labels: list[str],
    channels: Sequence[int | None] = (None,),
) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery: a binary_sensor per label (on while an event is open) and a
    sensor of the last detected label, both available while `status` says online.

    With a detector per channel (`channels` 0, 1, ...), one binary_sensor per label and
    channel, each following only its own channel's events."""
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
    for label, channel in ((label, channel) for label in labels for channel in channels):
        obj = re.sub(r"[^A-Za-z0-9_-]", "_", label)
        name = label
        test = f"value_json.label == {json.dumps(label)}"
        if channel is not None:
            obj, name = f"{obj}_ch{channel}", f"{label} ch{channel}"
            test += f" and value_json.channel == {channel}"
        # Every label's messages share the events topic: a message about another label (or
        # channel) renders empty, which Home Assistant ignores, so each sensor follows its own.
        template = (
            f"{{% if {test} %}}{{{{ 'ON' if value_json.type == 'start' else 'OFF' }}}}{{% endif %}}"
        )
        sensor = {**common, "name": name, "unique_id": f"{node}_{obj}", "device_class": "sound"}
        sensor.update(value_template=template, payload_on="ON", payload_off="OFF")
        out.append((f"{config.homeassistant_prefix}/binary_sensor/{node}/{obj}/config", sensor))
    last = {**common, "name": "last detection", "unique_id": f"{node}_last_detection"}
    last.update(value_template="{{ value_json.label }}", json_attributes_topic=f"{root}/events")
    out.append((f"{config.homeassistant_prefix}/sensor/{node}/last_detection/config", last))
    return out
