"""`scan` from and to S3 and HTTP (issue 11, item 3), against real servers on 127.0.0.1: moto
in server mode speaks S3 (buckets, listing, ranged reads, uploads), Python's http.server serves
a folder. The outputs must equal a local scan of the same audio byte for byte (the events'
`source`, and the ids made from it, name the URL instead of the path), and a scan cut short on
S3 must score only what is missing."""

from __future__ import annotations

import contextlib
import functools
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.scenes import write_scene

NAMES = ["rec_20261122T100000.wav", "rec_20261122T110000.wav", "site2/rec_20261123T020000.wav"]
SUFFIXES = (".probabilities.csv", ".events.jsonl", "-predicted.csv")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real S3 server (moto) on a free port; the environment a scan needs to reach it."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    server.stop()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def s3fs_here() -> Any:
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True)


def soundwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def local_outputs(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def s3_outputs(prefix: str) -> dict[str, bytes]:
    fs = s3fs_here()
    return {name[len(prefix) + 1 :]: fs.cat_file(name) for name in sorted(fs.find(prefix))}


def comparable(outputs: dict[str, bytes], source_root: str) -> dict[str, bytes]:
    """The outputs with each event's `source` made relative to `source_root` and its id
    dropped (the id is a hash of the source): everything else must match byte for byte."""
    result = {}
    for name, data in outputs.items():
        if name.endswith(".events.jsonl"):
            lines = []
            for line in data.decode().splitlines():
                event = json.loads(line)
                assert event["source"].startswith(source_root), event["source"]
                event["source"] = event["source"][len(source_root) :]
                del event["id"]
                lines.append(json.dumps(event))
            data = "\n".join(lines).encode()
        result[name] = data
    return result


@pytest.fixture(scope="module")
def recordings(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("in")
    for k, name in enumerate(NAMES):
        write_scene(folder / name, seed=k)
    (folder / "notes.txt").write_text("not audio: not listed")
    return folder


@pytest.fixture(scope="module")
def local_scan(
    recordings: Path, tone_bundle: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("local") / "out"
    result = soundwatch(
        "scan", str(recordings), "--model", str(tone_bundle), "--out", str(out), "-q"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(local_outputs(out)) == sorted(
        [".soundwatch-scan.json"] + [n + s for n in NAMES for s in SUFFIXES]
    )
    return out


@pytest.fixture(scope="module")
def bucket(s3: dict[str, str], recordings: Path) -> str:
    fs = s3fs_here()
    fs.mkdir("field")
    fs.put(str(recordings) + "/", "field/archive/", recursive=True)
    fs.pipe_file("field/docs/readme.txt", b"no audio here")
    return "field"


def test_s3_to_s3_gives_the_local_outputs_and_resumes_what_is_missing(
    bucket: str, tone_bundle: Path, local_scan: Path, recordings: Path
) -> None:
    result = soundwatch("scan", "s3://field/archive/", "--model", str(tone_bundle),
                        "--out", "s3://field/out/", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 file(s) scored" in result.stderr
    expected = comparable(local_outputs(local_scan), str(recordings))
    assert comparable(s3_outputs("field/out"), "s3://field/archive") == expected

    # As after a kill: one file finished, one uploaded only in part, one never begun.
    fs = s3fs_here()
    fs.rm(f"field/out/{NAMES[1]}-predicted.csv")
    for suffix in SUFFIXES:
        fs.rm(f"field/out/{NAMES[2]}{suffix}")
    kept = fs.info(f"field/out/{NAMES[0]}.events.jsonl")["LastModified"]
    result = soundwatch("scan", "s3://field/archive/", "--model", str(tone_bundle),
                        "--out", "s3://field/out/", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "1 of 3 file(s) already scored" in result.stderr
    assert "2 file(s) scored" in result.stderr
    assert fs.info(f"field/out/{NAMES[0]}.events.jsonl")["LastModified"] == kept
    assert comparable(s3_outputs("field/out"), "s3://field/archive") == expected


def test_summarize_an_s3_out_as_a_local_one(
    bucket: str, tone_bundle: Path, local_scan: Path, tmp_path: Path
) -> None:
    result = soundwatch("scan", "s3://field/archive/", "--model", str(tone_bundle),
                        "--out", "s3://field/summarized/", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    here = soundwatch("summarize", str(local_scan), "--to", str(tmp_path / "local"))
    there = soundwatch("summarize", "s3://field/summarized/")
    assert here.returncode == 0 and there.returncode == 0, here.stderr + there.stderr
    assert "6 file(s) written to s3://field/summarized/summary" in there.stderr
    uploaded = s3_outputs("field/summarized/summary")
    for name in ("detections_per_hour.csv", "detections_per_day.csv", "coverage_per_day.csv"):
        assert uploaded[name] == (tmp_path / "local" / name).read_bytes()
    assert sorted(uploaded) == sorted(p.name for p in (tmp_path / "local").iterdir())


def test_s3_to_a_local_folder_on_two_dask_workers(
    bucket: str, tone_bundle: Path, local_scan: Path, recordings: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = soundwatch("scan", "s3://field/archive", "--model", str(tone_bundle),
                        "--out", str(out), "--workers", "2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "3 file(s) scored" in result.stderr
    expected = comparable(local_outputs(local_scan), str(recordings))
    assert comparable(local_outputs(out), "s3://field/archive") == expected


def test_a_local_folder_to_s3(
    s3: dict[str, str], tone_bundle: Path, local_scan: Path, recordings: Path
) -> None:
    s3fs_here().mkdir("results")
    result = soundwatch("scan", str(recordings), "--model", str(tone_bundle),
                        "--out", "s3://results/run1", "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert s3_outputs("results/run1") == local_outputs(local_scan)  # every byte


@contextlib.contextmanager
def serving(folder: Path) -> Iterator[str]:
    """A real HTTP server on a free port, serving `folder` with directory listings."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="http-folder", daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def http_folder(recordings: Path) -> Iterator[str]:
    with serving(recordings) as url:
        yield url


def test_an_http_folder_and_an_http_file(
    http_folder: str, tone_bundle: Path, local_scan: Path, recordings: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    result = soundwatch("scan", f"{http_folder}/", f"{http_folder}/site2/{Path(NAMES[2]).name}",
                        "--model", str(tone_bundle), "--out", str(out), "-q")  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = comparable(local_outputs(local_scan), str(recordings))
    assert comparable(local_outputs(out), http_folder) == expected  # the file is listed once


def test_a_file_that_cannot_be_downloaded_is_skipped_alone(
    recordings: Path, tone_bundle: Path, tmp_path: Path
) -> None:
    """The folder lists a file the server then cannot send (a dangling link: 404)."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / NAMES[0]).write_bytes((recordings / NAMES[0]).read_bytes())
    (folder / "rec_20261122T120000.wav").symlink_to(tmp_path / "gone.wav")
    out = tmp_path / "out"
    with serving(folder) as url:
        result = soundwatch("scan", f"{url}/", "--model", str(tone_bundle), "--out", str(out), "-q")
    assert result.returncode == 1, result.stderr
    assert (
        f"skipped: {url}/rec_20261122T120000.wav: cannot download it (not found)" in result.stderr
    )
    assert "1 file(s) scored" in result.stderr and "1 skipped" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [".soundwatch-scan.json"] + [NAMES[0] + s for s in SUFFIXES]
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["s3://no-such-bucket/x/"], "s3://no-such-bucket/x/: cannot list it"),
        (["s3://field/empty/"], "s3://field/empty/: cannot list it (not found)"),
        (["s3://field/docs/"], "s3://field/docs/: no audio files there"),
        (["http://127.0.0.1:9/x/"], "http://127.0.0.1:9/x/: cannot list it (Cannot connect"),
        (["nosuch://bucket/x/"], "nosuch://bucket/x/: Protocol not known: nosuch"),
        (["--out", "s3://no-such-bucket/out"], "s3://no-such-bucket/out: cannot use it as --out"),
        (["--start", "2026-11-22T10:00:00Z"], "--start: files at URLs are placed by the times"),
    ],
)
def test_bad_urls_are_one_line(
    bucket: str, tone_bundle: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
    inputs = [] if "://" in args[0] else ["s3://field/archive/"]
    result = soundwatch("scan", *inputs, *args, *out, "--model", str(tone_bundle), "-q")
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_an_unreachable_server_is_one_line(tone_bundle: Path, tmp_path: Path) -> None:
    result = soundwatch("scan", "s3://field/archive/", "--model", str(tone_bundle), "--out",
                        str(tmp_path / "out"), "-q",
                        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1",
                             "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x"})  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "s3://field/archive/: cannot list it (Could not connect" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_local_scan_never_imports_fsspec(
    recordings: Path, tone_bundle: Path, tmp_path: Path
) -> None:
    code = (
        "import sys; from edge.cli import main; rc = main(sys.argv[1:]);"
        " print('fsspec' in sys.modules, rc)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, "scan", str(recordings / "site2"), "--model",
         str(tone_bundle), "--out", str(tmp_path / "out"), "-q"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.stdout.split() == ["False", "0"], result.stderr
