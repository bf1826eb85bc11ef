"""The experiment behind `metapinn reproduce`: its configuration and its pipeline.

1. Meta-train each method (MAML, first-order MAML, Reptile, multi-task) for each seed,
   every method starting from the same random initialisation of that seed, on the
   same collocation points, for the same number of outer steps.
2. Adapt every initialisation (and the random one) to each held-out viscosity with
   Adam, in one scan per run, reading it at the step counts `eval_steps`.
3. Measure the PINN loss, the RMS PDE residual and the relative L2 error against the
   reference solution on the standard grid; summarise over seeds; write the tables
   (JSON, Markdown) and the plots.

A run lives in one folder: `config.json`, `train/<method>/seed<s>/` (checkpoint and
metrics), `results.json`, `results.md` and `plots/`.
"""

import concurrent.futures
import dataclasses
import functools
import json
import math
import os
import pathlib
import re
import time
import typing
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from ._checkpoint import atomic_write, write_json, write_text
from ._evaluate import few_shot, field_metrics, pinn_field
from ._loss import PINNLoss
from ._meta._base import AbstractMetaLearner
from ._meta._methods import METHODS, make_learner
from ._pde._burgers import Burgers, BurgersTask
from ._pinn import MLPPINN
from ._plots import plot_few_shot, plot_fields, plot_meta_training, plot_per_viscosity
from ._reference import cached_reference_solution, grid_points, standard_grid
from ._run import (
    CHECKPOINT,
    METRICS,
    RESUMABLE_KEYS,
    MetaTrainResult,
    NonFiniteLossError,
    load_initialisation,
    meta_train,
)
from ._sampling import CollocationBatch, sample_collocation


_W1_ALL = np.linspace(0.005, 0.05, 12)
W1_TRAIN_NUS = tuple(float(v) for v in _W1_ALL[::2])
W1_TEST_NUS = tuple(float(v) for v in _W1_ALL[1::2][:4])

LABELS = {
    "random": "Random init",
    "maml": "MAML",
    "fomaml": "First-order MAML",
    "reptile": "Reptile",
    "multitask": "Multi-task",
}
RESIDUAL_STRIDE = 2
"""The RMS residual is taken on every `RESIDUAL_STRIDE`-th point of the reference grid
in x and in t (128 x 51 of the 256 x 101 points): it needs second derivatives."""
DIVERGED = "diverged.json"
"""Written into a run's folder when its meta-training stopped on a non-finite loss."""
EVALUATION_KEYS = ("test_nus", "eval_steps", "eval_lr", "budget", "eps")
"""Settings that only change the evaluation, not the meta-training."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


def _field(default, help: str):
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a meta-learning experiment; the defaults are workload W1.

    Construct it with keywords, from a dict ([`metapinn.ExperimentConfig.from_dict`][])
    or from a JSON file ([`metapinn.load_config`][]). Values are checked on
    construction.

    **Raises:** [`metapinn.ConfigError`][] naming the first bad value.
    """

    name: str = _field("W1", "label of the run (used in the default output folder name)")
    width: int = _field(32, "neurons per hidden layer")
    depth: int = _field(2, "number of hidden layers")
    dtype: str = _field("float32", "float dtype for training and adaptation: float32 or float64")
    n_interior: int = _field(200, "interior collocation points (PDE residual)")
    n_initial: int = _field(50, "collocation points on t = 0 (initial condition)")
    n_boundary: int = _field(20, "collocation points on each boundary x = -1, x = 1")
    points_seed: int = _field(0, "seed of the collocation points, drawn once for all methods")
    train_nus: tuple[float, ...] = _field(W1_TRAIN_NUS, "training viscosities")
    test_nus: tuple[float, ...] = _field(W1_TEST_NUS, "held-out viscosities for evaluation")
    methods: tuple[str, ...] = _field(
        ("maml", "fomaml", "reptile", "multitask"),
        "meta-learning methods: maml, fomaml, reptile, multitask",
    )
    inner_steps: int = _field(5, "inner-loop steps K (not used by multitask)")
    inner_optimizer: str = _field("sgd", "inner-loop optimiser: sgd or adam")
    inner_lr: float = _field(0.01, "inner-loop learning rate")
    outer_lr: float = _field(1e-3, "outer (meta) Adam learning rate")
    meta_steps: int = _field(500, "outer steps per method and seed")
    tasks_per_step: int = _field(6, "training tasks per outer step")
    seeds: tuple[int, ...] = _field((0, 1, 2), "seeds of the random initialisation")
    checkpoint_every: int = _field(100, "write a checkpoint every this many outer steps")
    eval_steps: tuple[int, ...] = _field(
        (0, 10, 20, 50, 100, 200, 500, 1000),
        "adaptation step counts k at which the few-shot curve is read",
    )
    eval_lr: float = _field(1e-3, "Adam learning rate of the few-shot adaptation")
    budget: int = _field(100, "the few-shot budget k of the results table (one of eval_steps)")
    eps: tuple[float, ...] = _field(
        (0.8, 0.6, 0.5, 0.4), "relative-L2 targets for the 'steps to eps' table"
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
        self._check()

    def _check(self):
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            _fail("name", self.name, "use letters, digits, '.', '_' or '-'")
        for key in ("width", "depth", "n_interior", "n_initial", "n_boundary"):
            _at_least(key, getattr(self, key), 1)
        for key in ("points_seed", "inner_steps", "meta_steps"):
            _at_least(key, getattr(self, key), 0)
        _at_least("checkpoint_every", self.checkpoint_every, 1)
        if self.dtype not in ("float32", "float64"):
            _fail("dtype", self.dtype, "choose float32 or float64")
        for key in ("train_nus", "test_nus"):
            values = getattr(self, key)
            if not values:
                _fail(key, values, "give at least one viscosity")
            for nu in values:
                if not (math.isfinite(nu) and nu > 0):
                    _fail(key, nu, "every viscosity nu must be finite and > 0")
        if not self.methods:
            _fail("methods", self.methods, f"choose one or more of {sorted(METHODS)}")
        for m in self.methods:
            if m not in METHODS:
                _fail("methods", m, f"unknown method; choose from {sorted(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            _fail("methods", self.methods, "a method is listed twice")
        if self.inner_optimizer not in ("sgd", "adam"):
            _fail("inner_optimizer", self.inner_optimizer, "choose sgd or adam")
        for key in ("inner_lr", "outer_lr", "eval_lr"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                _fail(key, value, "a learning rate must be finite and > 0")
        if not 1 <= self.tasks_per_step <= len(self.train_nus):
            _fail(
                "tasks_per_step",
                self.tasks_per_step,
                f"must be between 1 and the number of training viscosities ({len(self.train_nus)})",
            )
        if not self.seeds:
            _fail("seeds", self.seeds, "give at least one seed")
        for s in self.seeds:
            _at_least("seeds", s, 0)
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", self.seeds, "a seed is listed twice")
        if not self.eval_steps:
            _fail("eval_steps", self.eval_steps, "give at least one step count")
        for k in self.eval_steps:
            _at_least("eval_steps", k, 0)
        if list(self.eval_steps) != sorted(set(self.eval_steps)):
            _fail("eval_steps", self.eval_steps, "must be strictly increasing")
        if self.budget not in self.eval_steps:
            _fail("budget", self.budget, f"must be one of eval_steps {list(self.eval_steps)}")
        if not self.eps:
            _fail("eps", self.eps, "give at least one target")
        for e in self.eps:
            if not (math.isfinite(e) and e > 0):
                _fail("eps", e, "a target must be finite and > 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Build a config from plain data (e.g. parsed JSON); missing keys take their
        defaults. **Raises:** [`metapinn.ConfigError`][] for unknown keys or bad values."""
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(types))
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(map(repr, unknown))}; known keys: "
                + ", ".join(sorted(types))
            )
        return cls(**{k: _coerce(k, types[k], v) for k, v in data.items()})

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists for tuples), as stored in `config.json`."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }

    def replace(self, **changes) -> "ExperimentConfig":
        """A copy with some values changed (and checked)."""
        return self.from_dict({**self.to_dict(), **changes})


def _fail(key: str, value: Any, why: str) -> typing.NoReturn:
    raise ConfigError(f"config value {key}={value!r} is invalid: {why}")


def _at_least(key: str, value: int, low: int) -> None:
    if value < low:
        _fail(key, value, f"must be an integer >= {low}")


def _coerce(key: str, kind: Any, value: Any) -> Any:
    """Check the type of one value, turning lists into tuples and ints into floats."""
    if typing.get_origin(kind) is tuple:
        (item, _) = typing.get_args(kind)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            _fail(key, value, f"expected a list of {item.__name__}")
        return tuple(_coerce(key, item, v) for v in value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            _fail(key, value, "expected an integer")
        return int(value)
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            _fail(key, value, "expected a number")
        return float(value)
    if kind is str:
        if not isinstance(value, str):
            _fail(key, value, "expected a string")
        return value
    raise TypeError(f"unsupported config field type {kind!r}")  # pragma: no cover


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read an [`metapinn.ExperimentConfig`][] from a JSON file (missing keys take
    their defaults). **Raises:** [`metapinn.ConfigError`][] naming the file and the
    problem."""
    path = pathlib.Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    try:
        return ExperimentConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


QUICK = {
    "meta_steps": 20,
    "seeds": (0, 1),
    "checkpoint_every": 10,
    "eval_steps": (0, 10, 20, 50, 100),
    "budget": 10,
}
"""Overrides for a smoke run (`--quick`): a minute, not meaningful numbers."""


def quick(config: ExperimentConfig) -> ExperimentConfig:
    """`config` shrunk to a smoke run (see `QUICK`)."""
    return config.replace(**QUICK)


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


# ---------------------------------------------------------------------------------------
# Summaries and tables.


def _mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation over axis 0 (NaN if it is empty)."""
    n = a.shape[0]
    if n == 0:
        nan = np.full(a.shape[1:], np.nan)
        return nan, nan
    return a.mean(axis=0), a.std(axis=0, ddof=1 if n > 1 else 0)


def _stat(mean: float, std: float) -> dict[str, float | None]:
    def clean(v):
        v = float(v)
        return v if math.isfinite(v) else None

    return {"mean": clean(mean), "std": clean(std)}


def _steps_to(curve: np.ndarray, steps: tuple[int, ...], eps: float) -> int | None:
    reached = np.flatnonzero(curve <= eps)
    return int(steps[reached[0]]) if reached.size else None


def _speedup(k_random: int | None, k_method: int | None, k_max: int) -> dict[str, Any]:
    """Steps random init needs ÷ steps the method needs, with what is known of it."""
    if k_method is None:
        return {"value": None, "relation": "not reached"}
    if k_method == 0:
        if k_random == 0:
            return {"value": 1.0, "relation": "="}
        return {"value": None, "relation": "no steps needed"}
    if k_random is None:
        return {"value": k_max / k_method, "relation": ">"}
    return {"value": k_random / k_method, "relation": "="}


def summarise(
    config: ExperimentConfig,
    inits: tuple[str, ...],
    per_run: dict[str, np.ndarray],
    *,
    valid: np.ndarray | None = None,
    diverged: list[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Tables from the raw measurements.

    **Arguments:** the config, the initialisations (`"random"` first), arrays
    `(init, seed, held-out nu, k)` named `loss`, `rms_residual`, `rel_l2`, `max_abs`;
    `valid`, `(init, seed)`, false where a meta-training diverged (those seeds are left
    out of that method's statistics), and the `diverged` runs' records.

    **Returns:** plain data: per-`k` curves, the results table, steps to each `eps`
    with speed-ups over random init, per-viscosity errors, and the verdict.

    Each summary statistic is the mean over seeds, ± the sample standard deviation
    over seeds, of the average over the held-out viscosities.
    """
    steps = config.eval_steps
    n_i, n_s = len(inits), len(config.seeds)
    valid = np.ones((n_i, n_s), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    per_seed = {name: a.mean(axis=2) for name, a in per_run.items()}  # (I, S, K)
    stats = {  # name -> (mean, std), each (I, K), over the valid seeds of each init
        name: tuple(np.stack(z) for z in zip(*(_mean_std(a[i, valid[i]]) for i in range(n_i)),
                                              strict=True))
        for name, a in per_seed.items()
    }  # fmt: skip
    n_seeds = {init: int(valid[i].sum()) for i, init in enumerate(inits)}

    def entry(i: int, k_index: int) -> dict[str, Any]:
        return {
            name: _stat(stats[name][0][i, k_index], stats[name][1][i, k_index])
            for name in ("loss", "rms_residual", "rel_l2", "max_abs")
        }

    curves = {
        init: [{"steps": k, **entry(i, j)} for j, k in enumerate(steps)]
        for i, init in enumerate(inits)
    }
    kb = steps.index(config.budget)
    table = []
    for i, init in list(enumerate(inits))[1:] + [(0, "random")]:
        table.append({"init": init, "method": LABELS[init], "steps": config.budget,
                      "seeds": n_seeds[init], **entry(i, kb)})  # fmt: skip
    if steps[-1] != config.budget:
        table.append({"init": "random", "method": LABELS["random"], "steps": steps[-1],
                      "seeds": n_seeds["random"], **entry(0, len(steps) - 1)})  # fmt: skip

    mean_curve = stats["rel_l2"][0]  # (I, K): over valid seeds and all nus
    steps_to_eps = []
    for eps in config.eps:
        k_random = _steps_to(mean_curve[0], steps, eps)
        for i, init in enumerate(inits):
            k = _steps_to(mean_curve[i], steps, eps)
            row = {"eps": eps, "init": init, "steps": k}
            if init != "random":
                row["speedup"] = _speedup(k_random, k, steps[-1])
            steps_to_eps.append(row)

    rel = per_run["rel_l2"]  # (I, S, N, K)
    picks = [(i, kb) for i in range(n_i)]
    if steps[-1] != config.budget:
        picks.append((0, len(steps) - 1))
    per_viscosity = [
        {
            "init": inits[i],
            "steps": steps[k],
            "rel_l2": [
                _stat(m, s) for m, s in zip(*_mean_std(rel[i, valid[i], :, k]), strict=True)
            ],
        }
        for i, k in picks
    ]
    return {
        "config": config.to_dict(),
        "inits": list(inits),
        "labels": {i: LABELS[i] for i in inits},
        "steps": list(steps),
        "test_nus": list(config.test_nus),
        "seeds": list(config.seeds),
        "table": table,
        "curves": curves,
        "steps_to_eps": steps_to_eps,
        "per_viscosity": per_viscosity,
        "verdict": _verdict(config, inits, stats["rel_l2"], n_seeds, n_s),
        "seeds_used": n_seeds,
        "diverged": [
            {k: d[k] for k in ("method", "seed", "step", "tasks", "checkpoint_step")}
            for d in diverged
        ],
        "per_run": {name: _json_array(a) for name, a in per_run.items()},
        "per_run_axes": ["init", "seed", "test_nu", "steps"],
    }


def _json_array(a: np.ndarray) -> list:
    """Nested lists with `None` for non-finite entries (JSON has no NaN)."""
    return np.where(np.isfinite(a), a, None).tolist()


def _verdict(
    config: ExperimentConfig,
    inits,
    rel: tuple[np.ndarray, np.ndarray],
    n_seeds: dict[str, int],
    n_total: int,
) -> list[str]:
    """Plain sentences: does each meta-initialisation + budget steps beat random init +
    the longest adaptation, and multi-task + budget steps, in relative L2?"""
    mean, std = rel
    steps = config.eval_steps
    kb = steps.index(config.budget)
    lines = []

    def compare(i, j, kj, what):
        a, sa, b, sb = mean[i, kb], std[i, kb], mean[j, kj], std[j, kj]
        if not (math.isfinite(a) and math.isfinite(b)):
            return f"{what}: not comparable (non-finite errors)"
        word = "beats" if a < b else "does not beat"
        close = " (within the seed spread)" if abs(a - b) <= sa + sb else ""
        return f"{word} {what} ({a:.3g} vs {b:.3g}){close}"

    for i, init in enumerate(inits):
        if init in ("random", "multitask"):
            continue
        parts = []
        if steps[-1] != config.budget:
            parts.append(compare(i, 0, len(steps) - 1, f"random init + {steps[-1]} steps"))
        if "multitask" in inits:
            parts.append(compare(i, inits.index("multitask"), kb, f"multi-task + {config.budget}"))
        parts.append(compare(i, 0, kb, f"random init + {config.budget}"))
        note = ""
        if n_seeds[init] < n_total:
            note = f" [{n_total - n_seeds[init]} of {n_total} seeds diverged in meta-training]"
        lines.append(f"{LABELS[init]} + {config.budget} steps " + "; ".join(parts) + "." + note)
    return lines


def _fmt(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None:
        return "non-finite"
    if stat["std"] is None:
        return f"{stat['mean']:.3g}"
    return f"{stat['mean']:.3g} ± {stat['std']:.2g}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _speedup_text(s: dict[str, Any]) -> str:
    if s["relation"] == "=":
        return f"{s['value']:.3g}×"
    if s["relation"] == ">":
        return f"> {s['value']:.3g}×"
    return s["relation"]


def results_table(results: dict[str, Any]) -> str:
    """The main table (Markdown): method, steps, loss, residual, relative L2 error."""
    total = len(results["seeds"])
    rows = []
    for r in results["table"]:
        name = r["method"]
        if r.get("seeds", total) < total:
            name += f" ({r['seeds']}/{total} seeds: see diverged)"
        rows.append(
            [name, str(r["steps"]), _fmt(r["loss"]), _fmt(r["rms_residual"]), _fmt(r["rel_l2"])]
        )
    header = ["Method", "Steps", "PINN loss", "PDE residual (RMS)", "rel-L2 vs reference"]
    return _md_table(header, rows)


def steps_to_eps_table(results: dict[str, Any]) -> str:
    """Steps to each target error, and the speed-up over random init (Markdown)."""
    inits, eps = results["inits"], results["config"]["eps"]
    cell = {(r["init"], r["eps"]): r for r in results["steps_to_eps"]}
    rows = []
    for init in inits:
        row = [results["labels"][init]]
        for e in eps:
            r = cell[init, e]
            k = f"> {results['steps'][-1]}" if r["steps"] is None else str(r["steps"])
            row.append(k if init == "random" else f"{k} ({_speedup_text(r['speedup'])})")
        rows.append(row)
    return _md_table(["Initialisation"] + [f"ε = {e:g}" for e in eps], rows)


def to_markdown(results: dict[str, Any]) -> str:
    """`results.md`: every table of a run, with the definitions."""
    c = results["config"]
    n_seeds, steps, labels = len(results["seeds"]), results["steps"], results["labels"]
    nus = ", ".join(f"{nu:.4g}" for nu in results["test_nus"])
    out = [
        f"# metapinn results: {c['name']}",
        "",
        f"{len(c['methods'])} methods meta-trained for {c['meta_steps']} outer steps "
        f"(K = {c['inner_steps']} inner {c['inner_optimizer']} steps at {c['inner_lr']:g}; "
        f"outer Adam at {c['outer_lr']:g}; {c['tasks_per_step']} of "
        f"{len(c['train_nus'])} training viscosities per step), from the random "
        f"initialisation of each seed ({', '.join(map(str, results['seeds']))}). Each "
        f"initialisation is then adapted with Adam at {c['eval_lr']:g} on the held-out "
        f"viscosities nu = {nus}, on the same {c['n_interior']}/{c['n_initial']}/"
        f"{c['n_boundary']}-per-side collocation points.",
        "",
        f"Values: mean ± sample standard deviation over {n_seeds} seed(s) of the average "
        "over the held-out viscosities. *PINN loss*: the training objective on the "
        "collocation points. *PDE residual*: RMS of the Burgers residual on the "
        "256 × 101 reference grid. *rel-L2*: ‖u_PINN − u_ref‖₂ / ‖u_ref‖₂ on that grid, "
        "against the reference solution.",
        "",
        f"## Results after {c['budget']} adaptation steps",
        "",
        results_table(results),
        "",
        "## Verdict (relative L2 error, means over seeds)",
        "",
        *[f"- {line}" for line in results["verdict"]],
        "",
        *_diverged_lines(results),
        "## Steps to ε (speed-up over random init)",
        "",
        "The fewest recorded steps k whose seed-and-viscosity-averaged rel-L2 is ≤ ε "
        f"(k is read only at {steps}); speed-up = random init's steps ÷ the method's.",
        "",
        steps_to_eps_table(results),
        "",
    ]
    for name, title in (("rel_l2", "rel-L2 vs reference"), ("loss", "PINN loss"),
                        ("rms_residual", "PDE residual (RMS)")):  # fmt: skip
        rows = [
            [labels[i]] + [_fmt(e[name]) for e in results["curves"][i]] for i in results["inits"]
        ]
        out += [f"## Few-shot curve: {title} after k steps", "",
                _md_table(["Initialisation"] + [f"k={k}" for k in steps], rows), ""]  # fmt: skip
    rows = [
        [f"{labels[r['init']]} + {r['steps']}"] + [_fmt(s) for s in r["rel_l2"]]
        for r in results["per_viscosity"]
    ]
    out += [
        "## rel-L2 per held-out viscosity",
        "",
        _md_table(["Initialisation"] + [f"nu={nu:.4g}" for nu in results["test_nus"]], rows),
        "",
    ]
    timing = results.get("timing")
    if timing:
        train = ", ".join(
            f"{labels.get(m, m)} {s:.1f} s" for m, s in timing["training_seconds"].items()
        )
        out += [
            "## Cost",
            "",
            f"Meta-training wall time (all seeds, compilation included): {train}. "
            f"Evaluation: {timing['evaluation_seconds']:.1f} s.",
            "",
        ]
    return "\n".join(out)


def _diverged_lines(results: dict[str, Any]) -> list[str]:
    if not results.get("diverged"):
        return []
    lines = ["## Diverged meta-training runs", ""]
    for d in results["diverged"]:
        lines.append(
            f"- {results['labels'][d['method']]}, seed {d['seed']}: non-finite loss at "
            f"meta-step {d['step']} (tasks: {'; '.join(d['tasks']) or 'the update'}); "
            "left out of that method's statistics."
        )
    return [*lines, ""]


def format_summary(results: dict[str, Any]) -> str:
    """What `metapinn reproduce` prints: the main table, steps to ε, the verdict."""
    c = results["config"]
    return "\n".join(
        [
            f"Few-shot results on {len(results['test_nus'])} held-out viscosities "
            f"({len(results['seeds'])} seeds, mean ± std):",
            "",
            results_table(results),
            "",
            "Steps to ε (speed-up over random init):",
            "",
            steps_to_eps_table(results),
            "",
            f"Verdict at {c['budget']} steps (rel-L2):",
            *[f"- {line}" for line in results["verdict"]],
            "",
            *_diverged_lines(results),
        ]
    ).rstrip()


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
