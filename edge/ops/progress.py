"""Progress bars for the long commands (`scan`, `bench`), on a terminal only.

tqdm draws them on stderr, with the total, the rate and the time left, redrawn at most ~10
times a second (its default `mininterval`). Where stderr is not a terminal (a pipe, a file, the
journal) a bar is disabled and writes nothing at all, so logs and redirected output stay clean.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

# Audio in whole seconds; the rate is audio seconds per second, i.e. x real time.
AUDIO_FORMAT = (
    "{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s audio"
    " [{elapsed}<{remaining}, {rate_noinv_fmt} audio]{postfix}"
)


def on_terminal() -> bool:
    """Whether stderr is a terminal, where a bar can be redrawn in place."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced by something that is no file, or closed
        return False


def bar(total: float, desc: str, unit: str, show: bool | None = None, **options: object) -> tqdm:
    """A progress bar on stderr over `total` `unit`s; `show` None: only on a terminal."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        disable=not (on_terminal() if show is None else show),
        dynamic_ncols=True,
        leave=True,
        **options,
    )


def audio_bar(total_seconds: float, desc: str, show: bool | None = None) -> tqdm:
    """A bar over seconds of audio: done/total, time left, and speed as x real time."""
    return bar(total_seconds, desc, "s", show, bar_format=AUDIO_FORMAT)


@contextlib.contextmanager
def logs_above(progress: tqdm) -> Iterator[None]:
    """Log lines printed above the bar instead of through it, while the bar is shown."""
    if progress.disable:
        yield
    else:
        with logging_redirect_tqdm():
            yield
