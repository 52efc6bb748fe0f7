"""A bundle opened as `soundwatch scan` opens it, to scan recordings one at a time
(`trainer.evaluate` and `trainer.verdicts` read what it writes)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Literal

from edge.errors import SoundwatchError

FileChoice = Literal["auto", "onnx-int8", "onnx-fp32", "tflite-int8", "tflite-fp32"]


class EvaluateError(SoundwatchError):
    """Evaluation cannot run (no annotations for the bundle's labels, unreadable recording)."""


class Scanner:
    """A bundle opened as `soundwatch scan` opens it (default config, scan batches), to scan
    recordings one at a time into folders; a context manager that closes the model."""

    def __init__(self, bundle: Path, model_file: FileChoice = "auto") -> None:
        from edge.builders import build_analyzer
        from edge.config import load_config
        from edge.scan import SCAN_BATCH_WINDOWS

        loaded = load_config(None)
        c = loaded.config
        model = replace(c.model, path=str(Path(bundle).resolve()), file=model_file)
        loaded = replace(loaded, config=replace(c, model=model))
        self.bundle, self.analyzer = build_analyzer(loaded, batch_windows=SCAN_BATCH_WINDOWS)
        m = self.bundle.manifest
        self.model = f"{m.name} {m.version} ({self.analyzer.backend.path.name})"

    def scan(self, recording: Path, out: Path) -> tuple[Path, Path]:
        """Scan `recording` into `out`: its `.probabilities.csv` and `.events.jsonl`."""
        from edge.scan import output_bases, scan

        result = scan(self.analyzer, [recording], out, device="evaluate", progress=False)
        if result.files_skipped or result.files_scored != 1:
            raise EvaluateError(f"{recording}: could not be scanned (see the log above)")
        base = output_bases([recording], out)[recording]
        return (
            base.with_name(base.name + ".probabilities.csv"),
            base.with_name(base.name + ".events.jsonl"),
        )

    def __enter__(self) -> Scanner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.analyzer.backend.close()
