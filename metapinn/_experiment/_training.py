"""Meta-training every method of an experiment for every seed, in one run folder.

Each (method, seed) is one resumable [`metapinn.meta_train`][] run in
`train/<method>/seed<s>/`; a transfer run trains one plain PINN per needed training
task, in `train/transfer/seed<s>/task<i>/`. A method whose `init` names another
method starts from that method's trained initialisation of the same seed (a warm
start), so methods train in an order that puts every source first.
"""

import json
import os
import pathlib
from collections.abc import Callable
from typing import Any, cast

import jax
import numpy as np

from .._checkpoint import (
    CorruptCheckpointError,
    is_temporary,
    previous_checkpoint as previous_checkpoint_path,
    read_checkpoint_meta,
    write_json,
)
from .._run import (
    CHECKPOINT,
    RESUMABLE_KEYS,
    MetaTrainResult,
    NonFiniteLossError,
    _config_mismatch,
    _sync,
    load_initialisation,
    meta_train,
)
from .._train import meta_step
from ._config import (
    DIVERGED,
    EVALUATION_KEYS,
    LABELS,
    TRANSFER,
    ConfigError,
    ExperimentConfig,
)
from ._problem import (
    build_problem,
    initialisation,
    make_method,
    nearest_training_tasks,
    outer_optimizer,
    point_sampler,
    run_settings,
    tasks_at_once,
    writers_optimizer,
)


def _is_writer() -> bool:
    """Whether this process writes the run's files: process 0 of a multi-process job."""
    return jax.process_index() == 0


def _write_marker(path: pathlib.Path, data: dict[str, Any]) -> None:
    """Write a run's `diverged.json`, from process 0 only."""
    if _is_writer():
        write_json(path, data)


RESUMABLE_RUN_KEYS = ("overrides", "tasks_at_once", "inner_remat", "seeds", "methods")
"""Run-wide settings a resumed run folder may change: the per-method settings (each
run checks its own against its checkpoint), how tasks are mapped and the inner loop
checkpointed, and which seeds and methods it holds."""


def run_dir(
    out_dir: str | os.PathLike, method: str, seed: int, task: int | None = None
) -> pathlib.Path:
    """The folder of one training run (`task`: a transfer run's training task)."""
    folder = pathlib.Path(out_dir) / "train" / method / f"seed{seed}"
    return folder if task is None else folder / f"task{task}"


def run_dirs(
    config: ExperimentConfig, out_dir: str | os.PathLike, method: str, seed: int
) -> dict[int | None, pathlib.Path]:
    """Every training run folder of `method` for `seed`, by its task: `{None: folder}`,
    or for the transfer baseline one folder per training task it trains on."""
    tasks = transfer_tasks(config) if method == TRANSFER else (None,)
    return {task: run_dir(out_dir, method, seed, task) for task in tasks}


def training_order(config: ExperimentConfig) -> tuple[str, ...]:
    """The methods, each after the method it starts from (the config has ruled out
    cycles of two; longer chains are ordered here, and a cycle is an error)."""
    order: list[str] = []

    def visit(method: str, path: tuple[str, ...]) -> None:
        if method in order:
            return
        if method in path:
            raise ConfigError(f"the methods' init settings form a cycle: {' -> '.join(path)}")
        source = config.method_settings(method)["init"]
        if source in config.methods:
            visit(source, (*path, method))
        order.append(method)

    for m in config.methods:
        visit(m, ())
    return tuple(order)


def transfer_tasks(config: ExperimentConfig) -> tuple[int, ...]:
    """The training tasks the transfer baseline trains on (one PINN each)."""
    return tuple(sorted(set(nearest_training_tasks(config))))


def _start_run_folder(
    config: ExperimentConfig, out_dir: pathlib.Path, resume: bool, previous_checkpoint: bool
) -> None:
    check_run_folder(config, out_dir, resume, previous_checkpoint)
    # Every process of a job has checked the folder before process 0 writes to it
    # (else a later process would find the new config.json and refuse a fresh run).
    _sync(f"metapinn: {out_dir} checked")
    if _is_writer():
        out_dir.mkdir(parents=True, exist_ok=True)
        write_json(out_dir / "config.json", config.to_dict())
    _sync(f"metapinn: {out_dir} started")


def check_run_folder(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    resume: bool,
    previous_checkpoint: bool = False,
) -> None:
    """Check, writing nothing, that `config` may start (or with `resume`, continue) a
    run in `out_dir`: a new run needs a new folder (missing or empty), a resumed one
    a run's folder (with its `config.json`) trained with the same settings.

    **Raises:** `FileExistsError` where a new run would start in a folder that holds
    a run or other files; `FileNotFoundError` where a run would be resumed from a
    folder that is missing or holds no run; [`metapinn.ConfigError`][] where a
    resumed run's settings, or those of its checkpoints, are not `config`'s (or a
    checkpoint cannot be read, see `previous_checkpoint` in
    [`metapinn.train_runs`][]). Each message names the folder."""
    out_dir = pathlib.Path(out_dir)
    path = out_dir / "config.json"
    if not path.exists():
        if resume and out_dir.exists():
            raise FileNotFoundError(f"cannot resume {out_dir}: it holds no run (no config.json)")
        if resume:
            raise FileNotFoundError(
                f"cannot resume {out_dir}: no such folder (a new run starts without --resume)"
            )
        # (A run killed while it wrote its config.json may leave that file's temporary.)
        if out_dir.is_dir() and not all(map(is_temporary, out_dir.iterdir())):
            raise FileExistsError(
                f"{out_dir} is not empty and holds no run (no config.json): choose a new or "
                "empty output folder"
            )
        return
    if not resume:
        raise FileExistsError(
            f"{out_dir} already holds a run: continue it with --resume, or choose "
            "another output folder"
        )
    stored = ExperimentConfig.from_dict(json.loads(path.read_text())).to_dict()
    given = config.to_dict()
    # Per-method settings are checked run by run against each checkpoint; each
    # (method, seed) is a run of its own, so a resumed run may add seeds or methods
    # (those trained already are loaded, the others trained).
    allowed = set(RESUMABLE_KEYS) | set(EVALUATION_KEYS) | set(RESUMABLE_RUN_KEYS)
    bad = sorted(k for k in given if k not in allowed and stored[k] != given[k])
    if bad:
        raise ConfigError(
            f"cannot resume {out_dir} with different settings: "
            + ", ".join(f"{k} (stored {stored[k]!r}, given {given[k]!r})" for k in bad)
        )
    _check_resumable_runs(config, out_dir, previous_checkpoint)


def _damaged(folder: pathlib.Path) -> bool:
    """Whether the run in `folder` has a checkpoint that cannot be read."""
    try:
        read_checkpoint_meta(folder / CHECKPOINT)
    except FileNotFoundError:
        return False
    except CorruptCheckpointError:
        return True
    return False


def _resume_from(folder: pathlib.Path, previous_checkpoint: bool) -> pathlib.Path | None:
    """The checkpoint a run in `folder` resumes from: its last, or the one before when
    the last is damaged and `previous_checkpoint` allows it; `None` if it has none."""
    if previous_checkpoint and _damaged(folder):
        return previous_checkpoint_path(folder / CHECKPOINT)
    return folder / CHECKPOINT if (folder / CHECKPOINT).exists() else None


def _check_resumable_runs(
    config: ExperimentConfig, out_dir: pathlib.Path, previous_checkpoint: bool = False
) -> None:
    """Refuse, before anything is written, to resume runs whose checkpoints were
    trained with settings other than `config` gives them (other than the length), or
    cannot be read."""
    bad = []
    for method in config.methods:
        for seed in config.seeds:
            for task, folder in run_dirs(config, out_dir, method, seed).items():
                path = _resume_from(folder, previous_checkpoint)
                if path is not None:
                    stored = read_checkpoint_meta(path).get("config") or {}
                    given = run_settings(config, method, seed, task)
                    bad += [
                        f"{folder}: {k} (stored {stored.get(k)!r}, now {given.get(k)!r})"
                        for k in _config_mismatch(stored, given)
                    ]
    if bad:
        raise ConfigError(
            "cannot resume: these runs were trained with other settings (train them in a new "
            "folder, or give the settings they were trained with): " + "; ".join(bad)
        )


def load_final(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    method: str,
    seed: int,
    params: Any,
    task: int | None = None,
) -> Any:
    """The trained initialisation of `method` for `seed` in `out_dir` (`params`: the
    random one, for structure), after checking that its run finished with the
    config's settings.

    **Raises:** `FileNotFoundError` if the run is missing; [`metapinn.ConfigError`][]
    if it is unfinished or was trained with other settings.
    """
    folder = run_dir(out_dir, method, seed, task)
    if not (folder / CHECKPOINT).exists():
        raise FileNotFoundError(
            f"no checkpoint for {method} seed {seed} in {folder}: train it first "
            "(metapinn train, or metapinn reproduce)"
        )
    settings = run_settings(config, method, seed, task)
    meta = read_checkpoint_meta(folder / CHECKPOINT)
    if meta["step"] != settings["meta_steps"]:
        raise ConfigError(
            f"the {method} seed {seed} run in {folder} stopped at meta-step {meta['step']} "
            f"of {settings['meta_steps']}; finish it with --resume first"
        )
    stored = meta.get("config") or {}
    keys = (set(settings) | set(stored)) - {"checkpoint_every"}
    bad = sorted(k for k in keys if stored.get(k) != settings.get(k))
    if bad:
        raise ConfigError(
            f"the checkpoint in {folder} was trained with other settings: "
            + ", ".join(f"{k} (stored {stored.get(k)!r}, now {settings.get(k)!r})" for k in bad)
        )
    # Checked first: a checkpoint written by another optimiser would not even load.
    learner = make_method(config, method, params)
    params, _ = load_initialisation(folder, params, outer_optimizer(config, method), learner)
    return params


def starting_point(
    config: ExperimentConfig, out_dir: pathlib.Path, method: str, seed: int, params: Any
) -> Any:
    """Where `method` starts for `seed`: the random `params`, another method's trained
    initialisation (`init = METHOD`), or the one in a run folder (`init = DIR` holding
    a `checkpoint.npz` of the same network, or `DIR:METHOD` for that method's run of
    this seed in the run folder `DIR`).

    **Raises:** [`metapinn.ConfigError`][] if the source is missing or not finished.
    """
    source = config.method_settings(method)["init"]
    if source == "random":
        return params
    if source in config.methods:
        if (run_dir(out_dir, source, seed) / DIVERGED).exists():
            raise ConfigError(f"{method} starts from {source}, whose seed {seed} diverged")
        return load_final(config, out_dir, source, seed, params)
    folder, _, other = source.rpartition(":") if ":" in source else (source, "", "")
    folder = pathlib.Path(folder)
    if other:
        stored = folder / "config.json"
        if not stored.exists():
            raise ConfigError(f"init={source!r}: {folder} is not a run folder (no config.json)")
        other_config = ExperimentConfig.from_dict(json.loads(stored.read_text()))
        if other not in other_config.methods:
            raise ConfigError(f"init={source!r}: that run has no method {other!r}")
        return load_final(other_config, folder, other, seed, params)
    if not (folder / CHECKPOINT).exists():
        raise ConfigError(
            f"init={source!r} is neither a method of this run ({', '.join(config.methods)}) "
            f"nor a folder holding a {CHECKPOINT}"
        )
    stored = read_checkpoint_meta(folder / CHECKPOINT).get("config") or {}
    optimizer = (  # the one that wrote it, as far as its stored settings tell
        writers_optimizer(stored) if "outer_lr" in stored else outer_optimizer(config, method)
    )
    loaded, _ = load_initialisation(folder, params, optimizer)
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
    run (or is missing); [`metapinn.ConfigError`][] if `resume` meets a folder or a
    checkpoint trained with other settings, or a warm start whose source is missing,
    unfinished or diverged; [`metapinn.NonFiniteLossError`][] from the first run that
    diverges, unless `keep_going`; [`metapinn.RunInterrupted`][] on SIGTERM, SIGINT
    or `stop_after`; otherwise what [`metapinn.meta_train`][] raises (e.g.
    [`metapinn.CorruptCheckpointError`][] without `previous_checkpoint`).
    """
    out_dir = pathlib.Path(out_dir)
    _start_run_folder(config, out_dir, resume, previous_checkpoint)
    problem = build_problem(config)
    sampler = point_sampler(config, problem)
    results: dict[tuple[str, int], MetaTrainResult | None] = {}
    for method in training_order(config):
        settings = config.method_settings(method)
        loss_fn = problem.loss(method)
        for seed in config.seeds:
            params, static, key = initialisation(config, seed, method)
            learner = make_method(config, method, params)
            for task, folder in run_dirs(config, out_dir, method, seed).items():
                source = settings["init"]
                if (
                    task is None
                    and source in config.methods
                    and keep_going
                    and (run_dir(out_dir, source, seed) / DIVERGED).exists()
                ):
                    message = f"not trained: its warm-start source {source} diverged"
                    _write_marker(
                        folder / DIVERGED,
                        {
                            "step": 0,
                            "tasks": [],
                            "message": message,
                            "checkpoint_step": None,
                            "source": source,
                        },  # fmt: skip
                    )
                    log(f"{LABELS[method]}, seed {seed}: {message}")
                    results[method, seed] = None
                    continue
                if task is None:
                    start = starting_point(config, out_dir, method, seed, params)
                    train_tasks, per_step = problem.train_tasks, config.tasks_per_step
                else:
                    start = params
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
                        steps=settings["meta_steps"],
                        optimizer=outer_optimizer(config, method),
                        key=key,
                        tasks_per_step=per_step,
                        sample_points=sampler,
                        mesh=mesh if per_step % (1 if mesh is None else mesh.size) == 0 else None,
                        tasks_at_once=tasks_at_once(config, method),
                        run_dir=folder,
                        checkpoint_every=config.checkpoint_every,
                        resume=resume,
                        previous_checkpoint=resume and previous_checkpoint and _damaged(folder),
                        config=run_settings(config, method, seed, task),
                        progress=progress,
                        description=f"{name} seed {seed}",
                        stop_after=stop_after,
                    )
                except NonFiniteLossError as error:
                    if not keep_going:
                        raise
                    _write_marker(
                        folder / DIVERGED,
                        {"step": error.step, "tasks": error.tasks, "message": str(error),
                         "checkpoint_step": error.checkpoint_step},
                    )  # fmt: skip
                    log(f"{LABELS[method]}, seed {seed}: DIVERGED. {error}")
                    results[name, seed] = None
                    continue
                if _is_writer():
                    (folder / DIVERGED).unlink(missing_ok=True)  # stale, from other settings
                trained = settings["meta_steps"] - result.start_step
                if trained:
                    log(
                        f"{LABELS[method]}{'' if task is None else f' (task {task})'}, seed "
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
    params, static, key = initialisation(config, config.seeds[0], method)
    steps = config.method_settings(method)["meta_steps"]
    learner = make_method(config, method, params).at_step(0, max(steps, 1))
    meta = learner.init_meta_params(params)
    optimizer = outer_optimizer(config, method)
    sampler = point_sampler(config, problem)
    support = problem.points if sampler is None else sampler(key)
    per_step = 1 if method == TRANSFER else config.tasks_per_step
    tasks = jax.tree_util.tree_map(lambda x: x[:per_step], problem.train_tasks)
    lowered = cast(Any, meta_step).lower(  # a filtered jit: it lowers
        learner, meta, static, optimizer.init(meta), optimizer, problem.loss(method), tasks,
        support, support, tasks_at_once=tasks_at_once(config, method),
    )  # fmt: skip
    analysis = lowered.compile().compiled.memory_analysis()
    if analysis is None:
        return None
    return {
        "temp_bytes": int(analysis.temp_size_in_bytes),
        "argument_bytes": int(analysis.argument_size_in_bytes),
        "output_bytes": int(analysis.output_size_in_bytes),
    }
