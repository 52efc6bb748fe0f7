"""Make a soundwatch bundle of Google's YAMNet (the heavy third-party case for `bench`).

    python benchmarks/yamnet_bundle.py /path/to/backbones/yamnet /tmp/yamnet-bundle
    soundwatch bench --model /tmp/yamnet-bundle --seconds 600

The source folder holds `yamnet.tflite` (the waveform model: 0.975 s of 16 kHz audio in, 521
AudioSet scores out) and `yamnet_class_map.csv`. The model is linked into the bundle, not
copied (a copy where the link cannot be made), and never goes into this repository. Labels
are the class map's `display_name`s, made unique (two "Rattle"s: the second becomes
"Rattle (2)"); every threshold 0.5; windows every 0.48 s, as YAMNet's own framing.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import shutil
from pathlib import Path

import yaml

HOP_SECONDS = 0.48  # YAMNet's own patch hop
THRESHOLD = 0.5


def unique(names: list[str]) -> list[str]:
    """The names, a repeated one suffixed " (2)", " (3)", ... so every label is distinct."""
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return out


def link(model: Path, out: Path) -> Path:
    """`model` linked into the bundle folder `out` (copied where no link can be made)."""
    out.mkdir(parents=True, exist_ok=True)
    target = out / model.name
    target.unlink(missing_ok=True)
    try:
        target.symlink_to(model.resolve())
    except OSError:
        shutil.copyfile(model, target)
    return target


def write_manifest(
    out: Path, model: Path, labels: list[str], threshold: float, **fields: object
) -> Path:
    """A waveform-model manifest in `out`: `fields` name rate, window, hop and output; every
    label gets `threshold`, and an event is every window over it (no smoothing, no minimum)."""
    manifest = {
        "format": "soundwatch-bundle/1",
        **fields,
        "labels": labels,
        "task": "multilabel",
        "frontend": {"kind": "waveform"},
        "thresholds": dict.fromkeys(labels, threshold),
        "events": {
            "median_windows": 1,
            "min_duration_seconds": 0.0,
            "merge_gap_seconds": 0.5,
            "max_duration_seconds": 0,
            "refractory_seconds": 0,
        },
        "files": {
            "tflite-fp32": {
                "path": model.name,
                "sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
            }
        },
    }
    text = yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True)
    (out / "manifest.yaml").write_text(text, encoding="utf-8")
    return out


def build(source: Path, out: Path) -> Path:
    model, class_map = source / "yamnet.tflite", source / "yamnet_class_map.csv"
    for path in (model, class_map):
        if not path.is_file():
            raise SystemExit(f"{path}: not found (needs yamnet.tflite and yamnet_class_map.csv)")
    with class_map.open(newline="") as f:
        labels = unique([row["display_name"] for row in csv.DictReader(f)])
    return write_manifest(
        out,
        link(model, out),
        labels,
        THRESHOLD,
        name="yamnet",
        version="1",
        sample_rate=16000,
        window_seconds=0.975,
        hop_seconds=HOP_SECONDS,
        output={"activation": "none", "name": "Identity"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with yamnet.tflite and its class map")
    parser.add_argument("out", type=Path, help="bundle folder to write")
    args = parser.parse_args()
    print(build(args.source, args.out))


if __name__ == "__main__":
    main()
