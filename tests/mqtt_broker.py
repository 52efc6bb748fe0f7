"""A real mosquitto for the tests, on a free 127.0.0.1 port, and a subscriber that records.

- `Mosquitto(folder, ...)`: writes its config; `start()` waits until it accepts connections;
  `stop()` ends it with SIGTERM, `freeze()` and `kill()` with SIGSTOP and SIGKILL. A
  `persistent` broker saves its sessions and queued messages at every change and loads them at
  the next `start()`, on the same port.
- `make_certificates(folder)`: a CA, a server certificate for 127.0.0.1 and localhost, a client
  certificate, and a second CA that signed nothing here, made with the openssl command.
- `Subscriber`: a paho client in the test process that records every message it gets.

mosquitto or openssl missing fails the test with the install command; it never skips.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

INSTALL = "apt-get install -y --no-install-recommends mosquitto mosquitto-clients openssl"


def require(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed; install with: {INSTALL}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Certificates:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # signed nothing here: trusting only it must fail


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(
        ["openssl", *map(str, args)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(map(str, args))}: {result.stderr}")


def make_certificates(
    folder: Path, server_names: str = "IP:127.0.0.1,DNS:localhost"
) -> Certificates:
    """A throw-away CA and the certificates it signs (EC P-256, valid one day)."""
    require("openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def key(name: str) -> Path:
        path = folder / f"{name}.key"
        _openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path)
        return path

    def ca(name: str) -> Path:
        cert = folder / f"{name}.crt"
        _openssl(
            "req",
            "-x509",
            "-new",
            "-key",
            key(name),
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-out",
            cert,
        )
        return cert

    def signed(name: str, extensions: str) -> tuple[Path, Path]:
        k, csr, cert = key(name), folder / f"{name}.csr", folder / f"{name}.crt"
        ext = folder / f"{name}.ext"
        ext.write_text(extensions)
        _openssl("req", "-new", "-key", k, "-subj", f"/CN={name}", "-out", csr)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", folder / "ca.crt", "-CAkey", folder / "ca.key",
            "-CAcreateserial", "-days", "1", "-extfile", ext, "-out", cert,
        )  # fmt: skip
        return cert, k

    the_ca = ca("ca")
    server = signed("server", f"subjectAltName={server_names}\nextendedKeyUsage=serverAuth\n")
    client = signed("client", "extendedKeyUsage=clientAuth\n")
    return Certificates(the_ca, *server, *client, ca("other-ca"))


class Mosquitto:
    """One mosquitto process on 127.0.0.1:`port`, configured by the arguments."""

    def __init__(
        self,
        folder: Path,
        *,
        tls: Certificates | None = None,
        require_certificate: bool = False,
        users: dict[str, str] | None = None,
        persistent: bool = False,
        options: Sequence[str] = (),
    ) -> None:
        """`options`: more mosquitto.conf lines, e.g. `message_size_limit 1000`."""
        require("mosquitto", "mosquitto_passwd")
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.host = "127.0.0.1"
        self.port = free_port()
        self.tls = tls
        self.log_path = folder / "mosquitto.log"
        self.process: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if users else 'true'}",
            f"persistence {'true' if persistent else 'false'}",
            f"persistence_location {folder}/",
            "max_queued_messages 100000",  # for an offline persistent subscriber
            # Saved at every change, so sessions outlive even a SIGKILLed broker.
            "autosave_on_changes true",
            "autosave_interval 1",
            "log_type all",
            *options,
        ]
        if os.geteuid() == 0:
            lines.append(f"user {getpass.getuser()}")  # else it switches to user mosquitto
        if tls is not None:
            lines += [
                f"cafile {tls.ca}",
                f"certfile {tls.server_cert}",
                f"keyfile {tls.server_key}",
            ]
            lines.append(f"require_certificate {'true' if require_certificate else 'false'}")
        if users:
            passwords = folder / "passwords"
            passwords.write_text("")
            for user, password in users.items():
                subprocess.run(
                    ["mosquitto_passwd", "-b", str(passwords), user, password], check=True
                )
            lines.append(f"password_file {passwords}")
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> None:
        assert self.process is None, "already running"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                ["mosquitto", "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"mosquitto exited with {self.process.returncode}:\n{self.log()}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"mosquitto did not listen within {timeout} s:\n{self.log()}")
                time.sleep(0.02)

    def stop(self) -> None:
        """SIGTERM: clients are cut off (last wills sent); a persistent broker saves sessions."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open but nothing is read or acknowledged."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL (frozen or not): what it had not processed is gone, like a power cut."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()
        self.process = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    """Subscribes to `topics` (QoS 1) and records what arrives, reconnecting after outages.

    `persistent`: a fixed client id and no clean session, so a persistent broker keeps the
    messages that arrive while this subscriber is cut off (the broker's outage, not ours).
    """

    def __init__(
        self,
        broker: Mosquitto,
        topics: Sequence[str],
        *,
        client_id: str = "",
        persistent: bool = False,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        assert client_id or not persistent, "a persistent session needs a client id"
        self.received: list[Received] = []
        self._changed = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not persistent
        )
        self.client.reconnect_delay_set(1, 1)
        if broker.tls is not None:
            self.client.tls_set(
                ca_certs=str(broker.tls.ca),
                certfile=str(broker.tls.client_cert),
                keyfile=str(broker.tls.client_key),
            )
        if username:
            self.client.username_pw_set(username, password)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *args: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise AssertionError(f"no SUBACK from the broker within 10 s:\n{broker.log()}")

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        with self._changed:
            self.received.append(
                Received(message.topic, bytes(message.payload), bool(message.retain))
            )
            self._changed.notify_all()

    def messages(self, suffix: str = "") -> list[Received]:
        """What arrived so far on topics ending with `suffix`."""
        with self._changed:
            return [m for m in self.received if m.topic.endswith(suffix)]

    def wait_for(
        self, ready: Callable[[list[Received]], bool], timeout: float, what: str
    ) -> list[Received]:
        """Wait until `ready(messages so far)`; fail after `timeout` s naming `what`."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not ready(list(self.received)):
                left = deadline - time.monotonic()
                if left <= 0:
                    topics = [m.topic for m in self.received]
                    raise AssertionError(f"{what}: not within {timeout} s; got {topics}")
                self._changed.wait(min(left, 0.2))
            return list(self.received)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
