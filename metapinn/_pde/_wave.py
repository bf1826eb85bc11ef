"""The wave family (docs/design.md F3): `u_tt = c² u_xx`, from rest, with several modes."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from .._custom_types import Errors, Points, ScalarLike, Values
from .._pinn import Derivatives
from . import _spectral
from ._base import AbstractPDE, parameter_array, parameter_check, sum_terms


WAVE_MODES = ((1, 1.0), (2, 0.5), (3, -0.25))
r"""The initial displacement $u_0(x) = \sum a_n \sin(n\pi x)$ as `(n, a_n)` pairs."""


class WaveTask(eqx.Module):
    """One member of the wave family: the wave speed `c` (a scalar, or a batch `(B,)`)."""

    c: Float[Array, "..."]

    def __init__(self, c: ScalarLike | Float[Array, " B"]):
        """**Arguments:** `c`, the wave speed (> 0, finite); an array of shape `(B,)`
        describes a batch of tasks, to be `vmap`ped over.

        **Raises:** `ValueError` for a concrete `c` that is not finite and > 0.
        """
        self.c = parameter_array(c, "speed c", "wave")


class Wave(AbstractPDE):
    r"""The wave equation on $x \in [-1, 1]$, $t \in [0, 1]$ (docs/design.md F3):

    $$u_{tt} = c^2 u_{xx},\qquad u(x, 0) = \sum_n a_n \sin(n\pi x),\qquad
    u_t(x, 0) = 0,\qquad u(\pm 1, t) = 0,$$

    with the modes of `WAVE_MODES`; a family over the speed $c$ (a
    [`metapinn.WaveTask`][], training range [0.5, 2]). The loss needs $u_{tt}$ in the
    interior and $u_t$ on the initial line (its initial error is both conditions'
    errors). Exact (modal) solution: $u = \sum_n a_n \cos(c n\pi t) \sin(n\pi x)$, the
    d'Alembert solution $\tfrac12(u_0(x - ct) + u_0(x + ct))$ of the odd extension.

    **Fields:** the domain, static floats: `x_min` (default -1), `x_max` (default 1),
    `t_min` (default 0), `t_max` (default 1).
    """

    jet_needs = (("u_xx", "u_tt"), ("u_t",), ())
    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def check_task(self, task: WaveTask, out: PyTree) -> PyTree:
        return parameter_check(task.c, out, "speed c", "wave")

    def residual(self, derivs: Derivatives, task: WaveTask) -> Values:
        u_tt, u_xx = derivs.require("u_tt", "u_xx")
        return u_tt - task.c**2 * u_xx

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        return sum_terms(a * jnp.sin(n * jnp.pi * x) for n, a in WAVE_MODES)

    def initial_error(self, derivs: Derivatives, points: Points, task: WaveTask) -> Errors:
        """The displacement's error and the velocity `u_t` (zero at rest), concatenated."""
        del task
        (u_t,) = derivs.require("u_t")
        return jnp.concatenate([derivs.u - self.initial_condition(points[:, 0]), u_t])

    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        del x
        return jnp.zeros_like(t)

    def exact_solution(self, task: WaveTask, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """The modal solution on the grid `x × t`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** via `eqx.error_if`, if `task.c` is not finite and > 0.
        """
        x, t = jnp.asarray(x), jnp.asarray(t) - self.t_min  # the time since t_min
        c = self.check_task(task, task.c)
        return sum_terms(
            a * jnp.cos(c * n * jnp.pi * t)[:, None] * jnp.sin(n * jnp.pi * x)[None]
            for n, a in WAVE_MODES
        )

    def reference_solution(
        self, task: WaveTask, x: Array, t: Array, num_modes: int = 16
    ) -> Float[Array, "nt nx"]:
        r"""Sine-Galerkin method of lines: the coefficients $b_n$ of
        $\sin(n\pi(x - x_\min)/L)$ from the DST of $u_0$'s samples, and their velocities
        (zero), integrated as $b_n' = v_n$, $v_n' = -c^2 (n\pi/L)^2 b_n$ with diffrax
        (Tsit5), then summed at `x`.

        **Returns:** float64 `u` of shape `(len(t), len(x))`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** `RuntimeError` if float64 is not enabled; `ValueError` unless `x`
        and `t` are 1-D (`t` non-empty), or for concrete `x`, `t` outside the domain or
        a `t` that is not strictly increasing; via `eqx.error_if`, for a `c` that is not
        finite and > 0; diffrax raises if the solve fails.
        """
        _spectral.require_x64("wave")
        x, t = _spectral.check_grid(x, t, self)
        c = self.check_task(task, jnp.asarray(task.c, jnp.float64))
        b0, rates = _spectral.sine_modes(self, num_modes)

        def field(time, y, c):
            del time
            b, v = y
            return v, -(c**2) * rates * b

        b, _ = _spectral.integrate(field, (b0, jnp.zeros_like(b0)), t, c, t0=self.t_min)
        return _spectral.sine_series(b, x, self.x_min, self.x_max)
