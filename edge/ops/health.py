"""A health check for containers: is audio still being analysed, and is every part working?

    python -m edge.ops.health [--url http://127.0.0.1:9464/metrics] [--max-age 120]

Exits 0 when the daemon's /metrics answers and its last analysed second
(`soundwatch_last_analysed_timestamp_seconds`) is at most `--max-age` seconds old, else 1 with
one line saying why (Docker keeps the last lines of each check: `docker inspect`). The start
counts as analysed, so loading the model is not a failure; a dead microphone, a stalled model
or a stuck thread are. So is a supervised thread that is down (`soundwatch_thread_up` 0: it
failed and waits to be started again, edge/threads.py), although analysis goes on meanwhile.
The Dockerfile's HEALTHCHECK runs this; plain urllib, as slim images have no curl.
"""

from __future__ import annotations

import argparse
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence

from prometheus_client.parser import text_string_to_metric_families

METRIC = "soundwatch_last_analysed_timestamp_seconds"
THREAD_UP = "soundwatch_thread_up"
DEFAULT_URL = "http://127.0.0.1:9464/metrics"
# Longer than a device reconnect (a few seconds) and a reload (model load, a few seconds on a
# Pi), shorter than anyone would accept missing audio for without noticing.
DEFAULT_MAX_AGE_SECONDS = 120.0


def check(url: str, max_age_seconds: float, timeout_seconds: float = 4.0) -> str | None:
    """None when healthy, else why not, in one line."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_seconds) as answer:
            text = answer.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return f"{url}: no answer ({reason})"
    last = None
    down = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == METRIC:
                last = sample.value
            elif sample.name == THREAD_UP and sample.value == 0:
                down.append(sample.labels.get("thread", "?"))
    if last is None:
        return f"{url}: no {METRIC} (not a soundwatch metrics endpoint?)"
    age = time.time() - last
    if age > max_age_seconds:
        return f"no audio analysed for {age:.0f} s (limit {max_age_seconds:g} s)"
    if down:
        return f"thread {', '.join(down)} down, restarting (the daemon's log says why)"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge.ops.health",
        description="Exit 0 while the daemon analyses audio, 1 when it stopped (or is down).",
    )
    parser.add_argument("--url", default=DEFAULT_URL, help=f"metrics URL (default {DEFAULT_URL})")
    parser.add_argument(
        "--max-age",
        type=float,
        default=DEFAULT_MAX_AGE_SECONDS,
        metavar="SECONDS",
        help=f"longest time without an analysed second, s (default {DEFAULT_MAX_AGE_SECONDS:g})",
    )
    args = parser.parse_args(argv)
    if args.max_age <= 0:
        parser.error(f"--max-age: must be above 0, got {args.max_age:g}")
    problem = check(args.url, args.max_age)
    if problem is not None:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy: audio is being analysed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
