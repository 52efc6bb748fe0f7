"""edge.audio.capture against a real PortAudio device: a private PulseAudio
server's virtual sink."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge.audio.capture import Capture, DeviceInfo, format_devices, list_devices, resolve_device
from edge.errors import AudioError
from tests.audio import peak_frequency_hz, rms, rms_dbfs, tone, write_wav
from tests.conftest import PulseServer

RATE_HZ = 48000


class CollectingWriter:
    """A stand-in ring buffer: copies blocks into one preallocated array until it is full."""

    def __init__(self, capacity_frames: int, channels: int = 1) -> None:
        self.samples = np.zeros((capacity_frames, channels), dtype=np.float32)
        self.frames = 0
        self.dropped = 0
        self.changed = threading.Event()

    def write(self, block: np.ndarray) -> None:
        room = len(self.samples) - self.frames
        taken = min(room, len(block))
        self.samples[self.frames : self.frames + taken] = block[:taken]
        self.frames += taken
        self.dropped += len(block) - taken
        self.changed.set()

    def captured(self) -> np.ndarray:
        return self.samples[: self.frames, 0]


def wait_for_frames(writer: CollectingWriter, frames: int, timeout_seconds: float) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while writer.frames < frames:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        writer.changed.wait(min(remaining, 0.05))
        writer.changed.clear()
    return True


# --- devices ----------------------------------------------------------------------------------


def test_list_devices_finds_pulse_and_default(pulse_server: PulseServer) -> None:
    devices = list_devices(rescan=True)
    names = [device.name for device in devices]
    assert "pulse" in names and "default" in names
    assert all(device.max_input_channels > 0 for device in devices)
    assert sum(device.is_default for device in devices) == 1
    pulse = devices[names.index("pulse")]
    assert pulse.hostapi == "ALSA"
    assert pulse.default_sample_rate_hz > 0

    table = format_devices(devices)
    assert "pulse" in table and "default" in table and "* = default input device" in table
    assert len(table.splitlines()) == len(devices) + 2
    assert format_devices([]) == "no audio input devices found"


def test_resolve_default_by_name_and_by_index(pulse_server: PulseServer) -> None:
    devices = list_devices()
    default = resolve_device(None)
    assert default.is_default

    pulse = resolve_device("PUL")  # case-insensitive substring
    assert pulse.name == "pulse"
    assert resolve_device(pulse.index) == pulse
    assert resolve_device(str(pulse.index)) == pulse  # a CLI passes digits as text
    assert resolve_device(pulse) is pulse
    assert resolve_device("Default").name == "default"
    assert {device.index for device in devices} >= {default.index, pulse.index}


def test_resolve_prefers_exact_name_over_substring(
    pulse_server: PulseServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = [
        DeviceInfo(0, "USB Audio", "ALSA", 2, 48000.0, False),
        DeviceInfo(1, "USB Audio Device", "ALSA", 2, 48000.0, True),
        DeviceInfo(2, "USB Microphone", "ALSA", 1, 44100.0, False),
    ]
    monkeypatch.setattr("edge.audio.capture.list_devices", lambda rescan=False: fake)
    assert resolve_device("usb audio").index == 0
    assert resolve_device("microphone").index == 2
    with pytest.raises(AudioError) as caught:
        resolve_device("usb")
    message = str(caught.value)
    assert "ambiguous" in message and "'USB Audio' (index 0)" in message
    assert "'USB Microphone' (index 2)" in message


def test_resolve_unknown_name_lists_devices(pulse_server: PulseServer) -> None:
    with pytest.raises(AudioError) as caught:
        resolve_device("no-such-microphone")
    message = str(caught.value)
    assert "no input device matches 'no-such-microphone'" in message
    assert "'pulse' (index" in message and "'default' (index" in message


def test_resolve_unknown_index_lists_devices(pulse_server: PulseServer) -> None:
    with pytest.raises(AudioError, match=r"no input device with index 999; available.*'pulse'"):
        resolve_device(999)


def test_resolve_without_any_input_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edge.audio.capture.list_devices", lambda rescan=False: [])
    with pytest.raises(AudioError, match="no audio input devices found"):
        resolve_device(None)


# --- refused settings -------------------------------------------------------------------------


def test_refused_sample_rate_names_device_and_rates(pulse_server: PulseServer) -> None:
    with pytest.raises(AudioError) as caught:
        Capture(CollectingWriter(10), device="pulse", sample_rate_hz=1_000_000)
    message = str(caught.value)
    assert message.startswith("input device 'pulse' (index")
    assert "refuses 1000000 Hz with 1 channel(s) (Invalid sample rate)" in message
    assert "rates it accepts: 8000," in message and "48000" in message


def test_too_many_channels(pulse_server: PulseServer) -> None:
    pulse = resolve_device("pulse")
    channels = pulse.max_input_channels + 1
    with pytest.raises(AudioError) as caught:
        Capture(CollectingWriter(10), device=pulse, channels=channels)
    assert str(caught.value) == (
        f"input device 'pulse' (index {pulse.index}) has {pulse.max_input_channels} "
        f"input channel(s); {channels} requested"
    )


def test_bad_block_seconds(pulse_server: PulseServer) -> None:
    with pytest.raises(AudioError, match="block_seconds must be positive"):
        Capture(CollectingWriter(10), device="default", block_seconds=0)


# --- capture ----------------------------------------------------------------------------------


def test_capture_properties(pulse_server: PulseServer) -> None:
    capture = Capture(CollectingWriter(10), device="default", sample_rate_hz=16000)
    try:
        assert capture.sample_rate_hz == 16000
        assert capture.channels == 1
        assert capture.device_name == "default"
        assert capture.block_frames == 1600
        assert not capture.active
    finally:
        capture.close()
        capture.close()  # idempotent


def test_captured_tone_matches_what_was_played(pulse_server: PulseServer, tmp_path: Path) -> None:
    freq_hz = 1000.0
    amplitude = 0.5
    played = tone(freq_hz, 1.5, RATE_HZ, amplitude)
    wav = write_wav(tmp_path / "tone.wav", played, RATE_HZ)

    writer = CollectingWriter(capacity_frames=RATE_HZ * 30)
    with Capture(writer, device="default", sample_rate_hz=RATE_HZ, block_seconds=0.05) as capture:
        assert capture.wait_for_audio(timeout_seconds=10.0), "no audio callback within 10 s"
        assert capture.active
        pulse_server.play(wav)
        # Keep capturing for another 0.5 s so the tone's tail has arrived.
        assert wait_for_frames(writer, writer.frames + RATE_HZ // 2, timeout_seconds=10.0)
    assert not capture.active
    assert capture.frames_captured >= writer.frames
    assert capture.last_callback_monotonic > 0

    captured = writer.captured()
    # Locate the tone: 10 ms frames louder than half the played RMS.
    frame = RATE_HZ // 100
    levels = np.sqrt(np.mean(captured[: len(captured) // frame * frame].reshape(-1, frame) ** 2, 1))
    loud = np.flatnonzero(levels > rms(played) / 2)
    assert len(loud) > 100, f"tone not found in capture (max frame RMS {levels.max():.4f})"
    # The middle second of the loud part, away from onset and offset.
    middle = (loud[0] + loud[-1]) // 2 * frame
    steady = captured[middle - RATE_HZ // 2 : middle + RATE_HZ // 2]

    assert peak_frequency_hz(steady, RATE_HZ) == pytest.approx(freq_hz, abs=3.0)
    assert abs(rms_dbfs(steady) - rms_dbfs(played)) < 2.0
