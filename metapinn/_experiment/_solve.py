"""`metapinn solve`: one family member, from a trained initialisation or from scratch,
with a chosen adapter, timed and judged against the family's reference."""

import json
import math
import os
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._conditioned import ConditionedLoss
from .._meta._adapters import AbstractAdapter, Optax
from .._pde._registry import family as get_family
from .._timed import record_steps, timed_adaptation
from ._adapter_evaluation import evaluation_adapter
from ._config import ConfigError, ExperimentConfig
from ._folder import RunFolder
from ._methods import EVAL_ADAPTERS
from ._problem import build_problem, eval_optimizer, experiment_tasks, initialisation
from ._workloads import workload


SOLVE_OPTIMIZERS = ("adam", "lbfgs", "gauss-newton")
"""The adapters `metapinn solve` offers."""
DEFAULT_STEPS = {"adam": 1000, "lbfgs": 500, "gauss-newton": 30}
"""Steps taken when `--steps` is not given."""
SCRATCH_WORKLOAD = "W3"
"""The network and points a from-scratch solve uses (the family's on W3)."""
SCRATCH_ADAM_LR = 1e-2
"""From scratch, Adam warms up to this rate in 20 steps, then decays (cosine) to a
hundredth of it over the run."""


def solve_adapter(optimizer: str, steps: int, config: ExperimentConfig, scratch: bool):
    """The adapter behind `--optimizer`: from a trained initialisation, Adam is the
    run's common adaptation schedule; from scratch, warm-up and cosine decay from
    `SCRATCH_ADAM_LR`. L-BFGS and Gauss–Newton are the evaluation's (`eval_damping`,
    `eval_cg_steps` of the run's config, or of W3 from scratch).

    **Raises:** [`metapinn.experiment.ConfigError`][] for an unknown name."""
    if optimizer == "adam":
        if not scratch:
            return Optax(eval_optimizer(config))
        warmup = min(20, max(steps - 1, 0))
        schedule = optax.warmup_cosine_decay_schedule(
            0.0, SCRATCH_ADAM_LR, warmup, max(steps, warmup + 1), SCRATCH_ADAM_LR / 100
        )
        return Optax(optax.adam(schedule))
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
      to the task, as the evaluation does); `None` (default)
      solves from scratch with W3's network on the family.
    - `optimizer`: `adam`, `lbfgs` or `gauss-newton` (default `adam`).
    - `steps`: adapter steps (default: `DEFAULT_STEPS[optimizer]`).
    - `seed`: which seed's initialisation (default 0).
    - `progress`: called with the number of steps just taken.
    - `plot`: draw `solve.png` (default True).

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
    steps = DEFAULT_STEPS[optimizer] if steps is None else steps
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ConfigError(f"--steps must be an integer >= 0, got {steps!r}")
    conditioned = False
    if init is None:
        config = workload(SCRATCH_WORKLOAD, family)
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
    adapter: AbstractAdapter = solve_adapter(optimizer, steps, config, init is None)
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
    adapted, trace = timed_adaptation(
        params, static, loss, one, problem.points, adapter=adapter,
        steps=record_steps(steps), points=grid, u_ref=jnp.asarray(u_ref.ravel()),
        progress=progress,
    )  # fmt: skip
    result = {
        "family": family,
        "task": value,
        "task_label": label,
        "optimizer": optimizer,
        "adapter": repr(adapter),
        "steps": steps,
        "seconds": trace.seconds[-1],
        "rel_l2": trace.rel_l2[-1],
        "compile_seconds": trace.compile_seconds,
        "init": init if init is not None else "random (from scratch)",
        "seed": seed,
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

        model = eqx.combine(adapted, static)
        if isinstance(loss, ConditionedLoss):
            model = loss.bind(model, one)
        u = np.asarray(model(grid), np.float64).reshape(u_ref.shape)
        fig = plot_solve(x, t, u_ref, u, trace, f"{family}, {label}, {optimizer}")
        fig.savefig(out / "solve.png", dpi=120)
    return result
