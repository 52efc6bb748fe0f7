"""The live daemon's processing path on a file: CPU per capture block, without PortAudio.

    python benchmarks/live_path.py MODEL_FOLDER [MODEL_FOLDER ...] [--seconds 120]
        [--repeats 3] [--profile]

The daemon (`App`, edge/app.py) with its default outputs (per-second CSV, events, metrics
served, levels and clips at their defaults; no MQTT broker) scores the bench's own recording
for the bundle (`soundwatch bench --live`: tone bursts, or synthetic fly song for a fly-song
model), resampled to 44.1 kHz as PulseAudio's ALSA device delivers it, replayed as fast as it
goes (`speed: 0`) in the live default's 0.05 s blocks. It prints the process CPU time per
block, the best of `--repeats` runs: resampling, the frontend, the model call, rows, events and
metrics, everything the live daemon does per block but the wait. `--profile` prints cProfile's
top functions instead (cProfile inflates small calls; py-spy is fairer:
`py-spy record --rate 1000 -- python benchmarks/live_path.py ...`).

Live, the reader wakes once a hop rather than once a block, so on tone (0.1 s hop) the path
runs on two blocks at a time; the work per second of audio is the same. The figures go to
BENCHMARKS.md ("Issue 14", the live daemon, third pass).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import pstats
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge.app import App
from edge.bench.live import _recording
from edge.config import load_config
from edge.model.bundle import load_bundle

BLOCK_SECONDS = 0.05  # the live default (source.block_seconds)
DEVICE_RATE_HZ = 44100  # PulseAudio's ALSA `pulse` device, as the live bench reads it


def prepare(model: Path, seconds: float, folder: Path) -> Path:
    """The config of a daemon scoring the bench's recording for `model` from a file."""
    recording = _recording(folder / "played.wav", load_bundle(model), seconds, None)
    audio = resample_poly(recording.audio, 147, 160).astype(np.float32)  # 48 to 44.1 kHz
    wav = folder / "device.wav"
    sf.write(wav, audio, DEVICE_RATE_HZ, subtype="FLOAT")
    config = folder / "config.yaml"
    config.write_text(
        f"model: {{path: {json.dumps(str(model))}}}\n"
        f"source: {{kind: files, paths: [{json.dumps(str(wav))}], speed: 0,"
        f" block_seconds: {BLOCK_SECONDS}}}\n"
        f"output: {{dir: {json.dumps(str(folder / 'out'))}, device_id: bench, print: none}}\n"
        "metrics: {address: '127.0.0.1:0'}\n"
    )
    return config


def cpu_per_block_ms(config: Path, seconds: float) -> float:
    app = App(load_config(config))
    began = time.process_time()
    app.run()
    return (time.process_time() - began) * 1e3 / (seconds / BLOCK_SECONDS)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    for model in args.models:
        with tempfile.TemporaryDirectory() as tmp:
            config = prepare(model.resolve(), args.seconds, Path(tmp))
            if args.profile:
                profile = cProfile.Profile()
                profile.runcall(App(load_config(config)).run)
                pstats.Stats(profile).sort_stats("tottime").print_stats(30)
                continue
            best = min(cpu_per_block_ms(config, args.seconds) for _ in range(args.repeats))
            print(f"{model.name}: {best:.3f} ms CPU per {BLOCK_SECONDS:g} s block")
    return 0


if __name__ == "__main__":
    sys.exit(main())
