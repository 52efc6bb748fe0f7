"""What `run` needs of the machine before it listens, checked up front.

The files it reads (recordings to replay, the MQTT password and TLS files) and the folders it
writes (outputs, clips, the MQTT outbox). `soundwatch check` and `soundwatch run` both call
`preflight`, so `check` passes exactly what `run` starts with, and `run` refuses with every
problem at once instead of a traceback when the first row is written. What goes wrong later (a
disk that fills, a broker that goes away) is not a start-up problem: the daemon degrades then.
"""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path

from edge.audio.files import find_audio_files
from edge.config import Loaded
from edge.errors import SoundwatchError
from edge.outputs.mqtt.broker import make_client


def outbox_path(loaded: Loaded) -> Path:
    """The MQTT outbox: `mqtt.outbox`, else `mqtt-outbox.sqlite3` in `output.dir`."""
    config = loaded.config
    return loaded.resolve(
        config.mqtt.outbox or str(Path(config.output.dir) / "mqtt-outbox.sqlite3")
    )


def clips_folder(loaded: Loaded) -> Path:
    """Where clips go. Absolute, so the path in an event means the same to whoever reads it."""
    config = loaded.config
    return (loaded.resolve(config.output.dir) / config.clips.folder).absolute()


def preflight(loaded: Loaded) -> list[str]:
    """Every problem `run` would meet starting with this config, one line each ("key: what")."""
    config = loaded.config
    problems: list[str] = []
    if config.source.kind == "files":
        for given in config.source.paths:
            try:
                find_audio_files([loaded.resolve(given)])
            except SoundwatchError as exc:
                problems.append(f"source.paths: {exc}")
    if config.output.files:
        problems += _writable("output.dir", loaded.resolve(config.output.dir))
    if config.clips.enabled:
        problems += _writable("clips.folder", clips_folder(loaded))
    if config.mqtt.host:
        try:  # reads the password and the TLS files as the daemon's client will
            make_client(config.mqtt, "soundwatch-check", loaded.resolve)
        except SoundwatchError as exc:
            problems.append(str(exc))
        problems += _writable("mqtt.outbox", outbox_path(loaded).parent)
    if config.web.enabled:
        from edge.review.server import review_token

        try:  # off loopback, the page needs its token now, not at the first request
            review_token(config.web.host, "web.host:")
        except SoundwatchError as exc:
            problems.append(str(exc))
    return problems


def _writable(key: str, folder: Path) -> list[str]:
    """[] when `folder` exists or can be made, and takes a file; else the one problem. Folders
    made to find out are removed again (`run` makes them when it writes)."""
    made = [p for p in (folder, *folder.parents) if not p.exists()]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".soundwatch-check-"):
            pass
    except OSError as exc:
        return [f"{key}: {folder}: cannot write there ({exc.strerror or exc})"]
    finally:
        for path in made:  # deepest first
            with contextlib.suppress(OSError):
                path.rmdir()
    return []
