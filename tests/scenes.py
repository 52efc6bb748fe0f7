"""A recording with known tone events, and checks of detected events against that truth."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.audio import tone_events, write_wav

HOP_SECONDS = 0.1  # the tone bundle's hop: onsets and offsets must be within one hop

# (start s, end s, Hz): single tones, a long one, a short one, and two that overlap.
TRUTH = [
    (2.0, 3.0, 1000.0),
    (5.5, 6.2, 3000.0),
    (10.0, 12.5, 1000.0),
    (15.05, 15.65, 3000.0),
    (17.0, 18.0, 1000.0),
    (17.3, 18.6, 3000.0),
]
SECONDS = 20.0
LABEL_OF = {1000.0: "tone-1k", 3000.0: "tone-3k"}


def scene(rate_hz: int = 16000, seed: int = 1) -> np.ndarray:
    """Tones at the tone model's design level (0.3 peak) in noise of RMS 0.01."""
    return tone_events(rate_hz, SECONDS, TRUTH, noise_amplitude=0.01, tone_amplitude=0.3, seed=seed)


def write_scene(path: Path, rate_hz: int = 16000, seed: int = 1, channels: int = 1) -> Path:
    x = scene(rate_hz, seed)
    if channels > 1:
        x = np.repeat(x[:, None], channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_wav(path, x, rate_hz)
    return path


@dataclass(frozen=True)
class Found:
    label: str
    start: float
    end: float


def events_from_jsonl(path: Path) -> list[Found]:
    """Complete events (their `end` messages) from a JSONL file, by offsets."""
    found = []
    for line in path.read_text().splitlines():
        msg = json.loads(line)
        if msg["type"] == "end":
            found.append(Found(msg["label"], msg["start_offset"], msg["end_offset"]))
    return found


def check_against_truth(found: list[Found], tolerance: float = HOP_SECONDS) -> None:
    """Every true event found once with onset and offset within `tolerance`; nothing else."""
    unmatched = list(found)
    for start, end, hz in TRUTH:
        label = LABEL_OF[hz]
        hits = [f for f in unmatched if f.label == label and f.start < end and f.end > start]
        assert len(hits) == 1, f"{label} {start}-{end}: found {hits} in {found}"
        hit = hits[0]
        assert abs(hit.start - start) <= tolerance + 1e-6, f"onset {hit} vs {start}"
        assert abs(hit.end - end) <= tolerance + 1e-6, f"offset {hit} vs {end}"
        unmatched.remove(hit)
    assert unmatched == [], f"false events: {unmatched}"


Annotated = tuple[np.ndarray, list[tuple[float, float, str]]]


def write_annotated(
    folder: Path, seeds: Iterable[int], make: Callable[[int], Annotated], rate_hz: int
) -> Path:
    """`scene<seed>.wav` for each seed, from `make(seed)` (samples and (start, end, label)
    rows), and the `annotations.csv` that lists their rows: its path."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["file,start_seconds,end_seconds,label"]
    for seed in seeds:
        samples, rows = make(seed)
        write_wav(folder / f"scene{seed}.wav", samples, rate_hz)
        lines += [f"scene{seed}.wav,{a:.4f},{b:.4f},{label}" for a, b, label in rows]
    (folder / "annotations.csv").write_text("\n".join(lines) + "\n")
    return folder / "annotations.csv"
