"""`POST /api/infer`: score a WAV sent over HTTP with the daemon's bundle, through `scan`.

The body is checked (size, then readable audio) before anything is written, then scored by
`edge.scan.scan` into a temporary folder and read back by `ScanFolder`: the answer is exactly
what `soundwatch scan` would write for that file. The analyzer is a second one, built on the
first request from the daemon's config (again after a SIGHUP reload took over): the live
analyzer's state is never touched. One request
is scored at a time; others wait for it (the server answers each on its own thread).
"""

from __future__ import annotations

import io
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import soundfile as sf

from edge.config import Loaded
from edge.errors import SoundwatchError
from edge.review.scanfolder import ScanFolder

POSTED = "posted.wav"


class Scorer:
    """Scores posted WAVs with the bundle and rules of the config `current()` gives (the one
    running now); at most `max_bytes` a body."""

    def __init__(self, current: Callable[[], Loaded], max_bytes: int) -> None:
        self.current = current
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._analyzer: Any = None
        self._built_for: Loaded | None = None

    def load(self) -> None:
        """Build the analyzer now (else the first request does): a bad bundle is one line."""
        with self._lock:
            loaded = self.current()
            if self._analyzer is None or loaded is not self._built_for:
                from edge.builders import build_analyzer

                self._analyzer = build_analyzer(loaded)[1]
                self._built_for = loaded

    def check(self, length: int) -> None:
        """Refuse a body before reading it."""
        if length <= 0:
            raise SoundwatchError("body: empty; POST a WAV file (Content-Type: audio/wav)")
        if length > self.max_bytes:
            raise SoundwatchError(
                f"body: {length} bytes is more than the {self.max_bytes} allowed"
                " (web.max_upload_mb)"
            )

    def score(self, body: bytes) -> dict[str, Any]:
        """Per-second rows and events of the WAV in `body`, as `scan` writes them."""
        self.check(len(body))
        try:
            info = sf.info(io.BytesIO(body))
        except (RuntimeError, sf.LibsndfileError) as exc:
            # libsndfile's words after the object's repr: "Format not recognised."
            first = str(exc).splitlines()[0].rsplit(": ", 1)[-1] if str(exc) else "unknown"
            raise SoundwatchError(f"body: not a readable WAV file ({first})") from None
        if info.frames == 0:
            raise SoundwatchError("body: the WAV holds no audio")
        from edge.scan import scan

        self.load()
        with self._lock, tempfile.TemporaryDirectory(prefix="soundwatch-infer-") as tmp:
            folder = Path(tmp) / "in"
            folder.mkdir()
            (folder / POSTED).write_bytes(body)
            out = Path(tmp) / "out"
            report = scan(self._analyzer, [folder], out, device="infer", progress=False)
            if report.files_skipped:
                raise SoundwatchError("body: the WAV could not be scored (see the server's log)")
            results = ScanFolder(out)
            key = results.keys()[0]
            events = [{k: v for k, v in e.items() if k not in ("key", "source")}
                      for e in results.events()]  # fmt: skip
            seconds = results.seconds(key)
        manifest = self._analyzer.bundle.manifest
        return {
            "model": manifest.name,
            "model_version": manifest.version,
            "rate_hz": info.samplerate,
            "duration_seconds": info.frames / info.samplerate,
            "seconds": seconds,
            "events": events,
        }
