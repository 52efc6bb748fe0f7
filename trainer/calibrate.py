"""Thresholds chosen on the stream: the edge's own scoring of whole held-out recordings.

A threshold chosen on validation windows alone (annotated windows, separable) lands near 0 for
a softmax model, where the best on new recordings lay between 0.05 and 0.5. `calibrate` scans
densely annotated recordings the model never trained on with the bundle itself (the edge's
`scan`: frontend, runtime, per-second maxima), including every unannotated second, and sets
each label's threshold where segment precision / recall is closest to the ratio asked for
(`trainer.scoring.choose_threshold`, over the per-second rows). A label with too few true
seconds keeps its threshold, and says so. The manifest records what each choice rests on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.model.bundle import load_bundle
from trainer.evaluate import Annotated, EvaluationReport, evaluate
from trainer.scoring import choose_threshold

MIN_TRUE_SECONDS = 20
"""Fewer true seconds of a label than this, and its threshold is kept: one second more or
less would move the choice (the stream's figures, like validation's, need a count)."""


@dataclass(frozen=True)
class Choice:
    label: str
    before: float
    after: float
    true_seconds: int
    seconds: int
    true_events: int
    kept: bool  # too few true seconds: the bundle's threshold stays

    def line(self) -> str:
        rests = f"{self.true_seconds} true of {self.seconds} s, {self.true_events} annotated events"
        if self.kept:
            return (
                f"{self.label}: kept {self.before:.3g}: only {rests}; at least"
                f" {MIN_TRUE_SECONDS} true seconds are needed to choose"
            )
        return f"{self.label}: {self.before:.3g} -> {self.after:.3g} (rests on {rests})"


def choose(
    report: EvaluationReport, ratio: float, annotations: Sequence[Annotated]
) -> list[Choice]:
    """A threshold per label that makes events, from the evaluation's per-second rows."""
    out = []
    for s in report.labels:
        if not s.events:
            continue
        truth = np.array(s.second_truth, dtype=bool)
        scores = np.array(s.second_scores, dtype=np.float32)
        true_seconds = int(truth.sum())
        events = sum(1 for a in annotations if a.label == s.label)
        kept = true_seconds < MIN_TRUE_SECONDS
        after = s.threshold if kept else choose_threshold(truth, scores, ratio)
        out.append(Choice(s.label, s.threshold, after, true_seconds, len(truth), events, kept))
    return out


def calibrate(
    bundle: Path, annotations: Sequence[Annotated], ratio: float = 1.0, *, write: bool = True
) -> tuple[list[Choice], EvaluationReport]:
    """Choose the thresholds on `annotations` (dense, held out) and, with `write`, put them in
    the bundle's manifest with the rule and its counts; returns the choices and the
    evaluation with the new thresholds (the old ones when nothing changed or not written)."""
    if not (ratio > 0 and math.isfinite(ratio)):
        raise ValueError(f"precision/recall ratio {ratio}: must be positive")
    first = evaluate(bundle, annotations)
    choices = choose(first, ratio, annotations)
    changed = [c for c in choices if not c.kept and c.after != c.before]
    if not write or not changed:
        return choices, first
    rule = {
        "precision_recall_ratio": ratio,
        "chosen_on": "per-second rows of the edge's scan over held-out, densely annotated"
        " recordings",
        "rests_on": {
            c.label: {"true_seconds": c.true_seconds, "seconds": c.seconds, "kept": c.kept}
            for c in choices
        },
    }
    write_thresholds(bundle, {c.label: c.after for c in changed}, rule)
    return choices, evaluate(bundle, annotations)


def write_thresholds(bundle: Path, thresholds: dict[str, float], rule: dict[str, Any]) -> None:
    """Put `thresholds` and the rule that chose them into the bundle's manifest, and check that
    the edge loads it (raises otherwise)."""
    manifest_path = Path(bundle) / "manifest.yaml"
    manifest: dict[str, Any] = yaml.safe_load(manifest_path.read_text(encoding="utf-8"))
    for label, value in thresholds.items():
        manifest["thresholds"][label] = round(float(value), 6)
    manifest["threshold_rule"] = rule
    manifest_path.write_text(yaml.safe_dump(manifest, sort_keys=False), encoding="utf-8")
    load_bundle(bundle)  # the edge reads it back, or this raises
