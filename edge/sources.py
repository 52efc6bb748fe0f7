"""Where the daemon's audio comes from, decided before it runs: whether there is an input device
to open (source kind `auto`), the device opened early so its sound server is delivering by the
first block, and which channels get a detector of their own."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from edge.config import SourceConfig
from edge.errors import AudioError

if TYPE_CHECKING:  # imported when used: it needs PortAudio
    from edge.audio.live import LiveSource


def open_device(source: SourceConfig, stop: threading.Event) -> LiveSource | None:
    """The live source, its device opened (its stream still to come), for kind device, or
    auto with an input device; None otherwise."""
    if source.kind not in ("device", "auto") or (source.kind == "auto" and not has_input_device()):
        return None
    from edge.audio.live import LiveSource

    live = LiveSource(
        source.device,
        sample_rate_hz=source.sample_rate_hz,
        channels=source.channels,
        block_seconds=source.block_seconds,
        buffer_seconds=source.buffer_seconds,
        stop=stop,
        device_timeout_seconds=source.device_timeout_seconds,
        reconnect_min_seconds=source.reconnect_min_seconds,
        reconnect_max_seconds=source.reconnect_max_seconds,
        max_lag_seconds=source.max_lag_seconds,
    )
    live.open()
    return live


def has_input_device() -> bool:
    try:
        from edge.audio.capture import list_devices

        return bool(list_devices())
    except (OSError, AudioError):  # no PortAudio library at all: no device either
        return False


def detected_channels(source: SourceConfig) -> list[int | None]:
    """The channels with a detector of their own, as far as the config says (for Home
    Assistant's sensors): each of a device's channels with `channel: each`, else none."""
    if source.channel != "each":
        return [None]
    return list(range(source.channels))
