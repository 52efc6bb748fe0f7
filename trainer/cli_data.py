"""`--data` for every command that reads annotations: loaded, bad rows reported."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trainer.annotations import AnnotationSet

LABEL_COLUMN_HELP = (
    "Raven tables: the column that holds the label (default: the first of Annotation, Label,"
    " Species, Class, Call Type, Sound Type)"
)


def read_annotations(args: argparse.Namespace, *, dedup: bool = False) -> AnnotationSet:
    """`--data` loaded, its bad rows reported; with `dedup`, identical rows counted once (two
    annotators marking one sound make one true event; `fit` drops them itself, and says so)."""
    from trainer.annotations import AnnotationSet, load_any

    paths = args.data if isinstance(args.data, list) else [args.data]
    data = AnnotationSet()
    for path in paths:
        loaded = load_any(Path(path), **annotation_options(args))
        data = AnnotationSet(data.annotations + loaded.annotations, data.problems + loaded.problems)
    for problem in data.problems:
        print(f"skipped: {problem}", file=sys.stderr)
    if dedup:
        data, duplicates = data.without_duplicates()
        if duplicates:
            print(f"dropped {duplicates} duplicate annotations (same recording, label, start, end)")
    return data


def annotation_options(args: argparse.Namespace) -> dict[str, object]:
    """Loader options from the command line; only those given (a Raven option on a SongExplorer
    folder is then a clear error, not ignored)."""
    return {"label_column": args.label_column} if args.label_column else {}
