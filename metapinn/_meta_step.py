"""One meta-step: vmap over a batch of tasks, mean, outer optax update, under one JIT."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, PartitionSpec
from jaxtyping import Array, Float, PyTree

from ._checks import checked, task_checks_suspended
from ._custom_types import Params, Scalar, Static
from ._loss import AbstractLoss
from ._meta._base import AbstractMetaLearner, LossFn, optimizer_update


class MetaStepInfo(eqx.Module):
    """Per-task diagnostics from one meta-step (leading axis: the task batch).

    **Fields:** `meta_loss`, `query_loss` and `support_losses`, documented below.
    """

    meta_loss: Scalar
    """The mean over tasks of the meta-objective."""
    query_loss: Float[Array, " B"]
    """Each task's query loss at its adapted parameters."""
    support_losses: Float[Array, "B K"]
    """Each task's support loss before each inner step."""


def _leading_sizes(tree: PyTree) -> set[int]:
    sizes = set()
    for leaf in jax.tree_util.tree_leaves(tree):
        shape = jnp.shape(leaf)
        if len(shape) == 0:
            raise ValueError(
                "every leaf of the task batch needs a leading task axis; got a scalar "
                "leaf (for one task, add an axis: e.g. BurgersTask(jnp.array([nu])))"
            )
        sizes.add(shape[0])
    return sizes


def task_batch_size(tasks: PyTree, *point_sets: PyTree) -> int:
    """The common task-axis size of `tasks` and of any per-task point sets.

    A point set whose `interior` is `(n, 2)` is shared by all tasks; `(B, n, 2)`
    gives each task its own.

    **Raises:** `ValueError` naming the sizes when they disagree.
    """
    sizes = _leading_sizes(tasks)
    if len(sizes) != 1:
        raise ValueError(f"task leaves have different leading sizes {sorted(sizes)}")
    (size,) = sizes
    for name, points in zip(("support", "query"), point_sets, strict=False):
        own = getattr(points, "task_batch_size", None)
        if own is not None and own != size:
            raise ValueError(
                f"the {name} points are batched over {own} tasks but the task batch has {size}"
            )
    return size


def _points_axis(points: PyTree) -> int | None:
    return None if getattr(points, "task_batch_size", None) is None else 0


def meta_objective(
    learner: AbstractMetaLearner,
    params: Params,
    static: Static,
    loss_fn: LossFn,
    tasks: PyTree,
    support: PyTree,
    query: PyTree,
    *,
    tasks_at_once: int | None = None,
) -> tuple[Scalar, MetaStepInfo]:
    r"""The mean over the task batch of `learner`'s per-task meta-objective.

    Its gradient in `params` is the meta-gradient, $\frac1B \sum_b g_b$. Tasks are
    mapped with `jax.vmap` (`tasks_at_once=None`), so the task axis can be sharded
    across devices and the mean becomes an all-reduce; an integer `tasks_at_once`
    maps them with `jax.lax.map` instead, that many at a time (vmapped within; at most
    the whole batch), one group after another: less memory, and on XLA:CPU often
    faster, because a batched matrix product over per-task inputs can run slower there
    than the products one by one.

    **Arguments:**

    - `learner`: a [`metapinn.AbstractMetaLearner`][].
    - `params`, `static`: the halves of `eqx.partition(pinn, eqx.is_inexact_array)`
      (for a learner with learned rates, `params` is its meta-parameters, e.g. a
      [`metapinn.MetaParams`][]).
    - `loss_fn`: `loss_fn(model, task, batch) -> scalar`, e.g. `PINNLoss(Burgers())`.
    - `tasks`: a batch of tasks, every leaf with a leading axis `B`.
    - `support`, `query`: collocation points, shared `(n, 2)` or per task `(B, n, 2)`.
    - `tasks_at_once`: `None` (default) or the size of a group (keyword only).

    **Returns:** `(mean, info)`: the mean meta-objective, a scalar, and a
    [`metapinn.MetaStepInfo`][] whose `meta_loss` is that mean.

    **Raises:** `ValueError` at trace time for a task leaf without a leading axis,
    task leaves or per-task points with different leading sizes, or a `tasks_at_once`
    that is not a positive integer or does not divide the task batch. For an
    [`metapinn.AbstractLoss`][], its `check_task` on the mean (e.g. via
    `eqx.error_if` for an invalid task).
    """
    size = task_batch_size(tasks, support, query)
    if tasks_at_once is not None and (
        isinstance(tasks_at_once, bool) or not isinstance(tasks_at_once, int) or tasks_at_once < 1
    ):
        raise ValueError(f"tasks_at_once must be a positive integer or None, got {tasks_at_once!r}")
    if learner.inner_steps > 0:
        # Each task adapts its own copy of the parameters, so the inner loop's carry is
        # per task anyway; giving the copies a task axis up front spares `vmap` a second
        # batching pass over the scanned loop (a faster trace), and the transpose of the
        # broadcast sums the tasks' meta-gradients as before. With no inner loop the
        # parameters stay shared, so the network's backward pass runs once for the batch.
        params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (size, *x.shape)), params)
    in_axes = (
        0 if learner.inner_steps > 0 else None,
        None,
        None,
        0,
        _points_axis(support),
        _points_axis(query),
    )
    args = (params, static, loss_fn, tasks, support, query)
    if tasks_at_once is None:
        objectives, aux = jax.vmap(learner.meta_loss, in_axes=in_axes)(*args)
    else:
        mapped = tuple(a for a, axis in zip(args, in_axes, strict=True) if axis == 0)

        group = min(tasks_at_once, size)
        if size % group:
            raise ValueError(
                f"a task batch of {size} does not split into groups of tasks_at_once={group}"
            )

        def one(xs):
            it = iter(xs)
            full = [next(it) if axis == 0 else a for a, axis in zip(args, in_axes, strict=True)]
            return jax.vmap(learner.meta_loss, in_axes=in_axes)(*full)

        # Groups of `group` tasks, one after another (explicit reshapes: lax.map's own
        # batching cannot reshape the zero-size support losses of a learner with K = 0).
        grouped = jax.tree_util.tree_map(
            lambda x: x.reshape(size // group, group, *x.shape[1:]), mapped
        )
        objectives, aux = jax.lax.map(one, grouped)
        objectives, aux = jax.tree_util.tree_map(
            lambda x: x.reshape(size, *x.shape[2:]), (objectives, aux)
        )
    mean = jnp.mean(objectives)
    if isinstance(loss_fn, AbstractLoss):
        mean = checked(loss_fn, tasks, mean)  # once for the batch, outside every loop
    return mean, MetaStepInfo(mean, aux.query_loss, aux.support_losses)


def task_mesh(devices: int | None = None) -> Mesh:
    """A one-axis device mesh, axis `"tasks"`, over the first `devices` of
    `jax.devices()` (all of them by default): the mesh [`metapinn.meta_step`][] splits
    the task batch over. On CPU, run [`metapinn.experiment.configure_cpu`][] with
    `host_devices=os.cpu_count()` first, so that there is one device per core.

    **Arguments:** `devices`, the number of devices; default `None`, all of them.

    **Returns:** a `jax.sharding.Mesh` with the one axis `"tasks"`.

    **Raises:** `ValueError` unless `devices` is an integer with
    `1 <= devices <= len(jax.devices())`.
    """
    available = jax.devices()
    if devices is None:
        devices = len(available)
    if (
        isinstance(devices, bool)
        or not isinstance(devices, int)
        or not (1 <= devices <= len(available))
    ):
        raise ValueError(
            f"devices must be an integer from 1 to {len(available)} (the devices JAX "
            f"has), got {devices!r}"
        )
    return Mesh(np.array(available[:devices]), ("tasks",))


def _meta_gradient(
    learner: AbstractMetaLearner,
    params: Params,
    static: Static,
    loss_fn: LossFn,
    tasks: PyTree,
    support: PyTree,
    query: PyTree,
    tasks_to_check: PyTree,
    tasks_at_once: int | None = None,
) -> tuple[Params, MetaStepInfo]:
    """The meta-gradient and diagnostics, with the task checks made once: the per-task
    checks inside the learner are held back while tracing (XLA would drop them with an
    unused `info`), and `tasks_to_check` is checked on (gradient, mean), which every
    use of the step depends on."""
    with task_checks_suspended():
        grad_fn = jax.grad(meta_objective, argnums=1, has_aux=True)
        grads, info = grad_fn(
            learner, params, static, loss_fn, tasks, support, query, tasks_at_once=tasks_at_once
        )
    if isinstance(loss_fn, AbstractLoss):
        grads, mean = checked(loss_fn, tasks_to_check, (grads, info.meta_loss))
        info = MetaStepInfo(mean, info.query_loss, info.support_losses)
    return grads, info


def _sharded_meta_gradient(
    mesh: Mesh, learner, params, static, loss_fn, tasks, support, query, tasks_at_once=None
):
    """`_meta_gradient` with the task batch split over the devices of a 1-D `mesh`:
    each device takes the meta-gradient of the mean over its own tasks, and the
    devices average those (equal shares, so the mean over all tasks)."""
    if len(mesh.axis_names) != 1:
        raise ValueError(
            f"meta_step splits the task batch over a one-axis mesh; got axes {mesh.axis_names}"
        )
    (axis,) = mesh.axis_names
    size = task_batch_size(tasks, support, query)
    if size % mesh.size:
        raise ValueError(
            f"a task batch of {size} does not split evenly over the mesh's {mesh.size} devices"
        )

    across_processes = any(d.process_index != jax.process_index() for d in mesh.devices.flat)

    def per_device(params, tasks, support, query):
        # A device that checked only its own tasks would stop alone on a bad one while
        # the others wait for it in the pmean below; every device checks the whole
        # (gathered) batch instead, ahead of the pmean, so they all stop together.
        every_task = jax.lax.all_gather(tasks, axis, tiled=True)
        grads, info = _meta_gradient(
            learner, params, static, loss_fn, tasks, support, query, every_task, tasks_at_once
        )
        grads = jax.lax.pmean(grads, axis)
        mean = jax.lax.pmean(info.meta_loss, axis)
        query_loss, support_losses = info.query_loss, info.support_losses
        if across_processes:
            # Gathered, so that each process of a multi-process job can read all of
            # them (one process reads its devices' shards without the collective).
            query_loss = jax.lax.all_gather(query_loss, axis, tiled=True)
            support_losses = jax.lax.all_gather(support_losses, axis, tiled=True)
        return grads, (mean, query_loss, support_losses)

    def spec(points):
        return PartitionSpec(axis) if _points_axis(points) == 0 else PartitionSpec()

    split = PartitionSpec(axis)
    per_task = PartitionSpec() if across_processes else split
    # check_vma=False: the parameters are replicated, and their gradient on each device
    # is that device's own; the explicit pmean averages them.
    mapped = jax.shard_map(
        per_device,
        mesh=mesh,
        in_specs=(PartitionSpec(), split, spec(support), spec(query)),
        out_specs=(PartitionSpec(), (PartitionSpec(), per_task, per_task)),
        check_vma=False,
    )
    grads, (mean, query_loss, support_losses) = mapped(params, tasks, support, query)
    return grads, MetaStepInfo(mean, query_loss, support_losses)


@eqx.filter_jit
def meta_step(
    learner: AbstractMetaLearner,
    params: Params,
    static: Static,
    opt_state: optax.OptState,
    optimizer: optax.GradientTransformation,
    loss_fn: LossFn,
    tasks: PyTree,
    support: PyTree,
    query: PyTree | None = None,
    *,
    mesh: Mesh | None = None,
    tasks_at_once: int | None = None,
) -> tuple[Params, optax.OptState, MetaStepInfo]:
    """One outer step of meta-learning, compiled once per run under `eqx.filter_jit`.

    **Arguments:**

    - `learner`: a [`metapinn.AbstractMetaLearner`][] (MAML, FOMAML, Reptile, ...).
    - `params`, `static`: the halves of `eqx.partition(pinn, eqx.is_inexact_array)`.
    - `opt_state`, `optimizer`: the outer optax state and transformation.
    - `loss_fn`: `loss_fn(model, task, batch) -> scalar`, e.g. `PINNLoss(Burgers())`.
    - `tasks`: a batch of tasks, every leaf with a leading axis `B`.
    - `support`, `query`: collocation points, shared `(n, 2)` or per task
      `(B, n, 2)`; `query=None` reuses the support points.
    - `mesh`: optionally a one-axis device mesh ([`metapinn.task_mesh`][]) to split
      the task batch over, one equal share per device, with `jax.shard_map`; each
      device adapts its own tasks and the meta-gradients are averaged across devices.
      `None` (default) leaves placement to JIT: inputs sharded along the task axis
      are then split by XLA's partitioner, which compiles more slowly.
    - `tasks_at_once`: `None` (default) vmaps over the (device's) tasks; an integer
      maps over them in groups of that size, one after another (see
      [`metapinn.meta_objective`][]).

    **Returns:** `(params, opt_state, info)`, with per-task losses in `info`.

    **Raises:** `ValueError` at trace time when the task-batch axes disagree, or when
    the task batch does not split evenly over `mesh`. Under JIT, a task that fails the
    loss's `check_task` (e.g. a viscosity that is not finite and positive) stops the
    step with that check's message, whichever of the outputs are used.
    """
    if query is None:
        query = support
    if mesh is None:
        grads, info = _meta_gradient(
            learner, params, static, loss_fn, tasks, support, query, tasks, tasks_at_once
        )
    else:
        grads, info = _sharded_meta_gradient(
            mesh, learner, params, static, loss_fn, tasks, support, query, tasks_at_once
        )
    updates, opt_state = optimizer_update(optimizer, grads, opt_state, params)
    params = optax.apply_updates(params, updates)
    return params, opt_state, info
