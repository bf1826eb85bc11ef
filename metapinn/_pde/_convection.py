"""The convection family (docs/design.md F4): `u_t + β u_x = 0` on a periodic domain, the
PINN failure mode of Krishnapriyan et al. (2021) at large β."""

import math

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._custom_types import ScalarLike, Values
from .._pinn import Derivatives
from . import _spectral
from ._base import AbstractPDE, parameter_array, parameter_check


_SAMPLES = 64
"""The equispaced samples of u0 the reference's initial coefficients come from."""


class ConvectionTask(eqx.Module):
    """One member of the convection family: the speed `beta` (a scalar, or a batch
    `(B,)`)."""

    beta: Float[Array, "..."]

    def __init__(self, beta: ScalarLike | Float[Array, " B"]):
        """**Arguments:** `beta`, the speed (finite; any sign); an array of shape `(B,)`
        describes a batch of tasks, to be `vmap`ped over.

        **Raises:** `ValueError` for a concrete `beta` that is not finite.
        """
        self.beta = parameter_array(beta, "speed beta", "convection", positive=False)


class Convection(AbstractPDE):
    r"""Linear convection on the periodic $x \in [0, 2\pi)$, $t \in [0, 1]$ (docs/design.md F4):

    $$u_t + \beta u_x = 0,\qquad u(x, 0) = \sin x,\qquad u(0, t) = u(2\pi, t),$$

    a family over the speed $\beta$ (a [`metapinn.ConvectionTask`][], training range
    [1, 40]; Krishnapriyan et al. 2021, *NeurIPS*, show plain PINNs failing beyond
    $\beta \approx 10$). The boundary loss is the periodic jump. Exact solution:
    $u = \sin(x - \beta t)$.

    **Fields:** the domain, static floats: `x_min` (default 0), `x_max` (default
    $2\pi$), `t_min` (default 0), `t_max` (default 1).
    """

    periodic = True
    jet_needs = (("u_x", "u_t"), (), ())
    x_min: float = eqx.field(static=True, default=0.0)
    x_max: float = eqx.field(static=True, default=2 * math.pi)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def check_task(self, task: ConvectionTask, out: PyTree) -> PyTree:
        return parameter_check(task.beta, out, "speed beta", "convection", positive=False)

    def residual(self, derivs: Derivatives, task: ConvectionTask) -> Values:
        u_x, u_t = derivs.require("u_x", "u_t")
        return u_t + task.beta * u_x

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        return jnp.sin(x)

    def exact_solution(self, task: ConvectionTask, x: Array, t: Array) -> Float[Array, "nt nx"]:
        r"""$\sin(x - \beta (t - t_\min))$ on the grid `x × t`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** via `eqx.error_if`, if `task.beta` is not finite.
        """
        x, t = jnp.asarray(x), jnp.asarray(t) - self.t_min  # the time since t_min
        beta = self.check_task(task, task.beta)
        return jnp.sin(x[None, :] - beta * t[:, None])

    def reference_solution(
        self, task: ConvectionTask, x: Array, t: Array, num_modes: int = 8
    ) -> Float[Array, "nt nx"]:
        r"""Fourier-Galerkin method of lines: the coefficients $(a_k, b_k)$ of
        $\cos k\omega x, \sin k\omega x$ ($\omega = 2\pi/L$, 1 on the default domain) from
        the real FFT of $u_0$'s samples at 64 equispaced points, integrated as
        $a_k' = -\beta k\omega b_k$, $b_k' = \beta k\omega a_k$ with diffrax (Tsit5), then
        summed at `x`.

        **Arguments:**

        - `task`: one [`metapinn.ConvectionTask`][].
        - `x`, `t`: 1-D grids in the domain (`t` non-empty and strictly increasing).
        - `num_modes`: $K$, the modes $k = 0, \dots, K$ kept; an integer with
          `0 <= num_modes < 32` (below half the 64 samples of $u_0$), default 8.

        **Returns:** float64 `u` of shape `(len(t), len(x))`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** `RuntimeError` if float64 is not enabled; `ValueError` for a
        `num_modes` that is not an integer in `[0, 32)` (naming it), for an `x` or `t`
        that is not 1-D or an empty `t`, and for concrete `x`, `t` outside the domain or
        a `t` that is not strictly increasing; via `eqx.error_if`, for a `beta` that is
        not finite; diffrax raises if the solve fails.
        """
        if (
            isinstance(num_modes, bool)
            or not isinstance(num_modes, int | np.integer)
            or not 0 <= num_modes < _SAMPLES // 2
        ):
            raise ValueError(
                f"Convection.reference_solution needs an integer num_modes in [0, "
                f"{_SAMPLES // 2}) (u0 is sampled at {_SAMPLES} points); got "
                f"num_modes={num_modes!r}"
            )
        num_modes = int(num_modes)
        _spectral.require_x64("convection")
        x, t = _spectral.check_grid(x, t, self)
        beta = self.check_task(task, jnp.asarray(task.beta, jnp.float64))
        a0, b0 = _spectral.fourier_coefficients(
            self.initial_condition, self.x_min, self.x_max, num_modes, _SAMPLES
        )
        # The wavenumbers of cos, sin(k omega (x - x_min)), omega = 2 pi / L.
        k = jnp.arange(num_modes + 1, dtype=jnp.float64) * (2 * jnp.pi / (self.x_max - self.x_min))

        def field(time, y, beta):
            del time
            a, b = y
            return -beta * k * b, beta * k * a

        a, b = _spectral.integrate(field, (a0, b0), t, beta, t0=self.t_min)
        return _spectral.fourier_series(a, b, x, self.x_min, self.x_max)
