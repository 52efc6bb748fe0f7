"""Time from sample counts: an anchor (UTC) plus samples / rate, never the wall clock per block.

Files take their anchor from a timestamp in the name (see `edge.audio.files.start_time_from_name`)
or from `--start`; a live stream from the wall clock at its first block. From there on, time is
counted in samples, so a stream of any length keeps exact time and gaps are explicit.
"""

from __future__ import annotations

from datetime import datetime, timezone


def parse_start(text: str) -> datetime:
    """An ISO 8601 time as UTC; a time without a zone is taken as UTC."""
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r} (e.g. 2026-11-22T10:23:14Z)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    return t.astimezone(timezone.utc)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def second_phase(anchor: datetime | None) -> float:
    """Seconds from a stream's first sample to the next whole UTC second, in [0, 1).

    From the anchor's microseconds, exactly: `-anchor.timestamp() % 1` carries the float error
    of a 1.8e9 s timestamp (up to 2.4e-7 s), which at 48 kHz can move a second's first sample
    by one."""
    if anchor is None:
        return 0.0
    return (-anchor.microsecond % 1_000_000) / 1e6
