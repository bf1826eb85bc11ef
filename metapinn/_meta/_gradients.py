"""The gradients the inner loops take: a loss's own value and gradient, and the
custom derivative rules that make reverse mode through them cheap."""

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import PyTree

from .._custom_types import Params, Scalar, Static
from .._loss import AbstractLoss


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


def _is_none(x: Any) -> bool:
    return x is None


def _restrict(like: PyTree, grads: PyTree) -> PyTree:
    """The leaves of `grads` where `like` (a half of `eqx.partition`) has arrays."""
    return jtu.tree_map(lambda ref, g: None if ref is None else g, like, grads, is_leaf=_is_none)


def _value_and_grads(
    loss_fn: "LossFn", params: Params, frozen: Params, static: Static, task, batch
) -> tuple[Scalar, tuple[Params, Params]]:
    """The loss at `combine(params, frozen, static)` and its gradients with respect to
    `params` and `frozen`. An [`metapinn.AbstractLoss`][] supplies its own gradient
    (for [`metapinn.PINNLoss`][], the hand-written adjoint of the network's jet)."""
    if isinstance(loss_fn, AbstractLoss):
        loss, grads = loss_fn.value_and_grad(eqx.combine(params, frozen, static), task, batch)
        return loss, (_restrict(params, grads), _restrict(frozen, grads))

    def loss_of(halves):
        return loss_fn(eqx.combine(*halves, static), task, batch)

    return eqx.filter_value_and_grad(loss_of)((params, frozen))


def _zeros_where_none(cotangent: PyTree, like: PyTree) -> PyTree:
    """`cotangent` with symbolic zeros (`None`) made concrete zeros shaped like `like`."""
    return jtu.tree_map(
        lambda ref, c: None if ref is None else (jnp.zeros_like(ref) if c is None else c),
        like,
        cotangent,
        is_leaf=_is_none,
    )


@eqx.filter_custom_vjp
def _inner_value_and_grad(inputs, static):
    r"""`(L, ∇_params L)` whose reverse-mode derivative is a Hessian-vector product.

    `inputs = (params, frozen, loss_fn, task, batch)`. Reverse mode through a gradient
    $g = \nabla_\theta L$ needs $v \mapsto \nabla^2 L\, v$ ($\nabla^2 L$ is
    symmetric); the backward pass below gets it by forward mode over the gradient
    (Pearlmutter 1994), recomputed from the inputs, so a scanned inner loop keeps only
    its parameters per step rather than every intermediate of every gradient.
    """
    params, frozen, loss_fn, task, batch = inputs
    loss, (grads, _) = _value_and_grads(loss_fn, params, frozen, static, task, batch)
    return loss, grads


@_inner_value_and_grad.def_fwd
def _inner_value_and_grad_fwd(perturbed, inputs, static):
    del perturbed
    return _inner_value_and_grad.fn(inputs, static), None


@_inner_value_and_grad.def_bwd
def _inner_value_and_grad_bwd(residuals, cotangent, perturbed, inputs, static):
    del residuals
    params, frozen, loss_fn, task, batch = inputs
    loss_bar, grads_bar = cotangent

    def grads_of(p):
        return _value_and_grads(loss_fn, p, frozen, static, task, batch)[1]

    if all(leaf is None for leaf in jtu.tree_leaves(grads_bar, is_leaf=_is_none)):
        # Only the loss value is differentiated (e.g. a query loss): its gradient.
        grads = grads_of(params)
        hvps = jtu.tree_map(jnp.zeros_like, grads)
    else:
        tangent = _zeros_where_none(grads_bar, params)
        grads, hvps = jax.jvp(grads_of, (params,), (tangent,))
    if loss_bar is not None:
        hvps = jtu.tree_map(lambda h, g: h + loss_bar.astype(g.dtype) * g, hvps, grads)
    params_bar, frozen_bar = hvps
    rest = (loss_fn, task, batch)
    if any(jtu.tree_leaves(perturbed[2:])):
        # Rarely wanted (e.g. MAML's derivative in a task parameter): the mixed second
        # derivative, by reverse mode through the gradient.
        def loss_and_params_grad(rest_):
            loss, (g, _) = _value_and_grads(rest_[0], params, frozen, static, *rest_[1:])
            return loss, g

        (loss, _), pullback = eqx.filter_vjp(loss_and_params_grad, rest)
        loss_ct = jnp.zeros_like(loss) if loss_bar is None else loss_bar
        (rest_bar,) = pullback((loss_ct, _zeros_where_none(grads_bar, params)))
    else:
        rest_bar = jtu.tree_map(lambda _: None, rest)
    return (params_bar, frozen_bar, *rest_bar)


def loss_and_grads(
    loss_fn: "LossFn", params: Params, static: Static, task: PyTree, batch: PyTree
) -> tuple[Scalar, Params]:
    """The loss at `combine(params, static)` and its gradient in `params`: the loss's own
    `value_and_grad` for an [`metapinn.AbstractLoss`][], reverse-mode AD otherwise. It
    does not validate the task (callers check it once, outside their loops)."""
    frozen = jtu.tree_map(lambda _: None, params)
    loss, (grads, _) = _value_and_grads(loss_fn, params, frozen, static, task, batch)
    return loss, grads


def _loss_and_grads(inputs, static) -> tuple[Scalar, Params]:
    params, loss_fn, task, batch = inputs
    return loss_and_grads(loss_fn, params, static, task, batch)


@eqx.filter_custom_vjp
def _loss_with_gradient(inputs, static):
    # The value from the same (cached) program as the forward pass below: tracing
    # `loss_fn` itself as well would cost a second trace of the network's jet.
    return _loss_and_grads(inputs, static)[0]


@_loss_with_gradient.def_fwd
def _loss_with_gradient_fwd(perturbed, inputs, static):
    del perturbed
    return _loss_and_grads(inputs, static)  # the gradient is the residual: one pass


@_loss_with_gradient.def_bwd
def _loss_with_gradient_bwd(grads, loss_bar, perturbed, inputs, static):
    params, loss_fn, task, batch = inputs
    if loss_bar is None:
        return jtu.tree_map(lambda _: None, inputs)
    params_bar = jtu.tree_map(lambda g: loss_bar.astype(g.dtype) * g, grads)
    rest = (loss_fn, task, batch)
    if any(jtu.tree_leaves(perturbed[1:])):
        # Derivatives in the task or the points: reverse mode through the loss.
        _, pullback = eqx.filter_vjp(
            lambda rest_: rest_[0](eqx.combine(params, static), *rest_[1:]), rest
        )
        (rest_bar,) = pullback(loss_bar)
    else:
        rest_bar = jtu.tree_map(lambda _: None, rest)
    return (params_bar, *rest_bar)


def loss_with_gradient(
    loss_fn: "LossFn", params: Params, static: Static, task: PyTree, batch: PyTree
) -> Scalar:
    """`loss_fn(combine(params, static), task, batch)`, whose derivative in `params`
    is the loss's own gradient (for an [`metapinn.AbstractLoss`][], its
    `value_and_grad`), computed in the same pass as the value.

    Like the inner loop's gradients, it does not validate the task; the meta-step
    does that once, with the loss's `check_task`."""
    return _loss_with_gradient((params, loss_fn, task, batch), static)
