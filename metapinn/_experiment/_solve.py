"""`metapinn solve`: one family member, from a trained initialisation or from scratch,
with a chosen adapter, timed and judged against the family's reference."""

import dataclasses
import json
import math
import os
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from .._conditioned import ConditionedLoss
from .._loss import pinn_loss
from .._meta._adapters import AbstractAdapter, Optax
from .._pde._registry import family as get_family
from .._sampling import sample_collocation
from .._time_marching import train_marching
from .._timed import TimedTrace, record_steps, timed_adaptation
from .._train_pinn import train_pinn
from ._adapter_evaluation import evaluation_adapter
from ._config import ConfigError, ExperimentConfig
from ._folder import RunFolder
from ._methods import EVAL_ADAPTERS
from ._problem import build_problem, eval_optimizer, experiment_tasks, initialisation
from ._recipes import Recipe, recipe


SOLVE_OPTIMIZERS = ("adam", "lbfgs", "gauss-newton")
"""The adapters `metapinn solve` offers."""
DEFAULT_STEPS = {"adam": 1000, "lbfgs": 500, "gauss-newton": 30}
"""Steps taken from a trained initialisation when `--steps` is not given (from
scratch, Adam takes the family's recipe's steps)."""


def default_steps(family: str, optimizer: str, init: str | None) -> int:
    """The steps a solve takes when `--steps` is not given: from scratch with Adam,
    the family's recipe's; else `DEFAULT_STEPS[optimizer]`."""
    if init is None and optimizer == "adam":
        return recipe(family).steps
    return DEFAULT_STEPS.get(optimizer, 0)


def solve_adapter(optimizer: str, steps: int, config: ExperimentConfig, scratch: bool):
    """The adapter behind `--optimizer` (Adam from a trained initialisation: the
    run's common adaptation schedule; from scratch Adam is the recipe's training, not
    an adapter). L-BFGS and Gauss–Newton are the evaluation's (`eval_damping`,
    `eval_cg_steps`, `eval_preconditioner` of the run's config, or of W3 from scratch).

    **Raises:** [`metapinn.experiment.ConfigError`][] for an unknown name."""
    del steps, scratch
    if optimizer == "adam":
        return Optax(eval_optimizer(config))
    if optimizer in EVAL_ADAPTERS:
        return evaluation_adapter(optimizer, config)
    raise ConfigError(f"unknown optimizer {optimizer!r}; choose one of {list(SOLVE_OPTIMIZERS)}")


def _one_task(fam, config: ExperimentConfig, value: str) -> tuple[Any, str, Any]:
    """The task `value` names: a parameter value of a scalar family, or the index of a
    held-out drawn function. **Returns:** `(task, label, value)`."""
    dtype = jnp.dtype(config.dtype)
    if fam.scalar:
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(
                f"--task {value!r}: {fam.name} takes a value of its parameter "
                f"{fam.parameter} (a number)"
            ) from None
        if not math.isfinite(number):
            raise ConfigError(f"--task {value!r}: {fam.parameter} must be finite")
        try:
            tasks = fam.tasks((number,), dtype=dtype)
        except ValueError as e:
            raise ConfigError(f"--task {value!r}: {e}") from None
        return jax.tree_util.tree_map(lambda a: a[0], tasks), f"{fam.parameter}={number:g}", number
    try:
        index = int(value)
    except ValueError:
        index = -1
    if not 0 <= index < config.n_test_tasks:
        raise ConfigError(
            f"--task {value!r}: {fam.name}'s tasks are its held-out drawn functions, "
            f"an index from 0 to {config.n_test_tasks - 1}"
        )
    _, test = experiment_tasks(config)
    task = jax.tree_util.tree_map(lambda a: a[index], test)
    return task, f"u0 #{index}", index


def _init_source(init: str) -> tuple[pathlib.Path, str]:
    """`RUN:METHOD` split at its last colon (a folder may contain one)."""
    folder, sep, method = init.rpartition(":")
    if not sep or not folder or not method or pathlib.Path(init).is_dir():
        raise ConfigError(
            f"--init {init!r}: give RUN:METHOD, a finished run folder and one of its methods "
            "(e.g. runs/W3:cond-multitask)"
        )
    return pathlib.Path(folder), method


def solve(
    family: str,
    task: str,
    out_dir: str | os.PathLike,
    *,
    init: str | None = None,
    optimizer: str = "adam",
    steps: int | None = None,
    seed: int = 0,
    progress: Callable[[int], object] | None = None,
    plot: bool = True,
    with_recipe: Recipe | None = None,
) -> dict[str, Any]:
    """Solve one member of a family: adapt a trained initialisation to it (or train a
    random one from scratch) with one adapter, timed, against the reference; write
    `solve.json` (and `solve.png`: field, reference, error) into `out_dir`.

    **Arguments:**

    - `family`: a family's name (`metapinn families`).
    - `task`: the parameter's value (a string, as typed), or for a function family the
      index of one of its held-out drawn functions.
    - `out_dir`: the output folder (created; an existing `solve.json` is replaced).
    - `init`: `RUN:METHOD`, the initialisation of `METHOD` for `seed` in the finished
      run folder `RUN` (a conditioned one adapts all its parameters and is measured bound
      to the task, as the evaluation does); `None` (default) solves from scratch with
      the family's recipe ([`metapinn.experiment.Recipe`][]): with Adam, its network,
      loss and schedule, points re-drawn every step; with L-BFGS or Gauss–Newton, its
      network and loss on one fixed draw of its points.
    - `optimizer`: `adam`, `lbfgs` or `gauss-newton` (default `adam`).
    - `steps`: adapter steps (default: `default_steps(family, optimizer, init)`).
    - `seed`: which seed's initialisation (default 0).
    - `progress`: called with the number of steps just taken.
    - `plot`: draw `solve.png` (default True).
    - `with_recipe`: a [`metapinn.experiment.Recipe`][] to solve from scratch with,
      instead of the family's (e.g. a variant of it, as `benchmarks/recipe_ablation.py`
      makes); its `steps` are the default `steps`.

    **Returns:** the dict written to `solve.json`: `family`, `task`, `optimizer`,
    `steps`, `seconds`, `rel_l2` (final), `compile_seconds`, `init`, and the curve
    (`curve.steps`, `curve.seconds`, `curve.rel_l2`, `curve.loss`).

    **Raises:** [`metapinn.experiment.ConfigError`][] naming the bad value: an unknown family or
    optimizer, a task outside the family's valid range, steps < 0, a bad or mismatched
    init.
    """
    try:
        fam = get_family(family)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if optimizer not in SOLVE_OPTIMIZERS:
        raise ConfigError(
            f"unknown optimizer {optimizer!r}; choose one of {list(SOLVE_OPTIMIZERS)}"
        )
    the_recipe = recipe(family) if with_recipe is None else with_recipe
    if steps is None:
        steps = default_steps(family, optimizer, init)
        if with_recipe is not None and init is None and optimizer == "adam":
            steps = with_recipe.steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"--steps must be an integer >= 0, got {steps!r}")
    conditioned = False
    if init is None:
        config = the_recipe.config(family)
        params, static, _ = initialisation(config, seed)
    else:
        path, method = _init_source(init)
        run = RunFolder(path)
        try:
            config = run.read_config()
        except ConfigError as e:
            raise ConfigError(f"--init: {e}") from None
        if config.family != family:
            raise ConfigError(
                f"--init {init!r} was trained on the family {config.family!r}, not {family!r}"
            )
        if method not in config.methods:
            raise ConfigError(
                f"--init {init!r}: that run has no method {method!r}; it has "
                f"{', '.join(config.methods)}"
            )
        if seed not in config.seeds:
            raise ConfigError(f"--seed {seed}: the run has seeds {list(config.seeds)}")
        conditioned = config.method(method).conditioned
        like, static, _ = initialisation(config, seed, conditioned)
        params = run.load_trained(config, method, seed, like)
    one, label, value = _one_task(fam, config, task)
    problem = build_problem(config)
    # A conditioned network adapts all its parameters through its own loss and is
    # measured bound to the task: what the few-shot evaluation does.
    loss = problem.loss(conditioned)
    x = np.linspace(problem.pde.x_min, problem.pde.x_max, 256)
    t = np.linspace(problem.pde.t_min, problem.pde.t_max, 101)
    batch_of_one = jax.tree_util.tree_map(lambda a: jnp.asarray(a)[None], one)
    if fam.scalar:  # the value as typed, not its rounding to the training dtype
        batch_of_one = eqx.tree_at(
            lambda t: getattr(t, fam.parameter), batch_of_one, np.asarray([value])
        )
    u_ref = np.asarray(fam.reference(batch_of_one, x, t), np.float64)[0]
    xx, tt = np.meshgrid(x, t)
    grid = jnp.asarray(np.stack([xx.ravel(), tt.ravel()], 1), jnp.dtype(config.dtype))
    extra: dict[str, Any] = {}
    trained: Any = None
    if init is None and optimizer == "adam":
        trained, trace, weights = _train_from_scratch(
            the_recipe, problem.pde, one, params, static, config, steps, seed, grid,
            u_ref, progress,
        )  # fmt: skip
        description = (
            "the family's recipe (metapinn families --recipes)"
            if with_recipe is None
            else "a recipe of the caller's"
        )
        extra = {"recipe": dataclasses.asdict(the_recipe), "final_weights": weights}
    else:
        adapter: AbstractAdapter = solve_adapter(optimizer, steps, config, init is None)
        adapted, trace = timed_adaptation(
            params, static, loss, one, problem.points, adapter=adapter,
            steps=record_steps(steps), points=grid, u_ref=jnp.asarray(u_ref.ravel()),
            progress=progress,
        )  # fmt: skip
        description = repr(adapter)
        trained = eqx.combine(adapted, static)
        if isinstance(loss, ConditionedLoss):
            trained = loss.bind(trained, one)
        if init is None:
            extra = {"recipe": dataclasses.asdict(the_recipe)}
    result = {
        "family": family,
        "task": value,
        "task_label": label,
        "optimizer": optimizer,
        "adapter": description,
        "steps": steps,
        "seconds": trace.seconds[-1],
        "rel_l2": trace.rel_l2[-1],
        "compile_seconds": trace.compile_seconds,
        "init": init if init is not None else "random (from scratch)",
        "seed": seed,
        **extra,
        "curve": {
            "steps": list(trace.steps),
            "seconds": list(trace.seconds),
            "rel_l2": list(trace.rel_l2),
            "loss": list(trace.loss),
        },
    }
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "solve.json").write_text(json.dumps(result, indent=1) + "\n")
    if plot:
        from .._plots import plot_solve

        u = np.asarray(trained(grid), np.float64).reshape(u_ref.shape)
        fig = plot_solve(x, t, u_ref, u, trace, f"{family}, {label}, {optimizer}")
        fig.savefig(out / "solve.png", dpi=120)
    return result


def _train_from_scratch(
    the_recipe: Recipe, pde, task, params, static, config, steps, seed, grid, u_ref, progress
):
    """The recipe's training of the random initialisation on one task (window by window
    if it marches in time), recorded as a [`metapinn.training.TimedTrace`][]: rel-L2 on
    the grid after every chunk of steps. **Returns:** `(model, trace, final weights)`."""
    u_ref_flat = jnp.asarray(u_ref.ravel(), grid.dtype)
    norm = jnp.linalg.norm(u_ref_flat)
    predict = eqx.filter_jit(lambda m: jnp.linalg.norm(m(grid) - u_ref_flat) / norm)

    def sampler(key, window):
        return sample_collocation(
            key, window, n_interior=config.n_interior, n_initial=config.n_initial,
            n_boundary=config.n_boundary, dtype=config.dtype,
        )  # fmt: skip

    model = eqx.combine(params, static)
    start = float(predict(model))
    start_batch = sampler(jr.fold_in(jr.key(seed), 2), pde)
    loss_at = eqx.filter_jit(pinn_loss)
    start_loss = float(
        loss_at(model, pde, task, start_batch, the_recipe.weights, the_recipe.causal)
    )
    chunk = the_recipe.balance_every or min(500, max(steps, 1))
    done = [0]

    def report(n: int, _loss: float) -> None:
        if progress is not None:
            progress(n - done[0])
        done[0] = n

    common: dict[str, Any] = dict(
        steps=steps, optimizer=the_recipe.optimizer(steps), key=jr.fold_in(jr.key(seed), 1),
        weights=the_recipe.weights, causal=the_recipe.causal, balance=the_recipe.balance,
        chunk=chunk, evaluate=lambda m: float(predict(m)), progress=report,
        finisher=the_recipe.finisher, finish_steps=the_recipe.finish_steps,
    )  # fmt: skip
    if the_recipe.windows > 1:
        model, logs = train_marching(
            model, pde, task, sampler, windows=the_recipe.windows, **common
        )
        weights = [list(log.weights[-1]) for log in logs]
    else:
        model, lam, log = train_pinn(model, pde, task, lambda key: sampler(key, pde), **common)
        logs, weights = [log], [float(w) for w in np.asarray(lam)]
    # One curve across the windows: each window's steps and seconds after the last's.
    curve_steps, curve_seconds, evaluation, losses = [0], [0.0], [start], [start_loss]
    offset_steps, offset_seconds = 0, 0.0
    for log in logs:
        curve_steps += [offset_steps + s for s in log.steps]
        curve_seconds += [offset_seconds + s for s in log.seconds]
        evaluation += list(log.evaluation)
        losses += list(log.loss)
        offset_steps, offset_seconds = curve_steps[-1], curve_seconds[-1]
    trace = TimedTrace(
        steps=tuple(curve_steps),
        seconds=tuple(curve_seconds),
        rel_l2=tuple(evaluation),
        loss=tuple(losses),
        compile_seconds=sum(log.compile_seconds for log in logs),
    )
    return model, trace, weights
