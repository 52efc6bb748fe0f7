"""systemd's notify protocol, read from a datagram socket the test creates: what the Notifier
sends, and what the daemon (a subprocess on a real PulseAudio device) tells systemd."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge.ops.notify import Notifier
from tests.audio import tone_events, write_wav
from tests.conftest import Daemon, PulseServer, daemon_config


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket in Linux's abstract namespace: (its NOTIFY_SOCKET name, socket)."""
    name = f"soundwatch-test-{os.getpid()}-{time.monotonic_ns()}"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind("\0" + name)
    server.settimeout(2)
    yield "@" + name, server
    server.close()


def received(server: socket.socket) -> list[str]:
    """Every datagram waiting on `server`, without waiting for more."""
    out = []
    server.setblocking(False)
    try:
        while True:
            out.append(server.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        server.settimeout(2)
    return out


def test_the_notifier_speaks_the_protocol(abstract_socket: tuple[str, socket.socket]) -> None:
    address, server = abstract_socket
    notifier = Notifier(address, watchdog_usec=2_000_000)
    assert notifier.enabled and notifier.watchdog_interval_seconds == 1.0
    notifier.ready("listening to pulse")
    notifier.status("listening to pulse")  # unchanged: not sent again
    notifier.status("waiting for input device pulse")
    notifier.watchdog(100.0)
    notifier.watchdog(100.5)  # within half the watchdog time: not sent
    notifier.watchdog(101.0)
    notifier.reloading()
    notifier.stopping()
    got = received(server)
    assert got[:4] == [
        "READY=1\nSTATUS=listening to pulse",
        "STATUS=waiting for input device pulse",
        "WATCHDOG=1",
        "WATCHDOG=1",
    ]
    reloading, usec = got[4].split("\n")
    assert reloading == "RELOADING=1" and usec.startswith("MONOTONIC_USEC=")
    now_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert 0 <= now_usec - int(usec.split("=")[1]) < 5_000_000
    assert got[5:] == ["STOPPING=1\nSTATUS=stopping"]
    notifier.close()


def test_the_environment_decides_what_is_sent(tmp_path: Path) -> None:
    silent = Notifier.from_environment({})
    assert not silent.enabled and silent.watchdog_interval_seconds is None
    assert silent.send("READY=1") is False

    path = str(tmp_path / "notify")
    mine = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier.from_environment(mine).watchdog_interval_seconds == 15.0
    # WATCHDOG_PID naming another process: the watchdog is not ours to feed.
    theirs = {**mine, "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier.from_environment(theirs).watchdog_interval_seconds is None
    assert not Notifier.from_environment({"NOTIFY_SOCKET": "relative/path"}).enabled
    # Nobody listening on the path: sending fails quietly (logged once), never raises.
    nobody = Notifier.from_environment(mine)
    assert nobody.send("READY=1") is False
    assert nobody.send("WATCHDOG=1") is False


class Recorder:
    """Datagrams arriving on a path socket, with the time each came (a background thread)."""

    def __init__(self, path: Path) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(str(path))
        self.socket.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notify-recorder", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, text: str, timeout: float = 30.0) -> float:
        """Until a message containing `text` came: when it came."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, message in list(self.messages):
                if text in message:
                    return at
            time.sleep(0.05)
        raise AssertionError(f"no {text!r} within {timeout} s; got {self.messages}")

    def watchdogs(self, since: float, until: float) -> list[float]:
        return [at for at, m in self.messages if m == "WATCHDOG=1" and since <= at <= until]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.socket.close()


def test_the_daemon_tells_systemd_ready_watchdog_status_reloading_stopping(
    slow_bundle: Path, tmp_path: Path, pulse_server: PulseServer
) -> None:
    """Under a 1 s watchdog: READY once audio flows, WATCHDOG=1 every ~0.5 s from the
    processing loop, and none while that loop is stuck in a 1.5 s model call (a loud tone
    makes the slow bundle that slow): pings come from the loop, not from a timer."""
    loud = tmp_path / "loud.wav"
    write_wav(loud, tone_events(48000, 3.0, [(0.5, 2.5, 1000.0)], tone_amplitude=0.3), 48000)
    recorder = Recorder(tmp_path / "notify")
    env = {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "1000000"}
    source = "{kind: device, device: pulse, buffer_seconds: 10, max_lag_seconds: 5}"
    try:
        with Daemon(tmp_path, daemon_config(tmp_path, slow_bundle, source), env=env) as daemon:
            ready = recorder.wait_for("READY=1")
            time.sleep(3.0)
            quiet_until = time.monotonic()
            pulse_server.play(loud)
            time.sleep(2.0)
            daemon.signal(signal.SIGHUP)  # same config: reloads the same model
            recorder.wait_for("RELOADING=1")
            daemon.wait_for_log("reload: model slow-tone", count=2)
            code, _ = daemon.stop()
    finally:
        recorder.close()
    assert code == 0, daemon.log()
    messages = [m for _, m in recorder.messages]
    first = messages[0]
    assert first.startswith("READY=1\nSTATUS=listening to pulse at ") and "slow-tone" in first

    # Quiet: the loop runs freely, a ping every half second (3 s: 5 to 7 of them).
    quiet = recorder.watchdogs(ready, quiet_until)
    assert 5 <= len(quiet) <= 7, quiet
    # Loud: the loop spends 1.5 s in each model call and pings only between calls.
    loud_pings = recorder.watchdogs(quiet_until, quiet_until + 4.0)
    pauses = [b - a for a, b in itertools.pairwise(loud_pings)]
    assert max(pauses) >= 1.2, pauses

    reloading = next(i for i, m in enumerate(messages) if m.startswith("RELOADING=1\n"))
    assert "MONOTONIC_USEC=" in messages[reloading]
    assert any(m.startswith("READY=1\n") for m in messages[reloading + 1 :])
    assert messages[-1] == "STOPPING=1\nSTATUS=stopping"
