"""Live input as one endless stream that survives the microphone going away, and sheds load.

`LiveSource.stream()` gives the daemon a single `Stream` for its whole life. Underneath, capture
sessions come and go:

- **Device lost.** PortAudio stops the stream (a driver error, PulseAudio losing its source) or
  no callback arrives for `device_timeout_seconds` (a USB microphone pulled out often just goes
  quiet). The audio still in the ring is delivered, the stream is closed, and the source
  retries: re-scan PortAudio's devices (only possible with no stream open), reopen, wait for
  the first block, with a delay that doubles from `reconnect_min_seconds` up to
  `reconnect_max_seconds`. A device absent at start is the same case from the first second.
- **Missing time.** The stream's clock (edge/audio/streamclock.py) is tied to the monotonic
  clock at its first frame. While the device is away, a `Gap(reason="device")` is delivered
  about every second (so the per-second CSV, the metrics and the watchdog go on), and when it
  is back one last gap brings the stream's position to the new session's first frame: the gap
  is the time without audio, measured, not guessed. The reconnect also corrects any drift
  between the sound card's clock and the system's. (A stream that runs ahead, which a device
  with a fast clock can do, is not moved back: its next gap is just shorter.)
- **Wake-ups.** The reader sleeps until the audio the next window needs is in (`want`), and
  reads the ring once when it wakes.
- **Rate.** Reopening asks for the rate the stream has. A device that now refuses it is opened
  at its own default instead, and the gap says so (`resume_rate_hz`): `feed` re-tunes the
  resampler and time goes on in seconds. When the device was absent at start and no rate was
  configured, the stream begins at 48 kHz and the first reconnect sets the real rate.
- **Load shedding.** When analysis falls behind by more than `max_lag_seconds` (the unread
  audio in the ring), all unread audio but the newest block is dropped and delivered as
  `Gap(reason="overload")`: the daemon stays near real time and says what it did not analyse,
  rather than drifting up to a full ring behind and losing audio as overruns there. It stops
  by itself when analysis keeps up again.

Counters for metrics (`overruns`, `reconnects`, `connected`, `fill_ratio`, `lag_seconds`) are
read by other threads; each is written by the processing thread or the audio callback only.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Generator, Iterator
from datetime import timedelta

import numpy as np

from edge.audio.capture import (
    Capture,
    DeviceInfo,
    SettingsRefused,
    accepts,
    rescan_devices,
    resolve_device,
)
from edge.audio.ringbuffer import RingBuffer
from edge.audio.streamclock import StreamClock
from edge.audio.streams import Gap, Stream
from edge.clock import utc_now
from edge.errors import AudioError

logger = logging.getLogger(__name__)

FALLBACK_RATE_HZ = 48000  # stream rate while a device absent at start has not told its own
GAP_EVERY_SECONDS = 1.0  # while the device is away, a gap about this often
# Gaps delivered while waiting stop this far short of now, so that the new session's first
# frame (captured about one block before its callback) never lies before audio already counted.
GAP_MARGIN_SECONDS = 1.0
READ_BLOCKS = 4  # blocks read from the ring at a time, beyond the most `want` asks for
WAKE_SECONDS = 0.25  # the longest the reader sleeps (stop, a silent device); the most it wants
SHED_LOG_SECONDS = 60.0  # load shedding is logged at most this often


class LiveSource:
    """An input device as one endless `Stream`; see the module docstring.

    `device`: index, name substring, or None for the default input. `sample_rate_hz`: None
    takes the device's default. `max_lag_seconds`: None never sheds load (then only the ring's
    overruns drop audio). `first_audio_timeout_seconds`: how long a newly opened stream may
    take to deliver its first block."""

    def __init__(
        self,
        device: int | str | None,
        *,
        sample_rate_hz: int | None,
        channels: int,
        block_seconds: float,
        buffer_seconds: float,
        stop: threading.Event,
        device_timeout_seconds: float = 5.0,
        reconnect_min_seconds: float = 0.5,
        reconnect_max_seconds: float = 30.0,
        max_lag_seconds: float | None = None,
        first_audio_timeout_seconds: float = 10.0,
    ) -> None:
        self.device = device
        self.sample_rate_hz = sample_rate_hz
        self.channels = channels
        self.block_seconds = block_seconds
        self.buffer_seconds = buffer_seconds
        self.stop = stop
        self.device_timeout_seconds = device_timeout_seconds
        self.reconnect_min_seconds = reconnect_min_seconds
        self.reconnect_max_seconds = reconnect_max_seconds
        self.max_lag_seconds = max_lag_seconds
        self.first_audio_timeout_seconds = first_audio_timeout_seconds

        self.name = "default input" if device is None else str(device)
        self.connected = False
        self.reconnects = 0  # sessions opened after the first
        self.problem = ""  # why the device is not connected, for the status line
        self.overload_seconds = 0.0  # audio dropped by load shedding
        self._capture: Capture | None = None
        self._ring: RingBuffer | None = None
        self._past_overruns = 0  # of sessions already closed
        self._clock = StreamClock(sample_rate_hz or FALLBACK_RATE_HZ)
        self._last_problem, self._last_shed_log = "", -math.inf
        self._want_frames = 0  # see `want`

    # -- read from any thread -----------------------------------------------------------------

    @property
    def overruns(self) -> int:
        """Times audio was lost before analysis could read it: ring overruns and PortAudio
        input overflows, over all sessions."""
        total = self._past_overruns
        ring, capture = self._ring, self._capture
        if ring is not None:
            total += ring.overruns
        if capture is not None:
            total += capture.input_overflows
        return total

    @property
    def fill_ratio(self) -> float:
        """Unread audio as a fraction of the ring buffer."""
        ring = self._ring
        return 0.0 if ring is None else ring.fill_ratio

    @property
    def lag_seconds(self) -> float:
        """Audio captured but not yet read by analysis, s."""
        ring = self._ring
        return 0.0 if ring is None else ring.available_frames / self._clock.rate_hz

    # -- the processing thread ----------------------------------------------------------------

    def want(self, frames: int) -> None:
        """Deliver the next audio once `frames` more have come (at most WAKE_SECONDS' worth):
        the analyser's next window needs them, and waking for less would find nothing to do."""
        self._want_frames = min(frames, round(WAKE_SECONDS * self._clock.rate_hz))

    def open(self) -> None:
        """Start the device now, to deliver by the time `stream()` is called (a sound server
        takes 0.5-2 s); the audio waits in the ring. A failure is left for `stream()`."""
        try:
            self._start_capture()
        except AudioError:
            self._close_session()

    def stream(self) -> Stream:
        """Open the device (unless `open()` did) and return the stream; with the device
        absent, the stream begins with it missing and reconnects. Raises SettingsRefused when
        the device is there but refuses the configured rate or channels: a config mistake,
        not worth waiting for."""
        try:
            capture = self._capture or self._start_capture()
        except SettingsRefused:
            self._close_session()
            raise
        except AudioError as exc:
            self._close_session()
            return self._absent_at_start(str(exc))
        deadline = time.monotonic() + self.first_audio_timeout_seconds
        while not capture.wait_for_audio(0.25):
            if self.stop.is_set() or time.monotonic() > deadline:
                break
        if not capture.wait_for_audio(0):
            self._close_session()
            return self._absent_at_start(
                f"input device {capture.device.describe()}: no audio within"
                f" {self.first_audio_timeout_seconds:g} s"
            )
        self.name = capture.device_name
        clock = self._clock
        clock.start(self._first_frame_monotonic(capture), capture.sample_rate_hz)
        anchor = utc_now() - timedelta(seconds=time.monotonic() - clock.zero_monotonic)
        self.connected = True
        blocks = self._blocks()
        return Stream(self.name, anchor, clock.rate_hz, self.channels, blocks, want=self.want)

    def _absent_at_start(self, problem: str) -> Stream:
        self._complain(problem)
        self._clock.start(time.monotonic())
        rate_hz, blocks = self._clock.rate_hz, self._blocks()
        return Stream(self.name, utc_now(), rate_hz, self.channels, blocks, want=self.want)

    def _blocks(self) -> Iterator[np.ndarray | Gap]:
        try:
            while not self.stop.is_set():
                if self._capture is None:
                    yield from self._reconnect()
                else:
                    yield from self._drain()
        finally:
            self._close_session()

    def _gap(self, frames: int, reason: str) -> Gap:
        self._clock.count(frames)
        return Gap(frames, reason)

    def _drain(self) -> Iterator[np.ndarray | Gap]:
        """Deliver the session's audio until the device is lost or stop is set."""
        capture, ring = self._capture, self._ring
        assert capture is not None and ring is not None
        rate_hz = self._clock.rate_hz
        frames = capture.block_frames * READ_BLOCKS + round(WAKE_SECONDS * rate_hz)
        buffer = np.empty((frames, self.channels), dtype=np.float32)
        max_lag = math.inf if self.max_lag_seconds is None else self.max_lag_seconds * rate_hz
        while not self.stop.is_set():
            wanted = ring.read_frames_total + max(1, self._want_frames)
            capture.wait_for_frames(wanted, WAKE_SECONDS)
            yield from self._read_all(ring, buffer, max_lag, keep=capture.block_frames)
            silent = time.monotonic() - capture.last_callback_monotonic
            if not capture.active or silent > self.device_timeout_seconds:
                why = (
                    "the stream stopped (device error or unplugged)"
                    if not capture.active
                    else f"no audio for {silent:.1f} s (unplugged or stalled)"
                )
                yield from self._read_all(ring, buffer)  # what came before it went
                self._close_session()
                self._complain(f"input device {capture.device.describe()}: {why}")
                return

    def _read_all(
        self, ring: RingBuffer, buffer: np.ndarray, max_lag: float = math.inf, keep: int = 0
    ) -> Iterator[np.ndarray | Gap]:
        """What the ring holds, until a read finds less than a buffer (one read a hop) or
        stop; beyond `max_lag` unread frames, all but the newest `keep` are shed first."""
        while not self.stop.is_set():
            if ring.available_frames > max_lag:
                yield from self._shed(ring, buffer, keep)
            n, dropped = ring.read(buffer)
            if dropped:
                yield self._gap(dropped, "overrun")
            if n:
                self._clock.count(n)
                yield buffer[:n]
            if n < len(buffer):  # empty: what comes meanwhile waits for the next `want`
                return

    def _shed(self, ring: RingBuffer, buffer: np.ndarray, keep: int) -> Iterator[Gap]:
        """Drop all unread audio but the newest `keep` frames, as an overload gap."""
        to_drop = ring.available_frames - keep
        shed = 0
        while to_drop > 0:
            n, dropped = ring.read(buffer[: min(len(buffer), to_drop)])
            if dropped:  # overruns lie before what this read returned
                if shed:
                    yield self._gap(shed, "overload")
                    shed = 0
                yield self._gap(dropped, "overrun")
            if n == 0:
                break
            shed += n
            to_drop -= n
            self.overload_seconds += n / self._clock.rate_hz
        if shed:
            yield self._gap(shed, "overload")
        now = time.monotonic()
        if now - self._last_shed_log > SHED_LOG_SECONDS:
            self._last_shed_log = now
            logger.warning(
                "analysis is more than %g s behind: dropping audio it cannot analyse"
                " (gap:overload; %.1f s so far)",
                self.max_lag_seconds,
                self.overload_seconds,
            )

    def _reconnect(self) -> Iterator[Gap]:
        """Retry with backoff until a new session delivers audio (or stop); gaps meanwhile."""
        delay = self.reconnect_min_seconds
        lost_at = time.monotonic()
        while not self.stop.is_set():
            yield from self._gaps_until(time.monotonic() - GAP_MARGIN_SECONDS)
            try:
                capture = self._start_capture(self._clock.rate_hz, rescan=True)
            except AudioError as exc:
                self._close_session()
                self._complain(str(exc), retry_in=delay)
            else:
                got_audio = yield from self._await_audio(capture)
                if got_audio:
                    yield self._resume(capture, lost_at)
                    return
                self._close_session()
                if self.stop.is_set():
                    return
                self._complain(
                    f"input device {capture.device.describe()}: no audio within"
                    f" {self.first_audio_timeout_seconds:g} s",
                    retry_in=delay,
                )
            deadline = time.monotonic() + delay
            while not self.stop.wait(min(GAP_EVERY_SECONDS, max(0.0, deadline - time.monotonic()))):
                yield from self._gaps_until(time.monotonic() - GAP_MARGIN_SECONDS)
                if time.monotonic() >= deadline:
                    break
            delay = min(delay * 2, self.reconnect_max_seconds)

    def _await_audio(self, capture: Capture) -> Generator[Gap, None, bool]:
        """Wait for the session's first block (a generator: gaps go on meanwhile)."""
        deadline = time.monotonic() + self.first_audio_timeout_seconds
        while not capture.wait_for_audio(min(0.25, max(0.0, deadline - time.monotonic()))):
            if self.stop.is_set() or time.monotonic() >= deadline:
                return False
            yield from self._gaps_until(time.monotonic() - GAP_MARGIN_SECONDS)
        return True

    def _gaps_until(self, monotonic: float) -> Iterator[Gap]:
        """A device gap up to `monotonic`, if the stream's position is behind it."""
        missing = self._clock.gap_due(monotonic, GAP_EVERY_SECONDS)
        if missing:
            yield self._gap(missing, "device")

    def _resume(self, capture: Capture, lost_at: float) -> Gap:
        """The last device gap: up to the new session's first frame, announcing its rate."""
        rate = capture.sample_rate_hz
        missing, new_rate = self._clock.resume(self._first_frame_monotonic(capture), rate)
        gap = Gap(missing, "device", new_rate)
        self.reconnects += 1
        self.connected = True
        self.problem = self._last_problem = ""
        self.name = capture.device_name
        logger.info(
            "input device %s is back after %.1f s; listening at %d Hz",
            capture.device.describe(),
            time.monotonic() - lost_at,
            rate,
        )
        return gap

    def _start_capture(self, rate_hz: int | None = None, rescan: bool = False) -> Capture:
        """A started session at `rate_hz` (None: as configured, else the device's default).
        A reopen (`rate_hz` given) probes the device first, quietly, and opens one that now
        refuses `rate_hz` at its own default rate. `rescan`: re-enumerate PortAudio's devices
        first (a replugged USB device has a new index, or is new to PortAudio)."""
        if rescan:
            try:
                rescan_devices()
            except Exception as exc:  # PortAudio failing to start up: as good as no device
                raise AudioError(f"PortAudio cannot list devices: {exc}") from None
        info = resolve_device(self.device)
        default_hz = round(info.default_sample_rate_hz)
        rate = rate_hz or self.sample_rate_hz or default_hz
        if rate_hz is not None and not accepts(info, rate, self.channels):
            if default_hz == rate or not accepts(info, default_hz, self.channels):
                raise AudioError(
                    f"input device {info.describe()} does not open"
                    f" ({rate} Hz, {self.channels} channel(s))"
                )
            logger.warning(
                "input device %s now refuses %d Hz: opening it at its default %d Hz",
                info.describe(),
                rate,
                default_hz,
            )
            rate = default_hz
        capture = self._open(info, rate)
        capture.start()
        return capture

    def _open(self, info: DeviceInfo, rate_hz: int) -> Capture:
        ring = RingBuffer(max(1, round(self.buffer_seconds * rate_hz)), self.channels)
        capture = Capture(ring, info, rate_hz, self.channels, self.block_seconds)
        self._capture, self._ring = capture, ring
        return capture

    def _first_frame_monotonic(self, capture: Capture) -> float:
        """When the session's first frame was captured: the latest callback, less what came."""
        return capture.last_callback_monotonic - capture.frames_captured / capture.sample_rate_hz

    def _close_session(self) -> None:
        capture, ring = self._capture, self._ring
        if capture is not None:
            capture.close()
            self._past_overruns += capture.input_overflows
        if ring is not None:
            self._past_overruns += ring.overruns
        self._capture, self._ring, self.connected = None, None, False

    def _complain(self, problem: str, retry_in: float | None = None) -> None:
        """Log a problem once (debug when it repeats), so an outage of days is one line."""
        self.problem = problem
        level = logging.WARNING if problem != self._last_problem else logging.DEBUG
        self._last_problem = problem
        then, most = "waiting for it to come back", self.reconnect_max_seconds
        if retry_in is not None:
            then = f"retrying in {retry_in:g} s (then at most every {most:g} s)"
        logger.log(level, "%s; %s", problem, then)
