"""Burgers' equation with random initial conditions (docs/design.md F6): the task is a
function, `u0 = Σ_k a_k sin(kπx)`, not one scalar."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from .._custom_types import Errors, Points, ScalarLike, Values
from .._pinn import Derivatives
from ._base import AbstractPDE, parameter_array, parameter_check
from ._burgers._equation import check_domain
from ._burgers._reference import CODE_VERSION as _SOLVER_VERSION


RANDOM_IC_MODES = 8
"""The modes of a random initial condition, `k = 1, …, 8`."""
_CHECK_POINTS = 2049  # where max |u0| is checked: every 1/1024 of [-1, 1]


class RandomICTask(eqx.Module):
    """One member of the random-initial-condition Burgers family: the sine coefficients
    `coefficients` `(K,)` of its initial condition and the viscosity `nu` (or a batch:
    `(B, K)` and `(B,)`)."""

    coefficients: Float[Array, "... K"]
    nu: Float[Array, "..."]

    def __init__(self, coefficients: Float[Array, "... K"], nu: ScalarLike | Float[Array, " B"]):
        """**Arguments:**

        - `coefficients`: the sine coefficients $a_k$, shape `(K,)`, or `(B, K)` for a
          batch of tasks; cast to the default float dtype if not floating.
        - `nu`: the viscosity (> 0, finite), a scalar or, for a batch, shape `(B,)`.

        **Raises:** `ValueError` for `coefficients` not of shape `(K,)` or `(B, K)` with
        `K >= 1`; for concrete coefficients that are not finite or whose initial
        condition exceeds 1 in magnitude on a grid of spacing 1/1024 (the family's
        bound, which keeps the front no steeper than the benchmark's at the same `nu`);
        or for a concrete `nu` that is not finite and > 0.
        """
        coefficients = jnp.asarray(coefficients)
        if not jnp.issubdtype(coefficients.dtype, jnp.floating):
            coefficients = coefficients.astype(jnp.zeros(()).dtype)
        if coefficients.ndim not in (1, 2) or coefficients.shape[-1] < 1:
            raise ValueError(
                f"coefficients must have shape (K,) or (B, K); got {coefficients.shape}"
            )
        try:
            a = np.asarray(coefficients, dtype=float)
        except jax.errors.TracerArrayConversionError:
            a = None
        if a is not None:
            if not np.all(np.isfinite(a)):
                raise ValueError(f"random-IC coefficients must be finite, got {a.tolist()}")
            x = np.linspace(-1.0, 1.0, _CHECK_POINTS)
            k = np.arange(1, a.shape[-1] + 1)
            peak = np.max(np.abs(np.sin(np.pi * np.outer(x, k)) @ a.T), axis=0)
            if np.any(peak > 1 + 1e-12):
                raise ValueError(
                    "a random initial condition must satisfy max |u0| <= 1; coefficients "
                    f"{a.tolist()} give max |u0| = {np.max(peak):.6g}"
                )
        self.coefficients = coefficients
        self.nu = parameter_array(nu, "viscosity nu", "random-IC Burgers")

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        r"""$u_0(x) = \sum_k a_k \sin(k\pi x)$ at the points `x` (one task)."""
        k = jnp.arange(1, self.coefficients.shape[-1] + 1, dtype=x.dtype)
        return jnp.sin(jnp.pi * x[:, None] * k[None, :]) @ self.coefficients.astype(x.dtype)


def random_initial_conditions(
    key: PRNGKeyArray, n: int, num_modes: int = RANDOM_IC_MODES, *, draw_dtype=None
) -> Float[Array, "n K"]:
    r"""`n` random initial conditions of the family (docs/design.md F6): $a_k \sim
    \mathcal{N}(0, 1/k^2)$ for $k \le$ `num_modes`, each draw divided by
    $\max(1, \max_x |u_0|)$ so that $\max |u_0| \le 1$ (the maximum bounded from a
    grid of spacing 1/1024 and the curvature between its points). A pure function of
    `key`, in the default float dtype; `draw_dtype` (e.g. `jnp.float32`) fixes the dtype
    of the normal draws, so that the same key gives the same conditions (to rounding)
    with or without `jax_enable_x64`.

    **Arguments:**

    - `key`: a PRNG key.
    - `n`: the number of initial conditions.
    - `num_modes`: $K$, the modes of each (default `RANDOM_IC_MODES`, 8).
    - `draw_dtype`: the dtype of the draws (keyword only); default `None`, the default
      float dtype.

    **Returns:** the coefficients $a_k$, shape `(n, num_modes)`, in the default float
    dtype: e.g. `RandomICTask(random_initial_conditions(key, B), nu)` is a batch of `B`
    tasks.

    **Raises:** `ValueError` unless `n` and `num_modes` are positive integers.
    """
    for name, value in (("n", n), ("num_modes", num_modes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    dtype = jnp.zeros(()).dtype
    # Everything in the draw dtype, then one cast: the same numbers with or without x64.
    work = dtype if draw_dtype is None else jnp.dtype(draw_dtype)
    k = jnp.arange(1, num_modes + 1, dtype=work)
    a = jr.normal(key, (n, num_modes), dtype=work) / k[None, :]
    x = jnp.linspace(-1.0, 1.0, _CHECK_POINTS, dtype=work)
    peak = jnp.max(jnp.abs(jnp.sin(jnp.pi * x[:, None] * k[None, :]) @ a.T), axis=0)
    # Between grid points |u0| exceeds its grid maximum by at most h^2/8 max|u0''|, with
    # max|u0''| <= sum_k |a_k| (k pi)^2: dividing by that bound makes max |u0| <= 1.
    h = 2.0 / (_CHECK_POINTS - 1)
    peak = peak + h * h / 8 * (jnp.abs(a) @ (jnp.pi * k) ** 2)
    return (a / jnp.maximum(1.0, peak)[:, None]).astype(dtype)


class BurgersRandomIC(AbstractPDE):
    r"""Viscous Burgers' equation from a random initial condition (docs/design.md F6):

    $$u_t + u u_x = \nu u_{xx},\qquad u(x, 0) = \sum_{k=1}^{K} a_k \sin(k\pi x),
    \qquad u(\pm 1, t) = 0,$$

    on $x \in [-1, 1]$, $t \in [0, 1]$; a task is a [`metapinn.RandomICTask`][] (the
    coefficients $a_k$ and $\nu$, 0.01 in the standard workload), drawn by
    [`metapinn.random_initial_conditions`][]. This is the family where conditioning is
    hardest: a conditioned network must take the whole initial condition as input.
    Exact solution: Cole–Hopf by quadrature ([`metapinn.cole_hopf_solution`][] with
    `coefficients`); reference: the sine-series spectral solver
    ([`metapinn.SpectralBurgersSolver`][]) from the same coefficients.

    **Fields:** the domain, static floats, fixed: `x_min = -1`, `x_max = 1`, `t_min = 0`,
    `t_max = 1`. The initial conditions, the exact solution and the reference solver are
    those of this domain only, so no other is accepted.

    **Raises:** `ValueError` on construction if any of the four fields is given another
    value, naming the field and the value.
    """

    REFERENCE_VERSION: ClassVar[int] = _SOLVER_VERSION
    """The Burgers solver's code version: part of the reference cache's key."""
    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def __check_init__(self):
        check_domain(self)

    def check_task(self, task: RandomICTask, out: PyTree) -> PyTree:
        out = eqx.error_if(
            out,
            ~jnp.all(jnp.isfinite(task.coefficients)),
            "random-IC coefficients must be finite",
        )
        return parameter_check(task.nu, out, "viscosity nu", "random-IC Burgers")

    def residual(self, derivs: Derivatives, task: RandomICTask) -> Values:
        u_x, u_t, u_xx = derivs.require("u_x", "u_t", "u_xx")
        return u_t + derivs.u * u_x - task.nu * u_xx

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        raise NotImplementedError(
            "the random-IC Burgers family's initial condition is part of its task: use "
            "task.initial_condition(x)"
        )

    def initial_error(self, derivs: Derivatives, points: Points, task: RandomICTask) -> Errors:
        return derivs.u - task.initial_condition(points[:, 0])

    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        del x
        return jnp.zeros_like(t)

    def exact_solution(self, task: RandomICTask, x: Array, t: Array) -> Float[Array, "nt nx"]:
        """Cole–Hopf ([`metapinn.cole_hopf_solution`][] with the task's coefficients) on
        the grid `x × t`, `u[i, j] = u(x[j], t[i])`, for one task.

        **Raises:** what [`metapinn.cole_hopf_solution`][] raises (e.g. `ValueError` for
        a batch of `nu`); `jax.errors.TracerArrayConversionError` for traced
        coefficients (they must be concrete).
        """
        from ._burgers._exact import cole_hopf_on_grid

        return cole_hopf_on_grid(x, t, task.nu, np.asarray(task.coefficients))

    def reference_solution(
        self, task: RandomICTask, x: Array, t: Array, grid_size: int | None = None
    ) -> Float[Array, "nt nx"]:
        """The spectral reference on `x × t` for one task, with
        [`metapinn.SpectralBurgersSolver`][] from the task's coefficients.

        **Arguments:**

        - `task`: one [`metapinn.RandomICTask`][] (coefficients `(K,)`, a scalar `nu`).
        - `x`, `t`: 1-D grids in `[-1, 1]` and `[0, 1]`.
        - `grid_size`: the solver's collocation points `M` (even, >= 8, with
          `(M - 1) // 3 >= K`); default: [`metapinn.burgers_grid_size`][]`(nu)`, which
          needs a concrete `nu`. For a batch of tasks, `jax.vmap` this method with
          `grid_size` given (one size for the whole batch), or call it per task.

        **Returns:** float64 `u` of shape `(len(t), len(x))`, `u[i, j] = u(x[j], t[i])`.

        **Raises:** `ValueError` with `grid_size=None` for a traced `nu` (under `jit`,
        `vmap` or `grad`) or a batch of tasks, naming the shape; `ValueError` for an
        invalid `grid_size` (see [`metapinn.SpectralBurgersSolver`][]); or what
        [`metapinn.SpectralBurgersSolver.solve`][] raises (`RuntimeError` without
        float64; `ValueError` for a batch of `nu`, bad shapes, or more than
        `num_modes` coefficients; via `eqx.error_if` for bad values or a failed solve).
        """
        from ._burgers._exact import _concrete
        from ._burgers._reference import SpectralBurgersSolver, burgers_grid_size

        if grid_size is None:
            nu = _concrete(task.nu)
            if nu is None:
                raise ValueError(
                    "BurgersRandomIC.reference_solution needs grid_size when the task's nu "
                    "is traced (under jit, vmap or grad), e.g. grid_size="
                    "burgers_grid_size(nu) for the smallest nu of a batch"
                )
            if nu.ndim != 0:
                raise ValueError(
                    "BurgersRandomIC.reference_solution takes one task; got nu of shape "
                    f"{nu.shape}. For a batch, call it per task, or jax.vmap it with "
                    "grid_size given"
                )
            grid_size = burgers_grid_size(nu.item())
        solver = SpectralBurgersSolver(grid_size)
        return solver.solve(task.nu, x, t, coefficients=task.coefficients).u
