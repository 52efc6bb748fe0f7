"""`scan` with inputs or `--out` at URLs (`s3://`, `gs://`, `https://`) through fsspec.

The `remote` extra brings fsspec and s3fs; nothing here imports them until a URL is given, so a
plain local scan (and the Pi) never does. Credentials and endpoints come from where the storage's
own tools look: the AWS variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`,
and `AWS_ENDPOINT_URL` for an S3 server that is not AWS) or fsspec's configuration
(`FSSPEC_S3_ENDPOINT_URL`, `~/.config/fsspec/`).

Each input file is downloaded whole to a temporary file before it is scored, and removed after.
libsndfile seeks (headers, chunks at the end, FLAC frames) and scan reads 10 s blocks, which
over a network would be a request each; a download is a few large sequential reads, retried by
the storage library, and a connection lost midway fails the file before any scoring, not
halfway through it. The copy goes a block at a time, so memory stays flat whatever the file's
length (`_download`); the disk holds one file per worker at a time.

Outputs for a URL `--out` are written as for a local one, into a temporary folder (`.partial`,
renamed when done), then uploaded: the probabilities CSV, the events, the SongExplorer CSV.
A file is done when its three outputs exist under `--out`, so a scan killed midway and run
again scores only what is missing, as on a local disk; the manifest (`edge.scanplan`) lives
there too.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any

from edge.audio.files import AUDIO_EXTENSIONS, find_audio_files, start_time_from_name
from edge.audio.levels import LevelSettings
from edge.config import Loaded
from edge.detection.analysis import Analyzer
from edge.errors import ConfigError
from edge.ops.progress import bar
from edge.scan import ScanReport, fitted, scan
from edge.scanplan import MANIFEST, OUTPUT_SUFFIXES, plan

logger = logging.getLogger(__name__)

COPY_BYTES = 8 * 2**20  # a download's memory: one ranged read of this size at a time
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(text: str) -> bool:
    """Whether `text` names a URL (`s3://...`, `https://...`) rather than a local path."""
    return bool(_SCHEME.match(text))


def _filesystem(url: str) -> tuple[Any, str]:
    """fsspec's file system for `url`, and the path in it; one line when it cannot be had."""
    try:
        import fsspec
    except ImportError:
        raise ConfigError(f"{url}: URLs need fsspec: pip install 'soundwatch[remote]'") from None
    # The storage libraries' INFO lines ("Found credentials in environment variables") would
    # bury scan's.
    for name in ("aiobotocore", "botocore", "s3fs", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # no s3fs/gcsfs; a protocol fsspec does not know
        raise ConfigError(f"{url}: {exc}") from None


def _storage_errors() -> tuple[type[BaseException], ...]:
    """What a storage call raises when the bucket, the server or the network fails: OSError
    (s3fs turns S3's answers into FileNotFoundError, PermissionError...), and the connection
    errors of the client libraries underneath, which are not OSErrors."""
    errors: list[type[BaseException]] = [OSError, ValueError]
    try:
        from botocore.exceptions import BotoCoreError

        errors.append(BotoCoreError)
    except ImportError:
        pass
    try:
        from aiohttp import ClientError

        errors.append(ClientError)
    except ImportError:
        pass
    return tuple(errors)


def _why(exc: BaseException) -> str:
    """The storage library's reason, in one line."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, FileNotFoundError) and " " not in text:  # its message: the path alone
        return "not found"
    return text or type(exc).__name__


def output_bases(inputs: Iterable[str], out: str) -> dict[str, str]:
    """Each input file (a path or URL) and where its outputs go (a path or URL below `out`):
    the file's path below the folder or prefix it was found in, as `edge.scan.output_bases`.
    An input URL ending in an audio extension is one file; any other is a prefix, listed."""
    bases: dict[str, str] = {}
    for given in inputs:
        for source, rel in _listed(given):
            parts = [fitted(part) for part in rel]
            if is_url(out):
                bases.setdefault(source, "/".join([out.rstrip("/"), *parts]))
            else:
                bases.setdefault(source, str(Path(out).joinpath(*parts)))
    return bases


def _listed(given: str) -> list[tuple[str, tuple[str, ...]]]:
    """(file, its path's parts below `given`) for the audio files `given` names."""
    if not is_url(given):
        folder = Path(given)
        return [
            (str(p), p.relative_to(folder).parts if folder.is_dir() else (p.name,))
            for p in find_audio_files([folder])
        ]
    fs, path = _filesystem(given)
    if PurePosixPath(path).suffix.lower() in AUDIO_EXTENSIONS:
        return [(given, (PurePosixPath(path).name,))]
    root = path.rstrip("/")
    try:
        found = sorted(fs.find(root))
        if not found:  # find is silent on a prefix that is not there, or a server that is down
            fs.ls(root)
    except _storage_errors() as exc:
        raise ConfigError(f"{given}: cannot list it ({_why(exc)})") from None
    files = []
    for name in found:
        rel = PurePosixPath(name[len(root) :].lstrip("/"))
        if rel.suffix.lower() in AUDIO_EXTENSIONS and not rel.name.startswith("."):
            files.append((fs.unstrip_protocol(name), rel.parts))
    if not files:
        raise ConfigError(f"{given}: no audio files there")
    return files


def plan_urls(
    bases: dict[str, str], out: str, scan_identity: dict[str, Any]
) -> tuple[dict[str, str], int]:
    """The files still to score and how many are done, as `edge.scanplan.plan` for a local
    `--out`; for a URL, the manifest is checked (or written) and outputs looked for there."""
    if not is_url(out):
        local = plan({Path(b): Path(b) for b in bases.values()}, Path(out), scan_identity)
        todo = {s: b for s, b in bases.items() if Path(b) in local.todo}
        return todo, local.done
    fs, root = _filesystem(out)
    root = root.rstrip("/")
    manifest = f"{root}/{MANIFEST}"
    try:
        if fs.exists(manifest):
            try:
                recorded = json.loads(fs.cat_file(manifest))
            except ValueError as exc:
                raise ConfigError(f"{out}/{MANIFEST}: unreadable scan manifest ({exc})") from None
            if recorded != scan_identity:
                raise ConfigError(
                    f"{out}: holds a scan with another model or settings:"
                    " choose another --out, or empty this one"
                )
        else:  # written as a local scan writes it, so the two compare byte for byte
            with tempfile.TemporaryDirectory(prefix="soundwatch-") as stage:
                plan({}, Path(stage), scan_identity)
                fs.put_file(str(Path(stage) / MANIFEST), manifest)
        there = set(fs.find(root))
    except _storage_errors() as exc:
        raise ConfigError(f"{out}: cannot use it as --out ({_why(exc)})") from None
    todo = {
        s: b
        for s, b in bases.items()
        if not all(fs._strip_protocol(b + suffix) in there for suffix in OUTPUT_SUFFIXES)
    }
    return todo, len(bases) - len(todo)


def scan_url(
    analyzer: Analyzer,
    source: str,
    base: str,
    *,
    device: str,
    levels: LevelSettings | None,
    stop: threading.Event | None = None,
) -> ScanReport:
    """Score one file (a path or URL) into `base` (a path or URL): download, scan, upload.
    A file that cannot be downloaded or whose outputs cannot be uploaded is skipped, the
    reason logged in one line, as a file that is not audio."""
    failed = ScanReport(files_skipped=[source])
    with tempfile.TemporaryDirectory(prefix="soundwatch-") as stage:
        local = Path(source)
        if is_url(source):
            fs, path = _filesystem(source)
            local = Path(stage, fitted(PurePosixPath(path).name))
            try:
                _download(fs, path, local)
            except _storage_errors() as exc:
                logger.error("skipped: %s: cannot download it (%s)", source, _why(exc))
                return failed
        out = Path(stage, "out", fitted(PurePosixPath(base).name)) if is_url(base) else Path(base)
        report = scan(
            analyzer,
            [local],
            out.parent,
            device=device,
            stop=stop,
            progress=False,
            levels=levels,
            bases={local: out},
            anchors={local: start_time_from_name(source)},
            names={local: source},
        )
        if is_url(base) and report.files_scored:
            fs, path = _filesystem(base)
            try:
                for suffix in OUTPUT_SUFFIXES:  # the last one makes the file done
                    fs.put_file(str(out) + suffix, path + suffix)
            except _storage_errors() as exc:
                logger.error("skipped: %s: cannot upload its outputs (%s)", source, _why(exc))
                return failed
    return report


def _download(fs: Any, path: str, local: Path) -> None:
    """`path` copied to `local` a block at a time. Object stores are read in ranged requests
    of COPY_BYTES: their own `get_file` (s3fs) held about twice the file in memory here (a
    110 MiB file: 245 MiB peak). HTTP is one streamed response (flat, measured), as servers
    need not answer ranged requests."""
    if "http" in fs.protocol:
        fs.get_file(path, str(local))
        return
    source = fs.open(path, "rb", block_size=COPY_BYTES, cache_type="none")
    with source as src, local.open("wb") as dst:
        shutil.copyfileobj(src, dst, COPY_BYTES)


@contextlib.contextmanager
def local_copy(url: str, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """The files under `url` whose names end in `suffixes`, copied into a temporary folder
    (same layout) for as long as the block runs: `summarize` of an S3 `--out`."""
    fs, root = _filesystem(url)
    root = root.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="soundwatch-") as stage:
        try:
            for name in fs.find(root):
                if name.endswith(suffixes):
                    local = Path(stage, name[len(root) :].lstrip("/"))
                    local.parent.mkdir(parents=True, exist_ok=True)
                    _download(fs, name, local)
        except _storage_errors() as exc:
            raise ConfigError(f"{url}: cannot read it ({_why(exc)})") from None
        yield Path(stage)


def upload(files: list[Path], folder: Path, url: str) -> None:
    """`files` (below `folder`) to the same names below `url`."""
    fs, root = _filesystem(url)
    try:
        for file in files:
            fs.put_file(str(file), f"{root.rstrip('/')}/{file.relative_to(folder).as_posix()}")
    except _storage_errors() as exc:
        raise ConfigError(f"{url}: cannot write there ({_why(exc)})") from None


def scan_url_file(
    loaded: Loaded,
    batch: int,
    source: str,
    base: str,
    device: str,
    start: datetime | None,
    levels: LevelSettings | None,
) -> ScanReport:
    """`scan_url` in a Dask worker: the task `edge.cluster.scan_on_cluster` runs for URLs.
    `start` is unused: files at URLs are anchored by the times in their names."""
    from edge.cluster import worker_analyzer

    return scan_url(worker_analyzer(loaded, batch), source, base, device=device, levels=levels)


def scan_urls(
    analyzer: Analyzer,
    todo: dict[str, str],
    *,
    device: str,
    levels: LevelSettings | None,
    stop: threading.Event,
    show: bool,
    on_cluster: Callable[..., ScanReport] | None = None,
) -> ScanReport:
    """Every file of `todo`, one after another here, or through `on_cluster`
    (`edge.cluster.scan_on_cluster` with its settings bound); a bar counts files."""
    progress = bar(len(todo), "scan", "file", show)
    hours = [0.0]

    def finished(source: str, one: ScanReport) -> None:
        hours[0] += one.audio_seconds / 3600
        progress.set_postfix_str(f"{hours[0]:.2f} h audio", refresh=False)
        progress.update(1)

    report = ScanReport()
    try:
        if on_cluster is not None:
            report = on_cluster(todo, starts={}, on_file=finished, task=scan_url_file)
        else:
            for source, base in todo.items():
                if stop.is_set():
                    break
                one = scan_url(analyzer, source, base, device=device, levels=levels, stop=stop)
                report.add(one)
                finished(source, one)
    finally:
        progress.close()
    return report
