"""The pipeline behind `metapinn reproduce`: build the problem, meta-train every method
for every seed, adapt every initialisation to the held-out tasks, measure it against
the reference, and hand the measurements to the report.

1. Meta-train each method for each seed, every method starting from the same random
   initialisation of that seed, for the same number of outer steps.
2. Adapt every initialisation (and the random one) to each held-out task with the
   same schedule, in one scan per run, reading it at the step counts `eval_steps`.
3. Measure the PINN loss, the RMS PDE residual and the relative L2 error against the
   reference solution on the standard grid; summarise over seeds; write the tables
   (JSON, Markdown) and the plots.

A run lives in one folder: `config.json`, `train/<method>/seed<s>/` (checkpoint and
metrics), `results.json`, `results.md` and `plots/`.
"""

import concurrent.futures
import functools
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from .._checkpoint import atomic_write, write_json, write_text
from .._evaluate import few_shot, field_metrics, pinn_field
from .._loss import PINNLoss
from .._meta._base import AbstractMetaLearner
from .._meta._methods import make_learner
from .._pde._burgers import Burgers, BurgersTask
from .._pinn import MLPPINN
from .._plots import plot_few_shot, plot_fields, plot_meta_training, plot_per_viscosity
from .._reference import cached_reference_solution, grid_points, standard_grid
from .._run import (
    CHECKPOINT,
    METRICS,
    RESUMABLE_KEYS,
    MetaTrainResult,
    NonFiniteLossError,
    load_initialisation,
    meta_train,
)
from .._sampling import CollocationBatch, sample_collocation
from ._config import (
    DIVERGED,
    EVALUATION_KEYS,
    LABELS,
    RESIDUAL_STRIDE,
    ConfigError,
    ExperimentConfig,
)
from ._report import summarise, to_markdown


# ---------------------------------------------------------------------------------------
# The problem: points, tasks, networks, optimisers.


class Problem(eqx.Module):
    """The fixed ingredients of an experiment, built from its config."""

    pde: Burgers
    loss_fn: PINNLoss
    points: CollocationBatch
    train_tasks: BurgersTask
    test_tasks: BurgersTask


def build_problem(config: ExperimentConfig) -> Problem:
    """The Burgers family, its loss, the collocation points (drawn once from
    `points_seed`) and the training and held-out tasks, all in `config.dtype`."""
    dtype = jnp.dtype(config.dtype)
    if jnp.zeros((), dtype).dtype != dtype:
        raise ConfigError(
            f"config value dtype={config.dtype!r} needs jax_enable_x64 (set it at start-up, "
            'e.g. jax.config.update("jax_enable_x64", True))'
        )
    pde = Burgers()
    points = _points(
        jr.key(config.points_seed), pde, config.n_interior, config.n_initial, config.n_boundary
    )
    points = jax.tree_util.tree_map(lambda x: x.astype(dtype), points)
    return Problem(
        pde=pde,
        loss_fn=PINNLoss(pde),
        points=points,
        train_tasks=BurgersTask(jnp.asarray(config.train_nus, dtype=dtype)),
        test_tasks=BurgersTask(jnp.asarray(config.test_nus, dtype=dtype)),
    )


# Jitted so that each is one compilation rather than one per operation.
_points = eqx.filter_jit(sample_collocation)
_pinn = eqx.filter_jit(MLPPINN)


def initialisation(config: ExperimentConfig, seed: int):
    """The random initialisation of `seed`, shared by every method.

    **Returns:** `(params, static, key)`; `key` drives the run's task sampling.
    """
    init_key, run_key = jr.split(jr.key(seed))
    pinn = _pinn(config.width, config.depth, dtype=jnp.dtype(config.dtype), key=init_key)
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    return params, static, run_key


@functools.cache
def adam(lr: float, eps_root: float = 0.0) -> optax.GradientTransformation:
    """One Adam object per setting, so that jitted functions taking it as a static
    argument compile once. `eps_root > 0` keeps it differentiable (for MAML)."""
    return optax.adam(lr, eps_root=eps_root)


def make_method(config: ExperimentConfig, method: str) -> AbstractMetaLearner:
    """The learner for `method` with the config's inner-loop settings."""
    if method == "multitask":
        return make_learner(method)
    if config.inner_optimizer == "sgd":
        inner: optax.GradientTransformation | float = config.inner_lr
    elif config.inner_optimizer == "adam":
        inner = adam(config.inner_lr, 1e-16)
    else:  # pragma: no cover - the config has checked it
        raise ConfigError(f"unknown inner optimiser {config.inner_optimizer!r}")
    return make_learner(method, inner_steps=config.inner_steps, inner_optimizer=inner)


_TRAINING_KEYS = (
    "width", "depth", "dtype", "n_interior", "n_initial", "n_boundary", "points_seed",
    "train_nus", "inner_steps", "inner_optimizer", "inner_lr", "outer_lr", "meta_steps",
    "tasks_per_step", "checkpoint_every",
)  # fmt: skip


def run_settings(config: ExperimentConfig, method: str, seed: int) -> dict[str, Any]:
    """What one training run depends on (stored in, and checked against, its checkpoint)."""
    data = config.to_dict()
    settings = {k: data[k] for k in _TRAINING_KEYS}
    if method == "multitask":
        for k in ("inner_steps", "inner_optimizer", "inner_lr"):
            settings.pop(k)
    return {"method": method, "seed": seed, **settings}


def run_dir(out_dir: str | os.PathLike, method: str, seed: int) -> pathlib.Path:
    return pathlib.Path(out_dir) / "train" / method / f"seed{seed}"


# ---------------------------------------------------------------------------------------
# Meta-training.


def _start_run_folder(config: ExperimentConfig, out_dir: pathlib.Path, resume: bool) -> None:
    path = out_dir / "config.json"
    if path.exists():
        if not resume:
            raise FileExistsError(
                f"{out_dir} already holds a run: continue it with --resume, or choose "
                "another output folder"
            )
        stored = ExperimentConfig.from_dict(json.loads(path.read_text())).to_dict()
        given = config.to_dict()
        allowed = set(RESUMABLE_KEYS) | set(EVALUATION_KEYS)
        bad = sorted(k for k in given if k not in allowed and stored[k] != given[k])
        if bad:
            raise ConfigError(
                f"cannot resume {out_dir} with different settings: "
                + ", ".join(f"{k} (stored {stored[k]!r}, given {given[k]!r})" for k in bad)
            )
    write_json(path, config.to_dict())


def train_runs(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    keep_going: bool = False,
) -> dict[tuple[str, int], MetaTrainResult | None]:
    """Meta-train every method of `config` for every seed, writing into `out_dir`.

    **Arguments:**

    - `config`: the experiment.
    - `out_dir`: the run folder; `config.json` is written there.
    - `resume`: continue the runs found in `out_dir` (finished ones are only loaded).
    - `progress`: progress bars.
    - `stop_after`: stop (with [`metapinn.RunInterrupted`][]) after this many
      outer steps of the first run that trains, as if killed; for testing.
    - `log`: where one-line messages go.
    - `keep_going`: when a run's loss turns non-finite, record it (`diverged.json` in
      its folder, beside its last good checkpoint) and go on with the other runs,
      instead of raising. Its result is then `None`; the evaluation reports it.

    **Returns:** `{(method, seed): MetaTrainResult or None}`.

    **Raises:** `FileExistsError` if `out_dir` holds a run and `resume` is false;
    [`metapinn.NonFiniteLossError`][] from the first run that diverges, unless
    `keep_going`.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    _start_run_folder(config, out_dir, resume)
    problem = build_problem(config)
    optimizer = adam(config.outer_lr)
    results = {}
    for method in config.methods:
        learner = make_method(config, method)
        for seed in config.seeds:
            params, static, key = initialisation(config, seed)
            folder = run_dir(out_dir, method, seed)
            marker = folder / DIVERGED
            try:
                result = meta_train(
                    learner,
                    params,
                    static,
                    problem.loss_fn,
                    problem.train_tasks,
                    problem.points,
                    steps=config.meta_steps,
                    optimizer=optimizer,
                    key=key,
                    tasks_per_step=config.tasks_per_step,
                    run_dir=folder,
                    checkpoint_every=config.checkpoint_every,
                    resume=resume,
                    config=run_settings(config, method, seed),
                    progress=progress,
                    description=f"{method} seed {seed}",
                    stop_after=stop_after,
                )
            except NonFiniteLossError as error:
                if not keep_going:
                    raise
                write_json(
                    marker,
                    {"step": error.step, "tasks": error.tasks, "message": str(error),
                     "checkpoint_step": error.checkpoint_step},
                )  # fmt: skip
                log(f"{LABELS[method]}, seed {seed}: DIVERGED. {error}")
                results[method, seed] = None
                continue
            marker.unlink(missing_ok=True)  # a stale one, from a run with other settings
            trained = config.meta_steps - result.start_step
            if trained:
                log(
                    f"{LABELS[method]}, seed {seed}: {trained} meta-steps in "
                    f"{result.seconds:.1f} s, final query loss "
                    f"{np.mean(result.query_loss[-1]):.4g}"
                )
            results[method, seed] = result
    return results


# ---------------------------------------------------------------------------------------
# Evaluation.


def reference_fields(
    nus: tuple[float, ...],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The reference solutions for `nus` on the standard grid (float64), from the disk
    cache of [`metapinn.cached_reference_solution`][] when they are there. Computing
    one needs `jax_enable_x64` (the `metapinn` command turns it on at start-up).

    **Returns:** `(x, t, points, u)` with `u[b, i, j] = u(x[j], t[i]; nus[b])` and
    `points` the grid as `(len(t) * len(x), 2)` rows `(x, t)` in the same order.
    """
    x, t = (np.asarray(a, dtype=np.float64) for a in standard_grid())
    u = cached_reference_solution(np.asarray(nus, dtype=np.float64), x, t)
    points = np.asarray(grid_points(x, t, dtype=jnp.zeros(()).dtype), dtype=np.float64)
    return x, t, points, np.asarray(u, dtype=np.float64)


def _load_final(config, out_dir, method, seed, params, optimizer):
    folder = run_dir(out_dir, method, seed)
    if not (folder / CHECKPOINT).exists():
        raise FileNotFoundError(
            f"no checkpoint for {method} seed {seed} in {folder}: train it first "
            "(metapinn train, or metapinn reproduce)"
        )
    params, meta = load_initialisation(folder, params, optimizer)
    if meta["step"] != config.meta_steps:
        raise ConfigError(
            f"the {method} seed {seed} run in {folder} stopped at meta-step {meta['step']} "
            f"of {config.meta_steps}; finish it with --resume first"
        )
    settings = run_settings(config, method, seed)
    stored = meta.get("config") or {}
    bad = sorted(k for k in settings if k != "checkpoint_every" and stored.get(k) != settings[k])
    if bad:
        raise ConfigError(f"the checkpoint in {folder} was trained with other {', '.join(bad)}")
    return params


def _read_training_curve(folder: pathlib.Path, steps: int) -> np.ndarray:
    """Mean query loss per step, NaN-padded to `steps` (a diverged run stops early)."""
    rows = [json.loads(line) for line in (folder / METRICS).read_text().splitlines() if line]
    curve = np.full(steps, np.nan)
    curve[: len(rows)] = [np.mean(r["query_loss"]) for r in rows[:steps]]
    return curve


def evaluate_runs(
    config: ExperimentConfig,
    out_dir: str | os.PathLike,
    *,
    log: Callable[[str], None] = print,
    plots: bool = True,
    reference: concurrent.futures.Future | None = None,
) -> dict[str, Any]:
    """Few-shot evaluation of the trained initialisations in `out_dir` and of the
    random ones, against the reference; writes `results.json`, `results.md` and
    `plots/` there.

    Every initialisation gets the same adaptation: Adam at `eval_lr` on the same
    collocation points, read at `eval_steps`, on every held-out viscosity.

    `reference`, if given, is a future of [`metapinn.reference_fields`][] for
    `config.test_nus` (see [`metapinn.reproduce`][]).

    **Returns:** the results (as in `results.json`).

    A meta-training run that diverged (see [`metapinn.train_runs`][]) has no
    initialisation: its seed is left out of that method's statistics and flagged.

    **Raises:** `FileNotFoundError` if a run is missing; [`metapinn.ConfigError`][] if
    one is unfinished or was trained with other settings.
    """
    out_dir = pathlib.Path(out_dir)
    t0 = time.perf_counter()
    problem = build_problem(config)
    inits = ("random",) + tuple(config.methods)
    stacked = []
    static = None
    diverged = []
    for seed in config.seeds:
        params, static, _ = initialisation(config, seed)
        stacked.append(params)
        for method in config.methods:
            marker = run_dir(out_dir, method, seed) / DIVERGED
            if marker.exists():
                # No initialisation came out of this run; the random one stands in for
                # it in the vmapped evaluation, and its numbers are dropped below.
                diverged.append({"method": method, "seed": seed, **json.loads(marker.read_text())})
                stacked.append(params)
                continue
            stacked.append(
                _load_final(config, out_dir, method, seed, params, adam(config.outer_lr))
            )
    all_inits = jax.tree_util.tree_map(lambda *xs: jnp.asarray(np.stack(xs)), *stacked)

    log(
        f"adapting {len(inits)} initialisations x {len(config.seeds)} seeds on "
        f"{len(config.test_nus)} held-out viscosities for {config.eval_steps[-1]} Adam steps"
    )
    trace = few_shot(
        all_inits,
        static,
        problem.loss_fn,
        problem.test_tasks,
        problem.points,
        steps=config.eval_steps,
        optimizer=adam(config.eval_lr),
    )
    if reference is None:
        x, t, grid, u_ref = reference_fields(config.test_nus)
    else:
        x, t, grid, u_ref = reference.result()
    n_i, n_s, n_n, n_k = len(inits), len(config.seeds), len(config.test_nus), len(config.eval_steps)
    flat = jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.asarray(a).reshape((-1,) + a.shape[3:])), trace.params
    )
    task_index = np.broadcast_to(np.arange(n_n)[None, :, None], (n_s * n_i, n_n, n_k))
    dtype = jnp.dtype(config.dtype)
    grid = np.asarray(grid).reshape(len(t), len(x), 2)
    metrics = field_metrics(
        flat,
        static,
        problem.pde,
        problem.test_tasks,
        jnp.asarray(task_index.reshape(-1), dtype=jnp.int32),
        jnp.asarray(grid.reshape(-1, 2), dtype=dtype),
        jnp.asarray(u_ref.reshape(n_n, -1)),  # float64 when x64 is on
        jnp.asarray(grid[::RESIDUAL_STRIDE, ::RESIDUAL_STRIDE].reshape(-1, 2), dtype=dtype),
    )

    def arrange(a):  # (S*I, N, K) -> (I, S, N, K), a writable copy
        a = np.array(a, dtype=np.float64).reshape(n_s, n_i, n_n, n_k)
        return a.transpose(1, 0, 2, 3).copy()

    per_run = {
        "loss": arrange(trace.losses),
        "rms_residual": arrange(metrics.rms_residual),
        "rel_l2": arrange(metrics.rel_l2),
        "max_abs": arrange(metrics.max_abs),
    }
    valid = np.ones((n_i, n_s), dtype=bool)
    for d in diverged:
        valid[inits.index(d["method"]), config.seeds.index(d["seed"])] = False
    for values in per_run.values():
        values[~valid] = np.nan
    for name, values in per_run.items():
        if not np.all(np.isfinite(values[valid])):
            log(f"warning: some {name} values are not finite (an adaptation diverged)")
    eval_seconds = time.perf_counter() - t0
    results = summarise(config, inits, per_run, valid=valid, diverged=diverged)
    results["timing"] = {
        "evaluation_seconds": round(eval_seconds, 2),
        "training_seconds": _training_seconds(config, out_dir),
    }
    write_json(out_dir / "results.json", results)
    write_text(out_dir / "results.md", to_markdown(results))
    if plots:
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        curves = {}
        for m in config.methods:
            folders = [run_dir(out_dir, m, s) for s in config.seeds]
            curves[m] = np.stack([_read_training_curve(f, config.meta_steps) for f in folders])
        labels = [LABELS[i] for i in inits]
        _save(plot_meta_training(curves, {m: LABELS[m] for m in curves}), plot_dir, "meta_training")
        _save(plot_few_shot(config.eval_steps, per_run, labels), plot_dir, "few_shot")
        _save(
            plot_per_viscosity(config.test_nus, per_run["rel_l2"], labels, config.eval_steps,
                               config.budget),
            plot_dir,
            "per_viscosity",
        )  # fmt: skip
        # Fields for the first seed and the first held-out viscosity, at the budget.
        kb = config.eval_steps.index(config.budget)
        points = jnp.asarray(grid.reshape(-1, 2), dtype=dtype)
        fields = {}
        for i, init in enumerate(inits):
            if not valid[i, 0]:
                continue
            p = jax.tree_util.tree_map(lambda a, i=i: a[i, 0, kb], trace.params)
            fields[f"{LABELS[init]} + {config.budget} steps"] = pinn_field(p, static, points)
        if config.eval_steps[-1] != config.budget:
            p = jax.tree_util.tree_map(lambda a: a[0, 0, -1], trace.params)
            fields[f"{LABELS['random']} + {config.eval_steps[-1]} steps"] = pinn_field(
                p, static, points
            )
        fields = {
            k: np.asarray(v, dtype=np.float64).reshape(len(t), len(x)) for k, v in fields.items()
        }
        _save(
            plot_fields(x, t, u_ref[0], fields, config.test_nus[0], seed=config.seeds[0]),
            plot_dir,
            "fields",
        )
    return results


def _save(fig, folder: pathlib.Path, name: str) -> None:
    atomic_write(folder / f"{name}.png", lambda f: fig.savefig(f, format="png", dpi=110), True)


def _training_seconds(config: ExperimentConfig, out_dir: pathlib.Path) -> dict[str, float]:
    """Meta-training wall time per method, summed over its seeds, from the metrics
    files (their `seconds` column restarts from zero when a run is resumed)."""
    totals = {}
    for m in config.methods:
        total = 0.0
        for s in config.seeds:
            lines = (run_dir(out_dir, m, s) / METRICS).read_text().splitlines()
            previous = 0.0
            for line in lines:
                seconds = json.loads(line)["seconds"]
                if seconds < previous:  # a resumed segment starts
                    total += previous
                previous = seconds
            total += previous
        totals[m] = round(total, 2)
    return totals


def reproduce(
    config: ExperimentConfig | None = None,
    out_dir: str | os.PathLike | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    log: Callable[[str], None] = print,
    plots: bool = True,
) -> dict[str, Any]:
    """The whole experiment: meta-train every method for every seed, evaluate, write
    the results and plots into `out_dir`.

    A meta-training run whose loss turns non-finite stops (its last good checkpoint
    kept) and is reported as diverged; the other runs go on, and the statistics of
    that method are over its remaining seeds, flagged in every table.

    The reference solutions are computed (or read from the disk cache) in a
    background thread while the meta-training runs: the solver is independent of
    it, and compilation leaves a core free.

    **Arguments:**

    - `config`: an [`metapinn.ExperimentConfig`][]; `None` is workload W1.
    - `out_dir`: the run folder; `None` makes `runs/<name>-<date-time>`.
    - `resume`: continue an interrupted run in `out_dir`.
    - `progress`, `stop_after`, `log`: as for [`metapinn.train_runs`][].
    - `plots`: draw the plots into `out_dir/plots`.

    **Returns:** the results, as written to `results.json`.
    """
    config = ExperimentConfig() if config is None else config
    out_dir = default_out_dir(config) if out_dir is None else pathlib.Path(out_dir)
    log(f"run folder: {out_dir}")
    pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="metapinn-reference")
    try:
        reference = pool.submit(reference_fields, config.test_nus)
        train_runs(
            config,
            out_dir,
            resume=resume,
            progress=progress,
            stop_after=stop_after,
            log=log,
            keep_going=True,
        )
        return evaluate_runs(config, out_dir, log=log, plots=plots, reference=reference)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)


def default_out_dir(config: ExperimentConfig, kind: str = "") -> pathlib.Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / f"{config.name}{kind}-{stamp}"
