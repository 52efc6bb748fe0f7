"""Plain CSV annotations: a header naming `file,start_seconds,end_seconds,label`."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from trainer.annotations.rows import (
    AnnotationError,
    AnnotationSet,
    Collector,
    RowError,
    parse_number,
    read_rows,
)

CSV_COLUMNS = ("file", "start_seconds", "end_seconds", "label")


def load_csv(table: Path, *, labels: Collection[str] | None = None) -> AnnotationSet:
    """Annotations from a CSV with header `file,start_seconds,end_seconds,label`.

    Columns may come in any order and extra columns are ignored; `file` is relative to the CSV's
    folder. Point events have start == end.
    """
    table = Path(table)
    rows = read_rows(table, ",")
    header_line, header = rows[0] if rows else (1, [])
    if not set(CSV_COLUMNS) <= set(header):
        raise AnnotationError(
            f"{table}:{header_line}: header must name {','.join(CSV_COLUMNS)} "
            f"(found: {','.join(header) or 'nothing'})"
        )
    file_i, start_i, end_i, label_i = (header.index(name) for name in CSV_COLUMNS)
    collector = Collector(labels)
    for line, row in rows[1:]:
        origin = f"{table}:{line}"
        with collector.row(origin):
            if len(row) != len(header):
                raise RowError(f"expected {len(header)} columns, found {len(row)}")
            start = parse_number(row[start_i], "start_seconds")
            end = parse_number(row[end_i], "end_seconds")
            collector.add(origin, table.parent / row[file_i], start, end, row[label_i])
    return collector.result
