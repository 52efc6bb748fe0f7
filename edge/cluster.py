"""`scan` on every core, or on a Dask cluster: one task per recording.

Dask is the engine (the `cluster` extra): `--workers N` starts its local cluster of N worker
processes on 127.0.0.1, `--scheduler tcp://host:8786` uses a running one (SLURM, PBS, the
cloud: see the README). Each worker process builds the analyzer once and scores each file it is
given with the same `edge.scan.scan` as a one-process scan, into the same output names, so the
outputs are byte-identical whatever the number of workers. Outputs go to the shared `--out`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from edge.audio.levels import LevelSettings
from edge.builders import build_analyzer
from edge.config import Loaded
from edge.detection.analysis import Analyzer
from edge.errors import ConfigError
from edge.scan import ScanReport, scan

logger = logging.getLogger(__name__)

F = TypeVar("F")  # a file to score: its Path, or its URL
B = TypeVar("B")  # where its outputs go
_ANALYZERS: dict[str, Analyzer] = {}  # per worker process: built once, reused for every file


def scan_file(
    loaded: Loaded,
    batch: int,
    file: Path,
    base: Path,
    device: str,
    start: datetime | None,
    levels: LevelSettings | None,
) -> ScanReport:
    """One recording, in a worker: the task Dask runs."""
    return scan(
        worker_analyzer(loaded, batch),
        [file],
        base.parent,
        device=device,
        progress=False,
        levels=levels,
        bases={file: base},
        anchors={file: start},
    )


def worker_analyzer(loaded: Loaded, batch: int) -> Analyzer:
    """The analyzer of this worker process for `loaded`: built on its first file, then reused."""
    key = repr(
        (loaded.path, loaded.config.model, loaded.config.labels, loaded.config.events, batch)
    )
    analyzer = _ANALYZERS.get(key)
    if analyzer is None:
        _, analyzer = build_analyzer(loaded, None, batch_windows=batch)
        _ANALYZERS[key] = analyzer
    return analyzer


def scan_on_cluster(
    loaded: Loaded,
    batch: int,
    todo: Mapping[F, B],
    *,
    device: str,
    starts: Mapping[F, datetime | None],
    levels: LevelSettings | None,
    workers: int | None,
    scheduler: str | None,
    on_file: Callable[[F, ScanReport], object] = lambda *_: None,
    task: Callable[..., ScanReport] = scan_file,
) -> ScanReport:
    """Every file of `todo` scored by a Dask cluster; `on_file` hears of each as it finishes.
    `task`: what scores one file in a worker (`scan_file`, or `edge.remote.scan_url_file` for
    files and outputs at URLs), called as `scan_file` is."""
    try:
        from dask.distributed import Client, LocalCluster, as_completed
    except ImportError:
        raise ConfigError(
            "scan --workers/--scheduler needs Dask: pip install 'soundwatch[cluster]'"
        ) from None
    # Dask's own INFO lines (scheduler and workers starting, closing) would bury scan's.
    for name in ("distributed", "dask"):
        logging.getLogger(name).setLevel(logging.WARNING)
    cluster: Any = None
    if scheduler:
        client = Client(scheduler, timeout=30)
    else:
        cluster = LocalCluster(
            n_workers=workers or 1,
            threads_per_worker=1,  # each worker one core: inference is single-threaded here
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
        )
        client = Client(cluster)
    report = ScanReport()
    try:
        futures = {
            client.submit(
                task, loaded, batch, file, base, device, starts.get(file), levels, pure=False
            ): file
            for file, base in todo.items()
        }
        for future in as_completed(futures):
            one: ScanReport = future.result()
            report.add(one)
            on_file(futures[future], one)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return report
