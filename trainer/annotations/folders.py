"""Folder-per-class recordings: weak labels, one annotation per clip spanning the whole clip.

Built on the shared row reader of `trainer.annotations.rows`; `trainer.annotations.load_any` picks
this loader for a folder whose sub-folders hold audio.
"""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from edge.audio.files import AUDIO_EXTENSIONS
from trainer.annotations.rows import (
    AnnotationError,
    AnnotationSet,
    Collector,
    RowError,
    audio_under,
)


def load_folders(root: Path, *, labels: Collection[str] | None = None) -> AnnotationSet:
    """Weak labels: every audio file under `root/<label>/` (recursive) spans its whole clip.

    Audio directly in `root` (no class folder) and class folders without audio are reported as
    problems. Hidden files and folders (name starting with ".") are skipped.
    """
    root = Path(root)
    if not root.is_dir():
        raise AnnotationError(f"{root}: no such folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise AnnotationError(f"{root}: no class folders (expected {root}/<label>/<clip>.wav)")
    collector = Collector(labels)
    for path in sorted(root.iterdir()):
        if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
            collector.problem(str(path), "audio file outside a class folder, ignored")
    for folder in classes:
        clips = audio_under(folder)
        if not clips:
            collector.problem(str(folder), "class folder has no audio files")
        for clip in clips:
            with collector.row(str(clip)):
                frames, rate_hz = collector.recording_info(clip)
                if frames == 0:
                    raise RowError("recording is empty")
                collector.add(str(clip), clip, 0.0, frames / rate_hz, folder.name)
    return collector.result
