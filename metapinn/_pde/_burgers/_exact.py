"""The exact solution of the Burgers benchmark by the Cole–Hopf transformation.

It is the oracle that the numerical reference solver (`._reference`) is tested
against, so it shares no discretisation with it: a quadrature of the heat-kernel
integral, not a method of lines.
"""

import functools
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real


# The quadrature drops the part of the integrand below exp(-_TAIL) times its peak.
_TAIL = 50.0
# Node spacing in the scaled variable s, times sqrt(1 + pi t). The integrand is entire
# in s; bounding its growth off the real axis gives a trapezoidal error of roughly
# exp(-pi^2 / (spacing^2 (1 + pi t))), i.e. below 1e-60 for this spacing.
_SPACING = 0.25
# Points evaluated together (each with `num_nodes` nodes), to bound memory.
_POINTS_PER_CHUNK = 2048


def _float_dtype() -> np.dtype:
    """The default floating dtype: float64 when `jax_enable_x64` is on."""
    return np.dtype(jnp.zeros(()).dtype)


def _concrete(value) -> np.ndarray | None:
    """`value` as a NumPy array, or `None` if it is a tracer (inside `jit`/`vmap`/`grad`)."""
    try:
        return np.asarray(value)
    except jax.errors.TracerArrayConversionError:
        return None


def cole_hopf_num_nodes(nu: float, t_max: float, coefficients=None) -> int:
    r"""The number of quadrature nodes that [`metapinn.cole_hopf_solution`][] uses by
    default: enough for the trapezoidal rule to be converged to rounding error for
    viscosity `nu` up to time `t_max`, from the initial condition `-sin(pi x)` or, with
    `coefficients` $a_k$, from $\sum_k a_k \sin(k\pi x)$ (the node spacing shrinks
    with the highest mode).

    **Arguments:** `nu` (> 0) and `t_max` (>= 0), Python floats; `coefficients`, a
    1-D sequence of floats (default: `(-1,)`).

    **Returns:** an odd integer (so that `s = 0` is a node).

    **Raises:** `ValueError` for a non-positive or non-finite `nu`, or a negative or
    non-finite `t_max`.
    """
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu must be finite and > 0, got {nu!r}")
    if not (math.isfinite(t_max) and t_max >= 0):
        raise ValueError(f"t_max must be finite and >= 0, got {t_max!r}")
    a = np.asarray((-1.0,) if coefficients is None else coefficients, dtype=float)
    half_width = math.sqrt(_potential_range(a) / (2 * nu) + _TAIL)
    spacing = _SPACING / math.sqrt(1.0 + math.pi * t_max * len(a))
    return 2 * math.ceil(half_width / spacing) + 1


def _potential_range(a) -> float:
    r"""A bound on the range of the potential $F = \int u_0$, $2\sum_k |a_k|/(k\pi)$
    (`2/pi` for `-sin(pi x)`)."""
    a = np.abs(np.asarray(a, dtype=float))
    return float(np.sum(2 * a / (np.pi * np.arange(1, a.size + 1))))


def _cole_hopf_point(
    x: Float[Array, ""],
    t: Float[Array, ""],
    nu: Float[Array, ""],
    a: Float[Array, " K"],
    bounds: tuple[float, float],
    num_nodes: int,
) -> Float[Array, ""]:
    """`u(x, t)` at one point, by the trapezoidal rule in the scaled variable `s`, for
    the initial condition `sum_k a_k sin(k pi x)`; `bounds` = (`sum |a_k|`, the range
    bound of `_potential_range`)."""
    positive = t > 0
    t_safe = jnp.where(positive, t, 1.0)  # keeps sqrt(t) and its derivative finite
    wavenumbers = jnp.pi * jnp.arange(1, a.shape[0] + 1, dtype=x.dtype)
    amplitude, potential_range = bounds
    # Outside |s| <= half_width the log-weight is below its maximum by more than _TAIL:
    # h(s) - h(0) <= -s^2 + min(max|u0| sigma |s| / (2 nu), range(F) / (2 nu)).
    slope = amplitude * jnp.sqrt(t_safe / nu)
    half_width = jnp.minimum(
        0.5 * (slope + jnp.sqrt(slope * slope + 4.0 * _TAIL)),
        jnp.sqrt(potential_range / (2.0 * nu) + _TAIL),
    )
    s = half_width * jnp.linspace(-1.0, 1.0, num_nodes, dtype=x.dtype)
    y = x - jnp.sqrt(4.0 * nu * t_safe) * s
    phases = wavenumbers[:, None] * y[None, :]
    # The potential F(y) = -sum_k a_k cos(k pi y) / (k pi), so that F' = u0.
    potential = -(a / wavenumbers) @ jnp.cos(phases)
    log_weight = -s * s - potential / (2.0 * nu)
    # Log-sum-exp: the shift cancels between numerator and denominator.
    weight = jnp.exp(log_weight - jax.lax.stop_gradient(jnp.max(log_weight)))
    u = jnp.sum((a @ jnp.sin(phases)) * weight) / jnp.sum(weight)
    return jnp.where(positive, u, a @ jnp.sin(wavenumbers * x))


def cole_hopf_solution(
    x: Real[ArrayLike, "..."],
    t: Real[ArrayLike, "..."],
    nu: Real[ArrayLike, "..."] | float,
    *,
    num_nodes: int | None = None,
    coefficients: Real[ArrayLike, " K"] | None = None,
) -> Float[Array, "..."]:
    r"""The exact solution of viscous Burgers' equation

    $$u_t + u u_x = \nu u_{xx},\qquad u(x, 0) = -\sin(\pi x),\qquad u(\pm 1, t) = 0,$$

    by the Cole–Hopf transformation $u = -2\nu\,\varphi_x/\varphi$, where $\varphi$
    solves the heat equation $\varphi_t = \nu\varphi_{xx}$ from
    $\varphi(y, 0) = \exp\!\big((1 - \cos\pi y)/(2\pi\nu)\big)$. Writing
    $\varphi$ as a heat-kernel integral and differentiating under it gives

    $$u(x, t) = \frac{\int u_0(y)\, e^{h(s)}\,\mathrm{d}s}{\int e^{h(s)}\,\mathrm{d}s},
    \qquad y = x - \sqrt{4\nu t}\,s,\qquad h(s) = -s^2 - \frac{\cos\pi y}{2\pi\nu},$$

    with $u_0(y) = -\sin\pi y$. Both integrals are evaluated with the trapezoidal rule
    on a symmetric window $|s| \le S$ outside of which $e^{h}$ is negligible, with the
    weights shifted by $\max h$ (log-sum-exp) so that nothing overflows for small
    $\nu$. The integrand is smooth and decays like a Gaussian, so the rule converges
    geometrically in `num_nodes`. The symmetric window makes $u$ odd in $x$ and zero at
    $x = \pm 1$ to rounding error. At $t = 0$ the initial condition is returned.

    The formula holds for every real `x` (the solution is odd and 2-periodic) and every
    `t >= 0`. It is differentiable with JAX, so e.g. `jax.grad` gives $u_x$; for
    $\nu = 0.01/\pi$ the largest $|u_x(0, t)|$ is 152.00516, at $t = 1.6037/\pi$
    (Basdevant et al. 1986, *Computers & Fluids* 14:23–41), which the tests reproduce.

    **Arguments:**

    - `x`, `t`: positions and times; any two shapes that broadcast together.
    - `nu`: the viscosity, a scalar (> 0). For several viscosities, use `jax.vmap`.
    - `num_nodes`: quadrature nodes per point. By default
      `cole_hopf_num_nodes(nu, max(t), coefficients)`, which needs concrete `nu`, `t`
      and `coefficients`; pass it explicitly when calling under `jax.jit`.
    - `coefficients`: the sine coefficients $a_k$ of another initial condition
      $u_0 = \sum_k a_k \sin(k\pi x)$ (concrete, 1-D, finite; default `(-1,)`, the
      benchmark's). Then $-\int_0^y u_0 = -\sum_k a_k (1 - \cos k\pi y)/(k\pi)$ replaces
      $(1 - \cos\pi y)/\pi$ (its value for the default) in $\varphi(y, 0)$.

    **Returns:** `u` in the default float dtype, of the broadcast shape of `x` and `t`.

    **Raises:** `ValueError` for a non-scalar `nu`, shapes that do not broadcast, a
    `num_nodes` below 3, a missing `num_nodes` with traced inputs, and, for concrete
    inputs, a `nu` that is not finite and positive or a `t` that is negative or not
    finite. Under `jax.jit` the value checks are made with `eqx.error_if` instead.
    """
    dtype = _float_dtype()
    x = jnp.asarray(x, dtype=dtype)
    t = jnp.asarray(t, dtype=dtype)
    nu = jnp.asarray(nu, dtype=dtype)
    if nu.ndim != 0:
        raise ValueError(
            f"cole_hopf_solution takes one viscosity; got nu of shape {nu.shape}. "
            "For several viscosities, use jax.vmap."
        )
    try:
        shape = jnp.broadcast_shapes(x.shape, t.shape)
    except ValueError as error:
        raise ValueError(
            f"x and t must broadcast together; got shapes {x.shape} and {t.shape}"
        ) from error
    nu_value, t_values = _concrete(nu), _concrete(t)
    if nu_value is not None and not (np.isfinite(nu_value) and nu_value > 0):
        raise ValueError(f"nu must be finite and > 0, got {nu_value.item()!r}")
    if t_values is not None and t_values.size > 0:
        bad = ~(np.isfinite(t_values) & (t_values >= 0))
        if np.any(bad):
            raise ValueError(f"t must be finite and >= 0, got t = {t_values[bad][0].item()!r}")
    nu = eqx.error_if(nu, ~(jnp.isfinite(nu) & (nu > 0)), "nu must be finite and > 0")
    t = eqx.error_if(t, ~(jnp.isfinite(t) & (t >= 0)), "t must be finite and >= 0")
    a = np.asarray((-1.0,) if coefficients is None else coefficients, dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.all(np.isfinite(a)):
        raise ValueError(f"coefficients must be a non-empty 1-D finite array, got {a.tolist()}")
    if num_nodes is None:
        if nu_value is None or t_values is None:
            raise ValueError(
                "cole_hopf_solution needs num_nodes when nu or t is traced (under jit, "
                "vmap or grad); e.g. num_nodes=cole_hopf_num_nodes(nu, t_max)"
            )
        t_max = float(np.max(t_values)) if t_values.size > 0 else 0.0
        num_nodes = cole_hopf_num_nodes(float(nu_value), t_max, a)
    if isinstance(num_nodes, bool) or not isinstance(num_nodes, int) or num_nodes < 3:
        raise ValueError(f"num_nodes must be an integer >= 3, got {num_nodes!r}")

    size = math.prod(shape)
    if size == 0:
        return jnp.zeros(shape, dtype)
    x_flat = jnp.broadcast_to(x, shape).reshape(size)
    t_flat = jnp.broadcast_to(t, shape).reshape(size)
    bounds = (float(np.sum(np.abs(a))), _potential_range(a))
    a = jnp.asarray(a, dtype=dtype)
    return _cole_hopf_flat(x_flat, t_flat, nu, a, bounds, num_nodes).reshape(shape)


def cole_hopf_on_grid(x: Array, t: Array, nu, coefficients=None) -> Float[Array, "nt nx"]:
    """[`metapinn.cole_hopf_solution`][] on the grid `x × t`: `u[i, j] = u(x[j], t[i])`."""
    x, t = jnp.asarray(x), jnp.asarray(t)
    xs = jnp.broadcast_to(x[None, :], (t.shape[0], x.shape[0]))
    ts = jnp.broadcast_to(t[:, None], xs.shape)
    return cole_hopf_solution(xs, ts, nu, coefficients=coefficients)


@functools.partial(jax.jit, static_argnums=(4, 5))
def _cole_hopf_flat(
    x: Float[Array, " n"],
    t: Float[Array, " n"],
    nu: Float[Array, ""],
    a: Float[Array, " K"],
    bounds: tuple[float, float],
    num_nodes: int,
) -> Float[Array, " n"]:
    """`u` at points, in chunks of `_POINTS_PER_CHUNK` (compiled once per shape)."""

    def point(xt):
        return _cole_hopf_point(xt[0], xt[1], nu, a, bounds, num_nodes)

    return jax.lax.map(point, (x, t), batch_size=min(x.shape[0], _POINTS_PER_CHUNK))
