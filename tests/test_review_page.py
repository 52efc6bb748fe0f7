"""The review page in a real headless Chromium (Debian's, through its chromedriver), served by
`soundwatch review` as a subprocess over a real scan of a recording with known events.

One browser for the module (the `browser` fixture, tests/conftest.py). Screenshots go to the
pytest tmp folder.
"""

from __future__ import annotations

import json
import select
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.scenes import TRUTH
from trainer.annotations import load_songexplorer


@pytest.fixture(scope="module")
def folder(scanned_scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return Path(shutil.copytree(scanned_scene, tmp_path_factory.mktemp("page") / "out"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(folder: Path, port: int, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """`soundwatch review` on `port`, returned once it says it listens."""
    import os

    server = subprocess.Popen(
        [sys.executable, "-m", "edge.cli", "review", str(folder), "--port", str(port)],
        stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert server.stderr is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stderr], [], [], 1.0)
        if ready and "review of" in server.stderr.readline():
            return server
        assert server.poll() is None, server.stderr.read()
    raise AssertionError("soundwatch review did not start in 30 s")


def stop(server: subprocess.Popen[str]) -> None:
    server.terminate()
    assert server.wait(timeout=10) == 0


def wait_for(driver: WebDriver, script: str, timeout: float = 15.0) -> object:
    """Poll a JS expression until it is truthy; its value."""
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout).until(lambda d: d.execute_script(f"return {script}"))


def verdict_cells(driver: WebDriver) -> list[str]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#events td.verdict')].map(td => td.textContent)"
        )
    )


def test_detections_show_spectrogram_and_audio_and_triage_survives_a_restart(
    browser: WebDriver, folder: Path, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    port = free_port()
    server = start(folder, port)
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(driver, f"document.querySelectorAll('#events tbody tr').length === {len(TRUTH)}")
        events = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/api/events").read())
        labels = [
            row.text.split("\n")[0]
            for row in driver.find_elements(By.CSS_SELECTOR, "#events tbody tr td:nth-child(3)")
        ]
        assert labels == [e["label"] for e in events]
        # The first spectrogram decodes: 128 rows, about 100 columns per second of excerpt.
        width = wait_for(
            driver, "(i => i.complete && i.naturalWidth)(document.querySelector('img.spec'))"
        )
        first = events[0]
        excerpt_seconds = first["end_offset"] - first["start_offset"] + 2.0  # 1 s roll each side
        assert width == pytest.approx(100 * excerpt_seconds, abs=6)
        assert (
            driver.execute_script("return document.querySelector('img.spec').naturalHeight") == 128
        )
        duration = wait_for(
            driver, "(a => a.readyState >= 1 && a.duration)(document.querySelector('audio'))"
        )
        assert duration == pytest.approx(excerpt_seconds, abs=0.01)

        body = driver.find_element(By.TAG_NAME, "body")
        # Typed faster than the server answers: each key judges the next event (a verdict
        # moves the selection on at once, not when it is saved).
        body.send_keys("y", "n")
        wait_for(
            driver, "document.querySelectorAll('#events td.verdict')[1].textContent === 'wrong'"
        )
        assert verdict_cells(driver)[:2] == ["right", "wrong"]
        body.send_keys("j")  # skip the third
        body.send_keys("n")
        wait_for(
            driver, "document.querySelectorAll('#events td.verdict')[3].textContent === 'wrong'"
        )
        body.send_keys("k", "u")  # back to the fourth, undo
        wait_for(driver, "document.querySelectorAll('#events td.verdict')[3].textContent === ''")
        driver.save_screenshot(str(tmp_path / "detections.png"))
    finally:
        stop(server)

    server = start(folder, port)  # a restart: the verdicts come back from review.sqlite
    try:
        driver.get(f"http://127.0.0.1:{port}/")
        wait_for(driver, f"document.querySelectorAll('#events tbody tr').length === {len(TRUTH)}")
        assert verdict_cells(driver) == ["right", "wrong", "", "", "", ""]
        driver.find_elements(By.CSS_SELECTOR, "#events tbody tr td:nth-child(3)")[2].click()
        driver.find_element(By.TAG_NAME, "body").send_keys("r")  # opens the relabel box
        box = driver.find_element(By.CSS_SELECTOR, "#relabel input[name=label]")
        assert driver.switch_to.active_element == box
        box.send_keys("bird\n")
        wait_for(driver, "document.querySelectorAll('#events td.verdict')[2].textContent !== ''")
        assert verdict_cells(driver) == ["right", "wrong", "relabel → bird", "", "", ""]
        driver.find_element(By.CSS_SELECTOR, "select[name=verdict] option[value=wrong]").click()
        wait_for(driver, "document.querySelectorAll('#events tbody tr').length === 1")
        driver.find_element(By.ID, "export").click()
        wait_for(driver, "document.getElementById('status').textContent.startsWith('exported')")
    finally:
        stop(server)
    loaded = load_songexplorer(folder / "review-export")
    assert [(a.label, round(a.start_seconds, 2)) for a in loaded.annotations] == [
        ("tone-1k", round(events[0]["start_offset"], 2)),
        ("not_tone-3k", round(events[1]["start_offset"], 2)),
        ("bird", round(events[2]["start_offset"], 2)),
    ]


def test_coverage_and_model_pages(browser: WebDriver, folder: Path, tmp_path: Path) -> None:
    driver = browser
    port = free_port()
    server = start(folder, port)
    try:
        driver.get(f"http://127.0.0.1:{port}/#coverage")
        row = wait_for(driver, "document.querySelector('#coverage tbody tr')?.innerText")
        assert str(row).split("\t")[:4] == ["2026-11-22T10:00Z", "20", "0", "none"]
        driver.get(f"http://127.0.0.1:{port}/#model")
        rows = wait_for(
            driver, "[...document.querySelectorAll('#model tbody tr')].map(r => r.innerText)"
        )
        assert rows == ["tone\ttone-1k\t0.5\t3", "tone\ttone-3k\t0.5\t3"]
        driver.save_screenshot(str(tmp_path / "model.png"))
    finally:
        stop(server)


def test_a_wrong_token_and_a_path_out_of_the_folder_are_refused(
    browser: WebDriver, folder: Path
) -> None:
    driver = browser
    port = free_port()
    server = start(folder, port, {"SOUNDWATCH_REVIEW_TOKEN": "letmein"})
    try:
        base = f"http://127.0.0.1:{port}"
        driver.get(f"{base}/?token=wrong")
        assert "token missing or wrong" in driver.page_source
        status = driver.execute_script("return fetch('/api/events').then(r => r.status)")
        assert status == 401
        driver.get(f"{base}/?token=letmein")  # sets the cookie, then shows the page
        wait_for(driver, f"document.querySelectorAll('#events tbody tr').length === {len(TRUTH)}")
        status = driver.execute_script(
            "return fetch('/files/%2e%2e/%2e%2e/etc/passwd').then(r => r.status)"
        )
        assert status in (403, 404)
        text = driver.execute_script(
            "return fetch('/files/..%2f..%2fetc%2fpasswd').then(r => r.text())"
        )
        assert json.loads(text)["error"] in ("path leaves its folder", "no such file here")
    finally:
        stop(server)
