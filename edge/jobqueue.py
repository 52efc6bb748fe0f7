"""`scan --cluster recipe.yaml`: Dask workers as batch jobs on SLURM, PBS, SGE, LSF, ...

The recipe names a dask-jobqueue cluster class, its settings (its own keyword arguments, as
dask-jobqueue documents them: cores, memory, walltime, queue, account, job_script_prologue,
...) and how many jobs to scale to::

    jobqueue: slurm
    jobs: 8
    cluster:
      cores: 32
      memory: 64GB
      walltime: "04:00:00"
      queue: normal

Each job then runs `processes` worker processes of one thread each (default: `cores` of them,
so each worker has one core, as `--workers` does on one machine). A key dask-jobqueue does not
know, or a value it refuses, is one line naming the file, the line and the key.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError
from edge.yamlfile import parse_yaml, read_text

# jobqueue: -> dask_jobqueue's class
KINDS = {
    "slurm": "SLURMCluster",
    "pbs": "PBSCluster",
    "sge": "SGECluster",
    "lsf": "LSFCluster",
    "htcondor": "HTCondorCluster",
    "oar": "OARCluster",
    "moab": "MoabCluster",
}
KEYS = ("jobqueue", "jobs", "cluster")


@dataclass(frozen=True)
class Recipe:
    source: str  # the YAML file, for messages
    kind: str  # a key of KINDS
    jobs: int  # batch jobs to scale to
    settings: dict[str, Any]  # the cluster class's keyword arguments

    @property
    def cores(self) -> int:
        """Cores the recipe asks for over all its jobs (0: left to Dask's own config)."""
        cores = self.settings.get("cores")
        return cores * self.jobs if isinstance(cores, int) else 0


def _jobqueue() -> Any:
    try:
        import dask_jobqueue
    except ImportError:
        raise ConfigError(
            "scan --cluster needs dask-jobqueue: pip install 'soundwatch[cluster]'"
        ) from None
    return dask_jobqueue


def _settings_of(cls: Any) -> set[str]:
    """Every keyword the cluster class takes: its own, and its job class's (whole MRO)."""
    names: set[str] = set()
    for klass in [*cls.__mro__, *cls.job_cls.__mro__]:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        for p in inspect.signature(init).parameters.values():
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
    return names - {"scheduler", "job_cls", "loop"}


def load_recipe(path: Path) -> Recipe:
    """The recipe at `path`, checked: each problem is one line with the file, line and key."""
    data, where = parse_yaml(read_text(path), str(path))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a cluster recipe is a mapping with {', '.join(KEYS)}")
    for key in data:
        if key not in KEYS:
            raise ConfigError(f"{where((key,))}: unknown key (expected: {', '.join(KEYS)})")
    kind = data.get("jobqueue")
    if kind not in KINDS:
        raise ConfigError(f"{where(('jobqueue',))}: {kind!r} is not one of {', '.join(KINDS)}")
    jobs = data.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"{where(('jobs',))}: {jobs!r}: must be a whole number of jobs, >= 1")
    settings = data.get("cluster") or {}
    if not isinstance(settings, dict):
        raise ConfigError(f"{where(('cluster',))}: must be a mapping of the cluster's settings")
    cls = getattr(_jobqueue(), KINDS[kind])
    known = _settings_of(cls)
    for key in settings:
        if key not in known:
            raise ConfigError(
                f"{where(('cluster', key))}: not a setting of dask-jobqueue's {cls.__name__}"
                " (e.g. cores, memory, walltime, queue, account, job_script_prologue)"
            )
    if "cores" in settings and "processes" not in settings:
        settings = {**settings, "processes": settings["cores"]}  # one core a worker
    return Recipe(str(path), kind, jobs, settings)


def make_cluster(recipe: Recipe) -> Any:
    """The recipe's dask-jobqueue cluster (its scheduler runs here), with no job submitted."""
    cls = getattr(_jobqueue(), KINDS[recipe.kind])
    try:
        return cls(**recipe.settings)
    except (ValueError, TypeError, KeyError) as exc:
        problem = " ".join(str(exc).split())  # one line
        raise ConfigError(f"{recipe.source}: cluster: {problem}") from None
