"""`scan` on every core, or on a Dask cluster: one task per recording, or per shard of one.

Dask is the engine (the `cluster` extra): `--workers N` starts its local cluster of N worker
processes on 127.0.0.1, `--scheduler tcp://host:8786` uses a running one (SLURM, PBS, the
cloud: see the README). Each worker process builds the analyzer once and scores each file it is
given with the same `edge.scan.scan` as a one-process scan, into the same output names, so the
outputs are byte-identical whatever the number of workers. Outputs go to the shared `--out`.
A recording longer than two shards is scored in time shards, one task each, and merged by one
more task (edge/shards.py), so that even one long file keeps every worker busy.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from edge.audio.levels import LevelSettings
from edge.builders import build_analyzer
from edge.config import Loaded
from edge.detection.analysis import Analyzer
from edge.errors import ConfigError
from edge.jobqueue import Recipe, make_cluster
from edge.scan import ScanReport, scan, total_seconds
from edge.shards import MIN_SHARD_SECONDS, SHARDS_PER_CORE, Shard, ShardResult, merge, plan
from edge.shards import score as score_shard

logger = logging.getLogger(__name__)

F = TypeVar("F")  # a file to score: its Path, or its URL
B = TypeVar("B")  # where its outputs go

_ANALYZERS: dict[str, Analyzer] = {}  # per worker thread: built once, reused for every task


def worker_analyzer(loaded: Loaded, batch: int) -> Analyzer:
    """This worker thread's analyzer for `loaded`: built once, reused for every task (a
    `dask worker` may run tasks on several threads; an analyzer scores one stream at a time)."""
    config = loaded.config
    what = (loaded.path, config.model, config.labels, config.events, batch)
    key = repr((threading.get_ident(), *what))
    analyzer = _ANALYZERS.get(key)
    if analyzer is None:
        _, analyzer = build_analyzer(loaded, None, batch_windows=batch)
        _ANALYZERS[key] = analyzer
    return analyzer


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


def scan_shard(loaded: Loaded, batch: int, shard: Shard, start: datetime | None) -> ShardResult:
    """One shard of a long recording, in a worker."""
    return score_shard(worker_analyzer(loaded, batch), shard, start)


def merge_shards(
    loaded: Loaded,
    batch: int,
    file: Path,
    base: Path,
    device: str,
    start: datetime | None,
    parts: list[ShardResult],
) -> ScanReport:
    """A long recording's outputs from its shards, in a worker."""
    analyzer = worker_analyzer(loaded, batch)
    return merge(analyzer, file, base, device=device, anchor=start, parts=parts)


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
    geometry: Analyzer,
    shard_seconds: float | None = None,
    recipe: Recipe | None = None,
    on_file: Callable[[F, ScanReport], object] = lambda *_: None,
    task: Callable[..., ScanReport] = scan_file,
) -> ScanReport:
    """Every file of `todo` scored by a Dask cluster. `on_file` hears of each file and each
    shard as it finishes (a shard's report has its audio, and no file). `geometry`: an
    analyzer of the model (its rate and hop place the shards); `shard_seconds`: their length,
    None for the audio spread over SHARDS_PER_CORE shards a core, at least MIN_SHARD_SECONDS;
    with sound levels on, files are scored whole. `recipe`: batch jobs to run the workers in
    (`--cluster`, edge/jobqueue.py), scaled to its jobs here. `task`: what scores one whole
    file in a worker (`scan_file`, or `edge.remote.scan_url_file` for files and outputs at
    URLs, which are never sharded), called as `scan_file` is."""
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
    elif recipe is not None:
        cluster = make_cluster(recipe)
        cluster.scale(jobs=recipe.jobs)
        client = Client(cluster)
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
        local = task is scan_file and not (levels is not None and levels.enabled)
        if local and shard_seconds is None:
            cores = sum(client.nthreads().values()) or (recipe.cores if recipe else 0) or 1
            shard_seconds = total_seconds([Path(str(f)) for f in todo]) / (cores * SHARDS_PER_CORE)
            shard_seconds = max(MIN_SHARD_SECONDS, shard_seconds)
        # future -> (file, what it is: "file", "merge", or a shard's seconds of audio)
        futures: dict[Any, tuple[Any, str | float]] = {}
        for file, base in todo.items():
            start = starts.get(file)
            shards = (
                plan(Path(str(file)), geometry, shard_seconds) if local and shard_seconds else []
            )
            if not shards:
                whole = client.submit(
                    task, loaded, batch, file, base, device, start, levels, pure=False
                )
                futures[whole] = (file, "file")
                continue
            parts = [client.submit(scan_shard, loaded, batch, s, start, pure=False) for s in shards]
            futures.update({part: (file, s.seconds) for part, s in zip(parts, shards, strict=True)})
            merged = client.submit(
                merge_shards, loaded, batch, file, base, device, start, parts, pure=False
            )
            futures[merged] = (file, "merge")
        for future in as_completed(futures):
            file, kind = futures.pop(future)  # a shard's scores stay only until its merge
            if isinstance(kind, float):
                on_file(file, ScanReport(audio_seconds=kind))
                continue
            one: ScanReport = future.result()
            report.add(one)
            if kind == "merge":  # its audio was heard of shard by shard
                one = ScanReport(one.files_scored, one.files_skipped)
            on_file(file, one)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return report
