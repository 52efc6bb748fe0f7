"""The page served by a running daemon (`soundwatch run` with `web:` on, the demo's tone bursts
in real time, clips and levels on), in a real headless Chromium (the `browser` fixture).

One daemon run, then a restart with a token: detections appear on their own, their
spectrogram decodes and their audio is the clip; keyboard verdicts survive the restart; a wrong
token and paths out of the folders are refused; the Now page shades the seconds the daemon was
stopped; POST /api/infer scores a WAV with the daemon's bundle. Screenshots: the tmp folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import soundfile as sf
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.remote.webdriver import WebDriver

from edge.review.store import VerdictStore
from tests.scenes import TRUTH, Found, check_against_truth, write_scene
from tests.test_review_page import free_port, wait_for
from trainer.annotations import load_songexplorer

TOKEN = "letmein"


def start(config: Path, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """The daemon, returned once its page is up."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "-c", str(config)],
            stdout=subprocess.DEVNULL, stderr=err, text=True, env={**os.environ, **(env or {})},
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if "review page at" in log.read_text():
            return proc
        assert proc.poll() is None, log.read_text()
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the page did not come up in 60 s: {log.read_text()}")


def stop(proc: subprocess.Popen[str], log: Path) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0, log.read_text()


def test_the_daemon_page_from_detection_to_verdict_across_a_restart(
    browser: WebDriver, tone_bundle: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    port = free_port()
    out = tmp_path / "out"
    config = tmp_path / "config.yaml"
    config.write_text(
        f"model: {{path: {tone_bundle}}}\nsource: {{kind: demo}}\n"
        f"output: {{dir: {out}, device_id: box, print: none}}\n"
        "metrics: {enabled: false}\nlevels: {enabled: true}\n"
        "clips: {enabled: true, pre_roll_seconds: 1, post_roll_seconds: 1}\n"
        f"web: {{enabled: true, port: {port}, reviewer: tester}}\n"
    )
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "daemon.log"
    daemon = start(config, log)
    try:
        driver.get(f"{base}/#detections")
        # The demo's bursts come every few seconds; each shows once its clip is written.
        wait_for(driver, "document.querySelectorAll('#events tbody tr').length >= 2", 30)
        events = json.loads(urllib.request.urlopen(f"{base}/api/events").read())
        first = events[0]
        clip_seconds = sf.info(first["clip"]).duration
        width = wait_for(
            driver, "(i => i.complete && i.naturalWidth)(document.querySelector('img.spec'))"
        )
        assert width == pytest.approx(100 * clip_seconds, abs=6)
        duration = wait_for(
            driver, "(a => a.readyState >= 1 && a.duration)(document.querySelector('audio'))"
        )
        assert duration == pytest.approx(clip_seconds, abs=0.01)
        ids = [e["id"] for e in events[:2]]
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("y")
        wait_for(driver, f"document.querySelector('#events tr[data-id=\"{ids[0]}\"] .right')")
        body.send_keys("n")
        wait_for(driver, f"document.querySelector('#events tr[data-id=\"{ids[1]}\"] .wrong')")
        driver.save_screenshot(str(tmp_path / "detections.png"))
    finally:
        stop(daemon, log)

    time.sleep(3)  # the daemon is down for a while: the Now page must show those seconds
    daemon = start(config, log, {"SOUNDWATCH_REVIEW_TOKEN": TOKEN})
    try:
        driver.get(f"{base}/?token=wrong")
        assert "token missing or wrong" in driver.page_source
        assert driver.execute_script("return fetch('/api/events').then(r => r.status)") == 401
        driver.get(f"{base}/?token={TOKEN}#detections")  # sets the cookie, then the page
        wait_for(driver, f"document.querySelector('#events tr[data-id=\"{ids[1]}\"]')")
        cells = driver.execute_script(
            "return arguments[0].map(id => document.querySelector("
            "`#events tr[data-id='${id}'] td.verdict`).textContent)",
            ids,
        )
        assert cells == ["right", "wrong"]
        driver.find_element(By.ID, "export").click()
        wait_for(driver, "document.getElementById('status').textContent.startsWith('exported')")
        for path in ("/files/%2e%2e/%2e%2e/etc/passwd", "/files/..%2f..%2fconfig.yaml",
                     "/api/clips/..%2f..%2fetc%2fpasswd", "/media/..%2fclips.wav"):  # fmt: skip
            status = driver.execute_script(f"return fetch('{path}').then(r => r.status)")
            assert status in (403, 404), path

        driver.get(f"{base}/#now")
        # Analysed, then the seconds it was stopped, then analysed again (once rows are in); the
        # stop and the restart may leave a partial second (edge), and a loaded machine a gap
        # of its own reason, on either side.
        around = "((edge|gap:[a-z]+),)*"
        pattern = f"/analysed,{around}gap:not running,{around}analysed/"
        spans = "[...document.querySelectorAll('#timeline span')].map(s => s.dataset.status)"
        try:
            wait_for(driver, f"{pattern}.test({spans}.join())", 30)
        except TimeoutException:
            pytest.fail(f"the Now page's timeline: {driver.execute_script(f'return {spans}')}")
        statuses = driver.execute_script(f"return {spans}")
        stopped = statuses.index("gap:not running", 1)  # the hour before the first start is 0
        shading = driver.execute_script(
            "const s = document.querySelectorAll('#timeline span');"
            f"return [getComputedStyle(s[{stopped}]).backgroundImage,"
            f" getComputedStyle(s[{statuses.index('analysed')}]).backgroundColor]"
        )
        assert (
            shading[0].startswith("repeating-linear-gradient") and shading[1] == "rgb(68, 170, 68)"
        )
        daemon_line = wait_for(driver, "document.getElementById('daemon').textContent")
        assert str(daemon_line).startswith("tone 2026.11.22 · up ") and "MQTT off" in str(
            daemon_line
        )
        wait_for(driver, "document.querySelectorAll('#top li').length === 2")
        driver.save_screenshot(str(tmp_path / "now.png"))

        wav = write_scene(tmp_path / "scene.wav")
        request = urllib.request.Request(
            f"{base}/api/infer", data=wav.read_bytes(), method="POST",
            headers={"Content-Type": "audio/wav", "Authorization": f"Bearer {TOKEN}"},
        )  # fmt: skip
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        found = [Found(e["label"], e["start_offset"], e["end_offset"]) for e in answer["events"]]
        assert len(found) == len(TRUTH)
        check_against_truth(found)
    finally:
        stop(daemon, log)
    store = VerdictStore(out / "review.sqlite")
    verdicts = store.all()
    store.close()
    assert [(verdicts[i].verdict, verdicts[i].reviewer) for i in ids] == [
        ("right", "tester"),
        ("wrong", "tester"),
    ]
    # The export references each clip, the event 1 s (the pre-roll) into it.
    exported = load_songexplorer(out / "review-export").annotations
    labels = {e["id"]: e["label"] for e in events}
    assert sorted((a.label, a.start_seconds) for a in exported) == sorted(
        [(labels[ids[0]], pytest.approx(1.0, abs=1e-3)),
         (f"not_{labels[ids[1]]}", pytest.approx(1.0, abs=1e-3))]
    )  # fmt: skip
