"""Shared pytest fixtures.

Fixtures here (keep each in its own clearly named function):
- `pulse_server` (session): a private PulseAudio server with a virtual sink, so live capture is
  tested against a real PortAudio device without sound hardware.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# --- PulseAudio -------------------------------------------------------------------------------

PULSE_INSTALL = (
    "apt-get install -y --no-install-recommends pulseaudio pulseaudio-utils libasound2-plugins"
)
PULSE_SINK = "vsink"
PULSE_SAMPLE_RATE_HZ = 48000


@dataclass(frozen=True)
class PulseServer:
    """A running private PulseAudio server.

    Audio played into `sink` comes back on the default source (`sink`.monitor), which PortAudio
    lists as the `default` (and `pulse`) input device.
    """

    server: str
    """PULSE_SERVER value, `unix:<socket path>`."""
    sink: str
    sample_rate_hz: int
    env: dict[str, str]
    """Variables set for this process; pass to subprocesses that build their own environment."""

    def play(self, path: Path, timeout_seconds: float = 30.0) -> None:
        """Play an audio file into the sink with paplay and wait until it has been played."""
        result = subprocess.run(
            ["paplay", f"--device={self.sink}", str(path)],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout_seconds,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"paplay {path} failed ({result.returncode}): {result.stderr}")


def _start_pulseaudio(folder: Path) -> tuple[subprocess.Popen[bytes], PulseServer]:
    """Start pulseaudio in the foreground (we own its pid) and wait until it answers."""
    runtime = folder / "runtime"
    home = folder / "home"
    for private in (runtime, home):
        private.mkdir(mode=0o700)
    socket = folder / "native"
    script = folder / "server.pa"
    script.write_text(
        f"load-module module-native-protocol-unix auth-anonymous=1 socket={socket}\n"
        f"load-module module-null-sink sink_name={PULSE_SINK} "
        f"rate={PULSE_SAMPLE_RATE_HZ} channels=1\n"
        f"set-default-source {PULSE_SINK}.monitor\n"
    )
    server_env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home)}
    server_env.pop("PULSE_SERVER", None)
    log_path = folder / "pulseaudio.log"
    with log_path.open("wb") as log:
        # --daemonize=no instead of the recipe's =yes: same server, but the pid is ours to stop.
        process = subprocess.Popen(
            ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", str(script)],
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = f"unix:{socket}"
    # The client side: clients need only the server address. The cookie path keeps libpulse
    # from touching the real HOME (auth is anonymous anyway).
    client_env = {"PULSE_SERVER": server, "PULSE_COOKIE": str(folder / "cookie")}
    deadline = time.monotonic() + 15.0
    while True:
        if process.poll() is not None:
            pytest.fail(
                f"pulseaudio exited with {process.returncode} at start:\n{log_path.read_text()}"
            )
        answer = subprocess.run(
            ["pactl", "info"], env={**os.environ, **client_env}, capture_output=True, check=False
        )
        if answer.returncode == 0:
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"pulseaudio did not answer within 15 s:\n{log_path.read_text()}")
        time.sleep(0.05)
    return process, PulseServer(
        server=server, sink=PULSE_SINK, sample_rate_hz=PULSE_SAMPLE_RATE_HZ, env=client_env
    )


@pytest.fixture(scope="session")
def pulse_server() -> Iterator[PulseServer]:
    """A private PulseAudio server for the whole session; PortAudio re-scanned to see it.

    Sets PULSE_SERVER (and PULSE_COOKIE) in os.environ, so this process and every subprocess
    it starts use the server; restores them and stops the server at the end. Fails (does not
    skip) when PulseAudio or the ALSA pulse plugin is missing, with the install command.
    """
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed; install with: {PULSE_INSTALL}")
    folder = Path(tempfile.mkdtemp(prefix="soundwatch-pulse-"))
    folder.chmod(0o700)
    process, server = _start_pulseaudio(folder)
    saved = {name: os.environ.get(name) for name in server.env}
    os.environ.update(server.env)
    try:
        # PortAudio enumerated devices when sounddevice was first imported, possibly before
        # the server existed: re-scan now that PULSE_SERVER is set.
        from edge.capture import list_devices

        names = [device.name for device in list_devices(rescan=True)]
        if "pulse" not in names:
            pytest.fail(
                f"PortAudio does not list the 'pulse' device (it lists {names}); the ALSA "
                f"pulse plugin is probably missing; install with: {PULSE_INSTALL}"
            )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


# --- Model bundles ----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh `tone` bundle (ONNX fp32 and int8, TFLite int8) built by the trainer's code.

    Built, not copied from models/, so the tests check that the builder still makes a bundle
    the edge accepts and that detects tones.
    """
    from trainer.toybundle import make_tone_bundle

    return make_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone")
