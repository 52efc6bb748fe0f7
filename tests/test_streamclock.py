"""The live stream's clock (edge/audio/streamclock.py) with plain numbers: no device, no waiting."""

from __future__ import annotations

from edge.audio.streamclock import StreamClock


def test_missing_time_is_the_monotonic_clock_less_what_was_delivered() -> None:
    clock = StreamClock(48000)
    clock.start(100.0)
    clock.count(48000)  # 1 s of audio
    assert clock.seconds == 1.0
    assert clock.missing(101.0) == 0
    assert clock.missing(101.5) == 24000
    # Device gaps come about once a second, not for every fraction of one.
    assert clock.gap_due(101.5, every_seconds=1.0) == 0
    assert clock.gap_due(102.25, every_seconds=1.0) == 60000
    clock.count(60000)
    assert clock.missing(102.25) == 0 and clock.seconds == 2.25


def test_a_reconnect_gap_reaches_the_new_sessions_first_frame() -> None:
    """3 s of audio, the device gone at 103 s, back with its first frame at 110.25 s: the last
    gap is the 7.25 s without audio, and the stream is at 10.25 s, in step with the clock."""
    clock = StreamClock(48000)
    clock.start(100.0)
    clock.count(3 * 48000)
    assert clock.resume(110.25, 48000) == (7.25 * 48000, None)
    assert clock.seconds == 10.25
    assert clock.missing(110.25) == 0


def test_a_device_back_at_another_rate_keeps_the_seconds_and_counts_anew() -> None:
    clock = StreamClock(48000)
    clock.start(100.0)
    clock.count(3 * 48000)
    frames, rate = clock.resume(110.25, 44100)
    assert (frames, rate) == (7.25 * 48000, 44100)  # the gap in the old rate's frames
    assert (clock.base_seconds, clock.frames, clock.rate_hz) == (10.25, 0, 44100)
    clock.count(44100)
    assert clock.seconds == 11.25
    assert clock.missing(112.25) == 44100  # one second at the new rate
    # A second change stacks on the first.
    assert clock.resume(113.25, 16000) == (2 * 44100, 16000)
    assert clock.seconds == 13.25 and clock.missing(114.25) == 16000


def test_a_stream_ahead_of_the_clock_is_never_moved_back() -> None:
    """A sound card whose clock runs fast delivers more than the monotonic clock allows: no
    gap (never a negative one), and the next gap is just shorter."""
    clock = StreamClock(16000)
    clock.start(0.0)
    clock.count(16000 * 10 + 160)  # 10.01 s by 10 s of monotonic time
    assert clock.missing(10.0) == -160
    assert clock.gap_due(10.0, every_seconds=1.0) == 0
    assert clock.resume(10.0, 16000) == (0, None)
    assert clock.seconds == 10.01
    assert clock.gap_due(12.01, every_seconds=1.0) == 32000


def test_start_ties_the_stream_to_its_first_frame_and_takes_the_devices_rate() -> None:
    """A device absent at start: the stream begins at the fallback rate; a device found at
    start sets the rate it opened at."""
    clock = StreamClock(48000)
    clock.start(5.0, 32000)
    assert clock.rate_hz == 32000
    assert clock.missing(6.0) == 32000
