"""Reviewed detections as a test set: compare two bundles on them, recalibrate thresholds.

Verdicts come back as annotations (`soundwatch review --export`, edge/review/export.py): a
detection judged right keeps its label, a relabelled one carries its new label, and a wrong
one is `not_<label>`. Each is one reviewed event: a true sound of its label, or not.

- `compare`: each bundle scans the reviewed recordings as the edge would (trainer.scanner's
  Scanner); a reviewed event is detected when an event of its label overlaps it. Right events
  detected are true positives, right events missed false negatives, wrong events detected false
  positives. Sounds nobody reviewed do not count: these figures rest on the reviewed events
  only, and the counts say how many.
- `recalibrate`: each reviewed event's score is the highest per-second probability of its
  label over the seconds it touches; the threshold is the lowest that reaches the precision
  asked for on them (`trainer.scoring.threshold_for_precision`). Verdicts only judge what was
  detected, so they can raise a threshold, never lower it. A label with fewer than
  MIN_VERDICTS verdicts, or without a wrong one, keeps its threshold, and says so.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer.calibrate import write_thresholds
from trainer.evaluate import Annotated, read_events, read_seconds
from trainer.measures import Counts
from trainer.scanner import EvaluateError, Scanner
from trainer.scoring import threshold_for_precision

MIN_VERDICTS = 20
"""Fewer verdicts on a label than this and its threshold is kept: at 20, one verdict moves
the precision by 5 points."""


@dataclass(frozen=True)
class Reviewed:
    """One reviewed event: `right` when the sound is of `label`."""

    recording: Path
    start_seconds: float
    end_seconds: float
    label: str
    right: bool


def reviewed(annotations: Sequence[Annotated], negative_prefix: str = "not_") -> list[Reviewed]:
    """The exported verdicts as reviewed events (`not_<label>`: a wrong `label` detection)."""
    out = []
    for a in annotations:
        wrong = a.label.startswith(negative_prefix)
        label = a.label[len(negative_prefix) :] if wrong else a.label
        out.append(Reviewed(Path(a.recording), a.start_seconds, a.end_seconds, label, not wrong))
    return out


@dataclass
class Scored:
    """Per reviewed event of one bundle: its score, and whether the bundle detected it."""

    model: str
    labels: list[str]
    thresholds: dict[str, float]
    scores: list[float]  # in the order of the reviewed events; NaN for labels not in the bundle
    detected: list[bool]


def score(bundle: Path, events: Sequence[Reviewed]) -> Scored:
    """Scan the reviewed recordings with `bundle`; score and match every reviewed event."""
    scores = [math.nan] * len(events)
    detected = [False] * len(events)
    with Scanner(bundle) as scanner, tempfile.TemporaryDirectory() as tmp:
        labels = [s.label for s in scanner.analyzer.labels]
        thresholds = {s.label: s.rules.threshold for s in scanner.analyzer.labels}
        recordings = sorted({e.recording for e in events})
        for i, recording in enumerate(recordings):
            probabilities_csv, events_jsonl = scanner.scan(recording, Path(tmp) / f"{i:04d}")
            seconds, _ = read_seconds(probabilities_csv, labels)
            found = read_events(events_jsonl, labels)
            for k, e in enumerate(events):
                if e.recording != recording or e.label not in seconds:
                    continue
                mine = seconds[e.label]
                first = math.floor(e.start_seconds)
                last = max(first, math.ceil(e.end_seconds) - 1)
                touched = [mine[j] for j in range(first, last + 1) if j in mine]
                scores[k] = max(touched, default=math.nan)
                detected[k] = any(
                    a < e.end_seconds and b > e.start_seconds for a, b in found[e.label]
                )
        return Scored(scanner.model, labels, thresholds, scores, detected)


def counts(events: Sequence[Reviewed], scored: Scored, label: str) -> Counts:
    """Right events detected (tp), wrong events detected (fp), right events missed (fn)."""
    c = Counts()
    for e, hit in zip(events, scored.detected, strict=True):
        if e.label == label:
            c.tp += e.right and hit
            c.fp += hit and not e.right
            c.fn += e.right and not hit
    return c


def comparison_table(events: Sequence[Reviewed], deployed: Scored, candidate: Scored) -> str:
    """Both bundles' precision and recall on the same reviewed events, per label."""
    labels = [x for x in deployed.labels if any(e.label == x for e in events)]
    labels += [x for x in candidate.labels if x not in labels and any(e.label == x for e in events)]
    lines = [
        f"deployed:  {deployed.model}",
        f"candidate: {candidate.model}",
        "label         right  wrong  | deployed: precision recall (tp fp fn)"
        " | candidate: precision recall (tp fp fn)",
    ]
    for label in labels:
        right = sum(e.right for e in events if e.label == label)
        wrong = sum(not e.right for e in events if e.label == label)
        row = f"{label:<12}  {right:5d}  {wrong:5d}  |"
        for s in (deployed, candidate):
            c = counts(events, s, label)
            row += f" {_pct(c.precision):>19} {_pct(c.recall):>6} ({c.tp} {c.fp} {c.fn}) |"
        lines.append(row.rstrip(" |"))
    lines.append(f"({len(events)} reviewed events; sounds nobody reviewed are not counted)")
    return "\n".join(lines)


@dataclass(frozen=True)
class Recalibrated:
    label: str
    before: float
    after: float
    right: int
    wrong: int
    precision: float | None  # reached on the verdicts at `after`
    kept: str  # why the threshold stayed ("" when chosen)

    def line(self) -> str:
        rests = f"{self.right} right and {self.wrong} wrong verdicts"
        if self.kept:
            return f"{self.label}: KEPT {self.before:.3g}: {self.kept} ({rests})"
        reached = "n/a" if self.precision is None else f"{self.precision:.2f}"
        change = f"{self.before:.3g} -> {self.after:.3g}"
        return f"{self.label}: {change}, precision {reached} on {rests}"


def recalibrate(
    bundle: Path,
    events: Sequence[Reviewed],
    precision: float,
    *,
    write: bool = True,
) -> list[Recalibrated]:
    """A threshold per label of `bundle` reaching `precision` on the reviewed events; with
    `write`, the changed ones go into its manifest with what they rest on."""
    if not 0 < precision <= 1:
        raise EvaluateError(f"precision {precision}: must be within (0, 1]")
    scored = score(bundle, events)
    out = []
    for label in scored.labels:
        mine = [
            (e.right, s)
            for e, s in zip(events, scored.scores, strict=True)
            if e.label == label and not math.isnan(s)
        ]
        right = sum(r for r, _ in mine)
        wrong = len(mine) - right
        before = scored.thresholds[label]
        if not mine:
            continue
        if len(mine) < MIN_VERDICTS:
            out.append(Recalibrated(label, before, before, right, wrong, None,
                                    f"fewer than {MIN_VERDICTS} verdicts"))  # fmt: skip
            continue
        truth = np.array([r for r, _ in mine], dtype=bool)
        scores = np.array([s for _, s in mine], dtype=np.float32)
        chosen = threshold_for_precision(truth, scores, precision)
        if chosen is None:
            out.append(Recalibrated(label, before, before, right, wrong, None,
                                    f"no threshold reaches precision {precision:g}"))  # fmt: skip
            continue
        after = max(before, chosen)
        said = scores >= after
        reached = float(truth[said].mean()) if said.any() else None
        out.append(Recalibrated(label, before, after, right, wrong, reached, ""))
    changed = {r.label: r.after for r in out if not r.kept and r.after != r.before}
    if write and changed:
        write_thresholds(
            bundle,
            changed,
            {
                "precision": precision,
                "chosen_on": "reviewed detections (verdicts), per-second maxima over each event",
                "rests_on": {
                    r.label: {"right": r.right, "wrong": r.wrong, "kept": bool(r.kept)} for r in out
                },
            },
        )
    return out


def _pct(value: float | None) -> str:
    return "  n/a" if value is None else f"{value:5.3f}"
