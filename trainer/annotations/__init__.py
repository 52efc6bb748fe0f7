"""Annotation importers: SongExplorer CSV, Raven selection tables, plain CSV, folders per class.

One module per format, each built on the shared row reader in `rows` (types, checks, `Problem`s
naming file and line); `detect` tells a path's format and `load_any` loads it. Labels are kept
as written: negative-example labels such as `not_mel-pulse` are ordinary labels here; the
dataset code gives the `not_` prefix its meaning.

No torch here (the trainer's other modules use it): importers stay fast to import and test.
"""

from trainer.annotations.csvtable import CSV_COLUMNS, load_csv
from trainer.annotations.detect import detect_format, load_any
from trainer.annotations.folders import load_folders
from trainer.annotations.raven import RAVEN_BEGIN, RAVEN_END, load_raven
from trainer.annotations.rows import Annotation, AnnotationError, AnnotationSet, Problem
from trainer.annotations.songexplorer import SONGEXPLORER_PATTERN, load_songexplorer

__all__ = [
    "CSV_COLUMNS",
    "RAVEN_BEGIN",
    "RAVEN_END",
    "SONGEXPLORER_PATTERN",
    "Annotation",
    "AnnotationError",
    "AnnotationSet",
    "Problem",
    "detect_format",
    "load_any",
    "load_csv",
    "load_folders",
    "load_raven",
    "load_songexplorer",
]
