"""The evaluation grid of the accuracy protocol (docs/design.md §5) and the grid as
collocation points, in the order in which reference solutions are flattened."""

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Real


# The standard grid, made by NumPy in float64 so that it is the same bits (and so the
# same cache keys) with or without `jax_enable_x64`.
_STANDARD_X = np.linspace(-1.0, 1.0, 256)
_STANDARD_T = np.linspace(0.0, 1.0, 101)


def standard_grid() -> tuple[Float[Array, " 256"], Float[Array, " 101"]]:
    """The evaluation grid of the accuracy protocol (docs/design.md §5).

    **Returns:** `(x, t)`: 256 points from -1 to 1 and 101 times from 0 to 1, both
    ends included, in the default float dtype.
    """
    dtype = jnp.zeros(()).dtype
    return jnp.asarray(_STANDARD_X, dtype=dtype), jnp.asarray(_STANDARD_T, dtype=dtype)


def grid_points(
    x: Real[ArrayLike, "..."], t: Real[ArrayLike, "..."], dtype=None
) -> Float[Array, "n 2"]:
    """The grid `x × t` as collocation points, in the order in which reference
    solutions are flattened: row `i * len(x) + j` is `(x[j], t[i])`, so for
    `u = reference_solution(nu, x, t)`, `u.reshape(-1)[k]` is the value at row `k`
    and `pinn(grid_points(x, t)).reshape(len(t), len(x))` lines up with `u`.

    **Arguments:**

    - `x`, `t`: 1-D arrays.
    - `dtype`: the dtype of the result; defaults to the default float dtype (pass the
      PINN's own dtype, e.g. `jnp.float32`, to evaluate a float32 network).

    **Returns:** an array of shape `(len(t) * len(x), 2)`, columns `(x, t)`.

    **Raises:** `ValueError` unless `x` and `t` are 1-D.
    """
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    x = jnp.asarray(x, dtype=dtype)
    t = jnp.asarray(t, dtype=dtype)
    if x.ndim != 1 or t.ndim != 1:
        raise ValueError(f"x and t must be 1-D; got shapes {x.shape} and {t.shape}")
    shape = (t.shape[0], x.shape[0])
    xs = jnp.broadcast_to(x[None, :], shape).reshape(-1)
    ts = jnp.broadcast_to(t[:, None], shape).reshape(-1)
    return jnp.stack([xs, ts], axis=1)
