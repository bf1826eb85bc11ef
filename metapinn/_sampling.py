"""Pure collocation samplers: every sample is a function of an explicit PRNG key."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._pde._base import AbstractPDE
from ._pinn import check_points


class CollocationBatch(eqx.Module):
    """Points where the physics-informed loss is evaluated, each of shape `(n, 2)`.

    **Fields:**

    - `interior`: points in the space-time domain (PDE residual).
    - `initial`: points on `t = t_min` (initial condition).
    - `boundary`: points on `x = x_min`, then as many on `x = x_max` (Dirichlet
      condition; for a periodic family, the same times on both sides).

    A batch with a leading task axis, `(B, n, 2)`, gives each task its own points.

    **Raises:** `ValueError` on construction unless the three fields are all `(n, 2)`
    (each its own `n`) or all `(B, n, 2)` with one `B`.
    """

    interior: Float[Array, "*tasks n_interior 2"]
    initial: Float[Array, "*tasks n_initial 2"]
    boundary: Float[Array, "*tasks n_boundary 2"]

    def __check_init__(self):
        for name in ("interior", "initial", "boundary"):
            shape = jnp.shape(getattr(self, name))
            if len(shape) not in (2, 3) or shape[-1] != 2:
                raise ValueError(
                    f"CollocationBatch.{name} must have shape (n, 2) or (B, n, 2); "
                    f"got shape {shape}"
                )
        ndims = {jnp.ndim(getattr(self, n)) for n in ("interior", "initial", "boundary")}
        if len(ndims) != 1:
            raise ValueError(
                "CollocationBatch fields must all be (n, 2) or all be (B, n, 2); got "
                f"{self.interior.shape}, {self.initial.shape}, {self.boundary.shape}"
            )
        sizes = {jnp.shape(getattr(self, n))[0] for n in ("interior", "initial", "boundary")}
        if ndims == {3} and len(sizes) != 1:
            raise ValueError(
                "CollocationBatch per-task fields must share the task axis B; got "
                f"{self.interior.shape}, {self.initial.shape}, {self.boundary.shape}"
            )

    @property
    def task_batch_size(self) -> int | None:
        """`B` for per-task point sets `(B, n, 2)`; `None` for one shared set."""
        return self.interior.shape[0] if self.interior.ndim == 3 else None


def _check_count(name: str, n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"{name} must be a positive integer, got {n!r}")


def sample_collocation(
    key: PRNGKeyArray,
    pde: AbstractPDE,
    n_interior: int = 200,
    n_initial: int = 50,
    n_boundary: int = 20,
    dtype: DTypeLike | None = None,
) -> CollocationBatch:
    """Uniform random collocation points for `pde`'s space-time domain, drawn in
    `dtype` (so float32 training draws float32 numbers, also with `jax_enable_x64` on).

    **Arguments:**

    - `key`: PRNG key; the same key gives the same points.
    - `pde`: supplies the domain.
    - `n_interior`: points inside the domain (W1: 200).
    - `n_initial`: points on the initial line (W1: 50).
    - `n_boundary`: points on *each* spatial boundary (W1: 20, so 40 in all).
    - `dtype`: a floating-point dtype; default `None`, the default float dtype.

    **Returns:** a [`metapinn.CollocationBatch`][] in `dtype`.

    **Raises:** `ValueError` for a count that is not a positive integer, or a `dtype`
    that is not floating-point.
    """
    _check_count("n_interior", n_interior)
    _check_count("n_initial", n_initial)
    _check_count("n_boundary", n_boundary)
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"collocation points need a floating-point dtype, got {dtype}")
    k_in, k_ic, k_bc = jr.split(key, 3)
    x_min, x_max, t_min, t_max = (
        jnp.asarray(v, dtype) for v in (pde.x_min, pde.x_max, pde.t_min, pde.t_max)
    )
    lo, hi = jnp.stack([x_min, t_min]), jnp.stack([x_max, t_max])
    interior = jr.uniform(k_in, (n_interior, 2), dtype, minval=lo, maxval=hi)
    x0 = jr.uniform(k_ic, (n_initial,), dtype, minval=x_min, maxval=x_max)
    initial = jnp.stack([x0, jnp.full_like(x0, pde.t_min)], axis=1)
    if pde.periodic:  # pairs (x_min, t), (x_max, t): the periodic jump is compared there
        tb = jr.uniform(k_bc, (1, n_boundary), dtype, minval=t_min, maxval=t_max)
        tb = jnp.concatenate([tb, tb])
    else:
        tb = jr.uniform(k_bc, (2, n_boundary), dtype, minval=t_min, maxval=t_max)
    xb = jnp.stack([jnp.full((n_boundary,), pde.x_min, dtype),
                    jnp.full((n_boundary,), pde.x_max, dtype)])  # fmt: skip
    boundary = jnp.stack([xb.ravel(), tb.ravel()], axis=1)
    batch = CollocationBatch(interior, initial, boundary)
    for name in ("interior", "initial", "boundary"):
        check_points(getattr(batch, name), name)
    return batch
