"""The pipeline behind `metapinn reproduce`: build the problem, meta-train every method
for every seed, adapt every initialisation to the held-out tasks, measure it against
the reference, and hand the measurements to the report.

1. Meta-train each method for each seed, from the random initialisation of that seed
   (one for the plain network, one for the conditioned one) or, for a warm start, from
   another method's result for that seed.
2. Adapt every initialisation (and the random one) to each held-out task with the
   same schedule, in one scan per run, reading it at the step counts `eval_steps`.
3. Measure the PINN loss, the RMS PDE residual and the relative L2 error against the
   reference solution on the standard grid; summarise over seeds; write the tables
   (JSON, Markdown) and the plots.

A run lives in one folder: `config.json`, `train/<method>/seed<s>/` (checkpoint and
metrics), `results.json`, `results.md` and `plots/`.
"""

import concurrent.futures
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import jax

from .._processes import _sync
from ._config import ExperimentConfig
from ._evaluation import evaluate_runs, reference_fields
from ._folder import RunFolder
from ._training import train_runs
from ._workloads import DEFAULT_WORKLOAD, workload


def reproduce(
    config: ExperimentConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    plots: bool = True,
    previous_checkpoint: bool = False,
    mesh: jax.sharding.Mesh | None = None,
) -> dict[str, Any] | None:
    """The whole experiment: meta-train every method for every seed, evaluate, write
    the results and plots into `out_dir`.

    A meta-training run whose loss turns non-finite stops (its last good checkpoint
    kept) and is reported as diverged; the other runs go on, and the statistics of
    that method are over its remaining seeds, flagged in every table.

    The reference solutions are computed (or read from the disk cache) in a
    background thread while the meta-training runs: the solver is independent of
    it, and compilation leaves a core free.

    **Arguments:**

    - `config`: an [`metapinn.experiment.ExperimentConfig`][]; `None` is the default workload
      (`DEFAULT_WORKLOAD`, W3).
    - `out_dir`: the run folder; `None` makes `runs/<name>-<date-time>`.
    - `resume`: continue an interrupted run in `out_dir` (which must hold one).
    - `progress`, `stop_after`, `log`: as for [`metapinn.experiment.train_runs`][].
    - `plots`: draw the plots into `out_dir/plots`.
    - `previous_checkpoint`: with `resume`, a run whose checkpoint is damaged
      continues from the one kept before it (see [`metapinn.experiment.train_runs`][]).
    - `mesh`: split each meta-step's task batch over these devices (see
      [`metapinn.experiment.train_runs`][]); in a multi-process job every process
      trains, process 0 alone evaluates and writes, and the others wait for it before
      they return (on a barrier without a time limit: JAX's exit barrier gives up
      after 5 minutes). The evaluation runs on one device, as it always has
      (`metapinn evaluate --devices N` spreads it).

    **Returns:** the results, as written to `results.json` (`None` on the other
    processes of a multi-process job).

    **Raises:** what [`metapinn.experiment.train_runs`][] (with `keep_going=True`, so not
    [`metapinn.NonFiniteLossError`][]) and [`metapinn.experiment.evaluate_runs`][] raise: e.g.
    `FileExistsError` for a used `out_dir` without `resume` (a run's, or other
    files), `FileNotFoundError` to resume an `out_dir` that holds no run,
    [`metapinn.experiment.ConfigError`][] for a resume with other settings,
    [`metapinn.RunInterrupted`][] on SIGTERM, SIGINT or `stop_after`, and
    `RuntimeError` if a reference must be computed without float64, and
    [`metapinn.RunFolderBusy`][] if another process is writing `out_dir`.
    """
    config = workload(DEFAULT_WORKLOAD) if config is None else config
    out_dir = default_out_dir(config) if out_dir is None else pathlib.Path(out_dir)
    log(f"run folder: {out_dir}")
    folder = RunFolder(out_dir)
    # Before the lock makes the folder and the reference thread starts: a refused
    # folder is an error at once, not once that thread has finished.
    folder.check(config, resume, previous_checkpoint)
    with folder.writing():
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metapinn-reference")
        try:
            reference = pool.submit(reference_fields, config) if folder.is_writer() else None
            train_runs(
                config,
                out_dir,
                resume=resume,
                progress=progress,
                stop_after=stop_after,
                log=log,
                keep_going=True,
                previous_checkpoint=previous_checkpoint,
                mesh=mesh,
            )
            if not folder.is_writer():
                _sync(f"metapinn: {out_dir} evaluated")  # wait for process 0 before leaving
                return None
            try:
                return evaluate_runs(config, out_dir, log=log, plots=plots, reference=reference)
            finally:
                _sync(f"metapinn: {out_dir} evaluated")  # the others may leave the job now
        finally:
            pool.shutdown(wait=False, cancel_futures=True)


def default_out_dir(config: ExperimentConfig, kind: str = "") -> pathlib.Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / f"{config.name}{kind}-{stamp}"
