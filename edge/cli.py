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
from pathlib import Path

from edge import __version__
from edge.cli_common import add_common, config_from, log_at, model_path
from edge.cli_review import add_summarize_and_review
from edge.cli_scan import add_scan
from edge.config import DEFAULT_CONFIG, Loaded
from edge.errors import ConfigError, SoundwatchError
from edge.schema import Path_

logger = logging.getLogger("soundwatch")


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
        return config_from(args, extra)

    loaded = configured()
    log_at(loaded.config.log_level if not args.verbose else "debug")
    app = App(loaded, reload_config=configured)
    app.install_signal_handlers()
    return app.run()


def cmd_devices(args: argparse.Namespace) -> int:
    from edge.audio.capture import format_devices, list_devices

    print(format_devices(list_devices()))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from edge.builders import build_analyzer
    from edge.preflight import preflight

    loaded = config_from(args)
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

    log_at("warning")
    if args.live:
        from edge.bench.live import DEFAULT_SECONDS, bench_live

        audio = Path(args.audio) if args.audio else None
        seconds = DEFAULT_SECONDS if args.seconds is None else args.seconds
        model = bundle_folder(model_path(args.model))
        print(
            bench_live(
                model,
                seconds=seconds,
                audio=audio,
                file_key=args.model_file,
                block_seconds=args.block,
                rounds=args.rounds,
                as_json=args.json,
            )
        )
        return 0
    print(
        bench(
            bundle_folder(model_path(args.model)),
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
        previous, new = promote(config, model_path(args.bundle))
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

    loaded = config_from(args)
    out, device = loaded.resolve(loaded.config.output.dir), loaded.config.output.device
    print(report(out / device, out / "shadow" / device))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundwatch", description="Real-time sound event detection on small devices."
    )
    p.add_argument("--version", action="version", version=f"soundwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="listen and detect until stopped (the daemon)")
    add_common(run)
    run.add_argument("--demo", action="store_true", help="listen to the built-in demo source")
    run.add_argument("--files", nargs="+", metavar="PATH", help="replay these files or folders")
    run.add_argument("--speed", type=float, help="replay speed: 1 real time, 0 as fast as possible")
    run.add_argument("--out", help="output folder (overrides output.dir)")
    run.add_argument("--print", choices=["events", "seconds", "both", "none"], help="what to print")
    run.set_defaults(func=cmd_run)

    add_scan(sub)

    devices = sub.add_parser("devices", help="list audio input devices")
    devices.set_defaults(func=cmd_devices)

    check = sub.add_parser("check", help="validate a config and its bundle, then exit")
    add_common(check)
    check.add_argument(
        "--connect", action="store_true", help="also connect to the MQTT broker (and disconnect)"
    )
    check.set_defaults(func=cmd_check)

    add_summarize_and_review(sub)

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
    bench.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="--live: daemon and bare loop alternate this often; each round's ratio and the"
        " median (default: 1)",
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
    add_common(diff)
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
