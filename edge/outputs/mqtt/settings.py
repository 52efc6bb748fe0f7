"""The `mqtt:` config section: the broker, credentials, TLS and topics.

It lives beside the MQTT code that reads it; edge/config.py assembles it into the whole config.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge.schema import field


@dataclass(frozen=True)
class MqttConfig:
    """The broker and topics (edge/outputs/mqtt/sink.py); no `host`, no MQTT.

    The password is never here."""

    host: str | None = field(None, help="broker host name or address (null: no MQTT)")
    port: int | None = field(
        None, ge=1, le=65535, help="broker port (null: 1883, or 8883 with tls)"
    )
    protocol: str = field("3.1.1", help="MQTT version: 3.1.1 or 5")
    client_id: str | None = field(None, help="client id (null: soundwatch-{device id})")
    topic_prefix: str = field("soundwatch", help="topics are {topic_prefix}/{device id}/...")
    keepalive_seconds: int = field(
        30, ge=1, le=65535, help="ping interval, s; silence for 1.5x: last will"
    )
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
        100000,
        ge=1,
        le=10**9,
        help="most unsent event messages kept; beyond, the oldest are dropped and counted",
    )
    flush_seconds: float = field(
        3.0, ge=0, le=3600, help="at shutdown, wait this long for unsent events, s"
    )
    reconnect_min_seconds: int = field(
        1, ge=1, le=3600, help="first reconnect delay, s; doubles per failure"
    )
    reconnect_max_seconds: int = field(60, ge=1, le=86400, help="longest reconnect delay, s")
    homeassistant: bool = field(False, help="announce sensors by Home Assistant MQTT discovery")
    homeassistant_prefix: str = field("homeassistant", help="Home Assistant's discovery prefix")

    @property
    def port_or_default(self) -> int:
        return self.port or (8883 if self.tls else 1883)

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if self.protocol not in ("3.1.1", "5"):
            out.append(("protocol", f"must be 3.1.1 or 5, got {self.protocol!r}"))
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
