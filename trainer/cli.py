"""`soundwatch-train`: turn recordings (or, for now, a hand-made design) into model bundles."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from edge import __version__
from edge.errors import SoundwatchError
from trainer.cli_data import LABEL_COLUMN_HELP, read_annotations
from trainer.cli_fit import add_fit


def cmd_tone_bundle(args: argparse.Namespace) -> int:
    from trainer.toybundle import make_tone_bundle

    folder = make_tone_bundle(Path(args.folder))
    print(f"wrote {folder}")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from trainer.calibrate import calibrate
    from trainer.run import TrainError

    if (args.data is None) == (args.verdicts is None):
        raise TrainError("calibrate: give --data (dense annotations) or --verdicts, not both")
    if args.verdicts is not None:
        return _recalibrate(args)
    data = read_annotations(args, dedup=True)
    choices, report = calibrate(
        Path(args.model), data.annotations, args.ratio, write=not args.dry_run
    )
    for choice in choices:
        print(choice.line())
    if any(c.kept for c in choices):
        print(
            "warning: some thresholds were kept: too few true seconds of those labels in"
            " these recordings to choose on",
            file=sys.stderr,
        )
    print(report.table())
    print(
        "(not written: --dry-run)"
        if args.dry_run
        else f"wrote {Path(args.model) / 'manifest.yaml'}"
    )
    return 0


def _recalibrate(args: argparse.Namespace) -> int:
    from trainer.run import TrainError
    from trainer.verdicts import recalibrate, reviewed

    if args.precision is None:
        raise TrainError("calibrate --verdicts: name the precision to reach, e.g. --precision 0.9")
    args.data = args.verdicts
    events = reviewed(read_annotations(args, dedup=True).annotations)
    choices = recalibrate(Path(args.model), events, args.precision, write=not args.dry_run)
    for choice in choices:
        print(choice.line())
    if any(c.kept for c in choices):
        print(
            "WARNING: some thresholds were KEPT (see above): too few verdicts to choose on",
            file=sys.stderr,
        )
    changed = any(not c.kept and c.after != c.before for c in choices)
    if args.dry_run or not changed:
        print("(not written: --dry-run)" if args.dry_run else "(nothing changed)")
    else:
        print(f"wrote {Path(args.model) / 'manifest.yaml'}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from trainer.verdicts import comparison_table, reviewed, score

    events = reviewed(read_annotations(args, dedup=True).annotations)
    deployed = score(Path(args.model), events)
    candidate = score(Path(args.candidate), events)
    print(comparison_table(events, deployed, candidate))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from trainer.export import DEFAULT_FORMATS, MIN_GATE_POSITIVES, export_bundle
    from trainer.run import load_run
    from trainer.transfer import is_transfer_run

    bundle = Path(args.bundle)
    if is_transfer_run(Path(args.run_dir)):
        return _export_transfer(args, bundle)
    run = load_run(Path(args.run_dir))
    report = export_bundle(
        run,
        bundle,
        name=args.name or bundle.name,
        version=args.version or default_version(),
        command=args.command_line,
        formats=tuple(args.formats.split(",")) if args.formats else DEFAULT_FORMATS,
        max_f1_drop=args.max_f1_drop,
        min_positives=MIN_GATE_POSITIVES if args.min_positives is None else args.min_positives,
        licence=args.licence,
        overwrite=args.overwrite,
        progress=False if args.quiet else None,
    )
    print(report.table())
    print(f"wrote {bundle} in {report.seconds:.1f} s")
    return 0


def default_version() -> str:
    """A bundle's version when none is given: the UTC minute of the export, so two candidates
    exported on one day still differ in every event message and metric."""
    return datetime.now(timezone.utc).strftime("%Y.%m.%d.%H%M")


def _export_transfer(args: argparse.Namespace, bundle: Path) -> int:
    from trainer.export import MIN_GATE_POSITIVES
    from trainer.transfer import load_transfer_run
    from trainer.transfer_export import HEAD_FORMATS, export_transfer

    formats = args.formats.split(",") if args.formats else list(HEAD_FORMATS)
    report = export_transfer(
        load_transfer_run(Path(args.run_dir)),
        bundle,
        name=args.name or bundle.name,
        version=args.version or default_version(),
        command=args.command_line,
        formats=tuple(formats),
        max_f1_drop=args.max_f1_drop,
        min_positives=MIN_GATE_POSITIVES if args.min_positives is None else args.min_positives,
        licence=args.licence,
        overwrite=args.overwrite,
    )
    print(report.table())
    print(f"wrote {bundle} in {report.seconds:.1f} s")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from trainer.evaluate import evaluate

    data = read_annotations(args, dedup=True)
    out = Path(args.out) if args.out else None
    report = evaluate(
        Path(args.model),
        data.annotations,
        onset_tolerance_seconds=args.onset_tolerance,
        model_file=args.file,
        scan_dir=out / "scan" if out else None,
    )
    print(report.table())
    if out:
        report.write(out)
        print(f"wrote {out / 'evaluation.json'} and {out / 'evaluation.csv'}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundwatch-train", description="Build soundwatch model bundles."
    )
    p.add_argument("--version", action="version", version=f"soundwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    tone = sub.add_parser("tone-bundle", help="write the hand-made 1 kHz / 3 kHz tone bundle")
    tone.add_argument("folder", help="bundle folder to write, e.g. models/tone")
    tone.set_defaults(func=cmd_tone_bundle)

    add_fit(sub)

    export = sub.add_parser("export", help="export a training run as a checked model bundle")
    export.add_argument("run_dir", help="run folder written by fit")
    export.add_argument("--bundle", required=True, help="bundle folder to write, e.g. models/x")
    export.add_argument("--name", help="bundle name (default: the folder name)")
    export.add_argument("--version", help="bundle version (default: now, YYYY.MM.DD.HHMM UTC)")
    export.add_argument(
        "--formats",
        help="comma-separated model files to write (default: onnx-int8,tflite-int8,onnx-fp32;"
        " a --backbone run: onnx-int8,onnx-fp32)",
    )
    export.add_argument(
        "--max-f1-drop",
        type=float,
        default=0.01,
        help="most F1 an int8 file may lose against fp32 on any label, 0.01 = one point"
        " (default: %(default)s)",
    )
    export.add_argument(
        "--min-positives",
        type=int,
        help="positive validation windows a label needs before --max-f1-drop is enforced on it"
        " (fewer: the drop is only reported) (default: 50)",
    )
    export.add_argument("--overwrite", action="store_true", help="replace a bundle in --bundle")
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    export.add_argument(
        "--licence",
        default="not stated",
        help="licence of the training data, for the model card (default: %(default)s)",
    )
    export.set_defaults(func=cmd_export)

    ev = sub.add_parser("evaluate", help="score a bundle on densely annotated recordings")
    ev.add_argument("--model", required=True, help="bundle folder")
    ev.add_argument("--data", required=True, help="annotations (SongExplorer, Raven, CSV, folders)")
    ev.add_argument(
        "--onset-tolerance",
        type=float,
        default=0.2,
        help="seconds between true and predicted onsets for an event match (default: %(default)s)",
    )
    ev.add_argument(
        "--file",
        default="auto",
        choices=["auto", "onnx-int8", "onnx-fp32", "tflite-int8", "tflite-fp32"],
        help="which model file to run (default: auto, as the edge picks)",
    )
    ev.add_argument("--label-column", help=LABEL_COLUMN_HELP)
    ev.add_argument("--out", help="folder for evaluation.json, evaluation.csv and scan outputs")
    ev.set_defaults(func=cmd_evaluate)

    cal = sub.add_parser(
        "calibrate",
        help="choose a bundle's thresholds by scanning held-out, densely annotated recordings",
    )
    cal.add_argument("--model", required=True, help="bundle folder (its manifest is updated)")
    cal.add_argument("--data", help="dense annotations of recordings not trained on")
    cal.add_argument(
        "--verdicts",
        help="instead of --data: exported verdicts (soundwatch review --export) not trained on;"
        " needs --precision",
    )
    cal.add_argument(
        "--precision",
        type=float,
        help="with --verdicts: the precision each label's threshold must reach on them, e.g. 0.9",
    )
    cal.add_argument(
        "--ratio",
        type=float,
        default=1.0,
        help="precision / recall to aim for per second: 1 balanced, 2 fewer false alarms"
        " (default: %(default)s)",
    )
    cal.add_argument("--label-column", help=LABEL_COLUMN_HELP)
    cal.add_argument("--dry-run", action="store_true", help="print the choice, change nothing")
    cal.set_defaults(func=cmd_calibrate)

    cmp_ = sub.add_parser(
        "compare",
        help="precision and recall of a deployed and a candidate bundle on held-out verdicts",
    )
    cmp_.add_argument("--model", required=True, help="the deployed bundle")
    cmp_.add_argument("--candidate", required=True, help="the candidate bundle")
    cmp_.add_argument(
        "--data", required=True, help="exported verdicts (soundwatch review --export) held out"
    )
    cmp_.add_argument("--label-column", help=LABEL_COLUMN_HELP)
    cmp_.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The exact command, for model cards.
    args.command_line = shlex.join(["soundwatch-train", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except SoundwatchError as err:
        print(f"soundwatch-train: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
