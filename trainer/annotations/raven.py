"""Raven selection tables (Cornell's Raven Pro / Lite): one tab-separated table per recording.

Rows become annotations through the shared row reader of `trainer.annotations.rows` (same checks,
same `Problem`s naming file and line); `trainer.annotations.load_any` picks this loader for
`*.selections.txt` files and for tables told by their `Begin Time (s)` column.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Collection
from pathlib import Path

from edge.audio.files import AUDIO_EXTENSIONS
from trainer.annotations.rows import (
    AnnotationError,
    AnnotationSet,
    Collector,
    RowError,
    parse_number,
    read_rows,
)

RAVEN_BEGIN = "Begin Time (s)"
RAVEN_END = "End Time (s)"
# Where tables keep the label when no column is named: Raven's own default first, then what
# other tools and people call it.
LABEL_COLUMNS = ("Annotation", "Label", "Species", "Class", "Call Type", "Sound Type")
_RAVEN_SUFFIX = re.compile(r"\.Table\.\d+\.selections\.txt$", re.IGNORECASE)


def load_raven(
    table: Path,
    *,
    label_column: str | None = None,
    recording: Path | None = None,
    labels: Collection[str] | None = None,
) -> AnnotationSet:
    """Selections from a Raven selection table (tab-separated, one header line).

    Times come from `Begin Time (s)` and `End Time (s)`, the label from `label_column` (None:
    the first of `LABEL_COLUMNS` the table has). The
    recording is, in order: the `Begin File` column (relative to the table's folder), else
    `recording`, else the table's name without `.Table.1.selections.txt` with common audio
    extensions tried. When `File Offset (s)` is present the start is taken from it, because in a
    table spanning several files `Begin Time (s)` counts from the first file. Raven repeats each
    selection once per view (waveform, spectrogram): only the first row of each `Selection`
    number is kept.
    """
    table = Path(table)
    rows = read_rows(table, "\t")
    if not rows:
        raise AnnotationError(f"{table}: empty Raven table")
    header_line, header = rows[0]
    if label_column is None:
        label_column = next((name for name in LABEL_COLUMNS if name in header), None)
        if label_column is None:
            raise AnnotationError(
                f"{table}:{header_line}: no label column (none of {', '.join(LABEL_COLUMNS)};"
                f" columns: {', '.join(header)}): name it with --label-column"
            )
    missing = [name for name in (RAVEN_BEGIN, RAVEN_END, label_column) if name not in header]
    if missing:
        raise AnnotationError(
            f"{table}:{header_line}: no column {', '.join(repr(m) for m in missing)} "
            f"(columns: {', '.join(header)})"
        )
    column = {name: index for index, name in enumerate(header)}
    collector = Collector(labels)
    fixed_recording = None
    if "Begin File" not in column:
        fixed_recording = _raven_recording(table, recording)
        if fixed_recording is None:
            stem = _RAVEN_SUFFIX.sub("", table.name)
            collector.problem(
                str(table),
                f"recording not found: no 'Begin File' column, none given, and no {stem}.wav "
                "(or .flac, ...) beside the table",
            )
            return collector.result
    seen_selections: set[str] = set()
    for line, row in rows[1:]:
        origin = f"{table}:{line}"
        with collector.row(origin):
            if len(row) != len(header):
                raise RowError(f"expected {len(header)} tab-separated columns, found {len(row)}")
            if "Selection" in column:
                selection = row[column["Selection"]]
                if selection in seen_selections:
                    continue
                seen_selections.add(selection)
            begin = parse_number(row[column[RAVEN_BEGIN]], RAVEN_BEGIN)
            end = parse_number(row[column[RAVEN_END]], RAVEN_END)
            if "File Offset (s)" in column:
                offset = parse_number(row[column["File Offset (s)"]], "File Offset (s)")
                begin, end = offset, offset + (end - begin)
            path = fixed_recording or table.parent / row[column["Begin File"]]
            collector.add(origin, path, begin, end, row[column[label_column]])
    return collector.result


def _raven_recording(table: Path, given: Path | None) -> Path | None:
    if given is not None:
        return Path(given)
    # Raven names tables after the recording: `x.Table.1.selections.txt` for `x.wav`.
    stem = _RAVEN_SUFFIX.sub("", table.name)
    if Path(stem).suffix.lower() in AUDIO_EXTENSIONS and (table.parent / stem).is_file():
        return table.parent / stem
    candidates = sorted(
        path
        for path in table.parent.glob(f"{glob.escape(stem)}.*")
        if path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file()
    )
    return candidates[0] if candidates else None
