"""Annotation importers: SongExplorer CSV, Raven selection tables, plain CSV, folders per class.

The Raven and folder-per-class loaders are in `trainer.raven` and `trainer.folders`, built on
the row reader here; `load_any` and `detect_format` here cover every format.

Every loader returns an `AnnotationSet`: the annotations that are usable plus one `Problem` per
row that is not (missing recording, interval past the end, start after end, unknown label, bad
number, wrong column count), each naming its file and line, so one bad row never stops a data
set from loading. Only a file that cannot be read at all, or a format that cannot be told,
raises `AnnotationError`.

Times are seconds from the start of the recording. Recording lengths and rates come from the
audio header (`soundfile.info`, read once per file per load), never from decoding the audio.
Labels are kept as written: negative-example labels such as `not_mel-pulse` are ordinary labels
here; the dataset code gives the `not_` prefix its meaning.

No torch here (the trainer's other modules use it): importers stay fast to import and test.
"""

from __future__ import annotations

import csv
import inspect
import io
import math
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from edge.audio.files import AUDIO_EXTENSIONS
from edge.errors import SoundwatchError


class AnnotationError(SoundwatchError):
    """An annotation file cannot be read, or its format cannot be told; names the file."""


@dataclass(frozen=True)
class Annotation:
    """One labelled span of one recording, in seconds from the recording's start."""

    recording: Path
    """The audio file (absolute path)."""
    start_seconds: float
    end_seconds: float
    """Equal to `start_seconds` for point events (e.g. one fly-song pulse)."""
    label: str
    origin: str
    """Where it came from, `file:line` (or the audio file for folder-per-class), for messages."""
    kind: str = "annotated"
    """SongExplorer's kind (`annotated`, `detected`, `predicted`, ...); `annotated` elsewhere."""

    @property
    def is_point(self) -> bool:
        """True for a point event (no duration)."""
        return self.end_seconds == self.start_seconds

    @property
    def duration_seconds(self) -> float:
        return self.end_seconds - self.start_seconds


@dataclass(frozen=True)
class Problem:
    """A row (or file) that was not loaded, and why."""

    origin: str
    """`file:line`, or the file alone when the problem is not one row's."""
    message: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.message}"


@dataclass
class AnnotationSet:
    """Usable annotations in file order, and the problems met while loading them."""

    annotations: list[Annotation] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def labels(self) -> list[str]:
        """The distinct labels, sorted."""
        return sorted({a.label for a in self.annotations})

    def recordings(self) -> list[Path]:
        """The distinct recordings, sorted."""
        return sorted({a.recording for a in self.annotations})

    def counts(self) -> dict[str, int]:
        """Number of annotations per label, in label order."""
        counts = Counter(a.label for a in self.annotations)
        return {label: counts[label] for label in sorted(counts)}

    def filter(
        self, *, kinds: Collection[str] | None = None, labels: Collection[str] | None = None
    ) -> AnnotationSet:
        """Only the annotations of these kinds and labels (None keeps all); problems are kept.

        This selects silently; the loaders' `labels` argument instead reports other labels as
        problems (it checks for typos).
        """
        kinds, labels = _as_set(kinds), _as_set(labels)
        kept = [
            a
            for a in self.annotations
            if (kinds is None or a.kind in kinds) and (labels is None or a.label in labels)
        ]
        return AnnotationSet(kept, list(self.problems))


def _as_set(names: Collection[str] | None) -> frozenset[str] | None:
    # A lone string is one name, not a collection of characters ("pulse" in "pulses" is True).
    return None if names is None else frozenset([names] if isinstance(names, str) else names)


class _RowError(Exception):
    """One row cannot be used; the message becomes a Problem at that row."""


class _Collector:
    """Checks rows, turns them into annotations or problems, and caches recording headers."""

    def __init__(self, labels: Collection[str] | None) -> None:
        self.labels = _as_set(labels)
        self.result = AnnotationSet()
        # path -> (frames, sample rate in Hz), or the reason it cannot be read.
        self._info: dict[Path, tuple[int, int] | str] = {}

    def problem(self, origin: str, message: str) -> None:
        self.result.problems.append(Problem(origin, message))

    @contextmanager
    def row(self, origin: str) -> Iterator[None]:
        """Turns a _RowError raised inside into a Problem at `origin`; the load goes on."""
        try:
            yield
        except _RowError as error:
            self.problem(origin, str(error))

    def recording_info(self, path: Path) -> tuple[int, int]:
        """(frames, sample rate in Hz) from the header, or _RowError naming the file."""
        if path not in self._info:
            if not path.is_file():
                self._info[path] = f"recording {path} not found"
            else:
                try:
                    info = sf.info(str(path))
                    self._info[path] = (int(info.frames), int(info.samplerate))
                except (RuntimeError, OSError) as error:  # sf.LibsndfileError is a RuntimeError
                    self._info[path] = f"recording {path} cannot be read: {error}"
        found = self._info[path]
        if isinstance(found, str):
            raise _RowError(found)
        return found

    def add(
        self,
        origin: str,
        recording: Path,
        start: float,
        end: float,
        label: str,
        kind: str = "annotated",
        *,
        in_samples: bool = False,
    ) -> None:
        """Check one span (seconds, or samples at the recording's rate) and keep it.

        Raises _RowError for the caller to turn into a Problem at `origin`.
        """
        unit = "samples" if in_samples else "s"
        if not label:
            raise _RowError("empty label")
        if self.labels is not None and label not in self.labels:
            known = ", ".join(sorted(self.labels))
            raise _RowError(f"unknown label {label!r} (expected one of: {known})")
        if start > end:
            raise _RowError(
                f"start {_number_text(start)} {unit} is after end {_number_text(end)} {unit}"
            )
        if start < 0:
            raise _RowError(f"start {_number_text(start)} {unit} is before the recording")
        frames, rate_hz = self.recording_info(recording)
        start_seconds, end_seconds = (
            (start / rate_hz, end / rate_hz) if in_samples else (start, end)
        )
        # Half a sample of slack: seconds written with a few decimals may round just past the end.
        if end_seconds > (frames + 0.5) / rate_hz:
            raise _RowError(
                f"interval {_number_text(start_seconds)}-{_number_text(end_seconds)} s ends past "
                f"the end of the recording ({_number_text(frames / rate_hz)} s)"
            )
        self.result.annotations.append(
            Annotation(recording.absolute(), start_seconds, end_seconds, label, origin, kind)
        )


def _number_text(value: float) -> str:
    return str(round(value, 4))


def _number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise _RowError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowError(f"{column} {text!r} is not a finite number")
    return value


def _read_text(path: Path) -> str:
    """The whole file as text: UTF-8 (with or without BOM), else Latin-1 (old Raven tables)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) for every non-blank row; cells stripped of spaces."""
    # newline="" hands csv the raw line ends (\n, \r\n, \r), so line_num counts real lines.
    reader = csv.reader(
        io.StringIO(_read_text(path), newline=""),
        delimiter=delimiter,
        quoting=csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL,
    )
    try:
        return [
            (reader.line_num, [cell.strip() for cell in row])
            for row in reader
            if any(cell.strip() for cell in row)
        ]
    except csv.Error as error:
        raise AnnotationError(f"{path}:{reader.line_num}: cannot parse: {error}") from None


# --- SongExplorer -----------------------------------------------------------------------------

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
    collector = _Collector(labels)
    kinds = _as_set(kinds)
    for path in files:
        for line, row in _rows(path, ","):
            origin = f"{path}:{line}"
            with collector.row(origin):
                if len(row) != 5:
                    raise _RowError(
                        f"expected 5 columns ({_SONGEXPLORER_COLUMNS}), found {len(row)}"
                    )
                wav, start_text, stop_text, kind, label = row
                if kinds is not None and kind not in kinds:
                    continue
                start = _number(start_text, "start_tic")
                stop = _number(stop_text, "stop_tic")
                collector.add(origin, path.parent / wav, start, stop, label, kind, in_samples=True)
    return collector.result


# --- plain CSV --------------------------------------------------------------------------------

CSV_COLUMNS = ("file", "start_seconds", "end_seconds", "label")


def load_csv(table: Path, *, labels: Collection[str] | None = None) -> AnnotationSet:
    """Annotations from a CSV with header `file,start_seconds,end_seconds,label`.

    Columns may come in any order and extra columns are ignored; `file` is relative to the CSV's
    folder. Point events have start == end.
    """
    table = Path(table)
    rows = _rows(table, ",")
    header_line, header = rows[0] if rows else (1, [])
    if not set(CSV_COLUMNS) <= set(header):
        raise AnnotationError(
            f"{table}:{header_line}: header must name {','.join(CSV_COLUMNS)} "
            f"(found: {','.join(header) or 'nothing'})"
        )
    file_i, start_i, end_i, label_i = (header.index(name) for name in CSV_COLUMNS)
    collector = _Collector(labels)
    for line, row in rows[1:]:
        origin = f"{table}:{line}"
        with collector.row(origin):
            if len(row) != len(header):
                raise _RowError(f"expected {len(header)} columns, found {len(row)}")
            start = _number(row[start_i], "start_seconds")
            end = _number(row[end_i], "end_seconds")
            collector.add(origin, table.parent / row[file_i], start, end, row[label_i])
    return collector.result


# --- detection --------------------------------------------------------------------------------


def _audio_under(folder: Path) -> list[Path]:
    """Audio files below `folder`, sorted, hidden ones skipped (also trainer.folders' clips)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


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
        if any(p.is_dir() and _audio_under(p) for p in path.iterdir()):
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
    first_line = next(iter(_read_text(path).splitlines()), "")
    from trainer.raven import RAVEN_BEGIN  # raven builds on this module: imported when used

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
    # These loaders build on this module, so they are imported when used.
    from trainer.folders import load_folders
    from trainer.raven import load_raven

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
