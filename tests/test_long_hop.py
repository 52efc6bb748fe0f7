"""A model whose hop is longer than a second (BirdNET-like: 3 s windows every 3 s): every second
a window's audio covered is `analysed`, with the max of the windows covering it; only partial
first and last seconds (and a tail too short for a window) are `edge`.

The bundle is a real ONNX model, built here: the mean |x| of a 3 s window through a sigmoid,
so each window's score is known from the audio written into it."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
import yaml
from onnx import TensorProto, checker, helper, numpy_helper, save

from edge.builders import label_setups
from edge.config import load_config
from edge.detection.analysis import Analyzer
from edge.model.bundle import Bundle, load_bundle, sha256_of
from edge.records import SecondRow, Sink, StreamInfo

RATE_HZ = 8000
WINDOW = 3 * RATE_HZ
# Window scores: sigmoid(40 * level - 4) for the DC level written into each 3 s.
LEVELS = [0.0, 0.2, 0.1, 0.3]  # windows at 0, 3, 6 s; the last 1 s is too short for one
QUIET, LOUD, HALF = 1 / (1 + np.exp(4.0)), 1 / (1 + np.exp(-4.0)), 0.5


class Rows(Sink):
    def __init__(self) -> None:
        self.rows: list[SecondRow] = []

    def second(self, row: SecondRow) -> None:
        self.rows.append(row)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    folder = tmp_path_factory.mktemp("bundles") / "slow"
    folder.mkdir()
    graph = helper.make_graph(
        [
            helper.make_node("Abs", ["samples"], ["magnitude"]),
            helper.make_node("ReduceMean", ["magnitude"], ["level"], axes=[1], keepdims=1),
            helper.make_node("Mul", ["level", "gain"], ["scaled"]),
            helper.make_node("Add", ["scaled", "bias"], ["logits"]),
            helper.make_node("Sigmoid", ["logits"], ["scores"]),
        ],
        "level",
        [helper.make_tensor_value_info("samples", TensorProto.FLOAT, ["N", WINDOW])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", 1])],
        initializer=[
            numpy_helper.from_array(np.array([[40.0]], np.float32), "gain"),
            numpy_helper.from_array(np.array([-4.0], np.float32), "bias"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    checker.check_model(model, full_check=True)
    save(model, str(folder / "level.onnx"))
    manifest = {
        "format": "soundwatch-bundle/1",
        "name": "slow",
        "version": "1",
        "labels": ["loud"],
        "task": "multilabel",
        "sample_rate": RATE_HZ,
        "window_seconds": 3.0,
        "hop_seconds": 3.0,
        "frontend": {"kind": "waveform"},
        "output": {"activation": "none"},
        "thresholds": {"loud": 0.5},
        "files": {"onnx-fp32": {"path": "level.onnx", "sha256": sha256_of(folder / "level.onnx")}},
    }
    (folder / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return load_bundle(folder)


def _analyzer(bundle: Bundle, batch: int) -> tuple[Analyzer, Rows]:
    sink = Rows()
    labels = label_setups(load_config(None), bundle)
    backend = bundle.open("onnx-fp32")
    return Analyzer(
        bundle, backend, labels, sink, hop_samples=bundle.hop_samples, batch_windows=batch
    ), sink


def _audio() -> np.ndarray:
    return np.concatenate([np.full(WINDOW, level, np.float32) for level in LEVELS])[: 10 * RATE_HZ]


def _run(bundle: Bundle, anchor: datetime | None, blocks: int, batch: int) -> list[SecondRow]:
    analyzer, sink = _analyzer(bundle, batch)
    analyzer.begin(StreamInfo("test", ["loud"], anchor, RATE_HZ))
    for piece in np.array_split(_audio(), blocks):
        analyzer.push(piece)
    analyzer.end()
    return sink.rows


def _table(rows: list[SecondRow]) -> list[tuple[float, str, float | None]]:
    return [
        (
            r.offset_seconds,
            r.status,
            None if np.isnan(r.scores[0]) else round(float(r.scores[0]), 3),
        )
        for r in rows
    ]


@pytest.mark.parametrize(("blocks", "batch"), [(1, 16), (37, 1)])
def test_every_second_a_window_covered_is_analysed(bundle: Bundle, blocks: int, batch: int) -> None:
    q, loud, half = round(QUIET, 3), round(LOUD, 3), HALF
    assert _table(_run(bundle, None, blocks, batch)) == [
        (0.0, "analysed", q),
        (1.0, "analysed", q),
        (2.0, "analysed", q),
        (3.0, "analysed", loud),
        (4.0, "analysed", loud),
        (5.0, "analysed", loud),
        (6.0, "analysed", half),
        (7.0, "analysed", half),
        (8.0, "analysed", half),
        (9.0, "edge", None),  # no window reached it: the stream ended first
    ]


def test_a_second_across_two_windows_takes_their_max_and_partial_ones_are_edge(
    bundle: Bundle,
) -> None:
    anchor = datetime(2026, 11, 22, 10, 0, 0, 500000, tzinfo=timezone.utc)  # half a second in
    q, loud, half = round(QUIET, 3), round(LOUD, 3), HALF
    assert _table(_run(bundle, anchor, 7, 4)) == [
        (-0.5, "edge", None),  # the partial first second
        (0.5, "analysed", q),
        (1.5, "analysed", q),
        (2.5, "analysed", loud),  # 2.5-3: quiet window, 3-3.5: loud one
        (3.5, "analysed", loud),
        (4.5, "analysed", loud),
        (5.5, "analysed", loud),  # loud and half
        (6.5, "analysed", half),
        (7.5, "analysed", half),
        (8.5, "edge", None),  # 9-9.5 reached by no window
        (9.5, "edge", None),  # the partial last second
    ]


def test_seconds_of_a_gap_stay_gap_and_the_run_after_it_is_analysed(bundle: Bundle) -> None:
    analyzer, sink = _analyzer(bundle, 16)
    analyzer.begin(StreamInfo("test", ["loud"], None, RATE_HZ))
    audio = _audio()
    analyzer.push(audio[: 6 * RATE_HZ])
    analyzer.gap(2 * RATE_HZ, "overrun")
    analyzer.push(audio[: 6 * RATE_HZ])
    analyzer.end()
    statuses = [row.status for row in sink.rows]
    assert statuses == ["analysed"] * 6 + ["gap:overrun"] * 2 + ["analysed"] * 6
