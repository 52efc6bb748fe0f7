"""Shared pytest fixtures.

Fixtures here (keep each in its own clearly named function):
- `pulse_server` (session): a private PulseAudio server with a virtual sink, so live capture is
  tested against a real PortAudio device without sound hardware.
- `scanned_scene` (session): `soundwatch scan --out` of the tone scene (tests/scenes.py), for
  the review page's tests; copy it before writing verdicts into it.
- `browser` (module): Debian's headless Chromium through Selenium, for the page tests.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from edge.bench.sandbox import SandboxError, start_pulseaudio, stop
from tests.mqtt_broker import Mosquitto

if TYPE_CHECKING:
    from selenium.webdriver.remote.webdriver import WebDriver

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

    def pactl(self, *args: str) -> str:
        """Run `pactl` against this server; its stdout (RuntimeError when it fails)."""
        result = subprocess.run(
            ["pactl", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"pactl {' '.join(args)} failed: {result.stderr.strip()}")
        return result.stdout

    def unplug(self) -> None:
        """Take the capture device away, as pulling out a USB microphone does: the sink (and
        so its monitor, the default source) is unloaded; streams on it die, new ones fail."""
        for line in self.pactl("list", "short", "modules").splitlines():
            fields = line.split("\t")
            if "module-null-sink" in fields and f"sink_name={self.sink}" in line:
                self.pactl("unload-module", fields[0])
                return
        raise RuntimeError(f"no null sink {self.sink} loaded to unplug")

    def plug(self) -> None:
        """Bring the device back after `unplug` (the same sink, rate and default source)."""
        self.pactl(
            "load-module",
            "module-null-sink",
            f"sink_name={self.sink}",
            f"rate={self.sample_rate_hz}",
            "channels=1",
        )
        self.pactl("set-default-source", f"{self.sink}.monitor")

    @contextlib.contextmanager
    def unplugged(self) -> Iterator[None]:
        """The device is away inside the block and back after it, whatever happens."""
        self.unplug()
        try:
            yield
        finally:
            self.plug()


def _start_pulseaudio(folder: Path) -> tuple[subprocess.Popen[bytes], PulseServer]:
    """Start pulseaudio in the foreground (we own its pid) and wait until it answers: the
    bench's own sandbox (edge/bench/sandbox.py), with the tests' sink."""
    try:
        process, client_env = start_pulseaudio(folder, PULSE_SINK, PULSE_SAMPLE_RATE_HZ)
    except SandboxError as exc:
        pytest.fail(f"{exc}:\n{(folder / 'pulseaudio.log').read_text(errors='replace')}")
    return process, PulseServer(
        server=client_env["PULSE_SERVER"],
        sink=PULSE_SINK,
        sample_rate_hz=PULSE_SAMPLE_RATE_HZ,
        env=client_env,
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
        from edge.audio.capture import list_devices

        names = [device.name for device in list_devices(rescan=True)]
        if "pulse" not in names:
            pytest.fail(
                f"PortAudio does not list the 'pulse' device (it lists {names}); the ALSA "
                f"pulse plugin is probably missing; install with: {PULSE_INSTALL}"
            )
        yield server
    finally:
        stop(process)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


# --- Model bundles ----------------------------------------------------------------------------


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real mosquitto on a free port of 127.0.0.1, for one test."""
    b = Mosquitto(tmp_path / "broker")
    b.start()
    yield b
    b.stop()


@pytest.fixture(scope="session")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh `tone` bundle (ONNX fp32 and int8, TFLite int8) built by the trainer's code.

    Built, not copied from models/, so the tests check that the builder still makes a bundle
    the edge accepts and that detects tones.
    """
    from trainer.toybundle import make_tone_bundle

    return make_tone_bundle(tmp_path_factory.mktemp("bundles") / "tone")


@pytest.fixture(scope="session")
def scanned_scene(tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real `scan` of the tone scene: the outputs folder (recording under `../in`)."""
    import sys

    from tests.scenes import write_scene

    root = tmp_path_factory.mktemp("scanned")
    write_scene(root / "in" / "site1" / "rec_20261122T100000.wav")
    command = [sys.executable, "-m", "edge.cli", "scan", str(root / "in"), "-q"]
    command += ["--model", str(tone_bundle), "--out", str(root / "out")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return root / "out"


# --- A model that is slow when it hears something loud ------------------------------------------

SLOW_CALL_SECONDS = 1.5  # one model call on loud input; 0.4 s of audio arrive per call at most
LOUD_FEATURE = 5.0  # log-mel above this: loud (a 0.3 tone reaches 7; noise 0.05 and silence stay
# below 2.6, and so does the standard-normal probe the runtime checks a model with at load)


def _slow_onnx(path: Path, feature_shape: tuple[int, ...], n_labels: int, loops: int) -> None:
    """A model whose every call runs `loops` 128x128 MatMul+Tanh steps when any input feature
    is above LOUD_FEATURE, and none otherwise; it scores every label 1e-4 (sigmoid of -9.2).

    The Loop's state does not depend on the input (so the cost is per call, whatever the batch),
    but its result is added (times 0) to the scores so no runtime can drop it as dead code.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    size = 128
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((size, size)) / np.sqrt(size)).astype(np.float32)
    square = [size, size]
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["y"]),
            helper.make_node("Tanh", ["y"], ["x_out"]),
            helper.make_node("Identity", ["cond"], ["cond_out"]),
        ],
        "step",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, square),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, square),
        ],
        [numpy_helper.from_array(w, "w")],
    )
    nodes = [
        helper.make_node("ReduceMax", ["features"], ["loudest"], keepdims=0),
        helper.make_node("Greater", ["loudest", "loud"], ["is_loud"]),
        helper.make_node("Cast", ["is_loud"], ["is_loud_int"], to=TensorProto.INT64),
        helper.make_node("Mul", ["is_loud_int", "loops"], ["trips"]),
        helper.make_node("Loop", ["trips", "true", "x0"], ["x_final"], body=body),
        helper.make_node("ReduceSum", ["x_final"], ["total"], keepdims=0),
        helper.make_node("Mul", ["total", "zero"], ["nothing"]),
        helper.make_node("ReduceMean", ["features"], ["per_window"], axes=[1, 2], keepdims=0),
        helper.make_node("Unsqueeze", ["per_window", "axis1"], ["column"]),
        helper.make_node("Mul", ["column", "zero"], ["zeros"]),
        helper.make_node("Add", ["zeros", "logits"], ["shifted"]),
        helper.make_node("Add", ["shifted", "nothing"], ["scores"]),
    ]
    constants: dict[str, np.ndarray] = {
        "loud": np.array(LOUD_FEATURE, np.float32),
        "loops": np.array(loops, np.int64),
        "true": np.array(True),
        "x0": np.eye(size, dtype=np.float32),
        "zero": np.array(0.0, np.float32),
        "axis1": np.array([1], np.int64),
        "logits": np.full((1, n_labels), -9.2, np.float32),
    }
    graph = helper.make_graph(
        nodes,
        "slow_when_loud",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", *feature_shape])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", n_labels])],
        [numpy_helper.from_array(value, name) for name, value in constants.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, path)


def make_slow_bundle(folder: Path, tone_bundle: Path) -> Path:
    """The tone bundle's frontend and labels with a model that takes about SLOW_CALL_SECONDS
    per call on loud audio (a played tone) and next to nothing on quiet audio: the load comes
    and goes with the sound, so shedding it and recovering can be tested on a real device."""
    import hashlib

    import numpy as np
    import yaml

    from edge.model.bundle import load_bundle

    tone = load_bundle(tone_bundle)
    shape, n_labels = tone.feature_shape, len(tone.labels)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.fp32.onnx"
    # Calibrate the loop count on this machine: time a shorter loop on loud input, scale it.
    # The fastest of a few runs, so a busy moment during calibration cannot make the model
    # faster than intended later (busy moments later only make it slower, which is fine).
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    loud = np.full((1, *shape), LOUD_FEATURE + 1, np.float32)
    probe_loops = 5000
    _slow_onnx(model, shape, n_labels, probe_loops)
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    session.run(None, {"features": loud})
    timings = []
    for _ in range(3):
        began = time.perf_counter()
        session.run(None, {"features": loud})
        timings.append(time.perf_counter() - began)
    per_loop = min(timings) / probe_loops
    _slow_onnx(model, shape, n_labels, max(probe_loops, round(SLOW_CALL_SECONDS / per_loop)))

    manifest = yaml.safe_load((tone_bundle / "manifest.yaml").read_text())
    manifest["name"] = "slow-tone"
    manifest["output"] = {"activation": "sigmoid"}
    manifest["files"] = {
        "onnx-fp32": {
            "path": model.name,
            "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
        }
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (folder / "README.md").write_text("# slow-tone\n\nA test model: slow on loud audio.\n")
    return folder


@pytest.fixture(scope="session")
def slow_bundle(tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """See `make_slow_bundle`."""
    return make_slow_bundle(tmp_path_factory.mktemp("bundles") / "slow-tone", tone_bundle)


# --- The daemon as a subprocess -----------------------------------------------------------------


class Scrape:
    """One scrape of the daemon's /metrics, parsed by prometheus_client's own parser."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                self.samples[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def value(self, metric: str, /, **labels: str) -> float:
        """The sample `metric` with exactly these labels (KeyError names what there is)."""
        key = (metric, frozenset(labels.items()))
        if key not in self.samples:
            there = sorted(str(dict(k[1])) for k in self.samples if k[0] == metric)
            raise KeyError(f"no {metric} {labels} in the scrape; there is {there}")
        return self.samples[key]

    def labelled(self, name: str) -> dict[str, float]:
        """{label value: value} of a metric with one label."""
        return {next(iter(k[1]))[1]: v for k, v in self.samples.items() if k[0] == name and k[1]}


class Daemon:
    """`soundwatch run -c <config>` as a subprocess, logging to `<folder>/daemon.log`.

    Use as a context manager: the process is killed on the way out if still running.
    """

    def __init__(self, folder: Path, config: str, env: dict[str, str] | None = None) -> None:
        import sys

        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.config = folder / "config.yaml"
        self.config.write_text(config)
        self.log_path = folder / "daemon.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "edge.cli", "run", "-c", str(self.config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
                env={**os.environ, **(env or {})},
            )

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float = 30.0, count: int = 1) -> None:
        """Until `text` appears `count` times in the log; fails if the daemon exits first."""
        deadline = time.monotonic() + timeout
        while self.log().count(text) < count:
            if self.process.poll() is not None:
                pytest.fail(
                    f"daemon exited ({self.process.returncode}) before {text!r}:\n{self.log()}"
                )
            if time.monotonic() > deadline:
                pytest.fail(f"no {text!r} (x{count}) in the log within {timeout} s:\n{self.log()}")
            time.sleep(0.05)

    @property
    def metrics_url(self) -> str:
        import re

        self.wait_for_log("metrics on http://")
        found = re.search(r"metrics on (http://\S+/metrics)", self.log())
        assert found is not None
        return found.group(1)

    def scrape(self) -> Scrape:
        import urllib.request

        with urllib.request.urlopen(self.metrics_url, timeout=5) as answer:
            return Scrape(answer.read().decode())

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def stop(self, signum: int = 15, timeout: float = 20.0) -> tuple[int, float]:
        """Send `signum` (SIGTERM) and wait: (exit status, seconds until it exited)."""
        began = time.monotonic()
        self.process.send_signal(signum)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"daemon still running {timeout} s after signal {signum}:\n{self.log()}")
        return code, time.monotonic() - began

    def rows(self, device_id: str = "box", out: str = "out") -> list[dict[str, str]]:
        """Every per-second row written so far, in time order."""
        import csv

        rows: list[dict[str, str]] = []
        # The hourly files (20261122T10.csv, 20261122T10_ch1.csv), not predicted.csv.
        for hour in sorted((self.folder / out / device_id).glob("*/????????T??*.csv")):
            with hour.open(newline="") as f:
                rows += list(csv.DictReader(f))
        return rows

    def events(self, device_id: str = "box", out: str = "out") -> list[dict[str, object]]:
        """Every event message written so far (start and end)."""
        import json

        messages: list[dict[str, object]] = []
        for day in sorted((self.folder / out / device_id).glob("*/events.jsonl")):
            messages += [json.loads(line) for line in day.read_text().splitlines()]
        return messages


def daemon_config(
    folder: Path,
    bundle: Path,
    source: str = "{kind: device, device: pulse}",
    extra: str = "",
) -> str:
    """A daemon config: `bundle`, `source`, files under `folder`/out as device `box`, metrics
    on any free port (the daemon logs which)."""
    return (
        f"model: {{path: {bundle}}}\n"
        f"source: {source}\n"
        f"output: {{dir: {folder / 'out'}, device_id: box, print: none}}\n"
        "metrics: {address: '127.0.0.1:0'}\n" + extra
    )


def run_to_end(config: Path, timeout_seconds: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`soundwatch run -c config` in a subprocess, for a source that ends (files); it must
    exit 0. Returns what it printed."""
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout_seconds,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


# --- A real browser ----------------------------------------------------------------------------

CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver (scripts/install.sh dev)"


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Debian's headless Chromium through its chromedriver, one per test module."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert CHROMEDRIVER.exists(), f"no {CHROMEDRIVER}: {INSTALL}"
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--mute-audio"):
        options.add_argument(flag)
    # The Debian driver, named: Selenium Manager would try to download one and fail offline.
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_window_size(1400, 1000)
    yield driver
    driver.quit()
