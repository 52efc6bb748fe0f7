"""Home Assistant discovery: each sensor follows its own label (and channel), rendered with
Jinja2, the template engine Home Assistant uses; against the real broker, entities of labels a
model no longer has are removed, after a reload and after a restart with another model."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import jinja2

from edge.outputs.mqtt.homeassistant import discovery_messages
from edge.outputs.mqtt.messages import status_payload
from edge.outputs.mqtt.settings import MqttConfig
from edge.outputs.mqtt.sink import MqttSink
from edge.records import Event, StreamInfo
from tests.mqtt_broker import Mosquitto, Received, Subscriber


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


def test_one_sensor_per_label_reads_its_own_state_topic() -> None:
    found = sensors([None])
    assert sorted(found) == [
        "homeassistant/binary_sensor/soundwatch_box/mel-pulse/config",
        "homeassistant/binary_sensor/soundwatch_box/mel-sine/config",
    ]
    config = found["homeassistant/binary_sensor/soundwatch_box/mel-pulse/config"]
    assert config["state_topic"] == "soundwatch/box/state/mel-pulse"
    assert (config["payload_on"], config["payload_off"]) == ("ON", "OFF")
    assert "value_template" not in config  # the payload is the state


def test_with_a_detector_per_channel_each_channel_has_its_own_sensors() -> None:
    found = sensors([0, 1])
    assert len(found) == 4
    ch1 = found["homeassistant/binary_sensor/soundwatch_box/mel-pulse_ch1/config"]
    assert ch1["name"] == "mel-pulse ch1"
    assert ch1["unique_id"] == "soundwatch_box_mel-pulse_ch1"
    assert ch1["state_topic"] == "soundwatch/box/state/mel-pulse_ch1"


def test_the_daemon_announces_a_sensor_per_channel_only_with_channel_each() -> None:
    from edge.config import SourceConfig
    from edge.sources import detected_channels

    assert detected_channels(SourceConfig(channels=2, channel="each")) == [0, 1]
    assert detected_channels(SourceConfig(channels=2, channel=1)) == [None]
    assert detected_channels(SourceConfig()) == [None]


def test_every_entity_has_an_origin_and_goes_unavailable_with_the_last_will() -> None:
    """After a crash the broker publishes the last will (offline, `since` null): every entity's
    availability template reads it as not available, so no sensor is left showing ON."""
    messages = discovery_messages(
        MqttConfig(host="localhost", homeassistant=True),
        "soundwatch/box",
        "box",
        "flysong",
        "1",
        ["mel-pulse"],
        [None],
        "dBFS",
    )
    will = json.loads(status_payload("offline", "box", "flysong", "1", None))
    online = json.loads(status_payload("online", "box", "flysong", "1", "2026-06-01T00:00:00.000Z"))
    assert len(messages) == 3  # pulse, last detection, sound level
    for _, config in messages:
        assert config["origin"]["name"] == "soundwatch"
        assert config["availability_topic"] == "soundwatch/box/status"
        template = str(config["availability_template"])
        assert render(template, will) == config["payload_not_available"] == "offline"
        assert render(template, online) == config["payload_available"] == "online"


def test_a_sound_level_sensor_only_with_levels_on_one_per_channel() -> None:
    def levels(
        unit: str | None, channels: list[int | None], on: bool = True
    ) -> list[dict[str, object]]:
        messages = discovery_messages(
            MqttConfig(host="localhost", homeassistant=True, levels=on),
            "soundwatch/box",
            "box",
            "flysong",
            "1",
            ["mel-pulse"],
            channels,
            unit,
        )
        return [config for topic, config in messages if "/sound_level" in topic]

    assert levels(None, [None]) == []  # levels off in the daemon
    assert levels("dBFS", [None], on=False) == []  # not published over MQTT
    (one,) = levels("dBFS", [None])
    assert (one["state_topic"], one["unit_of_measurement"]) == ("soundwatch/box/levels", "dBFS")
    assert one["expire_after"] == 10 and one["state_class"] == "measurement"
    assert render(str(one["value_template"]), {"dbfs": -31.5, "unit": "dBFS"}) == "-31.5"
    (calibrated,) = levels("dB re 20 µPa", [None])
    assert render(str(calibrated["value_template"]), {"db": 54.25}) == "54.25"
    _, second = levels("dBFS", [0, 1])
    assert second["unique_id"] == "soundwatch_box_sound_level_ch1"
    assert render(str(second["value_template"]), {"dbfs": -20.0, "channel": 1}) == "-20.0"
    assert render(str(second["value_template"]), {"dbfs": -20.0, "channel": 0}) == ""


def retained(broker: Mosquitto, topics: str) -> list[Received]:
    """The retained messages on `topics` now: what a Home Assistant starting now would read."""
    subscriber = Subscriber(broker, [topics, "probe/done"])
    try:
        # The broker sends the retained messages as it takes the subscription, so a message
        # this client publishes after its SUBACK comes back after all of them.
        subscriber.client.publish("probe/done", b"1", qos=1)
        subscriber.wait_for(lambda ms: bool(ms) and ms[-1].topic == "probe/done", 5, "the marker")
        got = subscriber.messages()
    finally:
        subscriber.close()
    return [m for m in got if m.retain]


def retained_configs(broker: Mosquitto) -> dict[str, str]:
    """The retained, non-empty discovery configs."""
    got = retained(broker, "homeassistant/#")
    return {m.topic.split("/")[3]: m.topic for m in got if m.payload}


def settled_states(broker: Mosquitto, expected: dict[str, bytes]) -> dict[str, bytes]:
    """The retained sensor states once they equal `expected`, or what they are after 5 s."""
    deadline = time.monotonic() + 5
    while True:
        got = {m.topic: m.payload for m in retained(broker, "soundwatch/box/state/#")}
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def settled_configs(broker: Mosquitto, expected: list[str]) -> list[str]:
    """The retained configs once they equal `expected`, or what they are after 5 s (the
    daemon's publishes travel through paho's network thread, so may lag a moment)."""
    deadline = time.monotonic() + 5
    while True:
        got = sorted(retained_configs(broker))
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def start_sink(
    broker: Mosquitto, state: Path, labels: list[str], channels: list[int | None] | None = None
) -> MqttSink:
    config = MqttConfig(host=broker.host, port=broker.port, homeassistant=True)
    sink = MqttSink(
        config,
        device="box",
        model="m",
        model_version="1",
        labels=labels,
        outbox_path=state / "mqtt-outbox.sqlite3",
        resolve=Path,
        channels=channels,
    )
    sink.begin(StreamInfo("test", labels, None, 16000))
    sink.start()
    return sink


def wait_connected(sink: MqttSink) -> None:
    deadline = time.monotonic() + 10
    while not sink.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    assert sink.connected


def test_entities_of_labels_gone_from_the_model_are_removed(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Run 1 announces a and b; run 2 (another model, same state folder) has only a, then a
    reload brings c. b's entity must go (an empty retained config), at once after the restart
    and without waiting for a reconnect after the reload."""
    first = start_sink(broker, tmp_path, ["a", "b"])
    wait_connected(first)
    first.close()
    assert settled_configs(broker, ["a", "b", "last_detection"]) == ["a", "b", "last_detection"]

    second = start_sink(broker, tmp_path, ["a"])
    try:
        wait_connected(second)
        after_restart = settled_configs(broker, ["a", "last_detection"])
        second.begin(StreamInfo("test", ["a", "c"], None, 16000))  # a reload
        after_reload = settled_configs(broker, ["a", "c", "last_detection"])
        second.begin(StreamInfo("test", ["c"], None, 16000))
        after_second_reload = settled_configs(broker, ["c", "last_detection"])
    finally:
        second.close()
    assert after_restart == ["a", "last_detection"]
    assert after_reload == ["a", "c", "last_detection"]
    assert after_second_reload == ["c", "last_detection"]


def event(kind: Literal["start", "end"], label: str, channel: int | None) -> Event:
    return Event("e1", kind, label, 1.0, None, None, None, 0.9, 0.9, 0.5, "test", channel)


def test_a_sensor_on_when_the_daemon_died_is_off_once_it_is_back(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """Run 1 starts an event on channel 1 and dies without its end (no offline, no close);
    run 2 has heard nothing yet: at its connect every sensor's retained state is OFF, so Home
    Assistant does not show the old ON until that label's next end, which may never come."""
    first = start_sink(broker, tmp_path, ["a", "b"], [0, 1])
    wait_connected(first)
    first.event(event("start", "a", 1))
    on = settled_states(
        broker,
        {
            "soundwatch/box/state/a_ch0": b"OFF",
            "soundwatch/box/state/a_ch1": b"ON",
            "soundwatch/box/state/b_ch0": b"OFF",
            "soundwatch/box/state/b_ch1": b"OFF",
        },
    )
    # The crash: paho's thread stops and the socket closes mid-event, with no DISCONNECT.
    first.client.loop_stop()
    first.publisher.stopping.set()
    first.publisher.wake()
    assert first.publisher.thread.join(5)
    sock = first.client.socket()
    assert sock is not None
    sock.close()
    first.outbox.close()

    second = start_sink(broker, tmp_path, ["a", "b"], [0, 1])
    try:
        wait_connected(second)
        after = settled_states(broker, dict.fromkeys(on, b"OFF"))
        second.event(event("start", "b", 0))
        later = settled_states(broker, {**after, "soundwatch/box/state/b_ch0": b"ON"})
        second.event(event("end", "b", 0))
        ended = settled_states(broker, after)
    finally:
        second.close()
    assert on["soundwatch/box/state/a_ch1"] == b"ON"
    assert after == dict.fromkeys(on, b"OFF")
    assert later["soundwatch/box/state/b_ch0"] == b"ON"
    assert ended == after
