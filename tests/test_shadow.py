"""A candidate in shadow beside the deployed model, and promoting it (edge/shadow.py,
edge/disagree.py, edge/promote.py).

The real tone bundle is the deployed model; the shadow is a copy whose tone-1k threshold is
0.1 instead of 0.5, so it also reports short 1 kHz tones the deployed model scores about 0.4.
The daemon runs in-process on a file and as a subprocess on its demo source (for SIGHUP).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml
from selenium.webdriver.remote.webdriver import WebDriver

from edge.app import App
from edge.audio.ringbuffer import RingBuffer
from edge.audio.streams import Gap
from edge.cli import main
from edge.config import load_config
from edge.shadow import ShadowTap
from tests.audio import tone_events, write_wav
from tests.test_review_page import wait_for

TONE = Path(__file__).resolve().parent.parent / "models" / "tone"
LONG_1K = [(1.0, 2.0), (7.0, 8.0), (13.0, 14.0)]
SHORT_1K = [(3.0, 3.2), (9.0, 9.2), (11.0, 11.2)]
LONG_3K = [(5.0, 6.0), (15.0, 16.0)]


def shadow_bundle(folder: Path) -> Path:
    """The tone bundle with tone-1k's threshold at 0.1, as version `b`."""
    bundle = folder / "tone-b"
    shutil.copytree(TONE, bundle)
    manifest = yaml.safe_load((bundle / "manifest.yaml").read_text())
    manifest["thresholds"]["tone-1k"] = 0.1
    manifest["version"] = "b"
    (bundle / "manifest.yaml").write_text(yaml.safe_dump(manifest, sort_keys=False))
    return bundle


def config(folder: Path, shadow: Path | str, source: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(
        "# the deployed model, with a candidate beside it\n"
        f"model: {{path: {TONE}}}  # deployed\n"
        f"source: {source}\n"
        f"output: {{dir: {folder / 'out'}, device_id: dev, print: none}}\n"
        "metrics: {enabled: false}\n"
        f"shadow: {{bundle: {shadow}}}\n"
    )
    return path


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    tones = [(a, b, 1000.0) for a, b in LONG_1K + SHORT_1K] + [(a, b, 3000.0) for a, b in LONG_3K]
    samples = tone_events(16000, 18.0, tones, noise_amplitude=0.01, tone_amplitude=0.3, seed=1)
    return write_wav(tmp_path / "scene.wav", samples, 16000)


def test_the_shadow_scores_the_same_audio_and_its_disagreements_are_listed(
    tmp_path: Path, scene: Path, capsys: pytest.CaptureFixture[str], browser: WebDriver
) -> None:
    path = config(tmp_path, shadow_bundle(tmp_path), f"{{kind: files, paths: [{scene}], speed: 0}}")
    app = App(load_config(path))
    assert app.run() == 0
    # The same audio through the same weights: every per-second row is the same, to the digit.
    deployed = sorted((tmp_path / "out" / "dev").glob("*/*.csv"))
    shadow = sorted((tmp_path / "out" / "shadow" / "dev").glob("*/*.csv"))
    rows = [p for p in deployed if p.name != "predicted.csv"]
    assert len(rows) >= 1 and len(rows[0].read_text().splitlines()) == 19  # header + 18 s
    assert [p.read_text() for p in rows] == [
        p.read_text() for p in shadow if p.name != "predicted.csv"
    ]
    # Reading a file, the daemon waits for the shadow: nothing was skipped.
    skipped = app.metrics.registry.get_sample_value("soundwatch_shadow_skipped_seconds_total")
    assert skipped == 0.0
    events = [
        json.loads(line)
        for p in (tmp_path / "out" / "shadow" / "dev").glob("*/events.jsonl")
        for line in p.read_text().splitlines()
    ]
    assert {e["model_version"] for e in events} == {"b"}

    capsys.readouterr()
    assert main(["shadow-diff", "-c", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    only = [line for line in out if "only " in line and ": " not in line]
    assert len(only) == 3 and all("tone-1k  only shadow  score 0." in line for line in only)
    starts = sorted(
        json.loads(line)["start_offset"]
        for p in (tmp_path / "out" / "shadow" / "dev").glob("*/events.jsonl")
        for line in p.read_text().splitlines()
        if json.loads(line)["type"] == "end" and json.loads(line)["label"] == "tone-1k"
    )
    # The shadow's tone-1k events: the three long tones and the three short ones, in order.
    assert len(starts) == 6
    for (a, b), start in zip(sorted(LONG_1K + SHORT_1K), starts, strict=True):
        assert a - 0.5 <= start <= b, (a, start)
    assert out[-2:] == [
        "tone-1k: 3 events both, 0 only deployed, 3 only shadow",
        "tone-3k: 2 events both, 0 only deployed, 0 only shadow",
    ]

    # The daemon's page shows the same disagreements, from /api/shadow, in its Model tab
    # (in a real headless Chromium).
    from selenium.webdriver.common.by import By

    from edge.review.daemon import WebServer, daemon_review

    loaded = load_config(path)
    server = WebServer(daemon_review(loaded, lambda: loaded, dict), "127.0.0.1", 0, print)
    assert server.start()
    try:
        with urllib.request.urlopen(server.url + "api/shadow") as answer:
            page = json.loads(answer.read())
        browser.get(server.url + "#model")
        wait_for(browser, "!document.getElementById('shadow').hidden", 10)
        shown = [
            [td.text for td in row.find_elements(By.TAG_NAME, "td")]
            for row in browser.find_elements(By.CSS_SELECTOR, "#shadow-counts tbody tr")
        ]
        listed = browser.find_elements(By.CSS_SELECTOR, "#shadow-events tbody tr")
        browser.save_screenshot(str(tmp_path / "shadow.png"))
        disagree = [[td.text for td in row.find_elements(By.TAG_NAME, "td")][1:3] for row in listed]
    finally:
        server.close()
    assert shown == [["tone-1k", "3", "0", "3"], ["tone-3k", "2", "0", "0"]]
    assert disagree == [["tone-1k", "shadow"]] * 3
    assert page["counts"] == {
        "tone-1k": {"both": 3, "deployed": 0, "shadow": 3},
        "tone-3k": {"both": 2, "deployed": 0, "shadow": 0},
    }
    assert [(d["label"], d["only"]) for d in page["disagreements"]] == [("tone-1k", "shadow")] * 3


def test_a_shadow_that_falls_behind_skips_audio_and_says_how_much() -> None:
    """On a live source the processing thread never waits: the oldest audio is overwritten and
    the shadow reads a gap of exactly what it lost, then the newest audio."""
    tap = ShadowTap(RingBuffer(4096), 16000, wait_for_room=False)
    tap.audio(np.arange(10000, dtype=np.float32))
    tap.missing(800)  # the stream's own gap, after those samples
    tap.audio(np.full(100, 7.0, dtype=np.float32))
    tap.ended.set()
    got = list(tap.blocks())
    gaps = [(g.frames, g.reason) for g in got if isinstance(g, Gap)]
    audio = np.concatenate([b[:, 0] for b in got if not isinstance(b, Gap)])
    assert gaps[0] == (10100 - 4096, "overload")
    assert (800, "device") in gaps
    assert audio[0] == 10100 - 4096 and audio[-1] == 7.0 and len(audio) == 4096
    assert tap.ring.dropped_frames_total == 10100 - 4096
    # On files the daemon waits for room, unless the shadow stopped (failed): then it goes on
    # and what the shadow cannot take counts as skipped.
    stopped = ShadowTap(RingBuffer(4096), 16000, wait_for_room=True)
    stopped.stop.set()
    stopped.audio(np.zeros(10000, dtype=np.float32))
    assert stopped.ring.dropped_frames_total == 10000 - 4096


def test_a_shadow_bundle_that_does_not_load_leaves_listening_alone(
    tmp_path: Path, scene: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = config(tmp_path, tmp_path / "missing", f"{{kind: files, paths: [{scene}], speed: 0}}")
    app = App(load_config(path))
    assert app.shadow is None
    assert app.run() == 0
    assert any(
        "shadow: " in r.message and "going on without it" in r.message for r in caplog.records
    )
    assert list((tmp_path / "out" / "dev").glob("*/events.jsonl"))


def test_check_names_a_shadow_bundle_that_does_not_load(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, shadow_bundle(tmp_path), "{kind: demo}")
    assert main(["check", "-c", str(path)]) == 0
    assert f"shadow tone b ({tmp_path / 'tone-b'})" in capsys.readouterr().out
    path = config(tmp_path, tmp_path / "missing", "{kind: demo}")
    assert main(["check", "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"soundwatch: error: {path}:6: shadow.bundle: "), err


def _wait_for(log: Path, text: str, count: int = 1, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.is_file() and log.read_text().count(text) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"no {text!r} in the daemon's log:\n{log.read_text()}")


def test_promote_swaps_the_bundle_by_sighup_and_rollback_puts_it_back(tmp_path: Path) -> None:
    candidate = shadow_bundle(tmp_path)
    path = config(tmp_path, candidate, "{kind: demo}")
    text = path.read_text()
    log = tmp_path / "daemon.log"
    with log.open("w") as stderr:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(path)],
            stdout=subprocess.DEVNULL, stderr=stderr, env={**os.environ, "PYTHONPATH": os.getcwd()},
        )  # fmt: skip
    try:
        _wait_for(log, "listening to")
        assert main(["promote", str(candidate), "-c", str(path), "--pid", str(daemon.pid)]) == 0
        _wait_for(log, "reload: model tone b is listening")
        # Only model.path changed: the comments and the other lines stay as written.
        assert path.read_text() == text.replace(f"path: {TONE}}}", f"path: {candidate}}}")
        assert main(["rollback", "-c", str(path), "--pid", str(daemon.pid)]) == 0
        _wait_for(log, "reload: model tone 2026.11.22 is listening")
        assert path.read_text() == text
        history = (tmp_path / "config.yaml.models").read_text().splitlines()
        assert [line.split("\t")[1:] for line in history] == [
            [str(TONE), str(candidate)],
            [str(candidate), str(TONE)],
        ]
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(30)
    assert daemon.returncode == 0


def test_promote_refuses_a_bundle_the_config_does_not_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, TONE, "{kind: demo}")
    path.write_text(path.read_text() + "labels: [tone-1k]\n")
    text = path.read_text()
    other = tmp_path / "other"
    shutil.copytree(TONE, other)
    manifest = (other / "manifest.yaml").read_text().replace("tone-1k", "beep-1k")
    (other / "manifest.yaml").write_text(manifest)
    assert main(["promote", str(other), "-c", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'tone-1k' is not a label of tone" in err[0], err
    assert path.read_text() == text and not (tmp_path / "config.yaml.models").exists()
    assert main(["rollback", "-c", str(path)]) == 2
    assert "no promotion recorded: nothing to roll back to" in capsys.readouterr().err


def test_only_the_time_both_models_listened_is_compared() -> None:
    """Events the deployed model made before the shadow was added (or while the shadow was
    not analysing) are no disagreements; an event partly heard by the other model counts."""
    from datetime import datetime, timedelta, timezone

    from edge.disagree import Found, disagreements

    t0 = datetime(2026, 12, 5, 10, tzinfo=timezone.utc)

    def at(a: float, b: float, label: str = "x") -> Found:
        return Found(t0 + timedelta(seconds=a), t0 + timedelta(seconds=b), label, 0.9)

    deployed = [at(2, 3), at(12, 13), at(19.5, 20.5), at(25, 26)]
    shadow = [at(12.2, 12.8), at(31, 32)]
    heard = (
        [(t0, t0 + timedelta(seconds=40))],  # the deployed model: all along
        [(t0 + timedelta(seconds=10), t0 + timedelta(seconds=20)),  # the shadow, twice
         (t0 + timedelta(seconds=30), t0 + timedelta(seconds=35))],
    )  # fmt: skip
    found, counts = disagreements(deployed, shadow, heard)
    assert [(d.found.start - t0, d.only) for d in found] == [
        (timedelta(seconds=19.5), "deployed"),  # half of it heard by the shadow
        (timedelta(seconds=31), "shadow"),
    ]
    assert dict(counts["x"]) == {"both": 1, "deployed": 1, "shadow": 1}
    everything, _ = disagreements(deployed, shadow)  # no spans: every event counts
    assert len(everything) == 4
