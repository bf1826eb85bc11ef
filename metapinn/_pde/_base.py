"""The abstract PDE family: domain, residual, initial and boundary data."""

import abc
from typing import ClassVar

import equinox as eqx
from jaxtyping import Array, Float, PyTree

from .._custom_types import Points, Values
from .._pinn import BURGERS_NEEDS, Derivatives, Needs


class AbstractPDE(eqx.Module):
    """A family of time-dependent PDEs on `[x_min, x_max] × [t_min, t_max]`.

    A member of the family is picked by a *task*: a pytree of PDE parameters (for
    Burgers, a [`metapinn.BurgersTask`][] holding the viscosity). Residuals are
    written pointwise in terms of the network's [`metapinn.Derivatives`][], so the
    task is always an argument and never baked into the equation.
    """

    jet_needs: ClassVar[tuple[Needs, Needs, Needs]] = (BURGERS_NEEDS, (), ())
    """The derivatives of the network the loss needs at the interior, initial and
    boundary points (see [`metapinn.AbstractPINN.jet`][]): by default `u_x, u_t, u_xx`
    in the interior and values on the initial line and the boundary."""

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

    def initial_error(self, derivs: Derivatives, points: Points, task: PyTree) -> Values:
        """The initial-condition error at the initial points (zero for a solution), whose
        mean square is the loss's initial term: by default `u - initial_condition(x)`. A
        family with more initial data (e.g. a velocity, in `jet_needs[1]`) returns every
        error, concatenated."""
        del task
        return derivs.u - self.initial_condition(points[:, 0])

    def boundary_error(self, derivs: Derivatives, points: Points, task: PyTree) -> Values:
        """The boundary-condition error at the boundary points (zero for a solution): by
        default the Dirichlet error `u - boundary_condition(t, x)`."""
        del task
        return derivs.u - self.boundary_condition(points[:, 1], points[:, 0])

    @abc.abstractmethod
    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        """**Returns:** `u(x, t_min)`."""

    @abc.abstractmethod
    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        """**Returns:** the Dirichlet value `u(x, t)` at boundary points."""
