"""What the `soundwatch` commands share: the config with the command line's overrides, the
model flags every command that runs a model takes, and logging."""

from __future__ import annotations

import argparse
import os
from dataclasses import replace
from pathlib import Path
from typing import get_args

from edge import schema
from edge.config import DEFAULT_CONFIG, Loaded, load_config
from edge.model.bundle import ModelFile
from edge.schema import Path_


def labels_arg(text: str) -> list[str]:
    """`--labels a, b,c` as ["a", "b", "c"]."""
    return [label.strip() for label in text.split(",") if label.strip()]


def config_from(
    args: argparse.Namespace, extra: dict[Path_, tuple[object, str]] | None = None
) -> Loaded:
    """The config named by -c, else /etc/soundwatch/config.yaml if present, else defaults,
    with the command line's overrides checked like the file's own values.

    `extra` adds a command's own overrides: key path -> (value, flag).
    """
    path = args.config
    if path is None and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    loaded = load_config(path)
    changes: dict[Path_, tuple[object, str]] = {}
    flags: list[tuple[str, str, Path_]] = [
        ("model", "--model", ("model", "path")),
        ("labels", "--labels", ("labels",)),
        ("model_file", "--model-file", ("model", "file")),
        ("threads", "--threads", ("model", "threads")),
        ("hop", "--hop", ("model", "hop_seconds")),
    ]
    for attr, flag, at in flags:
        # `is not None`, not truth: `--threads 0` is a value to refuse, not to ignore.
        value = getattr(args, attr, None)
        if value is not None:
            changes[at] = (model_path(value) if attr == "model" else value, flag)
    changes.update(extra or {})
    if not changes:
        return loaded
    return replace(loaded, config=schema.override(loaded.config, changes, loaded.where))


def model_path(value: str) -> str:
    """A folder given on the command line is taken from the current folder; a bare name that
    is no folder here stays a name, for model.path to find among the bundled models."""
    if Path(value).is_dir() or "/" in value or os.sep in value:
        return str(Path(value).expanduser().resolve())
    return value


def log_at(level: str) -> None:
    """Logging at `level` (imported late: `soundwatch --help` need not load it)."""
    from edge.ops.logs import setup_logging

    setup_logging(level)


def add_common(q: argparse.ArgumentParser) -> None:
    """The flags of every command that runs a model: config, model and its overrides."""
    q.add_argument(
        "-c", "--config", type=Path, help=f"config file (default: {DEFAULT_CONFIG} if present)"
    )
    q.add_argument(
        "--model",
        help="model bundle folder, or the name of a bundled model (overrides model.path)",
    )
    q.add_argument("--labels", type=labels_arg, help="keep only these labels, comma-separated")
    q.add_argument(
        "--model-file",
        choices=get_args(ModelFile),
        help="which model file of the bundle to run (default: auto)",
    )
    q.add_argument("--threads", type=int, help="inference threads (default: 1)")
    q.add_argument("--hop", type=float, help="stride between windows, s (default: the bundle's)")
    q.add_argument("-v", "--verbose", action="store_true", help="debug logging")
