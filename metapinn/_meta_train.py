"""The meta-training loop that lasts: checkpoints, resume, a clean stop on non-finite
losses, metrics as JSON Lines and a progress bar, around the lead's `meta_step`.

The loop itself is a plain Python `for` over outer steps: each step is one call of
the jitted [`metapinn.meta_step`][] (compiled once per run), and between steps the
host reads the losses, which it needs anyway for the progress bar, the metrics file
and the finiteness check.
"""

import dataclasses
import functools
import inspect
import json
import os
import pathlib
import time
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Int, PRNGKeyArray, PyTree
from tqdm import tqdm

from ._checkpoint import (
    checkpoint_step as stored_step,
    load_checkpoint,
    previous_checkpoint_path,
    read_checkpoint_meta,
    save_checkpoint,
    write_text,
)
from ._custom_types import Params, Static
from ._lock import LOCK_FILE, folder_lock
from ._meta._base import AbstractMetaLearner, LossFn
from ._meta_step import meta_step
from ._metrics_file import METRICS, DamagedMetricsError, MetricsAppender, read_metrics
from ._processes import _on_host, _spans_processes, _StopSignals, _sync


Mesh = jax.sharding.Mesh


CHECKPOINT = "checkpoint.npz"
RESUMABLE_KEYS = ("meta_steps", "checkpoint_every")
"""Settings that may differ between a run and its resumption (e.g. to train longer)."""


class NonFiniteLossError(RuntimeError):
    """A meta-step produced a non-finite loss or non-finite parameters.

    The run stopped before writing anything from that step; `checkpoint_step` is the
    step of the last good checkpoint (`None` if none was written yet).
    """

    def __init__(self, message: str, *, step: int, tasks: list[str], checkpoint_step: int | None):
        """**Arguments:**

        - `message`: the error's text.
        - `step`: the meta-step (from 0) that produced it; stored as `self.step`.
        - `tasks`: a description of each task involved (e.g. `"nu=0.0091"`); stored
          as `self.tasks`.
        - `checkpoint_step`: the step of the last good checkpoint, or `None`; stored
          as `self.checkpoint_step`.
        """
        super().__init__(message)
        self.step = step
        self.tasks = tasks
        self.checkpoint_step = checkpoint_step


class ResumeMismatchError(ValueError):
    """A run cannot be resumed from its checkpoint as asked: the checkpoint was written
    with other settings, from another PRNG implementation, or is past the steps asked
    for. The message names the checkpoint and the difference."""


class RunInterrupted(RuntimeError):
    """The run stopped early and can be resumed: by `stop_after` (as if killed, for
    testing), or on SIGTERM or SIGINT, after checkpointing the step it had finished.
    `step` is the last meta-step done."""

    def __init__(self, message: str, *, step: int):
        """**Arguments:** `message`, the error's text; `step`, the last meta-step done
        (from 0), stored as `self.step`."""
        super().__init__(message)
        self.step = step


@dataclasses.dataclass(frozen=True)
class MetaTrainResult:
    r"""What [`metapinn.meta_train`][] returns.

    **Fields:**

    - `params`, `opt_state`: the learner's meta-parameters (see
      [`metapinn.AbstractMetaLearner.init_meta_params`][]) and the outer optimiser's
      state after the last step.
    - `initialisation`: the network initialisation inside `params` (the same pytree
      for learners that learn only an initialisation).
    - `meta_loss`: `(steps,)`, the learner's meta-objective at each step (MAML's is
      the query loss after adaptation; Reptile's its surrogate
      $\tfrac12\lVert\theta - \phi_K\rVert^2$; compare learners on `query_loss`).
    - `query_loss`: `(steps, B)`, each task's query loss at its adapted parameters.
    - `task_index`: `(steps, B)`, which training tasks each step used.
    - `seconds`: wall-clock time spent training in this call (compile included).
    - `start_step`: the step this call started from (`> 0` after a resume).
    """

    params: PyTree
    opt_state: optax.OptState
    initialisation: Params
    meta_loss: np.ndarray
    query_loss: np.ndarray
    task_index: np.ndarray
    seconds: float
    start_step: int


def describe_task(tasks: PyTree, i: int) -> str:
    """`"nu=0.0091"` for task `i` of a batch of [`metapinn.BurgersTask`][]s (any
    Module or pytree of arrays: its fields and values)."""
    if dataclasses.is_dataclass(tasks):
        parts = []
        for field in dataclasses.fields(tasks):
            value = np.asarray(getattr(tasks, field.name))[i]
            parts.append(f"{field.name}={_format_value(value)}")
        return ", ".join(parts)
    values = [np.asarray(leaf)[i] for leaf in jax.tree_util.tree_leaves(tasks)]
    return ", ".join(_format_value(v) for v in values)


def _format_value(value: Any) -> str:
    """A scalar as `0.0091`, a vector (e.g. a random initial condition's
    coefficients) as `[0.5, -0.12, ...]`."""
    value = np.asarray(value)
    if value.ndim == 0:
        return f"{value.item():.6g}"
    return "[" + ", ".join(f"{v:.4g}" for v in value.reshape(-1).tolist()) + "]"


def _tasks_size(tasks: PyTree) -> int:
    sizes = {jnp.shape(leaf)[0] for leaf in jax.tree_util.tree_leaves(tasks)}
    if len(sizes) != 1:
        raise ValueError(f"the training tasks need one common leading axis; got sizes {sizes}")
    return sizes.pop()


@eqx.filter_jit
def _task_indices(key: PRNGKeyArray, step: Int[Array, ""], n: int, b: int) -> Int[Array, " b"]:
    """`b` distinct task indices out of `n`, a pure function of `(key, step)`."""
    return jr.choice(jr.fold_in(key, step), n, (b,), replace=False)


def _take(tree: PyTree, index: np.ndarray) -> PyTree:
    return jax.tree_util.tree_map(lambda x: x[index], tree)


def _per_task(points: PyTree | None, n: int) -> bool:
    size = getattr(points, "task_batch_size", None)
    if size is not None and size != n:
        raise ValueError(f"per-task points have {size} point sets for {n} training tasks")
    return size is not None


_POINTS_STREAM = 2**31 - 1
"""`fold_in(run_key, _POINTS_STREAM)` seeds the re-sampled points; the task sampling
folds in the step number, which stays below it."""

PointSampler = Callable[[PRNGKeyArray], PyTree]
"""`sample(key) -> points` for one task, e.g. a partial of
[`metapinn.sample_collocation`][]; the same key gives the same points."""


@eqx.filter_jit
def _sample_step_points(
    sample: PointSampler, key: PRNGKeyArray, step: Int[Array, ""]
) -> tuple[PyTree, PyTree]:
    """Support and query points of outer step `step`, drawn independently from
    `fold_in(key, step)` and shared by that step's tasks: a pure function of
    `(key, step)`, so a resumed run draws the points an uninterrupted one would.

    Shared, not per task: with the parameters shared too (multi-task training), the
    network's jet is then the same for every task and is computed once."""
    k_support, k_query = jr.split(jr.fold_in(key, step))
    return sample(k_support), sample(k_query)


def _all_finite(tree: PyTree) -> bool:
    return all(bool(np.all(np.isfinite(np.asarray(x)))) for x in jax.tree_util.tree_leaves(tree))


def _read_metrics(path: pathlib.Path, before: int) -> list[dict[str, Any]]:
    """The records of a metrics file with `step < before`."""
    return read_metrics(path)[:before]


def _config_mismatch(saved: dict | None, given: dict | None) -> list[str]:
    if saved is None or given is None:
        return []
    keys = (set(saved) | set(given)) - set(RESUMABLE_KEYS)
    return sorted(k for k in keys if saved.get(k) != given.get(k))


def _locks_run_dir(train: Callable[..., "MetaTrainResult"]) -> Callable[..., "MetaTrainResult"]:
    """`train` holding the lock of its `run_dir` (see `metapinn._lock`) in the process
    that writes it (process 0 of a multi-process job), so that no second process
    writes the same run."""
    signature = inspect.signature(train)

    @functools.wraps(train)
    def locked(*args, **kwargs):
        run_dir = signature.bind(*args, **kwargs).arguments.get("run_dir")
        if run_dir is None or jax.process_index() != 0:
            return train(*args, **kwargs)
        folder = pathlib.Path(run_dir)
        made = not folder.exists()
        try:
            with folder_lock(folder):
                return train(*args, **kwargs)
        except BaseException:
            if made and [p.name for p in folder.iterdir()] == [LOCK_FILE]:
                # Refused before it wrote anything (bad arguments): leave no folder.
                (folder / LOCK_FILE).unlink(missing_ok=True)
                folder.rmdir()
            raise

    return locked


@dataclasses.dataclass
class _RunState:
    """Where a run starts: its parameters, optimiser state and key data, the step, the
    metrics records before it, and the step of its last checkpoint."""

    params: PyTree
    opt_state: Any
    key_data: Any
    start: int
    rows: list[dict[str, Any]]
    checkpoint_step: int | None


def _start_or_resume(
    directory: pathlib.Path,
    state: _RunState,
    key: PRNGKeyArray,
    *,
    steps: int,
    resume: bool,
    previous_checkpoint: bool,
    config: dict[str, Any] | None,
    writer: bool,
) -> _RunState:
    """The state a run in `directory` starts from: fresh (`state`), or resumed from its
    checkpoint, checked against the run's settings and its metrics file (which is
    cut back to the checkpointed steps)."""
    params, opt_state, key_data = state.params, state.opt_state, state.key_data
    start, rows, checkpoint_step = 0, [], None
    if writer:
        directory.mkdir(parents=True, exist_ok=True)
    ckpt = directory / CHECKPOINT
    if ckpt.exists() and not resume:
        raise FileExistsError(
            f"{ckpt} exists: pass resume=True (--resume) to continue that run, or "
            "choose another output folder"
        )
    if previous_checkpoint and not resume:
        raise ValueError("previous_checkpoint=True continues a run: it needs resume=True")
    if ckpt.exists() or (resume and previous_checkpoint):
        source = previous_checkpoint_path(ckpt) if previous_checkpoint else ckpt
        # Checked first: a key of another implementation has other shapes.
        stored_impl = read_checkpoint_meta(source).get("key_impl")
        if stored_impl is not None and stored_impl != str(jr.key_impl(key)):
            raise ResumeMismatchError(
                f"cannot resume from {source}: its run drew from a {stored_impl!r} PRNG "
                f"key, this one is {str(jr.key_impl(key))!r}"
            )
        like = {"params": params, "opt_state": opt_state, "key": key_data}
        loaded, meta = load_checkpoint(ckpt, like, previous=previous_checkpoint)
        bad = _config_mismatch(meta.get("config"), config)
        if bad:
            raise ResumeMismatchError(
                f"cannot resume from {ckpt}: its run used different settings for "
                f"{', '.join(bad)} (stored: "
                + ", ".join(f"{k}={meta['config'].get(k)!r}" for k in bad)
                + ")"
            )
        start = stored_step(source, meta)
        if start > steps:
            raise ResumeMismatchError(
                f"{ckpt} is at step {start}, beyond the {steps} steps asked for"
            )
        params, opt_state, key_data = loaded["params"], loaded["opt_state"], loaded["key"]
        checkpoint_step = start
    metrics_path = directory / METRICS
    rows = _read_metrics(metrics_path, start)
    if len(rows) != start:
        raise DamagedMetricsError(
            f"cannot resume from {ckpt}: it is at step {start}, but {metrics_path} holds "
            f"only {len(rows)} lines (one is written per step before each checkpoint); "
            "restore the metrics file, or start the run again"
        )
    _sync(f"metapinn: {directory} read")  # every process has read it before it changes
    if writer:
        write_text(metrics_path, "".join(json.dumps(r) + "\n" for r in rows))
        if previous_checkpoint:  # the damaged last one goes; the next save replaces it
            ckpt.unlink(missing_ok=True)
    return _RunState(params, opt_state, key_data, start, rows, checkpoint_step)


@_locks_run_dir
def meta_train(
    learner: AbstractMetaLearner,
    params: Params,
    static: Static,
    loss_fn: LossFn,
    tasks: PyTree,
    support: PyTree | None,
    query: PyTree | None = None,
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    key: PRNGKeyArray,
    tasks_per_step: int | None = None,
    sample_points: PointSampler | None = None,
    mesh: Mesh | None = None,
    tasks_at_once: int | None = None,
    run_dir: str | os.PathLike | None = None,
    checkpoint_every: int = 100,
    resume: bool = False,
    previous_checkpoint: bool = False,
    config: dict[str, Any] | None = None,
    progress: bool = True,
    description: str = "meta-train",
    stop_after: int | None = None,
) -> MetaTrainResult:
    """Meta-train an initialisation: `steps` calls of [`metapinn.meta_step`][].

    **Arguments:**

    - `learner`: a [`metapinn.AbstractMetaLearner`][] (e.g. `MAML()`); before every
      step its [`metapinn.AbstractMetaLearner.at_step`][] gives that step's learner.
    - `params`, `static`: the halves of `eqx.partition(pinn, eqx.is_inexact_array)`;
      `params` is the starting point (the learner's `init_meta_params` adds what it
      learns besides, e.g. inner rates).
    - `loss_fn`: `loss_fn(model, task, batch) -> scalar`, e.g. `PINNLoss(Burgers())`.
    - `tasks`: *all* training tasks, every leaf with a leading axis `N`
      (e.g. `BurgersTask(train_nus)`).
    - `support`, `query`: collocation points, shared `(n, 2)` or per task `(N, n, 2)`;
      `query=None` reuses the support points. Both `None` with `sample_points`.
    - `steps`: the number of outer steps in all (counting any done before a resume).
    - `optimizer`: the outer optax transformation; pass the same object to every
      call so that `meta_step` is compiled only once.
    - `key`: PRNG key for the task sampling (unused when every step takes all tasks).

    **Other arguments:**

    - `tasks_per_step`: tasks per outer step, drawn without replacement from
      `fold_in(key, step)`; `None` (or `N`) uses all tasks, in order, every step.
    - `sample_points`: re-sample the points every step instead: the support and the
      query points of a step are `sample_points(k)` for two independent keys `k` split
      from `fold_in(key', step)` (`key'` derived from `key`, apart from the task
      sampling), shared by the step's tasks; a resumed run draws the same points as
      an uninterrupted one.
    - `mesh`: split each step's task batch over a device mesh
      ([`metapinn.task_mesh`][]; see [`metapinn.meta_step`][]). In a multi-process
      job (`jax.distributed`), a mesh over `jax.devices()` spans every process: each
      process runs this same call, and process 0 alone writes the run's files (on a
      file system every process reads: a resumed job reads them back).
    - `tasks_at_once`: map each step's tasks in groups of this size, one after
      another, instead of all at once (see [`metapinn.meta_objective`][]).
    - `run_dir`: the folder for `checkpoint.npz` and `metrics.jsonl`; `None` keeps
      everything in memory (no checkpoints, no resume).
    - `checkpoint_every`: write a checkpoint every this many steps, and at the end.
    - `resume`: continue from `run_dir`'s checkpoint if there is one. The result is
      the same, bit for bit on a CPU, as that of an uninterrupted run. The metrics
      file must hold a line for every checkpointed step (lines past it are dropped),
      and the key's PRNG implementation must be the one the run was started with.
    - `previous_checkpoint`: with `run_dir` and `resume`, continue from the checkpoint
      kept before the last one (`checkpoint.prev.npz`), e.g. when the last is damaged:
      the steps since are trained again, to the same result.
    - `config`: plain data stored in each checkpoint; on resume it must equal the
      stored one, except for the keys in `RESUMABLE_KEYS`.
    - `progress`: show a progress bar with the current loss.
    - `description`: the progress bar's label.
    - `stop_after`: stop with [`metapinn.RunInterrupted`][] after this many steps of
      this call, without a final checkpoint, as a kill would (for testing resume).

    **Returns:** a [`metapinn.MetaTrainResult`][].

    **Raises:**

    - [`metapinn.NonFiniteLossError`][] at the first step whose loss (or whose
      updated parameters) is not finite, naming the step and the task(s); nothing
      from that step is written, and the last checkpoint stays as it was.
    - `FileExistsError` if `run_dir` already holds a checkpoint and `resume` is false.
    - `FileNotFoundError` with `previous_checkpoint` if there is no previous checkpoint.
    - `ValueError` for bad settings (e.g. both or neither of `support` and
      `sample_points`, `tasks_per_step` outside `[1, N]`, task leaves or per-task
      points with different leading sizes, `resume` or `previous_checkpoint` without
      a `run_dir`, `previous_checkpoint` without `resume`), or a checkpoint that does
      not match them (its settings, its PRNG implementation, its arrays, a step beyond
      `steps`, or the metrics file beside it).
    - [`metapinn.CorruptCheckpointError`][] if the checkpoint cannot be read.
    - [`metapinn.RunInterrupted`][] on SIGTERM or SIGINT (in a multi-process job, a
      pre-emption notice to any process): the step in progress is finished and
      checkpointed first, so the run resumes from it; and with `stop_after`.
    - [`metapinn.RunFolderError`][] if a checkpoint or the metrics file cannot be
      written (the metrics file is left without a torn line); creating `run_dir`
      raises a plain `OSError`.
    - What `meta_step` raises (e.g. `ValueError` at trace time; an `eqx.error_if`
      message for an invalid task).
    """
    if (resume or previous_checkpoint) and run_dir is None:
        flag = "previous_checkpoint" if previous_checkpoint else "resume"
        raise ValueError(
            f"{flag}=True continues the run checkpointed in run_dir: it needs a run_dir "
            "(without one nothing is checkpointed, and there is nothing to continue)"
        )
    if sample_points is not None and (support is not None or query is not None):
        raise ValueError("give either fixed points (support, query) or sample_points, not both")
    if sample_points is None and support is None:
        raise ValueError("give the collocation points (support) or a sample_points function")
    for name, value, low in (("steps", steps, 0), ("checkpoint_every", checkpoint_every, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    n_tasks = _tasks_size(tasks)
    b = n_tasks if tasks_per_step is None else tasks_per_step
    if isinstance(b, bool) or not isinstance(b, int) or not 1 <= b <= n_tasks:
        raise ValueError(f"tasks_per_step must be an integer in [1, {n_tasks}], got {b!r}")
    per_task_support, per_task_query = _per_task(support, n_tasks), _per_task(query, n_tasks)
    if not jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jr.wrap_key_data(key)  # a raw `jr.PRNGKey`
    key_data = jr.key_data(key)
    params = learner.init_meta_params(params)

    opt_state = optimizer.init(params)
    directory = None if run_dir is None else pathlib.Path(run_dir)
    writer = jax.process_index() == 0  # in a multi-process job, process 0 writes the files
    state = _RunState(params, opt_state, key_data, start=0, rows=[], checkpoint_step=None)
    if directory is not None:
        state = _start_or_resume(
            directory, state, key, steps=steps, resume=resume,
            previous_checkpoint=previous_checkpoint, config=config, writer=writer,
        )  # fmt: skip
    params, opt_state, key_data = state.params, state.opt_state, state.key_data
    start, rows, checkpoint_step = state.start, state.rows, state.checkpoint_step
    run_key = jr.wrap_key_data(key_data, impl=jr.key_impl(key))
    # The points' own stream, apart from the task sampling's `fold_in(run_key, step)`.
    points_key = jr.fold_in(run_key, _POINTS_STREAM)

    meta_loss = [r["meta_loss"] for r in rows]
    query_loss = [r["query_loss"] for r in rows]
    task_index = [r["tasks"] for r in rows]

    if _spans_processes(mesh):
        # Host values, which every process holds whole: JAX places them on the mesh.
        params, opt_state, learner, loss_fn = _on_host((params, opt_state, learner, loss_fn))

    def checkpoint(done: int) -> None:
        if directory is None or not writer:
            return
        tree = {"params": params, "opt_state": opt_state, "key": key_data}
        meta = {"step": done, "config": config, "key_impl": str(jr.key_impl(run_key))}
        save_checkpoint(directory / CHECKPOINT, tree, meta)

    metrics_file = None if directory is None or not writer else MetricsAppender(directory / METRICS)
    bar = tqdm(
        total=steps,
        initial=start,
        desc=description,
        disable=not progress,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    t0 = time.perf_counter()
    signals = _StopSignals()
    try:
        signals.__enter__()
        for step in range(start, steps):
            if b == n_tasks:
                index = np.arange(n_tasks)
            else:
                index = np.asarray(_task_indices(run_key, jnp.asarray(step), n_tasks, b))
            batch_tasks = _take(tasks, index)
            if sample_points is not None:
                step_support, step_query = _sample_step_points(
                    sample_points, points_key, jnp.asarray(step)
                )
            else:
                step_support = _take(support, index) if per_task_support else support
                step_query = _take(query, index) if per_task_query else query
            if _spans_processes(mesh):
                batch_tasks, step_support, step_query = _on_host(
                    (batch_tasks, step_support, step_query)
                )
            new_params, new_opt_state, info = meta_step(
                learner.at_step(step, steps), params, static, opt_state, optimizer, loss_fn,
                batch_tasks, step_support, step_query, mesh=mesh, tasks_at_once=tasks_at_once,
            )  # fmt: skip
            loss = float(info.meta_loss)
            q = np.asarray(info.query_loss, dtype=np.float64)
            s = np.asarray(info.support_losses, dtype=np.float64)
            bad_rows = ~(np.isfinite(q) & np.all(np.isfinite(s), axis=1))
            problem, names = None, []
            if not np.isfinite(loss) or bad_rows.any():
                names = [describe_task(tasks, int(index[i])) for i in np.flatnonzero(bad_rows)]
                where = "task " + "; ".join(names) if names else "the meta-objective"
                problem = (
                    f"non-finite loss at meta-step {step} on {where} (meta-loss {loss}, "
                    f"query losses {q.tolist()})"
                )
            elif not _all_finite(new_params):
                names = [describe_task(tasks, int(i)) for i in index]
                problem = f"non-finite parameters after meta-step {step} (tasks {'; '.join(names)})"
            if problem is not None:
                raise NonFiniteLossError(
                    f"{problem}; stopped: " + _checkpoint_note(directory, checkpoint_step),
                    step=step,
                    tasks=names,
                    checkpoint_step=checkpoint_step,
                )
            done = step + 1
            params, opt_state = new_params, new_opt_state
            row = {
                "step": step,
                "meta_loss": loss,
                "query_loss": q.tolist(),
                "tasks": index.tolist(),
                "seconds": round(time.perf_counter() - t0, 4),
            }
            meta_loss.append(loss)
            query_loss.append(row["query_loss"])
            task_index.append(row["tasks"])
            if metrics_file is not None:
                metrics_file.append(row)
            bar.update(1)
            # The query loss, comparable across learners (Reptile's meta-objective is
            # its surrogate, half the squared length of its step).
            bar.set_postfix_str(f"query loss={float(np.mean(q)):.3e}", refresh=False)
            if done % checkpoint_every == 0 or done == steps:
                if metrics_file is not None:
                    metrics_file.flush()
                checkpoint(done)
                checkpoint_step = done
            stop_for = signals.stop(step) if done < steps else None
            if stop_for is not None:
                if checkpoint_step != done:
                    if metrics_file is not None:
                        metrics_file.flush()
                    checkpoint(done)
                    checkpoint_step = done
                raise RunInterrupted(
                    f"stopped by {stop_for} after meta-step {step}; "
                    + _checkpoint_note(directory, checkpoint_step),
                    step=step,
                )
            if stop_after is not None and done - start >= stop_after and done < steps:
                raise RunInterrupted(
                    f"stopped after meta-step {step} as asked (stop_after={stop_after}); "
                    + _checkpoint_note(directory, checkpoint_step),
                    step=step,
                )
    finally:
        signals.__exit__()
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
    if checkpoint_step is None and start == steps:
        checkpoint(steps)  # a run of no steps: its checkpoint is its starting point
    if directory is not None:
        _sync(f"metapinn: {directory} written")  # its files are there for every process
    return MetaTrainResult(
        params=params,
        opt_state=opt_state,
        initialisation=learner.initialisation(params),
        meta_loss=np.asarray(meta_loss, dtype=np.float64).reshape(-1),
        query_loss=np.asarray(query_loss, dtype=np.float64).reshape(-1, b),
        task_index=np.asarray(task_index, dtype=np.int64).reshape(-1, b),
        seconds=time.perf_counter() - t0,
        start_step=start,
    )


def _checkpoint_note(directory: pathlib.Path | None, step: int | None) -> str:
    """Where a stopped run can resume from: a clause that ends the stop message after
    "; " or ": " (so lower-case, without a full stop)."""
    if directory is None:
        return "there is no run folder, so no checkpoint"
    if step is None:
        return "no checkpoint had been written yet"
    steps = "meta-step" if step == 1 else "meta-steps"
    return f"the last good checkpoint (after {step} {steps}) is {directory / CHECKPOINT}"


def load_meta_params(
    run_dir: str | os.PathLike,
    learner: AbstractMetaLearner,
    params: Params,
    optimizer: optax.GradientTransformation,
) -> tuple[PyTree, dict[str, Any]]:
    """The meta-parameters in `run_dir`'s checkpoint, written by
    [`metapinn.meta_train`][] with `learner`.

    **Arguments:** the run folder, the learner; `params` (a network's parameters) and
    the outer `optimizer` give the structure, shapes and dtypes to read into.

    **Returns:** `(meta_params, meta)` where `meta["step"]` is the step it was saved at.
    """
    return _load_params(run_dir, learner.init_meta_params(params), optimizer)


def _load_params(run_dir, like_params: PyTree, optimizer) -> tuple[PyTree, dict[str, Any]]:
    """The `params` of a checkpoint written by `meta_train`, read into `like_params`."""
    like = {
        "params": like_params,
        "opt_state": optimizer.init(like_params),
        "key": jr.key_data(jr.key(0)),
    }
    state, meta = load_checkpoint(pathlib.Path(run_dir) / CHECKPOINT, like)
    return state["params"], meta


def load_initialisation(
    run_dir: str | os.PathLike,
    params: Params,
    optimizer: optax.GradientTransformation,
    learner: AbstractMetaLearner | None = None,
) -> tuple[Params, dict[str, Any]]:
    """The network initialisation in `run_dir`'s checkpoint.

    **Arguments:** the run folder; `params` (and the outer `optimizer`) give the
    structure, shapes and dtypes to read into; `learner`, the learner that wrote it
    when it learns more than an initialisation (e.g. [`metapinn.MetaSGD`][]'s rates).

    **Returns:** `(params, meta)` where `meta["step"]` is the step it was saved at.
    """
    if learner is None:
        return _load_params(run_dir, params, optimizer)
    meta_params, meta = load_meta_params(run_dir, learner, params, optimizer)
    return learner.initialisation(meta_params), meta
