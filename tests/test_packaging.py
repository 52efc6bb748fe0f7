"""The wheel: built from this checkout, installed into a fresh venv, run from an unrelated folder.

A `pip install --user` once failed with "flysong: no such bundle folder" because the bundled
models were looked up in the working folder; here the installed command must find them (and the
MQTT payload schemas) as package data, wherever it runs.
"""

from __future__ import annotations

import email
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What a wheel is built from; copied, so the build's egg-info and build/ stay out of the checkout.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "edge", "trainer", "models", "schemas")
BUNDLES = sorted(p.name for p in (ROOT / "models").iterdir() if (p / "manifest.yaml").is_file())
SCHEMAS = sorted(p.name for p in (ROOT / "schemas").glob("*.schema.json"))


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """pyproject.toml lists its packages (`find` cannot see the ones mapped onto models/ and
    schemas/): a new package folder or bundle left out of the list would be left out of the
    wheel, silently."""
    tomllib = pytest.importorskip("tomllib")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    folders = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in ("edge", "trainer")
        for p in (ROOT / top).rglob("__init__.py")
    }
    folders |= {"edge.bundled", "edge.payload_schemas"} | {f"edge.bundled.{b}" for b in BUNDLES}
    assert sorted(folders - listed) == []
    assert sorted(listed - folders) == []


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in SOURCES:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=skip)
        else:
            shutil.copy2(path, src / name)
    # No build isolation: this venv's setuptools builds it, so no package index is needed.
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", out, src],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    # setuptools warns about license tables, unlisted packages, missing files: none expected.
    assert "Warning" not in built.stderr, built.stderr[-3000:]
    (found,) = out.glob("soundwatch-*.whl")
    return found


def test_wheel_carries_models_schemas_license_and_metadata(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        (meta_name,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = email.message_from_bytes(z.read(meta_name))
        license_text = next(z.read(n) for n in names if n.endswith(".dist-info/licenses/LICENSE"))
    for bundle in BUNDLES:
        for file in (ROOT / "models" / bundle).iterdir():
            assert f"edge/bundled/{bundle}/{file.name}" in names
    assert [n for n in SCHEMAS if f"edge/payload_schemas/{n}" not in names] == []
    page = {f"edge/review/assets/{n}" for n in ("index.html", "review.js", "review.css")}
    assert sorted(page - names) == []  # the review page works offline, from the wheel
    assert b"Apache License\n                           Version 2.0" in license_text
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta["Requires-Python"] == ">=3.10"  # no upper cap: Python 3.13 installs it
    requires = meta.get_all("Requires-Dist") or []
    onnx = next(r for r in requires if r.startswith("onnxruntime"))
    assert 'platform_machine != "armv7l"' in onnx  # a TFLite-only install works on 32-bit Arm
    assert any(r.startswith("tqdm") for r in requires)


@pytest.mark.slow
def test_installed_wheel_finds_bundled_models_from_any_folder(wheel: Path, tmp_path: Path) -> None:
    """Install the wheel (no dependencies: this venv's are made visible) into a fresh venv and
    run `soundwatch check` from a folder with no models/ in it."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # only what is installed
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
    installed = subprocess.run([*pip, wheel], env=env, capture_output=True, text=True, check=False)
    assert installed.returncode == 0, installed.stderr[-3000:]
    # This venv's packages (numpy, onnxruntime, ...) after the new venv's own: a plain path in a
    # .pth file, so this venv's editable install of the checkout is not picked up.
    (Path(purelib) / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")

    work = tmp_path / "elsewhere"
    work.mkdir()
    bundled = Path(purelib) / "edge" / "bundled"

    def soundwatch(*args: str) -> str:
        done = subprocess.run(
            [venv / "bin" / "soundwatch", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    checked = soundwatch("check", "--model", "flysong")
    assert f"model flysong 2026.12.05.2008 ({bundled / 'flysong'})" in checked
    (work / "config.yaml").write_text("model: {path: tone}\n")
    assert f"({bundled / 'tone'})" in soundwatch("check", "-c", "config.yaml")

    schemas = subprocess.run(
        [
            python,
            "-c",
            "import importlib.resources as r;"
            "print(sorted(p.name for p in r.files('edge.payload_schemas').iterdir()))",
        ],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert all(name in schemas for name in SCHEMAS)
