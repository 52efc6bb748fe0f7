"""The last second's probabilities and levels for Prometheus, read when it scrapes.

A gauge per label would cost a locked `Gauge.set` per label per second and an object or two per
label (BirdNET's 6,522 labels: 4.4 ms a second and 4 MiB); here a row is one copy into an
array (edge/ops/metrics.py `MetricsSink`), and a scrape turns the array into samples.
"""

from __future__ import annotations

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric

_NONE = np.zeros(0)  # nothing shown yet


class LastSecond:
    """`soundwatch_probability{label}` and `soundwatch_sound_level_db{band,unit}`: the last
    second's values, read from one array when scraped (a collector, not a gauge per label: a
    row is one copy, not a locked `Gauge.set` per label, and 6,522 labels hold no objects)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        # (labels, level bands, level unit, values: labels then bands), swapped whole.
        self.shown: tuple[list[str], list[str], str | None, np.ndarray] = ([], [], None, _NONE)
        registry.register(self)

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> list[Metric]:
        labels, bands, unit, values = self.shown
        probability, level = self._families()
        numbers = values.tolist()
        for label, value in zip(labels, numbers, strict=False):
            probability.add_metric([label], value)
        for band, value in zip(bands, numbers[len(labels) :], strict=False):
            level.add_metric([band, unit or ""], value)
        return [probability, level]

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        probability = GaugeMetricFamily(
            "soundwatch_probability", "The last second's probability, by label", labels=["label"]
        )
        level = GaugeMetricFamily(
            "soundwatch_sound_level_db",
            "The last second's sound level, dBFS or calibrated dB (unit), by band",
            labels=["band", "unit"],
        )
        return probability, level
