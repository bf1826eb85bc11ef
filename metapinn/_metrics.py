"""Accuracy metrics of a PINN against a reference solution (docs/design.md §5)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, PyTree, Real

from ._custom_types import Points, Scalar
from ._grid import grid_points
from ._pde._base import AbstractPDE
from ._pinn import AbstractPINN, check_points


def _wider_float(*dtypes) -> np.dtype:
    """The widest floating dtype among `dtypes` (non-floats count as the default float).

    Chosen explicitly so that float32 predictions can be compared with a float64
    reference under `jax_numpy_dtype_promotion="strict"`.
    """
    default = jnp.zeros(()).dtype
    floats = [np.dtype(d) if jnp.issubdtype(d, jnp.floating) else default for d in dtypes]
    return max(floats, key=lambda d: d.itemsize)


def _as_pair(u_pred, u_ref, name: str) -> tuple[Array, Array]:
    u_pred, u_ref = jnp.asarray(u_pred), jnp.asarray(u_ref)
    if u_pred.shape != u_ref.shape:
        raise ValueError(
            f"{name}: u_pred and u_ref must have the same shape; got u_pred of shape "
            f"{u_pred.shape} and u_ref of shape {u_ref.shape}"
        )
    dtype = _wider_float(u_pred.dtype, u_ref.dtype)
    return u_pred.astype(dtype), u_ref.astype(dtype)


def relative_l2_error(u_pred: Real[ArrayLike, "..."], u_ref: Real[ArrayLike, "..."]) -> Scalar:
    r"""The relative L2 error $\lVert u_\text{pred} - u_\text{ref}\rVert_2 /
    \lVert u_\text{ref}\rVert_2$, the norms taken over all entries.

    For one number per task of a batch, `jax.vmap` over the task axis.

    **Arguments:** `u_pred`, `u_ref`: arrays of the same shape (any dtypes; computed
    in the wider one).

    **Returns:** a scalar.

    **Raises:** `ValueError` if the shapes differ; under JIT (`eqx.error_if`) if
    `u_ref` is identically zero.
    """
    u_pred, u_ref = _as_pair(u_pred, u_ref, "relative_l2_error")
    ref_norm = jnp.linalg.norm(u_ref.reshape(-1))
    ref_norm = eqx.error_if(ref_norm, ref_norm == 0, "relative_l2_error: u_ref is identically zero")
    return jnp.linalg.norm((u_pred - u_ref).reshape(-1)) / ref_norm


def max_abs_error(u_pred: Real[ArrayLike, "..."], u_ref: Real[ArrayLike, "..."]) -> Scalar:
    """The largest absolute difference, `max |u_pred - u_ref|`.

    **Arguments:** `u_pred`, `u_ref`: non-empty arrays of the same shape.

    **Returns:** a scalar.

    **Raises:** `ValueError` if the shapes differ or the arrays are empty.
    """
    u_pred, u_ref = _as_pair(u_pred, u_ref, "max_abs_error")
    if u_ref.size == 0:
        raise ValueError("max_abs_error: u_pred and u_ref are empty")
    return jnp.max(jnp.abs(u_pred - u_ref))


def _pinn_dtype(pinn: AbstractPINN) -> np.dtype:
    leaves = jax.tree_util.tree_leaves(eqx.filter(pinn, eqx.is_inexact_array))
    return np.dtype(leaves[0].dtype) if leaves else np.dtype(jnp.zeros(()).dtype)


def _cast_floats(tree: PyTree, dtype: np.dtype) -> PyTree:
    return jax.tree_util.tree_map(
        lambda leaf: leaf.astype(dtype) if eqx.is_inexact_array(leaf) else leaf, tree
    )


@eqx.filter_jit
def rms_residual(pinn: AbstractPINN, pde: AbstractPDE, task: PyTree, points: Points) -> Scalar:
    r"""The root-mean-square PDE residual $\sqrt{\overline{r(x_i, t_i)^2}}$ of a PINN
    at the given points.

    The points and the task's floating arrays are cast to the PINN's parameter dtype
    first, so a float32 network can be checked with a float64 grid and task.

    **Arguments:**

    - `pinn`: the network.
    - `pde`: the PDE family, e.g. [`metapinn.Burgers`][].
    - `task`: one task of it, e.g. `BurgersTask(nu)` with a scalar `nu`.
    - `points`: collocation points, shape `(n, 2)`, columns `(x, t)`.

    **Returns:** a scalar.

    **Raises:** `ValueError` unless `points` has shape `(n, 2)` with `n >= 1`; via
    `eqx.error_if`, for a task that fails `pde.check_task`.
    """
    check_points(points)
    if points.shape[0] == 0:
        raise ValueError("rms_residual needs at least one point; got shape (0, 2)")
    dtype = _pinn_dtype(pinn)
    points = jnp.asarray(points, dtype=dtype)
    task = _cast_floats(task, dtype)
    residual = pde.residual(pinn.derivatives(points, pde.jet_needs[0]), task)
    return pde.check_task(task, jnp.sqrt(jnp.mean(residual**2)))


class ErrorReport(eqx.Module):
    """The accuracy of a PINN on a grid (docs/design.md §5); see [`metapinn.evaluate_pinn`][].

    **Fields:** `rel_l2`, `max_abs` and `rms_residual`, documented below.
    """

    rel_l2: Scalar
    r"""$\lVert u_\text{PINN} - u_\text{ref}\rVert_2 / \lVert u_\text{ref}\rVert_2$."""
    max_abs: Scalar
    """The largest absolute error on the grid."""
    rms_residual: Scalar
    """The root-mean-square PDE residual at the grid points."""


@eqx.filter_jit
def evaluate_pinn(
    pinn: AbstractPINN,
    pde: AbstractPDE,
    task: PyTree,
    x: Real[ArrayLike, "..."],
    t: Real[ArrayLike, "..."],
    u_ref: Real[ArrayLike, "..."],
) -> ErrorReport:
    """Evaluate a PINN on the grid `x × t` against a reference solution there.

    Typical use, on the standard grid:

    ```python
    x, t = metapinn.Burgers().standard_grid()
    u_ref = metapinn.cached_burgers_reference(nu, x, t)
    report = metapinn.evaluate_pinn(pinn, metapinn.Burgers(), BurgersTask(nu), x, t, u_ref)
    ```

    The network runs in its own parameter dtype (the grid and task are cast to it);
    the errors are computed in the wider of its dtype and `u_ref`'s.

    **Arguments:**

    - `pinn`, `pde`, `task`: as for [`metapinn.rms_residual`][].
    - `x`, `t`: 1-D grids.
    - `u_ref`: the reference with `u_ref[i, j] = u(x[j], t[i])`, shape
      `(len(t), len(x))` (the convention of [`metapinn.burgers_reference_solution`][]).

    **Returns:** an [`metapinn.ErrorReport`][].

    **Raises:** `ValueError` if `x` or `t` is not 1-D or `u_ref` does not have shape
    `(len(t), len(x))`; via `eqx.error_if`, for a `u_ref` that is identically zero or
    a task that fails `pde.check_task`.
    """
    points = grid_points(x, t, dtype=_pinn_dtype(pinn))
    u_ref = jnp.asarray(u_ref)
    shape = (jnp.shape(t)[0], jnp.shape(x)[0])
    if u_ref.shape != shape:
        raise ValueError(
            f"u_ref must have shape (len(t), len(x)) = {shape}; got shape {u_ref.shape}"
        )
    derivs = pinn.derivatives(points, pde.jet_needs[0])
    u_pred = derivs.u.reshape(shape)
    task = _cast_floats(task, points.dtype)
    residual = pde.residual(derivs, task)
    report = ErrorReport(
        rel_l2=relative_l2_error(u_pred, u_ref),
        max_abs=max_abs_error(u_pred, u_ref),
        rms_residual=jnp.sqrt(jnp.mean(residual**2)),
    )
    return pde.check_task(task, report)
