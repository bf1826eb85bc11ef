"""The heat family (docs/design.md F2): `u_t = κ u_xx` with an initial condition of several
sine modes."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._custom_types import ScalarLike, Values
from .._pinn import Derivatives
from . import _spectral
from ._base import AbstractPDE, parameter_array, parameter_check, sum_terms


HEAT_MODES = ((1, 1.0), (2, -0.5), (4, 0.25))
r"""The initial condition $u_0(x) = \sum (n, a_n)\!: a_n \sin(n\pi x)$, as
`(n, a_n)` pairs: three modes, so that the decay rates $\kappa (n\pi)^2$ differ by up to
16 within one task."""


class HeatTask(eqx.Module):
    """One member of the heat family: the diffusivity `kappa` (a scalar, or a batch
    `(B,)`)."""

    kappa: Float[Array, "..."]

    def __init__(self, kappa: ScalarLike | Float[Array, " B"]):
        """**Arguments:** `kappa`, the diffusivity (> 0, finite); an array of shape `(B,)`
        describes a batch of tasks, to be `vmap`ped over.

        **Raises:** `ValueError` for a concrete `kappa` that is not finite and > 0.
        """
        self.kappa = parameter_array(kappa, "diffusivity kappa", "heat")


class Heat(AbstractPDE):
    r"""The heat equation on $x \in [-1, 1]$, $t \in [0, 1]$ (docs/design.md F2):

    $$u_t = \kappa u_{xx},\qquad u(x, 0) = \sum_n a_n \sin(n\pi x),\qquad u(\pm 1, t) = 0,$$

    with the modes of `HEAT_MODES`; a family over the diffusivity $\kappa$ (a
    [`metapinn.HeatTask`][], training range [0.01, 0.5]). Exact solution:
    $u = \sum_n a_n e^{-\kappa (n\pi)^2 t} \sin(n\pi x)$.

    **Fields:** the domain, static floats: `x_min` (default -1), `x_max` (default 1),
    `t_min` (default 0), `t_max` (default 1).
    """

    jet_needs = (("u_t", "u_xx"), (), ())
    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def check_task(self, task: HeatTask, out: PyTree) -> PyTree:
        return parameter_check(task.kappa, out, "diffusivity kappa", "heat")

    def residual(self, derivs: Derivatives, task: HeatTask) -> Values:
        u_t, u_xx = derivs.require("u_t", "u_xx")
        return u_t - task.kappa * u_xx

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        return sum_terms(a * jnp.sin(n * jnp.pi * x) for n, a in HEAT_MODES)

    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        del x
        return jnp.zeros_like(t)

    def exact_solution(self, task: HeatTask, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """The modal solution on the grid `x × t`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** via `eqx.error_if`, if `task.kappa` is not finite and > 0.
        """
        x, t = jnp.asarray(x), jnp.asarray(t) - self.t_min  # the time since t_min
        kappa = self.check_task(task, task.kappa)
        return sum_terms(
            a * jnp.exp(-kappa * (n * jnp.pi) ** 2 * t)[:, None] * jnp.sin(n * jnp.pi * x)[None]
            for n, a in HEAT_MODES
        )

    def reference_solution(
        self, task: HeatTask, x: Array, t: Array, num_modes: int = 16
    ) -> Float[Array, "nt nx"]:
        r"""Sine-Galerkin method of lines: the coefficients $b_n$ of
        $\sin(n\pi(x - x_\min)/L)$, $n \le$ `num_modes`, from the DST of $u_0$'s samples,
        integrated as $b_n' = -\kappa (n\pi/L)^2 b_n$ with diffrax (Tsit5), then summed
        at `x`.

        **Returns:** float64 `u` of shape `(len(t), len(x))`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** `RuntimeError` if float64 is not enabled; `ValueError` unless `x`
        and `t` are 1-D (`t` non-empty), or for concrete `x`, `t` outside the domain or
        a `t` that is not strictly increasing; via `eqx.error_if`, for a `kappa` that is
        not finite and > 0; diffrax raises if the solve fails.
        """
        _spectral.require_x64("heat")
        x, t = _spectral.check_grid(x, t, self)
        kappa = self.check_task(task, jnp.asarray(task.kappa, jnp.float64))
        b0, rates = _spectral.sine_modes(self, num_modes)

        def field(time, b, kappa):
            del time
            return -kappa * rates * b

        b = _spectral.integrate(field, b0, t, kappa, t0=self.t_min)
        return _spectral.sine_series(b, x, self.x_min, self.x_max)
