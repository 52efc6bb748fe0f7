"""What a bundle says about itself: its provenance and the model card.

The card (`README.md` in the bundle) is for people choosing or auditing a model: which data,
which settings, what each file measured on validation through the edge's runtime, the exact
command that made it, and the licence of the data.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import yaml

import edge

if TYPE_CHECKING:
    from trainer.export import ExportReport


def provenance(data_description: str) -> dict[str, Any]:
    """Data, trainer version, git commit of this checkout (when there is one), UTC time."""
    out: dict[str, Any] = {"data": data_description, "trainer": f"soundwatch {edge.__version__}"}
    commit = git_commit()
    if commit:
        out["commit"] = commit
    out["created"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return out


def git_commit() -> str | None:
    """HEAD of the checkout the trainer runs from, `+dirty` with uncommitted changes; or None."""
    here = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10
        )
        if head.returncode:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if status.stdout.strip() else "")


def plain(value: Any) -> Any:
    """`value` in plain YAML/JSON types: numpy scalars and arrays, tuples, paths; NaN -> None."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def _f1(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def model_card(
    manifest: dict[str, Any],
    report: ExportReport,
    data_description: str,
    command: str,
    licence: str,
) -> str:
    """The bundle's README.md (Markdown) from its manifest and the export's measurements."""
    m = manifest
    labels: list[str] = m["labels"]
    f = m["frontend"]
    window_ms = 1000 * m["window_seconds"]
    hop_ms = 1000 * m["hop_seconds"]
    lines = [
        f"# {m['name']} {m['version']}",
        "",
        f"Labels ({m['task']}, output order): {', '.join(f'`{x}`' for x in labels)}. "
        f"Audio at {m['sample_rate']} Hz, windows of {window_ms:g} ms every {hop_ms:g} ms, "
        + ("raw waveform input" if f["kind"] == "waveform" else f"{f['n_mels']}-band log-mel input")
        + ". Trained and exported with `soundwatch-train`.",
        *_backbone_lines(m.get("backbone")),
        "",
        "## Data",
        "",
        data_description.strip() or "(not described)",
        "",
        f"**Licence of the data:** {licence}",
        "",
        "## Settings",
        "",
        _frontend_line(f),
        "- thresholds: " + ", ".join(f"`{k}` {v:.3f}" for k, v in m["thresholds"].items()),
        f"- threshold rule: {_inline(m['threshold_rule'])}",
        f"- event defaults: {_inline(m['events'])}",
        "",
        f"## Measured on validation ({report.validation_windows} windows)",
        "",
        "Each file run through soundwatch's own runtime and compared with the PyTorch model: "
        "largest score difference, share of decisions at the thresholds that agree, and F1 per "
        "label at the thresholds.",
        "",
        "| file | size | max diff | decisions agree | "
        + " | ".join(f"F1 {x}" for x in labels)
        + " |",
        "|---|---:|---:|---:|" + "---:|" * len(labels),
        "| PyTorch fp32 | | | | " + " | ".join(_f1(report.reference_f1[x]) for x in labels) + " |",
    ]
    for c in report.checks:
        lines.append(
            f"| `{c.path}` ({c.key}) | {c.size_bytes / 1024:.1f} KB | {c.max_abs_diff:.4f} | "
            f"{c.agreement:.2%} | " + _row(_f1(c.f1[x]) for x in labels)
        )
    trainer_metrics = {k: v for k, v in m["metrics"].items() if k != "export"}
    if trainer_metrics:
        lines += [
            "",
            "Validation figures from training (`metrics` in `manifest.yaml`):",
            "",
            "```yaml",
            yaml.safe_dump(trainer_metrics, sort_keys=False, allow_unicode=True).rstrip(),
            "```",
        ]
    p = m["provenance"]
    lines += [
        "",
        "## Reproduce",
        "",
        "```sh",
        command.strip(),
        "```",
        "",
        f"Made by {p['trainer']}"
        + (f" at commit `{p['commit']}`" if "commit" in p else "")
        + f", {p['created']}.",
        "",
    ]
    return "\n".join(lines)


def _frontend_line(f: dict[str, Any]) -> str:
    if f["kind"] == "waveform":
        return "- frontend: raw waveform"
    return (
        f"- frontend: n_fft {f['n_fft']}, win_length {f['win_length']}, hop_length "
        f"{f['hop_length']} samples, {f['window']} window, {f['n_mels']} mels "
        f"{f['fmin']:g}-{'Nyquist' if f['fmax'] is None else format(f['fmax'], 'g')} Hz"
        f" ({f['mel_scale']}), power {f['power']:g}, ln(mel + {f['log_offset']:g})"
    )


def _backbone_lines(block: dict[str, Any] | None) -> list[str]:
    """For a two-stage bundle: what the backbone is, whose it is and under which licence."""
    if not block:
        return []
    return [
        "",
        f"**Backbone:** {block['name']} (`{block['path']}`, embedding `{block['embedding']}`,"
        f" {block['size']} values), licence **{block['licence']}**, from {block['source']}."
        " The head in this bundle classifies the backbone's embedding of each window; the"
        " backbone's licence applies to that file.",
    ]


def _row(cells: Iterable[str]) -> str:
    return " | ".join(cells) + " |"


def _inline(value: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in value.items()) or "(none)"
