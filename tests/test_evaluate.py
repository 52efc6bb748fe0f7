"""Dense evaluation: the counting rules on hand-made cases with known answers, then the real
scan path with the hand-made tone bundle on the tone scene (no torch, CPU only)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.scenes import LABEL_OF, TRUTH, write_scene
from trainer.annotations import Annotation
from trainer.cli import main
from trainer.evaluate import (
    EvaluateError,
    EvaluationReport,
    LabelScores,
    evaluate,
    score_recording,
)
from trainer.measures import Counts, boundary_counts, event_counts, point_counts, segment_counts
from trainer.toybundle import make_tone_bundle

# --- events --------------------------------------------------------------------------------


def test_three_true_two_found_one_false() -> None:
    counts = event_counts([1.0, 5.0, 9.0], [1.1, 5.15, 12.0], tolerance_seconds=0.2)
    assert (counts.tp, counts.fp, counts.fn) == (2, 1, 1)
    assert counts.precision == pytest.approx(2 / 3)
    assert counts.recall == pytest.approx(2 / 3)
    assert counts.f1 == pytest.approx(2 / 3)


def test_an_onset_just_outside_the_tolerance_does_not_match() -> None:
    assert event_counts([1.0], [1.25], 0.2) == Counts(tp=0, fp=1, fn=1)
    assert event_counts([1.0], [1.2], 0.2) == Counts(tp=1, fp=0, fn=0)  # the edge is inside
    assert event_counts([1.0], [0.8], 0.2) == Counts(tp=1, fp=0, fn=0)


def test_each_true_event_is_matched_at_most_once() -> None:
    # Two detections of one event: one hit, one false alarm.
    assert event_counts([2.0], [1.95, 2.1], 0.2) == Counts(tp=1, fp=1, fn=0)
    # Two events close together, two detections: both matched (the greedy pairing is optimal:
    # pairing 1.15 with 1.3 would leave 1.45 nothing).
    assert event_counts([1.0, 1.3], [1.15, 1.45], 0.2) == Counts(tp=2, fp=0, fn=0)


def test_undefined_figures_are_none_not_zero() -> None:
    nothing = event_counts([], [], 0.2)
    assert (nothing.precision, nothing.recall, nothing.f1) == (None, None, None)
    missed = event_counts([3.0], [], 0.2)
    assert (missed.precision, missed.recall, missed.f1) == (None, 0.0, 0.0)


# --- segments ------------------------------------------------------------------------------


def test_segments_are_one_second_and_true_when_overlapped() -> None:
    # [0.5, 2.2) overlaps seconds 0, 1, 2; the point at 5.0 falls in second 5.
    truth = [(0.5, 2.2), (5.0, 5.0)]
    seconds = {0: 0.9, 1: 0.2, 2: 0.8, 3: 0.7, 4: 0.1, 5: 0.6}
    counts = segment_counts(truth, seconds, threshold=0.5)
    assert (counts.tp, counts.fp, counts.fn) == (3, 1, 1)  # tp 0, 2, 5; fp 3; fn 1
    assert counts.precision == pytest.approx(0.75) and counts.recall == pytest.approx(0.75)


def test_an_interval_ending_on_a_second_boundary_stops_there() -> None:
    seconds = {1: 0.0, 2: 0.0, 3: 0.0}
    assert segment_counts([(2.0, 3.0)], seconds, 0.5) == Counts(tp=0, fp=0, fn=1)
    assert segment_counts([(1.5, 3.01)], seconds, 0.5) == Counts(tp=0, fp=0, fn=3)


def test_a_scanned_recording_is_read_back_from_the_scan_files(tmp_path: Path) -> None:
    """The scan's CSV and JSONL written by hand: 3 true events, 2 found, 1 false alarm."""
    wav = tmp_path / "a.wav"
    probabilities = tmp_path / "a.wav.probabilities.csv"
    rows = [
        "time,offset_seconds,status,bird",
        ",0,analysed,0.9000",  # true (event at 0.2), found
        ",1,analysed,0.1000",
        ",2,analysed,0.8000",  # false alarm
        ",3,analysed,0.7000",  # true (event at 3.4), found
        ",4,gap:overrun,",  # not analysed: left out
        ",5,analysed,0.2000",  # true (event at 5.5), missed
    ]
    probabilities.write_text("\n".join(rows) + "\n")
    events = tmp_path / "a.wav.events.jsonl"
    messages = [
        {"type": "start", "label": "bird", "start_offset": 0.25, "end_offset": None},
        {"type": "end", "label": "bird", "start_offset": 0.25, "end_offset": 0.6},
        {"type": "end", "label": "bird", "start_offset": 2.1, "end_offset": 2.4},
        {"type": "end", "label": "bird", "start_offset": 3.5, "end_offset": 3.9},
    ]
    events.write_text("".join(json.dumps(m) + "\n" for m in messages))
    truth = [Annotation(wav, t, t + 0.3, "bird", "hand") for t in (0.2, 3.4, 5.5)]
    report = EvaluationReport("hand", [LabelScores("bird", 0.5)], 1, 0.2)

    score_recording(report, truth, probabilities, events)

    scores = report.labels[0]
    assert scores.event == Counts(tp=2, fp=1, fn=1)
    assert scores.event.precision == pytest.approx(2 / 3)
    assert scores.event.recall == pytest.approx(2 / 3)
    assert scores.segment == Counts(tp=2, fp=1, fn=1)
    assert (report.seconds_scored, report.seconds_excluded) == (5, 1)


# --- points and boundaries --------------------------------------------------------------------


def test_point_annotations_are_counted_in_the_events_that_hold_them() -> None:
    """Dense pulse annotations are points; the edge finds one event per train of pulses.
    Two trains of 10 pulses, found as two events, plus a false alarm: onsets match 2 of 20
    (event F1 0.17), while 19 of 20 pulses fall in an event and 2 of 3 events hold a pulse."""
    pulses = [1.0 + 0.04 * k for k in range(10)] + [5.0 + 0.04 * k for k in range(10)]
    events = [(0.98, 1.40), (5.01, 5.33), (8.0, 8.5)]  # the second misses the last pulse
    assert event_counts(pulses, [a for a, _ in events], 0.05) == Counts(tp=2, fp=1, fn=18)
    found = point_counts(pulses, events, 0.02)
    assert (found.points_found, found.points, found.events_right, found.events) == (19, 20, 2, 3)
    assert found.recall == pytest.approx(0.95) and found.precision == pytest.approx(2 / 3)
    assert found.f1 == pytest.approx(2 * 0.95 * (2 / 3) / (0.95 + 2 / 3))


def test_boundaries_match_on_onset_and_offset() -> None:
    truth = [(1.0, 2.0), (4.0, 4.5), (7.0, 10.0)]
    predicted = [
        (1.1, 2.15),  # onset 0.1 off, offset 0.15 off: within max(0.2, 0.2 s)
        (4.05, 5.5),  # offset 1 s late: onset alone would match, not both
        (7.0, 9.5),  # offset 0.5 s early, 20% of 3 s is 0.6: a match
    ]
    assert boundary_counts(truth, predicted, 0.2) == Counts(tp=2, fp=1, fn=1)
    assert event_counts([a for a, _ in truth], [a for a, _ in predicted], 0.2).tp == 3


# --- the real scan path ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def tone_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tone_bundle(tmp_path_factory.mktemp("models") / "tone", formats=("onnx-int8",))


def tone_truth(wav: Path) -> list[Annotation]:
    return [Annotation(wav, s, e, LABEL_OF[hz], f"truth:{i}") for i, (s, e, hz) in enumerate(TRUTH)]


def test_the_tone_bundle_scores_perfectly_on_the_tone_scene(
    tone_bundle: Path, tmp_path: Path
) -> None:
    wav = write_scene(tmp_path / "scene.wav")
    negative = Annotation(wav, 0.5, 1.5, "not_tone-1k", "extra")
    report = evaluate(tone_bundle, [*tone_truth(wav), negative], scan_dir=tmp_path / "scan")
    by_label = {s.label: s for s in report.labels}
    # Seconds overlapped: tone-1k {2, 10, 11, 12, 17}, tone-3k {5, 6, 15, 17, 18}.
    for label in ("tone-1k", "tone-3k"):
        assert by_label[label].segment == Counts(tp=5, fp=0, fn=0)
        assert by_label[label].event == Counts(tp=3, fp=0, fn=0)
    assert (report.recordings, report.seconds_scored, report.seconds_excluded) == (1, 20, 0)
    # The tone model has no background label: 9 distinct seconds of the 20 hold a tone.
    assert (report.seconds_annotated, report.annotated_fraction) == (9, 0.45)
    assert "dense annotations assumed" in report.table() and "9 of 20 s (45%)" in report.table()
    assert report.to_json()["annotated_fraction"] == 0.45
    assert report.ignored_labels == ["not_tone-1k"]
    assert (tmp_path / "scan" / "0000" / "scene.wav.events.jsonl").is_file()


def test_a_missed_label_shows_as_recall_zero(tone_bundle: Path, tmp_path: Path) -> None:
    """Annotations the model cannot hear (a 1 kHz label on silence) are counted as misses."""
    wav = write_scene(tmp_path / "scene.wav")
    invented = [Annotation(wav, t, t + 0.5, "tone-1k", "invented") for t in (7.0, 14.0)]
    report = evaluate(tone_bundle, [*tone_truth(wav), *invented], onset_tolerance_seconds=0.1)
    one_k = next(s for s in report.labels if s.label == "tone-1k")
    assert one_k.event == Counts(tp=3, fp=0, fn=2)
    assert one_k.segment == Counts(tp=5, fp=0, fn=2)
    assert one_k.event.recall == pytest.approx(0.6)


def test_annotations_without_the_models_labels_are_refused(
    tone_bundle: Path, tmp_path: Path
) -> None:
    wav = write_scene(tmp_path / "scene.wav")
    with pytest.raises(EvaluateError, match="no annotations of the model's labels"):
        evaluate(tone_bundle, [Annotation(wav, 1.0, 2.0, "bird", "x")])


def test_the_evaluate_command_prints_a_table_and_writes_json_and_csv(
    tone_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = write_scene(tmp_path / "audio" / "scene.wav")
    table = tmp_path / "audio" / "truth.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "start_seconds", "end_seconds", "label"])
        for s, e, hz in TRUTH:
            writer.writerow([wav.name, s, e, LABEL_OF[hz]])
            writer.writerow([wav.name, s, e, LABEL_OF[hz]])  # a second annotator, the same
    out = tmp_path / "eval"

    code = main(["evaluate", "--model", str(tone_bundle), "--data", str(table), "--out", str(out)])

    assert code == 0
    printed = capsys.readouterr().out
    assert "tone-1k" in printed and "20 s scored" in printed
    result = json.loads((out / "evaluation.json").read_text())
    assert result["labels"]["tone-3k"]["event"]["f1"] == 1.0
    assert result["labels"]["tone-3k"]["segment"]["tp"] == 5
    with (out / "evaluation.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["tone-1k", "tone-3k"]
    assert rows[0]["event_recall"] == "1" and rows[0]["segment_fp"] == "0"
    # Identical rows from two annotators count once (issue 12, item 3): 3 tone-1k events.
    assert result["labels"]["tone-1k"]["event"]["tp"] == 3 and "duplicate" in printed
    # Intervals are matched on onset and offset too, and the threshold curve is kept.
    assert result["labels"]["tone-3k"]["event_boundaries"]["f1"] == 1.0
    best = result["labels"]["tone-3k"]["best_segment"]
    assert best["f1"] == 1.0 and 0 < best["threshold"] <= 1
    with (out / "segment-pr-tone-3k.csv").open() as f:
        curve = list(csv.DictReader(f))
    assert len(curve) >= 2 and float(curve[-1]["recall"]) == 1.0
    png = (out / "segment-pr.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 5000


def test_the_evaluate_command_reports_a_bad_tolerance_in_one_line(
    tone_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = write_scene(tmp_path / "scene.wav")
    table = tmp_path / "truth.csv"
    table.write_text(f"file,start_seconds,end_seconds,label\n{wav.name},2.0,3.0,tone-1k\n")
    code = main(
        ["evaluate", "--model", str(tone_bundle), "--data", str(table), "--onset-tolerance", "-1"]
    )
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "soundwatch-train: onset tolerance -1.0: must be 0 s or more"
    )


# --- thresholds chosen on the stream ---------------------------------------------------------


def test_calibrate_chooses_thresholds_on_whole_recordings_and_says_what_they_rest_on(
    tone_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Five tone scenes, densely annotated, never trained on: every second counts, the
    unannotated ones as negatives. Each label gets the threshold where per-second precision
    meets recall, written into the manifest with the seconds it rests on (issue 12, item 1);
    with one scene only (5 true seconds a label) the thresholds are kept, loudly."""
    import shutil

    import yaml

    from edge.model.bundle import load_bundle

    bundle = Path(shutil.copytree(tone_bundle, tmp_path / "tone"))
    table = tmp_path / "audio" / "truth.csv"
    rows = ["file,start_seconds,end_seconds,label"]
    for k in range(5):
        wav = write_scene(tmp_path / "audio" / f"scene{k}.wav", seed=k)
        rows += [f"{wav.name},{s},{e},{LABEL_OF[hz]}" for s, e, hz in TRUTH]
    table.write_text("\n".join(rows) + "\n")
    one = tmp_path / "audio" / "one.csv"
    one.write_text("\n".join(rows[:7]) + "\n")  # scene0's six events

    assert main(["calibrate", "--model", str(bundle), "--data", str(one)]) == 0
    kept = capsys.readouterr()
    assert "tone-1k: kept 0.5: only 5 true of 20 s, 3 annotated events" in kept.out
    assert "warning: some thresholds were kept" in kept.err
    assert load_bundle(bundle).manifest.thresholds == {"tone-1k": 0.5, "tone-3k": 0.5}

    assert main(["calibrate", "--model", str(bundle), "--data", str(table)]) == 0
    printed = capsys.readouterr().out
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    rule = manifest["threshold_rule"]
    assert rule["precision_recall_ratio"] == 1.0
    assert rule["rests_on"]["tone-3k"] == {"true_seconds": 25, "seconds": 100, "kept": False}
    thresholds = load_bundle(bundle).manifest.thresholds
    assert all(0 < t < 1 for t in thresholds.values())
    assert thresholds != {"tone-1k": 0.5, "tone-3k": 0.5}
    assert "tone-3k: 0.5 -> " in printed and "(rests on 25 true of 100 s, 15 annotated" in printed
    # The table after is the new thresholds' own: every true second found, none false.
    report = json.loads(json.dumps(evaluate(bundle, load_annotations(table)).to_json()))
    for label in ("tone-1k", "tone-3k"):
        assert report["labels"][label]["threshold"] == thresholds[label]
        assert report["labels"][label]["segment"]["f1"] >= 0.9


def load_annotations(table: Path) -> list[Annotation]:
    from trainer.annotations import load_any

    return load_any(table).annotations
