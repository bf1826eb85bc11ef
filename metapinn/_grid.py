"""A grid `x × t` as collocation points, in the order in which reference solutions are
flattened. (The evaluation grid itself is each family's:
[`metapinn.AbstractPDE.standard_axes`][].)"""

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, Real


def grid_points(
    x: Real[ArrayLike, "..."], t: Real[ArrayLike, "..."], dtype=None
) -> Float[Array, "n 2"]:
    """The grid `x × t` as collocation points, in the order in which reference
    solutions are flattened: row `i * len(x) + j` is `(x[j], t[i])`, so for
    `u = burgers_reference_solution(nu, x, t)`, `u.reshape(-1)[k]` is the value at row `k`
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
