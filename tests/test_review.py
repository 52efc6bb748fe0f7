"""The review's parts on their own: the verdict store, the scan-folder source, the export read
back by the trainer, spectrogram PNGs, and the server's guards (token, CSRF, paths), over a
real scan of a recording with known events and a real HTTP server on a free port."""

from __future__ import annotations

import http.client
import io
import json
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from edge.errors import SoundwatchError
from edge.review.export import export
from edge.review.scanfolder import ScanFolder
from edge.review.server import make_server, review_folder, review_token
from edge.review.spectrogram import HEIGHT_PX, png, spectrogram
from edge.review.store import VerdictStore
from tests.audio import tone
from tests.scenes import SECONDS, TRUTH
from trainer.annotations import load_raven, load_songexplorer


@pytest.fixture
def out(scanned_scene: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(scanned_scene, tmp_path / "out"))


# -- store -------------------------------------------------------------------------------------


def test_verdicts_survive_reopening_and_the_latest_wins(tmp_path: Path) -> None:
    store = VerdictStore(tmp_path / "state" / "review.sqlite")
    store.put("a1", "right", "ann")
    store.put("b2", "wrong", "ann")
    store.put("a1", "relabel", "bob", label="tone-3k")
    store.close()
    again = VerdictStore(tmp_path / "state" / "review.sqlite")
    got = again.all()
    assert sorted(got) == ["a1", "b2"]
    assert (got["a1"].verdict, got["a1"].label, got["a1"].reviewer) == ("relabel", "tone-3k", "bob")
    assert got["b2"].verdict == "wrong" and got["b2"].label is None
    assert again.remove("b2") and not again.remove("b2")
    assert again.get("b2") is None


@pytest.mark.parametrize(
    ("verdict", "label", "message"),
    [("maybe", None, "verdict: 'maybe'"), ("relabel", None, "label: a relabel"),
     ("right", "x", "label: only a relabel")],
)  # fmt: skip
def test_bad_verdicts_are_refused_naming_the_field(
    tmp_path: Path, verdict: str, label: str | None, message: str
) -> None:
    store = VerdictStore(tmp_path / "review.sqlite")
    with pytest.raises(SoundwatchError, match=message):
        store.put("a1", verdict, "ann", label=label)
    assert store.all() == {}


def test_a_file_that_is_not_a_store_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "review.sqlite").write_text("not a database, just text " * 100)
    with pytest.raises(SoundwatchError, match="not a verdict store"):
        VerdictStore(tmp_path / "review.sqlite")


# -- source ------------------------------------------------------------------------------------


def test_the_source_pairs_events_and_cuts_their_audio_with_roll(out: Path) -> None:
    source = ScanFolder(out)
    events = source.events()
    assert [(e["label"], round(e["start_offset"])) for e in events] == [
        ("tone-1k", 2), ("tone-3k", 6), ("tone-1k", 10), ("tone-3k", 15), ("tone-1k", 17),
        ("tone-3k", 17),
    ]  # fmt: skip
    assert all(e["type"] == "end" and e["key"] == "site1/rec_20261122T100000.wav" for e in events)
    first = events[0]
    cut = source.excerpt(first["id"])
    assert cut.rate_hz == 16000
    assert cut.start_seconds == pytest.approx(first["start_offset"] - 1.0, abs=1e-3)
    expected = first["end_offset"] - first["start_offset"] + 2.0
    assert len(cut.samples) / cut.rate_hz == pytest.approx(expected, abs=1e-3)
    # The tone (2-3 s) sits 1 s into the excerpt: loud there, quiet in the roll before it.
    loud = cut.samples[int(1.2 * 16000) : int(1.8 * 16000)]
    quiet = cut.samples[: int(0.8 * 16000)]
    assert np.sqrt(np.mean(loud**2)) > 10 * np.sqrt(np.mean(quiet**2))
    last = events[-1]  # ends at 18.6 s: the post-roll stops at the recording's end (20 s)
    assert len(source.excerpt(last["id"]).samples) <= int((SECONDS - 16.3) * 16000) + 1


def test_coverage_counts_analysed_and_gap_seconds_by_reason(out: Path) -> None:
    source = ScanFolder(out)
    assert source.coverage() == [
        {"hour": "2026-11-22T10:00Z", "analysed": 20, "edge": 0, "gaps": {}}
    ]
    csv = out / "site1" / "rec_20261122T100000.wav.probabilities.csv"
    rows = csv.read_text().splitlines()
    rows[5] = rows[5].replace("analysed", "gap:overrun")
    rows[6] = rows[6].replace("analysed", "gap:device")
    rows[7] = rows[7].replace("analysed", "gap:overrun")
    csv.write_text("\n".join(rows) + "\n")
    assert source.coverage() == [
        {"hour": "2026-11-22T10:00Z", "analysed": 17, "edge": 0,
         "gaps": {"overrun": 2, "device": 1}}
    ]  # fmt: skip


def test_a_broken_events_line_names_file_and_line(out: Path) -> None:
    path = out / "site1" / "rec_20261122T100000.wav.events.jsonl"
    path.write_text(path.read_text() + "{not json\n")
    lines = len(path.read_text().splitlines())
    with pytest.raises(SoundwatchError, match=rf"events.jsonl:{lines}: not an event message"):
        ScanFolder(out).events()


def test_a_growing_events_file_is_read_by_what_was_appended(out: Path) -> None:
    """As the daemon appends: a line still being written waits for the next read, an end
    message replaces its start, and a file written anew (smaller) is read from the start."""
    path = out / "site1" / "rec_20261122T100000.wav.events.jsonl"
    lines = path.read_text().splitlines(keepends=True)  # start, end, start, end, ...
    assert len(lines) == 12
    source = ScanFolder(out)
    others = len(source.events()) - 6  # the scan's other file
    path.write_text(lines[0] + lines[1][:40])  # a start, and an end being written
    assert [e["type"] for e in source.events() if e["key"] == "site1/rec_20261122T100000.wav"] == [
        "start"
    ]
    with path.open("a") as f:
        f.write(lines[1][40:] + "".join(lines[2:5]))
    mine = [e for e in source.events() if e["key"] == "site1/rec_20261122T100000.wav"]
    assert [e["type"] for e in mine] == ["end", "end", "start"]
    assert len(source.events()) == others + 3
    path.write_text(lines[0])  # replaced by a shorter file: read again
    assert [e["type"] for e in source.events() if e["key"] == "site1/rec_20261122T100000.wav"] == [
        "start"
    ]


# -- export ------------------------------------------------------------------------------------


def test_export_is_read_back_by_the_trainer_with_labels_and_times(out: Path) -> None:
    source = ScanFolder(out)
    events = source.events()
    store = VerdictStore(out / "review.sqlite")
    store.put(events[0]["id"], "right", "ann")
    store.put(events[1]["id"], "wrong", "ann")
    store.put(events[2]["id"], "relabel", "ann", label="bird")
    written = export(events, store.all(), out / "export")
    assert len(written) == 2  # one SongExplorer CSV (one reviewer) and one Raven table

    recording = Path(events[0]["source"])  # the scanned recording (the scan fixture's)
    expected = [
        ("tone-1k", events[0]), ("not_tone-3k", events[1]), ("bird", events[2])
    ]  # fmt: skip
    for loaded in (load_songexplorer(out / "export"), load_raven(written[1])):
        assert loaded.problems == []
        got = [(a.label, a.start_seconds, a.end_seconds, a.recording) for a in loaded.annotations]
        assert [g[0] for g in got] == [label for label, _ in expected]
        for (_, start, end, path), (_, event) in zip(got, expected, strict=True):
            assert start == pytest.approx(event["start_offset"], abs=1e-3)
            assert end == pytest.approx(event["end_offset"], abs=1e-3)
            assert path.resolve() == recording.resolve()
    # The truth: the first event is the 2.0-3.0 s tone.
    assert load_songexplorer(out / "export").annotations[0].start_seconds == pytest.approx(
        TRUTH[0][0], abs=0.1
    )


# -- spectrogram -------------------------------------------------------------------------------


def test_the_spectrogram_png_decodes_and_shows_the_tone_at_its_frequency() -> None:
    rate = 16000
    image = spectrogram(tone(1000.0, 1.0, rate), rate)
    assert image.shape[0] == HEIGHT_PX and image.shape[1] == pytest.approx(100, abs=5)
    # 1 kHz of 8 kHz: row 16 from the bottom is the brightest.
    brightest = HEIGHT_PX - 1 - int(np.argmax(image.mean(axis=1)))
    assert brightest == pytest.approx(1000 / 8000 * HEIGHT_PX, abs=1)
    data = png(image)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (image.shape[1], image.shape[0])
    idat = data[data.index(b"IDAT") + 4 : data.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(height, width + 1)
    assert np.array_equal(raw[:, 1:], image) and not raw[:, 0].any()


# -- server guards -----------------------------------------------------------------------------


@pytest.fixture
def served(out: Path) -> Iterator[tuple[str, int, str]]:
    """A server with a token on a free loopback port: (host, port, csrf token)."""
    review = review_folder(out, "s3cret", "tester")
    server = make_server(review, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, name="review-test", daemon=True)
    thread.start()
    yield "127.0.0.1", server.server_address[1], review.csrf
    server.shutdown()
    server.server_close()


def ask(
    where: tuple[str, int, str], method: str, path: str, headers: dict[str, str] | None = None,
    body: object = None,
) -> tuple[int, bytes]:  # fmt: skip
    connection = http.client.HTTPConnection(where[0], where[1], timeout=10)
    data = json.dumps(body).encode() if body is not None else None
    connection.request(method, path, body=data, headers=headers or {})
    answer = connection.getresponse()
    return answer.status, answer.read()


def test_the_per_second_rows_of_a_scanned_file(served: tuple[str, int, str]) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    status, body = ask(served, "GET", "/api/seconds?file=site1/rec_20261122T100000.wav", auth)
    rows = json.loads(body)
    assert status == 200 and len(rows) == SECONDS
    assert rows[11]["time"] == "2026-11-22T10:00:11.000Z" and float(rows[11]["tone-1k"]) > 0.9
    assert float(rows[8]["tone-1k"]) < 0.1
    status, body = ask(served, "GET", "/api/seconds?file=../in", auth)
    assert status == 404 and json.loads(body) == {"error": "not found: no scanned file '../in'"}


def test_a_wrong_or_missing_token_is_refused(served: tuple[str, int, str]) -> None:
    assert ask(served, "GET", "/api/events")[0] == 401
    status, body = ask(served, "GET", "/api/events", {"Authorization": "Bearer nope"})
    assert status == 401 and json.loads(body) == {"error": "token missing or wrong"}
    status, body = ask(served, "GET", "/api/events", {"Authorization": "Bearer s3cret"})
    assert status == 200 and len(json.loads(body)) == len(TRUTH)


def test_events_come_by_the_newest_n_with_the_count_of_all(served: tuple[str, int, str]) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    everything = json.loads(ask(served, "GET", "/api/events", auth)[1])
    connection = http.client.HTTPConnection(served[0], served[1], timeout=10)
    connection.request("GET", "/api/events?limit=3", headers=auth)
    answer = connection.getresponse()
    assert json.loads(answer.read()) == everything[-3:]
    assert answer.getheader("X-Total-Count") == str(len(TRUTH)) and len(TRUTH) > 3
    status, body = ask(served, "GET", "/api/events?limit=-1", auth)
    assert status == 400 and json.loads(body) == {"error": "limit='-1': not a whole number"}
    days = json.loads(ask(served, "GET", "/api/days", auth)[1])
    assert days == ["2026-11-22"]


def test_events_by_day_and_a_clip_by_id(served: tuple[str, int, str]) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    events = json.loads(ask(served, "GET", "/api/events?day=2026-11-22", auth)[1])
    assert len(events) == len(TRUTH)
    assert json.loads(ask(served, "GET", "/api/events?day=2026-11-23", auth)[1]) == []
    status, wav = ask(served, "GET", f"/api/clips/{events[0]['id']}", auth)
    seconds = events[0]["end_offset"] - events[0]["start_offset"] + 2.0  # 1 s roll each side
    assert status == 200 and sf.info(io.BytesIO(wav)).duration == pytest.approx(seconds, abs=0.01)
    status, body = ask(served, "GET", "/api/clips/..%2f..%2fetc%2fpasswd", auth)
    assert status == 404 and json.loads(body)["error"].startswith("not found")
    status, body = ask(served, "GET", "/api/now", auth)  # a scan folder has no Now
    assert status == 404 and "only the daemon" in json.loads(body)["error"]


def test_verdict_posts_need_the_csrf_token_and_the_same_origin(
    served: tuple[str, int, str],
) -> None:
    auth = {"Authorization": "Bearer s3cret", "Content-Type": "application/json"}
    event_id = json.loads(ask(served, "GET", "/api/events", auth)[1])[0]["id"]
    verdict = {"event_id": event_id, "verdict": "right"}
    assert ask(served, "POST", "/api/verdicts", auth, verdict)[0] == 403
    csrf = {**auth, "X-CSRF-Token": served[2]}
    evil = {**csrf, "Origin": "http://evil.example"}
    assert ask(served, "POST", "/api/verdicts", evil, verdict)[0] == 403
    assert json.loads(ask(served, "GET", "/api/verdicts", auth)[1]) == []
    status, body = ask(served, "POST", "/api/verdicts", csrf, verdict)
    assert status == 200 and json.loads(body)["reviewer"] == "tester"
    status, body = ask(served, "POST", "/api/verdicts", csrf, {"event_id": event_id})
    assert (status, json.loads(body)["error"]) == (400, "verdict: missing (right, wrong, "
                                                        "relabel, or none to undo)")  # fmt: skip
    status, body = ask(served, "POST", "/api/verdicts", csrf, {**verdict, "verdict": "maybe"})
    assert status == 400 and b"Traceback" not in body and len(body.splitlines()) == 1
    assert (
        ask(served, "POST", "/api/verdicts", csrf, {"event_id": "nope", "verdict": "right"})[0]
        == 404
    )


@pytest.mark.parametrize(
    "path",
    ["/files/../in.wav", "/files/%2e%2e/in.wav", "/files/site1/%2E%2E/%2e%2e/in.wav",
     "/assets/../server.py", "/assets/%2e%2e%2fserver.py", "/files/outside-link.wav",
     "/media/..%2f..%2fetc.png"],
)  # fmt: skip
def test_paths_never_leave_their_folders(
    out: Path, served: tuple[str, int, str], path: str
) -> None:
    recording = ScanFolder(out).events()[0]["source"]
    (out / "outside-link.wav").symlink_to(recording)
    shutil.copy(recording, out.parent / "in.wav")  # what `..` from the folder would reach
    status, body = ask(served, "GET", path, {"Authorization": "Bearer s3cret"})
    assert status in (403, 404) and body.startswith(b'{"error"'), (path, status, body)
    # What is inside may be read.
    listing = "/files/site1/rec_20261122T100000.wav.probabilities.csv"
    status, body = ask(served, "GET", listing, {"Authorization": "Bearer s3cret"})
    assert status == 200 and body.startswith(b"time,offset_seconds,status")


def test_a_non_loopback_address_needs_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SOUNDWATCH_REVIEW_TOKEN", raising=False)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert review_token("127.0.0.1") is None
    with pytest.raises(SoundwatchError, match=r"--host 0\.0\.0\.0: not a loopback address"):
        review_token("0.0.0.0")
    (tmp_path / "soundwatch-review-token").write_text("from-systemd\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert review_token("0.0.0.0") == "from-systemd"
    monkeypatch.setenv("SOUNDWATCH_REVIEW_TOKEN", "from-env")
    assert review_token("0.0.0.0") == "from-env"


def test_the_command_refuses_a_public_address_without_a_token_in_one_line(out: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "review", str(out), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60, env=env, check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "soundwatch: error: --host 0.0.0.0: not a loopback address, so a token is required: "
        "set SOUNDWATCH_REVIEW_TOKEN or the systemd credential soundwatch-review-token "
        "(never in the YAML)"
    ]


def test_the_command_exports_the_stored_verdicts(out: Path) -> None:
    events = ScanFolder(out).events()
    store = VerdictStore(out / "review.sqlite")
    store.put(events[3]["id"], "wrong", "ann")
    store.close()
    done = subprocess.run(
        [sys.executable, "-m", "edge.cli", "review", str(out), "--export", str(out / "x")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"1 verdict(s) exported to 2 file(s) in {out / 'x'}"]
    (annotation,) = load_songexplorer(out / "x").annotations
    assert annotation.label == "not_tone-3k"
    assert annotation.start_seconds == pytest.approx(events[3]["start_offset"], abs=1e-3)
