"""MAML, first-order MAML, Reptile and multi-task pre-training over one inner loop."""

import equinox as eqx
import jax
from jaxtyping import PyTree

from .._custom_types import Params, Scalar, Static
from ._adapters import as_adapter
from ._base import AbstractMetaLearner, LossFn, MetaAux, loss_with_gradient, tree_sq_norm


def _query_loss_after_adapting(
    learner: AbstractMetaLearner,
    params: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    support: PyTree,
    query: PyTree,
    *,
    stop_inner_gradients: bool,
) -> tuple[Scalar, MetaAux]:
    """`L_query(φ_K(θ))`: the objective MAML and first-order MAML share."""
    adapted, support_losses = learner.adapt(
        params, static, loss_fn, task, support, stop_inner_gradients=stop_inner_gradients
    )
    query_loss = loss_with_gradient(loss_fn, adapted, static, task, query)
    return query_loss, MetaAux(query_loss, support_losses)


class MAML(AbstractMetaLearner):
    r"""Model-agnostic meta-learning, second order (Finn, Abbeel & Levine 2017, ICML).

    $$\min_\theta\ \mathcal{L}_\text{query}\big(\phi_K(\theta)\big),$$

    where $\phi_K(\theta)$ is the inner loop started at $\theta$ on the support set.
    The meta-gradient is `jax.grad` through the scanned inner loop, so it carries the
    Hessian terms: for SGD, $\prod_k (I - \alpha \nabla^2 \mathcal{L}(\phi_k))
    \nabla \mathcal{L}_\text{query}(\phi_K)$.

    **Fields:** as [`metapinn.AbstractMetaLearner`][] (e.g.
    `MAML(inner_steps=5, inner_optimizer=0.01)`).

    **Raises:** as [`metapinn.AbstractMetaLearner`][], on construction; and
    `ValueError` for an inner adapter that reverse mode cannot go through (e.g.
    `GaussNewton` with `cg_rtol > 0`, `LBFGS` with its line search).
    """

    def __check_init__(self):
        adapter = as_adapter(self.inner_optimizer)
        if not adapter.reverse_differentiable:
            raise ValueError(
                f"MAML differentiates through its inner loop, and reverse mode cannot go "
                f"through inner_optimizer={adapter!r} (a while loop); use "
                "GaussNewton(cg_rtol=0.0), LBFGS(learning_rate=...), or a first-order learner"
            )

    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        return _query_loss_after_adapting(
            self, params, static, loss_fn, task, support, query, stop_inner_gradients=False
        )


class FOMAML(AbstractMetaLearner):
    r"""First-order MAML (Finn et al. 2017, §5.2): the query-loss gradient at $\phi_K$,

    $$g = \nabla \mathcal{L}_\text{query}(\phi)\big|_{\phi = \phi_K(\theta)},$$

    obtained from the same loop as [`metapinn.MAML`][] with every inner gradient
    wrapped in `stop_gradient`, so that $d\phi_K / d\theta = I$.

    **Fields:** as [`metapinn.AbstractMetaLearner`][] (e.g.
    `FOMAML(inner_steps=5, inner_optimizer=0.01)`).

    **Raises:** as [`metapinn.AbstractMetaLearner`][], on construction.
    """

    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        return _query_loss_after_adapting(
            self, params, static, loss_fn, task, support, query, stop_inner_gradients=True
        )


class Reptile(AbstractMetaLearner):
    r"""Reptile (Nichol, Achiam & Schulman 2018, arXiv:1803.02999).

    The meta-gradient is $\theta - \phi_K(\theta)$: the gradient of
    $\tfrac12 \lVert \theta - \operatorname{sg}(\phi_K) \rVert^2$ with the adapted
    parameters fully stopped. With an outer SGD step of rate $\epsilon$ this is the
    Reptile update $\theta \leftarrow \theta + \epsilon(\phi_K - \theta)$. The query
    set is only evaluated (at $\phi_K$) for monitoring.

    **Fields:** as [`metapinn.AbstractMetaLearner`][] (e.g.
    `Reptile(inner_steps=5, inner_optimizer=0.01)`).

    **Raises:** as [`metapinn.AbstractMetaLearner`][], on construction.
    """

    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        adapted, support_losses = self.adapt(
            params, static, loss_fn, task, support, stop_inner_gradients=True
        )
        adapted = jax.lax.stop_gradient(adapted)
        query_loss = jax.lax.stop_gradient(loss_fn(eqx.combine(adapted, static), task, query))
        step = jax.tree_util.tree_map(lambda p, a: p - a, params, adapted)
        objective = 0.5 * tree_sq_norm(step)
        return objective, MetaAux(query_loss, support_losses)


class MultiTask(AbstractMetaLearner):
    r"""Multi-task pre-training, the baseline: $\min_\theta \mathbb{E}_\text{task}
    \mathcal{L}_\text{query}(\theta)$, i.e. the inner loop with $K = 0$.

    **Fields:** as [`metapinn.AbstractMetaLearner`][], with `inner_steps` 0 (the
    default; the other inner settings are checked but unused), then `own_gradient`
    (static; default `False`), documented below.

    **Raises:** `ValueError` if `inner_steps` is not 0; otherwise as
    [`metapinn.AbstractMetaLearner`][], on construction.
    """

    inner_steps: int = eqx.field(static=True, default=0)
    own_gradient: bool = eqx.field(static=True, default=False)
    """Differentiate each task's loss by the loss's own gradient (for a
    [`metapinn.PINNLoss`][], the hand-written adjoint) instead of plain reverse mode.
    Plain reverse mode (the default) lets JAX sum the tasks' cotangents and run the
    network's backward pass once when every task sees the same network on the same
    points; where tasks do not share the network's jet (a parameter-conditioned PINN,
    or per-task points) there is one backward pass per task anyway, and the loss's
    own gradient is faster (W3 conditioned PINN, 6 tasks: about 1.8x)."""

    def __check_init__(self):
        if self.inner_steps != 0:
            raise ValueError(
                f"MultiTask pre-training has no inner loop; inner_steps must be 0, "
                f"got {self.inner_steps!r}"
            )

    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        del support
        # By default plain reverse mode, not the loss's own gradient: every task shares
        # the parameters, so JAX sums the tasks' cotangents before the network's
        # backward pass and runs that pass once for the whole batch (see own_gradient).
        if self.own_gradient:
            query_loss = loss_with_gradient(loss_fn, params, static, task, query)
        else:
            query_loss = loss_fn(eqx.combine(params, static), task, query)
        return query_loss, MetaAux(query_loss, query_loss[None][:0])


def _registry() -> dict[str, type[AbstractMetaLearner]]:
    from ._imaml import IMAML
    from ._learned_rates import MAMLPlusPlus, MetaSGD

    return {
        "maml": MAML,
        "fomaml": FOMAML,
        "reptile": Reptile,
        "multitask": MultiTask,
        "metasgd": MetaSGD,
        "mamlpp": MAMLPlusPlus,
        "imaml": IMAML,
    }


METHODS: dict[str, type[AbstractMetaLearner]] = _registry()
"""Every learner by name, as [`metapinn.make_learner`][] and the command line know them."""


def make_learner(method: str, **settings) -> AbstractMetaLearner:
    """Build a learner by name: one of `maml`, `fomaml`, `reptile`, `multitask`,
    `metasgd`, `mamlpp`, `imaml`.

    **Arguments:**

    - `method`: the learner's name, a key of `METHODS`.
    - `**settings`: passed to its constructor, e.g. `inner_steps=5,
      inner_optimizer=0.01`.

    **Returns:** the learner, e.g. `make_learner("maml", inner_steps=3)` is
    `MAML(inner_steps=3)`.

    **Raises:** `ValueError` naming an unknown method; what the constructor raises
    (`TypeError` for a setting it does not take; `ValueError` or `TypeError` for a bad
    value).
    """
    try:
        cls = METHODS[method]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown meta-learning method {method!r}; choose one of {sorted(METHODS)}"
        ) from None
    return cls(**settings)
