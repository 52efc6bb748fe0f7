"""The shared row reader: the annotation types and the checks every format's loader uses.

Every loader returns an `AnnotationSet`: the annotations that are usable plus one `Problem` per
row that is not (missing recording, interval past the end, start after end, unknown label, bad
number, wrong column count), each naming its file and line, so one bad row never stops a data
set from loading. Only a file that cannot be read at all raises `AnnotationError`.

Times are seconds from the start of the recording. Recording lengths and rates come from the
audio header (`soundfile.info`, read once per file per load), never from decoding the audio.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Collection, Iterator
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
        kinds, labels = as_set(kinds), as_set(labels)
        kept = [
            a
            for a in self.annotations
            if (kinds is None or a.kind in kinds) and (labels is None or a.label in labels)
        ]
        return AnnotationSet(kept, list(self.problems))

    def without_duplicates(self) -> tuple[AnnotationSet, int]:
        """The set with identical rows (recording, label, start, end) kept once, and how many
        went. Two annotators marking the same pulse give two identical rows; counted twice they
        weigh that pulse double and can put one copy in training and one in validation."""
        seen: set[tuple[Path, str, float, float]] = set()
        kept = []
        for a in self.annotations:
            key = (a.recording, a.label, a.start_seconds, a.end_seconds)
            if key not in seen:
                seen.add(key)
                kept.append(a)
        return AnnotationSet(kept, list(self.problems)), len(self.annotations) - len(kept)


def as_set(names: Collection[str] | None) -> frozenset[str] | None:
    # A lone string is one name, not a collection of characters ("pulse" in "pulses" is True).
    return None if names is None else frozenset([names] if isinstance(names, str) else names)


class RowError(Exception):
    """One row cannot be used; the message becomes a Problem at that row."""


class Collector:
    """Checks rows, turns them into annotations or problems, and caches recording headers."""

    def __init__(self, labels: Collection[str] | None) -> None:
        self.labels = as_set(labels)
        self.result = AnnotationSet()
        # path -> (frames, sample rate in Hz), or the reason it cannot be read.
        self._info: dict[Path, tuple[int, int] | str] = {}

    def problem(self, origin: str, message: str) -> None:
        self.result.problems.append(Problem(origin, message))

    @contextmanager
    def row(self, origin: str) -> Iterator[None]:
        """Turns a RowError raised inside into a Problem at `origin`; the load goes on."""
        try:
            yield
        except RowError as error:
            self.problem(origin, str(error))

    def recording_info(self, path: Path) -> tuple[int, int]:
        """(frames, sample rate in Hz) from the header, or RowError naming the file."""
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
            raise RowError(found)
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

        Raises RowError for the caller to turn into a Problem at `origin`.
        """
        unit = "samples" if in_samples else "s"
        if not label:
            raise RowError("empty label")
        if self.labels is not None and label not in self.labels:
            known = ", ".join(sorted(self.labels))
            raise RowError(f"unknown label {label!r} (expected one of: {known})")
        if start > end:
            raise RowError(
                f"start {number_text(start)} {unit} is after end {number_text(end)} {unit}"
            )
        if start < 0:
            raise RowError(f"start {number_text(start)} {unit} is before the recording")
        frames, rate_hz = self.recording_info(recording)
        start_seconds, end_seconds = (
            (start / rate_hz, end / rate_hz) if in_samples else (start, end)
        )
        # Half a sample of slack: seconds written with a few decimals may round just past the end.
        if end_seconds > (frames + 0.5) / rate_hz:
            raise RowError(
                f"interval {number_text(start_seconds)}-{number_text(end_seconds)} s ends past "
                f"the end of the recording ({number_text(frames / rate_hz)} s)"
            )
        self.result.annotations.append(
            Annotation(recording.absolute(), start_seconds, end_seconds, label, origin, kind)
        )


def number_text(value: float) -> str:
    return str(round(value, 4))


def parse_number(text: str, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise RowError(f"{column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise RowError(f"{column} {text!r} is not a finite number")
    return value


def read_text(path: Path) -> str:
    """The whole file as text: UTF-8 (with or without BOM), else Latin-1 (old Raven tables)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise AnnotationError(f"{path}: cannot read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def read_rows(path: Path, delimiter: str) -> list[tuple[int, list[str]]]:
    """(line number, cells) for every non-blank row; cells stripped of spaces."""
    # newline="" hands csv the raw line ends (\n, \r\n, \r), so line_num counts real lines.
    reader = csv.reader(
        io.StringIO(read_text(path), newline=""),
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


def audio_under(folder: Path) -> list[Path]:
    """Audio files below `folder`, sorted, hidden ones skipped (format detection, class folders)."""
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and path.suffix.lower() in AUDIO_EXTENSIONS
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
