r"""Meta-learners with learned inner rates over the shared loop: Meta-SGD and MAML++.

Both learn an inner update rule next to the initialisation. The rates are trainable
arrays in a [`metapinn.MetaParams`][], never Python floats on the learner (those are
static and would recompile the meta-step), and they enter the SAME scanned inner loop
[`metapinn.adapt`][] as an optax transformation built inside `meta_loss` that closes
over the (traced) rates; nothing here re-implements the loop.
"""

import dataclasses
import math
from typing import Any, NamedTuple, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PyTree

from .._custom_types import FilterSpec, Params, Scalar, Static
from ._base import (
    AbstractMetaLearner,
    InnerRemat,
    InnerVJP,
    LossFn,
    MetaAux,
    _check_steps,
    adapt,
    loss_with_gradient,
)


Rates = PyTree[Float[ArrayLike, "..."]]
"""Learned inner rates: one array per adapting leaf of the initialisation."""


class MetaParams(eqx.Module):
    """The trainable meta-parameters of a learner with learned inner rates.

    The outer optimiser updates both fields: [`metapinn.meta_step`][] takes a
    `MetaParams` where other learners take the network's parameters.

    **Fields:** `params` and `rates`, documented below; made by a learner's
    `init_meta_params`.
    """

    params: Params
    """The network initialisation $\\theta$ (the array half of `eqx.partition`)."""
    rates: Rates
    """The inner rates; `None` at the leaves that `adapt_spec` freezes."""


def _check_initial_rate(rate: Any) -> None:
    if (
        isinstance(rate, bool)
        or not isinstance(rate, (int, float))
        or not math.isfinite(rate)
        or rate <= 0
    ):
        raise ValueError(
            "a learner with learned inner rates takes as inner_optimizer the initial "
            f"inner rate, a finite float > 0 (not an optax transformation); got {rate!r}"
        )


def _check_fraction(name: str, value: Any) -> None:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ValueError(f"{name} must be a number in [0, 1], got {value!r}")


def _adapting(params: Params, adapt_spec: FilterSpec | None) -> Params:
    """The leaves of `params` that adapt (`None` elsewhere), as `adapt` splits them."""
    return params if adapt_spec is None else eqx.filter(params, adapt_spec)


def _inner_gradients(grads: PyTree, first_order: bool) -> PyTree:
    # First order stops the inner gradients here, inside the update, rather than with
    # adapt's `stop_inner_gradients` (which stops the whole update, so the rates would
    # get no meta-gradient): φ_{k+1} = φ_k − α_k ⊙ sg(g_k) keeps dφ_{k+1}/dφ_k = I and
    # dφ_{k+1}/dα_k = −sg(g_k), as in the papers' first-order variants.
    return jax.lax.stop_gradient(grads) if first_order else grads


def _apply_rates(update, rates: Rates, grads: PyTree) -> PyTree:
    """`update(rate, g)` leaf by leaf; a leaf without a rate (`None`: frozen by the
    learner's `adapt_spec`) does not move. Inside `adapt` such leaves are already
    split off; a caller adapting every leaf with the learned rule (e.g. a few-shot
    evaluation) passes gradients for them too."""
    return jtu.tree_map(
        lambda r, g: None if g is None else (jnp.zeros_like(g) if r is None else update(r, g)),
        rates,
        grads,
        is_leaf=lambda x: x is None,
    )


def _scale_by_rates(rates: Rates, *, first_order: bool = False) -> optax.GradientTransformation:
    r"""The Meta-SGD inner update $u = -\alpha \odot g$, with `rates` $\alpha$ shaped
    like the adapting parameters (`None` where they are frozen).

    **Returns:** an `optax.GradientTransformation` with an empty state.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None):
        del params
        grads = _inner_gradients(updates, first_order)
        return _apply_rates(lambda r, g: -r * g, rates, grads), state

    return optax.GradientTransformation(init_fn, update_fn)


class _StepCount(NamedTuple):
    """The state of `_scale_by_step_rates`: the inner steps taken so far."""

    taken: Int[Array, ""]


def _scale_by_step_rates(
    rates: Rates, *, first_order: bool = False
) -> optax.GradientTransformation:
    r"""The MAML++ inner update at step $k$: $u = -\alpha_{\ell, k}\, g_\ell$ for each
    leaf $\ell$, with `rates[ℓ]` of shape `(K,)`. The state counts the steps; past the
    last rate (e.g. a longer few-shot adaptation) the last one is reused.

    **Returns:** an `optax.GradientTransformation` whose state is a `_StepCount`.
    """

    def init_fn(params):
        del params
        return _StepCount(jnp.zeros((), jnp.int32))

    def update_fn(updates, state, params=None):
        del params
        grads = _inner_gradients(updates, first_order)

        def step(r, g):
            k = jnp.minimum(state.taken, r.shape[0] - 1)
            return -r[k] * g

        return _apply_rates(step, rates, grads), _StepCount(state.taken + 1)

    return optax.GradientTransformation(init_fn, update_fn)


def _adapt_with(
    learner: AbstractMetaLearner,
    params: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    support: PyTree,
    optimizer: optax.GradientTransformation,
    *,
    first_order: bool,
    return_trajectory: bool = False,
) -> tuple[Any, ...]:
    """[`metapinn.adapt`][] with `learner`'s inner settings and a learned `optimizer`."""
    return adapt(
        params,
        static,
        loss_fn,
        task,
        support,
        steps=learner.inner_steps,
        optimizer=optimizer,
        adapt_spec=learner.adapt_spec,
        unroll=learner.inner_unroll,
        # First order: the inner gradients are stopped inside `optimizer`, so reverse
        # mode never goes back through them and the plain autodiff path costs nothing.
        inner_vjp="autodiff" if first_order else learner.inner_vjp,
        return_trajectory=return_trajectory,
        remat=learner.inner_remat,
    )


class MetaSGD(AbstractMetaLearner):
    r"""Meta-SGD (Li, Zhou, Chen & Li 2017, arXiv:1707.09835): MAML that also learns a
    rate for every parameter.

    $$\min_{\theta, \alpha}\ \mathcal{L}_\text{query}\big(\phi_K(\theta, \alpha)\big),
    \qquad \phi_{k+1} = \phi_k - \alpha \odot \nabla \mathcal{L}_\text{support}(\phi_k),
    \quad \phi_0 = \theta,$$

    with $\alpha$ a pytree shaped like $\theta$. The meta-gradient is `jax.grad`
    through the scanned loop in both $\theta$ and $\alpha$ (second order; `inner_vjp`
    chooses how). With the rates held at a constant $\alpha$ it is [`metapinn.MAML`][]
    with SGD at $\alpha$.

    The meta-parameters are a [`metapinn.MetaParams`][] from `init_meta_params`; the
    rates exist only for the leaves `adapt_spec` lets adapt (frozen leaves get `None`,
    so nothing untrainable sits in the outer optimiser's state).

    **Fields:** as [`metapinn.AbstractMetaLearner`][], except that `inner_optimizer` is
    the initial rate $\alpha_0 > 0$, a float (default 0.01), and:

    - `first_order`: stop the inner gradients (static, default `False`), so that
      $d\phi_K/d\theta = I$; the rates still get the first-order meta-gradient
      $-\sum_k \nabla\mathcal{L}_\text{support}(\phi_k) \odot
      \nabla\mathcal{L}_\text{query}(\phi_K)$.

    **Raises:** `ValueError` if `inner_optimizer` is not a finite float > 0.
    """

    first_order: bool = eqx.field(static=True, default=False)

    def __check_init__(self):
        _check_initial_rate(self.inner_optimizer)

    def init_meta_params(self, params: Params) -> MetaParams:
        """**Returns:** `MetaParams(params, rates)`, every rate the initial one."""
        rate = cast(float, self.inner_optimizer)  # checked: a float > 0
        rates = jtu.tree_map(lambda p: jnp.full_like(p, rate), _adapting(params, self.adapt_spec))
        return MetaParams(params, rates)

    def initialisation(self, meta_params: MetaParams) -> Params:
        return meta_params.params

    def learned_optimizer(self, meta_params: MetaParams) -> optax.GradientTransformation:
        """The learned inner rule, e.g. for few-shot adaptation with [`metapinn.adapt`][]
        from `initialisation(meta_params)`."""
        return _scale_by_rates(meta_params.rates)

    def meta_loss(
        self,
        params: MetaParams,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        optimizer = _scale_by_rates(params.rates, first_order=self.first_order)
        adapted, support_losses = _adapt_with(
            self,
            params.params,
            static,
            loss_fn,
            task,
            support,
            optimizer,
            first_order=self.first_order,
        )
        query_loss = loss_with_gradient(loss_fn, adapted, static, task, query)
        return query_loss, MetaAux(query_loss, support_losses)


class MAMLPlusPlus(AbstractMetaLearner):
    r"""MAML++ (Antoniou, Edwards & Storkey 2019, "How to train your MAML", ICLR).

    Learned per-step, per-layer inner rates (LSLR) and the multi-step loss (MSL):

    $$\min_{\theta, \alpha}\ \sum_{k=1}^{K} w_k\, \mathcal{L}_\text{query}(\phi_k),
    \qquad \phi_{k} = \phi_{k-1} - \alpha_{\ell, k}\, \nabla_\ell
    \mathcal{L}_\text{support}(\phi_{k-1})\ \text{for each leaf } \ell,
    \quad \phi_0 = \theta.$$

    Each leaf of $\theta$ (for [`metapinn.MLPPINN`][], one per layer, `[W | b]`) has
    its own rates, an array of shape `(K,)` in [`metapinn.MetaParams`][]`.rates` (`None`
    for leaves that `adapt_spec` freezes); the inner loop is [`metapinn.adapt`][] with
    an optax transformation whose state counts the step. The query loss at
    every $\phi_k$ comes from the trajectory of the same scan, mapped over $k$.

    With $w = (0, \dots, 0, 1)$, every rate equal to $\alpha$ and second order this is
    [`metapinn.MAML`][] with SGD at $\alpha$.

    **Annealing.** [`metapinn.meta_train`][] calls `at_step(step, steps)` before every
    outer step, which returns a copy with that step's settings. Over the first
    $M = \operatorname{round}(\texttt{msl\_fraction} \cdot \texttt{steps})$ steps the
    weights move from uniform towards the final step, as in the paper's code:

    $$w_k = \frac{\max(1 - \texttt{step}/M,\ \texttt{msl\_floor})}{K}\ (k < K), \qquad
    w_K = 1 - \sum_{k<K} w_k;$$

    from step $M$ on, all the weight is on the final step and only $\phi_K$'s query loss
    is computed. The first
    $\operatorname{round}(\texttt{first\_order\_fraction} \cdot \texttt{steps})$ steps
    are first order (derivative-order annealing). The weights are an array, so they
    change without recompiling; the order and the switch to the final-step loss are
    static, so a run compiles its meta-step once per phase (at most three times).
    """

    # Keyword-only: `__init__` below sets them all (after the base class's defaults).
    msl_weights: Float[Array, " K"] = eqx.field(kw_only=True)
    first_order: bool = eqx.field(static=True, kw_only=True)
    multi_step_loss: bool = eqx.field(static=True, kw_only=True)
    msl_fraction: float = eqx.field(static=True, kw_only=True)
    first_order_fraction: float = eqx.field(static=True, kw_only=True)
    msl_floor: float = eqx.field(static=True, kw_only=True)

    def __init__(
        self,
        inner_steps: int = 5,
        inner_optimizer: Any = 0.01,
        adapt_spec: FilterSpec | None = None,
        inner_unroll: int | bool = 1,
        inner_vjp: InnerVJP = "hvp",
        inner_remat: InnerRemat = None,
        *,
        msl_weights: Float[ArrayLike, " K"] | None = None,
        first_order: bool = False,
        multi_step_loss: bool = True,
        msl_fraction: float = 0.1,
        first_order_fraction: float = 0.3,
        msl_floor: float = 0.03,
    ):
        r"""**Arguments:**

        - `inner_steps`: $K \ge 1$ (static).
        - `inner_optimizer`: the initial inner rate $\alpha_0 > 0$, a float, for every
          leaf and step (default 0.01).
        - `adapt_spec`, `inner_unroll`, `inner_vjp`, `inner_remat`: as for
          [`metapinn.MAML`][].
        - `msl_weights`: this step's weights $w$, shape `(K,)`; default uniform $1/K$
          (the start of the annealing).
        - `first_order`: stop the inner gradients (static; default `False`). The rates
          still get their first-order meta-gradient, as in the paper's first epochs.
        - `multi_step_loss`: use the weighted loss over every step (static; default
          `True`); `False` uses $\mathcal{L}_\text{query}(\phi_K)$ alone and ignores
          `msl_weights` (what `at_step` gives once the annealing is over).
        - `msl_fraction`: the fraction of the run over which the weights are annealed
          (default 0.1).
        - `first_order_fraction`: the fraction of the run that is first order
          (default 0.3).
        - `msl_floor`: the smallest non-final weight, as a multiple of $1/K$, during
          the annealing (default 0.03, as in the paper's code).

        **Raises:** `ValueError` for `inner_steps < 1`, an initial rate that is not a
        finite float > 0 (e.g. an optax transformation), `msl_weights` not of shape
        `(K,)`, or a fraction or `msl_floor` outside $[0, 1]$.
        """
        _check_steps(inner_steps)
        if inner_steps < 1:
            raise ValueError(f"MAML++ needs inner_steps >= 1, got {inner_steps!r}")
        self.inner_steps = inner_steps
        self.inner_optimizer = inner_optimizer
        self.adapt_spec = adapt_spec
        self.inner_unroll = inner_unroll
        self.inner_vjp = inner_vjp
        self.inner_remat = inner_remat
        if msl_weights is None:
            msl_weights = jnp.full((inner_steps,), 1 / inner_steps)
        msl_weights = jnp.asarray(msl_weights)
        # A strong dtype: `at_step`'s weights then trace exactly like these (a weakly
        # typed array would compile the meta-step a second time).
        self.msl_weights = jnp.asarray(msl_weights, dtype=msl_weights.dtype)
        self.first_order = first_order
        self.multi_step_loss = multi_step_loss
        self.msl_fraction = msl_fraction
        self.first_order_fraction = first_order_fraction
        self.msl_floor = msl_floor

    def __check_init__(self):
        _check_initial_rate(self.inner_optimizer)
        _check_fraction("msl_fraction", self.msl_fraction)
        _check_fraction("first_order_fraction", self.first_order_fraction)
        _check_fraction("msl_floor", self.msl_floor)
        shape = jnp.shape(self.msl_weights)
        if shape != (self.inner_steps,):
            raise ValueError(
                f"msl_weights must have shape (inner_steps,) = ({self.inner_steps},), "
                f"got shape {shape}"
            )

    def init_meta_params(self, params: Params) -> MetaParams:
        """**Returns:** `MetaParams(params, rates)`, every rate the initial one."""
        rate, steps = cast(float, self.inner_optimizer), self.inner_steps  # a float > 0
        rates = jtu.tree_map(
            lambda p: jnp.full((steps,), rate, jnp.result_type(p)),
            _adapting(params, self.adapt_spec),
        )
        return MetaParams(params, rates)

    def initialisation(self, meta_params: MetaParams) -> Params:
        return meta_params.params

    def learned_optimizer(self, meta_params: MetaParams) -> optax.GradientTransformation:
        """The learned inner rule (past step $K$, the last step's rates), e.g. for
        few-shot adaptation with [`metapinn.adapt`][] from `initialisation(meta_params)`."""
        return _scale_by_step_rates(meta_params.rates)

    def msl_weights_at(self, step: int, steps: int) -> np.ndarray:
        """The multi-step loss weights at outer step `step` of `steps` (see the class
        docstring); they sum to 1.

        **Raises:** `ValueError` unless `0 <= step` and `1 <= steps` are integers.
        """
        for name, value, least in (("step", step, 0), ("steps", steps, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an integer >= {least}, got {value!r}")
        K = self.inner_steps
        msl_steps = round(self.msl_fraction * steps)
        weights = np.zeros(K)
        if step < msl_steps:
            weights[:-1] = max(1 - step / msl_steps, self.msl_floor) / K
        weights[-1] = 1 - np.sum(weights[:-1])
        return weights

    def at_step(self, step: int, steps: int) -> "MAMLPlusPlus":
        """A copy with outer step `step`'s weights, loss and derivative order."""
        weights = self.msl_weights_at(step, steps)
        return dataclasses.replace(
            self,
            msl_weights=jnp.asarray(weights, jnp.result_type(self.msl_weights)),
            multi_step_loss=step < round(self.msl_fraction * steps),
            first_order=step < round(self.first_order_fraction * steps),
        )

    def meta_loss(
        self,
        params: MetaParams,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        optimizer = _scale_by_step_rates(params.rates, first_order=self.first_order)
        args = (self, params.params, static, loss_fn, task, support, optimizer)
        if not self.multi_step_loss:
            adapted, support_losses = _adapt_with(*args, first_order=self.first_order)
            query_loss = loss_with_gradient(loss_fn, adapted, static, task, query)
            return query_loss, MetaAux(query_loss, support_losses)
        _, support_losses, trajectory = _adapt_with(
            *args, first_order=self.first_order, return_trajectory=True
        )
        query_losses = jax.vmap(lambda phi: loss_with_gradient(loss_fn, phi, static, task, query))(
            trajectory
        )
        objective = jnp.sum(self.msl_weights.astype(query_losses.dtype) * query_losses)
        return objective, MetaAux(query_losses[-1], support_losses)
