"""What an experiment's methods are made of: the family and its points, the tasks, the
two networks (plain and parameter-conditioned, with their random initialisations and
a check that they fit the machine), each network's loss, and the adaptation schedule.
(The methods themselves, their learners and outer optimisers: `_methods`.)

Every method is a learner on one of two networks: the plain PINN `u(x, t)`, or the
parameter-conditioned PINN `u(x, t, c(ν))` ([`metapinn.ConditionedPINN`][]), whose
loss binds each task's features before the PINN loss. `cond-multitask` (multi-task
training of the conditioned network) is the conditioned-PINN baseline; `transfer` is
multi-task training of the plain network on one training task.
"""

import os
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import PyTree

from .._architectures import EmbeddedMLP, ModifiedMLP, PirateNet, network_parameter_count
from .._causal import CausalWeights
from .._conditioned import ConditionedLoss, ConditionedPINN
from .._loss import AbstractLoss, PINNLoss
from .._mlp import MLPPINN
from .._pde._base import AbstractPDE
from .._pde._registry import family as get_family
from .._sampling import CollocationBatch, sample_collocation
from ._config import ConfigError, ExperimentConfig
from ._methods import warmup_adam


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
    causal: CausalWeights | None = None
    """The causal weighting of the residual (`config.causal_chunks`, `causal_tol`)."""

    def loss(self, conditioned: bool = False) -> AbstractLoss:
        """The loss of the plain network, or of the `conditioned` one (which binds each
        task's features first), that methods train and adapt with."""
        plain = PINNLoss(self.pde, weights=self.weights, causal=self.causal)
        return ConditionedLoss(plain, self.features) if conditioned else plain


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
        causal=(
            CausalWeights(config.causal_tol, config.causal_chunks) if config.causal_chunks else None
        ),
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


def build_network(config: ExperimentConfig, n_conditions: int, key) -> Any:
    """The network `config` names, plain (`n_conditions = 0`) or conditioned, in
    `config.dtype`: for `network = "mlp"` an [`metapinn.MLPPINN`][] or a
    [`metapinn.ConditionedPINN`][], else the accurate-PINN network with the config's
    embedding (the periodic one of period `x_max - x_min` of the family)."""
    dtype = jnp.dtype(config.dtype)
    if config.network == "mlp":
        if n_conditions:
            return ConditionedPINN(n_conditions, config.width, config.depth, dtype=dtype, key=key)
        return MLPPINN(config.width, config.depth, dtype=dtype, key=key)
    pde = config.resolved_family.pde()
    options: dict[str, Any] = dict(
        period=(pde.x_max - pde.x_min) if config.periodic_embedding else None,
        fourier_scale=config.fourier_scale,
        rwf=tuple(config.rwf) or None,
        dtype=dtype,
        key=key,
    )
    if config.network == "pirate-net":
        return PirateNet(n_conditions, config.width, config.depth, **options)
    kind = EmbeddedMLP if config.network == "embedded-mlp" else ModifiedMLP
    return kind(
        n_conditions, config.width, config.depth, fourier_features=config.fourier_features,
        **options,
    )  # fmt: skip


# Jitted so that each is one compilation rather than one per operation.
_points = eqx.filter_jit(sample_collocation)
_build_network = eqx.filter_jit(build_network)


def initialisation(config: ExperimentConfig, seed: int, conditioned: bool = False):
    """The random initialisation of `seed` for the plain (or the `conditioned`)
    network, shared by every method on that network (the conditioned network has its
    own, from the same key).

    **Returns:** `(params, static, key)`; `key` drives the run's task sampling.
    """
    init_key, run_key = jr.split(jr.key(seed))
    check_network_fits(config)
    n_conditions = config.resolved_family.n_conditions() if conditioned else 0
    net = _build_network(config, n_conditions, init_key)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    return params, static, run_key


def network_parameters(config: ExperimentConfig) -> int:
    """The number of trainable parameters of the plain network `config` names (counted
    from shapes, nothing allocated)."""
    shapes = eqx.filter_eval_shape(build_network, config, 0, jr.key(0))
    return network_parameter_count(shapes)


def check_network_fits(config: ExperimentConfig) -> None:
    """Refuse, before anything is allocated, a network whose parameters alone, four
    times over (parameters, gradient, Adam's two moments), exceed this machine's
    memory. **Raises:** [`metapinn.experiment.ConfigError`][] naming the sizes."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf here: nothing to check
        return
    n = network_parameters(config)
    need = 4 * n * jnp.dtype(config.dtype).itemsize
    if need > memory:
        raise ConfigError(
            f"config value width={config.width!r} is invalid: a {config.depth} x "
            f"{config.width} network has {n:.3g} parameters, {need / 2**30:.1f} GiB at least "
            f"to train, more than this machine's {memory / 2**30:.1f} GiB"
        )


def eval_optimizer(config: ExperimentConfig) -> optax.GradientTransformation:
    """The one adaptation schedule every initialisation gets."""
    return warmup_adam(config.eval_lr, config.eval_warmup)


def nearest_training_tasks(config: ExperimentConfig) -> tuple[int, ...]:
    """For each held-out task, the index of the nearest training task (in log of a
    scalar parameter; see [`metapinn.Family.nearest`][]): the one a transfer baseline
    trains on."""
    return get_family(config.family).nearest(*task_values(config))


def curriculum_tasks(config: ExperimentConfig) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The curriculum baseline's training tasks in the order it trains them, and the
    one each held-out task starts from (see [`metapinn.Family.curriculum`][]).

    **Raises:** `ValueError` for a family of drawn functions."""
    return get_family(config.family).curriculum(*task_values(config))
