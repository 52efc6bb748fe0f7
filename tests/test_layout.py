"""The package reads as the pipeline: no module imports from a stage above its own.

    foundation (errors, clock, yamlfile, schema, records, threads)  <  audio  <  model  <  detection
    <  outputs  <  ops  <  the wiring at the top (config, builders, pipeline, app, scan, bench, cli)

Imports inside functions count too: a lazy import pointing up is still a circle waiting to
happen. And the edge never imports the trainer or torch (a Pi does not install them).
"""

from __future__ import annotations

import ast
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"
FOUNDATION = {
    "edge",
    "edge.errors",
    "edge.clock",
    "edge.yamlfile",
    "edge.schema",
    "edge.records",
    "edge.threads",
}
STAGES = ["audio", "model", "detection", "outputs", "ops"]


def rank(module: str) -> int:
    """0 for the foundation, 1.. for the stages in pipeline order, the most for the wiring."""
    if module in FOUNDATION:
        return 0
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in STAGES:
        return 1 + STAGES.index(parts[1])
    return 1 + len(STAGES)


def module_name(path: Path) -> str:
    parts = path.relative_to(EDGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, relative ones resolved."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module_name(path).split(".")
                if path.name != "__init__.py":
                    package = package[:-1]
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            if base == "edge":  # from edge import schema: the submodule is what is imported
                found += [(node.lineno, f"edge.{alias.name}") for alias in node.names]
    return found


def test_no_module_imports_from_a_stage_above_it() -> None:
    upward = []
    for path in sorted(EDGE.rglob("*.py")):
        me = module_name(path)
        for line, target in imports(path):
            if target.split(".")[0] != "edge" or target == "edge.__version__":
                continue
            if rank(target) > rank(me):
                upward.append(f"{path.relative_to(EDGE.parent)}:{line}: {me} imports {target}")
    assert upward == []


def test_the_edge_never_imports_the_trainer_or_torch() -> None:
    bad = [
        f"{path.relative_to(EDGE.parent)}:{line}: {target}"
        for path in sorted(EDGE.rglob("*.py"))
        for line, target in imports(path)
        if target.split(".")[0] in {"trainer", "torch"}
    ]
    assert bad == []


def test_every_stage_is_a_package_and_the_ranks_hold_for_a_known_case() -> None:
    # The check above must be able to fail: an outputs module importing the top-level config
    # is exactly what it exists to catch.
    assert rank("edge.outputs.mqtt.sink") > rank("edge.detection.events")
    assert rank("edge.config") > rank("edge.outputs.mqtt.sink")
    assert rank("edge.records") < rank("edge.audio.levels")
    for stage in STAGES:
        assert (EDGE / stage / "__init__.py").is_file()


def test_only_the_command_line_and_the_app_import_the_review_page() -> None:
    # The review server sits beside the daemon, not in its pipeline: nothing below the wiring
    # may lean on it, so a device can run without ever importing it. Preflight checks the
    # page's token (web: on only), so `soundwatch check` refuses what `run` would.
    allowed = {"edge.cli", "edge.cli_review", "edge.app", "edge.preflight"}
    bad = [
        f"{path.relative_to(EDGE.parent)}:{line}: {target}"
        for path in sorted(EDGE.rglob("*.py"))
        if not module_name(path).startswith("edge.review") and module_name(path) not in allowed
        for line, target in imports(path)
        if target == "edge.review" or target.startswith("edge.review.")
    ]
    assert bad == []
