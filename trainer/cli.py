"""`soundwatch-train`: turn recordings (or, for now, a hand-made design) into model bundles."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def cmd_tone_bundle(args: argparse.Namespace) -> int:
    from trainer.toybundle import make_tone_bundle

    folder = make_tone_bundle(Path(args.folder))
    print(f"wrote {folder}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="soundwatch-train", description="Build soundwatch model bundles."
    )
    sub = p.add_subparsers(dest="command", required=True)
    tone = sub.add_parser("tone-bundle", help="write the hand-made 1 kHz / 3 kHz tone bundle")
    tone.add_argument("folder", help="bundle folder to write, e.g. models/tone")
    tone.set_defaults(func=cmd_tone_bundle)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
