"""Meta-training every method of an experiment for every seed, in one run folder.

Each (method, seed) is one resumable [`metapinn.meta_train`][] run in
`train/<method>/seed<s>/`; a transfer run trains one plain PINN per needed training
task, in `train/transfer/seed<s>/task<i>/`, and the curriculum baseline the same
along its chain of training tasks, each run starting from the previous one's result
(`train/curriculum/seed<s>/task<i>/`). A method whose `init` names another
method starts from that method's trained initialisation of the same seed (a warm
start), so methods train in an order that puts every source first. The folder is a
[`RunFolder`][metapinn.experiment.RunFolder], locked while this process writes it.
"""

import os
import pathlib
from collections.abc import Callable
from typing import Any, cast

import jax
import numpy as np

from .._checkpoint import CorruptCheckpointError, read_checkpoint_meta
from .._meta_step import meta_step
from .._meta_train import (
    CHECKPOINT,
    MetaTrainResult,
    NonFiniteLossError,
    load_initialisation,
    meta_train,
)
from .._processes import _sync
from ._config import ConfigError, ExperimentConfig
from ._folder import RunFolder, _damaged
from ._methods import RANDOM, writers_optimizer
from ._problem import build_problem, check_network_fits, initialisation, point_sampler


def training_order(config: ExperimentConfig) -> tuple[str, ...]:
    """The methods, each after the method it starts from (the config has ruled out
    cycles of two; longer chains are ordered here, and a cycle is an error)."""
    order: list[str] = []

    def visit(method: str, path: tuple[str, ...]) -> None:
        if method in order:
            return
        if method in path:
            raise ConfigError(f"the methods' init settings form a cycle: {' -> '.join(path)}")
        source = config.method(method).init
        if source in config.methods:
            visit(source, (*path, method))
        order.append(method)

    for m in config.methods:
        visit(m, ())
    return tuple(order)


def start_run_folder(
    config: ExperimentConfig, folder: RunFolder, resume: bool, previous_checkpoint: bool
) -> None:
    """Check `folder` for `config` (see [`RunFolder.check`][metapinn.experiment.RunFolder.check])
    and store the settings, every process of a job in step."""
    folder.check(config, resume, previous_checkpoint)
    # Every process of a job has checked the folder before process 0 writes to it
    # (else a later process would find the new config.json and refuse a fresh run).
    _sync(f"metapinn: {folder.path} checked")
    folder.write_config(config)
    _sync(f"metapinn: {folder.path} started")


def starting_point(
    config: ExperimentConfig, folder: RunFolder, method: str, seed: int, params: Any
) -> Any:
    """Where `method` starts for `seed`: the random `params`, another method's trained
    initialisation (`init = METHOD`), or the one in a run folder (`init = DIR` holding
    a `checkpoint.npz` of the same network, or `DIR:METHOD` for that method's run of
    this seed in the run folder `DIR`).

    **Raises:** [`metapinn.experiment.ConfigError`][] if the source is missing or not finished.
    """
    spec = config.method(method)
    source = spec.init
    if source == RANDOM:
        return params
    if source in config.methods:
        if folder.diverged(config, source, seed) is not None:
            raise ConfigError(f"{method} starts from {source}, whose seed {seed} diverged")
        return folder.load_trained(config, source, seed, params)
    path = pathlib.Path(source)
    if not (path / CHECKPOINT).exists() and ":" in source:
        where, _, other = source.rpartition(":")
        other_folder = RunFolder(where)
        other_config = other_folder.read_config()
        if other not in other_config.methods:
            raise ConfigError(f"init={source!r}: that run has no method {other!r}")
        try:
            return other_folder.load_trained(other_config, other, seed, params)
        except (ConfigError, CorruptCheckpointError):
            raise  # named already
        except ValueError as e:  # a checkpoint of another network (width, depth, dtype)
            raise ConfigError(f"init={source!r} is not this run's network: {e}") from None
    if not (path / CHECKPOINT).exists():
        raise ConfigError(
            f"init={source!r} is neither a method of this run ({', '.join(config.methods)}) "
            f"nor a folder holding a {CHECKPOINT}"
        )
    stored = read_checkpoint_meta(path / CHECKPOINT).get("config") or {}
    optimizer = (  # the one that wrote it, as far as its stored settings tell
        writers_optimizer(stored) if "outer_lr" in stored else spec.outer_optimizer()
    )
    try:
        loaded, _ = load_initialisation(path, params, optimizer)
    except CorruptCheckpointError:
        raise  # named already
    except ValueError as e:  # a checkpoint of another network (width, depth, dtype)
        raise ConfigError(f"init={source!r} is not this run's network: {e}") from None
    return loaded


def train_runs(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    keep_going: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    previous_checkpoint: bool = False,
) -> dict[tuple[str, int], MetaTrainResult | None]:
    """Meta-train every method of `config` for every seed, writing into `out_dir`.

    **Arguments:**

    - `config`: the experiment.
    - `out_dir`: the run folder, new (missing or empty) or, with `resume`, a run's;
      `config.json` is written there.
    - `resume`: continue the runs found in `out_dir` (finished ones are only loaded).
    - `progress`: progress bars.
    - `stop_after`: stop (with [`metapinn.RunInterrupted`][]) after this many
      outer steps of the first run that trains, as if killed; for testing.
    - `log`: where one-line messages go.
    - `keep_going`: when a run's loss turns non-finite, record it (`diverged.json` in
      its folder, beside its last good checkpoint) and go on with the other runs,
      instead of raising. Its result is then `None`; the evaluation reports it.
    - `mesh`: split each meta-step's task batch over these devices (see
      [`metapinn.meta_step`][]).
    - `previous_checkpoint`: with `resume`, a run whose checkpoint cannot be read
      (truncated, damaged) continues from the checkpoint kept before it; without it,
      such a run is an error naming the file.

    **Returns:** `{(method, seed): MetaTrainResult or None}` (a transfer run's key is
    `("transfer:<task>", seed)`).

    **Raises:** `FileExistsError` if `out_dir` holds a run (or other files) and
    `resume` is false; `FileNotFoundError` if `resume` is true and `out_dir` holds no
    run (or is missing); [`metapinn.experiment.ConfigError`][] if `resume` meets a folder or a
    checkpoint trained with other settings, or a warm start whose source is missing,
    unfinished or diverged; [`metapinn.NonFiniteLossError`][] from the first run that
    diverges, unless `keep_going`; [`metapinn.RunInterrupted`][] on SIGTERM, SIGINT
    or `stop_after`; otherwise what [`metapinn.meta_train`][] raises (e.g.
    [`metapinn.CorruptCheckpointError`][] without `previous_checkpoint`).
    """
    folder = RunFolder(out_dir)
    folder.check(config, resume, previous_checkpoint)  # before the lock makes the folder
    # What cannot be built fails before the folder holds a run's settings (a failed
    # start would leave a run that a retry without --resume refuses).
    problem = build_problem(config)
    check_network_fits(config)
    if not resume:
        _check_outside_sources(config, folder)
    with folder.writing():
        start_run_folder(config, folder, resume, previous_checkpoint)
        return _train_all(
            config, folder, problem, resume=resume, progress=progress, stop_after=stop_after,
            log=log, keep_going=keep_going, mesh=mesh, previous_checkpoint=previous_checkpoint,
        )  # fmt: skip


def _check_outside_sources(config: ExperimentConfig, folder: RunFolder) -> None:
    """Load every warm start from outside the run (a run folder, `DIR:METHOD`) once,
    before anything is written: a source of another network, or a missing or damaged
    one, then fails before the folder holds the run's settings, and the corrected call
    is not refused.

    **Raises:** as `starting_point`."""
    for method in config.methods:
        spec = config.method(method)
        if spec.transfer or spec.init == RANDOM or spec.init in config.methods:
            continue
        for seed in config.seeds:
            params, _, _ = initialisation(config, seed, spec.conditioned)
            starting_point(config, folder, method, seed, params)


def _train_all(
    config: ExperimentConfig,
    folder: RunFolder,
    problem: Any,
    *,
    resume: bool,
    progress: bool,
    stop_after: int | None,
    log: Callable[[str], None],
    keep_going: bool,
    mesh: jax.sharding.Mesh | None,
    previous_checkpoint: bool,
) -> dict[tuple[str, int], MetaTrainResult | None]:
    sampler = point_sampler(config, problem)
    results: dict[tuple[str, int], MetaTrainResult | None] = {}
    for method in training_order(config):
        spec = config.method(method)
        loss_fn = problem.loss(spec.conditioned)
        for seed in config.seeds:
            params, static, key = initialisation(config, seed, spec.conditioned)
            learner = spec.meta_learner(params)
            for task, run_dir in folder.run_dirs(config, method, seed).items():
                source = spec.init
                if (
                    task is None
                    and source in config.methods
                    and keep_going
                    and folder.diverged(config, source, seed) is not None
                ):
                    message = f"not trained: its warm-start source {source} diverged"
                    folder.mark_diverged(
                        run_dir,
                        {"step": 0, "tasks": [], "message": message, "checkpoint_step": None,
                         "source": source},
                    )  # fmt: skip
                    log(f"{spec.label}, seed {seed}: {message}")
                    results[method, seed] = None
                    continue
                if task is None:
                    start = starting_point(config, folder, method, seed, params)
                    train_tasks, per_step = problem.train_tasks, config.tasks_per_step
                else:
                    start = params
                    previous = spec.previous_task(config, task)
                    if previous is not None and results.get((f"{method}:{previous}", seed),
                                                            True) is None:  # fmt: skip
                        message = f"not trained: the curriculum's task {previous} diverged"
                        folder.mark_diverged(
                            run_dir,
                            {"step": 0, "tasks": [], "message": message,
                             "checkpoint_step": None, "source": f"{method}:{previous}"},
                        )  # fmt: skip
                        log(f"{spec.label} (task {task}), seed {seed}: {message}")
                        results[f"{method}:{task}", seed] = None
                        continue
                    if previous is not None:  # a curriculum: from the easier task's run
                        start = folder.load_trained(config, method, seed, params, previous)
                    train_tasks = jax.tree_util.tree_map(lambda x, i=task: x[i : i + 1],
                                                         problem.train_tasks)  # fmt: skip
                    per_step = 1
                name = method if task is None else f"{method}:{task}"
                try:
                    result = meta_train(
                        learner,
                        start,
                        static,
                        loss_fn,
                        train_tasks,
                        None if sampler is not None else problem.points,
                        steps=spec.meta_steps,
                        optimizer=spec.outer_optimizer(),
                        key=key,
                        tasks_per_step=per_step,
                        sample_points=sampler,
                        mesh=mesh if per_step % (1 if mesh is None else mesh.size) == 0 else None,
                        tasks_at_once=spec.tasks_at_once(config),
                        run_dir=run_dir,
                        checkpoint_every=config.checkpoint_every,
                        resume=resume,
                        previous_checkpoint=resume and previous_checkpoint and _damaged(run_dir),
                        config=spec.run_settings(config, seed, task),
                        progress=progress,
                        description=f"{name} seed {seed}",
                        stop_after=stop_after,
                    )
                except NonFiniteLossError as error:
                    if not keep_going:
                        raise
                    folder.mark_diverged(
                        run_dir,
                        {"step": error.step, "tasks": error.tasks, "message": str(error),
                         "checkpoint_step": error.checkpoint_step},
                    )  # fmt: skip
                    log(f"{spec.label}, seed {seed}: DIVERGED. {error}")
                    results[name, seed] = None
                    continue
                folder.clear_diverged(run_dir)  # stale, from other settings
                trained = spec.meta_steps - result.start_step
                if trained:
                    log(
                        f"{spec.label}{'' if task is None else f' (task {task})'}, seed "
                        f"{seed}: {trained} meta-steps in {result.seconds:.1f} s, final "
                        f"query loss {np.mean(result.query_loss[-1]):.4g}"
                    )
                results[name, seed] = result
    return results


def meta_step_memory(config: ExperimentConfig, method: str) -> dict[str, int] | None:
    """XLA's memory analysis of `method`'s compiled meta-step under `config` (one step
    on `tasks_per_step` tasks, mapped as in training; compiled, not run): the bytes of
    its temporaries, arguments and outputs. Deterministic for a given XLA, unlike a
    process's peak memory (docs/design.md §4).

    **Returns:** `{"temp_bytes", "argument_bytes", "output_bytes"}`, or `None` where
    the backend gives no analysis."""
    problem = build_problem(config)
    spec = config.method(method)
    params, static, key = initialisation(config, config.seeds[0], spec.conditioned)
    learner = spec.meta_learner(params).at_step(0, max(spec.meta_steps, 1))
    meta = learner.init_meta_params(params)
    optimizer = spec.outer_optimizer()
    sampler = point_sampler(config, problem)
    support = problem.points if sampler is None else sampler(key)
    per_step = 1 if spec.transfer else config.tasks_per_step
    tasks = jax.tree_util.tree_map(lambda x: x[:per_step], problem.train_tasks)
    lowered = cast(Any, meta_step).lower(  # a filtered jit: it lowers
        learner, meta, static, optimizer.init(meta), optimizer, problem.loss(spec.conditioned),
        tasks, support, support, tasks_at_once=spec.tasks_at_once(config),
    )  # fmt: skip
    analysis = lowered.compile().compiled.memory_analysis()
    if analysis is None:
        return None
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }
