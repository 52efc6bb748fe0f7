"""The review web server: the standard library's ThreadingHTTPServer, no framework.

Zero install and a few MiB of memory on a Pi; the page is one HTML file with plain JS and CSS
shipped in the wheel (works offline). Routes are thin: each reads the source or the store and
answers JSON, a PNG, a WAV or a file.

Security: bound to a loopback address it is open to that machine's users; bound elsewhere it
needs a token (SOUNDWATCH_REVIEW_TOKEN, or the systemd credential `soundwatch-review-token`),
sent as `Authorization: Bearer`, or once as `?token=` which sets a cookie. Verdict-changing
POSTs need the page's CSRF token in a header and, when the browser sends one, a same-origin
Origin. Paths from a URL are resolved and must stay inside their folder. Errors are one line.
"""

from __future__ import annotations

import hmac
import io
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import soundfile as sf

from edge.errors import SoundwatchError
from edge.review import export, spectrogram
from edge.review.infer import Scorer
from edge.review.now import Now
from edge.review.scanfolder import SAFE_ID, Source
from edge.review.store import VerdictStore

logger = logging.getLogger(__name__)

ASSETS = Path(__file__).resolve().parent / "assets"
TOKEN_ENV = "SOUNDWATCH_REVIEW_TOKEN"
TOKEN_CREDENTIAL = "soundwatch-review-token"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
COOKIE = "soundwatch_review"
WAV_TYPES = ("audio/wav", "audio/x-wav", "audio/wave")
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def review_token(host: str, key: str = "--host") -> str | None:
    """The token from the environment or a systemd credential; required off loopback.
    `key`: where the host was given, for the error (`--host`, `web.host`)."""
    token = os.environ.get(TOKEN_ENV, "").strip()
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if not token and credentials and (Path(credentials) / TOKEN_CREDENTIAL).is_file():
        token = (Path(credentials) / TOKEN_CREDENTIAL).read_text().strip()
    if not token and host not in LOOPBACK:
        raise SoundwatchError(
            f"{key} {host}: not a loopback address, so a token is required: set {TOKEN_ENV} "
            f"or the systemd credential {TOKEN_CREDENTIAL} (never in the YAML)"
        )
    return token or None


def inside(root: Path, relative: str) -> Path | None:
    """`root/relative` if it exists and, symlinks resolved, is inside `root`; else None."""
    base = root.resolve()
    path = (base / relative.lstrip("/")).resolve()
    return path if path.is_relative_to(base) and path.is_file() else None


class Review:
    """What the handler serves: a source, the verdict store and the folders it may write.

    The daemon adds what only a running daemon has, each optional (None: its routes answer
    404 with the reason): `now` (the Now page's last hour), `status` (the daemon's state),
    `scorer` (POST /api/infer), `failed` (called when a request fails, for the metrics) and
    `shadow` (where a shadow model and the deployed one disagree, edge/disagree.py)."""

    def __init__(self, source: Source, store: VerdictStore, cache: Path, export_dir: Path,
                 files: Path | None, reviewer: str, token: str | None) -> None:  # fmt: skip
        self.source = source
        self.store = store
        self.cache = cache
        self.export_dir = export_dir
        self.files = files
        self.reviewer = reviewer
        self.token = token
        self.csrf = secrets.token_urlsafe(24)
        self._png_lock = threading.Lock()
        self.now: Now | None = None
        self.status: Callable[[], dict[str, Any]] | None = None
        self.scorer: Scorer | None = None
        self.failed: Callable[[], None] | None = None
        self.shadow: Callable[[], dict[str, Any]] | None = None

    def events(self, query: dict[str, str]) -> list[dict[str, Any]]:
        verdicts = self.store.all()
        channel = query.get("channel", "")
        min_score = float(query.get("min_score") or 0)
        wanted = query.get("verdict", "")
        found = []
        for e in self.source.events():
            v = verdicts.get(e["id"])
            if query.get("label") and e["label"] != query["label"]:
                continue
            if float(e.get("score_max") or 0) < min_score:
                continue
            if channel and str(e.get("channel")) != channel:
                continue
            if wanted and (v.verdict if v else "none") != wanted:
                continue
            if query.get("day") and not str(e.get("start") or "").startswith(query["day"]):
                continue
            found.append({**e, "verdict": v.as_json() if v else None})
        return found

    def spectrogram_png(self, event_id: str) -> bytes:
        """Computed the first time it is asked for, then read from the cache folder."""
        path = self.cache / f"{event_id}.png"
        if not path.is_file():
            cut = self.source.excerpt(event_id)
            data = spectrogram.png(spectrogram.spectrogram(cut.samples, cut.rate_hz))
            with self._png_lock:
                self.cache.mkdir(parents=True, exist_ok=True)
                partial = path.with_suffix(".partial")
                partial.write_bytes(data)
                partial.replace(path)
        return path.read_bytes()

    def wav(self, event_id: str) -> bytes:
        cut = self.source.excerpt(event_id)
        out = io.BytesIO()
        sf.write(out, cut.samples, cut.rate_hz, format="WAV", subtype="PCM_16")
        return out.getvalue()

    def verdict(self, body: dict[str, Any]) -> dict[str, Any]:
        event_id = str(body.get("event_id", ""))
        if self.source.event(event_id) is None:
            raise KeyError(event_id)
        if "verdict" not in body:
            raise SoundwatchError("verdict: missing (right, wrong, relabel, or none to undo)")
        if body["verdict"] == "none":
            self.store.remove(event_id)
            return {"event_id": event_id, "verdict": None}
        label = str(body["label"]) if body.get("label") is not None else None
        reviewer = str(body.get("reviewer") or self.reviewer)
        return self.store.put(event_id, str(body["verdict"]), reviewer, label).as_json()

    def export(self) -> list[str]:
        written = export.export(self.source.events(), self.store.all(), self.export_dir)
        return [str(p) for p in written]


class Handler(BaseHTTPRequestHandler):
    review: Review  # set on the subclass made by make_server
    server_version = "soundwatch-review"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s " + format, self.address_string(), *args)

    # -- answers ----------------------------------------------------------------------------

    def send(
        self, status: int, body: bytes, kind: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; media-src 'self'")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def send_json(self, value: object, status: int = 200) -> None:
        self.send(status, json.dumps(value).encode(), "application/json")

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """One line of JSON, never an HTML page or a traceback."""
        self.close_connection = True
        self.send_json({"error": message or self.responses.get(code, ("error",))[0]}, code)

    # -- dispatch ---------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(self._get)

    def do_POST(self) -> None:
        self._answer(self._post)

    def _answer(self, route: Any) -> None:
        url = urlsplit(self.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            if not self._allowed(path, query):
                return
            route(path, query)
        except KeyError as exc:
            self.send_error(404, f"not found: {exc.args[0] if exc.args else path}")
        except (SoundwatchError, ValueError, TypeError) as exc:
            self.send_error(400, str(exc).splitlines()[0])
        except Exception:
            logger.exception("review: %s %s failed", self.command, url.path)
            if self.review.failed is not None:
                self.review.failed()
            self.send_error(500, "internal error (logged by the server)")

    def _allowed(self, path: str, query: dict[str, str]) -> bool:
        token = self.review.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        cookies = dict(
            c.strip().split("=", 1) for c in self.headers.get("Cookie", "").split(";") if "=" in c
        )
        given = given or cookies.get(COOKIE, "")
        if "token" in query and self.command == "GET":
            if hmac.compare_digest(query["token"].encode(), token.encode()):
                cookie = f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"
                self.send(303, b"", "text/plain", {"Location": path, "Set-Cookie": cookie})
                return False
            given = ""
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return True
        self.send_error(401, "token missing or wrong")
        return False

    def _get(self, path: str, query: dict[str, str]) -> None:
        r = self.review
        if path in ("/", "/index.html"):
            page = (ASSETS / "index.html").read_text().replace("{{csrf}}", r.csrf)
            self.send(200, page.encode(), "text/html; charset=utf-8")
        elif path.startswith("/assets/"):
            self._file(ASSETS, path.removeprefix("/assets/"))
        elif path.startswith("/files/") and r.files is not None:
            self._file(r.files, path.removeprefix("/files/"))
        elif path == "/api/events":  # `limit=N`: the newest N; X-Total-Count: all that match
            found = r.events(query)
            limit = _count(query.get("limit") or "0", "limit")
            body = json.dumps(found[-limit:] if limit else found).encode()
            self.send(200, body, "application/json", {"X-Total-Count": str(len(found))})
        elif path == "/api/days":  # the UTC days with detections, for the day filter
            days = {str(e.get("start") or "")[:10] for e in r.source.events()}
            self.send_json(sorted(days - {""}))
        elif path == "/api/seconds":
            self.send_json(r.source.seconds(query.get("file", "")))
        elif path == "/api/coverage":
            self.send_json(r.source.coverage())
        elif path == "/api/model":
            self.send_json(r.source.model())
        elif path == "/api/verdicts":
            self.send_json([v.as_json() for v in r.store.all().values()])
        elif path == "/api/now":
            if r.now is None:
                raise KeyError("/api/now (only the daemon's page has a Now)")
            self.send_json(r.now.snapshot(datetime.now(timezone.utc)))
        elif path == "/api/shadow":
            if r.shadow is None:
                raise KeyError("/api/shadow (the daemon has no shadow: section)")
            self.send_json(r.shadow())
        elif path == "/api/status":
            if r.status is None:
                raise KeyError("/api/status (only the daemon's page has a status)")
            self.send_json(r.status())
        elif path.startswith("/api/clips/"):
            event_id = path.removeprefix("/api/clips/")
            if not SAFE_ID.match(event_id) or r.source.event(event_id) is None:
                raise KeyError(event_id)
            self.send(200, r.wav(event_id), "audio/wav")
        elif path.startswith("/media/"):
            name = path.removeprefix("/media/")
            event_id, _, kind = name.rpartition(".")
            if not SAFE_ID.match(event_id) or r.source.event(event_id) is None:
                raise KeyError(name)
            if kind == "png":
                self.send(200, r.spectrogram_png(event_id), "image/png")
            elif kind == "wav":
                self.send(200, r.wav(event_id), "audio/wav")
            else:
                raise KeyError(name)
        else:
            raise KeyError(path)

    def _post(self, path: str, query: dict[str, str]) -> None:
        if path == "/api/infer":
            self._infer()
            return
        if not self._same_origin():
            return
        if path == "/api/verdicts":
            self.send_json(self.review.verdict(self._body()))
        elif path == "/api/export":
            self.send_json({"written": self.review.export()})
        else:
            raise KeyError(path)

    def _same_origin(self) -> bool:
        """CSRF guard: the page's token in X-CSRF-Token, and Origin (if sent) this host."""
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{self.headers.get('Host', '')}":
            self.send_error(403, f"cross-origin request from {origin} refused")
            return False
        given = self.headers.get("X-CSRF-Token", "")
        if not hmac.compare_digest(given.encode(), self.review.csrf.encode()):
            self.send_error(403, "X-CSRF-Token header missing or wrong (reload the page)")
            return False
        return True

    def _infer(self) -> None:
        """Not CSRF-guarded like verdicts: it changes nothing, and a cross-site form cannot
        send the audio Content-Type it needs (a fetch that could must pass CORS first)."""
        scorer = self.review.scorer
        if scorer is None:
            raise KeyError("/api/infer (no model here: start `soundwatch review` with --model)")
        length = int(self.headers.get("Content-Length") or 0)
        scorer.check(length)  # too large: refused unread
        body = self.rfile.read(length)  # read before any other refusal, so the client hears it
        kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if kind not in WAV_TYPES:
            raise SoundwatchError(f"Content-Type {kind or 'missing'}: send audio/wav")
        self.send_json(scorer.score(body))

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 64 * 1024:
            raise SoundwatchError(f"body of {length} bytes is too large (64 KiB at most)")
        body = json.loads(self.rfile.read(length) or b"{}")
        if not isinstance(body, dict):
            raise SoundwatchError("body: expected a JSON object")
        return body

    def _file(self, root: Path, relative: str) -> None:
        if ".." in Path(relative).parts:
            self.send_error(403, "path leaves its folder")
            return
        path = inside(root, relative)
        if path is None:
            # Resolved outside (a symlink out) or missing: the same answer, nothing leaked.
            self.send_error(404, "no such file here")
            return
        self.send(200, path.read_bytes(), _TYPES.get(path.suffix, "application/octet-stream"))


def make_server(
    review: Review, host: str, port: int, where: str = "--host {host} --port {port}"
) -> ThreadingHTTPServer:
    """A server (not started) answering for `review` on host:port (0: a free port); `where`
    names the settings in the error when the address cannot be had."""
    handler = type("ReviewHandler", (Handler,), {"review": review})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise SoundwatchError(
            f"{where.format(host=host, port=port)}: cannot listen ({exc.strerror})"
        ) from None
    server.daemon_threads = True
    return server


def review_folder(folder: Path, token: str | None, reviewer: str) -> Review:
    """The review of a `soundwatch scan --out` folder: verdicts in `<folder>/review.sqlite`,
    spectrograms cached in `<folder>/.review-cache`, exports to `<folder>/review-export`."""
    from edge.review.scanfolder import ScanFolder

    source = ScanFolder(folder)
    store = VerdictStore(source.root / "review.sqlite")
    return Review(source, store, source.root / ".review-cache", source.root / "review-export",
                  source.root, reviewer, token)  # fmt: skip


def _count(text: str, name: str) -> int:
    """A query parameter that counts something: a whole number, 0 or more."""
    if not text.isdigit():
        raise ValueError(f"{name}={text!r}: not a whole number")
    return int(text)
