"""What the config says about clips (the `clips:` section): rolls, limits, sample format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edge.schema import field


@dataclass(frozen=True)
class ClipSettings:
    enabled: bool = field(False, help="write a WAV clip of each event")
    folder: str = field("clips", help="where clips go; relative paths are under output.dir")
    pre_roll_seconds: float = field(
        2.0, ge=0, le=600, help="audio kept before each event's start, s"
    )
    post_roll_seconds: float = field(2.0, ge=0, le=600, help="audio kept after each event's end, s")
    max_clip_seconds: float = field(
        30.0,
        gt=0,
        le=3600,
        help="a clip stops this long after its event's start (post-roll included), s",
    )
    max_total_mb: float = field(
        1000.0, gt=0, le=1e9, help="oldest clips are deleted beyond this total, MB"
    )
    max_age_days: float = field(
        30.0, ge=0, le=36500, zero="keep", help="clips older than this are deleted, days (0: keep)"
    )
    min_free_mb: float = field(
        200.0, ge=0, le=1e9, help="no clip is written that would leave less free disk than this, MB"
    )
    sample_format: Literal["int16", "float32"] = field(
        "int16", help="WAV samples: int16 (smaller, plays anywhere) or float32 (exact)"
    )
