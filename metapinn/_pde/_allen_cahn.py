"""The Allen–Cahn family (docs/design.md F5): `u_t = ε u_xx + 5(u − u³)` on a periodic
domain, a reaction–diffusion equation whose solution sharpens into interfaces of width
`~ √ε`; no exact solution, so its reference is verified against itself under refinement."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._custom_types import ScalarLike, Values
from .._pinn import Derivatives
from . import _spectral
from ._base import AbstractPDE, parameter_array, parameter_check


REACTION = 5.0
"""The reaction rate: the equation's last term is `REACTION * (u - u**3)`."""
_PARAMETER = ("diffusivity epsilon", "Allen-Cahn")
_PROJECTION_SAMPLES = 2**18
"""Samples of `u0` whose FFT gives its Fourier coefficients. `u0`'s derivative jumps at
`x = ±1` (periodically), so its coefficients fall off like `k⁻²` and the FFT aliases
`~1.3 / samples²` (2e-11) into each: the L2 projection to the accuracy the solver keeps."""


class AllenCahnTask(eqx.Module):
    """One member of the Allen–Cahn family: the diffusivity `epsilon` (a scalar, or a
    batch `(B,)`)."""

    epsilon: Float[Array, "..."]

    def __init__(self, epsilon: ScalarLike | Float[Array, " B"]):
        """**Arguments:** `epsilon`, the diffusivity (> 0, finite); an array of shape
        `(B,)` describes a batch of tasks, to be `vmap`ped over.

        **Raises:** `ValueError` for a concrete `epsilon` that is not finite and > 0.
        """
        self.epsilon = parameter_array(epsilon, *_PARAMETER)


def _reaction_field(t, y, args):
    """The semi-discrete Fourier–Galerkin system `c' = -ε κ² c + P[f(u)]` for the
    coefficients `y = (Re c_k, Im c_k)`, `k = 0..K`: `f(u) = 5(u − u³)` on `4(K + 1)`
    equispaced points, so the cubic's products (wavenumbers up to `3K`) alias none into
    `k ≤ K`. A module-level function, so repeated solves of one size reuse a compile."""
    del t
    epsilon, kappa2 = args
    size = y.shape[1]
    u = jnp.fft.irfft(jax.lax.complex(y[0], y[1]), n=4 * size, norm="forward")
    f = jnp.fft.rfft(REACTION * (u - u**3), norm="forward")[:size]
    return jnp.stack([jnp.real(f), jnp.imag(f)]) - (epsilon * kappa2)[None] * y


class AllenCahn(AbstractPDE):
    r"""The Allen–Cahn equation on the periodic $x \in [-1, 1)$, $t \in [0, 1]$
    (docs/design.md F5):

    $$u_t = \varepsilon u_{xx} + 5(u - u^3),\qquad u(x, 0) = x^2 \cos \pi x,$$

    with $u$ and $u_x$ periodic; a family over the diffusivity $\varepsilon$ (a
    [`metapinn.AllenCahnTask`][], training range [1e-4, 1e-2]). The reaction drives $u$
    to $\pm 1$, separated by interfaces of width $\sim\sqrt{\varepsilon/5}$: the PINN
    benchmark of Raissi et al. (2019, *J. Comput. Phys.* 378) at $\varepsilon = 10^{-4}$,
    and a known failure mode of plain PINNs (Wight & Zhao 2021, *Commun. Comput. Phys.*
    29). The boundary loss is the periodic jump of $u$ and $u_x$. No exact solution: the
    reference is a self-converged spectral solver (`reference_solution`).

    **Fields:** the domain, static floats: `x_min` (default -1), `x_max` (default 1),
    `t_min` (default 0), `t_max` (default 1).
    """

    periodic = True
    jet_needs = (("u_t", "u_xx"), (), ("u_x",))
    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def check_task(self, task: AllenCahnTask, out: PyTree) -> PyTree:
        return parameter_check(task.epsilon, out, *_PARAMETER)

    def residual(self, derivs: Derivatives, task: AllenCahnTask) -> Values:
        u_t, u_xx = derivs.require("u_t", "u_xx")
        return u_t - task.epsilon * u_xx - REACTION * (derivs.u - derivs.u**3)

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        return x**2 * jnp.cos(jnp.pi * x)

    def default_num_modes(self, epsilon: ScalarLike) -> int:
        r"""The reference's highest wavenumber $K$ for a concrete `epsilon`: $K + 1$ the
        power of two $\ge 5L/\sqrt{\varepsilon}$ ($L = x_\max - x_\min$), at least 32:
        1023 at $\varepsilon = 10^{-4}$, 511 at $10^{-3}$, 127 at $10^{-2}$ (for $L = 2$).

        Every length of the problem scales like $\sqrt\varepsilon$ (the interfaces, the
        smoothing of $u_0$'s kink), so the modes needed scale like $1/\sqrt\varepsilon$;
        then the stiffest rate $\varepsilon (K\omega)^2$ ($\ge 10^3$), and with it the
        explicit solver's step count (~400 to ~1,500), is the same across the range.
        Measured on the standard grid over $\varepsilon \in [5 \cdot 10^{-5}, 2 \cdot
        10^{-2}]$: the default agrees with twice the modes to $\le 1.5 \cdot 10^{-10}$
        relative L2 (the tolerances' level); half the default, to $3 \cdot 10^{-7}$; a
        quarter misses $10^{-6}$. Powers of two keep the FFTs fast and the compiles few.

        **Raises:** `ValueError` for an `epsilon` that is not a concrete scalar, finite
        and > 0."""
        try:
            eps = np.asarray(parameter_array(epsilon, *_PARAMETER), dtype=np.float64)
        except jax.errors.TracerArrayConversionError:
            raise ValueError("a traced epsilon has no default num_modes: pass one") from None
        if eps.ndim:
            raise ValueError(f"epsilon must be a scalar (one task), got shape {eps.shape}")
        wanted = 5.0 * (self.x_max - self.x_min) / math.sqrt(float(eps))
        return max(32, 2 ** math.ceil(math.log2(wanted))) - 1

    def reference_solution(
        self,
        task: AllenCahnTask,
        x: Array,
        t: Array,
        num_modes: int | None = None,
        *,
        rtol: float = 1e-10,
        atol: float = 1e-12,
    ) -> Float[Array, "nt nx"]:
        r"""Fourier–Galerkin method of lines, float64. The coefficients $c_k$,
        $k \le K$ = `num_modes` (default: `default_num_modes(task.epsilon)`; pass it for
        a traced `epsilon`, e.g. under `vmap`), of $u = \sum_{|k| \le K} c_k e^{ik\omega
        (x - x_\min)}$, $\omega = 2\pi/L$, start from the **L2 projection** of $u_0$ (the
        FFT of $2^{18}$ samples) and follow $c_k' = -\varepsilon (k\omega)^2 c_k +
        \widehat{f(u)}_k$, dealiased, with diffrax (Tsit5, PID `rtol`, `atol`) from
        `t_min`; the series is summed at `x` (any points: the grid's $x = \pm 1$ agree
        to rounding), and at $t = $ `t_min` the reference is $u_0$ itself.

        Why the projection: $u_0'$ jumps at $x = \pm 1$, so $u_0$'s coefficients decay
        like $k^{-2}$. Interpolating $u_0$ on the solver's grid aliases that tail into
        the low modes, which diffusion never damps: an $O(K^{-2})$ error at every time
        (measured between $K = 512$ and 1024 at $\varepsilon = 10^{-4}$: 4.6e-6;
        projected, 9e-8). Projected, the
        truncation error lives only in modes $k > K$, which diffusion damps like
        $e^{-\varepsilon (k\omega)^2 t}$: at $t = 0.01$ by $e^{-10}$ at the default $K$,
        and the convergence in $K$ is spectral. At $t = $ `t_min` the truncated series
        would still be $O(1/K)$ off at the kink, hence $u_0$ there. (For
        $0 < t \lesssim 1/(\varepsilon (K\omega)^2) \approx 10^{-3}$ that truncation error
        is still visible near $x = \pm 1$.)

        Not an integrating factor ($v_k = e^{\varepsilon (k\omega)^2 t} c_k$): its high
        modes, slaved to the reaction, grow like $e^{\varepsilon (k\omega)^2 t}$ (past
        float64's range at $\varepsilon = 10^{-2}$, $K = 1023$), and Tsit5's error control
        must follow that exponential, so it needs *more* steps than the explicit system
        (measured, restarted at each output time to stay in range: $10^6$ steps were
        not enough at $\varepsilon = 10^{-2}$, $K = 256$, against 2,365 explicit ones).
        With $K \propto 1/\sqrt\varepsilon$ the explicit system is only mildly stiff.

        **Returns:** float64 `u` of shape `(len(t), len(x))`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** `RuntimeError` if float64 is not enabled; `ValueError` unless `x`
        and `t` are 1-D (`t` non-empty), for concrete `x`, `t` outside the domain or a
        `t` that is not strictly increasing, for a `num_modes` that is not a positive
        integer, for an `epsilon` that is not a scalar, and, with `num_modes=None`, for
        an `epsilon` that is traced or (concrete) not finite and > 0; via
        `eqx.error_if`, for an `epsilon` that is not finite and > 0; diffrax raises if
        the solve fails.
        """
        _spectral.require_x64("Allen-Cahn")
        x, t = _spectral.check_grid(x, t, self)
        if num_modes is None:
            num_modes = self.default_num_modes(task.epsilon)
        if isinstance(num_modes, bool) or not isinstance(num_modes, int) or num_modes < 1:
            raise ValueError(f"num_modes must be a positive integer, got {num_modes!r}")
        epsilon = jnp.asarray(task.epsilon, jnp.float64)
        if epsilon.ndim:
            raise ValueError(f"epsilon must be a scalar (one task), got shape {epsilon.shape}")
        return _reference(self, epsilon, x, t, num_modes, float(rtol), float(atol))


@eqx.filter_jit
def _reference(pde: AllenCahn, epsilon, x, t, num_modes: int, rtol: float, atol: float):
    """`AllenCahn.reference_solution` after its checks: one compile per grid shape,
    `num_modes` and tolerances."""
    epsilon = pde.check_task(AllenCahnTask(epsilon), epsilon)
    a0, b0 = _spectral.fourier_coefficients(
        pde.initial_condition, pde.x_min, pde.x_max, num_modes, _PROJECTION_SAMPLES
    )
    c0 = jnp.stack([a0.at[1:].multiply(0.5), -0.5 * b0])  # (Re, Im) of c_k, k >= 0
    omega = 2 * jnp.pi / (pde.x_max - pde.x_min)
    kappa2 = (omega * jnp.arange(num_modes + 1, dtype=jnp.float64)) ** 2
    times = jnp.concatenate([jnp.full((1,), pde.t_min, jnp.float64), t])  # start at t_min
    args = (epsilon, kappa2)
    c = _spectral.integrate(
        _reaction_field, c0, times, args, rtol=rtol, atol=atol, max_steps=10**6
    )[1:]
    a = (2 * c[:, 0]).at[:, 0].multiply(0.5)
    u = _spectral.fourier_series(a, -2 * c[:, 1], x, pde.x_min, pde.x_max)
    return jnp.where((t == pde.t_min)[:, None], pde.initial_condition(x)[None, :], u)
