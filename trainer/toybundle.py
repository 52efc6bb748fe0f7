"""The `tone` bundle: a hand-made detector of 1 kHz and 3 kHz tones, in every model format.

It is the demo model (what `soundwatch run` listens for on a machine without a microphone, with
the built-in demo source) and the test model: tests build a fresh one into a temporary folder
with `make_tone_bundle`, and `models/tone/` is the same function's output, committed.

How it decides: for each label, the mean over the window's frames of (log-mel energy in the mel
bands the tone falls in) minus (the mean of the other bands). In noise that difference is
`d_noise`; in a tone it is `d_tone`. The bias puts the 0.5 crossing halfway, so a window scores
above 0.5 when about half of it holds the tone: the event starts within about one hop of the
tone's onset. Designed for tones about 30 dB above white noise (amplitude 0.3 in noise of RMS
0.01, as the demo source plays); much louder tones are found earlier, quieter ones later.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import yaml

from edge.model.bundle import sha256_of
from edge.model.frontend import LogMelSpec, logmel, mel_filterbank, n_frames
from trainer import toymodel

NAME = "tone"
VERSION = "2026.11.22"
LABELS = ("tone-1k", "tone-3k")
TONES_HZ = (1000.0, 3000.0)
RATE_HZ = 16000
WINDOW_SECONDS = 0.5
HOP_SECONDS = 0.1
SPEC = LogMelSpec(
    sample_rate_hz=RATE_HZ,
    n_fft=512,
    win_length=400,
    hop_length=160,
    n_mels=40,
    fmin_hz=50.0,
    fmax_hz=8000.0,
)
TONE_AMPLITUDE = 0.3
NOISE_RMS = 0.01
SLOPE = 6.0  # logit per nat of band-minus-rest difference, over its noise-to-tone range


def _signal(seconds: float, freq_hz: float | None, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, NOISE_RMS, int(seconds * RATE_HZ))
    if freq_hz is not None:
        t = np.arange(len(x)) / RATE_HZ
        x += TONE_AMPLITUDE * np.sin(2 * np.pi * freq_hz * t)
    return x.astype(np.float32)


def design() -> tuple[np.ndarray, np.ndarray]:
    """Weights W (mels, labels) and bias b (labels,) of the linear detector."""
    fb = mel_filterbank(SPEC)  # (bins, mels)
    n_mels = SPEC.n_mels
    W = np.zeros((n_mels, len(LABELS)), dtype=np.float64)
    noise = logmel(_signal(5.0, None, seed=1), SPEC).astype(np.float64)
    b = np.zeros(len(LABELS))
    for j, freq in enumerate(TONES_HZ):
        fft_bin = round(freq * SPEC.n_fft / RATE_HZ)
        band = fb[fft_bin] > 0.05 * fb[fft_bin].max()
        direction = np.where(band, 1.0 / band.sum(), -1.0 / (~band).sum())
        tone = logmel(_signal(5.0, freq, seed=2 + j), SPEC).astype(np.float64)
        d_noise = float((noise @ direction).mean())
        d_tone = float((tone @ direction).mean())
        slope = SLOPE / (d_tone - d_noise) * 2
        W[:, j] = slope * direction
        b[j] = -slope * (d_noise + d_tone) / 2
    return W.astype(np.float32), b.astype(np.float32)


def calibration_windows(count: int = 256, seed: int = 3) -> np.ndarray:
    """Log-mel windows of noise, tones and mixtures, for int8 calibration."""
    frames = n_frames(round(WINDOW_SECONDS * RATE_HZ), SPEC)
    rng = np.random.default_rng(seed)
    x = _signal(count * WINDOW_SECONDS / 2 + WINDOW_SECONDS, None, seed)
    t = np.arange(len(x)) / RATE_HZ
    for start in range(0, len(x), RATE_HZ):  # a tone in half of the seconds
        if rng.random() < 0.5:
            freq = TONES_HZ[int(rng.integers(len(TONES_HZ)))]
            x[start : start + RATE_HZ // 2] += TONE_AMPLITUDE * np.sin(
                2 * np.pi * freq * t[start : start + RATE_HZ // 2]
            ).astype(np.float32)
    features = logmel(x, SPEC)
    step = max(1, (len(features) - frames) // count)
    return np.stack([features[i : i + frames] for i in range(0, step * count, step)])


def make_tone_bundle(
    folder: Path, *, formats: tuple[str, ...] = ("onnx-int8", "onnx-fp32", "tflite-int8")
) -> Path:
    """Write the complete bundle (models, manifest, model card) into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    W, b = design()
    frames = n_frames(round(WINDOW_SECONDS * RATE_HZ), SPEC)
    calibration = calibration_windows()
    files: dict[str, dict[str, str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "model.fp32.onnx"
        toymodel.build_onnx(fp32, W, b, frames)
        if "onnx-fp32" in formats:
            (folder / "model.fp32.onnx").write_bytes(fp32.read_bytes())
            files["onnx-fp32"] = {"path": "model.fp32.onnx"}
        if "onnx-int8" in formats:
            toymodel.quantize_onnx(fp32, folder / "model.int8.onnx", calibration)
            files["onnx-int8"] = {"path": "model.int8.onnx"}
    if "tflite-int8" in formats:
        toymodel.build_tflite(
            folder / "model.int8.tflite", W, b, frames, int8=True, calibration=calibration
        )
        files["tflite-int8"] = {"path": "model.int8.tflite"}
    if "tflite-fp32" in formats:
        toymodel.build_tflite(folder / "model.fp32.tflite", W, b, frames, int8=False)
        files["tflite-fp32"] = {"path": "model.fp32.tflite"}
    for entry in files.values():
        entry["sha256"] = sha256_of(folder / entry["path"])

    manifest = {
        "format": "soundwatch-bundle/1",
        "name": NAME,
        "version": VERSION,
        "labels": list(LABELS),
        "task": "multilabel",
        "sample_rate": RATE_HZ,
        "window_seconds": WINDOW_SECONDS,
        "hop_seconds": HOP_SECONDS,
        "frontend": {
            "kind": "logmel",
            "n_fft": SPEC.n_fft,
            "win_length": SPEC.win_length,
            "hop_length": SPEC.hop_length,
            "window": SPEC.window,
            "n_mels": SPEC.n_mels,
            "fmin": SPEC.fmin_hz,
            "fmax": SPEC.fmax_hz,
            "power": SPEC.power,
            "log_offset": SPEC.log_offset,
        },
        "output": {"activation": "none"},  # the model ends in a sigmoid
        "thresholds": dict.fromkeys(LABELS, 0.5),
        "threshold_rule": {"designed": "0.5 when half the window holds the tone"},
        # No minimum duration: with a 0.1 s hop every event lasts at least 0.1 s anyway (it ends
        # at the first window below, a hop after its last), so 0.1 s dropped nothing and only
        # held each `start` back a hop (README "Latency, start-up and what the defaults cost").
        "events": {"median_windows": 1, "min_duration_seconds": 0.0, "merge_gap_seconds": 0.1},
        "files": files,
        "metrics": {},
        "provenance": {
            "data": "none: weights designed by hand from synthetic tones (trainer/toybundle.py)",
            "trainer": "soundwatch-train tone-bundle",
        },
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    (folder / "README.md").write_text(MODEL_CARD)
    return folder


MODEL_CARD = """\
# tone: a hand-made 1 kHz / 3 kHz tone detector

The demo and test model of soundwatch. Labels `tone-1k` and `tone-3k`: a steady tone near
1 kHz or 3 kHz, 16 kHz audio, 0.5 s windows every 0.1 s, 40-band log-mel input.

- **How it was made:** not trained. `trainer/toybundle.py` sets the weights of a linear
  detector (mean log-mel energy in the tone's mel bands minus the other bands) from synthetic
  tones in white noise, and writes the ONNX fp32, ONNX int8 (static QDQ) and TFLite int8
  files. Reproduce with `soundwatch-train tone-bundle models/tone`.
- **What it hears:** tones about 30 dB above the noise, as the built-in demo source plays
  them. It is not a general tone detector: much quieter tones are missed, broadband sounds
  with energy at 1 or 3 kHz can trigger it.
- **Data and licence:** no data; the bundle is under the project's licence.
"""
