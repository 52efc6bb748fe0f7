"""Print the config reference table for the README, from the config dataclasses' help texts.

    .venv/bin/python scripts/config_reference.py [--write]

tests/test_readme.py checks the README holds exactly this table, so the two never drift.
"""

from __future__ import annotations

import sys
from pathlib import Path

from edge.config import Config
from edge.schema import describe


def reference_table() -> str:
    lines = ["| key | default | range | meaning |", "| --- | --- | --- | --- |"]
    for key, default, help_text, allowed in describe(Config):
        lines.append(f"| `{key}` | `{default}` | {allowed} | {help_text} |")
    return "\n".join(lines) + "\n"


def write_readme(readme: Path) -> None:
    """Replace the README's reference block with the current table."""
    begin, end = "<!-- config-reference:", "<!-- end config-reference -->"
    text = readme.read_text()
    head, rest = text.split(begin, 1)
    marker, _ = rest.split("\n", 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}{marker}\n{reference_table()}{end}{tail}")


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_readme(Path(__file__).resolve().parent.parent / "README.md")
    else:
        print(reference_table(), end="")
