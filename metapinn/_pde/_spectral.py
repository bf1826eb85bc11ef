"""Building blocks of the families' spectral reference solvers: sine and Fourier
coefficients of sampled data, and one diffrax time integration for a method of lines.

Every reference solver computes its initial coefficients from *samples* of the initial
condition (never from the formula the exact solution uses), integrates the modal ODE
with diffrax, and evaluates the series at the requested points, so a test of a
reference against an exact solution checks an independent computation.
"""

import diffrax as dfx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree


def require_x64(family: str) -> None:
    """Raise `RuntimeError` unless float64 is enabled (the references run in it)."""
    if jnp.zeros(()).dtype != jnp.float64:
        raise RuntimeError(
            f"the {family} reference solver runs in float64: enable it at start-up with "
            'jax.config.update("jax_enable_x64", True) (or JAX_ENABLE_X64=1)'
        )


def sine_coefficients(
    f, x_min: float, x_max: float, num_modes: int, num_points: int
) -> Float[Array, " K"]:
    r"""The first `num_modes` coefficients $b_n$ of $f(x) = \sum_n b_n
    \sin(n\pi (x - x_\min)/L)$, $L = x_\max - x_\min$, by the discrete sine transform
    (DST-I) of $f$ at the `num_points - 1` interior points of a uniform grid: exact for
    a sine polynomial of degree below `num_points`."""
    j = np.arange(1, num_points)
    x = x_min + (x_max - x_min) * j / num_points
    n = np.arange(1, num_modes + 1)
    dst = np.sin(np.pi * np.outer(n, j) / num_points)
    return jnp.asarray(2.0 / num_points * dst) @ f(jnp.asarray(x))


def sine_modes(pde, num_modes: int) -> tuple[Float[Array, " K"], Float[Array, " K"]]:
    r"""For a Dirichlet family: the coefficients of its initial condition in the sine
    basis $\sin(n\pi(x - x_\min)/L)$, $n \le$ `num_modes` (from 64 samples), and the
    squared wavenumbers $(n\pi/L)^2$ of those modes."""
    b0 = sine_coefficients(pde.initial_condition, pde.x_min, pde.x_max, num_modes, 64)
    n = jnp.arange(1, num_modes + 1, dtype=jnp.float64)
    return b0, (n * jnp.pi / (pde.x_max - pde.x_min)) ** 2


def sine_series(
    b: Float[Array, "... K"], x: Float[Array, " nx"], x_min: float, x_max: float
) -> Float[Array, "... nx"]:
    r"""$\sum_n b_n \sin(n\pi (x - x_\min)/L)$ at the points `x`."""
    n = jnp.arange(1, b.shape[-1] + 1, dtype=b.dtype)
    return b @ jnp.sin(n[:, None] * jnp.pi * (x[None, :] - x_min) / (x_max - x_min))


def fourier_coefficients(
    f, x_min: float, x_max: float, num_modes: int, num_points: int
) -> tuple[Float[Array, " K1"], Float[Array, " K1"]]:
    r"""The coefficients $(a_k, b_k)_{k=0}^{K}$ of the periodic
    $f(x) = \sum_k a_k \cos(k\omega(x - x_\min)) + b_k \sin(k\omega(x - x_\min))$,
    $\omega = 2\pi/L$, from `num_points` equispaced samples (the real FFT): exact for
    a trigonometric polynomial of degree below `num_points / 2`."""
    x = x_min + (x_max - x_min) * np.arange(num_points) / num_points
    return fourier_coefficients_of_samples(f(jnp.asarray(x)), num_modes)


def fourier_coefficients_of_samples(
    samples: Float[Array, "... M"], num_modes: int
) -> tuple[Float[Array, "... K1"], Float[Array, "... K1"]]:
    """As `fourier_coefficients`, from the `M` equispaced samples of each row."""
    m = samples.shape[-1]
    if not 0 <= num_modes < m / 2:
        raise ValueError(f"num_modes must be below half the {m} samples, got {num_modes}")
    c = jnp.fft.rfft(samples, axis=-1)[..., : num_modes + 1] * (2.0 / m)
    a, b = jnp.real(c), -jnp.imag(c)
    return a.at[..., 0].multiply(0.5), b


def fourier_series(
    a: Float[Array, "... K1"],
    b: Float[Array, "... K1"],
    x: Float[Array, " nx"],
    x_min: float,
    x_max: float,
) -> Float[Array, "... nx"]:
    r"""$\sum_k a_k \cos(k\omega(x - x_\min)) + b_k \sin(k\omega(x - x_\min))$ at `x`."""
    k = jnp.arange(a.shape[-1], dtype=a.dtype)
    phase = k[:, None] * (2 * jnp.pi / (x_max - x_min)) * (x[None, :] - x_min)
    return a @ jnp.cos(phase) + b @ jnp.sin(phase)


def integrate(
    vector_field,
    y0: PyTree,
    t: Float[Array, " nt"],
    args: PyTree = None,
    *,
    t0: float | None = None,
    rtol: float = 1e-10,
    atol: float = 1e-12,
    max_steps: int = 100_000,
) -> PyTree:
    """The solution of `y' = vector_field(t, y, args)` from `y(t0) = y0` (default
    `t0 = t[0]`; a family passes its `t_min`, so a grid that starts later is not a
    shifted solution) at the times `t` (increasing, `t[0] >= t0`): diffrax's `Tsit5`
    with a PID controller, saved at `t` by its dense output. Raises under JIT if the
    solve fails."""
    sol = dfx.diffeqsolve(
        dfx.ODETerm(vector_field),
        dfx.Tsit5(),
        t0=t[0] if t0 is None else t0,
        t1=t[-1],
        dt0=None,
        y0=y0,
        args=args,
        saveat=dfx.SaveAt(ts=t),
        stepsize_controller=dfx.PIDController(rtol=rtol, atol=atol),
        # Nothing differentiates through a reference: a plain while loop compiles fast.
        adjoint=dfx.ForwardMode(),
        max_steps=max_steps,
    )
    return sol.ys


def check_grid(x: Array, t: Array, pde) -> tuple[Array, Array]:
    """`x` and `t` as float64 1-D arrays; `ValueError` for other shapes, and for
    concrete values outside the family's domain."""
    x = jnp.asarray(x, dtype=jnp.float64)
    t = jnp.asarray(t, dtype=jnp.float64)
    if x.ndim != 1 or t.ndim != 1 or t.shape[0] < 1:
        raise ValueError(f"x and t must be 1-D (t non-empty); got shapes {x.shape}, {t.shape}")
    try:
        xv, tv = np.asarray(x), np.asarray(t)
    except jax.errors.TracerArrayConversionError:
        return x, t
    scale = max(abs(pde.x_min), abs(pde.x_max), 1.0)
    outside = (xv < pde.x_min - 1e-12 * scale) | (xv > pde.x_max + 1e-12 * scale)
    if np.any(outside):
        raise ValueError(f"x must lie in [{pde.x_min}, {pde.x_max}], got x = {xv[outside][0]!r}")
    if np.any((tv < pde.t_min) | (tv > pde.t_max)):
        bad = tv[(tv < pde.t_min) | (tv > pde.t_max)][0]
        raise ValueError(f"t must lie in [{pde.t_min}, {pde.t_max}], got t = {bad!r}")
    if np.any(np.diff(tv) <= 0):
        i = int(np.argmax(np.diff(tv) <= 0))
        raise ValueError(
            f"t must be strictly increasing; got t[{i}] = {tv[i]!r}, t[{i + 1}] = {tv[i + 1]!r}"
        )
    return x, t
