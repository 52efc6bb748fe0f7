"""The daemon's review page without a browser: the `web:` section, the daemon's outputs as a
review source, the Now data from written rows, POST /api/infer through `scan`, and a port
already taken (the daemon listens on, the failure counted)."""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.config import load_config
from edge.errors import ConfigError, SoundwatchError
from edge.preflight import preflight
from edge.review.daemonfolder import DaemonFolder
from edge.review.export import export
from edge.review.now import NO_ROW, PENDING, WINDOW_SECONDS, Now
from edge.review.store import Verdict
from tests.scenes import TRUTH, Found, check_against_truth, write_scene
from trainer.annotations import load_songexplorer

T0 = datetime(2026, 12, 5, 10, 0, 0, tzinfo=timezone.utc)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the web: section ---------------------------------------------------------------------------


def test_web_section_defaults_and_a_bad_port_names_key_and_line(tmp_path: Path) -> None:
    web = load_config(None).config.web
    assert (web.enabled, web.host, web.port) == (False, "127.0.0.1", 8088)
    path = tmp_path / "c.yaml"
    path.write_text("model: {path: tone}\nweb:\n  enabled: true\n  port: 70000\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message == f"{path}:4: web.port: must be within 0..65535, got 70000"


def test_a_host_off_loopback_needs_a_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(f"output: {{dir: {tmp_path / 'out'}}}\nweb: {{enabled: true, host: 0.0.0.0}}\n")
    monkeypatch.delenv("SOUNDWATCH_REVIEW_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    problems = preflight(load_config(path))
    assert len(problems) == 1 and problems[0].startswith("web.host: 0.0.0.0: not a loopback")
    assert "SOUNDWATCH_REVIEW_TOKEN" in problems[0]
    monkeypatch.setenv("SOUNDWATCH_REVIEW_TOKEN", "s3cret")
    assert preflight(load_config(path)) == []


# -- the daemon's outputs -----------------------------------------------------------------------


def _hour_csv(day: Path, rows: list[tuple[datetime, str, str]]) -> None:
    """Rows (time, status, tone-1k score) as DaemonFiles writes them, with a dBFS column."""
    day.mkdir(parents=True, exist_ok=True)
    lines = ["time,status,tone-1k,dbfs"]
    for when, status, score in rows:
        cells = f"{score},-20.00" if status == "analysed" else ","
        lines.append(f"{when.strftime('%Y-%m-%dT%H:%M:%S.000Z')},{status},{cells}")
    (day / f"{rows[0][0].strftime('%Y%m%dT%H')}.csv").write_text("\n".join(lines) + "\n")


def test_now_shades_every_second_of_the_hour_by_what_happened(tmp_path: Path) -> None:
    root = tmp_path / "out" / "box"
    # 10 s analysed, 3 s of overrun, then the daemon stopped for 20 s, then 5 s analysed.
    seconds = [(T0 + timedelta(seconds=i), "analysed", "0.1000") for i in range(10)]
    seconds += [(T0 + timedelta(seconds=10 + i), "gap:overrun", "") for i in range(3)]
    seconds += [(T0 + timedelta(seconds=33 + i), "analysed", f"0.{i}000") for i in range(5)]
    _hour_csv(root / "2026-12-05", seconds)
    now = Now(root)
    snap = now.snapshot(T0 + timedelta(seconds=40))
    begin = WINDOW_SECONDS - 40  # the hour ends 40 s after T0
    assert snap["segments"] == [
        [0, begin, NO_ROW],
        [begin, begin + 10, "analysed"],
        [begin + 10, begin + 13, "gap:overrun"],
        [begin + 13, begin + 33, NO_ROW],
        [begin + 33, begin + 38, "analysed"],
        [begin + 38, WINDOW_SECONDS, PENDING],
    ]
    assert snap["totals"]["analysed"] == 15 and snap["totals"]["gap:overrun"] == 3
    assert snap["peak"][begin + 37] == 0.4 and snap["peak"][begin + 11] is None
    assert snap["scores"] == {"tone-1k": 0.4} and snap["top"] == [["tone-1k", 0.4]]
    assert snap["levels"] == {"dbfs": -20.0}
    # A second read parses only what was appended since.
    with (root / "2026-12-05" / "20261205T10.csv").open("a") as f:
        f.write("2026-12-05T10:00:38.000Z,analysed,0.9000,-3.00\n")
    again = now.snapshot(T0 + timedelta(seconds=41))
    assert again["scores"] == {"tone-1k": 0.9} and again["latest"] == "2026-12-05T10:00:38Z"
    # Long after the last row, nothing is "now" any more.
    assert now.snapshot(T0 + timedelta(minutes=5))["scores"] == {"tone-1k": None}


def test_now_with_a_detector_per_channel_shows_the_best_of_them(tmp_path: Path) -> None:
    day = tmp_path / "box" / "2026-12-05"
    _hour_csv(day, [(T0 + timedelta(seconds=i), "analysed", "0.2000") for i in range(4)])
    (day / "20261205T10.csv").rename(day / "20261205T10_ch0.csv")
    ch1 = [(T0, "gap:device", ""), *((T0 + timedelta(seconds=i), "analysed", "0.7000")
                                     for i in range(1, 4))]  # fmt: skip
    _hour_csv(day, ch1)
    (day / "20261205T10.csv").rename(day / "20261205T10_ch1.csv")
    snap = Now(tmp_path / "box").snapshot(T0 + timedelta(seconds=5))
    assert snap["segments"][-2:] == [[WINDOW_SECONDS - 5, WINDOW_SECONDS - 1, "analysed"],
                                     [WINDOW_SECONDS - 1, WINDOW_SECONDS, PENDING]]  # fmt: skip
    assert snap["peak"][-5:] == [0.2, 0.7, 0.7, 0.7, None]
    assert snap["scores"] == {"tone-1k": 0.7}


def _event(event_id: str, clip: Path | str | None, kind: str = "end") -> dict[str, object]:
    return {"id": event_id, "type": kind, "label": "tone-1k", "start": "2026-12-05T10:00:02.000Z",
            "end": "2026-12-05T10:00:03.000Z", "start_offset": 2.0, "end_offset": 3.0,
            "score_max": 0.9, "threshold": 0.5, "model": "tone", "model_version": "1",
            "channel": None, "clip": str(clip) if clip else None}  # fmt: skip


def test_the_daemon_source_plays_the_clip_and_never_a_path_outside_the_clips(
    tmp_path: Path,
) -> None:
    out, clips = tmp_path / "out", tmp_path / "out" / "clips"
    clip = clips / "2026-12-05" / "20261205T100002.000Z_tone-1k.wav"
    clip.parent.mkdir(parents=True)
    sf.write(clip, np.zeros(16000 * 3, np.float32), 16000)  # 1 s roll either side
    outside = tmp_path / "secret.wav"
    sf.write(outside, np.zeros(1600, np.float32), 16000)
    (clips / "2026-12-05" / "link.wav").symlink_to(outside)
    day = out / "box" / "2026-12-05"
    day.mkdir(parents=True)
    link = clips / "2026-12-05" / "link.wav"
    messages = [_event("a", clip, "start"), _event("a", clip), _event("b", outside),
                _event("c", link), _event("d", None, "start")]  # fmt: skip
    (day / "events.jsonl").write_text("".join(json.dumps(m) + "\n" for m in messages))
    source = DaemonFolder(out / "box", clips, pre_roll_seconds=1.0)
    assert [e["id"] for e in source.events()] == ["a", "b", "c"]  # d has not ended yet
    # An event whose clip is still due (written its post-roll after the end) waits for it.
    later = clips / "2026-12-05" / "20261205T100009.000Z_tone-1k.wav"
    with (day / "events.jsonl").open("a") as f:
        f.write(json.dumps({**_event("e", later), "start_offset": 9.0}) + "\n")
    assert [e["id"] for e in source.events()] == ["a", "b", "c"]
    sf.write(later, np.zeros(1600, np.float32), 16000)
    assert [e["id"] for e in source.events()] == ["a", "b", "c", "e"]
    cut = source.excerpt("a")
    assert (len(cut.samples), cut.rate_hz, cut.start_seconds) == (48000, 16000, 1.0)
    for event_id in ("b", "c"):
        with pytest.raises(SoundwatchError, match="outside the clips folder"):
            source.excerpt(event_id)
    # A verdict exports against the clip, with times from the clip's start; the trainer reads it.
    verdicts = {"a": Verdict("a", "wrong", None, "tester", "2026-12-05T10:01:00.000Z")}
    export(source.events(), verdicts, tmp_path / "export")
    (annotation,) = load_songexplorer(tmp_path / "export").annotations
    assert (annotation.label, annotation.start_seconds, annotation.end_seconds) == (
        "not_tone-1k", 1.0, 2.0)  # fmt: skip
    no_clips = DaemonFolder(out / "box", None, 1.0)
    with pytest.raises(SoundwatchError, match="clips are off"):
        no_clips.excerpt("a")


# -- POST /api/infer (soundwatch review --model) ------------------------------------------------


def _start(
    command: list[str], ready: str, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    """`soundwatch <command>`, its log in `log`, returned once the log says `ready`."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", *command],
            stderr=err, stdout=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if ready in log.read_text():
            return proc
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no {ready!r} in 60 s: {log.read_text()}")


def _post(
    port: int, body: bytes, kind: str = "audio/wav", length: int | None = None
) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": kind, "Content-Length": str(len(body) if length is None else length)}
    connection.request("POST", "/api/infer", body=body, headers=headers)
    answer = connection.getresponse()
    return answer.status, json.loads(answer.read())


def test_post_a_wav_returns_its_seconds_and_the_known_events(
    scanned_scene: Path, tone_bundle: Path, tmp_path: Path
) -> None:
    folder = Path(shutil.copytree(scanned_scene, tmp_path / "scores"))
    wav = write_scene(tmp_path / "posted.wav")
    port = free_port()
    command = ["review", str(folder), "--port", str(port), "--model", str(tone_bundle)]
    proc = _start(command, "review of", tmp_path / "review.log")
    try:
        status, answer = _post(port, wav.read_bytes())
        assert status == 200, answer
        assert answer["model"] == "tone" and answer["duration_seconds"] == 20.0
        assert len(answer["seconds"]) == 20
        assert float(answer["seconds"][11]["tone-1k"]) > 0.9
        found = [Found(e["label"], e["start_offset"], e["end_offset"]) for e in answer["events"]]
        assert len(found) == len(TRUTH)
        check_against_truth(found)
        assert _post(port, b"RIFF not really a wav") == (
            400, {"error": "body: not a readable WAV file (Format not recognised.)"})  # fmt: skip
        status, answer = _post(port, b"", length=21 * 2**20)  # refused before it is read
        assert status == 400 and "more than the 20971520 allowed" in answer["error"]
        status, answer = _post(port, wav.read_bytes(), kind="text/plain")
        assert (status, answer["error"]) == (400, "Content-Type text/plain: send audio/wav")
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0
    # Without --model the route says what is missing.
    proc = _start(["review", str(folder), "--port", str(port)], "review of", tmp_path / "2.log")
    try:
        status, answer = _post(port, wav.read_bytes())
        assert status == 404 and "--model" in answer["error"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- a port already taken ------------------------------------------------------------------------


def test_a_taken_port_is_one_line_a_count_and_the_daemon_listens_on(
    tone_bundle: Path, tmp_path: Path
) -> None:
    metrics = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "c.yaml"
        config.write_text(
            f"model: {{path: {tone_bundle}}}\nsource: {{kind: demo}}\n"
            f"output: {{dir: {tmp_path / 'out'}, device_id: box, print: none}}\n"
            f"metrics: {{address: '127.0.0.1:{metrics}'}}\n"
            f"web: {{enabled: true, port: {port}}}\n"
        )
        log = tmp_path / "daemon.log"
        proc = _start(["run", "-c", str(config)], "listening to demo", log)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not list((tmp_path / "out").rglob("*T*.csv")):
                time.sleep(0.2)
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics}/metrics").read().decode()
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    assert proc.returncode == 0, log.read_text()
    errors = [line for line in log.read_text().splitlines() if "ERROR" in line]
    assert (
        len(errors) == 1 and f"web.host 127.0.0.1, web.port {port}: cannot listen" in errors[0]
    ), errors
    assert 'soundwatch_web_failures_total{kind="start"} 1.0' in text
    assert "soundwatch_web_up 0.0" in text
    assert "soundwatch_audio_seconds_total 0.0" not in text  # it went on listening
    rows = next((tmp_path / "out").rglob("*T*.csv")).read_text().splitlines()
    assert len(rows) > 2 and rows[1].split(",")[1] in ("analysed", "edge")


# -- a request that fails -------------------------------------------------------------------------


def test_a_failing_request_is_one_line_and_counted_and_the_server_serves_on(
    tmp_path: Path,
) -> None:
    from edge.review.daemon import WebServer, daemon_review

    config = tmp_path / "c.yaml"
    config.write_text(
        f"output: {{dir: {tmp_path / 'out'}, device_id: box}}\nclips: {{enabled: true}}\n"
        "web: {enabled: true, port: 0}\n"
    )
    loaded = load_config(config)
    clip = tmp_path / "out" / "clips" / "2026-12-05" / "a.wav"
    clip.parent.mkdir(parents=True)
    sf.write(clip, np.zeros(16000, np.float32), 16000)
    day = tmp_path / "out" / "box" / "2026-12-05"
    day.mkdir(parents=True)
    (day / "events.jsonl").write_text(json.dumps(_event("a", clip)) + "\n")
    # The spectrogram cache holds a folder where the PNG should go: drawing it fails.
    (tmp_path / "out" / ".review-cache" / "a.png").mkdir(parents=True)
    failures: list[str] = []
    server = WebServer(daemon_review(loaded, lambda: loaded, dict), "127.0.0.1", 0, failures.append)
    assert server.start()
    try:
        with urllib.request.urlopen(server.url + "api/events") as answer:
            assert [e["id"] for e in json.loads(answer.read())] == ["a"]
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(server.url + "media/a.png")
        assert caught.value.code == 500
        assert json.loads(caught.value.read()) == {"error": "internal error (logged by the server)"}
        assert failures == ["request"]
        with urllib.request.urlopen(server.url + "media/a.wav") as answer:  # serves on
            assert sf.info(io.BytesIO(answer.read())).duration == 1.0
    finally:
        server.close()
