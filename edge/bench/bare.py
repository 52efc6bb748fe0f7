"""The bare loop `soundwatch bench --live` compares the daemon with, in its own process:

    python -m edge.bench.bare SPEC

Capture from the same device with the same library (sounddevice/PortAudio), block size and
rate as the daemon, the callback copying each block into a preallocated buffer and handing its
length over on a queue (python-sounddevice's recording example); the main thread calls the
model's runtime once per hop of captured audio, on a fixed window of features. Nothing else:
no resampling, frontend, per-second rows, events, files, MQTT or metrics. It prints `ready`
after its first model call and runs until SIGTERM.

SPEC (JSON): device, block_seconds, hop_seconds, file_key, path (the model file),
feature_shape, n_labels, threads; `bundle` (the folder) instead of path for a two-stage
bundle, which is opened whole.
"""

from __future__ import annotations

import json
import queue
import signal
import sys
import threading
from typing import Any

import numpy as np


def run(spec: dict[str, Any]) -> None:
    import sounddevice as sd

    from edge.audio.capture import CALLBACK_THREAD
    from edge.threads import name_os_thread

    backend = _open(spec)
    features = np.random.default_rng(0).normal(size=(1, *spec["feature_shape"]))
    window = features.astype(np.float32)
    out = np.empty((1, spec["n_labels"]), np.float32)

    device = _device_index(sd, spec["device"])
    rate_hz = round(sd.query_devices(device)["default_samplerate"])
    block = max(1, round(rate_hz * spec["block_seconds"]))
    hop = max(1, round(rate_hz * spec["hop_seconds"]))
    ring = np.zeros((8, block, 1), np.float32)  # copies only, no growth
    arrived: queue.SimpleQueue[int] = queue.SimpleQueue()
    blocks = 0

    def callback(indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        nonlocal blocks
        if blocks == 0:  # named as the daemon's is, for the bench's per-thread figures
            name_os_thread(CALLBACK_THREAD)
        ring[blocks % len(ring), :frames] = indata
        blocks += 1
        arrived.put(frames)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    backend.predict(window, out)
    pending = 0
    stream = sd.InputStream(
        samplerate=rate_hz,
        blocksize=block,
        device=device,
        channels=1,
        dtype="float32",
        callback=callback,
    )
    with stream:
        print("ready", flush=True)
        while not stop.is_set():
            try:
                pending += arrived.get(timeout=0.5)
            except queue.Empty:
                continue
            while pending >= hop:
                pending -= hop
                backend.predict(window, out)
    backend.close()


def _open(spec: dict[str, Any]) -> Any:
    if spec.get("bundle"):
        from edge.model.bundle import load_bundle

        return load_bundle(spec["bundle"]).open(spec["file_key"], threads=spec["threads"])
    from pathlib import Path

    from edge.model.runtime.base import backend_for

    backend = backend_for(spec["file_key"])
    return backend(
        Path(spec["path"]),
        feature_shape=tuple(spec["feature_shape"]),
        n_labels=spec["n_labels"],
        threads=spec["threads"],
    )


def _device_index(sd: Any, name: str) -> int:
    for index, device in enumerate(sd.query_devices()):
        if device["max_input_channels"] > 0 and name in device["name"]:
            return index
    raise SystemExit(f"bench bare loop: no input device named {name!r}")


if __name__ == "__main__":
    run(json.loads(sys.argv[-1]))
