"""`soundwatch-train`: turn recordings (or, for now, a hand-made design) into model bundles."""

from __future__ import annotations

import argparse
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from edge import __version__
from edge.errors import SoundwatchError

if TYPE_CHECKING:
    from trainer.annotations import AnnotationSet
    from trainer.config import TrainConfig


def cmd_tone_bundle(args: argparse.Namespace) -> int:
    from trainer.toybundle import make_tone_bundle

    folder = make_tone_bundle(Path(args.folder))
    print(f"wrote {folder}")
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    from trainer.config import load_config
    from trainer.finetune import load_init
    from trainer.run import TrainError
    from trainer.train import fit

    if args.init and args.backbone:
        raise TrainError("--init and --backbone: a backbone's head cannot start from a bundle yet")
    init = load_init(Path(args.init)) if args.init else None

    overrides = {
        key: value
        for key, value in (
            ("labels", args.labels.split(",") if args.labels else None),
            ("mode", args.mode),
            ("window_seconds", args.window_seconds),
            ("sample_rate_hz", args.rate),
            ("training.epochs", args.epochs),
            ("training.seed", args.seed),
            ("training.device", args.device),
            ("training.threads", args.threads),
            ("validation.split", args.validation),
            ("validation.share", args.share),
            ("validation.folds", args.folds),
            ("augment.background", args.background),
            ("dense", None if args.dense is None else args.dense or ["*"]),
        )
        if value is not None
    }
    if init is not None:
        # The init's settings (features, window, network); its labels come first in fit, then
        # new ones found. Its `dense` patterns do not carry over: reviewed recordings are not
        # densely annotated, so only --dense names the ones that are.
        overrides = {"labels": [], "dense": [], **overrides}
    config_file = Path(args.config) if args.config else None
    if init is not None and config_file is None:
        config_file = init.folder / "train.yaml"
    config = load_config(config_file, overrides)
    out = Path(args.out)
    if (out / "checkpoint.pt").exists() and not args.overwrite:
        raise TrainError(f"{out}: already holds a run; choose another --out or pass --overwrite")
    data = _annotations(args)
    if args.backbone:
        _fit_transfer(args, config, data, out)
    else:
        fit(
            config,
            data,
            out,
            command=args.command_line,
            progress=False if args.quiet else None,
            init=init,
        )
    print(f"wrote {out} (report: {out / 'report' / 'summary.md'})")
    return 0


def _fit_transfer(
    args: argparse.Namespace, config: TrainConfig, data: AnnotationSet, out: Path
) -> None:
    from edge.model.backbone import load_backbone
    from trainer.embeddings import default_cache
    from trainer.transfer import fit_transfer

    backbone = load_backbone(args.backbone)
    manifest = Path(args.backbone)
    manifest = manifest / "backbone.yaml" if manifest.is_dir() else manifest
    cache = Path(args.cache) if args.cache else default_cache()
    fit_transfer(
        config, data, backbone, manifest, cache, out, head=args.head, command=args.command_line
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from trainer.calibrate import calibrate
    from trainer.run import TrainError

    if (args.data is None) == (args.verdicts is None):
        raise TrainError("calibrate: give --data (dense annotations) or --verdicts, not both")
    if args.verdicts is not None:
        return _recalibrate(args)
    data = _annotations(args, dedup=True)
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
    events = reviewed(_annotations(args, dedup=True).annotations)
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

    events = reviewed(_annotations(args, dedup=True).annotations)
    deployed = score(Path(args.model), events)
    candidate = score(Path(args.candidate), events)
    print(comparison_table(events, deployed, candidate))
    return 0


def _annotations(args: argparse.Namespace, *, dedup: bool = False) -> AnnotationSet:
    """`--data` loaded, its bad rows reported; with `dedup`, identical rows counted once (two
    annotators marking one sound make one true event; `fit` drops them itself, and says so)."""
    from trainer.annotations import AnnotationSet, load_any

    paths = args.data if isinstance(args.data, list) else [args.data]
    data = AnnotationSet()
    for path in paths:
        loaded = load_any(Path(path), **_annotation_options(args))
        data = AnnotationSet(data.annotations + loaded.annotations, data.problems + loaded.problems)
    for problem in data.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if dedup:
        data, duplicates = data.without_duplicates()
        if duplicates:
            print(f"dropped {duplicates} duplicate annotations (same recording, label, start, end)")
    return data


def _annotation_options(args: argparse.Namespace) -> dict[str, object]:
    """Loader options from the command line; only those given (a Raven option on a SongExplorer
    folder is then a clear error, not ignored)."""
    return {"label_column": args.label_column} if args.label_column else {}


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

    data = _annotations(args, dedup=True)
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


LABEL_COLUMN_HELP = (
    "Raven tables: the column that holds the label (default: the first of Annotation, Label,"
    " Species, Class, Call Type, Sound Type)"
)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundwatch-train", description="Build soundwatch model bundles."
    )
    p.add_argument("--version", action="version", version=f"soundwatch {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    tone = sub.add_parser("tone-bundle", help="write the hand-made 1 kHz / 3 kHz tone bundle")
    tone.add_argument("folder", help="bundle folder to write, e.g. models/tone")
    tone.set_defaults(func=cmd_tone_bundle)

    f = sub.add_parser("fit", help="train a model on annotated recordings into a run folder")
    f.add_argument(
        "--data",
        required=True,
        action="append",
        help="annotations (SongExplorer, Raven, CSV, folders); repeat to train on several, e.g."
        " the original data and exported verdicts",
    )
    f.add_argument(
        "--init",
        metavar="BUNDLE",
        help="fine-tune from a bundle (or run folder): its weights, settings and labels first;"
        " wrong verdicts (not_<label>) train as background in exclusive mode",
    )
    f.add_argument("--out", required=True, help="run folder to write, e.g. runs/flysong")
    f.add_argument("-c", "--config", help="train.yaml with settings (default: built-in defaults)")
    f.add_argument("--labels", help="comma-separated labels in output order (default: all found)")
    f.add_argument("--mode", choices=["exclusive", "overlapped"], help="default: exclusive")
    f.add_argument("--window-seconds", type=float, help="model input window, s (default: 0.2048)")
    f.add_argument(
        "--rate",
        type=int,
        help="model sample rate, Hz; recordings are resampled to it"
        " (default: the recordings' own, which must then agree)",
    )
    f.add_argument("--label-column", help=LABEL_COLUMN_HELP)
    f.add_argument("--epochs", type=int, help="most epochs per model (default: 40)")
    f.add_argument("--seed", type=int, help="random seed (default: 0)")
    f.add_argument("--device", choices=["auto", "cpu", "cuda"], help="default: auto")
    f.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's)")
    f.add_argument(
        "--validation",
        choices=["share", "recordings", "blocks"],
        help="hold out a share of each label's annotations, whole recordings, or 30 s blocks"
        " of each recording (default: share)",
    )
    f.add_argument("--share", type=float, help="share held out for validation (default: 0.2)")
    f.add_argument("--folds", type=int, help="k-fold cross-validation with k models (default: 1)")
    f.add_argument("--background", help="folder of recordings to mix in as augmentation")
    f.add_argument(
        "--dense",
        nargs="*",
        metavar="PATTERN",
        help="the annotations are dense (all recordings, or those whose path or name matches a"
        " PATTERN): unannotated audio becomes background",
    )
    f.add_argument(
        "--backbone",
        help="train a small head on this pretrained backbone's embeddings (a backbone.yaml or"
        " its folder; README, Transfer learning)",
    )
    f.add_argument(
        "--head",
        choices=["linear", "mlp"],
        default="linear",
        help="with --backbone (default: linear)",
    )
    f.add_argument(
        "--cache",
        help="with --backbone: folder for cached embeddings"
        " (default: ~/.cache/soundwatch/embeddings)",
    )
    f.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_fit)

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
