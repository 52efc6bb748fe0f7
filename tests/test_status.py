"""The heartbeat alone (edge/ops/status.py): what systemd hears, with time passed in, on a real
datagram socket; and the status line from plain values."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.ops.notify import Notifier
from edge.ops.status import Heartbeat, StatusLine


@dataclass
class Device:
    name: str = "pulse"
    connected: bool = True
    problem: str = ""
    overload_seconds: float = 0.0


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    yield path, sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out = []
    while True:
        try:
            out.append(sock.recv(4096).decode())
        except BlockingIOError:
            return out


def test_ready_once_working_status_every_interval_when_changed_watchdog_at_its_pace(
    listener: tuple[str, socket.socket],
) -> None:
    path, sock = listener
    text = ["waiting for input device pulse: unplugged"]
    heartbeat = Heartbeat(Notifier(path, watchdog_usec=2_000_000), lambda: text[0])
    heartbeat.beat(100.0, working=False)  # not working yet: a status line, no READY
    assert received(sock) == [f"STATUS={text[0]}", "WATCHDOG=1"]
    heartbeat.beat(100.5, working=True)
    assert received(sock) == [f"READY=1\nSTATUS={text[0]}"]  # watchdog: 1 s apart at most
    heartbeat.beat(101.0, working=True)
    assert received(sock) == ["WATCHDOG=1"]
    text[0] = "listening to pulse at 48000 Hz, model tone 2026.11.22; 0 events in the last hour"
    heartbeat.beat(104.9, working=True)  # the next status line is due at 105 s
    assert received(sock) == ["WATCHDOG=1"]
    heartbeat.beat(105.0, working=True)
    assert received(sock) == [f"STATUS={text[0]}"]
    heartbeat.beat(110.0, working=True)  # due again, but unchanged: not sent
    assert received(sock) == ["WATCHDOG=1"]
    heartbeat.reloaded()
    assert received(sock) == [f"READY=1\nSTATUS={text[0]}"]
    heartbeat.stopping()
    assert received(sock) == ["STOPPING=1\nSTATUS=stopping"]
    heartbeat.close()


def test_the_status_line_says_what_the_daemon_does_and_new_overload_once() -> None:
    line = StatusLine()
    away = Device(connected=False, problem="no audio for 5.0 s")
    assert line.text(away, None, "tone 1", 0) == (
        "waiting for input device pulse: no audio for 5.0 s"
    )
    assert line.text(None, None, "tone 1", 0) == (
        "listening to nothing yet, model tone 1; 0 events in the last hour"
    )
    device = Device(overload_seconds=12.4)
    plain = "listening to pulse at 48000 Hz, model tone 1; 3 events in the last hour"
    assert line.text(device, "pulse at 48000 Hz", "tone 1", 3) == (
        plain + "; too slow: 12 s of audio dropped (overload)"
    )
    assert line.text(device, "pulse at 48000 Hz", "tone 1", 3) == plain  # said once
    device.overload_seconds = 20.0
    assert line.text(device, "pulse at 48000 Hz", "tone 1", 3).endswith(
        "20 s of audio dropped (overload)"
    )
    down = ["mqtt-publisher down (OutboxError: locked; restarting in 2 s)"]
    assert line.text(device, "pulse at 48000 Hz", "tone 1", 3, down) == f"{plain}; {down[0]}"
    assert line.text(away, None, "tone 1", 0, down) == (
        f"waiting for input device pulse: no audio for 5.0 s; {down[0]}"
    )
