"""Supervised threads (edge/threads.py): an error is logged with its traceback once, counted,
and the work started again after a backoff, with nothing mocked but the work itself."""

from __future__ import annotations

import logging
import os
import threading
import time

import pytest

from edge.threads import Guarded, Supervised, name_os_threads


def wait_until(done: threading.Event, seconds: float = 10.0) -> None:
    assert done.wait(seconds), f"not within {seconds} s"


def test_a_failing_thread_is_restarted_counted_and_logged_once_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = threading.Event()
    runs: list[str] = []
    fourth = threading.Event()
    seen_down: list[str] = []

    def work() -> None:
        runs.append(threading.current_thread().name)
        if len(runs) == 4:
            fourth.set()
            stop.wait()  # the fourth run works until stopped
            return
        if len(runs) == 3:
            seen_down.append(thread.down)  # running again: no longer down
        raise KeyError(f"run {len(runs)}")

    thread = Supervised("worker", work, stop, backoff_min_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="edge.threads"):
        thread.start()
        wait_until(fourth)
        stop.set()
        assert thread.join(5)
    assert runs == ["worker"] * 4
    assert thread.restarts == 3 and thread.down == "" and seen_down == [""]
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    again = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1 and errors[0].exc_info is not None  # the traceback, once
    assert "thread worker failed: KeyError: 'run 1'; restarting in 0.01 s" in errors[0].message
    assert [r.message for r in again] == [
        "thread worker failed again: KeyError: 'run 2'; restarting in 0.02 s",
        "thread worker failed again: KeyError: 'run 3'; restarting in 0.04 s",
    ]


def test_down_says_why_while_waiting_and_a_stop_ends_the_wait() -> None:
    stop = threading.Event()

    def work() -> None:
        raise OSError(28, "No space left on device")

    thread = Supervised("writer", work, stop, backoff_min_seconds=30)
    thread.start()
    deadline = time.monotonic() + 5
    while not thread.down and time.monotonic() < deadline:
        time.sleep(0.01)
    assert thread.down == "OSError: [Errno 28] No space left on device; restarting in 30 s"
    stop.set()
    assert thread.join(2)  # not after the 30 s backoff
    assert thread.restarts == 1


def test_work_that_returns_without_a_stop_is_restarted() -> None:
    stop = threading.Event()
    runs = []

    def work() -> None:
        runs.append(1)
        if len(runs) == 2:
            stop.set()

    thread = Supervised("quitter", work, stop, backoff_min_seconds=0.01)
    thread.start()
    assert thread.join(5)
    assert len(runs) == 2 and thread.restarts == 1


def test_a_guarded_callback_that_fails_is_counted_and_the_caller_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    guard = Guarded("network")
    calls = []

    def on_message(n: int) -> int:
        calls.append(n)
        if n % 2:
            raise ValueError(f"odd {n}")
        return n

    wrapped = guard(on_message)
    with caplog.at_level(logging.WARNING, logger="edge.threads"):
        results = [wrapped(n) for n in range(5)]
    assert results == [0, None, 2, None, 4] and calls == [0, 1, 2, 3, 4]
    assert guard.restarts == 2 and guard.down == ""
    (first, again) = caplog.records
    assert first.exc_info is not None and "on_message failed: ValueError: odd 1" in first.message
    assert again.exc_info is None and "on_message failed again: ValueError: odd 3" in again.message


def test_threads_started_after_name_os_threads_carry_their_names_in_the_os() -> None:
    name_os_threads()
    named, release = threading.Event(), threading.Event()
    comm: list[str] = []

    def work() -> None:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
            comm.append(f.read().strip())
        named.set()
        release.wait(10)

    thread = threading.Thread(target=work, name="a-rather-long-thread-name")
    thread.start()
    wait_until(named)
    release.set()
    thread.join(10)
    assert comm == ["a-rather-long-t"]  # the OS keeps 15 bytes
    assert threading.current_thread().name == "MainThread"
    with open(f"/proc/self/task/{os.getpid()}/comm") as f:
        assert f.read().strip() != "MainThread"  # the caller's own name is left alone
