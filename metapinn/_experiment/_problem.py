"""What an experiment's methods are made of: the family and its points, the two networks
(plain and parameter-conditioned), each method's loss and learner, the optimisers.

Every method is a learner on one of two networks: the plain PINN `u(x, t)`, or the
parameter-conditioned PINN `u(x, t, c(ν))` ([`metapinn.ConditionedPINN`][]), whose
loss binds each task's features before the PINN loss. `cond-multitask` (multi-task
training of the conditioned network) is the conditioned-PINN baseline; `transfer` is
multi-task training of the plain network on one training task.
"""

import functools
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import PyTree

from .._conditioned import ConditionedLoss, ConditionedPINN
from .._loss import AbstractLoss, PINNLoss
from .._meta._base import AbstractMetaLearner
from .._meta._methods import make_learner
from .._pde._base import AbstractPDE
from .._pde._registry import family as get_family
from .._pinn import MLPPINN
from .._sampling import CollocationBatch, sample_collocation
from ._config import CONDITIONED, TRANSFER, ConfigError, ExperimentConfig, _learner_name


class Problem(eqx.Module):
    """The fixed ingredients of an experiment, built from its config."""

    pde: AbstractPDE
    points: CollocationBatch
    """The fixed draw: every method's points when `resample` is off, and every
    adaptation's points."""
    train_tasks: PyTree
    test_tasks: PyTree
    features: Callable[[PyTree], jax.Array]
    """The conditioned network's input (see [`metapinn.Family.features`][]): for a
    scalar parameter, its log scaled to [-1, 1] over the training range."""
    weights: tuple[float, ...] = eqx.field(static=True, default=(1.0, 1.0, 1.0))
    """The weights of the PINN loss's terms (`config.loss_weights`), for every method."""

    def loss(self, method: str) -> AbstractLoss:
        """The loss `method` trains and adapts with."""
        plain = PINNLoss(self.pde, weights=self.weights)
        return ConditionedLoss(plain, self.features) if is_conditioned(method) else plain


def is_conditioned(method: str) -> bool:
    """Whether `method` trains the parameter-conditioned network."""
    return method.startswith(CONDITIONED)


def experiment_tasks(config: ExperimentConfig, dtype: Any = None) -> tuple[PyTree, PyTree]:
    """The training and held-out tasks of `config`'s family, in `dtype` (default:
    `config.dtype`): its parameter values, or its drawn functions."""
    fam = get_family(config.family)
    dtype = config.dtype if dtype is None else dtype
    train = fam.tasks(config.train_params, config.n_train_tasks, config.tasks_seed, dtype=dtype)
    test = fam.tasks(config.test_params, config.n_test_tasks, config.tasks_seed, held_out=True,
                     dtype=dtype)  # fmt: skip
    return train, test


def task_values(config: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """The parameter values of the training and held-out tasks in float64: a scalar
    family's as the config states them, a function family's coefficients as drawn."""
    fam = get_family(config.family)
    if fam.scalar:
        return np.asarray(config.train_params), np.asarray(config.test_params)
    train, test = experiment_tasks(config, "float32")
    return fam.values(train), fam.values(test)


def task_labels(config: ExperimentConfig) -> list[str]:
    """A label per held-out task: `nu=0.0091`, or `u0 #2` for a drawn function."""
    return get_family(config.family).labels(task_values(config)[1])


def build_problem(config: ExperimentConfig) -> Problem:
    """The family, the fixed collocation points (drawn once from `points_seed`), the
    training and held-out tasks (in `config.dtype`) and the conditioning features."""
    dtype = jnp.dtype(config.dtype)
    if jnp.zeros((), dtype).dtype != dtype:
        raise ConfigError(
            f"config value dtype={config.dtype!r} needs jax_enable_x64 (set it at start-up, "
            'e.g. jax.config.update("jax_enable_x64", True))'
        )
    fam = get_family(config.family)
    pde = fam.pde()
    points = _points(
        jr.key(config.points_seed),
        pde,
        config.n_interior,
        config.n_initial,
        config.n_boundary,
        config.dtype,
    )
    train_tasks, test_tasks = experiment_tasks(config)
    return Problem(
        pde=pde,
        points=points,
        train_tasks=train_tasks,
        test_tasks=test_tasks,
        features=fam.features(task_values(config)[0]),
        weights=tuple(config.loss_weights),
    )


class PointSampler(eqx.Module):
    """One task's re-sampled points, `sampler(key)`, drawn in the training dtype."""

    pde: AbstractPDE
    n_interior: int = eqx.field(static=True)
    n_initial: int = eqx.field(static=True)
    n_boundary: int = eqx.field(static=True)
    dtype: str = eqx.field(static=True)

    def __call__(self, key) -> CollocationBatch:
        return sample_collocation(
            key, self.pde, self.n_interior, self.n_initial, self.n_boundary, self.dtype
        )


def point_sampler(config: ExperimentConfig, problem: Problem) -> PointSampler | None:
    """The per-step sampler of `meta_train` when the config re-samples, else `None`."""
    if not config.resample:
        return None
    return PointSampler(
        problem.pde, config.n_interior, config.n_initial, config.n_boundary, config.dtype
    )


# Jitted so that each is one compilation rather than one per operation.
_points = eqx.filter_jit(sample_collocation)
_pinn = eqx.filter_jit(MLPPINN)
_conditioned_pinn = eqx.filter_jit(ConditionedPINN)


def initialisation(config: ExperimentConfig, seed: int, method: str = "random"):
    """The random initialisation of `seed` for `method`'s network, shared by every
    method on that network (the conditioned network has its own, from the same key).

    **Returns:** `(params, static, key)`; `key` drives the run's task sampling.
    """
    init_key, run_key = jr.split(jr.key(seed))
    dtype = jnp.dtype(config.dtype)
    if is_conditioned(method):
        n_conditions = get_family(config.family).n_conditions()
        net = _conditioned_pinn(n_conditions, config.width, config.depth, dtype=dtype, key=init_key)
    else:
        net = _pinn(config.width, config.depth, dtype=dtype, key=init_key)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    return params, static, run_key


@functools.cache
def adam(lr: float, eps_root: float = 0.0) -> optax.GradientTransformation:
    """One Adam object per setting, so that jitted functions taking it as a static
    argument compile once. `eps_root > 0` keeps it differentiable (for MAML)."""
    return optax.adam(lr, eps_root=eps_root)


@functools.cache
def warmup_adam(lr: float, warmup: int) -> optax.GradientTransformation:
    """Adam whose rate rises linearly from `lr / warmup` to `lr` over the first `warmup`
    steps, then stays at `lr` (plain Adam at `lr` for `warmup <= 1`). A fresh Adam state
    has no second-moment history, so its first steps are as long as the rate allows:
    from a good initialisation, a short warm-up keeps them from undoing it."""
    if warmup <= 1:
        return adam(lr)
    # Step k (from 0) runs at lr * (k + 1) / warmup until it reaches lr.
    schedule = optax.linear_schedule(lr / warmup, lr, warmup - 1)
    return optax.adam(schedule)


@functools.cache
def cosine_adam(lr: float, steps: int) -> optax.GradientTransformation:
    """Adam whose rate decays from `lr` at step 0 to `lr / 100` at step `steps` along a
    half cosine (Loshchilov & Hutter 2017, without restarts), then stays there."""
    return optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.01))


def outer_optimizer(config: ExperimentConfig, method: str) -> optax.GradientTransformation:
    """The outer optimiser of `method`: Adam at its `outer_lr`, constant or decayed over
    its `meta_steps` (`outer_schedule`). Its state is part of a checkpoint, so loading
    one takes the optimiser that wrote it."""
    s = config.method_settings(method)
    if s["outer_schedule"] == "cosine":
        return cosine_adam(s["outer_lr"], s["meta_steps"])
    return adam(s["outer_lr"])


def writers_optimizer(settings: dict[str, Any]) -> optax.GradientTransformation:
    """The outer optimiser that wrote a checkpoint, from the run settings stored in it
    (see `run_settings`)."""
    if settings.get("outer_schedule", "constant") == "cosine":
        return cosine_adam(settings["outer_lr"], settings["outer_schedule_steps"])
    return adam(settings["outer_lr"])


def eval_optimizer(config: ExperimentConfig) -> optax.GradientTransformation:
    """The one adaptation schedule every initialisation gets."""
    return warmup_adam(config.eval_lr, config.eval_warmup)


def adapt_spec(params: Any, adapt: str) -> Any:
    """The filter of the leaves an inner loop adapts: `None` (all) or the output layer
    only (`last-layer`, as in ANIL: Raghu et al. 2020)."""
    if adapt == "all":
        return None
    if adapt == "last-layer":
        spec = jax.tree_util.tree_map(lambda _: False, params)
        return eqx.tree_at(lambda p: p.layers[-1], spec, True)
    raise ConfigError(f"config value adapt={adapt!r} is invalid: choose all or last-layer")


def make_method(config: ExperimentConfig, method: str, params: Any = None) -> AbstractMetaLearner:
    """The learner of `method` with its settings (`params`, the network's parameters,
    shapes the `adapt` filter)."""
    name = _learner_name(method)
    s = config.method_settings(method)
    if name == "multitask":
        # The conditioned network's jet differs per task: the loss's own gradient.
        return make_learner(name, own_gradient=is_conditioned(method))
    if s["inner_optimizer"] == "sgd":
        inner: optax.GradientTransformation | float = s["inner_lr"]
    elif s["inner_optimizer"] == "adam":
        inner = adam(s["inner_lr"], 1e-16)
    else:  # pragma: no cover - the config has checked it
        raise ConfigError(f"unknown inner optimiser {s['inner_optimizer']!r}")
    spec = None if params is None else adapt_spec(params, s["adapt"])
    return make_learner(
        name,
        inner_steps=s["inner_steps"],
        inner_optimizer=inner,
        adapt_spec=spec,
        inner_remat=inner_remat(s["inner_remat"]),
    )


def inner_remat(setting: str) -> str | int | None:
    """The learners' `inner_remat` for a config's setting (`"none"`, `"sqrt"`,
    `"binomial"` or a segment length)."""
    if setting == "none":
        return None
    return int(setting) if setting.isascii() and setting.isdigit() else setting


def has_learned_rule(method: str) -> bool:
    """Whether `method` learns an inner rule besides its initialisation (Meta-SGD,
    MAML++): the evaluation then also adapts it with that rule, as an extra row."""
    return _learner_name(method) in ("metasgd", "mamlpp")


def tasks_at_once(config: ExperimentConfig, method: str) -> int | None:
    """How a method's meta-step maps over its tasks (`None`: all vmapped together).

    Multi-task training of the plain network on shared points is vmapped: its jet is
    computed once for every task (W3, 6 tasks: 13.7 ms a step). That of the
    conditioned network goes one task after another: its jet differs per task (59
    against 155 ms vmapped). The learners with an inner loop follow the config's
    `tasks_at_once` (W3 runs them one task at a time: Reptile 271 against 372 ms
    vmapped, MAML 1.17 against 1.35 s, in one run on 2 cores)."""
    if _learner_name(method) == "multitask":
        return 1 if is_conditioned(method) else None
    return config.tasks_at_once or None


def nearest_training_tasks(config: ExperimentConfig) -> tuple[int, ...]:
    """For each held-out task, the index of the nearest training task (in log of a
    scalar parameter; see [`metapinn.Family.nearest`][]): the one a transfer baseline
    trains on."""
    return get_family(config.family).nearest(*task_values(config))


_TRAINING_KEYS = (
    "width", "depth", "dtype", "n_interior", "n_initial", "n_boundary", "points_seed",
    "train_params", "tasks_per_step", "checkpoint_every", "resample", "family",
    "n_train_tasks", "tasks_seed",
)  # fmt: skip
"""The run-wide settings a training run depends on. (`tasks_at_once` is not one: it
changes how the tasks are mapped, not what is computed, beyond rounding.)"""


def run_settings(
    config: ExperimentConfig, method: str, seed: int, task: int | None = None
) -> dict[str, Any]:
    """What one training run depends on (stored in, and checked against, its
    checkpoint): the run-wide training settings and the method's own. A transfer run
    names its one training task."""
    data = config.to_dict()
    settings = {k: data[k] for k in _TRAINING_KEYS}
    own = config.method_settings(method)
    own.pop("inner_remat")  # how the meta-gradient is computed, not what: resumable
    if own["inner_steps"] == 0:
        for k in ("inner_steps", "inner_optimizer", "inner_lr", "adapt"):
            own.pop(k)
    # Settings at their defaults are left out, so that checkpoints written before the
    # settings existed (W1's) stay valid.
    if not config.resample:
        settings.pop("resample")
    if config.family == "burgers":  # as written before the families: earlier runs resume
        settings.pop("family")
        settings["train_nus"] = settings.pop("train_params")
    if get_family(config.family).scalar:
        settings.pop("n_train_tasks")
        settings.pop("tasks_seed")
    if own.get("adapt") == "all":
        own.pop("adapt")
    if own.get("init") == "random":
        own.pop("init")
    if own["outer_schedule"] == "constant":
        own.pop("outer_schedule")
    else:  # a decay over the run's length: resuming it longer would change its past
        own["outer_schedule_steps"] = own["meta_steps"]
    out = {"method": method, "seed": seed, **settings, **own}
    if task is not None:
        out["task"] = task
        out["tasks_per_step"] = 1
    if method == TRANSFER:
        out.pop("init", None)
    return out
