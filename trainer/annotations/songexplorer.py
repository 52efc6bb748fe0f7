"""SongExplorer annotations: `<wav>-annotated-<who>.csv` beside each recording, times in tics."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from trainer.annotations.rows import (
    AnnotationError,
    AnnotationSet,
    Collector,
    RowError,
    as_set,
    parse_number,
    read_rows,
)

SONGEXPLORER_PATTERN = "*-annotated-*.csv"
"""SongExplorer annotation files sit beside their recording: `<wav>-annotated-<who>.csv`."""
_SONGEXPLORER_COLUMNS = "wav,start_tic,stop_tic,kind,label"


def load_songexplorer(
    root: Path,
    *,
    kinds: Collection[str] | None = frozenset({"annotated"}),
    labels: Collection[str] | None = None,
) -> AnnotationSet:
    """SongExplorer annotations from every `<wav>-annotated-<who>.csv` under `root` (recursive).

    `root` may also be one such file. Rows are `wav,start_tic,stop_tic,kind,label`, no header;
    a tic is one sample at the recording's own rate; point events have start == stop. The wav
    column is relative to the CSV's folder. Rows of other `kinds` are skipped silently (None
    keeps all); with `labels`, rows of other labels are reported as problems.
    """
    root = Path(root)
    if root.is_file():
        files = [root]
    elif root.is_dir():
        files = sorted(root.rglob(SONGEXPLORER_PATTERN))
        if not files:
            raise AnnotationError(f"{root}: no SongExplorer annotations ({SONGEXPLORER_PATTERN})")
    else:
        raise AnnotationError(f"{root}: no such file or folder")
    collector = Collector(labels)
    kinds = as_set(kinds)
    for path in files:
        for line, row in read_rows(path, ","):
            origin = f"{path}:{line}"
            with collector.row(origin):
                if len(row) != 5:
                    raise RowError(
                        f"expected 5 columns ({_SONGEXPLORER_COLUMNS}), found {len(row)}"
                    )
                wav, start_text, stop_text, kind, label = row
                if kinds is not None and kind not in kinds:
                    continue
                start = parse_number(start_text, "start_tic")
                stop = parse_number(stop_text, "stop_tic")
                collector.add(origin, path.parent / wav, start, stop, label, kind, in_samples=True)
    return collector.result
