"""What `soundwatch bench --live` runs against: a private PulseAudio server with a null sink
(its monitor is the capture device) and, when installed, a private mosquitto.

Both run in the foreground as children of the bench, in a temporary folder, and are stopped
by their pid when it ends. The client side needs only `Sandbox.env` (PULSE_SERVER and a
cookie path, so libpulse never touches the real HOME).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from edge.errors import SoundwatchError

PULSE_INSTALL = (
    "apt-get install -y --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins"
)
SINK = "benchsink"
SINK_RATE_HZ = 48000  # a common device rate; the daemon resamples it to the bundle's
START_TIMEOUT_SECONDS = 15.0


class SandboxError(SoundwatchError):
    """PulseAudio is missing or did not start."""


@dataclass(frozen=True)
class Sandbox:
    """A running PulseAudio (and maybe mosquitto). `mqtt_port` is None without mosquitto."""

    folder: Path
    env: dict[str, str]
    mqtt_port: int | None

    def client_env(self) -> dict[str, str]:
        """os.environ with this PulseAudio as the server, for children."""
        return {**os.environ, **self.env}

    def play(self, path: Path) -> subprocess.Popen[bytes]:
        """Start playing `path` into the sink; the caller waits for the process."""
        return subprocess.Popen(
            ["paplay", f"--device={SINK}", str(path)],
            env=self.client_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def record(self, latency_ms: int) -> subprocess.Popen[bytes]:
        """`parec` of the sink's monitor: raw float32 mono at SINK_RATE_HZ on its stdout."""
        return subprocess.Popen(
            [
                "parec",
                f"--device={SINK}.monitor",
                "--raw",
                "--format=float32le",
                f"--rate={SINK_RATE_HZ}",
                "--channels=1",
                f"--latency-msec={latency_ms}",
            ],
            env=self.client_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )


@contextlib.contextmanager
def sandbox(folder: Path) -> Iterator[Sandbox]:
    """PulseAudio with a null sink (the default source is its monitor), and mosquitto on a
    free 127.0.0.1 port if it is installed; both stopped on exit."""
    tools = ("pulseaudio", "pactl", "paplay", "parec")
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing:
        raise SandboxError(f"bench --live: {', '.join(missing)} not installed; {PULSE_INSTALL}")
    children: list[subprocess.Popen[bytes]] = []
    try:
        try:
            pulse, env = start_pulseaudio(folder, SINK, SINK_RATE_HZ)
        except SandboxError as exc:
            raise SandboxError(f"bench --live: {exc}") from None
        children.append(pulse)
        port = None
        if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
            broker, port = _start_mosquitto(folder)
            children.append(broker)
        yield Sandbox(folder, env, port)
    finally:
        for child in reversed(children):
            stop(child)


def stop(child: subprocess.Popen[bytes]) -> None:
    """Terminate `child`, killing it after 10 s."""
    child.terminate()
    try:
        child.wait(timeout=10)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def start_pulseaudio(
    folder: Path, sink: str, rate_hz: int
) -> tuple[subprocess.Popen[bytes], dict[str, str]]:
    """A private PulseAudio in `folder` (ours to stop: not daemonized) with one null sink,
    whose monitor is the default source; waits until it answers. The process, and the
    environment a client needs (PULSE_SERVER, and a PULSE_COOKIE that keeps libpulse out of
    the real HOME). SandboxError when it exits or does not answer."""
    runtime, home = folder / "runtime", folder / "home"
    for private in (runtime, home):
        private.mkdir(mode=0o700, parents=True)
    sock = folder / "native"
    script = folder / "server.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={sock}\n"
        f"load-module module-null-sink sink_name={sink} rate={rate_hz} channels=1\n"
        f"set-default-sink {sink}\n"
        f"set-default-source {sink}.monitor\n"
    )
    server_env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home)}
    server_env.pop("PULSE_SERVER", None)
    log_path = folder / "pulseaudio.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", str(script)],
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    env = {"PULSE_SERVER": f"unix:{sock}", "PULSE_COOKIE": str(folder / "cookie")}
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
            raise SandboxError(f"pulseaudio exited at start: {' '.join(tail)}")
        answer = subprocess.run(
            ["pactl", "info"], env={**os.environ, **env}, capture_output=True, check=False
        )
        if answer.returncode == 0:
            return process, env
        if time.monotonic() > deadline:
            stop(process)
            waited = f"{START_TIMEOUT_SECONDS:g} s"
            raise SandboxError(f"pulseaudio did not answer within {waited}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_mosquitto(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = folder / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    process = subprocess.Popen(
        [binary, "-c", str(conf)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process, port
        if process.poll() is not None:
            break
        time.sleep(0.05)
    stop(process)
    raise SandboxError(f"bench --live: mosquitto did not listen on port {port}")
