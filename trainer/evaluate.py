"""Dense evaluation: score a bundle on fully annotated recordings with the edge's own `scan`.

`soundwatch-train evaluate --model <bundle> --data <annotations>` runs `edge.scan.scan` (the
same code as `soundwatch scan`: frontend, runtime, per-second maxima, event detector with the
bundle's thresholds and event defaults) over every annotated recording, reads back the
per-second CSV and the events JSONL it wrote, and counts, per label:

- segment-based, 1 s: a second is true when an annotation of the label overlaps it (a point
  annotation falls in it) and predicted when its per-second probability is at least the
  label's threshold. Seconds the edge could not analyse (stream edges, gaps) are left out and
  counted.
- event-based: a predicted event matches a true one of the same label when their onsets are
  within the tolerance; each true and each predicted event is matched at most once.

"Dense" means every occurrence of every scored label is annotated: whatever is not annotated
counts as absent. Annotation labels that are not the bundle's (e.g. `not_<label>`) are ignored.
No torch here: evaluating a bundle needs only the edge and the annotation loaders.
"""

from __future__ import annotations

import csv
import json
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from trainer.measures import (
    Counts,
    PointCounts,
    boundary_counts,
    event_counts,
    point_counts,
    segment_counts,
    true_seconds,
)
from trainer.scanner import EvaluateError, FileChoice, Scanner
from trainer.scoring import pr_curve

SEGMENT_SECONDS = 1.0  # the edge's per-second rows
DEFAULT_ONSET_TOLERANCE_SECONDS = 0.2


class Annotated(Protocol):
    """What evaluation needs of an annotation (`trainer.annotations.Annotation` has it)."""

    @property
    def recording(self) -> Path: ...
    @property
    def start_seconds(self) -> float: ...
    @property
    def end_seconds(self) -> float: ...
    @property
    def label(self) -> str: ...


@dataclass
class LabelScores:
    label: str
    threshold: float
    segment: Counts = field(default_factory=Counts)
    event: Counts = field(default_factory=Counts)  # onsets matched
    boundary: Counts = field(default_factory=Counts)  # interval annotations: onset and offset
    points: PointCounts = field(default_factory=PointCounts)  # point annotations in events
    events: bool = True  # False for the bundle's background labels: no events to count
    # Every analysed second: whether it is true, and its probability (the threshold curve).
    second_truth: list[bool] = field(default_factory=list, repr=False)
    second_scores: list[float] = field(default_factory=list, repr=False)

    def curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Segment (thresholds descending, precision, recall) at every threshold."""
        thresholds, precision, recall = pr_curve(
            np.array(self.second_truth), np.array(self.second_scores)
        )
        return thresholds, precision, recall

    def best_segment(self) -> dict[str, float] | None:
        """The threshold with the best segment F1 on these recordings, and its figures: what
        the bundle's threshold could reach here (None without true seconds)."""
        thresholds, precision, recall = self.curve()
        if not len(thresholds):
            return None
        with np.errstate(divide="ignore", invalid="ignore"):
            f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
        i = int(np.argmax(f1))
        return {
            "threshold": float(thresholds[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
        }


@dataclass
class EvaluationReport:
    """Per-label segment (1 s) and event figures over all recordings."""

    model: str
    labels: list[LabelScores]
    recordings: int
    onset_tolerance_seconds: float
    seconds_scored: int = 0
    seconds_excluded: int = 0  # not analysed by the edge (stream edges, gaps)
    seconds_annotated: int = 0  # scored seconds that hold an annotation of a model label
    ignored_labels: list[str] = field(default_factory=list)  # in the annotations, not the model

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.model,
            "recordings": self.recordings,
            "onset_tolerance_seconds": self.onset_tolerance_seconds,
            "segment_seconds": SEGMENT_SECONDS,
            "seconds_scored": self.seconds_scored,
            "seconds_excluded": self.seconds_excluded,
            "seconds_annotated": self.seconds_annotated,
            "annotated_fraction": self.annotated_fraction,
            "ignored_labels": self.ignored_labels,
            "labels": {
                s.label: {
                    "threshold": s.threshold,
                    "segment": s.segment.figures(),
                    "event": s.event.figures() if s.events else None,
                    "event_boundaries": s.boundary.figures() if s.events else None,
                    "points": s.points.figures() if s.events and s.points.points else None,
                    "best_segment": s.best_segment(),
                }
                for s in self.labels
            },
        }

    @property
    def annotated_fraction(self) -> float | None:
        """Share of the scored seconds that hold an annotation of a model label. For a model
        with a background label (e.g. ambient), dense annotations give about 1."""
        return self.seconds_annotated / self.seconds_scored if self.seconds_scored else None

    def table(self) -> str:
        """A fixed-width table for the terminal: one row per label."""
        head = (
            f"{'label':<16} {'thr':>5} | {'seg P':>6} {'seg R':>6} {'seg F1':>6} {'tp/fp/fn':>14}"
            f" | {'ev P':>6} {'ev R':>6} {'ev F1':>6} {'tp/fp/fn':>14}"
        )
        rows = [head, "-" * len(head)]
        for s in self.labels:
            seg, ev = s.segment, s.event
            rows.append(
                f"{s.label:<16} {s.threshold:>5.2f} | {_pct(seg.precision)} {_pct(seg.recall)}"
                f" {_pct(seg.f1)} {f'{seg.tp}/{seg.fp}/{seg.fn}':>14} | {_pct(ev.precision)}"
                f" {_pct(ev.recall)} {_pct(ev.f1)} {f'{ev.tp}/{ev.fp}/{ev.fn}':>14}"
            )
        rows.append(
            f"{self.recordings} recording(s), {self.seconds_scored} s scored"
            f" ({self.seconds_excluded} s not analysed, left out), onset tolerance"
            f" {self.onset_tolerance_seconds:g} s"
        )
        if self.ignored_labels:
            rows.append(
                f"annotation labels not in the model, ignored: {', '.join(self.ignored_labels)}"
            )
        if self.seconds_scored:
            # Sparse annotations (SongExplorer's often are) make false positives of every
            # unannotated occurrence: say what the figures assume, with the share to judge by.
            rows.append(
                f"dense annotations assumed: every unannotated second counts as none of the"
                f" labels; {self.seconds_annotated} of {self.seconds_scored} s"
                f" ({self.annotated_fraction:.0%}) hold an annotation"
            )
        rows += self._more_measures()
        return "\n".join(rows)

    def _more_measures(self) -> list[str]:
        """Lines for the measures that fit each kind of annotation, and the best threshold."""
        out = []
        for s in self.labels:
            if s.events and s.points.points:
                p = s.points
                out.append(
                    f"{s.label}: {p.points_found} of {p.points} annotated points fall in an event"
                    f" (recall {_pct(p.recall).strip()}); {p.events_right} of {p.events} events"
                    f" hold a point (precision {_pct(p.precision).strip()})"
                )
            if s.events and s.boundary.tp + s.boundary.fn:
                b = s.boundary
                out.append(
                    f"{s.label}: onset and offset matched (offset within 20% of the length):"
                    f" F1 {_pct(b.f1).strip()} ({b.tp}/{b.fp}/{b.fn})"
                )
            best = s.best_segment()
            if best is not None:
                out.append(
                    f"{s.label}: best segment F1 over thresholds {best['f1']:.3f} at"
                    f" {best['threshold']:.3g} (the bundle's {s.threshold:.3g}:"
                    f" {_pct(s.segment.f1).strip()})"
                )
        return out

    def write(self, out: Path) -> None:
        """`evaluation.json` (everything) and `evaluation.csv` (one row per label) in `out`."""
        out.mkdir(parents=True, exist_ok=True)
        (out / "evaluation.json").write_text(json.dumps(self.to_json(), indent=2) + "\n")
        with (out / "evaluation.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            kinds = ("segment", "event")
            stats = ("tp", "fp", "fn", "precision", "recall", "f1")
            writer.writerow(["label", "threshold", *(f"{k}_{s}" for k in kinds for s in stats)])
            for s in self.labels:
                figures = [s.segment.figures(), s.event.figures()]
                writer.writerow(
                    [s.label, s.threshold, *(_cell(f[x]) for f in figures for x in stats)]
                )
        write_curves(self.labels, out)


def write_curves(labels: Sequence[LabelScores], out: Path) -> None:
    """`segment-pr-<label>.csv` (threshold, precision, recall) for each label with true
    seconds, and `segment-pr.png` drawing them with each bundle threshold marked."""
    drawn = []
    for s in labels:
        thresholds, precision, recall = s.curve()
        if not len(thresholds):
            continue
        with (out / f"segment-pr-{s.label}.csv").open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["threshold", "precision", "recall"])
            rows = zip(thresholds.tolist(), precision.tolist(), recall.tolist(), strict=True)
            writer.writerows(rows)
        drawn.append((s, recall, precision))
    if not drawn:
        return
    from trainer.report import new_figure

    plot = new_figure()
    axes = plot.subplots()
    for s, recall, precision in drawn:
        (line,) = axes.plot(recall, precision, label=s.label)
        at = s.segment
        if at.precision is not None and at.recall is not None:
            axes.plot([at.recall], [at.precision], "o", color=line.get_color())
    axes.set(xlabel="recall (seconds)", ylabel="precision (seconds)", xlim=(0, 1.02))
    axes.set(ylim=(0, 1.02), title="segment precision-recall over thresholds (dot: the bundle's)")
    axes.legend(loc="lower left")
    plot.savefig(out / "segment-pr.png")


def _pct(value: float | None) -> str:
    return f"{'-':>6}" if value is None else f"{value:>6.3f}"


def _cell(value: float | int | None) -> str:
    return "" if value is None else f"{value:.6g}"


# ------------------------------------------------------------------------------- counting


def read_seconds(path: Path, labels: list[str]) -> tuple[dict[str, dict[int, float]], int]:
    """Per label, analysed second index -> probability, from a scan `.probabilities.csv`;
    and how many seconds were not analysed."""
    out: dict[str, dict[int, float]] = {label: {} for label in labels}
    excluded = 0
    with path.open(newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            if row["status"] != "analysed":
                excluded += 1
                continue
            i = round(float(row["offset_seconds"]) / SEGMENT_SECONDS)
            for label in labels:
                out[label][i] = float(row[label])
    return out, excluded


def read_events(path: Path, labels: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Per label, (start, end) in s from the recording's start of the events in a scan JSONL."""
    out: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for line in path.read_text(encoding="utf-8").splitlines():
        message = json.loads(line)
        if message["type"] == "end" and message["label"] in out:
            span = (float(message["start_offset"]), float(message["end_offset"]))
            out[message["label"]].append(span)
    return out


def score_recording(
    report: EvaluationReport,
    annotations: Sequence[Annotated],
    probabilities_csv: Path,
    events_jsonl: Path,
) -> None:
    """Add one scanned recording (its annotations and scan outputs) to `report`."""
    labels = [s.label for s in report.labels]
    seconds, excluded = read_seconds(probabilities_csv, labels)
    found = read_events(events_jsonl, labels)
    report.seconds_scored += len(seconds[labels[0]]) if labels else 0
    report.seconds_excluded += excluded
    kept = [(a.start_seconds, a.end_seconds) for a in annotations if a.label in labels]
    if labels:
        report.seconds_annotated += len(true_seconds(kept) & seconds[labels[0]].keys())
    tolerance = report.onset_tolerance_seconds
    for s in report.labels:
        mine = [(a.start_seconds, a.end_seconds) for a in annotations if a.label == s.label]
        s.segment.add(segment_counts(mine, seconds[s.label], s.threshold))
        true = true_seconds(mine)
        for i, p in seconds[s.label].items():
            s.second_truth.append(i in true)
            s.second_scores.append(p)
        if not s.events:
            continue
        events = found[s.label]
        s.event.add(event_counts([start for start, _ in mine], [a for a, _ in events], tolerance))
        intervals = [(a, b) for a, b in mine if b > a]
        s.boundary.add(boundary_counts(intervals, events, tolerance))
        points = [a for a, b in mine if b <= a]
        if points:
            s.points.add(point_counts(points, events, tolerance))


# ------------------------------------------------------------------------------- the scan


def evaluate(
    bundle: Path,
    annotations: Sequence[Annotated],
    *,
    onset_tolerance_seconds: float = DEFAULT_ONSET_TOLERANCE_SECONDS,
    model_file: FileChoice = "auto",
    scan_dir: Path | None = None,
) -> EvaluationReport:
    """Scan every annotated recording with `bundle` and count against `annotations`.

    model_file: which of the bundle's files to run (auto: as the edge picks). scan_dir: keep
    the scan's outputs there (one numbered folder per recording); a temporary folder otherwise.
    """
    if not onset_tolerance_seconds >= 0:
        raise EvaluateError(f"onset tolerance {onset_tolerance_seconds}: must be 0 s or more")
    by_recording: dict[Path, list[Annotated]] = {}
    for a in annotations:
        by_recording.setdefault(Path(a.recording), []).append(a)
    with Scanner(bundle, model_file) as scanner:
        m = scanner.bundle.manifest
        kept = set(m.labels)
        report = EvaluationReport(
            model=scanner.model,
            labels=[
                LabelScores(s.label, s.rules.threshold, events=s.events)
                for s in scanner.analyzer.labels
            ],
            recordings=0,
            onset_tolerance_seconds=onset_tolerance_seconds,
            ignored_labels=sorted({a.label for a in annotations} - kept),
        )
        if not any(a.label in kept for a in annotations):
            raise EvaluateError(
                f"no annotations of the model's labels ({', '.join(m.labels)}); "
                f"the annotations have: {', '.join(report.ignored_labels) or 'none'}"
            )
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(scan_dir) if scan_dir is not None else Path(tmp)
            for i, (recording, mine) in enumerate(sorted(by_recording.items())):
                # One folder per recording: two recordings may share a file name.
                probabilities_csv, events_jsonl = scanner.scan(recording, root / f"{i:04d}")
                score_recording(report, mine, probabilities_csv, events_jsonl)
                report.recordings += 1
    return report
