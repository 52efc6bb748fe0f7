"""The built-in demo source: synthetic audio played in real time, for machines without a microphone.

Two scenes, each made for one bundled model:

- ``flysong`` (for ``models/flysong``, 2500 Hz): Drosophila melanogaster courtship song in the
  background noise of a recording chamber. Trains of pulse song (``mel-pulse``) and sine song
  (``mel-sine``) alternate, each alone, separated by quiet background (``ambient``).
- ``tones`` (for ``models/tone``, 16 kHz): tone bursts at 1 and 3 kHz in white noise.

The audio comes from pure generators (``flysong_scene`` gives a whole scene and its truth, which
tests score against the model; ``flysong_blocks`` and ``tone_blocks`` give endless blocks), and
``demo_stream`` paces them against the wall clock as a device would deliver them.

The fly-song numbers were read off the SongExplorer recording ``PS_20130625111709_ch3.wav``
(2500 Hz, its person1 annotations): background RMS 0.0034-0.0040 falling about 4.5 dB per
octave from 100 Hz to 1 kHz; pulses of 2-3 cycles with spectral peaks mostly at 195-390 Hz, peak
amplitudes 0.03-0.66 (typically about 0.1), inter-pulse intervals 30-40 ms (median 34.5 ms);
sine song at 137-186 Hz, RMS 0.008-0.018, 0.23-1.3 s long. The scene stays inside those
ranges and uses nothing of the recording itself.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge.audio.streams import Stream
from edge.errors import ConfigError

SCENES = ("flysong", "tones")
SCENE_LABELS = {"flysong": ("mel-pulse", "mel-sine"), "tones": ("tone-1k", "tone-3k")}

# --- flysong ---------------------------------------------------------------------------------

FLYSONG_RATE_HZ = 2500  # what models/flysong takes: no resampling on the device
PULSE_LABEL = "mel-pulse"
AMBIENT_LABEL = "ambient"  # the model's label for chamber noise without song
SINE_LABEL = "mel-sine"

BACKGROUND_RMS = 0.004  # measured 0.0034-0.0040 in the recording's ambient stretches
BACKGROUND_CORNER_HZ = 80.0  # one-pole low-pass shape: -20 dB/decade above this
BACKGROUND_FLOOR = 0.05  # white share of the background's amplitude spectrum, so it never
# falls below the recording's floor (-92 dB/Hz near Nyquist against -70 dB/Hz below 100 Hz)

LEAD_SECONDS = 1.0  # quiet at the start and the end of every scene
GAP_SECONDS = (1.0, 3.0)  # quiet between trains: long enough to read as separate events

PULSE_TRAIN_SECONDS = (0.4, 1.5)
PULSE_CARRIER_HZ = (200.0, 400.0)  # per train; each pulse varies by PULSE_JITTER
PULSE_SIGMA_SECONDS = 0.0025  # Gaussian envelope: 2-3 visible cycles, as in the recording
PULSE_HALF_SPAN_SIGMAS = 3.0  # a pulse is drawn (and its truth spans) ±3 sigma around its centre
PULSE_AMPLITUDE = (0.05, 0.15)  # peak, per train; each pulse 70-100% of it
PULSE_IPI_SECONDS = (0.030, 0.040)  # per train; each interval varies by PULSE_JITTER
PULSE_JITTER = 0.05  # relative spread of carrier and interval from pulse to pulse

SINE_TRAIN_SECONDS = (0.3, 1.0)
SINE_HZ = (140.0, 180.0)  # at the start; the hum glides by up to SINE_GLIDE over the train
SINE_GLIDE = 0.05
SINE_AMPLITUDE = (0.015, 0.03)  # peak
SINE_RAMP_SECONDS = 0.02  # raised-cosine fade in and out: no click at the edges

SEGMENT_SECONDS = 20.0  # the endless stream is made of scenes this long

# --- tones (the demo of models/tone; the numbers and random draws of the first demo) ---------

TONES_RATE_HZ = 16000
TONES_HZ = (1000.0, 3000.0)
TONES_AMPLITUDE = 0.3  # peak
TONES_NOISE_RMS = 0.01


class Song(NamedTuple):
    """One train of song in a scene: seconds from the scene's first sample, and its label."""

    start_s: float
    end_s: float
    label: str


def scene_for(labels: list[str]) -> str:
    """The scene made for a model with these labels (the one sharing most), else flysong."""
    return max(SCENES, key=lambda scene: len(set(SCENE_LABELS[scene]) & set(labels)))


def demo_stream(
    scene: str, block_seconds: float, stop: threading.Event, anchor: datetime, seed: int = 7
) -> Stream:
    """Endless synthetic audio of `scene` (one of SCENES), delivered in real time.

    Blocks are `block_seconds` long, float32 (frames, 1); each block is a view of one buffer
    that the next block overwrites, as a capture callback's would be. The stream ends when
    `stop` is set. The same `seed` gives the same audio.
    """
    rng = np.random.default_rng(seed)
    if scene == "flysong":
        rate_hz = FLYSONG_RATE_HZ
        blocks = flysong_blocks(_block_samples(block_seconds, rate_hz), rng, rate_hz)
    elif scene == "tones":
        rate_hz = TONES_RATE_HZ
        blocks = tone_blocks(_block_samples(block_seconds, rate_hz), rng)
    else:
        raise ConfigError(f"demo scene '{scene}': must be one of {', '.join(SCENES)}")
    block = _block_samples(block_seconds, rate_hz)
    return Stream(f"demo:{scene}", anchor, rate_hz, 1, _paced(blocks, block, rate_hz, stop))


def _block_samples(block_seconds: float, rate_hz: int) -> int:
    block = round(block_seconds * rate_hz)
    if block < 1:
        raise ConfigError(f"demo block_seconds {block_seconds}: must be at least 1/{rate_hz} s")
    return block


def _paced(
    blocks: Iterator[np.ndarray], block_samples: int, rate_hz: int, stop: threading.Event
) -> Iterator[np.ndarray]:
    """Yield each block once the wall clock reaches its end, as a device would deliver it.

    Due times count samples from the start, so waiting never drifts the clock.
    """
    began = time.monotonic()
    done = 0  # samples delivered
    while True:
        due = began + (done + block_samples) / rate_hz
        if stop.wait(max(0.0, due - time.monotonic())):
            return
        done += block_samples
        yield next(blocks)


# --- flysong ---------------------------------------------------------------------------------


def flysong_scene(
    seconds: float, rate_hz: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[Song]]:
    """`seconds` of courtship song in chamber noise at `rate_hz`, and where the song is.

    Returns float32 mono audio of ``round(seconds * rate_hz)`` samples and its trains in time
    order. Trains alternate between pulse and sine song (the first one drawn at random), each
    with LEAD_SECONDS or more of quiet before and after, and GAP_SECONDS of quiet between. A
    pulse train's truth runs from its first pulse's onset to its last pulse's end (±3 sigma of
    the envelope), a sine train's over its whole fade-in and fade-out.
    """
    if rate_hz < 2 * PULSE_CARRIER_HZ[1] + 200:
        raise ValueError(f"rate_hz {rate_hz}: too low for pulses up to {PULSE_CARRIER_HZ[1]} Hz")
    n = round(seconds * rate_hz)
    if n < 2:
        raise ValueError(f"seconds {seconds}: a scene needs at least 2 samples")
    audio = _background(n, rate_hz, rng)
    songs: list[Song] = []
    pulse = bool(rng.integers(2))
    t = LEAD_SECONDS + rng.uniform(0.0, GAP_SECONDS[0])
    while True:
        train_seconds = rng.uniform(*(PULSE_TRAIN_SECONDS if pulse else SINE_TRAIN_SECONDS))
        if t + train_seconds + LEAD_SECONDS > seconds:
            break
        if pulse:
            songs.append(_pulse_train(audio, t, train_seconds, rate_hz, rng))
        else:
            songs.append(_sine_train(audio, t, train_seconds, rate_hz, rng))
        t = songs[-1].end_s + rng.uniform(*GAP_SECONDS)
        pulse = not pulse
    return audio.astype(np.float32), songs


def _background(n: int, rate_hz: int, rng: np.random.Generator) -> np.ndarray:
    """`n` samples of float64 noise with BACKGROUND_RMS, shaped like the chamber's (see module).

    Shaped in the frequency domain (numpy only: the device does not import scipy).
    """
    white = rng.standard_normal(n)
    spectrum = np.fft.rfft(white)
    freqs_hz = np.fft.rfftfreq(n, 1.0 / rate_hz)
    spectrum *= BACKGROUND_FLOOR + 1.0 / np.sqrt(1.0 + (freqs_hz / BACKGROUND_CORNER_HZ) ** 2)
    spectrum[0] = 0.0  # no DC offset
    shaped = np.fft.irfft(spectrum, n)
    rms = float(np.sqrt(np.mean(shaped**2))) or 1.0
    shaped *= BACKGROUND_RMS / rms
    return shaped


def _pulse_train(
    audio: np.ndarray, start_s: float, seconds: float, rate_hz: int, rng: np.random.Generator
) -> Song:
    """Add pulses from `start_s` for about `seconds` to `audio`; the train's truth."""
    carrier_hz = rng.uniform(*PULSE_CARRIER_HZ)
    ipi_s = rng.uniform(*PULSE_IPI_SECONDS)
    amplitude = rng.uniform(*PULSE_AMPLITUDE)
    half = PULSE_HALF_SPAN_SIGMAS * PULSE_SIGMA_SECONDS
    half_samples = round(half * rate_hz)
    offsets_s = np.arange(-half_samples, half_samples + 1) / rate_hz
    envelope = np.exp(-0.5 * (offsets_s / PULSE_SIGMA_SECONDS) ** 2)
    centre_s = start_s + half
    last_s = centre_s
    while centre_s + half <= start_s + seconds:
        centre = round(centre_s * rate_hz)
        hz = carrier_hz * rng.uniform(1.0 - PULSE_JITTER, 1.0 + PULSE_JITTER)
        peak = amplitude * rng.uniform(0.7, 1.0)
        sign = 1.0 if rng.integers(2) else -1.0  # the recording has pulses of both polarities
        pulse = sign * peak * envelope * np.sin(2.0 * np.pi * hz * offsets_s)
        audio[centre - half_samples : centre + half_samples + 1] += pulse
        last_s = centre / rate_hz
        centre_s += ipi_s * rng.uniform(1.0 - PULSE_JITTER, 1.0 + PULSE_JITTER)
    return Song(start_s, last_s + half, PULSE_LABEL)


def _sine_train(
    audio: np.ndarray, start_s: float, seconds: float, rate_hz: int, rng: np.random.Generator
) -> Song:
    """Add a gliding hum from `start_s` for `seconds` to `audio`; the train's truth."""
    first = round(start_s * rate_hz)
    n = round(seconds * rate_hz)
    t_s = np.arange(n) / rate_hz
    start_hz = rng.uniform(*SINE_HZ)
    end_hz = start_hz * (1.0 + rng.uniform(-SINE_GLIDE, SINE_GLIDE))
    # Phase is the integral of a linear glide from start_hz to end_hz.
    phase = 2.0 * np.pi * (start_hz * t_s + (end_hz - start_hz) * t_s**2 / (2.0 * seconds))
    ramp = np.clip(np.minimum(t_s, seconds - t_s) / SINE_RAMP_SECONDS, 0.0, 1.0)
    envelope = 0.5 - 0.5 * np.cos(np.pi * ramp)
    audio[first : first + n] += rng.uniform(*SINE_AMPLITUDE) * envelope * np.sin(phase)
    return Song(first / rate_hz, (first + n) / rate_hz, SINE_LABEL)


def flysong_blocks(
    block_samples: int,
    rng: np.random.Generator,
    rate_hz: int = FLYSONG_RATE_HZ,
    segment_seconds: float = SEGMENT_SECONDS,
) -> Iterator[np.ndarray]:
    """Endless fly song in blocks of float32 (block_samples, 1), not paced.

    The audio is consecutive `flysong_scene(segment_seconds, rate_hz, rng)` scenes (each starts
    and ends in quiet, so no train is cut). A scene is made once per segment; a block only
    copies from it into one preallocated buffer, which every block reuses.
    """
    out = np.empty((block_samples, 1), dtype=np.float32)
    scene = np.empty(0, dtype=np.float32)
    at = 0  # next sample of `scene`
    while True:
        filled = 0
        while filled < block_samples:
            if at == len(scene):
                scene, _ = flysong_scene(segment_seconds, rate_hz, rng)
                at = 0
            take = min(block_samples - filled, len(scene) - at)
            out[filled : filled + take, 0] = scene[at : at + take]
            filled += take
            at += take
        yield out


# --- tones -----------------------------------------------------------------------------------


def tone_blocks(block_samples: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """Endless 16 kHz tone bursts in noise, blocks of float32 (block_samples, 1), not paced.

    1-4 s of quiet, then 0.4-1.5 s of a 1 or 3 kHz tone, again and again. Sample for sample
    what the first demo (in edge/audio/streams.py before this module; tests/test_demo.py keeps it as
    the reference) played for the same generator and block size: the same random draws in the
    same order, the same arithmetic, without its per-block allocations.
    """
    rate_hz = TONES_RATE_HZ
    out = np.empty((block_samples, 1), dtype=np.float32)
    noise = np.empty(block_samples, dtype=np.float64)
    tone = np.empty(block_samples, dtype=np.float64)
    index = np.arange(block_samples, dtype=np.float64)
    n = 0  # samples produced so far
    burst_start, burst_end, freq_hz = rate_hz, rate_hz, 0.0
    while True:
        if n >= burst_end:  # schedule the next burst: 1-4 s of quiet, then 0.4-1.5 s of tone
            burst_start = n + int(rng.uniform(1.0, 4.0) * rate_hz)
            burst_end = burst_start + int(rng.uniform(0.4, 1.5) * rate_hz)
            freq_hz = float(rng.choice(TONES_HZ))
        rng.standard_normal(out=noise)
        noise *= TONES_NOISE_RMS
        out[:, 0] = noise
        lo, hi = max(burst_start - n, 0), min(burst_end - n, block_samples)
        if lo < hi:
            on = tone[lo:hi]
            np.add(index[lo:hi], n, out=on)
            on *= 2 * np.pi * freq_hz
            on /= rate_hz
            np.sin(on, out=on)
            on *= TONES_AMPLITUDE
            # Added in float64, then rounded to float32 once, as the first demo did.
            np.add(out[lo:hi, 0], on, out=out[lo:hi, 0])
        n += block_samples
        yield out


# --- a scene on disk, for evaluation ---------------------------------------------------------


def write_flysong_scene(folder: Path, seconds: float, seed: int, rate_hz: int = 2500) -> Path:
    """`folder`/scene.wav and its dense truth `folder`/truth.csv (file,start_seconds,
    end_seconds,label: every train, and `ambient` for every stretch between), ready for
    `soundwatch-train evaluate --data <folder>/truth.csv`. Returns the truth's path."""
    import soundfile as sf  # only here: the streaming demo needs no file I/O

    audio, songs = flysong_scene(seconds, rate_hz, np.random.default_rng(seed))
    folder.mkdir(parents=True, exist_ok=True)
    sf.write(folder / "scene.wav", audio, rate_hz, subtype="FLOAT")
    rows = ["file,start_seconds,end_seconds,label"]
    t = 0.0
    for song in songs:
        rows.append(f"scene.wav,{t:.4f},{song.start_s:.4f},{AMBIENT_LABEL}")
        rows.append(f"scene.wav,{song.start_s:.4f},{song.end_s:.4f},{song.label}")
        t = song.end_s
    rows.append(f"scene.wav,{t:.4f},{len(audio) / rate_hz:.4f},{AMBIENT_LABEL}")
    truth = folder / "truth.csv"
    truth.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return truth


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.audio.demo",
        description="Write a synthetic fly-song scene and its dense truth, to evaluate a"
        " fly-song model: soundwatch-train evaluate --model models/flysong --data"
        " <folder>/truth.csv",
    )
    parser.add_argument("folder", type=Path, help="where scene.wav and truth.csv go")
    parser.add_argument("--seconds", type=float, default=300.0, help="scene length, s")
    parser.add_argument("--seed", type=int, default=11, help="random seed")
    args = parser.parse_args(argv)
    truth = write_flysong_scene(args.folder, args.seconds, args.seed)
    print(f"wrote {args.folder / 'scene.wav'} and {truth}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
