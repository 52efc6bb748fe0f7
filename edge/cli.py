"""`soundwatch`: run, scan, summarize, review, devices, check, bench, promote, rollback,
shadow-diff.

User mistakes (bad config, bad bundle, missing device, unreadable file) print one clear line per
problem and exit 2; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal, get_args

from edge import __version__, schema
from edge.audio.levels import LevelSettings
from edge.clock import parse_start
from edge.config import DEFAULT_CONFIG, Loaded, load_config
from edge.errors import ConfigError, SoundwatchError
from edge.model.bundle import ModelFile
from edge.schema import Path_

if TYPE_CHECKING:
    from edge.detection.analysis import Analyzer
    from edge.scan import ScanReport

logger = logging.getLogger("soundwatch")


def _labels(text: str) -> list[str]:
    return [label.strip() for label in text.split(",") if label.strip()]


def _minutes(text: str) -> float:
    """A positive number of minutes (argparse names the option when this refuses)."""
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of minutes, got {text!r}")
    return value


def _config(
    args: argparse.Namespace, extra: dict[Path_, tuple[object, str]] | None = None
) -> Loaded:
    """The config named by -c, else /etc/soundwatch/config.yaml if present, else defaults,
    with the command line's overrides checked like the file's own values.

    `extra` adds a command's own overrides: key path -> (value, flag).
    """
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    loaded = load_config(path)
    changes: dict[Path_, tuple[object, str]] = {}
    flags: list[tuple[str, str, Path_]] = [
        ("model", "--model", ("model", "path")),
        ("labels", "--labels", ("labels",)),
        ("model_file", "--model-file", ("model", "file")),
        ("threads", "--threads", ("model", "threads")),
        ("hop", "--hop", ("model", "hop_seconds")),
    ]
    for attr, flag, at in flags:
        # `is not None`, not truth: `--threads 0` is a value to refuse, not to ignore.
        value = getattr(args, attr, None)
        if value is not None:
            changes[at] = (_model_path(value) if attr == "model" else value, flag)
    changes.update(extra or {})
    if not changes:
        return loaded
    return replace(loaded, config=schema.override(loaded.config, changes, loaded.where))


def _model_path(value: str) -> str:
    """A folder given on the command line is taken from the current folder; a bare name that
    is no folder here stays a name, for model.path to find among the bundled models."""
    if Path(value).is_dir() or "/" in value or os.sep in value:
        return str(Path(value).expanduser().resolve())
    return value


def cmd_run(args: argparse.Namespace) -> int:
    from edge.app import App

    def configured() -> Loaded:
        """The config file with this command line's overrides: at start and on SIGHUP."""
        extra: dict[Path_, tuple[object, str]] = {}
        if args.files:
            paths = [str(Path(p).resolve()) for p in args.files]
            extra[("source", "kind")] = ("files", "--files")
            extra[("source", "paths")] = (paths, "--files")
        if args.demo:
            extra[("source", "kind")] = ("demo", "--demo")
        if args.speed is not None:
            extra[("source", "speed")] = (args.speed, "--speed")
        if args.out:
            extra[("output", "dir")] = (str(Path(args.out).resolve()), "--out")
        if args.print:
            extra[("output", "print")] = (args.print, "--print")
        return _config(args, extra)

    loaded = configured()
    _logging(loaded.config.log_level if not args.verbose else "debug")
    app = App(loaded, reload_config=configured)
    app.install_signal_handlers()
    return app.run()


def cmd_scan(args: argparse.Namespace) -> int:
    from edge.builders import build_analyzer
    from edge.jobqueue import load_recipe
    from edge.remote import is_url
    from edge.scan import SCAN_BATCH_WINDOWS, output_bases, scan
    from edge.scanplan import anchors, identity, plan

    _logging("debug" if args.verbose else "info")
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
    loaded = _config(args, extra)
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


def cmd_devices(args: argparse.Namespace) -> int:
    from edge.audio.capture import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from edge.builders import build_analyzer
    from edge.preflight import preflight

    loaded = _config(args)
    bundle, analyzer = build_analyzer(loaded)
    problems = preflight(loaded)
    if problems:
        raise ConfigError("\n".join(problems))
    m = bundle.manifest
    backend = analyzer.backend
    print(f"{loaded.path or 'built-in defaults'}: ok")
    print(f"model {m.name} {m.version} ({bundle.folder}), {backend.key}: {backend.path.name}")
    for s in analyzer.labels:
        r = s.rules
        if not s.events:
            print(f"  {s.label}: background, scored every second, no events (events.background)")
            continue
        print(f"  {s.label}: threshold {r.threshold:g}, off {r.effective_off_threshold:g}")
    if loaded.config.shadow.bundle:
        _check_shadow(loaded)
    mqtt = loaded.config.mqtt
    if mqtt.host and args.connect:
        from edge.outputs.mqtt.broker import probe

        print(probe(mqtt, loaded.resolve, loaded.config.output.device))
    elif mqtt.host:
        print(f"mqtt: {mqtt.host}:{mqtt.port_or_default} (not contacted; --connect tries it)")
    elif args.connect:
        raise SoundwatchError(f"{loaded.path or 'built-in defaults'}: --connect: no mqtt.host set")
    return 0


def _check_shadow(loaded: Loaded) -> None:
    """The shadow bundle loads (the daemon would run without it, with one log line)."""
    from edge.builders import build_analyzer
    from edge.shadow import shadow_loaded

    try:
        bundle, analyzer = build_analyzer(shadow_loaded(loaded))
    except SoundwatchError as exc:
        raise ConfigError(f"{loaded.where.where(('shadow', 'bundle'))}: {exc}") from None
    m, backend = bundle.manifest, analyzer.backend
    print(f"shadow {m.name} {m.version} ({bundle.folder}), {backend.key}: {backend.path.name}")
    backend.close()


def cmd_bench(args: argparse.Namespace) -> int:
    from edge.bench import bench
    from edge.builders import bundle_folder

    _logging("warning")
    if args.live:
        from edge.bench.live import DEFAULT_SECONDS, bench_live

        audio = Path(args.audio) if args.audio else None
        seconds = DEFAULT_SECONDS if args.seconds is None else args.seconds
        model = bundle_folder(_model_path(args.model))
        print(
            bench_live(
                model,
                seconds=seconds,
                audio=audio,
                file_key=args.model_file,
                block_seconds=args.block,
                as_json=args.json,
            )
        )
        return 0
    print(
        bench(
            bundle_folder(_model_path(args.model)),
            seconds=600.0 if args.seconds is None else args.seconds,
            files=[Path(p) for p in args.files],
            threads=args.threads,
            batch=args.batch,
            repeats=args.repeats,
            rate_hz=args.rate,
            as_json=args.json,
        )
    )
    return 0


def cmd_summarize(args: argparse.Namespace) -> int:
    from edge.remote import is_url

    _logging("debug" if args.verbose else "info")
    if not is_url(args.folder):
        to = Path(args.to or Path(args.folder, "summary"))
        written = _summarize(Path(args.folder), to)
        logger.info("%d file(s) written to %s", written, to)
        return 0
    from edge.remote import local_copy, upload
    from edge.review.scanfolder import EVENTS_SUFFIX, SECONDS_SUFFIX

    # A scan --out in object storage: its outputs read from a local copy; the summary goes to
    # --to, or next to them (<url>/summary/).
    with local_copy(args.folder, (EVENTS_SUFFIX, SECONDS_SUFFIX)) as folder:
        if not any(folder.rglob(f"*{EVENTS_SUFFIX}")):
            raise ConfigError(f"{args.folder}: no scan outputs (*{EVENTS_SUFFIX}) in it")
        to = Path(args.to) if args.to else folder / ".summary"
        written = _summarize(folder, to)
        where = str(to)
        if not args.to:
            where = args.folder.rstrip("/") + "/summary"
            upload(sorted(to.iterdir()), to, where)
    logger.info("%d file(s) written to %s", written, where)
    return 0


def _summarize(folder: Path, to: Path) -> int:
    """The summary of the scan outputs in `folder`, written into `to`: how many files."""
    from edge.review.summary import summarize, write_csvs, write_plots

    summary = summarize(folder)
    try:
        write_csvs(summary, to)
        plotted = write_plots(summary, to)
    except OSError as exc:
        raise SoundwatchError(f"{to}: cannot write the summary ({exc.strerror or exc})") from None
    if not plotted:
        logger.warning("no PNG plots: they need matplotlib (pip install 'soundwatch[plots]')")
    if summary.untimed_files:
        logger.warning(
            "%d file(s) without an absolute time left out (a time in the name, or scan --start)",
            summary.untimed_files,
        )
    return len(summary.written)


def cmd_review(args: argparse.Namespace) -> int:
    import getpass
    import webbrowser

    from edge.review.server import make_server, review_folder, review_token

    _logging("debug" if args.verbose else "info")
    reviewer = args.reviewer
    if not reviewer:
        try:
            reviewer = getpass.getuser()
        except (OSError, KeyError):  # no user name in a bare container
            reviewer = "reviewer"
    review = review_folder(Path(args.folder), review_token(args.host), reviewer)
    if args.model:  # POST /api/infer scores with it; without, that route answers 404
        from edge.review.infer import Scorer

        at: Path_ = ("model", "path")
        loaded = load_config(None)
        model = {at: (_model_path(args.model), "--model")}
        loaded = replace(loaded, config=schema.override(loaded.config, model, loaded.where))
        review.scorer = Scorer(lambda: loaded, int(loaded.config.web.max_upload_mb * 2**20))
        review.scorer.load()
    if args.export:
        events, verdicts = review.source.events(), review.store.all()
        from edge.review.export import export

        written = export(events, verdicts, Path(args.export))
        print(f"{len(verdicts)} verdict(s) exported to {len(written)} file(s) in {args.export}")
        return 0
    server = make_server(review, args.host, args.port)
    host, port = str(server.server_address[0]), server.server_address[1]
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/"
    logger.info("review of %s at %s (Ctrl-C stops)", args.folder, url)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        review.store.close()
    return 0


def _logging(level: str) -> None:
    from edge.ops.logs import setup_logging

    setup_logging(level)


def _config_file(args: argparse.Namespace) -> Path:
    """The config file to change: -c, else the system one."""
    path = args.config or (DEFAULT_CONFIG if DEFAULT_CONFIG.is_file() else None)
    if path is None:
        raise ConfigError(f"no config file: name it with -c (no {DEFAULT_CONFIG} here)")
    return Path(path)


def cmd_promote(args: argparse.Namespace) -> int:
    from edge.promote import promote, rollback

    config = _config_file(args)
    if args.command == "promote":
        previous, new = promote(config, _model_path(args.bundle))
    else:
        previous, new = rollback(config)
    print(f"{config}: model.path {previous} -> {new} (the previous is kept for rollback)")
    if args.pid:
        os.kill(args.pid, signal.SIGHUP)
        print(f"sent SIGHUP to {args.pid}: the daemon switches at the next whole second")
    else:
        print("reload the daemon to use it: sudo systemctl reload soundwatch (or kill -HUP <pid>)")
    return 0


def cmd_shadow_diff(args: argparse.Namespace) -> int:
    from edge.disagree import report

    loaded = _config(args)
    out, device = loaded.resolve(loaded.config.output.dir), loaded.config.output.device
    print(report(out / device, out / "shadow" / device))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundwatch", description="Real-time sound event detection on small devices."
    )
    p.add_argument("--version", action="version", version=f"soundwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument(
            "-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG} if present)"
        )
        q.add_argument(
            "--model",
            help="model bundle folder, or the name of a bundled model (overrides model.path)",
        )
        q.add_argument("--labels", type=_labels, help="keep only these labels, comma-separated")
        q.add_argument(
            "--model-file",
            choices=get_args(ModelFile),
            help="which model file of the bundle to run (default: auto)",
        )
        q.add_argument("--threads", type=int, help="inference threads (default: 1)")
        q.add_argument(
            "--hop", type=float, help="stride between windows, s (default: the bundle's)"
        )
        q.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    run = sub.add_parser("run", help="listen and detect until stopped (the daemon)")
    common(run)
    run.add_argument("--demo", action="store_true", help="listen to the built-in demo source")
    run.add_argument("--files", nargs="+", metavar="PATH", help="replay these files or folders")
    run.add_argument("--speed", type=float, help="replay speed: 1 real time, 0 as fast as possible")
    run.add_argument("--out", help="output folder (overrides output.dir)")
    run.add_argument("--print", choices=["events", "seconds", "both", "none"], help="what to print")
    run.set_defaults(func=cmd_run)

    scan = sub.add_parser("scan", help="score recordings as fast as possible")
    scan.add_argument("paths", nargs="+", help="audio files or folders (searched recursively)")
    common(scan)
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

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(func=cmd_devices)

    check = sub.add_parser("check", help="validate a config and its bundle, then exit")
    common(check)
    check.add_argument(
        "--connect", action="store_true", help="also connect to the MQTT broker (and disconnect)"
    )
    check.set_defaults(func=cmd_check)

    summarize = sub.add_parser(
        "summarize", help="detections per hour and day, and coverage, as CSV and PNG"
    )
    summarize.add_argument("folder", help="a `soundwatch scan --out` folder (or its URL)")
    summarize.add_argument("--to", help="where the summary goes (default: <folder>/summary)")
    summarize.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    summarize.set_defaults(func=cmd_summarize)

    review = sub.add_parser("review", help="a web page to judge the detections of scan outputs")
    review.add_argument("folder", help="a `soundwatch scan --out` folder")
    review.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1; any other needs SOUNDWATCH_REVIEW_TOKEN)",
    )
    review.add_argument("--port", type=int, default=8088, help="port (default: 8088; 0: any free)")
    review.add_argument("--open", action="store_true", help="open the page in a browser")
    review.add_argument(
        "--model", help="bundle folder or bundled model name that POST /api/infer scores with"
    )
    review.add_argument("--export", metavar="DIR", help="write the verdicts as annotations, exit")
    review.add_argument(
        "--reviewer", help="name stored with each verdict (default: the user running it)"
    )
    review.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    review.set_defaults(func=cmd_review)

    bench = sub.add_parser("bench", help="measure speed of scan against bare inference")
    bench.add_argument(
        "--model", required=True, help="model bundle folder, or the name of a bundled model"
    )
    bench.add_argument(
        "--seconds", type=float, help="synthetic audio to score, s (default: 600; --live: 30)"
    )
    bench.add_argument(
        "--live",
        action="store_true",
        help="the daemon on a PulseAudio device the bench starts, next to capture + bare"
        " inference: CPU, RSS, start-up, sound-to-MQTT latency",
    )
    bench.add_argument("--audio", help="--live: play this recording (default: generated)")
    bench.add_argument(
        "--model-file", default="auto", help="--live: the model file to run (default: auto)"
    )
    bench.add_argument(
        "--block", type=float, help="--live: capture block, s (default: source.block_seconds)"
    )
    bench.add_argument("--files", nargs="*", default=[], help="score these recordings instead")
    bench.add_argument(
        "--threads", type=int, default=1, help="inference threads = CPU cores used (default: 1)"
    )
    bench.add_argument(
        "--batch", type=int, default=256, help="windows per model call (default: 256)"
    )
    bench.add_argument(
        "--repeats", type=int, default=3, help="runs per timing, the best kept (default: 3)"
    )
    bench.add_argument(
        "--rate",
        type=int,
        help="synthetic audio rate, Hz (default: 44100; 48000 for 44.1 kHz models)",
    )
    bench.add_argument("--json", action="store_true", help="print JSON instead of a table")
    bench.set_defaults(func=cmd_bench)

    for name, text in (
        ("promote", "make a bundle the deployed model (model.path), the previous kept"),
        ("rollback", "put back the model the last promote or rollback replaced"),
    ):
        q = sub.add_parser(name, help=text)
        if name == "promote":
            q.add_argument("bundle", help="bundle folder, or the name of a bundled model")
        q.add_argument(
            "-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG} if present)"
        )
        q.add_argument("--pid", type=int, help="the daemon's process id: send it SIGHUP")
        q.set_defaults(func=cmd_promote)
    diff = sub.add_parser(
        "shadow-diff", help="list where the deployed model and its shadow disagree"
    )
    common(diff)
    diff.set_defaults(func=cmd_shadow_diff)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except SoundwatchError as exc:
        from edge.ops.logs import stderr_is_journal

        prefix = "<3>" if stderr_is_journal() else ""  # journald: filed as an error
        for line in str(exc).splitlines():
            print(f"{prefix}soundwatch: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
