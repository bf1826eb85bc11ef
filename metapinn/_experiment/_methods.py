"""What an experiment's methods are: each a learner on one of two networks, with its
own settings, as an object ([`metapinn.experiment.Method`][]) rather than a string to
decode.

A method's name says what it is: `reptile` is Reptile on the plain PINN `u(x, t)`,
`cond-reptile` Reptile on the parameter-conditioned PINN `u(x, t, c(ν))`, `transfer`
multi-task training of the plain PINN on the one training task nearest each held-out
task, `curriculum` the same trained along a curriculum of the training tasks (each
warm-started from the next easier one). A configuration keeps the names (they are
what `config.json` and the command line hold) and
[`metapinn.experiment.ExperimentConfig.method`][] turns one into its `Method`, with
the run-wide settings and the method's own overrides resolved. A new learner is one
entry of `LEARNERS`.
"""

import dataclasses
import functools
import re
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import optax

from .._meta._adapters import LBFGS, AbstractAdapter
from .._meta._base import AbstractMetaLearner
from .._meta._gauss_newton import GaussNewton
from .._meta._methods import METHODS as LEARNER_CLASSES
from ._compat import as_written_before


if TYPE_CHECKING:
    from ._config import ExperimentConfig


@dataclasses.dataclass(frozen=True)
class LearnerKind:
    """A learner an experiment can run, and what the experiment must know of it.

    **Fields:** `name` (a key of `metapinn.make_learner`'s registry), `label` (in
    tables and plots), `inner_loop` (it adapts in an inner loop: `inner_*` settings
    apply), `learns_rule` (it learns an inner rule besides its initialisation: the
    evaluation also adapts with that rule, as an extra row), `needs_loop` (it needs
    at least one inner step), `adapts_all` (it adapts every parameter: no ANIL),
    `through_loop` (its meta-gradient goes through the inner loop by reverse mode)."""

    name: str
    label: str
    inner_loop: bool = True
    learns_rule: bool = False
    needs_loop: bool = False
    adapts_all: bool = False
    through_loop: bool = False


LEARNERS: dict[str, LearnerKind] = {
    k.name: k
    for k in (
        LearnerKind("maml", "MAML", through_loop=True),
        LearnerKind("fomaml", "First-order MAML"),
        LearnerKind("reptile", "Reptile"),
        LearnerKind("multitask", "Multi-task", inner_loop=False),
        LearnerKind("metasgd", "Meta-SGD", learns_rule=True, through_loop=True),
        LearnerKind("mamlpp", "MAML++", learns_rule=True, needs_loop=True, through_loop=True),
        LearnerKind("imaml", "iMAML", needs_loop=True, adapts_all=True),
    )
}
"""Every learner an experiment can run, by name."""

CONDITIONED_PREFIX = "cond-"
TRANSFER = "transfer"
CURRICULUM = "curriculum"
PER_TASK = (TRANSFER, CURRICULUM)
"""The baselines that train one plain PINN per training task they need."""
RANDOM = "random"
"""The random initialisation: the evaluation's baseline row, not a trained method."""
RULE_SUFFIX = "+rule"
"""The evaluation row of a learned-rule method adapted with its own rule."""

INNER_OPTIMIZERS = ("sgd", "adam", "gauss-newton", "lbfgs")
"""The inner loop's adapters: SGD and Adam at `inner_lr`; Levenberg–Marquardt
([`metapinn.GaussNewton`][], `inner_damping`, a fixed `inner_cg_steps`); L-BFGS with its
line search ([`metapinn.LBFGS`][], not under a learner that differentiates through its
loop)."""
EVAL_ADAPTERS = ("gauss-newton", "lbfgs")
"""The adapters the evaluation may time besides its common Adam schedule
(`eval_adapters`); `gauss-newton-cg<N>` is Gauss–Newton with N CG iterations a step
instead of `eval_cg_steps` (see `cg_steps_of`), so that one run can set a few cheap
steps beside fewer, more exact ones."""


def cg_steps_of(adapter: str) -> int | None:
    """The CG iterations a step that an evaluation adapter's name fixes:
    `"gauss-newton-cg10"` -> 10; `None` for a name without them (`"gauss-newton"`
    takes `eval_cg_steps`) or a name that is not a Gauss–Newton variant."""
    match = re.fullmatch(r"gauss-newton-cg([0-9]+)", adapter)
    return int(match.group(1)) if match else None


def is_eval_adapter(name: str) -> bool:
    """Whether `name` is an evaluation adapter: one of `EVAL_ADAPTERS`, or
    `gauss-newton-cg<N>` with N >= 1."""
    return name in EVAL_ADAPTERS or (cg_steps_of(name) or 0) >= 1


ADAPT_SPECS = ("all", "last-layer")
"""Which parameters an inner loop adapts: all, or only the output layer (ANIL)."""
INNER_REMATS = ("none", "sqrt", "binomial")
"""How an inner loop is checkpointed for the meta-gradient (`metapinn.remat_scan`):
not at all, in segments of about sqrt(K) steps, by the binomial schedule; or a
positive integer, segments of that many steps. It changes the memory and the time of
a meta-step, not its values (beyond rounding)."""
OUTER_SCHEDULES = ("constant", "cosine")
"""The outer learning rate over a method's meta-steps: constant, or a cosine decay from
`outer_lr` to `outer_lr / 100` at its last step."""


def _names() -> tuple[str, ...]:
    plain = [k for k in LEARNERS]
    return (*plain, *(CONDITIONED_PREFIX + k for k in plain), *PER_TASK)


METHOD_NAMES = _names()
"""Every method a run can train."""


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


def writers_optimizer(settings: dict[str, Any]) -> optax.GradientTransformation:
    """The outer optimiser that wrote a checkpoint, from the run settings stored in it
    (see [`Method.run_settings`][metapinn.experiment.Method.run_settings])."""
    if settings.get("outer_schedule", "constant") == "cosine":
        return cosine_adam(settings["outer_lr"], settings["outer_schedule_steps"])
    return adam(settings["outer_lr"])


def parse_method(name: str) -> tuple[LearnerKind, bool, bool]:
    """`(learner, conditioned, per_task)` of a method's name (`per_task`: the transfer
    or curriculum baseline, one plain PINN per training task it needs).

    **Raises:** `ValueError` naming an unknown method."""
    if name in PER_TASK:
        return LEARNERS["multitask"], False, True
    conditioned = name.startswith(CONDITIONED_PREFIX)
    kind = LEARNERS.get(name.removeprefix(CONDITIONED_PREFIX))
    if kind is None or name not in METHOD_NAMES:
        raise ValueError(f"unknown method {name!r}; choose from {sorted(METHOD_NAMES)}")
    return kind, conditioned, False


@dataclasses.dataclass(frozen=True)
class Method:
    """One method of an experiment: a learner on a network, with its own settings.

    Made by [`metapinn.experiment.ExperimentConfig.method`][] (the run-wide settings with the
    method's overrides applied).

    **Fields:** `name`; the settings `inner_steps` (0 for a learner without an inner
    loop), `inner_optimizer`, `inner_lr`, `inner_damping`, `inner_cg_steps`,
    `inner_remat`, `adapt`, `outer_lr`,
    `outer_schedule`, `meta_steps`, `init` (see [`metapinn.experiment.ExperimentConfig`][]).
    """

    name: str
    inner_steps: int = 5
    inner_optimizer: str = "sgd"
    inner_lr: float = 0.01
    inner_damping: float = 1e-2
    inner_cg_steps: int = 20
    inner_remat: str = "none"
    adapt: str = "all"
    outer_lr: float = 1e-3
    outer_schedule: str = "constant"
    meta_steps: int = 500
    init: str = RANDOM

    def __post_init__(self):
        parse_method(self.name)  # a named error for an unknown method
        if not self.kind.inner_loop:
            object.__setattr__(self, "inner_steps", 0)

    # ----------------------------------------------------------- what it is

    @property
    def kind(self) -> LearnerKind:
        """The learner it trains with."""
        return parse_method(self.name)[0]

    @property
    def conditioned(self) -> bool:
        """Whether it trains the parameter-conditioned network."""
        return parse_method(self.name)[1]

    @property
    def transfer(self) -> bool:
        """Whether it is a per-task baseline, transfer or curriculum (one plain PINN
        per training task it needs, each trained on that task alone)."""
        return parse_method(self.name)[2]

    @property
    def curriculum(self) -> bool:
        """Whether it is the curriculum baseline: its per-task runs are trained one
        after another along [`metapinn.Family.curriculum`][], each from the one
        before."""
        return self.name == CURRICULUM

    @property
    def label(self) -> str:
        return label(self.name)

    @property
    def learns_rule(self) -> bool:
        """Whether it learns an inner rule besides its initialisation (Meta-SGD,
        MAML++): the evaluation then also adapts with that rule, as an extra row."""
        return self.kind.learns_rule

    @property
    def rule_row(self) -> str:
        """The name of its learned-rule evaluation row."""
        return self.name + RULE_SUFFIX

    @property
    def warm_start(self) -> str | None:
        """The method, run folder or `RUN:METHOD` it starts from; `None`: random."""
        return None if self.init == RANDOM else self.init

    # -------------------------------------------------------- what it builds

    def meta_learner(self, params: Any = None) -> AbstractMetaLearner:
        """Its learner with its settings (`params`, the network's parameters, shapes
        the `adapt` filter)."""
        cls: Any = LEARNER_CLASSES[self.kind.name]  # each takes its own settings
        if not self.kind.inner_loop:
            # The conditioned network's jet differs per task: the loss's own gradient.
            return cls(own_gradient=self.conditioned)
        return cls(
            inner_steps=self.inner_steps,
            inner_optimizer=self.inner_adapter(),
            adapt_spec=None if params is None else adapt_spec(params, self.adapt),
            inner_remat=inner_remat(self.inner_remat),
        )

    def inner_adapter(self) -> AbstractAdapter | optax.GradientTransformation | float:
        """Its inner loop's adapter: SGD at `inner_lr` (a float), Adam (differentiable
        at zero, `eps_root` 1e-16), [`metapinn.GaussNewton`][] with a fixed number of CG
        iterations (reverse mode goes through it), or [`metapinn.LBFGS`][]."""
        if self.inner_optimizer == "sgd":
            return self.inner_lr
        if self.inner_optimizer == "adam":
            return adam(self.inner_lr, 1e-16)
        if self.inner_optimizer == "gauss-newton":
            return GaussNewton(
                damping=self.inner_damping, cg_steps=self.inner_cg_steps, cg_rtol=0.0
            )
        return LBFGS()

    def outer_optimizer(self) -> optax.GradientTransformation:
        """Adam at its `outer_lr`, constant or decayed over its `meta_steps`
        (`outer_schedule`). Its state is part of a checkpoint, so loading one takes
        the optimiser that wrote it."""
        if self.outer_schedule == "cosine":
            return cosine_adam(self.outer_lr, self.meta_steps)
        return adam(self.outer_lr)

    def tasks_at_once(self, config: "ExperimentConfig") -> int | None:
        """How its meta-step maps over its tasks (`None`: all vmapped together).

        Multi-task training of the plain network on shared points is vmapped: its jet
        is computed once for every task (W3, 6 tasks: 13.7 ms a step). That of the
        conditioned network goes one task after another: its jet differs per task (59
        against 155 ms vmapped). The learners with an inner loop follow the config's
        `tasks_at_once` (W3 runs them one task at a time: Reptile 271 against 372 ms
        vmapped, MAML 1.17 against 1.35 s, in one run on 2 cores)."""
        if not self.kind.inner_loop:
            return 1 if self.conditioned else None
        return config.tasks_at_once or None

    def run_tasks(self, config: "ExperimentConfig") -> tuple[int | None, ...]:
        """The training runs it makes per seed, by training task: `(None,)`, one run on
        every training task; the transfer baseline's, one run per training task it
        needs (the nearest to a held-out task); the curriculum's, one run per task of
        its chain, in the order they train (see [`metapinn.Family.curriculum`][])."""
        if not self.transfer:
            return (None,)
        from ._problem import curriculum_tasks, nearest_training_tasks

        if self.curriculum:
            return curriculum_tasks(config)[0]  # in the order they train
        return tuple(sorted(set(nearest_training_tasks(config))))

    def source_tasks(self, config: "ExperimentConfig") -> tuple[int, ...]:
        """A per-task baseline's training task for each held-out task: transfer's
        nearest, the curriculum's next easier one."""
        from ._problem import curriculum_tasks, nearest_training_tasks

        if self.curriculum:
            return curriculum_tasks(config)[1]
        return nearest_training_tasks(config)

    def previous_task(self, config: "ExperimentConfig", task: int) -> int | None:
        """The training task whose run a curriculum run of `task` starts from (`None`:
        the first, from the random initialisation; always `None` for transfer)."""
        if not self.curriculum:
            return None
        chain = self.run_tasks(config)
        position = chain.index(task)
        return None if position == 0 else chain[position - 1]

    def run_settings(
        self, config: "ExperimentConfig", seed: int, task: int | None = None
    ) -> dict[str, Any]:
        """What one training run depends on (stored in, and checked against, its
        checkpoint): the run-wide training settings and its own. A transfer run names
        its one training task.

        Settings at what runs did before they existed are left out, so that older
        checkpoints stay valid (see `metapinn._experiment._compat`)."""
        data = config.to_dict()
        settings = {k: data[k] for k in config.fields_with_role("training")}
        own: dict[str, Any] = {
            "inner_steps": self.inner_steps,
            "inner_optimizer": self.inner_optimizer,
            "inner_lr": self.inner_lr,
            "outer_lr": self.outer_lr,
            "outer_schedule": self.outer_schedule,
            "meta_steps": self.meta_steps,
            "adapt": self.adapt,
            "init": self.init,
        }  # inner_remat: how the meta-gradient is computed, not what: resumable
        if self.inner_steps and self.inner_optimizer == "gauss-newton":  # (older runs: none)
            own.update(inner_damping=self.inner_damping, inner_cg_steps=self.inner_cg_steps)
        if self.inner_steps == 0:
            for k in ("inner_steps", "inner_optimizer", "inner_lr", "adapt"):
                own.pop(k)
        settings, own = as_written_before(
            settings,
            own,
            family=config.family,
            scalar=config.resolved_family.scalar,
            resample=config.resample,
        )
        if self.outer_schedule != "constant":
            # A decay over the run's length: resuming it longer would change its past.
            own["outer_schedule_steps"] = own["meta_steps"]
        out = {"method": self.name, "seed": seed, **settings, **own}
        if task is not None:
            out["task"] = task
            out["tasks_per_step"] = 1
        if self.transfer:
            out.pop("init", None)
        if self.curriculum and task is not None:
            out["start_task"] = self.previous_task(config, task)
        return out


def label(name: str) -> str:
    """The label of an evaluation row in tables and plots: the random initialisation,
    a method, or a method's learned rule."""
    if name == RANDOM:
        return "Random init"
    if name.endswith(RULE_SUFFIX):
        return f"{label(name.removesuffix(RULE_SUFFIX))}, its learned rule"
    kind, conditioned, transfer = parse_method(name)
    if name == CURRICULUM:
        return "Curriculum (next easier task)"
    if transfer:
        return "Transfer (nearest task)"
    if conditioned:
        return "Conditioned PINN" if kind.name == "multitask" else f"Conditioned + {kind.label}"
    return kind.label


def is_conditioned(name: str) -> bool:
    """Whether the evaluation row `name` (a method, or its learned rule) is on the
    parameter-conditioned network."""
    return name.startswith(CONDITIONED_PREFIX)


def adapt_spec(params: Any, adapt: str) -> Any:
    """The filter of the leaves an inner loop adapts: `None` (all) or the output layer
    only (`last-layer`, as in ANIL: Raghu et al. 2020)."""
    if adapt == "all":
        return None
    if adapt == "last-layer":
        spec = jax.tree_util.tree_map(lambda _: False, params)
        return eqx.tree_at(lambda p: p.layers[-1], spec, True)
    raise ValueError(f"config value adapt={adapt!r} is invalid: choose all or last-layer")


def inner_remat(setting: str) -> Any:
    """The learners' `inner_remat` for a config's setting (`"none"`, `"sqrt"`,
    `"binomial"` or a segment length)."""
    if setting == "none":
        return None
    return int(setting) if re.fullmatch(r"[0-9]+", setting) else setting
