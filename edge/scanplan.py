"""What a scan still has to do, so that one run again after a kill scores only what is missing.

A file's outputs are renamed from `*.partial` when the file is done, so a file whose three
outputs exist is done. `--out` holds `.soundwatch-scan.json`, naming the model (the bundle's
name, version and the sha256 of its manifest and of the model file run) and the settings that
shape the outputs; a run with another model or other settings is refused rather than mixing two
models' results in one folder.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from edge.audio.files import AudioFile
from edge.audio.streams import anchor_for
from edge.errors import AudioError, ConfigError

MANIFEST = ".soundwatch-scan.json"
OUTPUT_SUFFIXES = (".probabilities.csv", ".events.jsonl", "-predicted.csv")


@dataclass(frozen=True)
class Plan:
    todo: dict[Path, Path]  # input file -> output base, in the order given
    done: int  # files whose outputs are already there


def identity(bundle_folder: Path, model_file: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """What makes two scans' outputs comparable: the exact model and the output settings."""

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    return {
        "manifest_sha256": sha(bundle_folder / "manifest.yaml"),
        "model_file": model_file.name,
        "model_sha256": sha(model_file),
        **settings,
    }


def plan(bases: dict[Path, Path], out: Path, scan_identity: dict[str, Any]) -> Plan:
    """The files still to score; writes the manifest on a first run, refuses a different one."""
    path = out / MANIFEST
    if path.exists():
        try:
            recorded = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: unreadable scan manifest ({exc}); remove it") from None
        if recorded != scan_identity:
            changed = sorted(k for k in {*recorded, *scan_identity}
                             if recorded.get(k) != scan_identity.get(k))  # fmt: skip
            raise ConfigError(
                f"{out}: holds a scan with another model or settings ({', '.join(changed)}"
                " differ): choose another --out, or empty this one"
            )
    else:
        out.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(path.name + ".partial")
        temporary.write_text(json.dumps(scan_identity, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    todo = {f: b for f, b in bases.items() if not is_done(b)}
    return Plan(todo, len(bases) - len(todo))


def is_done(base: Path) -> bool:
    return all(base.with_name(base.name + suffix).exists() for suffix in OUTPUT_SUFFIXES)


def anchors(files: list[Path], start: datetime | None) -> dict[Path, datetime | None]:
    """Each file's absolute start as a one-process scan gives it (edge.audio.streams
    .file_streams): the time in its name; else, with `start`, where the file before it ended
    (the first: `start`); else none. From the headers alone, so workers and a resumed scan
    anchor every file as an uninterrupted run does."""
    out: dict[Path, datetime | None] = {}
    following = start
    for path in files:
        try:
            with AudioFile.open(path) as audio:
                seconds = audio.duration_seconds
        except AudioError:
            out[path] = None  # skipped by the scan, with its reason
            continue
        anchor = anchor_for(path, start, following)
        out[path] = anchor
        if anchor is not None:
            following = anchor + timedelta(seconds=seconds)
    return out
