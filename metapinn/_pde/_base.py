"""The abstract PDE family: domain, residual, initial and boundary data."""

import abc
import functools
import operator
from collections.abc import Iterable
from typing import Any, ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._custom_types import Errors, Points, Values
from .._pinn import BURGERS_NEEDS, Derivatives, Needs, check_needs


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

    periodic: ClassVar[bool] = False
    """Whether the domain is periodic in x: the boundary points then come in pairs
    `(x_min, t)`, `(x_max, t)` at the same times (see [`metapinn.sample_collocation`][])
    and the default boundary error is the jump between them."""

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

    def initial_error(self, derivs: Derivatives, points: Points, task: PyTree) -> Errors:
        """The initial-condition error at the initial points (zero for a solution), whose
        mean square is the loss's initial term: by default `u - initial_condition(x)`. A
        family with more initial data (e.g. a velocity, in `jet_needs[1]`) returns every
        error, concatenated."""
        del task
        return derivs.u - self.initial_condition(points[:, 0])

    def boundary_error(self, derivs: Derivatives, points: Points, task: PyTree) -> Errors:
        """The boundary-condition error at the boundary points (zero for a solution): by
        default the Dirichlet error `u - boundary_condition(t, x)`, or for a periodic
        family the jump `u(x_min, t) - u(x_max, t)` over the pairs of points (and that
        of every derivative in `jet_needs[2]`, e.g. `u_x`)."""
        del task
        if not self.periodic:
            return derivs.u - self.boundary_condition(points[:, 1], points[:, 0])
        if points.shape[0] % 2:
            raise ValueError(
                f"a periodic family's boundary points come in pairs (x_min, t), (x_max, t), "
                f"first halves then second; got an odd number, {points.shape[0]}"
            )
        half = points.shape[0] // 2
        fields = [derivs.u] + [getattr(derivs, n) for n in check_needs(self.jet_needs[2])]
        return jnp.concatenate([f[:half] - f[half:] for f in fields])

    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        """**Returns:** the Dirichlet value `u(x, t)` at boundary points (a family with
        a Dirichlet boundary defines it; a periodic one need not)."""
        raise NotImplementedError(f"{type(self).__name__} has no Dirichlet boundary values")

    def standard_axes(self) -> tuple[np.ndarray, np.ndarray]:
        """The evaluation grid of the accuracy protocol (docs/design.md §5), the one
        definition of it: 256 points from `x_min` to `x_max` and 101 times from `t_min`
        to `t_max`, ends included, as float64 NumPy arrays (the same bits with or
        without `jax_enable_x64`, and so the same reference-cache keys)."""
        return np.linspace(self.x_min, self.x_max, 256), np.linspace(self.t_min, self.t_max, 101)

    def standard_grid(self) -> tuple[Float[Array, " 256"], Float[Array, " 101"]]:
        """The evaluation grid ([`standard_axes`][metapinn.AbstractPDE.standard_axes])
        in the default float dtype."""
        dtype = jnp.zeros(()).dtype
        x, t = self.standard_axes()
        return jnp.asarray(x, dtype=dtype), jnp.asarray(t, dtype=dtype)

    def exact_solution(self, task: PyTree, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """The exact solution of one task on the grid `x × t`, `u[i, j] = u(x[j], t[i])`,
        where the family has one. **Raises:** `NotImplementedError` otherwise."""
        raise NotImplementedError(f"{type(self).__name__} has no exact solution")

    def reference_solution(self, task: PyTree, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """The numerical reference solution of one task on the grid `x × t` (float64),
        `u[i, j] = u(x[j], t[i])`: the truth results are judged against. **Raises:**
        `NotImplementedError` for a family without one."""
        raise NotImplementedError(f"{type(self).__name__} has no reference solver")

    @abc.abstractmethod
    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        """**Returns:** `u(x, t_min)`."""


def sum_terms(terms: Iterable[Array]) -> Array:
    """The sum of a non-empty series of arrays, in order (`sum` without its `0 +`)."""
    return functools.reduce(operator.add, terms)


def parameter_array(value: Any, name: str, family: str, *, positive: bool = True) -> Array:
    """A task parameter as a floating array (a scalar, or a batch `(B,)`), checked when
    concrete: finite, and `> 0` if `positive`.

    **Raises:** `ValueError` naming the family, the parameter and the bad values; a
    traced value is checked under JIT by the family's `check_task` instead."""
    value = jnp.asarray(value)
    if not jnp.issubdtype(value.dtype, jnp.floating):
        value = value.astype(jnp.zeros(()).dtype)
    try:
        concrete = np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        return value
    good = np.isfinite(concrete) & ((concrete > 0) if positive else True)
    if not np.all(good):
        what = "finite and > 0" if positive else "finite"
        raise ValueError(f"{family} {name} must be {what}, got {concrete.tolist()}")
    return value


def parameter_check(value: Array, out: PyTree, name: str, family: str, *, positive=True):
    """`out`, failing under JIT unless `value` is finite (and `> 0` if `positive`)."""
    bad = ~jnp.isfinite(value)
    if positive:
        bad = bad | (value <= 0)
    what = "finite and > 0" if positive else "finite"
    return eqx.error_if(out, bad, f"{family} {name} must be {what}")
