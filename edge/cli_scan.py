"""`soundwatch scan`: its arguments and what it runs (here, on a Dask cluster, or on URLs)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edge.audio.levels import LevelSettings
from edge.cli_common import add_common, config_from, log_at
from edge.clock import parse_start
from edge.config import Loaded
from edge.errors import ConfigError
from edge.schema import Path_

if TYPE_CHECKING:
    from edge.detection.analysis import Analyzer
    from edge.scan import ScanReport

logger = logging.getLogger("soundwatch")


def add_scan(sub: Any) -> None:
    scan = sub.add_parser("scan", help="score recordings as fast as possible")
    scan.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    add_common(scan)
    scan.add_argument("--out", required=True, help="output folder (mirrors the input paths)")
    scan.add_argument("--start", help="UTC start time for files without a timestamp in the name")
    scan.add_argument("--batch", type=int, help="windows per model call (default: 256)")
    scan.add_argument(
        "--workers",
        type=int,
        nargs="?",
        const=0,
        help="score on N worker processes of a local Dask cluster (no N: one per core);"
        " needs the cluster extra",
    )
    scan.add_argument("--scheduler", help="a running Dask scheduler, e.g. tcp://host:8786")
    scan.add_argument(
        "--cluster",
        metavar="RECIPE.yaml",
        help="start the workers as batch jobs (SLURM, PBS, ...: a dask-jobqueue recipe, see"
        " the README)",
    )
    scan.add_argument(
        "--shard-minutes",
        type=_minutes,
        help="with --workers/--scheduler: score a longer recording in time shards of about this"
        " length, one task each (default: the audio over 4 shards a core, at least 15)",
    )
    scan.add_argument(
        "--levels",
        choices=["broadband", "octave", "third-octave"],
        help="add each second's sound level (and band levels) to the probabilities CSV"
        " (default: as the config's levels: section)",
    )
    scan.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    scan.set_defaults(func=cmd_scan)


def _minutes(text: str) -> float:
    """A positive number of minutes (argparse names the option when this refuses)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


def cmd_scan(args: argparse.Namespace) -> int:
    from edge.builders import build_analyzer
    from edge.jobqueue import load_recipe
    from edge.remote import is_url
    from edge.scan import SCAN_BATCH_WINDOWS, output_bases, scan
    from edge.scanplan import anchors, identity, plan

    log_at("debug" if args.verbose else "info")
    chosen = {"--workers": args.workers is not None, "--scheduler": bool(args.scheduler),
              "--cluster": bool(args.cluster)}  # fmt: skip
    engines = [flag for flag, on in chosen.items() if on]
    if len(engines) > 1:
        raise ConfigError(f"scan: {' and '.join(engines)}: choose one")
    if args.shard_minutes is not None and not engines:
        raise ConfigError("scan --shard-minutes: shards need workers: add --workers")
    recipe = load_recipe(Path(args.cluster)) if args.cluster else None  # before any output
    extra: dict[Path_, tuple[object, str]] = {}
    if args.batch is not None:
        extra[("model", "batch_windows")] = (args.batch, "--batch")
    if args.start is not None:
        extra[("source", "start")] = (args.start, "--start")
    loaded = config_from(args, extra)
    model = loaded.config.model
    batch = model.batch_windows if args.batch is not None else SCAN_BATCH_WINDOWS
    bundle, analyzer = build_analyzer(loaded, None, batch_windows=batch)
    inputs, out = [Path(p) for p in args.paths], Path(args.out)
    levels = _levels(loaded.config.levels, args.levels)
    settings = {
        "labels": [s.label for s in analyzer.labels],
        "rules": [repr(s.rules) for s in analyzer.labels],
        "levels": repr(levels) if levels.enabled else None,
        "start": args.start,
    }
    if any(is_url(p) for p in (*args.paths, args.out)):
        return _scan_urls(args, loaded, analyzer, batch, levels, settings, bundle.folder)
    bases = output_bases(inputs, out)
    todo = plan(bases, out, identity(bundle.folder, analyzer.backend.path, settings))
    if todo.done:
        logger.info("%d of %d file(s) already scored in %s: kept", todo.done, len(bases), out)
    stop = threading.Event()
    # Ctrl-C finishes the current block and discards the file in progress; finished files stay.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    # Checked with the config (source.start), so a bad time is one line naming --start.
    start = parse_start(args.start) if args.start is not None else None
    device = loaded.config.output.device
    starts = anchors(list(bases), start) if start is not None and todo.done else {}
    if args.workers is not None or args.scheduler or args.cluster:
        from edge.cluster import scan_on_cluster
        from edge.ops.progress import audio_bar, on_terminal
        from edge.scan import total_seconds

        show = on_terminal() and not args.quiet
        progress = audio_bar(total_seconds(list(todo.todo)) if show else 0.0, "scan", show)
        done = [0]

        def finished(file: Path, one: ScanReport) -> None:  # files, audio and ETA, all workers
            done[0] += one.files_scored + len(one.files_skipped)  # a shard: 0, its audio only
            progress.set_postfix_str(f"file {done[0]}/{len(todo.todo)}", refresh=False)
            progress.update(one.audio_seconds)

        began = time.perf_counter()
        report = scan_on_cluster(
            loaded,
            batch,
            todo.todo,
            device=device,
            starts=anchors(list(bases), start),
            levels=levels,
            workers=args.workers or os.cpu_count(),
            scheduler=args.scheduler,
            geometry=analyzer,
            shard_seconds=None if args.shard_minutes is None else args.shard_minutes * 60,
            recipe=recipe,
            on_file=finished,
        )
        progress.close()
        report.wall_seconds = time.perf_counter() - began
    else:
        report = scan(
            analyzer,
            inputs,
            out,
            device=device,
            start=start,
            stop=stop,
            progress=None if not args.quiet else False,
            levels=levels,
            bases=todo.todo,
            anchors=starts or None,  # resumed with --start: as in an uninterrupted run
        )
    return _reported(report, stop)


def _scan_urls(
    args: argparse.Namespace,
    loaded: Loaded,
    analyzer: Analyzer,
    batch: int,
    levels: LevelSettings,
    settings: dict[str, object],
    bundle_folder: Path,
) -> int:
    """`scan` when an input or `--out` is a URL (edge/remote.py)."""
    from functools import partial

    from edge.ops.progress import on_terminal
    from edge.remote import output_bases, plan_urls, scan_urls
    from edge.scanplan import identity

    if args.start is not None:
        raise ConfigError("--start: files at URLs are placed by the times in their names")
    bases = output_bases(args.paths, args.out)
    scan_identity = identity(bundle_folder, analyzer.backend.path, settings)
    todo, done = plan_urls(bases, args.out, scan_identity)
    if done:
        logger.info("%d of %d file(s) already scored in %s: kept", done, len(bases), args.out)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    device = loaded.config.output.device
    on_cluster = None
    if args.workers is not None or args.scheduler:
        from edge.cluster import scan_on_cluster

        workers = args.workers or os.cpu_count()
        on_cluster = partial(scan_on_cluster, loaded, batch, device=device, levels=levels,
                             workers=workers, scheduler=args.scheduler,
                             geometry=analyzer)  # fmt: skip
    began = time.perf_counter()
    report = scan_urls(analyzer, todo, device=device, levels=levels, stop=stop,
                       show=on_terminal() and not args.quiet, on_cluster=on_cluster)  # fmt: skip
    report.wall_seconds = time.perf_counter() - began
    return _reported(report, stop)


def _reported(report: ScanReport, stop: threading.Event) -> int:
    """scan's last line, and its exit status."""
    if stop.is_set():
        logger.error("interrupted: %d file(s) finished keep their outputs", report.files_scored)
        return 130
    logger.info(
        "%d file(s) scored, %.1f s of audio in %.2f s (%.0fx real time), %d skipped",
        report.files_scored,
        report.audio_seconds,
        report.wall_seconds,
        report.x_real_time,
        len(report.files_skipped),
    )
    return 1 if report.files_skipped else 0


def _levels(levels: LevelSettings, wanted: str | None) -> LevelSettings:
    """The config's level settings, with `scan --levels` switching them on."""
    if wanted is None:
        return levels
    bands: Literal["none", "octave", "third-octave"] = "none"
    if wanted == "octave":
        bands = "octave"
    elif wanted == "third-octave":
        bands = "third-octave"
    return replace(levels, enabled=True, bands=bands)
