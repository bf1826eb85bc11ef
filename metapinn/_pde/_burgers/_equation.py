"""The 1-D viscous Burgers family."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ..._custom_types import ScalarLike, Values
from ..._pinn import Derivatives
from .._base import AbstractPDE, parameter_array, parameter_check


class BurgersTask(eqx.Module):
    """One member of the Burgers family: the viscosity `nu` (a scalar, or a batch `(B,)`)."""

    nu: Float[Array, "..."]

    def __init__(self, nu: ScalarLike | Float[Array, " B"]):
        """**Arguments:** `nu`, the viscosity (> 0, finite); an array of shape `(B,)`
        describes a batch of tasks, to be `vmap`ped over.

        **Raises:** `ValueError` for a concrete `nu` that is not finite and positive.
        """
        nu = parameter_array(nu, "viscosity nu", "Burgers")
        self.nu = nu


_DOMAIN = (("x_min", -1.0), ("x_max", 1.0), ("t_min", 0.0), ("t_max", 1.0))
"""The one domain of the Burgers families, `[-1, 1] × [0, 1]`, field by field."""


def check_domain(pde: AbstractPDE) -> None:
    """Raise `ValueError` unless `pde`'s domain is `[-1, 1] × [0, 1]`, naming the first
    field with another value: the Burgers families' initial conditions, exact and
    reference solutions are those of that domain only."""
    for name, default in _DOMAIN:
        value = getattr(pde, name)
        if value != default:
            raise ValueError(
                f"{type(pde).__name__} is defined on x in [-1, 1], t in [0, 1] only (its "
                "initial condition, exact solution and reference solver are those of that "
                f"domain): {name} must be {default}, got {name}={value!r}"
            )


class Burgers(AbstractPDE):
    r"""Viscous Burgers' equation on $x \in [-1, 1]$, $t \in [0, 1]$:

    $$u_t + u u_x = \nu u_{xx}, \qquad u(x, 0) = -\sin(\pi x), \qquad u(\pm 1, t) = 0.$$

    The standard PINN benchmark of Raissi, Perdikaris & Karniadakis (2019), *J. Comput.
    Phys.* 378:686–707, here as a family over the viscosity $\nu$ (a
    [`metapinn.BurgersTask`][]).

    **Fields:** the domain, static floats, fixed: `x_min = -1`, `x_max = 1`, `t_min = 0`,
    `t_max = 1`. The initial condition, the exact solution and the reference solver are
    those of this domain only, so no other is accepted.

    **Raises:** `ValueError` on construction if any of the four fields is given another
    value, naming the field and the value.
    """

    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        check_domain(self)

    def check_task(self, task: BurgersTask, out: PyTree) -> PyTree:
        return parameter_check(task.nu, out, "viscosity nu", "Burgers")

    def residual(self, derivs: Derivatives, task: BurgersTask) -> Values:
        u_x, u_t, u_xx = derivs.require("u_x", "u_t", "u_xx")
        return u_t + derivs.u * u_x - task.nu * u_xx

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        return -jnp.sin(jnp.pi * x)

    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        del x
        return jnp.zeros_like(t)

    def exact_solution(self, task: BurgersTask, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """Cole–Hopf ([`metapinn.cole_hopf_solution`][]) on the grid `x × t`,
        `u[i, j] = u(x[j], t[i])`.

        **Raises:** what [`metapinn.cole_hopf_solution`][] raises (e.g. `ValueError` for
        a non-scalar `nu`).
        """
        from ._exact import cole_hopf_on_grid

        return cole_hopf_on_grid(x, t, task.nu)

    def reference_solution(self, task: BurgersTask, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """The spectral reference ([`metapinn.burgers_reference_solution`][]) on `x × t`: float64,
        of shape `(len(t), len(x))`, or `(B, len(t), len(x))` for a batch of `B` tasks.

        **Raises:** what [`metapinn.burgers_reference_solution`][] raises: `RuntimeError` if
        float64 is not enabled or a solve fails; `ValueError` for invalid input.
        """
        from ._reference import burgers_reference_solution

        return burgers_reference_solution(task.nu, x, t)
