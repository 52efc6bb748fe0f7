"""From a loaded config to the pipeline's parts: the bundle folder, the label setups, the Analyzer.

Shared by `run` (edge/app.py), `scan`, `check` and `bench`, so a config means the same thing
to each of them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from pathlib import Path

from edge.config import LabelRules, Loaded
from edge.detection.analysis import Analyzer, LabelSetup
from edge.errors import ConfigError
from edge.model.bundle import Bundle, load_bundle
from edge.model.rules import RULE_FIELDS, EventRules
from edge.records import Sink
from edge.schema import Path_

# The checkout's models/, for a checkout used without installing it (PYTHONPATH=.): there the
# package `edge.bundled` (pyproject.toml maps it onto models/) does not exist.
REPO_MODELS = Path(__file__).resolve().parent.parent / "models"


def model_folder(loaded: Loaded) -> Path:
    """The bundle folder for `model.path`: a folder, or the name of a bundled model."""
    return bundle_folder(loaded.config.model.path, loaded.resolve)


def bundle_folder(value: str, resolve: Callable[[str], Path] = Path) -> Path:
    """The folder `value` names (through `resolve`: relative to the config file, or here), or
    the bundled model of that name when no such folder exists and `value` has no slash."""
    direct = resolve(value)
    if direct.is_dir() or "/" in value or os.sep in value:
        return direct
    for root in bundled_model_roots():
        if (root / value).is_dir():
            return root / value
    return direct


def bundled_model_roots() -> list[Path]:
    """Where bundled models live: the package `edge.bundled` (a wheel or an editable install),
    else the checkout's models/. Never the working folder: `flysong` means the same bundle
    wherever the command runs."""
    try:
        root = resources.files("edge.bundled")
    except ModuleNotFoundError:
        return [REPO_MODELS]
    # A regular package installed as files (wheels are unpacked; zip imports are not supported).
    return [Path(str(root))]


def label_setups(loaded: Loaded, bundle: Bundle) -> list[LabelSetup]:
    """The kept labels with their detector rules: bundle defaults, then config overrides."""
    config, where = loaded.config, loaded.where
    problems: list[str] = []
    names = bundle.labels
    column = {name: i for i, name in enumerate(names)}  # BirdNET's 6,522: not list searches
    keep = config.labels if config.labels is not None else names
    for i, label in enumerate(keep):
        if label not in column:
            problems.append(
                f"{where(('labels', i))}: '{label}' is not a label of {bundle.manifest.name}"
                f" (its labels: {', '.join(names)})"
            )
    for label in config.events.labels:
        if label not in column:
            problems.append(
                f"{where(('events', 'labels', label))}: '{label}' is not a label of"
                f" {bundle.manifest.name} (its labels: {', '.join(names)})"
            )
    if problems:
        raise ConfigError("\n".join(problems))

    # The manifest's defaults are EventRules' fields less the thresholds (set per label below).
    base = EventRules(threshold=0.5, **dataclasses.asdict(bundle.manifest.events))
    setups = []
    checked: dict[EventRules, list[str]] = {}  # the rules' problems, once per distinct rules
    for label in keep:
        rules = replace(base, threshold=bundle.manifest.thresholds[label])
        # Where each rule was last set, so a problem points at the line that set it.
        origin: dict[str, Path_] = {}
        layers: list[tuple[Path_, LabelRules | None]] = [
            (("events",), config.events),
            (("events", "labels", label), config.events.labels.get(label)),
        ]
        for at, layer in layers:
            if layer is None:
                continue
            for name in RULE_FIELDS:
                value = getattr(layer, name)
                if value is not None:
                    rules = replace(rules, **{name: value})
                    origin[name] = (*at, name)
        if rules.off_threshold is None and config.events.hysteresis:
            rules = replace(
                rules, off_threshold=max(0.0, rules.threshold - config.events.hysteresis)
            )
            origin["off_threshold"] = ("events", "hysteresis")
        if rules not in checked:
            checked[rules] = rules.validate()
        for problem in checked[rules]:
            key, _, message = problem.partition(": ")
            at = origin.get(key, ("events", key))
            source = "" if key in origin else ", the bundle's default"
            problems.append(f"{where(at)}: {message or problem} (label {label}{source})")
        events = config.events.background or label not in bundle.manifest.background
        setups.append(LabelSetup(label, column[label], rules, events))
    if problems:
        raise ConfigError("\n".join(problems))
    return setups


def build_analyzer(
    loaded: Loaded, sink: Sink | None = None, *, batch_windows: int | None = None
) -> tuple[Bundle, Analyzer]:
    """Bundle, backend and Analyzer (feeding `sink`) as the config says; raises
    SoundwatchError on problems."""
    config = loaded.config
    bundle = load_bundle(model_folder(loaded))
    labels = label_setups(loaded, bundle)
    hop = bundle.hop_for(config.model.hop_seconds)
    backend = bundle.open(config.model.file, config.model.threads)
    analyzer = Analyzer(
        bundle,
        backend,
        labels,
        sink or Sink(),
        hop_samples=hop,
        batch_windows=batch_windows or config.model.batch_windows,
    )
    return bundle, analyzer
