"""Few-shot evaluation: adapt initialisations to held-out tasks in ONE scan per run,
recording the parameters at chosen step counts, then measure them against the truth.

[`metapinn.adapt`][] can return every intermediate parameter set; for a 1000-step
curve read at eight step counts that is 125 times more memory than needed, so
[`metapinn.adapt_recording`][] runs the same optimiser loop and keeps only the step
counts asked for, in a buffer carried through the scan.
"""

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float, Int, PyTree

from ._checks import checked
from ._custom_types import Params, Points, Static
from ._loss import AbstractLoss
from ._meta._adapters import AbstractAdapter, as_adapter
from ._meta._base import LossFn
from ._metrics import max_abs_error, relative_l2_error, rms_residual
from ._pde._base import AbstractPDE


def _check_record_steps(steps: Sequence[int]) -> tuple[int, ...]:
    steps = tuple(steps)
    if not steps:
        raise ValueError("give at least one step count to record")
    for k in steps:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"step counts must be integers >= 0, got {k!r}")
    if list(steps) != sorted(set(steps)):
        raise ValueError(f"step counts must be strictly increasing, got {list(steps)}")
    return steps


class FewShotTrace(eqx.Module):
    """The record of adapting from an initialisation.

    Leading axes (none for one run; `(I, N)` from [`metapinn.few_shot`][]) come first.

    **Fields:** `steps`, `params`, `losses` and `curve`, documented below.
    """

    steps: tuple[int, ...] = eqx.field(static=True)
    """The recorded step counts `k`."""
    params: Params
    """The parameters after each recorded `k`: every leaf has an axis `len(steps)`
    after the leading axes."""
    losses: Float[Array, "*batch n_steps"]
    """The loss at each recorded `k`."""
    curve: Float[Array, "*batch n_curve"]
    """The loss after every step `0, 1, ..., max(steps)`."""


def adapt_recording(
    params: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    batch: PyTree,
    *,
    steps: Sequence[int],
    optimizer: AbstractAdapter | optax.GradientTransformation | float,
) -> FewShotTrace:
    r"""Adapt `params` to one task with `optimizer` for `max(steps)` steps (ONE
    `lax.scan`), keeping the parameters after each step count in `steps`.

    **Arguments:**

    - `params`, `static`: the halves of `eqx.partition(pinn, eqx.is_inexact_array)`.
    - `loss_fn`: `loss_fn(model, task, batch) -> scalar`.
    - `task`, `batch`: one task and its collocation points.
    - `steps`: strictly increasing step counts to record, e.g. `(0, 10, 100, 1000)`;
      `0` records the initialisation itself.
    - `optimizer`: the adapter: an optax transformation, e.g. `optax.adam(1e-3)`, or
      one with a learning-rate schedule (its step count starts from zero: a fresh
      state), or any [`metapinn.AbstractAdapter`][] (e.g. [`metapinn.GaussNewton`][]).

    **Returns:** a [`metapinn.FewShotTrace`][] without leading axes.

    The gradient is the loss's own `value_and_grad` when it is an
    [`metapinn.AbstractLoss`][], otherwise reverse-mode AD.

    **Raises:** `ValueError` for step counts that are negative or not increasing.
    """
    steps = _check_record_steps(steps)
    total = steps[-1]
    record = jnp.asarray(steps, dtype=jnp.int32)

    def loss_of(p):
        return loss_fn(eqx.combine(p, static), task, batch)

    def keep(buffer, p, done):
        hit = record == done
        return jax.tree_util.tree_map(
            lambda buf, leaf: jnp.where(hit.reshape((-1,) + (1,) * leaf.ndim), leaf[None], buf),
            buffer,
            p,
        )

    adapter = as_adapter(optimizer)

    def body(carry, i):
        p, state, buffer = carry
        # For a first-order adapter, the loss's own gradient (for a PINNLoss, the
        # hand-written adjoint of the jet: 1.8x faster on a W3 few-shot scan than
        # reverse mode through it).
        p, state, loss = adapter.step(p, state, static, loss_fn, task, batch)
        return (p, state, keep(buffer, p, i + 1)), loss

    buffer = jax.tree_util.tree_map(lambda leaf: jnp.stack([leaf] * len(steps)), params)
    init = (params, adapter.init(params, static, loss_fn, task, batch), buffer)
    (final, _, buffer), curve = jax.lax.scan(body, init, jnp.arange(total, dtype=jnp.int32))
    curve = jnp.concatenate([curve, loss_of(final)[None]])
    if isinstance(loss_fn, AbstractLoss):
        curve = checked(loss_fn, task, curve)  # the task, once, outside the loop
    return FewShotTrace(steps=steps, params=buffer, losses=curve[record], curve=curve)


@eqx.filter_jit
def few_shot(
    inits: Params,
    static: Static,
    loss_fn: LossFn,
    tasks: PyTree,
    batch: PyTree,
    *,
    steps: Sequence[int],
    optimizer: AbstractAdapter | optax.GradientTransformation | float,
    per_task_inits: bool = False,
    at_once: int | None = 1,
    mesh: Mesh | None = None,
) -> FewShotTrace:
    """[`metapinn.adapt_recording`][] for every initialisation on every task, under one
    `jit`.

    **Arguments:**

    - `inits`: stacked initialisations, every leaf with a leading axis `I`; with
      `per_task_inits`, axes `(I, N)`: `inits[i, n]` adapts to task `n` only (e.g. a
      PINN trained on the training task nearest to each held-out one).
    - `tasks`: stacked held-out tasks, every leaf with a leading axis `N` (e.g.
      `BurgersTask(test_nus)`).
    - `at_once`: how many of the `I * N` adaptations run vmapped together, the groups
      one after another (`lax.map`); `None`: all together. One at a time is the
      default: on W3 (20 adaptations, 2 CPU cores) a step took 7.8 ms against 15.5 ms
      with all of them vmapped.
    - `mesh`: a one-axis device mesh (e.g. [`metapinn.task_mesh`][]) to spread the
      `I * N` independent adaptations over, an equal share per device (`jax.shard_map`;
      the last adaptation repeated to fill the shares, its copies dropped); `at_once`
      then applies within each device's share. Default `None`: one device.
    - the rest as for [`metapinn.adapt_recording`][]; the same `batch` serves all.

    **Returns:** a [`metapinn.FewShotTrace`][] with leading axes `(I, N)`.

    **Raises:** `ValueError` for an `at_once` that is not a positive integer or `None`,
    or a mesh with more than one axis.
    """
    if at_once is not None and (isinstance(at_once, bool) or not isinstance(at_once, int)
                                or at_once < 1):  # fmt: skip
        raise ValueError(f"at_once must be a positive integer or None, got {at_once!r}")
    if mesh is not None and len(mesh.axis_names) != 1:
        raise ValueError(f"few_shot spreads over a one-axis mesh, got axes {mesh.axis_names}")
    n_tasks = jax.tree_util.tree_leaves(tasks)[0].shape[0]
    n_inits = jax.tree_util.tree_leaves(inits)[0].shape[0]

    def run(flat, index, tasks, batch):
        def one(args):
            p, n = args
            task = jax.tree_util.tree_map(lambda x: x[n], tasks)
            return adapt_recording(
                p, static, loss_fn, task, batch, steps=steps, optimizer=optimizer
            )

        if at_once is None:
            return jax.vmap(one)((flat, index))
        if at_once == 1:
            return jax.lax.map(one, (flat, index))
        return jax.lax.map(one, (flat, index), batch_size=min(at_once, index.shape[0]))

    # Every (init, task) pair as one flat axis, init-major.
    if per_task_inits:
        flat = jax.tree_util.tree_map(lambda x: x.reshape((-1,) + x.shape[2:]), inits)
    else:
        flat = jax.tree_util.tree_map(lambda x: jnp.repeat(x, n_tasks, axis=0), inits)
    index = jnp.tile(jnp.arange(n_tasks), n_inits)
    total = n_inits * n_tasks
    if mesh is None or mesh.size == 1:
        trace = run(flat, index, tasks, batch)
    else:
        padded = -(-total // mesh.size) * mesh.size

        def fill(x):
            return jnp.concatenate([x, jnp.repeat(x[-1:], padded - total, axis=0)])

        flat, index = jax.tree_util.tree_map(fill, (flat, index))
        split = PartitionSpec(mesh.axis_names[0])
        trace = jax.shard_map(
            run,
            mesh=mesh,
            in_specs=(split, split, PartitionSpec(), PartitionSpec()),
            out_specs=split,
            check_vma=False,
        )(flat, index, tasks, batch)
        trace = jax.tree_util.tree_map(lambda x: x[:total], trace)
    return jax.tree_util.tree_map(lambda x: x.reshape((n_inits, n_tasks) + x.shape[1:]), trace)


class FieldMetrics(eqx.Module):
    """Accuracy of PINN fields on a grid, each array over the same leading axes.

    **Fields:** `rel_l2`, `max_abs` and `rms_residual`, documented below.
    """

    rel_l2: Float[Array, "..."]
    r"""Relative L2 error $\lVert u - u_\text{ref}\rVert_2 / \lVert u_\text{ref}\rVert_2$."""
    max_abs: Float[Array, "..."]
    """Largest absolute error."""
    rms_residual: Float[Array, "..."]
    """Root-mean-square PDE residual at the grid points."""


@eqx.filter_jit
def field_metrics(
    params: Params,
    static: Static,
    pde: AbstractPDE,
    tasks: PyTree,
    task_index: Int[Array, " m"],
    points: Points,
    u_ref: Float[Array, "N n"],
    residual_points: Float[Array, "r 2"],
    *,
    batch_size: int = 4,
) -> FieldMetrics:
    """Errors of `m` parameter sets against reference fields, a few sets at a time
    (`lax.map`), so that memory stays that of `batch_size` fields.

    **Arguments:**

    - `params`: `m` stacked parameter sets (leading axis `m` on every leaf).
    - `static`: the other half of the PINN.
    - `pde`, `tasks`: the PDE family and the `N` stacked tasks.
    - `task_index`: which task each parameter set belongs to.
    - `points`: the grid, `(n, 2)`; `u_ref`: the reference on it for each task (the
      errors are computed in the wider of its dtype and the PINN's).
    - `residual_points`: where the RMS residual is taken (e.g. a sub-grid: the
      residual needs second derivatives, five times the cost of `u` alone).
    - `batch_size`: parameter sets per group of `lax.map` (keyword only; default 4).

    **Returns:** a [`metapinn.FieldMetrics`][] with leading axis `m`.

    **Raises:** `ValueError` at trace time if `points` or `residual_points` is not
    `(n, 2)` with `n >= 1`, or a row of `u_ref` does not have shape `(n,)`; via
    `eqx.error_if`, for a row of `u_ref` that is identically zero or a task that fails
    `pde.check_task`.
    """

    def one(args):
        p, i = args
        pinn = eqx.combine(p, static)
        task = jax.tree_util.tree_map(lambda x: x[i], tasks)
        u = pinn(points)
        return (
            relative_l2_error(u, u_ref[i]),
            max_abs_error(u, u_ref[i]),
            rms_residual(pinn, pde, task, residual_points),
        )

    rel, mx, rms = jax.lax.map(one, (params, task_index), batch_size=batch_size)
    return FieldMetrics(rel_l2=rel, max_abs=mx, rms_residual=rms)


@eqx.filter_jit
def pinn_field(params: Params, static: Static, points: Points) -> Float[Array, " n"]:
    """The PINN's `u` at `points`."""
    return eqx.combine(params, static)(points)
