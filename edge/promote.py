"""`soundwatch promote <bundle>` and `soundwatch rollback`: change the deployed bundle.

Promoting rewrites `model.path` in the config file (only that value, so comments and layout
stay), after checking that the bundle loads and that the config's labels and event rules fit
it; the daemon takes it up on SIGHUP (the reload that exists, edge/reload.py), without a break
in listening. Each change is one line of `<config>.models` beside the config (UTC time,
previous path, new path); `rollback` puts back the previous path of the last line, and itself
adds a line, so a second rollback undoes the first. The bundle folders themselves are never
touched: the previous one stays where it was.
"""

from __future__ import annotations

import os
import re
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from edge.builders import bundle_folder, label_setups
from edge.config import load_config
from edge.errors import ConfigError
from edge.model.bundle import load_bundle


def history_path(config: Path) -> Path:
    return config.with_name(config.name + ".models")


def promote(config: Path, bundle: str) -> tuple[str, str]:
    """Point `model.path` of `config` at `bundle`; returns (previous, new) as written."""
    loaded = load_config(config)
    previous = loaded.config.model.path
    model = replace(loaded.config.model, path=bundle)
    checked = replace(loaded, config=replace(loaded.config, model=model))
    label_setups(checked, load_bundle(bundle_folder(bundle, loaded.resolve)))  # or it raises
    text = config.read_text(encoding="utf-8")
    line = loaded.where.lines.get(("model", "path"))
    if line is None:
        if ("model",) in loaded.where.lines:
            at = loaded.where.where(("model",))
            raise ConfigError(f"{at}: add `path:` under model to promote")
        text = text.rstrip("\n") + f"\nmodel:\n  path: {_quoted(bundle)}\n"
    else:
        lines = text.splitlines(keepends=True)
        value = r"(\bpath\s*:\s*)(\"[^\"]*\"|'[^']*'|[^\s,}#]+)"
        new, n = re.subn(value, lambda m: m.group(1) + _quoted(bundle), lines[line - 1], count=1)
        if n != 1:
            at = loaded.where.where(("model", "path"))
            raise ConfigError(f"{at}: cannot find the value to replace")
        lines[line - 1] = new
        text = "".join(lines)
    partial = config.with_name(f".{config.name}.promote-{os.getpid()}")
    partial.write_text(text, encoding="utf-8")
    if load_config(partial).config.model.path != bundle:  # never leave a config that lies
        partial.unlink()
        raise ConfigError(f"{config}: model.path could not be rewritten; change it by hand")
    os.replace(partial, config)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    with history_path(config).open("a", encoding="utf-8") as f:
        f.write(f"{stamp}\t{previous}\t{bundle}\n")
    return previous, bundle


def rollback(config: Path) -> tuple[str, str]:
    """Put back the model the last promote (or rollback) replaced."""
    history = history_path(config)
    lines = history.read_text(encoding="utf-8").splitlines() if history.is_file() else []
    if not lines:
        raise ConfigError(f"{history}: no promotion recorded: nothing to roll back to")
    _, previous, _ = lines[-1].split("\t")
    return promote(config, previous)


def _quoted(value: str) -> str:
    """`value` as a YAML scalar that stays a string."""
    if re.fullmatch(r"[A-Za-z0-9_./~-]+", value):
        return value
    return "'" + value.replace("'", "''") + "'"
