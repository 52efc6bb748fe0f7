"""`scan --cluster recipe.yaml` (edge/jobqueue.py): the real dask-jobqueue cluster object is
built from the recipe and its batch script carries the recipe's settings. No batch system
exists here, so no job is submitted: the script is what SLURM or PBS would be given."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import ConfigError
from edge.jobqueue import load_recipe, make_cluster
from tests.test_cluster import soundwatch

SLURM = """\
jobqueue: slurm
jobs: 4
cluster:
  cores: 8
  memory: 16GB
  walltime: "04:00:00"
  queue: normal
  account: ocean
  job_script_prologue:
    - source /opt/soundwatch/bin/activate
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_a_slurm_recipe_makes_the_batch_script_it_says(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, SLURM))
    assert (recipe.jobs, recipe.cores) == (4, 32)
    cluster = make_cluster(recipe)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p normal", "#SBATCH -A ocean", "#SBATCH --cpus-per-task=8",
                 "#SBATCH -t 04:00:00", "source /opt/soundwatch/bin/activate"):  # fmt: skip
        assert line in script.splitlines()
    assert "--mem=15G" in script  # 16 GB as SLURM counts it (GiB)
    # one thread in each of 8 worker processes: a worker per core, as with --workers
    assert "--nthreads 1" in script and "--nworkers 8" in script


def test_a_pbs_recipe(tmp_path: Path) -> None:
    text = "jobqueue: pbs\ncluster:\n  cores: 4\n  memory: 8GB\n  walltime: '01:30:00'\n"
    cluster = make_cluster(load_recipe(write(tmp_path, text + "  queue: workq\n")))
    try:
        script = cluster.job_script().splitlines()
    finally:
        cluster.close()
    assert "#PBS -q workq" in script and "#PBS -l walltime=01:30:00" in script
    assert "#PBS -l select=1:ncpus=4:mem=7630MB" in script  # 8 GB as PBS counts it (MiB)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (SLURM.replace("  queue:", "  queu:"),
         ":7: cluster.queu: not a setting of dask-jobqueue's SLURMCluster (e.g. cores, memory,"
         " walltime, queue, account, job_script_prologue)"),
        (SLURM + "worker: 3\n", ":11: worker: unknown key (expected: jobqueue, jobs, cluster)"),
        (SLURM.replace("slurm", "slurmm"),
         ":1: jobqueue: 'slurmm' is not one of slurm, pbs, sge, lsf, htcondor, oar, moab"),
        (SLURM.replace("jobs: 4", "jobs: 0"), ":2: jobs: 0: must be a whole number of jobs, >= 1"),
    ],
)  # fmt: skip
def test_a_bad_recipe_is_one_line_with_its_line_and_key(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_recipe(path)
    assert str(error.value) == f"{path}{message}"


def test_scan_refuses_a_bad_recipe_before_writing_anything(
    tmp_path: Path, tone_bundle: Path
) -> None:
    path = write(tmp_path, SLURM.replace("  memory:", "  memroy:"))
    out = tmp_path / "out"
    result = soundwatch("scan", str(tmp_path), "--model", str(tone_bundle), "--out", str(out),
                        "--cluster", str(path))  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"soundwatch: error: {path}:5: cluster.memroy: not a setting of dask-jobqueue's"
        " SLURMCluster (e.g. cores, memory, walltime, queue, account, job_script_prologue)"
    ]
    assert not out.exists()
