"""The live stream's clock: where the stream is, in frames and seconds, against the monotonic clock.

A live stream (edge/audio/live.py) is tied to `time.monotonic()` at its first frame. Every frame
it delivers, audio or gap, moves it on; when the device is away, the difference between the
monotonic clock and the stream's position is the audio that is missing, and it is delivered as
a gap. A device back at another rate starts a new stretch: the seconds before it are kept, the
frames count anew at the new rate.

Pure: time is passed in (monotonic seconds), so it is tested with plain numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StreamClock:
    """The stream's position: `base_seconds` before the last rate change, then `frames` at
    `rate_hz` (audio and gaps both count), from `zero_monotonic`, the time.monotonic() of the
    stream's first frame, s."""

    rate_hz: int
    zero_monotonic: float = 0.0
    base_seconds: float = 0.0
    frames: int = 0

    @property
    def seconds(self) -> float:
        """The stream's position, s from its first frame."""
        return self.base_seconds + self.frames / self.rate_hz

    def start(self, zero_monotonic: float, rate_hz: int | None = None) -> None:
        """The stream's first frame was at `zero_monotonic` (s), at `rate_hz` (None: as is)."""
        self.zero_monotonic = zero_monotonic
        if rate_hz is not None:
            self.rate_hz = rate_hz

    def count(self, frames: int) -> None:
        """`frames` more frames delivered (audio or gap). Per block: plain arithmetic."""
        self.frames += frames

    def missing(self, monotonic: float) -> int:
        """Frames between the stream's position and `monotonic` (s); negative when the
        stream runs ahead of the monotonic clock (a device clock faster than the system's)."""
        elapsed = monotonic - self.zero_monotonic - self.base_seconds
        return round(elapsed * self.rate_hz) - self.frames

    def gap_due(self, monotonic: float, every_seconds: float) -> int:
        """The frames of a device gap up to `monotonic`, when at least `every_seconds` of
        audio are missing; else 0 (gaps come about every `every_seconds`, not every call)."""
        missing = self.missing(monotonic)
        return missing if missing >= self.rate_hz * every_seconds else 0

    def resume(self, first_frame_monotonic: float, rate_hz: int) -> tuple[int, int | None]:
        """A new session's first frame was at `first_frame_monotonic` (s), at `rate_hz`.

        Returns the last gap's frames (at the old rate; 0 when the stream is ahead: it is never
        moved back) and the new rate when it changed (None: same rate). The gap is counted;
        after a rate change the frames count anew at `rate_hz`."""
        missing = max(0, self.missing(first_frame_monotonic))
        self.count(missing)
        if rate_hz == self.rate_hz:
            return missing, None
        self.base_seconds += self.frames / self.rate_hz
        self.frames = 0
        self.rate_hz = rate_hz
        return missing, rate_hz
