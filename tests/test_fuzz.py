"""Seeded fuzzing of what users hand the daemon: configs, bundle manifests and audio files
(issue 13, "prove it"). The property, for every mutated input: it loads, or the loader raises
the project's own error whose every line names the file (and, for YAML, the line); never
another exception, never a hang.

Each case is a seed, so a failure names the seed that reproduces it; seeds that ever found a
bug are kept in `FOUND` and run first. Counts of cases tried, clean errors and accepted
inputs are printed with `-s`.
"""

from __future__ import annotations

import random
import shutil
import signal
import struct
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from edge.audio.files import AudioFile
from edge.config import load_config
from edge.errors import SoundwatchError
from edge.model.bundle import load_bundle
from tests.audio import write_wav

CASES = 300  # per kind; about 10 s in all
CASE_SECONDS = 5  # one case longer than this is a hang
# Seeds that once found a bug, run first (and kept whatever CASES becomes):
FOUND = {
    "config": [5],  # a NUL character: PyYAML's two-line reader error (now one line)
    "manifest": [224],  # a 5,000-character model file name: OSError ENAMETOOLONG (now refused)
    "audio header": [],
}

JUNK: list[Any] = [
    -1, 0, 1, -1e300, 1e300, 10**12, float("nan"), float("inf"), 0.5, True, None, "", "x",
    "../../etc", "a/b", "#+", "\u00e9\u4e2d", "x" * 5000, [], [1, 2], {}, {"a": 1}, "null",
    "2026-13-45T99:00:00Z", "0x10", "1e9", "-0", [None], {"": None},
]  # fmt: skip

VALID_CONFIG: dict[str, Any] = {
    "model": {"path": "tone", "threads": 1, "batch_windows": 16, "hop_seconds": 0.1},
    "source": {"kind": "demo", "channels": 1, "buffer_seconds": 30, "block_seconds": 0.1},
    "events": {"threshold": 0.5, "median_windows": 3, "labels": {"tone-1k": {"threshold": 0.7}}},
    "output": {"dir": "out", "device_id": "box", "print": "none"},
    "levels": {"enabled": True, "bands": "octave"},
    "clips": {"enabled": False, "pre_roll_seconds": 2},
    "mqtt": {"host": None, "port": 1883},
    "metrics": {"enabled": False},
    "log_level": "info",
}


@contextmanager
def time_limit(seconds: int, what: str) -> Iterator[None]:
    def hang(signum: int, frame: object) -> None:
        raise AssertionError(f"{what}: still running after {seconds} s (a hang)")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def paths_of(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path in nested dicts and lists."""
    out = [prefix] if prefix else []
    if isinstance(data, dict):
        for k, v in data.items():
            out += paths_of(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            out += paths_of(v, (*prefix, i))
    return out


def mutate_data(data: Any, rng: random.Random) -> Any:
    """A copy of `data` with 1-3 values replaced, keys removed or unknown keys added."""
    data = yaml.safe_load(yaml.safe_dump(data))
    for _ in range(rng.randint(1, 3)):
        path = rng.choice(paths_of(data))
        parent = data
        for part in path[:-1]:
            parent = parent[part]
        action = rng.random()
        if action < 0.7:
            parent[path[-1]] = rng.choice(JUNK)
        elif action < 0.85 and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[rng.choice(["speeed", "x", "", "1"])] = rng.choice(JUNK)
    return data


def mutate_text(text: str, rng: random.Random) -> str:
    """Text-level damage: cut, a character inserted or replaced, a line repeated."""
    action = rng.random()
    if action < 0.3:
        return text[: rng.randrange(len(text))]
    i = rng.randrange(len(text))
    if action < 0.6:
        return text[:i] + rng.choice(":-[]{}&*!|>'\"\t\n#%@`\u00a0\x00") + text[i:]
    if action < 0.8:
        lines = text.splitlines(keepends=True)
        k = rng.randrange(len(lines))
        return "".join([*lines[: k + 1], lines[k], *lines[k + 1 :]])
    return text[:i] + text[i + 1 :]


def dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def check_error(error: SoundwatchError, path: Path) -> None:
    """Every line names the file: `<path>:<line>: ...` or `<path>: ...`."""
    text = str(error)
    assert text.strip(), "an empty error"
    for line in text.splitlines():
        assert line.startswith(str(path)) or line.split(":", 1)[0] in (
            "model", "mqtt", "source", "output", "levels", "clips", "events", "metrics",
        ), f"a line that does not say where: {line!r}"  # fmt: skip


def run_cases(kind: str, case: Callable[[int], bool]) -> None:
    tally: Counter[str] = Counter()
    for seed in [*FOUND[kind], *range(CASES)]:
        with time_limit(CASE_SECONDS, f"{kind} seed {seed}"):
            try:
                accepted = case(seed)
            except AssertionError as exc:
                raise AssertionError(f"{kind} seed {seed}: {exc}") from None
        tally["accepted" if accepted else "refused in one line each"] += 1
    print(f"fuzz {kind}: {sum(tally.values())} cases, {dict(tally)}")


def yaml_cases(kind: str, valid: Any, path: Path, load: Callable[[], object]) -> None:
    """Mutations of `valid` written to `path`, loaded by `load`: loaded, or refused with the
    project's error naming `path` on every line; anything else fails naming the seed."""

    def case(seed: int) -> bool:
        rng = random.Random(seed)
        text = dump(mutate_data(valid, rng))
        if rng.random() < 0.4:
            text = mutate_text(text, rng)
        path.write_text(text, encoding="utf-8")
        try:
            load()
        except SoundwatchError as exc:
            check_error(exc, path)
            return False
        except Exception as exc:  # the property: nothing else, ever
            raise AssertionError(f"{type(exc).__name__}: {exc}\n{text}") from exc
        return True

    run_cases(kind, case)


def test_mutated_configs_load_or_say_where(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    yaml_cases("config", VALID_CONFIG, path, lambda: load_config(path))


def test_mutated_manifests_load_or_say_where(tone_bundle: Path, tmp_path: Path) -> None:
    folder = Path(shutil.copytree(tone_bundle, tmp_path / "tone"))
    manifest = folder / "manifest.yaml"
    valid = yaml.safe_load(manifest.read_text())
    yaml_cases("manifest", valid, manifest, lambda: load_bundle(folder))


def test_mutated_audio_headers_read_or_say_which_file(tmp_path: Path) -> None:
    clean = tmp_path / "clean.wav"
    rng0 = np.random.default_rng(0)
    write_wav(clean, (0.1 * rng0.standard_normal(8000)).astype(np.float32), 8000)
    original = clean.read_bytes()
    path = tmp_path / "rec.wav"

    def case(seed: int) -> bool:
        rng = random.Random(seed)
        data = bytearray(original)
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(64)  # the RIFF header and the fmt chunk
            width = rng.choice([1, 2, 4])
            value = rng.choice([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, rng.getrandbits(32)])
            data[where : where + width] = struct.pack("<I", value)[:width]
        if rng.random() < 0.3:
            data = data[: rng.randrange(len(data))]
        path.write_bytes(bytes(data))
        try:
            with AudioFile.open(path) as audio:
                for _ in audio.blocks(1024):
                    pass
        except SoundwatchError as exc:
            assert str(path) in str(exc), f"seed {seed}: {exc}"
            return False
        except Exception as exc:
            raise AssertionError(f"seed {seed}: {type(exc).__name__}: {exc}") from exc
        return True

    run_cases("audio header", case)


def test_a_folder_of_mutated_recordings_scans_without_a_traceback(
    tone_bundle: Path, tmp_path: Path
) -> None:
    """The loaders' property through the command line: 60 damaged copies of a recording and
    one good one in a folder; `scan` scores what it can, skips the rest with a reason each
    (exit 1), prints no traceback, and the good file keeps its outputs."""
    import subprocess
    import sys

    from tests.scenes import check_against_truth, events_from_jsonl, write_scene

    folder = tmp_path / "in"
    good = write_scene(folder / "a_good.wav")
    original = good.read_bytes()
    for seed in range(60):
        rng = random.Random(seed)
        data = bytearray(original[:4096] if seed % 3 == 0 else original)
        for _ in range(rng.randint(1, 4)):
            where = rng.randrange(64)
            data[where : where + 4] = struct.pack("<I", rng.getrandbits(32))
        (folder / f"m{seed:02d}.wav").write_bytes(bytes(data))
    result = subprocess.run(
        [sys.executable, "-m", "edge.cli", "scan", str(folder), "--model", str(tone_bundle),
         "--out", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    skipped = [line for line in result.stderr.splitlines() if "skipped:" in line]
    assert all(f"{folder}/m" in line for line in skipped)
    check_against_truth(events_from_jsonl(tmp_path / "out" / "a_good.wav.events.jsonl"))
    print(f"fuzz scan: 61 files, {len(skipped)} skipped with a reason, no traceback")
