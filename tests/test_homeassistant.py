"""Home Assistant discovery: each sensor follows its own label (and channel), rendered with
Jinja2, the template engine Home Assistant uses."""

from __future__ import annotations

import jinja2

from edge.outputs.mqtt.homeassistant import discovery_messages
from edge.outputs.mqtt.settings import MqttConfig


def render(template: str, event: dict[str, object]) -> str:
    return jinja2.Environment().from_string(template).render(value_json=event)


def sensors(channels: list[int | None]) -> dict[str, dict[str, object]]:
    messages = discovery_messages(
        MqttConfig(host="localhost", homeassistant=True),
        "soundwatch/box",
        "box",
        "flysong",
        "2026.11.22",
        ["mel-pulse", "mel-sine"],
        channels,
    )
    return {topic: config for topic, config in messages if "/binary_sensor/" in topic}


def test_one_sensor_per_label_follows_its_label_only() -> None:
    found = sensors([None])
    assert sorted(found) == [
        "homeassistant/binary_sensor/soundwatch_box/mel-pulse/config",
        "homeassistant/binary_sensor/soundwatch_box/mel-sine/config",
    ]
    config = found["homeassistant/binary_sensor/soundwatch_box/mel-pulse/config"]
    pulse = str(config["value_template"])
    assert render(pulse, {"label": "mel-pulse", "type": "start", "channel": None}) == "ON"
    assert render(pulse, {"label": "mel-pulse", "type": "end", "channel": None}) == "OFF"
    assert render(pulse, {"label": "mel-sine", "type": "start", "channel": None}) == ""


def test_with_a_detector_per_channel_each_channel_has_its_own_sensors() -> None:
    found = sensors([0, 1])
    assert len(found) == 4
    ch1 = found["homeassistant/binary_sensor/soundwatch_box/mel-pulse_ch1/config"]
    assert ch1["name"] == "mel-pulse ch1"
    assert ch1["unique_id"] == "soundwatch_box_mel-pulse_ch1"
    template = str(ch1["value_template"])
    assert render(template, {"label": "mel-pulse", "type": "start", "channel": 1}) == "ON"
    assert render(template, {"label": "mel-pulse", "type": "end", "channel": 1}) == "OFF"
    # Channel 0's pulse song, or channel 1's sine song, leave this sensor as it is.
    assert render(template, {"label": "mel-pulse", "type": "end", "channel": 0}) == ""
    assert render(template, {"label": "mel-sine", "type": "start", "channel": 1}) == ""


def test_the_daemon_announces_a_sensor_per_channel_only_with_channel_each() -> None:
    from edge.app import _detected_channels
    from edge.config import SourceConfig

    assert _detected_channels(SourceConfig(channels=2, channel="each")) == [0, 1]
    assert _detected_channels(SourceConfig(channels=2, channel=1)) == [None]
    assert _detected_channels(SourceConfig()) == [None]
