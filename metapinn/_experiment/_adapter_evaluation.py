"""Every initialisation of a run adapted with every evaluation adapter, timed.

The common Adam schedule adapts every initialisation in one vmapped scan
(`_evaluation`); the second-order adapters of `eval_adapters` (Gauss–Newton, L-BFGS)
adapt each (initialisation, seed, held-out task) alone, through
[`metapinn.training.timed_adaptation`][], so that each task has its own wall-clock: rel-L2
*and* seconds after each of `eval_adapter_steps`. Adam's seconds are its steps times
the measured seconds of one of its steps on the same network.

Given a device mesh of accelerators, those independent adaptations are spread over its
devices, one adaptation per device at a time (a thread per device taking the next
adaptation from a queue, each adaptation's inputs put on its device), each timed on its
own. Host CPU devices are not used so: they share the machine's cores, and one XLA:CPU
program already keeps them busy (on 2 cores, 10 Gauss–Newton steps of the A-burgers
conditioned network ran at 1.93 cores' worth of CPU time and 1.81x faster than pinned
to one core), so concurrent adaptations only slowed each other (measured on 2 host
devices: each 2.7x slower than alone, the evaluation 0.73x as fast). On CPU they run one
after another on one device, whatever the mesh.
"""

import concurrent.futures
import dataclasses
import queue
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from .._meta._adapters import LBFGS, AbstractAdapter
from .._meta._gauss_newton import GaussNewton
from .._timed import timed_adaptation
from ._config import ExperimentConfig
from ._methods import RANDOM, cg_steps_of


ADAM = "adam"
"""The common Adam schedule's name among the adapters of a run's results."""


def evaluation_adapter(name: str, config: ExperimentConfig) -> AbstractAdapter:
    """The adapter `name` of `eval_adapters`: `"gauss-newton"`, Levenberg–Marquardt
    from `eval_damping` with at most `eval_cg_steps` CG iterations a step (stopping at
    a relative residual of 1e-6), preconditioned by `eval_preconditioner`;
    `"gauss-newton-cg<N>"`, the same with at most N iterations; `"lbfgs"`, L-BFGS with
    its zoom line search (memory 10).

    **Raises:** `ValueError` for another name."""
    if name == "gauss-newton" or cg_steps_of(name):
        return GaussNewton(
            damping=config.eval_damping,
            cg_steps=cg_steps_of(name) or config.eval_cg_steps,
            preconditioner=config.eval_preconditioner,
        )
    if name == "lbfgs":
        return LBFGS()
    raise ValueError(f"unknown evaluation adapter {name!r}; choose gauss-newton or lbfgs")


@dataclasses.dataclass(frozen=True)
class AdapterMeasures:
    """What one adapter did from every initialisation.

    **Fields:** `adapter` (its name), `steps` (the step counts read), `rel_l2`,
    `seconds` and `loss`, each `(row, seed, held-out task, step)` (NaN where the row's
    seed diverged in meta-training), `timed` (whether `seconds` were measured task by
    task; else they are steps × the measured seconds of one step) and
    `compile_seconds` (compiling its loops, kept out of `seconds`)."""

    adapter: str
    rows: tuple[str, ...]
    steps: tuple[int, ...]
    rel_l2: np.ndarray
    seconds: np.ndarray
    loss: np.ndarray
    timed: bool
    compile_seconds: float = 0.0


def adam_measures(
    rows: Sequence[str],
    steps: Sequence[int],
    measures: dict[str, np.ndarray],
    step_seconds: Sequence[float],
) -> AdapterMeasures:
    """The common Adam schedule's measurements as an adapter's: its seconds are `k`
    times `step_seconds[row]`, the measured seconds of one step of that row's network."""
    per_step = np.asarray(step_seconds, dtype=np.float64)[:, None, None, None]
    seconds = per_step * np.asarray(steps, dtype=np.float64)
    seconds = np.broadcast_to(seconds, measures["rel_l2"].shape).copy()
    seconds[np.isnan(measures["rel_l2"])] = np.nan
    return AdapterMeasures(
        ADAM, tuple(rows), tuple(steps), measures["rel_l2"], seconds, measures["loss"], False
    )


def spread_over_devices(
    jobs: Sequence[Any], devices: Sequence[Any], work: Callable[[Any, Any], Any]
) -> list[Any]:
    """`[work(job, device) for job in jobs]`, each job on one of `devices`, at most one
    job per device at a time (a thread per device; `device` is `None` when `devices`
    is `[None]`, and the jobs then run one after another in this thread)."""
    if len(devices) <= 1:
        return [work(job, devices[0] if devices else None) for job in jobs]
    free: queue.SimpleQueue = queue.SimpleQueue()
    for device in devices:
        free.put(device)

    def run(job):
        device = free.get()
        try:
            return work(job, device)
        finally:
            free.put(device)

    with concurrent.futures.ThreadPoolExecutor(len(devices)) as pool:
        return list(pool.map(run, jobs))


def timing_devices(mesh: Mesh | None) -> list[Any]:
    """The devices the timed adaptations are spread over: `[None]` (one after another on
    the default device) without a mesh or for host CPU devices, which share the cores
    that one adaptation already keeps busy (see the module notes); else the mesh's
    devices."""
    if mesh is None or all(d.platform == "cpu" for d in mesh.devices.flat):
        return [None]
    return list(mesh.devices.flat)


def time_adapters(
    config: ExperimentConfig,
    problem: Any,
    rows: Sequence[str],
    found: dict[str, list],
    statics: tuple[Any, Any],
    grid: np.ndarray,
    u_ref: np.ndarray,
    valid: np.ndarray,
    *,
    log: Callable[[str], None] = print,
    mesh: Mesh | None = None,
) -> dict[str, AdapterMeasures]:
    """Every initialisation of `rows` adapted to every held-out task by each adapter
    of `config.eval_adapters`, one task at a time, timed.

    **Arguments:** the config, its problem (`build_problem`), the rows (`"random"` and
    the methods), their parameters per seed (a transfer row's with a leading axis over
    the held-out tasks), the plain and the conditioned network's static parts, the
    reference grid `(T, X, 2)` and fields `(N, T, X)`, and `valid` `(row, seed)`;
    `mesh`, the devices to spread the adaptations over (default: this one; host CPU
    devices are not spread over, see `timing_devices`).

    **Returns:** `{adapter: AdapterMeasures}`, in the order of `eval_adapters`.
    """
    dtype = jnp.dtype(config.dtype)
    points = jnp.asarray(np.asarray(grid).reshape(-1, 2), dtype=dtype)
    references = [jnp.asarray(np.asarray(u).reshape(-1)) for u in u_ref]
    shape = (len(rows), len(config.seeds), config.n_test, len(config.eval_adapter_steps))
    out = {}
    for name in config.eval_adapters:
        adapter = evaluation_adapter(name, config)
        log(
            f"adapting {len(rows)} initialisations x {len(config.seeds)} seeds on "
            f"{config.n_test} held-out tasks with {name}, each task timed, for "
            f"{config.eval_adapter_steps[-1]} steps"
        )
        rel, seconds, losses = (np.full(shape, np.nan) for _ in range(3))
        jobs = [
            (r, s, n)
            for r in range(len(rows))
            for s in range(len(config.seeds))
            if valid[r, s]
            for n in range(config.n_test)
        ]

        def adapt(job: tuple[int, int, int], device, adapter=adapter):
            r, s, n = job
            row: str = rows[r]
            spec = None if row == RANDOM else config.method(row)
            conditioned = spec is not None and spec.conditioned
            params = found[row][s]
            if spec is not None and spec.transfer:
                params = jax.tree_util.tree_map(lambda a: a[n], params)
            task = jax.tree_util.tree_map(lambda a: a[n], problem.test_tasks)
            inputs = (params, task, problem.points, points, references[n])
            if device is not None:
                inputs = jax.device_put(inputs, device)
            params, task, batch, grid_points, u_ref = inputs
            _, trace = timed_adaptation(
                params, statics[1] if conditioned else statics[0],
                problem.loss(conditioned=conditioned), task, batch, adapter=adapter,
                steps=config.eval_adapter_steps, points=grid_points, u_ref=u_ref,
            )  # fmt: skip
            return trace

        devices = timing_devices(mesh)
        compile_seconds = 0.0
        for (r, s, n), trace in zip(jobs, spread_over_devices(jobs, devices, adapt), strict=True):
            rel[r, s, n] = trace.rel_l2
            seconds[r, s, n] = trace.seconds
            losses[r, s, n] = trace.loss
            compile_seconds += trace.compile_seconds
        out[name] = AdapterMeasures(
            name, tuple(rows), config.eval_adapter_steps, rel, seconds, losses, True,
            compile_seconds,
        )  # fmt: skip
    return out
