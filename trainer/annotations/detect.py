"""Tell an annotation path's format, and load it with the matching loader."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from pathlib import Path

from trainer.annotations.csvtable import CSV_COLUMNS, load_csv
from trainer.annotations.folders import load_folders
from trainer.annotations.raven import RAVEN_BEGIN, load_raven
from trainer.annotations.rows import AnnotationError, AnnotationSet, audio_under, read_text
from trainer.annotations.songexplorer import SONGEXPLORER_PATTERN, load_songexplorer


def detect_format(path: Path) -> str:
    """`songexplorer`, `raven`, `csv` or `folders`: what `path` holds; AnnotationError if unclear.

    A folder with `*-annotated-*.csv` (anywhere below) is SongExplorer; else one with
    `*.selections.txt` is Raven (every table loaded); else one with sub-folders holding audio
    is folder-per-class. A file is told by its name, then by its header line.
    """
    path = Path(path)
    if path.is_dir():
        if next(path.rglob(SONGEXPLORER_PATTERN), None) is not None:
            return "songexplorer"
        if next(path.rglob("*.selections.txt"), None) is not None:
            return "raven"
        if any(p.is_dir() and audio_under(p) for p in path.iterdir()):
            return "folders"
        raise AnnotationError(
            f"{path}: cannot tell the annotation format: no {SONGEXPLORER_PATTERN}, no "
            "*.selections.txt, and no class folders with audio"
        )
    if not path.is_file():
        raise AnnotationError(f"{path}: no such file or folder")
    if re.search(r"-annotated-.*\.csv$", path.name):
        return "songexplorer"
    if path.name.lower().endswith(".selections.txt"):
        return "raven"
    first_line = next(iter(read_text(path).splitlines()), "")
    if "\t" in first_line and RAVEN_BEGIN in first_line.split("\t"):
        return "raven"
    if set(CSV_COLUMNS) <= {cell.strip() for cell in first_line.split(",")}:
        return "csv"
    raise AnnotationError(
        f"{path}: cannot tell the annotation format: not <wav>-annotated-<who>.csv, not a Raven "
        f"table ({RAVEN_BEGIN!r} column), no CSV header {','.join(CSV_COLUMNS)}"
    )


def load_any(path: Path, **options: object) -> AnnotationSet:
    """Load `path` with the loader `detect_format` picks, passing `options` on.

    An option the chosen loader does not take (e.g. `kinds` for a Raven table) raises
    AnnotationError rather than being dropped silently.
    """
    path = Path(path)
    kind = detect_format(path)
    loaders: dict[str, Callable[..., AnnotationSet]] = {
        "songexplorer": load_songexplorer,
        "raven": load_raven,
        "csv": load_csv,
        "folders": load_folders,
    }
    loader = loaders[kind]
    accepted = set(inspect.signature(loader).parameters) - {"root", "table"}
    if kind == "raven" and path.is_dir():
        accepted.discard("recording")  # one recording cannot serve every table
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise AnnotationError(
            f"{path}: option {', '.join(unknown)} does not apply to {kind} annotations "
            f"(accepted: {', '.join(sorted(accepted))})"
        )
    if kind == "raven" and path.is_dir():
        result = AnnotationSet()
        for table in sorted(path.rglob("*.selections.txt")):
            one = loader(table, **options)
            result.annotations += one.annotations
            result.problems += one.problems
        return result
    return loader(path, **options)
