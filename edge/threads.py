"""Supervised threads: a long-lived thread that an unexpected error cannot end in silence.

`Supervised(name, work, stop)` runs `work()` on a thread of that name until `stop` is set.
Should `work` raise (or return before the stop), the error is logged, with its traceback the
first time that kind of error is seen and in one line after that, counted in `restarts`, and
`work` runs again after a backoff: 1 s, doubling to 60 s, back to 1 s once a run lasted a
minute. Meanwhile `down` says why the thread is not working (the status line, the health check
and `soundwatch_thread_up` read it); `""` while it works.

`work` must keep its state in its object, not its frame: a restart calls it again from the
top. Every thread soundwatch starts is one of these (edge/ops/metrics.py lists them as
`soundwatch_thread_restarts_total{thread}`).

`Guarded(name)` does the same for callbacks on a thread that someone else started and runs
(paho's network thread): an error in one is logged the same way and counted in `restarts`, and
that callback is abandoned, so the thread goes on (it is never `down`). Without it, an error in
a paho callback ends paho's thread: no more reconnects, ever.

`name_os_threads()` has every thread started after it carry its Python name in the OS as well
(Python 3.11 names only its own object), so `top -H`, py-spy and /proc/PID/task/*/comm tell
the publisher from paho's thread and the metrics server; `name_os_thread(name)` names the
calling thread, for a thread Python did not start (PortAudio's callback).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger(__name__)

BACKOFF_MIN_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0
HEALTHY_SECONDS = 60.0  # a run this long resets the backoff
PR_SET_NAME = 15  # prctl(2): the calling thread's name, 15 bytes and a NUL at most


class Supervised:
    """A named daemon thread running `work()` until `stop`, restarted after any error."""

    def __init__(
        self,
        name: str,
        work: Callable[[], None],
        stop: threading.Event,
        *,
        backoff_min_seconds: float = BACKOFF_MIN_SECONDS,
        backoff_max_seconds: float = BACKOFF_MAX_SECONDS,
    ) -> None:
        self.name, self.work, self.stop = name, work, stop
        self.backoff_min_seconds = backoff_min_seconds
        self.backoff_max_seconds = backoff_max_seconds
        self.restarts = 0  # times `work` was started again after an error
        self.down = ""  # why the thread is not working now ("" while it works)
        self._seen: set[tuple[str, str]] = set()  # (error type, where) logged with a traceback
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` s for the thread to end (after `stop`); False if it did not."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        failures = 0  # in a row, each run shorter than HEALTHY_SECONDS
        while not self.stop.is_set():
            began = time.monotonic()
            error: Exception | None = None
            try:
                self.work()
                if self.stop.is_set():
                    return
                problem, first = "it returned without being stopped", True
            except Exception as exc:
                error = exc
                problem, first = self._note(exc)
            failures = 1 if time.monotonic() - began >= HEALTHY_SECONDS else failures + 1
            delay = min(self.backoff_min_seconds * 2 ** (failures - 1), self.backoff_max_seconds)
            self.down = f"{problem}; restarting in {delay:g} s"
            self.restarts += 1
            if first:
                logger.error("thread %s failed: %s", self.name, self.down, exc_info=error)
            else:
                logger.warning("thread %s failed again: %s", self.name, self.down)
            if self.stop.wait(delay):
                return
            self.down = ""

    def _note(self, exc: Exception) -> tuple[str, bool]:
        return _note(self._seen, exc)


class Guarded:
    """Wraps callbacks that run on someone else's thread: `client.on_x = guard(self._on_x)`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.restarts = 0  # callbacks abandoned after an error
        self.down = ""  # always: the thread itself goes on
        self._seen: set[tuple[str, str]] = set()

    def __call__(self, callback: F) -> F:
        @wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as exc:
                problem, first = _note(self._seen, exc)
                self.restarts += 1
                if first:
                    logger.error(
                        "thread %s: %s failed: %s; it goes on",
                        self.name,
                        callback.__name__,
                        problem,
                        exc_info=exc,
                    )
                else:
                    logger.warning(
                        "thread %s: %s failed again: %s", self.name, callback.__name__, problem
                    )
                return None

        return guarded  # type: ignore[return-value]


def _note(seen: set[tuple[str, str]], exc: Exception) -> tuple[str, bool]:
    """The error in words, and whether this kind is new to `seen` (to log its traceback)."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    kind = (type(exc).__name__, where)
    first = kind not in seen
    seen.add(kind)
    return f"{type(exc).__name__}: {exc}", first


def name_os_threads() -> None:
    """Name every thread `threading` starts from now on in the OS too (see the module
    docstring). The hook runs once in each new thread, before its target, and removes itself."""
    threading.setprofile(_name_and_forget)


def _name_and_forget(frame: Any, event: str, arg: Any) -> None:
    sys.setprofile(None)
    name_os_thread(threading.current_thread().name)


def name_os_thread(name: str) -> None:
    """The calling thread's OS name (cut to 15 bytes); nothing where prctl(2) is missing."""
    prctl = _prctl()
    if prctl is not None:
        prctl(PR_SET_NAME, name.encode()[:15], 0, 0, 0)


_libc: list[Any] = []  # [prctl or None], looked up once


def _prctl() -> Any:
    if not _libc:
        linux = sys.platform.startswith("linux")  # the process's own symbols hold libc's
        _libc.append(getattr(ctypes.CDLL(None), "prctl", None) if linux else None)
    return _libc[0]
