"""The reload part alone (edge/reload.py): a re-read config built into analyzers, without a daemon.

Real configs on disk and the real tone bundle (models/tone); the sinks are plain recorders, as
the analyzers only need somewhere to send their rows.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge.builders import build_analyzer
from edge.config import Loaded, load_config
from edge.records import Sink
from edge.reload import Pending, Reload, Reloader

TONE = Path(__file__).resolve().parent.parent / "models" / "tone"


def write(path: Path, **sections: Any) -> Path:
    config = {"model": {"path": str(TONE)}, "metrics": {"enabled": False}, **sections}
    path.write_text(yaml.safe_dump(config))
    return path


def running(tmp_path: Path) -> Loaded:
    return load_config(write(tmp_path / "running.yaml"))


def test_a_reload_builds_one_analyzer_per_lane_with_the_new_label_setups(tmp_path: Path) -> None:
    """Threshold 0.7 for tone-1k only, the other label dropped: each lane's analyzer has
    exactly that, feeds that lane's sink, and the changed `source` waits for the next start."""
    newer = write(
        tmp_path / "newer.yaml",
        labels=["tone-1k"],
        events={"labels": {"tone-1k": {"threshold": 0.7}}},
        source={"kind": "demo"},
    )
    reloader = Reloader(lambda: load_config(newer), build_analyzer)
    sinks = [Sink(), Sink()]
    reload = reloader.prepare(running(tmp_path), "tone 2026.11.22", sinks)

    assert reload is not None
    assert reload.model == "tone 2026.11.22"
    assert reload.loaded.path == newer
    assert len(reload.analyzers) == 2
    for analyzer, sink in zip(reload.analyzers, sinks, strict=True):
        assert [(s.label, s.index, s.rules.threshold) for s in analyzer.labels] == [
            ("tone-1k", 0, 0.7)
        ]
        assert analyzer.sink is sink
    assert reload.later == ("source",)
    assert not reload.evidence_changed


def test_a_reload_that_turns_clips_on_says_the_evidence_changed(tmp_path: Path) -> None:
    newer = write(tmp_path / "newer.yaml", clips={"enabled": True})
    reload = Reloader(lambda: load_config(newer), build_analyzer).prepare(
        running(tmp_path), "tone 2026.11.22", [Sink()]
    )
    assert reload is not None and reload.evidence_changed and reload.later == ()


@pytest.mark.parametrize(
    ("sections", "problem"),
    [
        ({"labels": ["tone-9k"]}, "'tone-9k' is not a label of tone"),
        ({"model": {"path": "/nonexistent/bundle"}}, "/nonexistent/bundle"),
    ],
)
def test_a_refused_reload_builds_nothing_and_says_what_keeps_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sections: dict[str, Any], problem: str
) -> None:
    """A bad label or a missing bundle: None, no analyzer built (the build is never asked
    twice, so nothing half-made is left), and one error line naming the model that stays."""
    bad = write(tmp_path / "bad.yaml", **sections)
    built: list[Sink] = []

    def build(loaded: Loaded, sink: Sink) -> Any:
        result = build_analyzer(loaded, sink)
        built.append(sink)
        return result

    with caplog.at_level(logging.INFO, logger="edge.reload"):
        reload = Reloader(lambda: load_config(bad), build).prepare(
            running(tmp_path), "tone 2026.11.22", [Sink(), Sink()]
        )
    assert reload is None
    assert built == []
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert lines[0].startswith("reload refused, still running model tone 2026.11.22: ")
    assert problem in lines[0]
    assert "\n" not in lines[0]


def test_a_config_that_does_not_parse_is_refused_with_its_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"model: {{path: {TONE}}}\nevents: {{threshold: 2.5}}\n")
    with caplog.at_level(logging.ERROR, logger="edge.reload"):
        reload = Reloader(lambda: load_config(bad), build_analyzer).prepare(
            running(tmp_path), "tone 2026.11.22", [Sink()]
        )
    assert reload is None
    [line] = [r.getMessage() for r in caplog.records]
    assert "bad.yaml" in line and "threshold" in line


def test_a_reload_is_prepared_off_the_calling_thread_and_given_up_past_its_limit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Loading waits on its own thread: poll says 'not yet' while it runs, gives its result
    when done, and gives up (one log line, the running model stays) past the limit. Times
    are given to poll, not waited for."""
    reloader = Reloader(lambda: load_config(write(tmp_path / "new.yaml")), build_analyzer)
    release = threading.Event()

    def slow() -> Reload | None:
        release.wait(10)
        return reloader.prepare(running(tmp_path), "tone 1", [Sink()])

    pending = Pending(slow, "tone 1", limit_seconds=60)
    assert pending.poll(pending.began + 1) == (False, None)
    release.set()
    assert pending.wait(10)
    finished, reload = pending.poll(pending.began + 2)
    assert finished and reload is not None and len(reload.analyzers) == 1

    stuck = threading.Event()
    hung = Pending(lambda: (stuck.wait(10), None)[1], "tone 1", limit_seconds=60)
    with caplog.at_level(logging.ERROR):
        assert hung.poll(hung.began + 30) == (False, None)
        assert hung.poll(hung.began + 61) == (True, None)
    stuck.set()
    assert caplog.messages == [
        "reload refused, still running model tone 1: loading took more than 60 s"
    ]
