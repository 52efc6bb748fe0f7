"""Connecting to an MQTT broker: the paho client, TLS, credentials, and errors in words.

Used by the MQTT sink (edge/outputs/mqtt/sink.py) and by `soundwatch check --connect`
(`probe`). Every way a connection fails (refused, TLS, wrong password, no answer) becomes a
sentence a user can act on.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import ssl
import stat
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge.errors import ConfigError, SoundwatchError
from edge.outputs.mqtt.settings import MqttConfig

TOPIC_CHARS = re.compile(r"[+#/\x00]")


class _QuietRetries(logging.Filter):
    """paho 2.2 logs an ERROR at every failed reconnect; we log the reason once, in words."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Client is not connected")


logger = logging.getLogger(__name__)
PAHO_LOGGER = logging.getLogger("edge.outputs.mqtt.broker.paho")
PAHO_LOGGER.addFilter(_QuietRetries())


class MqttError(SoundwatchError):
    """The broker cannot be reached or refuses us; the message says why in words."""


Resolve = Callable[[str], Path]


def read_password(config: MqttConfig, resolve: Resolve) -> str | None:
    """The password from the environment variable or the file the config names (never YAML)."""
    if config.password_env:
        value = os.environ.get(config.password_env)
        if value is None:
            raise ConfigError(
                f"mqtt.password_env: environment variable {config.password_env} is not set"
            )
        return value
    if config.password_file:
        path = resolve(os.path.expandvars(config.password_file))
        try:
            mode = path.stat().st_mode
            if mode & stat.S_IROTH:  # as ssh does for keys; a warning, as Docker's secrets are 0444
                logger.warning(
                    "mqtt.password_file: %s is readable by every user of this machine (mode %s);"
                    " chmod 600 it (or 640, with the group soundwatch runs as)",
                    path,
                    oct(stat.S_IMODE(mode)),
                )
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc)
            raise ConfigError(f"mqtt.password_file: cannot read {path} ({reason})") from None
    return None


def make_client(config: MqttConfig, client_id: str, resolve: Resolve) -> mqtt.Client:
    """A paho client with the protocol, TLS and credentials the config asks for."""
    v5 = config.protocol == "5"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        # No broker-side session needed: unsent events live in our outbox, not the broker.
        clean_session=None if v5 else True,
    )
    if config.tls:
        ca, cert, key = (_tls_file(config, name, resolve) for name in TLS_FILES)
        try:
            client.tls_set(ca_certs=ca, certfile=cert, keyfile=key, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"mqtt: cannot load the TLS files ({exc})") from None
        client.tls_insecure_set(not config.tls_check_hostname)
    if config.username:
        client.username_pw_set(config.username, read_password(config, resolve))
    client.reconnect_delay_set(config.reconnect_min_seconds, config.reconnect_max_seconds)
    client.enable_logger(PAHO_LOGGER)
    return client


TLS_FILES = ("ca_file", "cert_file", "key_file")


def _tls_file(config: MqttConfig, name: str, resolve: Resolve) -> str | None:
    value = getattr(config, name)
    if value is None:
        return None
    path = resolve(value)
    if not path.is_file():
        raise ConfigError(f"mqtt.{name}: {path}: no such file")
    return str(path)


def connect_error_words(exc: BaseException | None) -> str:
    """Why a TCP or TLS connect failed, for a log line."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the broker's certificate was refused ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake failed ({exc.reason or exc})"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused (is a broker listening on that port?)"
    if isinstance(exc, socket.gaierror):
        return f"host name not found ({exc.strerror})"
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "no answer (host down or unreachable?)"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc) if exc else "unknown error"


def refusal_words(reason: ReasonCode) -> str:
    """Why the broker refused a connection (its CONNACK), for a log line."""
    name = reason.getName()
    if name in ("Bad user name or password", "Not authorized"):
        return f"{name.lower()} (wrong mqtt.username or password?)"
    return name.lower()


def disconnect_words(reason: ReasonCode) -> str:
    """Why a connection ended; MQTT 3.1.1 has no reason, so paho says "Unspecified error"."""
    name = reason.getName()
    return "closed by the broker or the network" if name == "Unspecified error" else name.lower()


def closed_words(config: MqttConfig) -> str:
    """The connection closed before the broker answered: what usually causes that."""
    if not config.tls:
        hint = "does the port expect TLS? set mqtt.tls: true"
    elif not config.cert_file:
        hint = "does the broker require a client certificate? set mqtt.cert_file"
    else:
        hint = "was the client certificate refused?"
    return f"closed the connection before answering ({hint})"


def topic_root(config: MqttConfig, device: str) -> str:
    if TOPIC_CHARS.search(device):
        raise ConfigError(
            f"output.device_id: {device!r} cannot be part of an MQTT topic (/, + or #)"
        )
    return f"{config.topic_prefix}/{device}"


def probe(config: MqttConfig, resolve: Resolve, device: str, timeout: float = 5.0) -> str:
    """Connect once and disconnect (`soundwatch check --connect`); MqttError says why not."""
    assert config.host is not None
    where = f"{config.host}:{config.port_or_default}"
    client_id = f"{config.client_id or f'soundwatch-{device}'}-check"
    client = make_client(config, client_id, resolve)
    answer: list[ReasonCode] = []
    done = threading.Event()

    def on_connect(c: mqtt.Client, u: Any, f: Any, reason: ReasonCode, p: Any) -> None:
        answer.append(reason)
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = lambda *args: done.set()
    client.disable_logger()  # paho's socket errors, unformatted: the error below says it
    try:
        client.connect(config.host, config.port_or_default, config.keepalive_seconds)
    except (OSError, ValueError) as exc:
        raise MqttError(f"mqtt: cannot connect to {where}: {connect_error_words(exc)}") from None
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    if not answer and done.is_set():
        raise MqttError(f"mqtt: {where} {closed_words(config)}")
    if not answer:
        raise MqttError(f"mqtt: {where} did not answer the MQTT connect within {timeout:g} s")
    if answer[0].is_failure:
        raise MqttError(f"mqtt: {where} refused the connection: {refusal_words(answer[0])}")
    tls = ", TLS" if config.tls else ""
    return f"mqtt: connected to {where} (MQTT {config.protocol}{tls})"
