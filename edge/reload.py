"""SIGHUP: a re-read config and bundle, built into analyzers ready to take over.

The daemon (edge/app.py) asks for a reload between blocks and `Pending` runs it on a thread of
its own (a slow bundle must not stall the processing thread); `Reloader.prepare` re-reads the
config, loads the bundle it names and builds one Analyzer per running lane, each feeding that
lane's sink (its Evidence), and hands them back as a `Reload`. It changes nothing that runs: the
caller gives the analyzers to `feed` (edge/pipeline.py), which switches to them at the next
whole second of the stream, and applies the rest (levels and clips settings, the model's name in
messages and metrics) itself. A config or bundle that does not load gives None and one log
line, and the running setup stays as it was.

Only what the analyzers and the evidence use can change while capture goes on: the model, its
labels and event rules, sound levels and clips. Changes to the other sections (`LATER`) are
logged and take effect at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from edge.config import Loaded
from edge.detection.analysis import Analyzer
from edge.errors import SoundwatchError
from edge.model.bundle import Bundle
from edge.records import Sink

logger = logging.getLogger(__name__)

# A reload still loading after this long is given up (the running model stays): a bundle that
# takes minutes to open is broken, and its thread is left to finish on its own, unheard.
RELOAD_LIMIT_SECONDS = 60.0

# Config sections a reload does not apply: they shape the stream and the outputs, which live on.
LATER = ("source", "output", "mqtt", "metrics", "web", "log_level", "shadow")

Build = Callable[[Loaded, Sink], tuple[Bundle, Analyzer]]
"""Bundle and Analyzer for a config, feeding a sink; raises SoundwatchError on problems."""


@dataclass(frozen=True)
class Reload:
    """A reloaded config, built and not yet scoring: one analyzer per lane, in lane order."""

    loaded: Loaded
    bundle: Bundle
    analyzers: list[Analyzer]
    later: tuple[str, ...]  # sections (of LATER) that changed: applied at the next start
    evidence_changed: bool  # `levels` or `clips` changed: the lanes' Evidence takes them up

    @property
    def model(self) -> str:
        """`name version` of the reloaded model, for log lines."""
        return f"{self.bundle.manifest.name} {self.bundle.manifest.version}"


class Reloader:
    """Re-reads the config with `read_config` and builds analyzers for it with `build`."""

    def __init__(self, read_config: Callable[[], Loaded], build: Build) -> None:
        self.read_config = read_config
        self.build = build

    def prepare(self, running: Loaded, running_model: str, sinks: Sequence[Sink]) -> Reload | None:
        """The re-read config, with one analyzer per sink (lane); None, and one log line
        naming `running_model` (what stays), when the config or bundle does not load.

        `running`: the config in use, to tell which sections changed.
        """
        try:
            loaded = self.read_config()
            built = [self.build(loaded, sink) for sink in sinks]
        except SoundwatchError as exc:
            problem = "; ".join(str(exc).splitlines())
            logger.error("reload refused, still running model %s: %s", running_model, problem)
            return None
        except Exception as exc:  # a reload must never take the running daemon down
            logger.exception("reload refused, still running model %s: %s", running_model, exc)
            return None
        old, new = running.config, loaded.config
        later = tuple(name for name in LATER if getattr(old, name) != getattr(new, name))
        if later:
            logger.warning("reload: %s changed; that takes effect at the next start", list(later))
        bundle, first = built[0]
        reload = Reload(
            loaded,
            bundle,
            [analyzer for _, analyzer in built],
            later,
            (old.levels, old.clips) != (new.levels, new.clips),
        )
        logger.info(
            "reload: model %s (%s), labels %s; switching at the next whole second",
            reload.model,
            bundle.folder,
            ", ".join(s.label for s in first.labels),
        )
        return reload


class Pending:
    """A reload being prepared on a thread of its own, so that a slow one (a large model to
    open, a hostile manifest) never holds up the processing thread, which feeds the ring
    buffer's reader and the systemd watchdog. `poll` between blocks tells when it is ready."""

    def __init__(
        self,
        prepare: Callable[[], Reload | None],
        running_model: str,
        limit_seconds: float = RELOAD_LIMIT_SECONDS,
    ) -> None:
        self.running_model, self.limit_seconds = running_model, limit_seconds
        self.began = time.monotonic()
        self._result: Reload | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(prepare,), name="reload", daemon=True
        )
        self._thread.start()

    def _run(self, prepare: Callable[[], Reload | None]) -> None:
        try:
            self._result = prepare()  # logs its own refusals; never raises a SoundwatchError
        except Exception:  # a reload must never take the running daemon down
            logger.exception("reload refused, still running model %s", self.running_model)
        finally:
            self._done.set()

    def wait(self, seconds: float) -> bool:
        """Block until the reload is prepared (True) or `seconds` pass (False)."""
        return self._done.wait(seconds)

    def poll(self, now: float) -> tuple[bool, Reload | None]:
        """(finished, the reload or None when refused); finished and None past the limit."""
        if self._done.is_set():
            return True, self._result
        if now - self.began > self.limit_seconds:
            logger.error(
                "reload refused, still running model %s: loading took more than %g s",
                self.running_model,
                self.limit_seconds,
            )
            return True, None
        return False, None
