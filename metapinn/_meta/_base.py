"""The shared inner loop (one `lax.scan`) and the abstract meta-learner."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PyTree

from .._custom_types import FilterSpec, Params, Scalar, Static


LossFn = Callable[[Any, PyTree, PyTree], Scalar]
"""`loss_fn(model, task, batch) -> scalar`, e.g. a [`metapinn.PINNLoss`][]."""


def as_optimizer(
    optimizer: optax.GradientTransformation | float,
) -> optax.GradientTransformation:
    """A float `lr` means plain SGD at that rate; a transformation is used as given."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    if isinstance(optimizer, bool) or not isinstance(optimizer, (int, float)):
        raise TypeError(
            "inner_optimizer must be an optax.GradientTransformation or a float "
            f"learning rate for SGD; got {optimizer!r}"
        )
    return optax.sgd(float(optimizer))


def optimizer_update(
    optimizer: optax.GradientTransformation, grads: PyTree, state: PyTree, params: PyTree
) -> tuple[PyTree, PyTree]:
    """`optimizer.update`, traced under standard dtype promotion.

    Some optax transformations mix Python floats with integer step counts (Adam's
    bias correction), which `jax_numpy_dtype_promotion="strict"` rejects; users who
    run strict promotion for their own code should still be able to use them.
    """
    with jax.numpy_dtype_promotion("standard"):
        return optimizer.update(grads, state, params)


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"the number of inner steps must be an integer >= 0, got {steps!r}")


def adapt(
    params: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    batch: PyTree,
    *,
    steps: int,
    optimizer: optax.GradientTransformation | float,
    adapt_spec: FilterSpec | None = None,
    stop_inner_gradients: bool = False,
    return_trajectory: bool = False,
    unroll: int | bool = 1,
) -> tuple[Params, Float[Array, " steps"]] | tuple[Params, Float[Array, " steps"], Params]:
    r"""Adapt `params` to one task: `steps` optimiser steps on `loss_fn`, as ONE `lax.scan`.

    With SGD at rate $\alpha$ this is $\phi_{k+1} = \phi_k - \alpha \nabla
    \mathcal{L}(\phi_k)$, $\phi_0 = \theta$; any optax transformation (Adam included)
    may replace SGD. The loop is differentiable, so second-order MAML is `jax.grad`
    through it.

    **Arguments:**

    - `params`, `static`: the two halves of `eqx.partition(model, ...)`.
    - `loss_fn`: `loss_fn(model, task, batch) -> scalar`.
    - `task`, `batch`: one task (e.g. a [`metapinn.BurgersTask`][]) and its points.
    - `steps`: number of inner steps `K >= 0` (static).
    - `optimizer`: an `optax.GradientTransformation`, or a float: SGD at that rate.
      To differentiate through Adam, give it `eps_root > 0` (e.g. `1e-16`): `sqrt(v)`
      has an infinite derivative where a gradient entry is exactly zero.
    - `adapt_spec`: a pytree of bools with the structure of `params` marking the
      leaves that adapt (e.g. only the last layer, as in ANIL); `None` adapts all.
    - `stop_inner_gradients`: wrap each inner gradient in `stop_gradient`, so that
      $d\phi_K/d\theta = I$ (first-order MAML).
    - `return_trajectory`: also return the parameters after every step.
    - `unroll`: passed to `lax.scan` (static); `True` unrolls the whole loop, which
      compiles more slowly and lets XLA count every step's FLOPs.

    **Returns:** `(params_K, losses)` where `losses[k]` is the loss at $\phi_k$ before
    step `k`; with `return_trajectory`, also the stacked $\phi_1, \dots, \phi_K$.

    **Raises:** `ValueError` for `steps < 0`; `TypeError` for a bad `optimizer`.
    """
    _check_steps(steps)
    optimizer = as_optimizer(optimizer)
    if adapt_spec is None:
        adapting, frozen = params, jax.tree_util.tree_map(lambda _: None, params)
    else:
        adapting, frozen = eqx.partition(params, adapt_spec)

    def loss_of(p):
        return loss_fn(eqx.combine(p, frozen, static), task, batch)

    def body(carry, _):
        p, opt_state = carry
        loss, grads = jax.value_and_grad(loss_of)(p)
        if stop_inner_gradients:
            grads = jax.lax.stop_gradient(grads)
        updates, opt_state = optimizer_update(optimizer, grads, opt_state, p)
        if stop_inner_gradients:
            # Optimisers whose update reads the parameters (weight decay, lookahead)
            # would otherwise keep a path from θ through the update.
            updates = jax.lax.stop_gradient(updates)
        p = optax.apply_updates(p, updates)
        return (p, opt_state), ((loss, p) if return_trajectory else loss)

    init = (adapting, optimizer.init(adapting))
    (adapted, _), out = jax.lax.scan(body, init, length=steps, unroll=unroll)
    adapted = eqx.combine(adapted, frozen)
    if return_trajectory:
        losses, trajectory = out
        frozen_steps = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (steps,) + jnp.shape(x)), frozen
        )
        return adapted, losses, eqx.combine(trajectory, frozen_steps)
    return adapted, out


class MetaAux(eqx.Module):
    """What one task's meta-objective reports besides its value."""

    query_loss: Scalar
    """The query loss at the adapted parameters $\\phi_K$."""
    support_losses: Float[Array, " K"]
    """The support loss before each inner step."""


def tree_sq_norm(tree: PyTree) -> Scalar:
    return sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree))


class AbstractMetaLearner(eqx.Module):
    r"""A gradient-based meta-learner over the shared inner loop [`metapinn.adapt`][].

    Every learner defines a per-task meta-objective whose gradient with respect to
    the initialisation $\theta$ is its meta-gradient; the variants differ only in
    where `jax.lax.stop_gradient` sits in the same scanned loop.

    **Fields** (shared by every final learner):

    - `inner_steps`: $K \ge 0$ (static).
    - `inner_optimizer`: an optax transformation or a float SGD rate (static).
    - `adapt_spec`: which leaves adapt (a pytree of bools), `None` for all.
    - `inner_unroll`: `lax.scan` unrolling of the inner loop (static; default 1).
    """

    inner_steps: int = eqx.field(static=True, default=5)
    inner_optimizer: optax.GradientTransformation | float = eqx.field(static=True, default=0.01)
    adapt_spec: FilterSpec | None = None
    inner_unroll: int | bool = eqx.field(static=True, default=1)

    def __check_init__(self):
        _check_steps(self.inner_steps)
        as_optimizer(self.inner_optimizer)

    def adapt(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        batch: PyTree,
        *,
        stop_inner_gradients: bool = False,
    ) -> tuple[Params, Float[Array, " K"]]:
        """[`metapinn.adapt`][] with this learner's inner settings."""
        return adapt(
            params,
            static,
            loss_fn,
            task,
            batch,
            steps=self.inner_steps,
            optimizer=self.inner_optimizer,
            adapt_spec=self.adapt_spec,
            stop_inner_gradients=stop_inner_gradients,
            unroll=self.inner_unroll,
        )

    @abc.abstractmethod
    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        """The per-task meta-objective, whose gradient in `params` is the meta-gradient.

        **Returns:** `(objective, aux)`.
        """

    def meta_gradient(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Params, MetaAux]:
        """**Returns:** `(meta_gradient, aux)` for one task."""
        grad_fn = jax.grad(self.meta_loss, has_aux=True)
        return grad_fn(params, static, loss_fn, task, support, query)
