"""`soundwatch-train fit`: its arguments and what it runs (a CNN, or a head on a backbone)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.cli_data import LABEL_COLUMN_HELP, read_annotations

if TYPE_CHECKING:
    from trainer.annotations import AnnotationSet
    from trainer.config import TrainConfig


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
            ("validation.thresholds", args.thresholds),
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
    data = read_annotations(args)
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


def add_fit(sub: Any) -> None:
    """The `fit` subcommand and its arguments, on `sub` (argparse's subparsers)."""
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
    f.add_argument(
        "--thresholds",
        choices=["auto", "out-of-fold", "validation"],
        help="where per-label thresholds are chosen: out-of-fold, on every training recording"
        " scored per second by models that did not train on it; validation, on the validation"
        " windows (default: auto, out-of-fold for a --backbone head, and for a CNN with"
        " --validation recordings or blocks; README, How thresholds are chosen)",
    )
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
