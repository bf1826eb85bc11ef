"""The configuration of an experiment: every setting, checked, with the named workloads."""

import dataclasses
import json
import math
import os
import pathlib
import re
import typing
from typing import Any

import jax.numpy as jnp
import numpy as np

from .._architectures import check_rwf
from .._loss import check_weights
from .._pde._registry import FAMILIES, Family, family as get_family
from ._compat import RENAMED_KEYS, CompatError, upgrade_config_data
from ._methods import (
    ADAPT_SPECS,
    CURRICULUM,
    EVAL_ADAPTERS,
    INNER_OPTIMIZERS,
    INNER_REMATS,
    METHOD_NAMES,
    OUTER_SCHEDULES,
    RANDOM,
    Method,
    is_eval_adapter,
    parse_method,
)


NETWORKS = ("mlp", "embedded-mlp", "modified-mlp", "pirate-net")
"""The networks a config can name (`network`): [`metapinn.MLPPINN`][] (and
[`metapinn.ConditionedPINN`][]), [`metapinn.nn.EmbeddedMLP`][], [`metapinn.nn.ModifiedMLP`][],
[`metapinn.nn.PirateNet`][]."""

ALL_METHODS = "all"
"""`methods = ["all"]` (`--methods all`) runs every method of `METHOD_NAMES` (on a family
of drawn functions, every one but the curriculum, which needs an ordered family)."""

ROLES = {
    "training": "a run-wide setting every training run depends on (stored in and checked "
    "against its checkpoints)",
    "method": "a method's own setting: run-wide, and per method by `overrides`",
    "evaluation": "changes only the evaluation, not the meta-training",
    "tasks": "picks the family's tasks (dropped when the family changes)",
    "resumable": "may change when a run folder is resumed (each run checks its own "
    "settings against its checkpoint)",
    "gridded": "a run-wide setting an ablation grid may vary",
}
"""What a field of [`metapinn.experiment.ExperimentConfig`][] may be for; each field carries its
roles (`dataclasses.fields(ExperimentConfig)[i].metadata["roles"]`), so that no list
of keys restates them."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the key and the value."""


def _field(default, help: str, *roles: str):
    assert set(roles) <= set(ROLES), roles
    return dataclasses.field(default=default, metadata={"help": help, "roles": frozenset(roles)})


def field_help(name: str) -> str:
    """The one-line help of the field `name` (the `metapinn` command's `--help`)."""
    (f,) = [f for f in dataclasses.fields(ExperimentConfig) if f.name == name]
    return f.metadata["help"].format(method=", ".join(fields_with_role("method")))


def fields_with_role(role: str) -> tuple[str, ...]:
    """The names of the fields of [`metapinn.experiment.ExperimentConfig`][] that carry `role`
    (one of `ROLES`), in field order."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {sorted(ROLES)}")
    return tuple(
        f.name for f in dataclasses.fields(ExperimentConfig) if role in f.metadata["roles"]
    )


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Every setting of a meta-learning experiment; the defaults are workload W1.

    Construct it with keywords, from a dict ([`metapinn.experiment.ExperimentConfig.from_dict`][])
    or from a JSON file ([`metapinn.experiment.load_config`][]). Values are checked on
    construction. Each field's `help` metadata (the `metapinn` command's `--help`)
    says the same in a line.

    **Fields:**

    - `name`: the run's label, letters, digits, `.`, `_`, `-` (default `"W1"`).
    - `width`, `depth`: the PINN's neurons per hidden layer and hidden layers
      (default 32, 2; for `pirate-net`, `depth` residual blocks of three layers).
    - `network`: one of `NETWORKS` (default `"mlp"`, the tanh MLP of W1–W3), and for
      the others their embedding: `fourier_features` (an even count, default 0: none),
      `fourier_scale` (default 1), `periodic_embedding` (default off; periodic
      families only) and `rwf` (random weight factorisation's `(mu, sigma)`, default
      `()`: none).
    - `causal_chunks`, `causal_tol`: causal weighting of every PINN loss's residual
      over that many time chunks with that tolerance ([`metapinn.training.CausalWeights`][];
      default 0 chunks: off, tolerance 1).
    - `dtype`: `"float32"` (default) or `"float64"`, for training and adaptation.
    - `n_interior`, `n_initial`, `n_boundary`: collocation points inside, on `t = 0`
      and on each side (default 200, 50, 20); `points_seed`: their seed (default 0).
    - `family`: a key of [`metapinn.FAMILIES`][] (default `"burgers"`), or
      `MODULE:ATTR` for a family of your own (see [`metapinn.family`][]).
    - `train_params`, `test_params`: a scalar family's training and held-out values
      (default `()`: the family's standard ones).
    - `n_train_tasks`, `n_test_tasks`, `tasks_seed`: a family of drawn functions'
      task counts (default 0: its standard ones) and seed (default 0).
    - `methods`: the methods to train, or `("all",)` (default
      `("maml", "fomaml", "reptile", "multitask")`).
    - `inner_steps`, `inner_optimizer`, `inner_lr`, `inner_remat`: the inner loop's
      $K$ (default 5), adapter (`"sgd"`, the default, `"adam"`, `"gauss-newton"` or
      `"lbfgs"`), rate (default 0.01; SGD and Adam) and checkpointing, `"none"`
      (default), `"sqrt"`, `"binomial"` or a segment length.
    - `inner_damping`, `inner_cg_steps`: a Gauss–Newton inner loop's initial damping
      (default 1e-2) and CG iterations per step (default 20, a fixed number, so that
      reverse mode goes through it).
    - `outer_lr`, `outer_schedule`: the outer Adam rate (default 1e-3), `"constant"`
      (default) or `"cosine"`.
    - `meta_steps`, `tasks_per_step`, `tasks_at_once`: outer steps per method and seed
      (default 500), tasks per step (default 6), and groups of tasks mapped one after
      another (default 0: all vmapped).
    - `seeds`: the initialisations' seeds (default `(0, 1, 2)`).
    - `checkpoint_every`: outer steps between checkpoints (default 100).
    - `resample`: re-sample the points every meta-step (default `False`).
    - `adapt`: `"all"` (default) or `"last-layer"`, the parameters the inner loop
      adapts.
    - `init`: where meta-training starts: `"random"` (default), another method, or a
      run folder.
    - `overrides`: per-method settings `"METHOD.KEY=VALUE"` (default `()`).
    - `eval_steps`, `eval_lr`, `eval_warmup`: the few-shot step counts (default
      `(0, 10, 20, 50, 100, 200, 500, 1000)`), Adam rate (default 1e-3) and warm-up
      steps (default 0).
    - `budget`: the few-shot budget of the results table, one of `eval_steps`
      (default 100).
    - `eps`: the relative-L2 targets of the "steps to eps" table (default
      `(0.8, 0.6, 0.5, 0.4)`).
    - `eval_adapters`: adapters every initialisation is also evaluated with, each
      held-out task timed alone: `"gauss-newton"`, `"gauss-newton-cg<N>"` (with N CG
      iterations a step), `"lbfgs"` (default `()`: the common Adam schedule only);
      read at `eval_adapter_steps` (default `(0, 1, 3, 10, 30, 100)`); Gauss–Newton's
      initial damping `eval_damping` (default 1e-2), CG iterations `eval_cg_steps`
      (default 50) and CG preconditioner `eval_preconditioner` (`"none"`, default, or
      `"jacobi"`; see [`metapinn.GaussNewton`][]).
    - `eps_seconds`: the relative-L2 targets of the "seconds to eps" table of every
      (initialisation, adapter) pair (default `(1e-2, 3e-3, 1e-3)`).

    **Raises:** [`metapinn.experiment.ConfigError`][] naming the first bad value.
    """

    name: str = _field("W1", "label of the run (used in the default output folder name)")
    width: int = _field(32, "neurons per hidden layer", "training", "gridded")
    depth: int = _field(
        2, "number of hidden layers (pirate-net: residual blocks)", "training", "gridded"
    )
    network: str = _field(
        "mlp",
        "the network: " + ", ".join(NETWORKS) + " (docs/api/networks.md); mlp is the tanh MLP "
        "with a hand-written jet, the others the accurate-PINN toolkit's",
        "training",
        "gridded",
    )
    fourier_features: int = _field(
        0,
        "random Fourier features of the input, an even number (0: none; pirate-net: its width)",
        "training",
        "gridded",
    )
    fourier_scale: float = _field(
        1.0, "standard deviation of the Fourier features' frequencies", "training", "gridded"
    )
    periodic_embedding: bool = _field(
        False,
        "embed x as (cos, sin) of its period, exactly periodic (periodic families only)",
        "training",
        "gridded",
    )
    rwf: tuple[float, ...] = _field(
        (),
        "random weight factorisation of every dense layer, MU SIGMA, e.g. 1.0 0.1 (empty: none)",
        "training",
        "gridded",
    )
    dtype: str = _field(
        "float32",
        "float dtype for training and adaptation: float32 or float64",
        "training",
        "gridded",
    )
    n_interior: int = _field(
        200, "interior collocation points (PDE residual)", "training", "gridded"
    )
    n_initial: int = _field(
        50, "collocation points on t = 0 (initial condition)", "training", "gridded"
    )
    n_boundary: int = _field(
        20, "collocation points on each boundary x = x_min, x = x_max", "training", "gridded"
    )
    points_seed: int = _field(
        0, "seed of the collocation points, drawn once for all methods", "training"
    )
    loss_weights: tuple[float, ...] = _field(
        (1.0, 1.0, 1.0),
        "weights of the residual, initial and boundary terms of every method's PINN loss",
    )
    causal_chunks: int = _field(
        0,
        "causal weighting of the residual over this many time chunks (0: off; docs/api/losses.md)",
        "training",
        "gridded",
    )
    causal_tol: float = _field(
        1.0, "the causal weighting's tolerance epsilon", "training", "gridded"
    )
    family: str = _field(
        "burgers",
        "the PDE family (docs/design.md §2): "
        + ", ".join(FAMILIES)
        + ", or MODULE:ATTR for a metapinn.Family of your own (metapinn families)",
        "training",
    )
    train_params: tuple[float, ...] = _field(
        (),
        "training values of the family's parameter (Burgers: the viscosities nu); empty: "
        "the family's standard ones (a family of drawn functions has none)",
        "training",
        "tasks",
    )
    test_params: tuple[float, ...] = _field(
        (),
        "held-out values of the family's parameter for evaluation; empty: the standard ones",
        "evaluation",
        "tasks",
        "resumable",
    )
    n_train_tasks: int = _field(
        0,
        "a family of drawn functions (burgers-random-ic): training tasks; 0: its standard",
        "training",
        "tasks",
    )
    n_test_tasks: int = _field(
        0,
        "a family of drawn functions: held-out tasks; 0: its standard number",
        "evaluation",
        "tasks",
        "resumable",
    )
    tasks_seed: int = _field(
        0, "a family of drawn functions: the seed its tasks are drawn from", "training"
    )
    methods: tuple[str, ...] = _field(
        ("maml", "fomaml", "reptile", "multitask"),
        "methods to train: " + ", ".join(METHOD_NAMES) + "; or all (every one of them)",
        "resumable",
    )
    inner_steps: int = _field(5, "inner-loop steps K (not used by multitask)", "method")
    inner_optimizer: str = _field(
        "sgd",
        "inner-loop adapter: sgd, adam, gauss-newton (Levenberg-Marquardt, inner_damping, "
        "inner_cg_steps) or lbfgs (not under MAML: its line search stops reverse mode)",
        "method",
    )
    inner_lr: float = _field(0.01, "inner-loop learning rate (sgd, adam)", "method")
    inner_damping: float = _field(
        1e-2, "gauss-newton inner loop: the initial Levenberg-Marquardt damping", "method"
    )
    inner_cg_steps: int = _field(
        20, "gauss-newton inner loop: conjugate-gradient iterations per step", "method"
    )
    inner_remat: str = _field(
        "none",
        "checkpointing of the inner loop for the meta-gradient: none, sqrt (segments of "
        "about sqrt(K) steps), binomial, or a segment length N; less memory for long "
        "inner loops, the same values",
        "method",
        "resumable",
    )
    outer_lr: float = _field(1e-3, "outer (meta) Adam learning rate", "method")
    outer_schedule: str = _field(
        "constant",
        "the outer rate over the meta-steps: constant, or cosine (decaying from outer_lr "
        "to outer_lr / 100 at the last meta-step)",
        "method",
    )
    meta_steps: int = _field(500, "outer steps per method and seed", "method", "resumable")
    tasks_per_step: int = _field(6, "training tasks per outer step", "training", "gridded")
    tasks_at_once: int = _field(
        0,
        "how a meta-step of a learner with an inner loop maps over its tasks: 0, all "
        "vmapped together; N, in groups of N one after another (faster for large networks)",
        "resumable",
        "gridded",
    )
    seeds: tuple[int, ...] = _field((0, 1, 2), "seeds of the random initialisation", "resumable")
    checkpoint_every: int = _field(
        100, "write a checkpoint every this many outer steps", "training", "resumable"
    )
    resample: bool = _field(
        False,
        "re-sample the collocation points every meta-step (support and query drawn "
        "independently, shared by the step's tasks); off: one fixed draw from points_seed. "
        "Adaptation always uses the fixed draw",
        "training",
        "gridded",
    )
    adapt: str = _field(
        "all", "which parameters the inner loop adapts: all or last-layer", "method"
    )
    init: str = _field(
        "random",
        "where meta-training starts: random, another method of the run (its trained "
        "initialisation), or a run folder holding a trained one",
        "method",
    )
    overrides: tuple[str, ...] = _field(
        (),
        "per-method settings METHOD.KEY=VALUE, KEY one of {method}",
        "resumable",
    )
    eval_steps: tuple[int, ...] = _field(
        (0, 10, 20, 50, 100, 200, 500, 1000),
        "adaptation step counts k at which the few-shot curve is read",
        "evaluation",
        "resumable",
    )
    eval_lr: float = _field(
        1e-3, "Adam learning rate of the few-shot adaptation", "evaluation", "resumable"
    )
    eval_warmup: int = _field(
        0,
        "steps of linear learning-rate warm-up of the few-shot Adam (0: constant eval_lr)",
        "evaluation",
        "resumable",
    )
    budget: int = _field(
        100,
        "the few-shot budget k of the results table (one of eval_steps)",
        "evaluation",
        "resumable",
    )
    eps: tuple[float, ...] = _field(
        (0.8, 0.6, 0.5, 0.4),
        "relative-L2 targets for the 'steps to eps' table",
        "evaluation",
        "resumable",
    )
    eval_adapters: tuple[str, ...] = _field(
        (),
        "adapters every initialisation is also evaluated with, each task timed alone "
        "(besides the common Adam schedule): gauss-newton, gauss-newton-cg<N> (N CG "
        "iterations a step), lbfgs",
        "evaluation",
        "resumable",
    )
    eval_adapter_steps: tuple[int, ...] = _field(
        (0, 1, 3, 10, 30, 100),
        "step counts at which the eval_adapters are read and timed",
        "evaluation",
        "resumable",
    )
    eval_damping: float = _field(
        1e-2,
        "gauss-newton evaluation adapter: the initial Levenberg-Marquardt damping",
        "evaluation",
        "resumable",
    )
    eval_cg_steps: int = _field(
        50,
        "gauss-newton evaluation adapter: most conjugate-gradient iterations per step",
        "evaluation",
        "resumable",
    )
    eval_preconditioner: str = _field(
        "none",
        "gauss-newton evaluation adapter: the CG preconditioner, none or jacobi",
        "evaluation",
        "resumable",
    )
    eps_seconds: tuple[float, ...] = _field(
        (1e-2, 3e-3, 1e-3),
        "relative-L2 targets for the 'seconds to eps' table of every (initialisation, "
        "adapter) pair",
        "evaluation",
        "resumable",
    )

    def __post_init__(self):
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _coerce(f.name, f.type, getattr(self, f.name)))
        try:
            fam = get_family(self.family)
        except ValueError as e:
            _fail("family", self.family, str(e))
        if fam.scalar:
            for key, standard in (("train_params", fam.train_values),
                                  ("test_params", fam.test_values)):  # fmt: skip
                if not getattr(self, key):
                    object.__setattr__(self, key, standard)
        else:
            for key, standard in (("n_train_tasks", fam.n_train), ("n_test_tasks", fam.n_test)):
                if not getattr(self, key):
                    object.__setattr__(self, key, standard)
        if ALL_METHODS in self.methods:
            if len(self.methods) > 1:
                _fail("methods", self.methods, f"{ALL_METHODS!r} stands alone")
            every = tuple(m for m in METHOD_NAMES if fam.scalar or m != CURRICULUM)
            object.__setattr__(self, "methods", every)
        self._check()

    def _check(self):
        """The network, the points and the run's bookkeeping; then each group below."""
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            _fail("name", self.name, "use letters, digits, '.', '_' or '-'")
        for key in ("width", "depth", "n_interior", "n_initial", "n_boundary"):
            _at_least(key, getattr(self, key), 1)
        for key in ("points_seed", "inner_steps", "meta_steps", "tasks_at_once"):
            _at_least(key, getattr(self, key), 0)
        _at_least("checkpoint_every", self.checkpoint_every, 1)
        try:
            check_weights(self.loss_weights)
        except ValueError as e:
            _fail("loss_weights", self.loss_weights, str(e))
        if self.dtype not in ("float32", "float64"):
            _fail("dtype", self.dtype, "choose float32 or float64")
        _at_least("causal_chunks", self.causal_chunks, 0)
        if not (math.isfinite(self.causal_tol) and self.causal_tol >= 0):
            _fail("causal_tol", self.causal_tol, "must be finite and >= 0")
        self._check_network()
        self._check_tasks()

    def _check_network(self):
        """The network kind and its embedding options."""
        if self.network not in NETWORKS:
            _fail("network", self.network, f"choose from {list(NETWORKS)}")
        if self.network == "mlp":
            for key, off in (("fourier_features", 0), ("periodic_embedding", False),
                             ("rwf", ())):  # fmt: skip
                if getattr(self, key) != off:
                    _fail(key, getattr(self, key), "network=mlp takes no embedding or "
                          "factorisation; choose network=embedded-mlp, modified-mlp or "
                          "pirate-net")  # fmt: skip
        _at_least("fourier_features", self.fourier_features, 0)
        if self.fourier_features % 2:
            _fail("fourier_features", self.fourier_features, "must be even (cos and sin)")
        if not (math.isfinite(self.fourier_scale) and self.fourier_scale > 0):
            _fail("fourier_scale", self.fourier_scale, "must be finite and > 0")
        try:
            check_rwf(self.rwf or None)
        except ValueError as e:
            _fail("rwf", self.rwf, str(e))
        if self.rwf and len(self.rwf) != 2:
            _fail("rwf", self.rwf, "give two numbers, MU SIGMA")
        if self.periodic_embedding and not get_family(self.family).pde().periodic:
            _fail("periodic_embedding", True, f"{self.family} is not periodic in x")
        if self.network == "pirate-net":
            if self.width % 2:
                _fail("width", self.width, "pirate-net's width must be even (its Fourier features)")
            if self.fourier_features not in (0, self.width):
                _fail("fourier_features", self.fourier_features,
                      f"pirate-net's Fourier features are its width ({self.width})")  # fmt: skip

    def _check_tasks(self):
        """The tasks: a scalar family's values, or a function family's counts."""
        fam = get_family(self.family)
        _at_least("tasks_seed", self.tasks_seed, 0)
        if fam.scalar:
            for key in ("n_train_tasks", "n_test_tasks"):
                if getattr(self, key):
                    _fail(key, getattr(self, key), f"{self.family}'s tasks are its parameter "
                          "values (train_params, test_params), not drawn")  # fmt: skip
            for key in ("train_params", "test_params"):
                for value in getattr(self, key):
                    if not (math.isfinite(value) and value > 0):
                        _fail(key, value, f"every {fam.parameter} must be finite and > 0")
                try:
                    fam.task(jnp.asarray(getattr(self, key), dtype=jnp.zeros(()).dtype))
                except ValueError as e:
                    _fail(key, getattr(self, key), str(e))
        else:
            for key in ("train_params", "test_params"):
                if getattr(self, key):
                    why = "tasks are drawn (n_train_tasks, n_test_tasks, tasks_seed), not values"
                    _fail(key, getattr(self, key), f"{self.family}'s {why}")
            for key in ("n_train_tasks", "n_test_tasks"):
                _at_least(key, getattr(self, key), 1)
        self._check_methods()

    def _check_methods(self):
        """The methods, their overrides and warm starts (no cycles)."""
        known = sorted(METHOD_NAMES)
        if not self.methods:
            _fail("methods", self.methods, f"choose one or more of {known}")
        for m in self.methods:
            if m not in METHOD_NAMES:
                _fail("methods", m, f"unknown method; choose from {known}")
        if len(set(self.methods)) != len(self.methods):
            _fail("methods", self.methods, "a method is listed twice")
        _at_least("eval_warmup", self.eval_warmup, 0)
        named = []
        for item in self.overrides:
            method, key, _ = _parse_override(item)
            if method not in METHOD_NAMES:
                _fail("overrides", item, f"unknown method {method!r}; choose from {known}")
            kind, _, transfer = parse_method(method)
            loop_keys = (
                "inner_steps", "inner_optimizer", "inner_lr", "inner_damping", "inner_cg_steps",
                "adapt", "inner_remat",
            )  # fmt: skip
            if not kind.inner_loop and key in loop_keys:
                _fail("overrides", item, f"{method} has no inner loop")
            if transfer and key == "init":
                _fail("overrides", item, f"{method} trains from the random initialisation")
            named.append(method)
        for method in dict.fromkeys([*self.methods, *named]):
            self._check_method(method)
        for method in self.methods:
            chain = [method]
            while (source := self.method_settings(chain[-1])["init"]) in self.methods:
                if source in chain:
                    _fail(
                        "overrides",
                        list(self.overrides),
                        "the methods' init settings form a cycle: "
                        + " -> ".join([*chain[chain.index(source) :], source]),
                    )
                chain.append(source)
        self._check_training()

    def _check_training(self):
        """The rates, the task batch and the seeds."""
        for key in ("inner_lr", "outer_lr", "eval_lr"):
            value = getattr(self, key)
            if not (math.isfinite(value) and value > 0):
                _fail(key, value, "a learning rate must be finite and > 0")
        if not 1 <= self.tasks_per_step <= self.n_train:
            _fail(
                "tasks_per_step",
                self.tasks_per_step,
                f"must be between 1 and the number of training tasks ({self.n_train})",
            )
        if self.tasks_at_once and self.tasks_per_step % self.tasks_at_once:
            _fail(
                "tasks_at_once",
                self.tasks_at_once,
                f"must divide tasks_per_step ({self.tasks_per_step}), or be 0 (all at once)",
            )
        if not self.seeds:
            _fail("seeds", self.seeds, "give at least one seed")
        for s in self.seeds:
            _at_least("seeds", s, 0)
        if len(set(self.seeds)) != len(self.seeds):
            _fail("seeds", self.seeds, "a seed is listed twice")
        self._check_evaluation()

    def _check_evaluation(self):
        """The few-shot step counts, the budget and the targets."""
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
        for key in ("eps", "eps_seconds"):
            for e in getattr(self, key):
                if not (math.isfinite(e) and e > 0):
                    _fail(key, e, "a target must be finite and > 0")
        self._check_adapters()

    def _check_adapters(self):
        """The evaluation's adapters and their settings."""
        for name in self.eval_adapters:
            if not is_eval_adapter(name):
                _fail(
                    "eval_adapters",
                    name,
                    f"choose from {list(EVAL_ADAPTERS)} or gauss-newton-cg<N> (N >= 1 CG "
                    "iterations a step)",
                )
        if len(set(self.eval_adapters)) != len(self.eval_adapters):
            _fail("eval_adapters", self.eval_adapters, "an adapter is listed twice")
        steps = self.eval_adapter_steps
        if not steps:
            _fail("eval_adapter_steps", steps, "give at least one step count")
        for k in steps:
            _at_least("eval_adapter_steps", k, 0)
        if list(steps) != sorted(set(steps)):
            _fail("eval_adapter_steps", steps, "must be strictly increasing")
        if not (math.isfinite(self.eval_damping) and self.eval_damping > 0):
            _fail("eval_damping", self.eval_damping, "must be finite and > 0")
        _at_least("eval_cg_steps", self.eval_cg_steps, 1)
        if self.eval_preconditioner not in ("none", "jacobi"):
            _fail("eval_preconditioner", self.eval_preconditioner, "choose none or jacobi")

    @property
    def n_train(self) -> int:
        """The number of training tasks."""
        return len(self.train_params) if self.train_params else self.n_train_tasks

    @property
    def n_test(self) -> int:
        """The number of held-out tasks."""
        return len(self.test_params) if self.test_params else self.n_test_tasks

    def method_settings(self, method: str) -> dict[str, Any]:
        """The settings of `method`: the run-wide ones with its `overrides` applied.

        **Returns:** a dict with the keys of the fields with the role `"method"`."""
        settings = {k: getattr(self, k) for k in fields_with_role("method")}
        for item in self.overrides:
            m, key, value = _parse_override(item)
            if m == method:
                settings[key] = value
        if not parse_method(method)[0].inner_loop:
            settings["inner_steps"] = 0
        return settings

    def method(self, name: str) -> Method:
        """The method `name` of this experiment as an object: its learner, its network
        and its own settings (the run-wide ones with its `overrides` applied).

        **Raises:** [`metapinn.experiment.ConfigError`][] naming an unknown method."""
        if name not in METHOD_NAMES:
            _fail("methods", name, f"unknown method; choose from {sorted(METHOD_NAMES)}")
        return Method(name, **self.method_settings(name))

    def held_out_labels(self) -> list[str]:
        """A label per held-out task: `nu=0.0091`, or `u0 #2` for a drawn function (its
        number, so no task is drawn)."""
        fam = self.resolved_family
        if fam.scalar:
            return fam.labels(np.asarray(self.test_params))
        return fam.labels(np.zeros((self.n_test, 0)))

    @property
    def resolved_family(self) -> Family:
        """The [`metapinn.Family`][] that `family` names."""
        return get_family(self.family)

    @staticmethod
    def fields_with_role(role: str) -> tuple[str, ...]:
        """The names of the fields that carry `role` (see `ROLES`)."""
        return fields_with_role(role)

    def _check_method(self, method: str) -> None:
        s = self.method_settings(method)
        kind, conditioned, transfer = parse_method(method)
        where = f"{method}'s " if any(o.startswith(method + ".") for o in self.overrides) else ""
        for key in ("inner_steps", "meta_steps"):
            if s[key] < 0:
                _fail(where + key, s[key], "must be an integer >= 0")
        if s["inner_optimizer"] not in INNER_OPTIMIZERS:
            _fail(
                where + "inner_optimizer",
                s["inner_optimizer"],
                f"choose one of {', '.join(INNER_OPTIMIZERS)}",
            )
        if kind.through_loop and s["inner_optimizer"] == "lbfgs":
            _fail(
                where + "inner_optimizer",
                s["inner_optimizer"],
                f"{method} differentiates through its inner loop, and L-BFGS's line search "
                "is a while loop reverse mode cannot go through; use gauss-newton",
            )
        if not (math.isfinite(s["inner_damping"]) and s["inner_damping"] > 0):
            _fail(where + "inner_damping", s["inner_damping"], "must be finite and > 0")
        if s["inner_cg_steps"] < 1:
            _fail(where + "inner_cg_steps", s["inner_cg_steps"], "must be an integer >= 1")
        if kind.learns_rule and s["inner_optimizer"] != "sgd":
            _fail(
                where + "inner_optimizer",
                s["inner_optimizer"],
                f"{method} learns its own inner rule from SGD; inner_lr is its initial rate",
            )
        for key in ("inner_lr", "outer_lr"):
            if not (math.isfinite(s[key]) and s[key] > 0):
                _fail(where + key, s[key], "a learning rate must be finite and > 0")
        if s["outer_schedule"] not in OUTER_SCHEDULES:
            _fail(where + "outer_schedule", s["outer_schedule"], f"choose one of {OUTER_SCHEDULES}")
        remat = s["inner_remat"]
        if remat not in INNER_REMATS and not re.fullmatch(r"0*[1-9][0-9]*", remat):
            _fail(
                where + "inner_remat",
                remat,
                f"choose one of {INNER_REMATS} or a segment length >= 1",
            )
        if s["adapt"] not in ADAPT_SPECS:
            _fail(where + "adapt", s["adapt"], f"choose one of {ADAPT_SPECS}")
        if kind.adapts_all and s["adapt"] != "all":
            _fail(where + "adapt", s["adapt"], f"{kind.label} adapts every parameter (adapt=all)")
        if kind.needs_loop and s["inner_steps"] < 1:
            _fail(where + "inner_steps", s["inner_steps"], f"{method} needs an inner loop (>= 1)")
        init = s["init"]
        if method not in self.methods:
            return  # its settings are checked; what it starts from matters in a run with it
        if method == CURRICULUM and not self.resolved_family.scalar:
            _fail(
                "methods",
                self.methods,
                f"curriculum needs a family ordered by a scalar parameter; "
                f"{self.resolved_family.name} has drawn functions",
            )
        if init != RANDOM and init in METHOD_NAMES:
            if init == method:
                _fail(where + "init", init, "a method cannot start from itself")
            if init not in self.methods:
                _fail(
                    where + "init",
                    init,
                    f"{init!r} is not one of the methods {self.methods}: train both in one "
                    f"run, or start from a finished run's with init=RUN_FOLDER:{init}",
                )
            if parse_method(init)[1] != conditioned:
                _fail(where + "init", init, f"{method} and {init} train different networks")
            if parse_method(init)[2] or transfer:
                per_task = init if parse_method(init)[2] else method
                _fail(where + "init", init, f"{per_task} trains one network per training task")
            if init in self.methods and self.method_settings(init)["init"] == method:
                _fail(where + "init", init, f"{method} and {init} start from each other")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ExperimentConfig":
        """Build a config from plain data (e.g. parsed JSON); missing keys take their
        defaults, lists become tuples, and the old keys `train_nus`, `test_nus` are read
        as `train_params`, `test_params`.

        **Arguments:** `data`, a dict from field names to values.

        **Returns:** an [`metapinn.experiment.ExperimentConfig`][].

        **Raises:** [`metapinn.experiment.ConfigError`][] if `data` is not a dict, for unknown keys,
        an old key given with its new name, or bad values.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"a config must be a JSON object, got {type(data).__name__}")
        types = {f.name: f.type for f in dataclasses.fields(cls)}
        try:
            data = upgrade_config_data(data)  # the keys of earlier versions
        except CompatError as e:
            raise ConfigError(str(e)) from None
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
        """A copy with some values changed (and checked). A change of `family` drops
        the tasks (back to the new family's standard ones) unless `changes` gives
        them."""
        changes = {RENAMED_KEYS.get(k, k): v for k, v in changes.items()}
        data = self.to_dict()
        if changes.get("family", self.family) != self.family:
            data = {k: v for k, v in data.items() if k not in fields_with_role("tasks")}
        return self.from_dict({**data, **changes})


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
    if kind is bool:
        if not isinstance(value, (bool, np.bool_)):
            _fail(key, value, "expected true or false")
        return bool(value)
    raise TypeError(f"unsupported config field type {kind!r}")  # pragma: no cover


def _parse_override(item: str) -> tuple[str, str, Any]:
    """`"reptile.inner_steps=20"` -> `("reptile", "inner_steps", 20)`, checked."""
    head, sep, value = item.partition("=")
    method, dot, key = head.strip().rpartition(".")
    if not (sep and dot and method and key):
        _fail("overrides", item, "write METHOD.KEY=VALUE, e.g. reptile.inner_steps=20")
    types = {f.name: typing.cast(type, f.type) for f in dataclasses.fields(ExperimentConfig)}
    if key not in fields_with_role("method"):
        known = list(fields_with_role("method"))
        _fail("overrides", item, f"unknown key {key!r}; choose from {known}")
    kind = types[key]
    value = value.strip()
    try:
        parsed = kind(value) if kind is not int else int(value)
    except ValueError:
        _fail("overrides", item, f"{key} takes a {kind.__name__}")
    return method, key, parsed


def read_settings_file(path: pathlib.Path, what: str, kind: str, error: type[ConfigError]) -> str:
    """The text of a settings file (a config, a grid).

    **Raises:** `error` naming the file: missing, a folder, or not UTF-8 text."""
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise error(f"{what} {path} is a folder: give a {kind} file") from None
    except UnicodeDecodeError as e:
        raise error(f"{what} {path} is not UTF-8 text: {e}") from None


def load_config(path: str | os.PathLike) -> ExperimentConfig:
    """Read an [`metapinn.experiment.ExperimentConfig`][] from a JSON file (missing keys take
    their defaults; see [`metapinn.experiment.ExperimentConfig.from_dict`][]).

    **Arguments:** `path`, the JSON file: one object, field names to values.

    **Returns:** an [`metapinn.experiment.ExperimentConfig`][].

    **Raises:** [`metapinn.experiment.ConfigError`][] naming the file and the problem: a missing
    file, invalid JSON, or what `from_dict` rejects. Other read errors (e.g. a
    `PermissionError`) propagate as they are.
    """
    path = pathlib.Path(path)
    try:
        data = json.loads(read_settings_file(path, "config file", "JSON", ConfigError))
    except json.JSONDecodeError as e:
        raise ConfigError(f"config file {path} is not valid JSON: {e}") from None
    try:
        return ExperimentConfig.from_dict(data)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
