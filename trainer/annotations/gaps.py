"""Background from the audio nobody annotated, for densely annotated recordings.

When a recording's annotations are dense (every sound of interest is marked), what lies between
them is "none of the labels". Without it an exclusive model has no way to say "nothing" and
labels silence as some class (on a bird-song set, 17% of the "song" seconds were silent). These
are the stretches between annotations, kept `margin_seconds` away from every annotation and at
least `min_seconds` long, as annotations of their own.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from pathlib import Path

from edge.audio.files import AudioFile
from trainer.annotations.rows import Annotation, AnnotationSet


def dense_matcher(patterns: Sequence[str]) -> Callable[[Path], bool]:
    """Whether a recording is densely annotated: its path or name matches a pattern ("*": all)."""
    return lambda path: any(
        fnmatch.fnmatch(str(path), p) or fnmatch.fnmatch(path.name, p) for p in patterns
    )


def gap_annotations(
    data: AnnotationSet,
    dense: Callable[[Path], bool],
    labels: Sequence[str],
    *,
    margin_seconds: float,
    min_seconds: float,
    negative_prefix: str = "",
) -> list[Annotation]:
    """One annotation per `labels` entry (`background`, or each `not_<label>` for a yes/no
    model) for every unannotated stretch of each dense recording. Negative annotations
    (`not_<label>`) mark no sound of interest, so they do not interrupt a stretch."""
    by_recording: dict[Path, list[Annotation]] = {}
    for a in data.annotations:
        by_recording.setdefault(a.recording, [])
        if not (negative_prefix and a.label.startswith(negative_prefix)):
            by_recording[a.recording].append(a)
    out = []
    for recording, marks in sorted(by_recording.items()):
        if not dense(recording):
            continue
        with AudioFile.open(recording) as audio:
            length = audio.duration_seconds
        cursor = 0.0
        spans = sorted((a.start_seconds, a.end_seconds) for a in marks)
        for start, end in [*spans, (length + margin_seconds, length + margin_seconds)]:
            first = cursor if cursor == 0.0 else cursor + margin_seconds
            last = min(start - margin_seconds, length)
            if last - first >= min_seconds:
                where = f"{recording}: unannotated {first:.3f}-{last:.3f} s"
                out += [Annotation(recording, first, last, label, where) for label in labels]
            cursor = max(cursor, end)
    return out
