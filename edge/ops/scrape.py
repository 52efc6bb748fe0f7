"""A registry that brings counters up to date when it is read, not on every hop.

The processing thread's parts count in plain ints (edge/ops/counters.py moves them into the
Prometheus counters by difference). Moving them once per hop cost the live daemon 50-70 µs of
a cold processing thread each time (tone: 10 hops a second, fly song: 20), for values nobody
reads until Prometheus scrapes. `Registry` runs its `before_collect` functions whenever it is
read (a scrape, `get_sample_value`, the review page), so every reader sees the counts as of
that moment, and a daemon nobody scrapes pays nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import RestrictedRegistry

logger = logging.getLogger(__name__)


class Registry(CollectorRegistry):
    """A CollectorRegistry that calls each of `before_collect` before it is read. Those run on
    the reader's thread (the metrics server's, the review page's): they must only read what
    other threads write, and keep their own state under a lock."""

    def __init__(self) -> None:
        super().__init__()
        self.before_collect: list[Callable[[], None]] = []
        self._failed = False

    def collect(self) -> Iterable[Metric]:
        self._refresh()
        yield from super().collect()

    def restricted_registry(self, names: Iterable[str]) -> RestrictedRegistry:
        self._refresh()  # `/metrics?name[]=...` reads through this
        return super().restricted_registry(names)

    def _refresh(self) -> None:
        for refresh in self.before_collect:
            try:
                refresh()
            except Exception as exc:  # a scrape must never fail because one source is gone
                if not self._failed:
                    logger.warning("metrics: bringing the counters up to date failed: %s", exc)
                    self._failed = True
