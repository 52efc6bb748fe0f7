"""The review page inside the daemon (`web:`): its own threads, never the audio's.

`WebServer.start` binds and serves on a named thread; the server answers each request on a
thread of its own. The page reads only files the daemon has written (its output and clips
folders) and values it already keeps for its status and metrics, so the processing thread
takes no lock, makes no allocation and writes no log line for it. A port that is taken is one
log line and a count in the metrics; the daemon listens on without its page.

Verdicts go to `<output.dir>/review.sqlite` (beside the MQTT outbox, the daemon's other state),
spectrograms are cached in `<output.dir>/.review-cache/`, exports go to
`<output.dir>/review-export/`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from edge import disagree
from edge.config import Loaded
from edge.errors import SoundwatchError
from edge.ops.metrics import WEB_FAILURES
from edge.preflight import clips_folder
from edge.review.daemonfolder import DaemonFolder
from edge.review.infer import Scorer
from edge.review.now import Now
from edge.review.server import Review, make_server, review_token
from edge.review.store import VerdictStore

if TYPE_CHECKING:
    from edge.app import App

logger = logging.getLogger(__name__)

JOIN_SECONDS = 5.0


def daemon_review(
    loaded: Loaded, current: Callable[[], Loaded], status: Callable[[], dict[str, Any]]
) -> Review:
    """The review of the daemon that `loaded` configures; `current`: its config now (after
    reloads), for the bundle POST /api/infer scores with; `status`: its state, as JSON."""
    config = loaded.config
    out = loaded.resolve(config.output.dir).absolute()
    clips = clips_folder(loaded) if config.clips.enabled else None
    source = DaemonFolder(out / config.output.device, clips, config.clips.pre_roll_seconds)
    store = VerdictStore(out / "review.sqlite")
    token = review_token(config.web.host, "web.host:")
    review = Review(source, store, out / ".review-cache", out / "review-export",
                    out / config.output.device, config.web.reviewer, token)  # fmt: skip
    review.now = Now(source.root)
    review.status = status
    review.scorer = Scorer(current, int(config.web.max_upload_mb * 2**20))
    if config.shadow.bundle is not None:
        deployed, shadowed = out / config.output.device, out / "shadow" / config.output.device
        review.shadow = lambda: disagree.as_json(deployed, shadowed)
    return review


def start_web(app: App) -> WebServer | None:
    """The daemon's page, started; down (logged once and counted) when it cannot bind, None
    when it cannot even be made."""
    web = app.loaded.config.web
    failures = app.metrics.web_failures
    try:
        review = daemon_review(app.loaded, lambda: app.loaded, lambda: daemon_status(app))
    except SoundwatchError as exc:  # e.g. review.sqlite is not a verdict store
        logger.error("%s; going on without the review page", exc)
        failures.labels("start").inc()
        app.metrics.web_up.set(0)
        return None
    server = WebServer(review, web.host, web.port, lambda kind: failures.labels(kind).inc())
    app.metrics.web_up.set(1 if server.start() else 0)
    return server


def daemon_status(app: App) -> dict[str, Any]:
    """The daemon's state for the page, on the web server's thread: values the daemon keeps
    anyway (its attributes and the metrics registry), read, never waited for."""
    m = app.bundle.manifest
    live, stream = app.live, app._stream

    def value(name: str, labels: dict[str, str] | None = None) -> float | None:
        got = app.metrics.registry.get_sample_value(name, labels)
        return None if got is None or got != got else got  # NaN: not known

    return {
        "model": m.name,
        "model_version": m.version,
        "backend": app.analyzer.backend.key,
        "uptime_seconds": round(time.monotonic() - app.started, 1),
        "source": stream.name if stream is not None else None,
        "device_connected": live.connected if live is not None else None,
        "lag_seconds": round(live.lag_seconds, 3) if live is not None else 0.0,
        "last_analysed": value("soundwatch_last_analysed_timestamp_seconds"),
        "mqtt": None
        if app.mqtt is None
        else {
            "connected": value("soundwatch_mqtt_connected") == 1,
            "outbox_pending": value("soundwatch_outbox_pending"),
        },
        "output_failing": value("soundwatch_output_failing") == 1,
        "down": [f"{t.name} ({t.down})" for t in app.threads if t.down],
        "web_failures": {
            kind: value("soundwatch_web_failures_total", {"kind": kind}) for kind in WEB_FAILURES
        },
    }


class WebServer:
    """The page's server on a thread named `web`; `failed(kind)` counts a failure (`start`,
    `request`) in the metrics."""

    def __init__(self, review: Review, host: str, port: int, failed: Callable[[str], None]) -> None:
        self.review = review
        self.host, self.port = host, port
        self.failed = failed
        self.problem = ""  # why the page is down, in words ("" while it serves)
        self.url = ""
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        review.failed = lambda: failed("request")

    def start(self) -> bool:
        """Bind and serve; False (logged once, counted) when the address cannot be had."""
        try:
            where = "web.host {host}, web.port {port}"
            server = make_server(self.review, self.host, self.port, where)
        except SoundwatchError as exc:
            self.problem = f"web page down: {exc}"
            logger.error("%s; going on without the review page", exc)
            self.failed("start")
            return False
        host, port = str(server.server_address[0]), server.server_address[1]
        self.url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="web", daemon=True)
        self._thread.start()
        logger.info("review page at %s", self.url)
        return True

    def close(self) -> None:
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.shutdown()
            thread.join(JOIN_SECONDS)
            if thread.is_alive():
                logger.warning("web: the server thread did not stop in %.0f s", JOIN_SECONDS)
            server.server_close()
        self.review.store.close()
