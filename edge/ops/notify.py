"""systemd's notify protocol, spoken directly: readiness, watchdog, status lines, stopping.

With `Type=notify`, systemd passes a datagram socket in `$NOTIFY_SOCKET` (a path, or `@name`
for Linux's abstract namespace) and reads newline-separated `KEY=value` assignments from it
(sd_notify(3)). With `WatchdogSec=`, it passes `$WATCHDOG_USEC` and restarts the service when no
`WATCHDOG=1` arrives for that long; we send one every half of it, as sd_watchdog_enabled(3)
advises. Nothing here ever raises: without the socket (not under systemd) every call does
nothing, and a send that fails is logged once and dropped.

What the daemon sends, and when (edge/app.py):
- `READY=1` once audio flows, or once it is clear the input device is absent and the daemon is
  waiting for it (so a unit whose microphone is unplugged at boot still starts);
- `WATCHDOG=1` from the processing loop, between blocks: a hung model call or a stuck loop
  stops the pings and systemd restarts the service. Waiting for a lost device is not a hang:
  that loop delivers gap seconds and so keeps the pings going;
- `STATUS=...` what it is doing (listening, waiting for the device, shedding load);
- `RELOADING=1` (with `MONOTONIC_USEC`) on SIGHUP, then `READY=1` when the reload is done;
- `STOPPING=1` when shutdown begins.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

logger = logging.getLogger(__name__)


class Notifier:
    """Messages to systemd on `address` (None: not under systemd, nothing is sent)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address or None
        self.watchdog_interval_seconds: float | None = None
        """How often to send WATCHDOG=1: half of WATCHDOG_USEC; None without a watchdog."""
        if self.address and watchdog_usec and watchdog_usec > 0:
            self.watchdog_interval_seconds = watchdog_usec / 1e6 / 2
        self._target: str | bytes | None = None
        if self.address:
            if self.address.startswith("@"):  # abstract namespace: a leading NUL byte
                self._target = b"\0" + self.address[1:].encode()
            elif self.address.startswith("/"):
                self._target = self.address
            else:
                logger.warning("NOTIFY_SOCKET %r: not a socket path; not notifying", self.address)
        self._socket: socket.socket | None = None
        self._last_watchdog = -float("inf")
        self._last_status = ""
        self._failed = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """From $NOTIFY_SOCKET and $WATCHDOG_USEC (ignored when $WATCHDOG_PID names another
        process: the watchdog is then meant for it)."""
        env = os.environ if environ is None else environ
        usec: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if env.get("WATCHDOG_USEC", "").isdigit() and (not pid or pid == str(os.getpid())):
            usec = int(env["WATCHDOG_USEC"])
        return cls(env.get("NOTIFY_SOCKET"), usec)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    def send(self, *assignments: str) -> bool:
        """One datagram of `KEY=value` lines; True when it was sent."""
        if self._target is None:
            return False
        message = "\n".join(assignments).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)  # a full receive queue drops, never waits
            self._socket.sendto(message, self._target)
        except OSError as exc:
            if not self._failed:
                logger.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str) -> None:
        self._last_status = status
        self.send("READY=1", f"STATUS={status}")

    def status(self, status: str) -> None:
        """A STATUS= line, sent only when it changed."""
        if status != self._last_status:
            self._last_status = status
            self.send(f"STATUS={status}")

    def reloading(self) -> None:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self, now: float) -> None:
        """WATCHDOG=1 if half the watchdog interval has passed since the last; `now` is
        time.monotonic(). Cheap enough to call for every block."""
        interval = self.watchdog_interval_seconds
        if interval is None or now - self._last_watchdog < interval:
            return
        self._last_watchdog = now
        self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
