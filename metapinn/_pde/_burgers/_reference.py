"""Reference solutions of the Burgers family: a Fourier pseudo-spectral method of lines
integrated with diffrax, the standard evaluation grid, and a cache on disk.

The initial condition `-sin(pi x)` is odd and 2-periodic, and Burgers' equation
preserves both properties, so the Dirichlet problem on `[-1, 1]` has the same solution
as the periodic problem on `[-1, 1)`: a sine series is exact for it.
"""

import functools
import math
from typing import cast

import diffrax as dfx
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, Real

from ._equation import Burgers
from ._exact import _concrete


# Bump when a change to this module changes the numbers it produces: the cache key
# includes it, so stale cache entries are then ignored.
CODE_VERSION = 1

# Collocation points per unit of 1/nu. Measured against Cole–Hopf on the standard grid
# with the default tolerances: M nu = 3.07 gives ~2e-6, 3.26 ~1.6e-6, 3.84 ~2e-7,
# 4.1 ~6e-8 relative L2 error, for nu from 0.001 to 0.1.
_POINTS_PER_INVERSE_NU = 3.75
_MIN_GRID_SIZE = 32
# A PI step-size controller: the steps sit near Tsit5's stability limit for the
# viscous term, where the default I controller rejects ~25% of the steps; these
# coefficients reject ~6% (e.g. 937 steps instead of 1,166 at nu = 0.005).
_PCOEFF = 0.4
_ICOEFF = 0.3
_METHOD = f"fourier-galerkin-2/3-sine-tsit5-pi({_PCOEFF},{_ICOEFF})"


def _require_x64() -> None:
    if jnp.zeros(()).dtype != jnp.float64:
        raise RuntimeError(
            "the Burgers reference solver runs in float64: enable it at start-up with "
            'jax.config.update("jax_enable_x64", True) (or JAX_ENABLE_X64=1). Without '
            "it, cached_burgers_reference can still load solutions computed earlier."
        )


def burgers_grid_size(nu: float) -> int:
    """The number of collocation points `M` that [`metapinn.burgers_reference_solution`][]
    uses for viscosity `nu` when none is given: the smallest even `2^a 3^b` (an
    FFT-friendly size) with `M >= max(32, 3.75 / nu)`. This keeps the relative L2 error
    against the exact solution below about 5e-7 (spectral accuracy; see the
    benchmark `benchmarks/reference_solver.py`).

    **Arguments:** `nu`, the viscosity (> 0, finite).

    **Returns:** `M`, a Python int.

    **Raises:** `ValueError` for a `nu` that is not finite and positive.
    """
    nu = float(nu)
    if not (math.isfinite(nu) and nu > 0):
        raise ValueError(f"nu must be finite and > 0, got {nu!r}")
    target = max(_MIN_GRID_SIZE, math.ceil(_POINTS_PER_INVERSE_NU / nu))
    best = None
    power_of_two = 2
    while best is None or power_of_two < best:
        size = power_of_two
        while size < target:
            size *= 3
        best = size if best is None else min(best, size)
        power_of_two *= 2
    return best


class BurgersReferenceSolution(eqx.Module):
    """What [`metapinn.SpectralBurgersSolver.solve`][] returns. Under `jax.vmap` each
    field gains the batch axis.

    **Fields:** `u`, `num_steps`, `num_accepted_steps` and `result`, documented below.
    """

    u: Float[Array, "nt nx"]
    """`u[i, j] = u(x[j], t[i])`."""
    num_steps: Int[Array, ""]
    """Steps the time integrator took, rejected ones included."""
    num_accepted_steps: Int[Array, ""]
    """Steps the time integrator accepted."""
    result: dfx.RESULTS
    """Success, or why the solve failed (only inspected when `throw=False`)."""


class SpectralBurgersSolver(eqx.Module):
    r"""A Fourier pseudo-spectral method of lines for viscous Burgers' equation
    $u_t + u u_x = \nu u_{xx}$ on $x \in [-1, 1]$ from $u(x, 0) = -\sin\pi x$ with
    $u(\pm 1, t) = 0$.

    **Discretisation.** The solution is odd and 2-periodic, so it is a sine series,
    truncated to the $K = \lfloor (M - 1)/3 \rfloor$ modes that the 2/3 rule keeps on
    $M$ collocation points:

    $$u(x, t) = \sum_{n=1}^{K} b_n(t) \sin(n\pi x),\qquad
    b_n' = -\nu (n\pi)^2 b_n + N_n(b),$$

    where $N_n$ are the sine coefficients of the conservative nonlinearity
    $-(u^2/2)_x$: $u$ is synthesised on the $M$ points with an inverse real FFT,
    squared, and transformed back. Because $3K < M$, the quadratic product is free of
    aliasing on the retained modes (the 2/3 rule), and the Galerkin truncation
    converges spectrally: $M \approx 3.75/\nu$ gives about $10^{-7}$ relative error
    (see [`metapinn.burgers_grid_size`][]).

    **Time integration.** diffrax's `Tsit5` with a `PIDController` (used as a PI
    controller, `pcoeff=0.4, icoeff=0.3`) on the real coefficient vector $b$, saving
    at the requested times with `SaveAt(ts=t)` (Tsit5's own fourth-order dense
    output, within the step tolerances), so the output is on the requested grid
    directly. In $x$ the sine series is evaluated at the requested points
    (trigonometric interpolation), so nothing is interpolated from a coarser grid.

    The viscous term is integrated explicitly, on purpose. With the 2/3-rule
    truncation and $M \propto 1/\nu$, the viscous eigenvalue $\nu (\pi K)^2$ and the
    advective rate $\pi K \max|u|$ both grow like $1/\nu$, so their ratio stays about
    4: the stiffness is mild and the explicit stability limit costs at most a few
    times the steps that accuracy needs (about 940 steps at $\nu = 0.005$). The
    alternatives were tried and were worse: a global integrating factor
    $e^{\nu k^2 t}$ overflows float64 for the resolved modes ($\nu k^2 t > 709$) and,
    before that, defeats per-component error control; and in our tests diffrax
    0.7.2's IMEX `KenCarp` solvers failed their implicit stages ("nonlinear solve
    diverged", or `max_steps` reached) even with a linear diagonal implicit term.
    Very fine user-chosen grids at large $\nu$ (e.g. $M = 4096$ at $\nu = 0.1$) do
    become stiff; raise `max_steps` for them.

    The module is a pytree whose fields are all static, so it can be passed to
    `jax.jit`/`eqx.filter_jit` and `solve` can be `vmap`ped over `nu`.
    """

    grid_size: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    t_final: float = eqx.field(static=True)

    def __init__(
        self,
        grid_size: int,
        *,
        rtol: float = 1e-8,
        atol: float = 1e-10,
        max_steps: int = 100_000,
        t_final: float = 1.0,
    ):
        """**Arguments:**

        - `grid_size`: `M`, the number of collocation points in `[-1, 1)`; even and
          at least 8 (FFT-friendly sizes such as `2^a 3^b` are fastest). See
          [`metapinn.burgers_grid_size`][] for a choice by viscosity.
        - `rtol`, `atol`: tolerances of the adaptive step-size controller, applied to
          the sine coefficients (which are O(1) at most).
        - `max_steps`: the most steps the integrator may take.
        - `t_final`: the end `T` of the time domain `[0, T]`; requested times must
          lie in it.

        **Raises:** `ValueError` for an invalid setting.
        """
        if isinstance(grid_size, bool) or not isinstance(grid_size, int | np.integer):
            raise ValueError(f"grid_size must be an integer, got {grid_size!r}")
        if grid_size < 8 or grid_size % 2 != 0:
            raise ValueError(f"grid_size must be even and >= 8, got {grid_size}")
        for name, value in (("rtol", rtol), ("atol", atol), ("t_final", t_final)):
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite float > 0, got {value!r}")
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"max_steps must be a positive integer, got {max_steps!r}")
        self.grid_size = int(grid_size)
        self.rtol = float(rtol)
        self.atol = float(atol)
        self.max_steps = max_steps
        self.t_final = float(t_final)

    @property
    def num_modes(self) -> int:
        """`K`, the sine modes kept by the 2/3 rule."""
        return (self.grid_size - 1) // 3

    def _nonlinearity(self, b: Float[Array, " K"]) -> Float[Array, " K"]:
        """Sine coefficients of `-(u^2/2)_x` for `u = sum_n b_n sin(n pi x)`."""
        m, k = self.grid_size, self.num_modes
        # On the points x_j = 2j/M (the same periodic function as on [-1, 1)),
        # sum_n b_n sin(2 pi n j / M) = irfft(c)_j with c_n = -i (M/2) b_n.
        c = jax.lax.complex(jnp.zeros_like(b), -0.5 * m * b)
        zero = jnp.zeros((1,), c.dtype)
        pad = jnp.zeros((m // 2 - k,), c.dtype)
        u = jnp.fft.irfft(jnp.concatenate([zero, c, pad]), n=m)
        # u^2/2 is even: sum_n a_n cos(n pi x) with a_n = (2/M) Re(rfft(u^2/2))_n, so
        # -(u^2/2)_x = sum_n n pi a_n sin(n pi x).
        flux = jnp.fft.rfft(0.5 * u * u)
        wavenumbers = jnp.pi * jnp.arange(1, k + 1, dtype=b.dtype)
        return wavenumbers * (2.0 / m) * jnp.real(flux[1 : k + 1])

    def solve(
        self,
        nu: Real[ArrayLike, "..."],
        x: Real[ArrayLike, "..."],
        t: Real[ArrayLike, "..."],
        *,
        throw: bool = True,
        coefficients: Real[ArrayLike, " K0"] | None = None,
    ) -> BurgersReferenceSolution:
        r"""Solve for one viscosity. Traceable: works under `jax.jit` and `jax.vmap`
        (batch over `nu` with `throw=False` and inspect `result`).

        **Arguments:**

        - `nu`: the viscosity, a scalar (> 0).
        - `x`: strictly increasing positions in `[-1, 1]`.
        - `t`: strictly increasing times in `[0, t_final]`; the integration runs from
          0 to `t[-1]`.
        - `throw`: passed to `diffrax.diffeqsolve`: raise on a failed solve (default),
          or report it in `result`.
        - `coefficients`: the sine coefficients $a_k$ of another initial condition
          $u_0 = \sum_{k \le K_0} a_k \sin(k\pi x)$ (odd and 2-periodic, so the
          method holds unchanged), with `K_0 <= num_modes`; default: `-sin(pi x)`.

        **Returns:** a [`metapinn.BurgersReferenceSolution`][] with `u` of shape
        `(len(t), len(x))`.

        **Raises:** `ValueError` at trace time for wrong shapes; `RuntimeError` if
        float64 is not enabled; under JIT (via `eqx.error_if`) for invalid values of
        `nu`, `x` or `t`, and, with `throw=True`, for a failed solve.
        """
        _require_x64()
        nu = jnp.asarray(nu, dtype=jnp.float64)
        x = jnp.asarray(x, dtype=jnp.float64)
        t = jnp.asarray(t, dtype=jnp.float64)
        if nu.ndim != 0:
            raise ValueError(
                f"solve takes one viscosity; got nu of shape {nu.shape}. For a batch, "
                "use jax.vmap (or burgers_reference_solution, which accepts a 1-D nu)."
            )
        _check_grid_shapes(x, t)
        nu = eqx.error_if(nu, ~(jnp.isfinite(nu) & (nu > 0)), "nu must be finite and > 0")
        x = eqx.error_if(
            x,
            ~jnp.all(jnp.isfinite(x) & (x >= -1.0) & (x <= 1.0)),
            "x must lie in [-1, 1]",
        )
        x = eqx.error_if(x, jnp.any(jnp.diff(x) <= 0), "x must be strictly increasing")
        t = eqx.error_if(
            t,
            ~jnp.all(jnp.isfinite(t) & (t >= 0.0) & (t <= self.t_final)),
            f"t must lie in [0, t_final] = [0, {self.t_final}]",
        )
        t = eqx.error_if(t, jnp.any(jnp.diff(t) <= 0), "t must be strictly increasing")
        x, t = cast(Array, x), cast(Array, t)  # error_if returns its input

        k = self.num_modes
        wavenumbers = jnp.pi * jnp.arange(1, k + 1, dtype=jnp.float64)

        def vector_field(time, b, viscosity):
            del time
            return self._nonlinearity(b) - viscosity * wavenumbers**2 * b

        if coefficients is None:
            b0 = jnp.zeros((k,), jnp.float64).at[0].set(-1.0)  # u0 = -sin(pi x)
        else:
            a = jnp.asarray(coefficients, dtype=jnp.float64)
            if a.ndim != 1 or a.shape[0] > k:
                raise ValueError(
                    f"coefficients must be 1-D with at most num_modes = {k} entries; got "
                    f"shape {a.shape}"
                )
            b0 = jnp.zeros((k,), jnp.float64).at[: a.shape[0]].set(a)
        sol = dfx.diffeqsolve(
            dfx.ODETerm(vector_field),
            dfx.Tsit5(),
            t0=0.0,
            t1=t[-1],
            dt0=None,
            y0=b0,
            args=nu,
            saveat=dfx.SaveAt(ts=t),
            stepsize_controller=dfx.PIDController(
                rtol=self.rtol, atol=self.atol, pcoeff=_PCOEFF, icoeff=_ICOEFF
            ),
            # Nothing differentiates through the reference; ForwardMode runs a plain
            # while loop, which compiles in a fraction of the time of the default
            # checkpointed one.
            adjoint=dfx.ForwardMode(),
            max_steps=self.max_steps,
            throw=throw,
        )
        assert sol.ys is not None and sol.stats is not None
        sines = jnp.sin(wavenumbers[:, None] * x[None, :])
        return BurgersReferenceSolution(
            u=sol.ys @ sines,
            num_steps=sol.stats["num_steps"],
            num_accepted_steps=sol.stats["num_accepted_steps"],
            result=sol.result,
        )

    def __call__(
        self, nu: Real[ArrayLike, "..."], x: Real[ArrayLike, "..."], t: Real[ArrayLike, "..."]
    ) -> Float[Array, "nt nx"]:
        """`solve(nu, x, t).u`, raising on a failed solve."""
        return self.solve(nu, x, t).u


def _check_grid_shapes(x: Array, t: Array) -> None:
    for name, grid in (("x", x), ("t", t)):
        if grid.ndim != 1 or grid.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array; got shape {grid.shape}")


def _check_grid_values(name: str, values: np.ndarray, low: float, high: float) -> None:
    """Eager checks of a concrete grid, naming the first bad value."""
    bad = ~(np.isfinite(values) & (values >= low) & (values <= high))
    if np.any(bad):
        index = int(np.argmax(bad))
        raise ValueError(
            f"{name} must lie in [{low}, {high}]; got {name}[{index}] = {values[index].item()!r}"
        )
    steps = np.diff(values)
    if np.any(steps <= 0):
        index = int(np.argmax(steps <= 0))
        raise ValueError(
            f"{name} must be strictly increasing; got {name}[{index}] = "
            f"{values[index].item()!r} followed by {name}[{index + 1}] = "
            f"{values[index + 1].item()!r}"
        )


def _check_viscosities(values: np.ndarray) -> None:
    bad = ~(np.isfinite(values) & (values > 0))
    if np.any(bad):
        raise ValueError(f"nu must be finite and > 0, got nu = {values[bad].ravel()[0].item()!r}")


@eqx.filter_jit
def _solve_one(solver: SpectralBurgersSolver, nu, x, t) -> BurgersReferenceSolution:
    return solver.solve(nu, x, t, throw=True)


@eqx.filter_jit
def _solve_batch(solver: SpectralBurgersSolver, nu, x, t) -> BurgersReferenceSolution:
    return jax.vmap(lambda n: solver.solve(n, x, t, throw=False))(nu)


def _solve_concrete(
    solver: SpectralBurgersSolver, nu: float, x: Array, t: Array
) -> Float[Array, "nt nx"]:
    """One solve with `throw=True`; a failure is re-raised naming `nu`."""
    try:
        return _solve_one(solver, jnp.asarray(nu, dtype=jnp.float64), x, t).u
    except RuntimeError as error:
        raise RuntimeError(
            f"the Burgers reference solve failed for nu={nu!r} (grid_size="
            f"{solver.grid_size}, rtol={solver.rtol}, atol={solver.atol}, max_steps="
            f"{solver.max_steps}); diffrax's reason is above"
        ) from error


def _failures(nus: np.ndarray, sol: BurgersReferenceSolution, grid_size: int) -> list[str]:
    ok = np.asarray(sol.result == dfx.RESULTS.successful)
    messages = []
    for i in np.flatnonzero(~ok):
        result = jax.tree_util.tree_map(lambda leaf, i=i: leaf[i], sol.result)
        messages.append(f"nu={nus[i].item()!r} (grid_size={grid_size}): {dfx.RESULTS[result]}")
    return messages


def burgers_reference_solution(
    nu: Real[ArrayLike, "..."] | float,
    x: Real[ArrayLike, "..."] | None = None,
    t: Real[ArrayLike, "..."] | None = None,
    *,
    grid_size: int | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    t_final: float = 1.0,
) -> Float[Array, "nt nx"] | Float[Array, "B nt nx"]:
    """The numerical reference solution of the Burgers family on a grid, in float64,
    with [`metapinn.SpectralBurgersSolver`][] (about 1e-7 relative L2 error against
    the exact solution at the default settings).

    Convention: `u[i, j] = u(x[j], t[i])`, shape `(len(t), len(x))`; with a batch of
    viscosities `u[b, i, j] = u(x[j], t[i]; nu[b])`. [`metapinn.grid_points`][] gives
    the matching `(x, t)` rows of `u.reshape(-1)`.

    With concrete inputs, invalid values raise `ValueError` naming them, and a batch
    is solved with one vmapped solve per grid size (`throw=False`), after which any
    failed viscosity is reported by name. It also works under `jax.jit`/`jax.vmap`
    with a traced `nu`, but then `grid_size` must be given, value checks use
    `eqx.error_if`, and a failed solve in a batch raises without naming the `nu`.

    For repeated use, [`metapinn.cached_burgers_reference`][] stores results on disk.

    **Arguments:**

    - `nu`: the viscosity, a scalar or a 1-D batch (each > 0).
    - `x`: strictly increasing positions in `[-1, 1]`; default: the 256 points of
      [`metapinn.AbstractPDE.standard_grid`][].
    - `t`: strictly increasing times in `[0, t_final]`; default: the 101 times of
      the standard grid.
    - `grid_size`: collocation points `M`; default: per viscosity,
      [`metapinn.burgers_grid_size`][]`(nu)`.
    - `rtol`, `atol`, `max_steps`, `t_final`: see [`metapinn.SpectralBurgersSolver`][].

    **Returns:** `u`, float64, of shape `(len(t), len(x))`, or `(B, len(t), len(x))`
    for a batch of `B` viscosities.

    **Raises:** `ValueError` for invalid input (naming the bad value when it is
    concrete); `RuntimeError` if float64 is not enabled or a solve fails.
    """
    _require_x64()
    standard_x, standard_t = (jnp.asarray(a, jnp.float64) for a in Burgers().standard_axes())
    x = standard_x if x is None else jnp.asarray(x, dtype=jnp.float64)
    t = standard_t if t is None else jnp.asarray(t, dtype=jnp.float64)
    nu = jnp.asarray(nu, dtype=jnp.float64)
    if nu.ndim > 1:
        raise ValueError(f"nu must be a scalar or 1-D; got shape {nu.shape}")
    _check_grid_shapes(x, t)
    x_values, t_values, nu_values = _concrete(x), _concrete(t), _concrete(nu)
    if x_values is not None:
        _check_grid_values("x", x_values, -1.0, 1.0)
    if t_values is not None:
        _check_grid_values("t", t_values, 0.0, float(t_final))
    solver_of = functools.partial(
        SpectralBurgersSolver, rtol=rtol, atol=atol, max_steps=max_steps, t_final=t_final
    )

    if nu_values is None:  # traced: one grid size for all
        if grid_size is None:
            raise ValueError(
                "grid_size must be given when nu is traced (under jit, vmap or grad); "
                "e.g. grid_size=burgers_grid_size(min_nu)"
            )
        solver = solver_of(grid_size)
        if nu.ndim == 0:
            return _solve_one(solver, nu, x, t).u
        sol = _solve_batch(solver, nu, x, t)
        failed = jnp.any(sol.result != dfx.RESULTS.successful)
        return eqx.error_if(sol.u, failed, "the reference solve failed for some nu")

    _check_viscosities(nu_values)
    if nu.ndim == 0:
        size = burgers_grid_size(nu_values.item()) if grid_size is None else grid_size
        return _solve_concrete(solver_of(size), nu_values.item(), x, t)

    sizes = [burgers_grid_size(v) if grid_size is None else grid_size for v in nu_values]
    u: list[Array | None] = [None] * len(sizes)
    failures = []
    for size in sorted(set(sizes)):
        index = [i for i, s in enumerate(sizes) if s == size]
        group = nu_values[index]
        solver = solver_of(size)
        if len(index) == 1:  # unbatched: shares its compilation with scalar calls
            u[index[0]] = _solve_concrete(solver, group[0].item(), x, t)
            continue
        sol = _solve_batch(solver, jnp.asarray(group), x, t)
        failures += _failures(group, sol, size)
        for row, i in enumerate(index):
            u[i] = sol.u[row]
    if failures:
        raise RuntimeError("the Burgers reference solve failed for " + "; ".join(failures))
    if not u:
        return jnp.zeros((0, t.shape[0], x.shape[0]), jnp.float64)
    return jnp.stack(cast(list[Array], u))  # every entry is filled above
