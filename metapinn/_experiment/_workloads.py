"""The named workloads of docs/design.md §3 (W1, W2, W3) as changes to the configuration's
defaults (which are W1), on any family; and the `--quick` smoke-run preset."""

from typing import Any

import numpy as np

from .._pde._registry import family as get_family
from ._config import ConfigError, ExperimentConfig, _fail, _parse_override, fields_with_role


W3 = {
    "name": "W3",
    "width": 64,
    "depth": 4,
    "n_interior": 2000,
    "n_initial": 250,
    "n_boundary": 125,
    "resample": True,
    "tasks_at_once": 1,
    "seeds": (0,),
    "methods": (
        "multitask", "reptile", "maml", "metasgd", "cond-multitask", "cond-reptile", "transfer",
    ),
    "meta_steps": 1000,
    "inner_steps": 5,
    "inner_lr": 0.01,
    "overrides": (
        # Pre-training from the random initialisation: Adam decaying from 1e-2.
        "multitask.meta_steps=2000", "multitask.outer_lr=0.01", "multitask.outer_schedule=cosine",
        "cond-multitask.meta_steps=2000", "cond-multitask.outer_lr=0.01",
        "cond-multitask.outer_schedule=cosine",
        "transfer.outer_lr=0.01", "transfer.outer_schedule=cosine",
        "curriculum.outer_lr=0.01", "curriculum.outer_schedule=cosine",
        # The meta-learners, warm-started from multi-task pre-training of their network.
        "reptile.init=multitask", "reptile.meta_steps=60", "reptile.inner_steps=10",
        "reptile.inner_optimizer=adam", "reptile.inner_lr=0.001",
        "maml.init=multitask", "maml.meta_steps=25", "maml.inner_optimizer=adam",
        "maml.inner_lr=0.001",
        "metasgd.init=multitask", "metasgd.meta_steps=25",
        "cond-reptile.init=cond-multitask", "cond-reptile.meta_steps=100",
        "cond-reptile.inner_steps=10", "cond-reptile.inner_optimizer=adam",
        "cond-reptile.inner_lr=0.001",
        # The rest of `--methods all`, warm-started with the budgets of their kin above
        # (not tuned further): first-order MAML as Reptile's, MAML++ and iMAML as MAML's.
        # On the conditioned network, SGD inner loops start at 1e-3: from its multi-task
        # run, 5 SGD steps at 1e-2 (and 3e-3) diverge on the training task nu = 0.005.
        "fomaml.init=multitask", "fomaml.meta_steps=60", "fomaml.inner_optimizer=adam",
        "fomaml.inner_lr=0.001",
        "mamlpp.init=multitask", "mamlpp.meta_steps=25",
        "imaml.init=multitask", "imaml.meta_steps=25",
        "cond-maml.init=cond-multitask", "cond-maml.meta_steps=25",
        "cond-maml.inner_optimizer=adam", "cond-maml.inner_lr=0.001",
        "cond-fomaml.init=cond-multitask", "cond-fomaml.meta_steps=60",
        "cond-fomaml.inner_optimizer=adam", "cond-fomaml.inner_lr=0.001",
        "cond-metasgd.init=cond-multitask", "cond-metasgd.meta_steps=25",
        "cond-metasgd.inner_lr=0.001",
        "cond-mamlpp.init=cond-multitask", "cond-mamlpp.meta_steps=25",
        "cond-mamlpp.inner_lr=0.001",
        "cond-imaml.init=cond-multitask", "cond-imaml.meta_steps=25",
        "cond-imaml.inner_lr=0.001",
    ),
    "eval_warmup": 20,
    "eps": (0.1, 0.05, 0.02, 0.01),
    # Every initialisation also adapted by Gauss-Newton and L-BFGS, each task timed.
    "eval_adapters": ("gauss-newton", "lbfgs"),
    "eval_adapter_steps": (0, 1, 3, 10),
}  # fmt: skip
"""Workload W3 (docs/design.md §3), the default of `metapinn reproduce`: the 12,737-parameter
PINN, 2000/250/125-per-side points re-sampled every meta-step, the W1 viscosities; its
methods and budgets, sized to about 13 minutes on 2 CPU cores for its one seed,
plus about 5 for its Gauss–Newton and L-BFGS evaluation (10 Gauss–Newton steps of the
conditioned network took 8.6 s a task)
(`--seeds 0 1 2` for the spread over seeds)."""

W2_TRAIN_NUS = tuple(float(v) for v in np.geomspace(0.001, 0.1, 25))
"""W2's training viscosities: the log-uniform distribution on [0.001, 0.1] (docs/design.md
§3), as 25 geometrically spaced values (a factor of 1.21 apart) of which each
meta-step draws `tasks_per_step`."""
W2_TEST_NUS = (0.0015, 0.003, 0.0075, 0.015, 0.03, 0.075, 0.0007, 0.15)
"""W2's held-out viscosities: six in the training range and two outside it
(extrapolation), reported separately."""

W2 = {**W3, "name": "W2", "train_params": W2_TRAIN_NUS, "test_params": W2_TEST_NUS}
"""Workload W2 (docs/design.md §3), the wide Burgers family: W3 with nu from 0.001 to 0.1."""

A = {
    **{k: W3[k] for k in ("n_interior", "n_initial", "n_boundary", "resample", "eps")},
    "meta_steps": W3["meta_steps"],
    "name": "A",
    "tasks_at_once": 6,
    "seeds": (0,),
    "methods": ("cond-multitask", "cond-reptile"),
    "overrides": (
        "cond-multitask.meta_steps=4000", "cond-multitask.outer_lr=0.003",
        "cond-multitask.outer_schedule=cosine",
        # Reptile over 3 Gauss-Newton steps (20 CG iterations each), warm-started from
        # the conditioned pre-training: an initialisation learned for the adapter.
        # Outer Adam rate chosen on Burgers' training tasks (seed 0, 20 meta-steps,
        # mean rel-L2 after 3 / 10 Gauss-Newton steps of at most 50 CG iterations;
        # the pre-training alone 2.5e-3 / 8.8e-4): 1e-4 2.5e-3 / 7.0e-4, 1e-3
        # 1.7e-3 / 4.7e-4, 3e-3 4.6e-3 / 9.1e-4 (and 0.19 before any step).
        "cond-reptile.init=cond-multitask", "cond-reptile.inner_optimizer=gauss-newton",
        "cond-reptile.inner_steps=3", "cond-reptile.meta_steps=20",
        "cond-reptile.outer_lr=0.001",
    ),
    "eval_steps": (0, 10, 100, 1000),
    # Chosen on the training tasks (seed 0, the conditioned network, mean rel-L2 after
    # 100 / 1000 steps): 1e-3 1.2e-2 / 1.2e-2, 3e-4 4.6e-3 / 5.5e-3, 1e-4 4.0e-3 /
    # 3.4e-3, 3e-5 4.0e-3 / 2.1e-3; 1e-4 leaves random init a schedule that moves.
    "eval_lr": 1e-4,
    "eval_warmup": 20,
    # Gauss-Newton at 50 CG iterations a step (the most accurate after 10 steps) and
    # at 10 (the soonest below 1e-2: on A-burgers seed 0-1's hardest tasks, 0.79 s
    # against 1.53 s at 50, 10 steps reading 2.0e-3 against 9.6e-4).
    "eval_adapters": ("gauss-newton", "gauss-newton-cg10", "lbfgs"),
    "eval_adapter_steps": (0, 1, 2, 3, 5, 10),
}  # fmt: skip
"""Workload A (accurate): the family's accurate recipe network
([`metapinn.experiment.recipe`][]: Fourier features, random weight factorisation, causal
weighting, and for periodic families the exact periodic embedding) as the conditioned
PINN, pre-trained on W3's points and tasks by 4000 multi-task steps of Adam decaying
from 3e-3 (one Burgers seed: about 15 minutes on one core, 9 on two host devices),
and Reptile over Gauss–Newton from it (20 meta-steps, about 4 minutes a Burgers seed
on two host devices), then adapted by the common Adam schedule, Gauss–Newton and
L-BFGS, on the family's
standard held-out tasks and, for an ordered family, one value below and one above the
training values (reported apart as extrapolation). Named
`A-<family>`; the recipe's Adam schedule, gradient-norm balancing, time-marching and
finisher are single-task training's and do not enter meta-training."""

WORKLOADS: dict[str, dict[str, Any]] = {"W1": {}, "W2": W2, "W3": W3, "A": A}
"""The named workloads, as changes to the defaults (which are W1)."""
FAMILY_WORKLOADS: dict[str, tuple[str, ...]] = {"W2": ("burgers",)}
"""The workloads that fix their family (W2 is a range of Burgers viscosities); the
others run on any family, with its standard tasks."""
DEFAULT_WORKLOAD = "W3"
"""The workload of `metapinn reproduce` (and `metapinn.experiment.reproduce()`) without settings."""


def workload(name: str, family: str | None = None, **changes: Any) -> "ExperimentConfig":
    """The configuration of a named workload (`W1`, `W2`, `W3`) on `family` (default:
    Burgers; W1 and W3 run on any family, with its standard training and held-out
    tasks, and are named `W3-heat` etc. on another), with `changes` applied.

    **Arguments:**

    - `name`: a key of [`metapinn.experiment.WORKLOADS`][]: `"W1"`, `"W2"`, `"W3"` or
      `"A"` (whose held-out tasks add one value below and one above the family's
      training values).
    - `family`: a key of [`metapinn.FAMILIES`][], or `MODULE:ATTR` for a family of
      your own (see [`metapinn.family`][]); default `None`, the workload's own
      (Burgers). On another family the workload's tasks are dropped for the family's
      standard ones.
    - `**changes`: settings of [`metapinn.experiment.ExperimentConfig`][] to change, e.g.
      `seeds=(0,)`.

    **Returns:** an [`metapinn.experiment.ExperimentConfig`][].

    **Raises:** [`metapinn.experiment.ConfigError`][] for an unknown workload or family, a
    workload that does not run on the family, or a bad change.
    """
    if name not in WORKLOADS:
        raise ConfigError(f"unknown workload {name!r}; choose one of {sorted(WORKLOADS)}")
    data = dict(WORKLOADS[name])
    own = "burgers"
    if family is not None:
        try:
            own = get_family(family).name  # a family of the user's is named by its own name
        except ValueError as e:
            _fail("family", family, str(e))
    if name == "A":
        data.update(_recipe_network(family or "burgers"))
        data.update(_with_out_of_range(family or "burgers"))
    if family is not None and family != data.get("family", "burgers"):
        if name in FAMILY_WORKLOADS and family not in FAMILY_WORKLOADS[name]:
            _fail("family", family, f"workload {name} is defined on {FAMILY_WORKLOADS[name]}")
        keep = ("test_params",) if name == "A" else ()
        data = {k: v for k, v in data.items() if k not in fields_with_role("tasks") or k in keep}
        data.update(family=family, name=f"{data.get('name', name)}-{own}")
    elif name == "A":
        data["name"] = "A-burgers"
    return ExperimentConfig.from_dict({**data, **changes})


OUT_OF_RANGE_FACTOR = 1.5
"""Workload A's out-of-range held-out values: the smallest training value divided by,
and the largest multiplied by, this factor."""


def _with_out_of_range(family: str) -> dict[str, Any]:
    """Workload A's held-out values on `family`: its standard ones, then one below and
    one above its standard training values (`OUT_OF_RANGE_FACTOR`), reported apart as
    extrapolation; nothing for a family of drawn functions (its tasks are the
    family's drawn ones). A run that changes `train_params` sets its `test_params`
    too."""
    fam = get_family(family)
    if not fam.train_values:
        return {}
    low, high = min(fam.train_values), max(fam.train_values)
    outside = (low / OUT_OF_RANGE_FACTOR, high * OUT_OF_RANGE_FACTOR)
    return {"test_params": (*fam.test_values, *(float(f"{v:.4g}") for v in outside))}


def _recipe_network(family: str) -> dict[str, Any]:
    """`family`'s recipe's network, loss weights and causal weighting, as config
    settings."""
    from ._recipes import recipe  # the recipes build on the workloads

    return recipe(family).network_settings()


QUICK_SUFFIX = "-quick"
"""How a quick run's name ends: its results are titled as a smoke test."""
QUICK = {
    "meta_steps": 20,
    "seeds": (0, 1),
    "checkpoint_every": 10,
    "eval_steps": (0, 10, 20, 50, 100),
    "eval_adapter_steps": (0, 1),
    "budget": 10,
}
"""Overrides for a smoke run (`--quick`): the whole pipeline, not meaningful numbers
(measured on 2 cores: W3 about 5 minutes, W1 about one)."""


def quick(config: ExperimentConfig) -> ExperimentConfig:
    """`config` shrunk to a smoke run (see `QUICK`); methods' own `meta_steps` go too.

    **Arguments:** `config`, an [`metapinn.experiment.ExperimentConfig`][].

    **Returns:** a new [`metapinn.experiment.ExperimentConfig`][]: `config` with the values of
    `QUICK` (20 meta-steps, seeds 0 and 1, ...) and without its `*.meta_steps`
    overrides, named with `QUICK_SUFFIX` so that its results are titled as a smoke
    test.
    """
    overrides = [o for o in config.overrides if _parse_override(o)[1] != "meta_steps"]
    name = config.name if config.name.endswith(QUICK_SUFFIX) else config.name + QUICK_SUFFIX
    return config.replace(**QUICK, overrides=overrides, name=name)
