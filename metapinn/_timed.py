"""Solving one task from an initialisation with an adapter, timed against the truth.

[`metapinn.adapt`][] runs $K$ steps in one scan; a user who asks "how long until the
error is below $\\varepsilon$?" needs the wall-clock between the steps too. The loop
here advances the adapter by a traced number of steps (`lax.fori_loop`, so it
compiles once for every stretch), stopping at the recorded step counts to measure the
error against the reference outside the clock.
"""

import dataclasses
import time
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from ._conditioned import ConditionedLoss
from ._custom_types import Params, Static
from ._meta._adapters import AbstractAdapter, as_adapter
from ._meta._gradients import LossFn
from ._metrics import relative_l2_error


def record_steps(steps: int, *, every_until: int = 10, per_decade: int = 8) -> tuple[int, ...]:
    """Step counts to record on the way to `steps`: every step up to `every_until`,
    then about `per_decade` a decade (geometric), and `steps` itself.

    **Raises:** `ValueError` for `steps` not an integer >= 0.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    counts = set(range(min(steps, every_until) + 1))
    if steps > every_until:
        decades = np.log10(steps / every_until)
        grid = np.geomspace(every_until, steps, max(2, int(np.ceil(decades * per_decade)) + 1))
        counts.update(int(round(k)) for k in grid)
    counts.add(steps)
    return tuple(sorted(counts))


@dataclasses.dataclass(frozen=True)
class TimedTrace:
    """The record of one timed adaptation.

    **Fields:**

    - `steps`: the recorded step counts (from 0).
    - `seconds`: wall-clock seconds of adaptation after each (compile excluded).
    - `rel_l2`: relative L2 error against the reference after each.
    - `loss`: the loss after each.
    - `compile_seconds`: the time to compile the adapter's loop and the error's
      measurement (about zero when the same adapter, network and point shapes were
      compiled before in this process).
    """

    steps: tuple[int, ...]
    seconds: tuple[float, ...]
    rel_l2: tuple[float, ...]
    loss: tuple[float, ...]
    compile_seconds: float

    def seconds_to(self, eps: float) -> float | None:
        """The wall-clock at the first recorded step with `rel_l2 <= eps`, or `None`."""
        for s, e in zip(self.seconds, self.rel_l2, strict=True):
            if e <= eps:
                return s
        return None

    def steps_to(self, eps: float) -> int | None:
        """The first recorded step count with `rel_l2 <= eps`, or `None`."""
        for k, e in zip(self.steps, self.rel_l2, strict=True):
            if e <= eps:
                return k
        return None


@eqx.filter_jit
def _advance(adapter, params, state, static, loss_fn, task, batch, n):
    """`n` (traced) steps of `adapter`: one compiled program for every stretch."""

    def body(_, carry):
        p, s = carry
        return adapter.step(p, s, static, loss_fn, task, batch)[:2]

    return jax.lax.fori_loop(0, n, body, (params, state))


@eqx.filter_jit
def _measure(params, static, loss_fn, task, batch, points, u_ref):
    model = eqx.combine(params, static)
    # A conditioned network is measured as the two-input network it is for this task.
    field = loss_fn.bind(model, task) if isinstance(loss_fn, ConditionedLoss) else model
    return relative_l2_error(field(points), u_ref), loss_fn(model, task, batch)


def timed_adaptation(
    params: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    batch: PyTree,
    *,
    adapter: AbstractAdapter,
    steps: Sequence[int],
    points: Float[Array, "n 2"],
    u_ref: Float[Array, " n"],
    progress: Callable[[int], object] | None = None,
) -> tuple[Params, TimedTrace]:
    """Adapt `params` to one task with `adapter`, timing every stretch between the
    recorded step counts and measuring the error there.

    **Arguments:**

    - `params`, `static`: the halves of the PINN (a [`metapinn.ConditionedPINN`][]
      with a [`metapinn.ConditionedLoss`][] adapts all its parameters and is measured
      bound to the task, as the few-shot evaluation does).
    - `loss_fn`, `task`, `batch`: the loss, the task and its points.
    - `adapter`: a [`metapinn.AbstractAdapter`][] (or an optax transformation).
    - `steps`: strictly increasing step counts to record, from 0 (e.g.
      [`metapinn.training.record_steps`][]`(1000)`).
    - `points`, `u_ref`: the grid `(n, 2)` and the reference on it.
    - `progress`: called with the number of steps just taken (e.g. a tqdm bar's
      `update`).

    **Returns:** `(params_K, trace)`, a [`metapinn.training.TimedTrace`][].

    **Raises:** `ValueError` for step counts that are not strictly increasing integers
    >= 0.
    """
    steps = tuple(steps)
    if not steps or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in steps):
        raise ValueError(f"steps must be integers >= 0, got {list(steps)}")
    if list(steps) != sorted(set(steps)):
        raise ValueError(f"steps must be strictly increasing, got {list(steps)}")
    adapter = as_adapter(adapter)
    state = adapter.init(params, static, loss_fn, task, batch)
    t0 = time.perf_counter()
    # Compiled once per adapter, network and point shapes; later tasks reuse it.
    # An initial state with weakly typed scalars (optax's L-BFGS) comes back strongly
    # typed from the loop, which would then compile again inside the clock: start from
    # strong types.
    state = jax.tree_util.tree_map(
        lambda x: jax.lax.convert_element_type(x, x.dtype) if eqx.is_array(x) else x, state
    )
    jax.block_until_ready(
        _advance(adapter, params, state, static, loss_fn, task, batch, jnp.asarray(0))
    )
    jax.block_until_ready(_measure(params, static, loss_fn, task, batch, points, u_ref))
    compile_seconds = time.perf_counter() - t0
    seconds, errors, losses = [], [], []
    elapsed, done = 0.0, 0
    for k in steps:
        if k > done:
            t0 = time.perf_counter()
            n = jnp.asarray(k - done)
            params, state = jax.block_until_ready(
                _advance(adapter, params, state, static, loss_fn, task, batch, n)
            )
            elapsed += time.perf_counter() - t0
            if progress is not None:
                progress(k - done)
            done = k
        err, loss = _measure(params, static, loss_fn, task, batch, points, u_ref)
        seconds.append(elapsed)
        errors.append(float(err))
        losses.append(float(loss))
    trace = TimedTrace(steps, tuple(seconds), tuple(errors), tuple(losses), compile_seconds)
    return params, trace
