"""Live input through sounddevice (PortAudio): list and pick input devices, capture into a ring.

The audio callback runs on PortAudio's thread and does only this: copy the block into the ring
buffer, count overflows, note the time, set the first-audio event and name its thread (once a
session) and, once `wake_at` frames have been captured, write one byte to a pipe
(`wait_for_frames` sleeps on it, so the consumer wakes when the audio it wants has landed rather
than polling or waking for every block). No logging, no locks, no allocation of our own per
block (sounddevice wraps each block in a numpy view, which we cannot avoid). Everything that can
fail is checked before the stream opens, so a wrong device, rate or channel count is one
AudioError line that names the device and what it supports, not a PortAudio traceback.

PortAudio enumerates devices once, when it is initialised (at `import sounddevice`). A device
plugged in later, or a sound server started later (PULSE_SERVER), is only seen after
`rescan_devices()`, which re-initialises PortAudio; do that only while no stream is open.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol

import numpy as np

from edge.errors import AudioError
from edge.threads import name_os_thread

try:
    import sounddevice as sd
except OSError as error:  # sounddevice loads the PortAudio C library at import
    raise AudioError(
        f"live capture needs the PortAudio library ({error}); "
        "install it with: apt-get install -y libportaudio2"
    ) from None

# Rates tried when a device refuses the requested one, to tell the user what would work.
_COMMON_RATES_HZ = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000, 192000)
CALLBACK_THREAD = "audio-callback"  # its name in the OS (top -H, the live bench)


class SettingsRefused(AudioError):
    """The device is there and works, but not with these settings (rate, channels): a config
    mistake, not a missing device, so the daemon stops with it at start instead of waiting."""


class BlockWriter(Protocol):
    """Where captured audio goes: `edge.audio.ringbuffer.RingBuffer` or anything with `write`."""

    def write(self, block: np.ndarray) -> object:
        """Copy `block` (frames, channels) float32 in; must not block or allocate."""
        ...


@dataclass(frozen=True)
class DeviceInfo:
    """One PortAudio input device."""

    index: int
    """PortAudio device index; valid until the next `rescan_devices()`."""
    name: str
    hostapi: str
    """Host API name (ALSA, JACK, Core Audio, ...)."""
    max_input_channels: int
    default_sample_rate_hz: float
    is_default: bool
    """True for the system's default input device."""

    def describe(self) -> str:
        """Short form for messages: `'pulse' (index 0)`."""
        return f"{self.name!r} (index {self.index})"


def rescan_devices() -> None:
    """Make PortAudio enumerate devices again (new USB microphone, sound server started).

    Re-initialises PortAudio, which closes any open stream: call it only while none is open.
    """
    # sounddevice has no public rescan. PortAudio enumerates in Pa_Initialize; sounddevice
    # initialises once at import, so one terminate (count 1 -> 0, real shutdown) and one
    # initialise (0 -> 1) re-enumerate and leave sounddevice's own count as it was.
    sd._terminate()
    sd._initialize()


def list_devices(rescan: bool = False) -> list[DeviceInfo]:
    """All devices with at least one input channel, in PortAudio index order.

    `rescan=True` re-enumerates first (see `rescan_devices`).
    """
    if rescan:
        rescan_devices()
    default_index = _default_input_index()
    hostapi_names = [str(api["name"]) for api in sd.query_hostapis()]
    devices = []
    for raw in sd.query_devices():
        if int(raw["max_input_channels"]) <= 0:
            continue
        index = int(raw["index"])
        devices.append(
            DeviceInfo(
                index=index,
                name=str(raw["name"]),
                hostapi=hostapi_names[int(raw["hostapi"])],
                max_input_channels=int(raw["max_input_channels"]),
                default_sample_rate_hz=float(raw["default_samplerate"]),
                is_default=index == default_index,
            )
        )
    return devices


def format_devices(devices: list[DeviceInfo]) -> str:
    """A table of input devices for `soundwatch devices`; the default is marked with `*`."""
    if not devices:
        return "no audio input devices found"
    name_width = max(len("name"), *(len(device.name) for device in devices))
    api_width = max(len("host API"), *(len(device.hostapi) for device in devices))
    lines = [
        f"  {'index':>5}  {'name':<{name_width}}  {'host API':<{api_width}}  channels  rate Hz"
    ]
    for device in devices:
        mark = "*" if device.is_default else " "
        lines.append(
            f"{mark} {device.index:>5}  {device.name:<{name_width}}  "
            f"{device.hostapi:<{api_width}}  {device.max_input_channels:>8}  "
            f"{device.default_sample_rate_hz:>7.0f}"
        )
    lines.append("* = default input device")
    return "\n".join(lines)


def resolve_device(spec: int | str | DeviceInfo | None) -> DeviceInfo:
    """The input device named by `spec`.

    None: the default input device. int, or a string of digits: that PortAudio index. Other
    strings: a case-insensitive substring of the device name; a name equal to `spec` (ignoring
    case) wins over longer names that contain it. Raises AudioError, listing the input devices,
    when nothing or more than one device matches or there are no input devices at all.
    """
    if isinstance(spec, DeviceInfo):
        return spec
    devices = list_devices()
    if not devices:
        raise AudioError(
            "no audio input devices found (PortAudio sees none: is a microphone connected, "
            "or PULSE_SERVER set for a sound server?)"
        )
    available = "available input devices: " + ", ".join(d.describe() for d in devices)
    if spec is None:
        for device in devices:
            if device.is_default:
                return device
        raise AudioError(f"no default input device; choose one by index or name; {available}")
    if isinstance(spec, int) or spec.strip().isdigit():
        index = int(spec)
        for device in devices:
            if device.index == index:
                return device
        raise AudioError(f"no input device with index {index}; {available}")
    wanted = spec.strip().casefold()
    matches = [device for device in devices if wanted in device.name.casefold()]
    exact = [device for device in matches if device.name.casefold() == wanted]
    if len(exact) == 1:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise AudioError(f"no input device matches {spec!r}; {available}")
    names = ", ".join(device.describe() for device in matches)
    raise AudioError(f"input device {spec!r} is ambiguous: matches {names}; use the index")


class Capture:
    """A PortAudio input stream that copies every block into `ring`.

    `device`: index, name substring, DeviceInfo, or None for the default input.
    `sample_rate_hz`: None takes the device's default rate. `block_seconds`: callback period,
    which sets the block size (`block_frames`). Construction checks everything and opens the
    stream (AudioError on any problem); `start()` begins capture. As a context manager it
    starts on entry and closes on exit, like sounddevice's own streams.

    Read from the callback thread, for the consumer and the watchdog:
    `input_overflows` (PortAudio input overflows: audio lost before it reached us),
    `frames_captured`, and `last_callback_monotonic` (`time.monotonic()` of the last callback,
    or of `start()` until the first one: a device that falls silent shows up as this ageing).
    """

    def __init__(
        self,
        ring: BlockWriter,
        device: int | str | DeviceInfo | None = None,
        sample_rate_hz: int | None = None,
        channels: int = 1,
        block_seconds: float = 0.1,
    ) -> None:
        self._ring = ring
        self._device = resolve_device(device)
        if not 1 <= channels <= self._device.max_input_channels:
            raise SettingsRefused(
                f"input device {self._device.describe()} has "
                f"{self._device.max_input_channels} input channel(s); {channels} requested"
            )
        rate_hz = (
            round(self._device.default_sample_rate_hz) if sample_rate_hz is None else sample_rate_hz
        )
        if rate_hz <= 0:
            raise AudioError(f"sample rate must be positive, got {rate_hz} Hz")
        if block_seconds <= 0:
            raise AudioError(f"block_seconds must be positive, got {block_seconds}")
        _check_settings(self._device, rate_hz, channels)
        self.block_frames = max(1, round(rate_hz * block_seconds))  # frames per callback
        self.input_overflows = 0
        self.frames_captured = 0
        self.wake_at = 0  # the consumer wakes at the block that brings frames_captured here
        self.last_callback_monotonic = time.monotonic()
        self._first_audio = threading.Event()
        # Wake-up bytes; non-blocking, so a consumer far behind never stalls the callback.
        self._wake_read, self._wake_write = os.pipe()
        for fd in (self._wake_read, self._wake_write):
            os.set_blocking(fd, False)
        try:
            self._stream = sd.InputStream(
                device=self._device.index,
                samplerate=rate_hz,
                channels=channels,
                dtype="float32",
                blocksize=self.block_frames,
                callback=self._callback,
            )
        except (sd.PortAudioError, ValueError) as error:
            self._close_wake()
            raise AudioError(
                f"cannot open input device {self._device.describe()} at {rate_hz} Hz, "
                f"{channels} channel(s): {_portaudio_reason(error)}"
            ) from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: copy and count only (see the module docstring).
        if status.input_overflow:
            self.input_overflows += 1
        self._ring.write(indata)
        self.frames_captured += frames
        self.last_callback_monotonic = time.monotonic()
        if not self._first_audio.is_set():  # once a session: set() takes a lock and notifies
            name_os_thread(CALLBACK_THREAD)  # PortAudio's thread, a new one each session
            self._first_audio.set()
        if self.frames_captured < self.wake_at:
            return
        try:  # noqa: SIM105 (contextlib.suppress would be an object per call)
            os.write(self._wake_write, b"\0")
        except BlockingIOError:  # the pipe is full: the consumer has bytes to wake on
            pass

    @property
    def sample_rate_hz(self) -> int:
        """Rate the stream actually runs at, Hz."""
        return round(self._stream.samplerate)

    @property
    def channels(self) -> int:
        """Channels per frame in the blocks written to the ring."""
        return int(self._stream.channels)

    @property
    def device(self) -> DeviceInfo:
        """The device being captured."""
        return self._device

    @property
    def device_name(self) -> str:
        """Name of the device being captured."""
        return self._device.name

    @property
    def active(self) -> bool:
        """True while the stream runs (False after stop, close, or when PortAudio gave up)."""
        return bool(self._stream.active)

    def start(self) -> None:
        """Start capturing; `wait_for_audio` then tells when the first block has arrived."""
        self._first_audio.clear()
        self.last_callback_monotonic = time.monotonic()
        try:
            self._stream.start()
        except sd.PortAudioError as error:
            raise AudioError(
                f"cannot start input device {self._device.describe()}: {_portaudio_reason(error)}"
            ) from None

    def wait_for_audio(self, timeout_seconds: float) -> bool:
        """Block until the first callback after `start()` (True) or the timeout (False).

        Sound servers take their time: on PulseAudio the first block comes 1-2 s after start.
        """
        return self._first_audio.wait(timeout_seconds)

    def wait_for_frames(self, frames_total: int, timeout_seconds: float) -> None:
        """Sleep until `frames_captured` reaches `frames_total` (woken by the block that
        brings it there, not by polling) or the timeout passes."""
        self.wake_at = frames_total
        deadline = time.monotonic() + timeout_seconds
        while self.frames_captured < frames_total:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._wake_read], [], [], left)[0]:
                return
            with contextlib.suppress(BlockingIOError):
                os.read(self._wake_read, 4096)

    def stop(self) -> None:
        """Stop capturing after the pending blocks; `start()` may be called again."""
        if not self._stream.closed and not self._stream.stopped:
            self._stream.stop()

    def close(self) -> None:
        """Stop and release the device; idempotent."""
        if not self._stream.closed:
            self._stream.close()
        self._close_wake()

    def _close_wake(self) -> None:
        if self._wake_read >= 0:
            os.close(self._wake_read)
            os.close(self._wake_write)
            self._wake_read = self._wake_write = -1

    def __enter__(self) -> Capture:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"Capture({self._device.describe()}, {self.sample_rate_hz} Hz, "
            f"{self.channels} ch, {self.block_frames} frames/block)"
        )


def _default_input_index() -> int:
    """PortAudio's default input device index, or -1 when there is none."""
    index = sd.default.device[0]
    if index is None or int(index) < 0:
        return -1
    return int(index)


def _portaudio_reason(error: Exception) -> str:
    """PortAudio's message without sounddevice's error-code suffix."""
    return str(error.args[0]) if error.args else str(error)


def accepts(device: DeviceInfo, rate_hz: float, channels: int) -> bool:
    """Whether `device` would open at these settings now: one PortAudio check, no stream.

    Cheaper and quieter than a failing `Capture` (which tries every common rate to explain
    itself; ALSA prints two lines to stderr for each try), for retrying a lost device.
    """
    try:
        sd.check_input_settings(
            device=device.index, channels=channels, dtype="float32", samplerate=rate_hz
        )
    except (sd.PortAudioError, ValueError):
        return False
    return True


def _check_settings(device: DeviceInfo, rate_hz: int, channels: int) -> None:
    """Raise AudioError naming the device and the rates it accepts if it refuses these."""
    try:
        sd.check_input_settings(
            device=device.index, channels=channels, dtype="float32", samplerate=rate_hz
        )
    except (sd.PortAudioError, ValueError) as error:
        accepted = [rate for rate in _COMMON_RATES_HZ if accepts(device, rate, channels)]
        rates = (
            f"rates it accepts: {', '.join(str(rate) for rate in accepted)} Hz"
            if accepted
            else "it accepts none of the common rates"
        )
        # A device that accepts no common rate at all is broken or gone (PulseAudio answers
        # so while its source is missing), not misconfigured.
        kind = SettingsRefused if accepted else AudioError
        raise kind(
            f"input device {device.describe()} refuses {rate_hz} Hz with {channels} "
            f"channel(s) ({_portaudio_reason(error)}); {rates} "
            f"(default {device.default_sample_rate_hz:.0f} Hz)"
        ) from None
