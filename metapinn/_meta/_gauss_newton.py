r"""Gauss–Newton / Levenberg–Marquardt adaptation on a loss's residual vector."""

import functools
import operator
from collections.abc import Callable

import equinox as eqx
import jax
import jax.flatten_util as jfu
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._custom_types import Params, Scalar
from ._adapters import AbstractAdapter, _check_int, _check_positive


_SOLVERS = ("cg", "dense")
_PRECONDITIONERS = ("none", "jacobi")


def _dot(x: PyTree, y: PyTree) -> Scalar:
    """The sum of `vdot` over the leaves, in the leaves' own dtype."""
    return functools.reduce(
        operator.add,
        [jnp.vdot(a, b) for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y), strict=True)],
    )


def conjugate_gradient(
    matvec: Callable[[PyTree], PyTree],
    rhs: PyTree,
    start: PyTree,
    *,
    steps: int,
    rtol: float = 0.0,
    atol: float = 0.0,
    preconditioner: Callable[[PyTree], PyTree] | None = None,
) -> PyTree:
    r"""Conjugate gradients (Hestenes & Stiefel 1952) for $Ax = b$, $A$ symmetric
    positive definite, on pytrees: at most `steps` iterations from `start`, stopping
    once $\lVert b - Ax\rVert \le$ `atol` $+$ `rtol` $\lVert b\rVert$ (2-norms), or
    at a direction of no positive curvature ($p^\top A p \le 0$: the iterate so far
    is returned).

    With a `preconditioner` $v \mapsto M^{-1}v$ ($M$ symmetric positive definite,
    $M \approx A$) it is preconditioned CG: the same iteration on the residuals
    $z = M^{-1}r$, in $\sqrt{\kappa(M^{-1}A)}$ rather than $\sqrt{\kappa(A)}$
    iterations to a given accuracy; the stopping rule still reads $\lVert r\rVert$.

    With `rtol = atol = 0` the loop has a fixed length (`lax.fori_loop`), so reverse
    mode goes through it; otherwise it is a `lax.while_loop`, which stops early and
    supports forward mode only.

    Written here rather than taken from `lineax.CG`: lineax declares a breakdown once
    $|p^\top A p| \le 100\, \varepsilon\, n\, \gamma$, which in float32 at $n$ in the
    ten thousands (a W3 network) is hit after three iterations of a healthy damped
    Gauss–Newton system (measured: $p^\top Ap / \gamma \approx 0.02$ at
    $\lambda = 10^{-3}$, against a threshold of 0.15), turning the solve into NaN.
    """
    precondition = (lambda v: v) if preconditioner is None else preconditioner
    residual = jtu.tree_map(jnp.subtract, rhs, matvec(start))
    z = precondition(residual)
    gamma = _dot(residual, z)  # r^T M^-1 r (= |r|^2 without a preconditioner)
    size = _dot(rhs, rhs)
    target = (rtol**2) * size if atol == 0 else (atol + rtol * jnp.sqrt(size)) ** 2

    def body(carry):
        k, x, r, p, gamma, norm, ok = carry
        ap = matvec(p)
        curvature = _dot(p, ap)
        ok = ok & (curvature > 0)  # after a breakdown the iterate stays
        alpha = jnp.where(ok, gamma / jnp.where(ok, curvature, 1.0), 0.0)
        x = jtu.tree_map(lambda a, b: a + alpha * b, x, p)
        r = jtu.tree_map(lambda a, b: a - alpha * b, r, ap)
        z = precondition(r)
        new_gamma = _dot(r, z)
        new_norm = new_gamma if preconditioner is None else _dot(r, r)
        beta = jnp.where(ok, new_gamma / jnp.where(gamma > 0, gamma, 1.0), 0.0)
        p = jtu.tree_map(lambda a, b: a + beta * b, z, p)
        return (
            k + 1, x, r, p, jnp.where(ok, new_gamma, gamma), jnp.where(ok, new_norm, norm), ok
        )  # fmt: skip

    norm = gamma if preconditioner is None else _dot(residual, residual)
    carry = (jnp.asarray(0), start, residual, z, gamma, norm, jnp.asarray(True))
    if rtol == 0 and atol == 0:
        carry = jax.lax.fori_loop(0, steps, lambda _, c: body(c), carry)
    else:

        def proceed(carry):
            k, _, _, _, _, norm, ok = carry
            return (k < steps) & (norm > target) & ok

        carry = jax.lax.while_loop(proceed, body, carry)
    return carry[1]


class GaussNewtonState(eqx.Module):
    """The state of [`metapinn.GaussNewton`][] between steps.

    **Fields:** `damping` ($\\lambda$), `growth` ($\\nu$, the factor a rejected step
    multiplies $\\lambda$ by), `direction` (the last step $\\delta$, CG's warm start) and
    `accepted` (whether the last step was taken).
    """

    damping: Scalar
    growth: Scalar
    direction: Params
    accepted: Array


class GaussNewton(AbstractAdapter):
    r"""Levenberg–Marquardt on the loss's residual vector $r(\phi)$,
    $\mathcal{L} = \lVert r\rVert^2$ (an [`metapinn.AbstractLoss`][] with `residuals`,
    e.g. [`metapinn.PINNLoss`][]; Levenberg 1944, Marquardt 1963).

    Each step linearises $r$ at $\phi$ ($J = \partial r / \partial\phi$) and solves

    $$(J^\top J + \lambda I)\,\delta = -J^\top r,$$

    the minimiser of $\lVert r + J\delta\rVert^2 + \lambda\lVert\delta\rVert^2$. With
    `adaptive` (default) the step is taken only if the loss falls, and $\lambda$
    follows the gain ratio $\rho = (\mathcal{L}(\phi) - \mathcal{L}(\phi + \delta)) /
    (\mathcal{L}(\phi) - \lVert r + J\delta\rVert^2)$ (Nielsen 1999): accepted,
    $\lambda \leftarrow \lambda \max(1/3, 1 - (2\rho - 1)^3)$, $\nu \leftarrow 2$;
    rejected, $\lambda \leftarrow \nu\lambda$, $\nu \leftarrow 2\nu$. The loss then never
    rises. Without it every step is taken at the fixed $\lambda$ (damped Gauss–Newton;
    $\lambda = 0$ is Gauss–Newton itself).

    Solvers (`solver`):

    - `"cg"` (default), matrix-free: conjugate gradients
      ([`metapinn.conjugate_gradient`][]) on $v \mapsto
      J^\top(Jv) + \lambda v$, with $Jv$ by forward mode through the residual
      (`jax.linearize`, once per step) and $J^\top u$ by reverse mode (`jax.vjp`). At most
      `cg_steps` iterations, each about one gradient's work, started from the previous
      step's $\delta$ (`warm_start`), optionally preconditioned (`preconditioner`).
    - `"dense"`: $J$ materialised (`jax.jacrev` or `jax.jacfwd`, whichever needs fewer
      passes) and the smaller normal form solved by Cholesky: the kernel form
      $\delta = -J^\top (JJ^\top + \lambda I)^{-1} r$ when there are fewer residuals
      $m$ than parameters $n$, else $(J^\top J + \lambda I)^{-1} J^\top r$; at
      $\lambda = 0$, the least-squares solution `lstsq(J, -r)`. It costs
      $\min(m, n)$ derivative passes and $O(mn\min(m,n))$ flops: for few residuals or
      few parameters.

    A step costs one linearisation, the solve, one more product $J\delta$ (for the
    predicted decrease) and one evaluation of the residual at $\phi + \delta$.

    **Fields:** (all static)

    - `damping`: the initial $\lambda$ (default 1e-3; $> 0$ with `adaptive`).
    - `adaptive`: Levenberg–Marquardt's acceptance and $\lambda$ update (default True).
    - `solver`: `"cg"` or `"dense"` (default `"cg"`).
    - `cg_steps`: most CG iterations per step, $\ge 1$ (default 50).
    - `cg_rtol`: CG's relative tolerance on its residual (default 1e-6). With 0, CG
      runs all `cg_steps` in a fixed-length loop, which reverse mode can go through
      (second-order MAML through Gauss–Newton steps); otherwise it may stop early and
      supports forward mode only.
    - `warm_start`: start CG from the previous step (default True).
    - `preconditioner`: `"none"` (default) or `"jacobi"`: CG preconditioned by
      $\operatorname{diag}(J^\top J) + \lambda I$, the diagonal estimated at every step
      from `jacobi_samples` Rademacher probes $z$ as the mean of $(J^\top z)^2$
      (Bekas, Kokiopoulou & Saad 2007: $\mathbb{E}[(J^\top z)^2] =
      \operatorname{diag}(J^\top J)$), one reverse pass each, vmapped, the same
      probes at every step (a fixed key). Martens (2010) preconditions Hessian-free
      optimisation of networks with a diagonal of the same kind, for parameters whose
      scales differ by orders of magnitude between layers. The probes cost about as
      much as 10–15 CG iterations, and on workload A's Burgers network they bought no
      accuracy at a fixed number of iterations (docs/benchmarks.md), so it is off by
      default.
    - `jacobi_samples`: the probes of the Jacobi estimate, $\ge 1$ (default 16).

    **Raises:** `ValueError` on construction naming a bad value (a negative or
    non-finite `damping`, `damping = 0` with `adaptive`, an unknown `solver`,
    `cg_steps < 1`, a negative `cg_rtol`, an unknown `preconditioner`,
    `jacobi_samples < 1`). A step raises `TypeError` if the loss has no
    `residuals`.
    """

    damping: float = eqx.field(static=True, default=1e-3)
    adaptive: bool = eqx.field(static=True, default=True)
    solver: str = eqx.field(static=True, default="cg")
    cg_steps: int = eqx.field(static=True, default=50)
    cg_rtol: float = eqx.field(static=True, default=1e-6)
    warm_start: bool = eqx.field(static=True, default=True)
    preconditioner: str = eqx.field(static=True, default="none")
    jacobi_samples: int = eqx.field(static=True, default=16)

    def __check_init__(self):
        if self.adaptive and self.damping == 0:
            raise ValueError(
                "damping=0 never recovers from a rejected step with adaptive=True "
                "(lambda is multiplied on rejection); give damping > 0, or adaptive=False "
                "for plain Gauss-Newton"
            )
        _check_positive("damping", self.damping, allow_zero=True)
        if self.solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {self.solver!r}")
        _check_int("cg_steps", self.cg_steps, 1)
        _check_positive("cg_rtol", self.cg_rtol, allow_zero=True)
        if self.preconditioner not in _PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be one of {_PRECONDITIONERS}, got {self.preconditioner!r}"
            )
        _check_int("jacobi_samples", self.jacobi_samples, 1)

    @property
    def reverse_differentiable(self) -> bool:
        """Whether reverse mode goes through a step: only with a fixed-length CG
        (`cg_rtol=0`)."""
        return self.cg_rtol == 0

    def init(self, params, static, loss_fn, task, batch) -> GaussNewtonState:
        del static, loss_fn, task, batch
        dtype = jtu.tree_leaves(params)[0].dtype
        return GaussNewtonState(
            damping=jnp.asarray(self.damping, dtype),
            growth=jnp.asarray(2.0, dtype),
            direction=jtu.tree_map(jnp.zeros_like, params),
            accepted=jnp.asarray(True),
        )

    def _solve_cg(self, jvp, vjp, gradient, damping, guess, r) -> Params:
        def matvec(v):
            return jtu.tree_map(lambda a, b: a + damping * b, vjp(jvp(v)), v)

        rhs = jtu.tree_map(jnp.negative, gradient)
        start = guess if self.warm_start else jtu.tree_map(jnp.zeros_like, gradient)
        preconditioner: Callable[[PyTree], PyTree] | None = None
        if self.preconditioner == "jacobi":
            # Differentiable (fixed probes): a truncated CG's step depends on M, so
            # reverse mode through a step must see it.
            diagonal = self._jacobi_diagonal(vjp, r)

            def jacobi(v):
                def scale(a, d):
                    m = d + damping  # 0 only for a column of J that is zero, at damping 0
                    return a / jnp.where(m > 0, m, 1.0)

                return jtu.tree_map(scale, v, diagonal)

            preconditioner = jacobi

        return conjugate_gradient(
            matvec, rhs, start, steps=self.cg_steps, rtol=self.cg_rtol,
            preconditioner=preconditioner,
        )  # fmt: skip

    def _jacobi_diagonal(self, vjp, r) -> Params:
        """diag(J^T J) estimated as the mean of (J^T z)^2 over Rademacher probes z."""
        probes = jax.random.rademacher(
            jax.random.key(0), (self.jacobi_samples, r.shape[0]), dtype=r.dtype
        )
        pulled = jax.vmap(vjp)(probes)
        return jtu.tree_map(lambda g: jnp.mean(g * g, axis=0), pulled)

    def _solve_dense(self, residual_fn, params, r, damping) -> Params:
        flat, unravel = jfu.ravel_pytree(params)
        m, n = r.shape[0], flat.shape[0]

        def flat_residual(x):
            return residual_fn(unravel(x))

        jacobian = (jax.jacrev if m <= n else jax.jacfwd)(flat_residual)(flat)
        if self.damping == 0 and not self.adaptive:
            delta = jnp.linalg.lstsq(jacobian, -r)[0]
        elif m <= n:
            kernel = jacobian @ jacobian.T + damping * jnp.eye(m, dtype=r.dtype)
            delta = -jacobian.T @ jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(kernel), r)
        else:
            normal = jacobian.T @ jacobian + damping * jnp.eye(n, dtype=r.dtype)
            delta = -jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(normal), jacobian.T @ r)
        return unravel(delta)

    def step(self, params, state: GaussNewtonState, static, loss_fn, task, batch):
        residuals = getattr(loss_fn, "residuals", None)
        if residuals is None:
            raise TypeError(
                f"GaussNewton needs a loss with a residual vector (`residuals`); "
                f"{type(loss_fn).__name__} has none"
            )

        def residual_fn(p):
            return residuals(eqx.combine(p, static), task, batch)

        # J v by forward mode on the linearisation, J^T u by reverse mode. (The transpose
        # of the linearisation, `jax.linear_transpose`, would save a forward pass, but
        # reverse mode through it, as second-order MAML needs, gives wrong derivatives.)
        _, jvp = jax.linearize(residual_fn, params)
        r, pullback = jax.vjp(residual_fn, params)

        def vjp(u):
            return pullback(u)[0]

        loss = jnp.sum(r * r)
        damping = state.damping
        if self.solver == "cg":
            delta = self._solve_cg(jvp, vjp, vjp(r), damping, state.direction, r)
        else:
            delta = self._solve_dense(residual_fn, params, r, damping)
        model_residual = r + jvp(delta)
        predicted = loss - jnp.sum(model_residual * model_residual)
        trial = jtu.tree_map(jnp.add, params, delta)
        trial_loss = jnp.sum(residual_fn(trial) ** 2)
        if not self.adaptive:
            new_state = GaussNewtonState(damping, state.growth, delta, jnp.asarray(True))
            return trial, new_state, loss
        # The damping is a heuristic: no derivative goes through its update (a
        # non-finite trial loss would otherwise send NaN into a meta-gradient).
        gain = jax.lax.stop_gradient((loss - trial_loss) / jnp.where(predicted > 0, predicted, 1.0))
        damping = jax.lax.stop_gradient(damping)
        accept = jnp.isfinite(trial_loss) & (predicted > 0) & (trial_loss < loss)
        shrink = jnp.maximum(1 / 3, 1 - (2 * gain - 1) ** 3)
        new_state = GaussNewtonState(
            damping=jnp.where(accept, damping * shrink, damping * state.growth),
            growth=jnp.where(accept, 2.0, 2 * state.growth).astype(state.growth.dtype),
            direction=jtu.tree_map(lambda d: jnp.where(accept, d, jnp.zeros_like(d)), delta),
            accepted=accept,
        )
        params = jtu.tree_map(lambda t, p: jnp.where(accept, t, p), trial, params)
        return params, new_state, loss
