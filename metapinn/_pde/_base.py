"""The abstract PDE family: domain, residual, initial and boundary data."""

import abc

import equinox as eqx
from jaxtyping import Array, Float, PyTree

from .._custom_types import Values
from .._pinn import Derivatives


class AbstractPDE(eqx.Module):
    """A family of time-dependent PDEs on `[x_min, x_max] × [t_min, t_max]`.

    A member of the family is picked by a *task*: a pytree of PDE parameters (for
    Burgers, a [`metapinn.BurgersTask`][] holding the viscosity). Residuals are
    written pointwise in terms of the network's [`metapinn.Derivatives`][], so the
    task is always an argument and never baked into the equation.
    """

    x_min: eqx.AbstractVar[float]
    x_max: eqx.AbstractVar[float]
    t_min: eqx.AbstractVar[float]
    t_max: eqx.AbstractVar[float]

    def check_task(self, task: PyTree, out: PyTree) -> PyTree:
        """Return `out` unchanged, failing under JIT (`eqx.error_if`) if `task` has
        invalid parameter values; the check runs before `out` is used.

        Called on a *result* where tasks meet the loss ([`metapinn.loss_terms`][], the
        losses of [`metapinn.adapt`][], the objective of [`metapinn.meta_step`][]),
        never inside the inner loop and never on the task itself: routing a sharded
        task batch through the check would gather it onto every device. The default
        accepts every task.
        """
        del task
        return out

    @abc.abstractmethod
    def residual(self, derivs: Derivatives, task: PyTree) -> Values:
        """**Returns:** the PDE residual at each point (zero for an exact solution)."""

    @abc.abstractmethod
    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        """**Returns:** `u(x, t_min)`."""

    @abc.abstractmethod
    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        """**Returns:** the Dirichlet value `u(x, t)` at boundary points."""
