r"""Adapters: the objects that run $K$ adaptation steps of a loss from an initialisation.

An adapter is a strategy with explicit state, as diffrax's solvers are: `init` makes
the state, `step` takes one step. [`metapinn.adapt`][], [`metapinn.adapt_recording`][]
and the few-shot evaluation drive any adapter with one `jax.lax.scan`, so a run of $K$
steps compiles once whatever the adapter; the meta-learners take one as their inner
loop (`inner_optimizer`).

- [`metapinn.Optax`][]: any optax transformation (SGD, Adam, a schedule): first order.
- [`metapinn.LBFGS`][]: `optax.lbfgs` with its zoom line search.
- [`metapinn.GaussNewton`][]: Levenberg–Marquardt on the loss's residual vector.
"""

import abc
import math
from typing import Any, cast

import equinox as eqx
import jax
import optax
from jaxtyping import PyTree

from .._custom_types import Params, Scalar, Static
from ._gradients import LossFn, as_optimizer, loss_and_grads, loss_with_gradient, optimizer_update


class AbstractAdapter(eqx.Module):
    """Takes adaptation steps on one task's loss.

    A final adapter defines `init` and `step`; everything it holds is static
    configuration, and everything that changes from step to step is in the state (a
    pytree of arrays), so the driver's scan carries `(params, state)`.
    """

    @property
    def reverse_differentiable(self) -> bool:
        """Whether reverse mode can go through a step (second-order MAML needs it); an
        adapter whose step holds a `lax.while_loop` says `False`."""
        return True

    @abc.abstractmethod
    def init(
        self, params: Params, static: Static, loss_fn: LossFn, task: PyTree, batch: PyTree
    ) -> PyTree:
        """**Returns:** the state before the first step from `params`."""

    @abc.abstractmethod
    def step(
        self,
        params: Params,
        state: PyTree,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        batch: PyTree,
    ) -> tuple[Params, PyTree, Scalar]:
        """One adaptation step of `loss_fn(combine(params, static), task, batch)`.

        **Returns:** `(params, state, loss)`: the parameters and state after the step,
        and the loss at the parameters *before* it.
        """


class Optax(AbstractAdapter):
    r"""A first-order adapter: any optax transformation on the loss's gradient,
    $\phi_{k+1} = \phi_k + u_k$ with $(u_k, s_{k+1}) = $ `optimizer.update`$(\nabla
    \mathcal{L}(\phi_k), s_k, \phi_k)$.

    The gradient is the loss's own `value_and_grad` (for a [`metapinn.PINNLoss`][], the
    hand-written adjoint of the network's jet). A schedule's step count starts from zero
    at every adaptation (a fresh state).

    **Fields:** `optimizer`, an `optax.GradientTransformation`, or a float: SGD at that
    rate (static).
    """

    optimizer: optax.GradientTransformation = eqx.field(static=True, converter=as_optimizer)

    def init(self, params, static, loss_fn, task, batch):
        del static, loss_fn, task, batch
        return self.optimizer.init(params)

    def step(self, params, state, static, loss_fn, task, batch):
        loss, grads = loss_and_grads(loss_fn, params, static, task, batch)
        updates, state = optimizer_update(self.optimizer, grads, state, params)
        return optax.apply_updates(params, updates), state, cast(Scalar, loss)


def _check_positive(name: str, value: Any, *, allow_zero: bool = False) -> None:
    bound = ">= 0" if allow_zero else "> 0"
    ok = (
        not isinstance(value, bool)
        and isinstance(value, (int, float))
        and math.isfinite(value)
        and (value >= 0 if allow_zero else value > 0)
    )
    if not ok:
        raise ValueError(f"{name} must be a finite number {bound}, got {value!r}")


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


class LBFGS(AbstractAdapter):
    r"""L-BFGS (Liu & Nocedal 1989) with a zoom line search enforcing the strong Wolfe
    conditions: `optax.lbfgs` as it is, one of its iterations a step.

    The direction is the two-loop recursion over the last `memory_size` pairs
    $(s_k, y_k) = (\phi_{k+1} - \phi_k, \nabla\mathcal{L}_{k+1} - \nabla\mathcal{L}_k)$,
    scaled initially by $s^\top y / y^\top y$; the step length is searched along it
    (at most `linesearch_steps` evaluations of the loss and its gradient). The value
    and gradient at the accepted point are kept in the state
    (`optax.value_and_grad_from_state`), so a step costs one gradient plus the line
    search's extra ones. Every gradient is the loss's own (the hand-written adjoint for
    a [`metapinn.PINNLoss`][]).

    **Fields:** (all static)

    - `memory_size`: pairs kept, $\ge 1$ (default 10).
    - `linesearch_steps`: most line-search evaluations per step, $\ge 1$ (default 20).
    - `learning_rate`: a fixed scale of the direction instead of the line search
      (default `None`: the line search).

    **Raises:** `ValueError` on construction for `memory_size` or `linesearch_steps`
    not an integer $\ge 1$, or a `learning_rate` that is not a positive number.
    """

    memory_size: int = eqx.field(static=True, default=10)
    linesearch_steps: int = eqx.field(static=True, default=20)
    learning_rate: float | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_int("memory_size", self.memory_size, 1)
        _check_int("linesearch_steps", self.linesearch_steps, 1)
        rate = self.learning_rate
        if rate is not None and (
            isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0
        ):
            raise ValueError(f"learning_rate must be None or a number > 0, got {rate!r}")

    @property
    def reverse_differentiable(self) -> bool:
        """The zoom line search is a `lax.while_loop`: only a fixed `learning_rate`."""
        return self.learning_rate is not None

    @property
    def optimizer(self) -> optax.GradientTransformationExtraArgs:
        """The optax transformation this adapter runs."""
        if self.learning_rate is not None:
            return optax.lbfgs(self.learning_rate, self.memory_size, linesearch=None)
        search = optax.scale_by_zoom_linesearch(
            max_linesearch_steps=self.linesearch_steps, initial_guess_strategy="one"
        )
        return optax.lbfgs(None, self.memory_size, linesearch=search)

    def init(self, params, static, loss_fn, task, batch):
        del static, loss_fn, task, batch
        return self.optimizer.init(params)

    def step(self, params, state, static, loss_fn, task, batch):
        def value_fn(p):
            return loss_with_gradient(loss_fn, p, static, task, batch)

        optimizer = self.optimizer
        with jax.numpy_dtype_promotion("standard"):
            loss, grads = optax.value_and_grad_from_state(value_fn)(params, state=state)
            updates, state = optimizer.update(
                grads, state, params, value=loss, grad=grads, value_fn=value_fn
            )
        return optax.apply_updates(params, updates), state, cast(Scalar, loss)


def as_adapter(
    adapter: "AbstractAdapter | optax.GradientTransformation | float",
) -> AbstractAdapter:
    """An adapter as given; an optax transformation or a float SGD rate as
    [`metapinn.Optax`][].

    **Raises:** `TypeError` for anything else, naming it.
    """
    if isinstance(adapter, AbstractAdapter):
        return adapter
    try:
        return Optax(adapter)  # pyright: ignore[reportArgumentType]
    except TypeError:
        raise TypeError(
            "an adapter must be a metapinn adapter (Optax, LBFGS, GaussNewton), an "
            f"optax.GradientTransformation or a float SGD rate; got {adapter!r}"
        ) from None
