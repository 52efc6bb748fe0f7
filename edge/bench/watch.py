"""What `soundwatch bench --live` watches with: a process's CPU and memory from /proc, the
sink's monitor as a client hears it (parec, timestamped), MQTT `start` messages as they arrive,
and the daemon's first analysed second from its metrics endpoint. Every time here is
`time.monotonic()` of the bench process, except the metric's, which is Unix time.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import numpy as np

SAMPLE_SECONDS = 0.2  # how often /proc is read
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


MAIN_THREAD = "main"  # the process's first thread, named so (its OS name is the program's)


@dataclass(frozen=True)
class Sample:
    at: float  # monotonic, s
    cpu_seconds: float  # user + system, all threads
    rss_kib: int
    threads: dict[int, tuple[str, float]]  # thread id: (its OS name, user + system CPU s)


def read_proc(pid: int) -> tuple[float, int, int]:
    """(user + system CPU s, VmRSS KiB, VmHWM KiB) of a live process."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
    status: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                status[line[:5]] = int(line.split()[1])
    return cpu, status.get("VmRSS", 0), status.get("VmHWM", 0)


def read_threads(pid: int) -> dict[int, tuple[str, float]]:
    """Each live thread of a process: id, (OS name, user + system CPU s); MAIN_THREAD for the
    first. Threads that end while they are read are left out."""
    found: dict[int, tuple[str, float]] = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                name, rest = f.read().split(" (", 1)[1].rsplit(")", 1)
        except (OSError, IndexError, ValueError):
            continue
        fields = rest.split()
        cpu = (int(fields[11]) + int(fields[12])) / TICKS_PER_SECOND
        found[int(tid)] = (MAIN_THREAD if int(tid) == pid else name, cpu)
    return found


class ProcWatch:
    """Samples one process every SAMPLE_SECONDS on a thread of its own until `stop()`."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[Sample] = []
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-proc", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                cpu, rss, hwm = read_proc(self.pid)
                threads = read_threads(self.pid)
            except (OSError, IndexError, ValueError):
                return  # the process is gone
            self.samples.append(Sample(time.monotonic(), cpu, rss, threads))
            self.peak_kib = max(self.peak_kib, hwm)
            if self._stop.wait(SAMPLE_SECONDS):
                return

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def steady(self, begin: float, end: float) -> dict[str, Any]:
        """CPU % of one core and median RSS over [begin, end], the peak RSS so far, and
        `threads`: CPU % of a core per thread name (threads of one name added up; one started
        within the span counts from 0), most first."""
        inside = [s for s in self.samples if begin <= s.at <= end]
        if len(inside) < 2:
            raise RuntimeError(f"process {self.pid}: fewer than 2 samples in the steady part")
        first, last = inside[0], inside[-1]
        span = last.at - first.at
        threads: dict[str, float] = {}
        for tid, (name, cpu) in last.threads.items():
            spent = cpu - first.threads.get(tid, (name, 0.0))[1]
            threads[name] = threads.get(name, 0.0) + 100.0 * spent / span
        return {
            "cpu_percent": 100.0 * (last.cpu_seconds - first.cpu_seconds) / span,
            "rss_steady_mib": statistics.median(s.rss_kib for s in inside) / 1024,
            "rss_peak_mib": self.peak_kib / 1024,
            "steady_seconds": span,
            "threads": dict(sorted(threads.items(), key=lambda kv: -kv[1])),
        }


class Recorder:
    """Reads a `parec` of the sink's monitor on a thread: the audio, and for every read the
    monotonic time it arrived with the samples read so far."""

    def __init__(self, process: subprocess.Popen[bytes], rate_hz: int) -> None:
        self.process, self.rate_hz = process, rate_hz
        self.chunks: list[bytes] = []
        self.stamps: list[tuple[int, float]] = []  # (samples so far, monotonic)
        self._thread = threading.Thread(target=self._run, name="bench-parec", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        assert self.process.stdout is not None
        fd, total = self.process.stdout.fileno(), 0
        while True:
            data = os.read(fd, 1 << 14)
            if not data:
                return
            self.chunks.append(data)
            total += len(data)
            self.stamps.append((total // 4, time.monotonic()))

    def wait_for_audio(self, timeout_seconds: float) -> bool:
        """Until the monitor has delivered its first read (True) or the timeout (False)."""
        deadline = time.monotonic() + timeout_seconds
        while not self.stamps and time.monotonic() < deadline:
            time.sleep(0.02)
        return bool(self.stamps)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        self._thread.join(timeout=5)

    def audio(self) -> np.ndarray:
        data = b"".join(self.chunks)
        return np.frombuffer(data[: len(data) // 4 * 4], np.float32)

    def sample_time(self) -> tuple[float, float]:
        """(monotonic time of sample 0, samples per second): the earliest-arriving read sets
        the offset (the others waited in a pipe), the sink's clock the rate."""
        offset = min(at - n / self.rate_hz for n, at in self.stamps)
        return offset, float(self.rate_hz)

    def when_played(self, played: np.ndarray, near: float) -> float | None:
        """Monotonic time at which `played`'s first sample reached the monitor: where its first
        seconds correlate best with the recording, searched from `near` (a bit before playback
        began) for 5 s. None when the recording does not hold it."""
        from scipy.signal import correlate

        offset, rate = self.sample_time()
        audio = self.audio()
        start = max(0, round((near - offset) * rate))
        template = played[: round(1.5 * rate)]
        segment = audio[start : start + round(5.0 * rate) + len(template)]
        if len(segment) < len(template) or not np.any(template):
            return None
        scores = correlate(segment, template, mode="valid", method="fft")
        best = int(np.argmax(scores))
        heard = segment[best : best + len(template)]
        norm = float(np.linalg.norm(template) * np.linalg.norm(heard))
        if norm == 0 or scores[best] / norm < 0.5:  # not the played audio: silence or a mismatch
            return None
        return offset + (start + best) / rate


@dataclass
class StartMessages:
    """`start` messages on `<prefix>/<device>/events`, with their arrival times."""

    port: int
    topic: str
    arrivals: list[tuple[float, str]] = field(default_factory=list)  # (monotonic, label)
    _client: Any = None

    def start(self) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="soundwatch-bench-listener")

        def on_connect(c: Any, u: Any, f: Any, reason: Any, p: Any) -> None:
            c.subscribe(self.topic, qos=1)

        def on_message(c: Any, u: Any, message: Any) -> None:
            payload = json.loads(message.payload)
            if payload.get("type") == "start":
                self.arrivals.append((time.monotonic(), str(payload.get("label"))))

        client.on_connect, client.on_message = on_connect, on_message
        client.connect("127.0.0.1", self.port)
        client.loop_start()
        self._client = client

    def stop(self) -> None:
        if self._client is not None:
            self._client.loop_stop()
            self._client.disconnect()


METRIC = re.compile(r"^soundwatch_last_analysed_timestamp_seconds ([0-9.e+]+)$", re.M)


def first_analysed(
    port: int, process: subprocess.Popen[Any], timeout_seconds: float
) -> float | None:
    """Unix time of the daemon's first analysed second, from its metrics endpoint (the gauge
    holds the start time until then); None when the process ends or time runs out first."""
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + timeout_seconds
    before: float | None = None
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=1.0) as answer:
                found = METRIC.search(answer.read().decode())
        except (OSError, urllib.error.URLError):
            found = None
        if found is not None:
            value = float(found.group(1))
            if before is not None and value != before:
                return value
            before = value
        time.sleep(0.05)
    return None
