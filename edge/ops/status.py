"""The daemon's heartbeat to systemd: READY once, a STATUS line now and then, WATCHDOG pings.

`Heartbeat.beat` runs on the processing thread between blocks (edge/app.py `App.tick`), so a
stuck loop or a hung model call stops the watchdog pings and systemd restarts the service
(edge/ops/notify.py says what each message means). The status text is built only when a line is
due (every `status_seconds`), never per block.

`StatusLine` words what the daemon is doing, from plain values: the device state, the stream,
the model, the events of the last hour and the parts that are down (a supervised thread
waiting to be started again after an error, edge/threads.py). A part that is down does not
stop the watchdog pings: analysis goes on, and the thread is restarted in the process; the
status line, the health check (edge/ops/health.py) and `soundwatch_thread_up` say so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from edge.ops.notify import Notifier

STATUS_SECONDS = 5.0  # how often the systemd status line is brought up to date, s


class Device(Protocol):
    """What the status line reads from the live source (edge/audio/live.py `LiveSource`)."""

    name: str
    connected: bool
    problem: str  # why it is not connected
    overload_seconds: float  # audio dropped by load shedding so far, s


class StatusLine:
    """The STATUS= text. Load shedding is mentioned when it grew since it was last mentioned."""

    def __init__(self) -> None:
        self._overload_seen = 0.0  # s of shed audio the last line mentioned

    def text(
        self,
        device: Device | None,
        stream: str | None,
        model: str,
        events_last_hour: int,
        down: Sequence[str] = (),
    ) -> str:
        """`stream`: `<name> at <rate> Hz`, None before the first; `model`: `name version`;
        `down`: the parts not working now, each in words."""
        if device is not None and not device.connected:
            text = f"waiting for input device {device.name}: {device.problem}"
        else:
            text = f"listening to {stream or 'nothing yet'}, model {model}"
            text += f"; {events_last_hour} events in the last hour"
        if (
            device is not None
            and device.connected
            and device.overload_seconds > self._overload_seen
        ):
            self._overload_seen = device.overload_seconds
            text += f"; too slow: {device.overload_seconds:.0f} s of audio dropped (overload)"
        for part in down:
            text += f"; {part}"
        return text


class Heartbeat:
    """READY when the daemon starts working, STATUS every `status_seconds` (when the text
    changed), WATCHDOG at the notifier's pace. `status` builds the current text."""

    def __init__(
        self,
        notifier: Notifier,
        status: Callable[[], str],
        status_seconds: float = STATUS_SECONDS,
    ) -> None:
        self.notifier = notifier
        self.status = status
        self.status_seconds = status_seconds
        self.ready = False
        self._next_status = 0.0  # time.monotonic() of the next STATUS line, s

    def beat(self, now: float, working: bool) -> None:
        """Between blocks; `now` is time.monotonic(), s. `working`: audio flows, or the
        daemon is waiting for an absent device (so a unit without its microphone still
        starts): the first such beat sends READY."""
        if not self.ready and working:
            self.ready = True
            self.notifier.ready(self.status())
        elif now >= self._next_status:
            self._next_status = now + self.status_seconds
            self.notifier.status(self.status())
        self.notifier.watchdog(now)

    def reloading(self) -> None:
        self.notifier.reloading()

    def reloaded(self) -> None:
        """A reload finished (taken or refused): READY again, with the status now."""
        self.notifier.ready(self.status())

    def stopping(self) -> None:
        self.notifier.stopping()

    def close(self) -> None:
        self.notifier.close()
