r"""Training one PINN on one task from scratch, with the parts of the accurate-PINN
recipes: points re-sampled every step, causal weighting, loss terms balanced by their
gradient norms, Adam with warm-up and exponential decay.

(Few-shot adaptation from a trained initialisation is [`metapinn.adapt`][]; this is the
long single-task run that `metapinn solve` makes from scratch, and the baseline every
initialisation is measured against.)
"""

import math
import time
from collections.abc import Callable
from typing import Any, cast

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PyTree

from ._balance import AbstractBalance, terms_vector
from ._causal import CausalWeights
from ._few_shot import adapt_recording
from ._loss import PINNLoss
from ._meta._gradients import optimizer_update
from ._pde._base import AbstractPDE
from ._sampling import CollocationBatch


def warmup_exponential_decay(
    learning_rate: float, warmup: int, decay_rate: float, decay_steps: int
) -> optax.Schedule:
    """A learning-rate schedule that rises linearly from 0 to `learning_rate` over
    `warmup` steps, then decays by `decay_rate` every `decay_steps` steps
    (continuously): the schedule of Wang et al. (2023)'s experiments (Adam at 1e-3,
    decay 0.9 every 2000 steps in their configs). Use it as `optax.adam(schedule)`.

    **Raises:** `ValueError` naming a bad value."""
    if not (math.isfinite(learning_rate) and learning_rate > 0):
        raise ValueError(f"learning_rate must be finite and > 0, got {learning_rate!r}")
    if not 0 < decay_rate <= 1:
        raise ValueError(f"decay_rate must be in (0, 1], got {decay_rate!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    if decay_steps < 1:
        raise ValueError(f"decay_steps must be >= 1, got {decay_steps!r}")
    decay = optax.exponential_decay(learning_rate, decay_steps, decay_rate)
    if not warmup:
        return decay
    rise = optax.linear_schedule(0.0, learning_rate, warmup)
    return optax.join_schedules([rise, decay], [warmup])


class TrainLog(eqx.Module):
    """What [`metapinn.training.train_pinn`][] records at the end of each chunk of steps.

    **Fields:** `steps`, `seconds` (training time so far, compilation and the
    `evaluate` callback excluded), `loss` (the weighted loss at the chunk's last
    step), `weights` (the loss-term weights then, one row per record), `evaluation`
    (what `evaluate` returned, e.g. the rel-L2 against the reference; `nan` without
    one), `compile_seconds`."""

    steps: tuple[int, ...]
    seconds: tuple[float, ...]
    loss: tuple[float, ...]
    weights: tuple[tuple[float, float, float], ...]
    evaluation: tuple[float, ...]
    compile_seconds: float


def train_pinn(
    model: Any,
    pde: AbstractPDE,
    task: PyTree,
    points: CollocationBatch | Callable[[jax.Array], CollocationBatch],
    *,
    steps: int,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    causal: CausalWeights | None = None,
    balance: AbstractBalance | None = None,
    chunk: int = 500,
    evaluate: Callable[[Any], float] | None = None,
    progress: Callable[[int, float], object] | None = None,
    finisher: Any = None,
    finish_steps: int = 0,
    finish_points: CollocationBatch | None = None,
) -> tuple[Any, Float[Array, " 3"], TrainLog]:
    r"""Train `model` on one task: `steps` steps of `optimizer` on the weighted PINN loss
    $\lambda_r\mathcal L_r + \lambda_0\mathcal L_0 + \lambda_b\mathcal L_b$ (the
    residual term causally weighted if `causal`), the weights balanced by `balance`,
    in compiled chunks of `chunk` steps (one `lax.scan` each; balancing between chunks,
    so `chunk` is `balance.every` when balancing).

    **Arguments:**

    - `model`: a plain PINN (any [`metapinn.AbstractPINN`][]); its floating-point
      arrays are trained.
    - `pde`, `task`: the family and the member.
    - `points`: a fixed [`metapinn.CollocationBatch`][], or a sampler
      `points(key) -> batch` drawn afresh every step (e.g.
      `partial(sample_collocation, pde=..., n_interior=...)` with the key first).
    - `steps`: the number of steps (a multiple of `chunk` is timed most evenly).
    - `optimizer`: an optax transformation, e.g. `optax.adam` of a
      [`metapinn.training.warmup_exponential_decay`][] schedule.
    - `key`: the PRNG key of the point draws.
    - `weights`: the initial $(\lambda_r, \lambda_0, \lambda_b)$ (default all 1).
    - `causal`, `balance`: a [`metapinn.training.CausalWeights`][] and a
      [`metapinn.training.GradNormBalance`][] or [`metapinn.training.NTKBalance`][],
      or `None` (default) for neither.
    - `chunk`: steps per compiled scan (default 500).
    - `evaluate`: `evaluate(model) -> float`, called after each chunk (not timed).
    - `progress`: `progress(steps_done, loss)`, called after each chunk.
    - `finisher`, `finish_steps`, `finish_points`: after the `steps`, `finish_steps`
      steps of a second-order adapter (e.g. [`metapinn.GaussNewton`][] or
      [`metapinn.LBFGS`][]) on the loss with the final weights, on the fixed batch
      `finish_points` (default: one draw of `points`); recorded as one more entry of
      the log, at `steps + finish_steps`. Default: no finisher.

    **Returns:** `(model, weights, log)`: the trained model, the final weights, and a
    [`metapinn.training.TrainLog`][].

    **Raises:** `ValueError` for `steps < 0`, `chunk < 1` or `finish_steps < 0`.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(finish_steps, bool) or not isinstance(finish_steps, int) or finish_steps < 0:
        raise ValueError(f"finish_steps must be an integer >= 0, got {finish_steps!r}")
    if balance is not None:
        chunk = balance.every
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(f"chunk must be an integer >= 1, got {chunk!r}")
    params, static = eqx.partition(model, eqx.is_inexact_array)
    dtype = jax.tree.leaves(params)[0].dtype
    lam = jnp.asarray(weights, dtype)
    sampler = points if callable(points) else (lambda _key: points)

    def objective(p, lam, batch):
        terms = terms_vector(eqx.combine(p, static), pde, task, batch, causal)
        return jnp.dot(lam, terms)

    @eqx.filter_jit
    def run(params, opt_state, key, lam, length):
        def body(carry, _):
            p, s, k = carry
            k, draw = jax.random.split(k)
            loss, grads = jax.value_and_grad(objective)(p, lam, sampler(draw))
            updates, s = optimizer_update(optimizer, grads, s, p)
            return (optax.apply_updates(p, updates), s, k), loss

        (params, opt_state, key), losses = jax.lax.scan(
            body, (params, opt_state, key), length=length
        )
        return params, opt_state, key, losses[-1]

    @eqx.filter_jit
    def rebalance(params, lam, key):
        assert balance is not None
        model = eqx.combine(params, static)
        return balance.update(lam, balance.statistic(model, pde, task, sampler(key), causal))

    opt_state = optimizer.init(params)
    log: dict[str, list] = {k: [] for k in ("steps", "seconds", "loss", "weights", "evaluation")}
    done, seconds, compile_seconds = 0, 0.0, 0.0
    compiled: dict[int | str, Any] = {}
    while done < steps:
        length = min(chunk, steps - done)
        if balance is not None:
            key, draw = jax.random.split(key)
            if "rebalance" not in compiled:  # its compilation is not training time
                t0 = time.perf_counter()
                lowered = cast(Any, rebalance).lower(params, lam, draw)  # filtered jit
                compiled["rebalance"] = lowered.compile()
                compile_seconds += time.perf_counter() - t0
            t0 = time.perf_counter()
            lam = jax.block_until_ready(compiled["rebalance"](params, lam, draw))
            seconds += time.perf_counter() - t0
        if length not in compiled:
            t0 = time.perf_counter()
            lowered = cast(Any, run).lower(params, opt_state, key, lam, length)  # filtered jit
            compiled[length] = lowered.compile()
            compile_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        params, opt_state, key, loss = jax.block_until_ready(
            compiled[length](params, opt_state, key, lam, length)
        )
        seconds += time.perf_counter() - t0
        done += length
        model = eqx.combine(params, static)
        log["steps"].append(done)
        log["seconds"].append(seconds)
        log["loss"].append(float(loss))
        log["weights"].append(tuple(float(w) for w in np.asarray(lam)))
        log["evaluation"].append(float("nan") if evaluate is None else float(evaluate(model)))
        if progress is not None:
            progress(done, float(loss))
    if finisher is not None and finish_steps:
        if finish_points is None:
            finish_points = sampler(jax.random.fold_in(key, 1))
        loss_fn = PINNLoss(pde, weights=tuple(float(w) for w in np.asarray(lam)), causal=causal)
        finish = eqx.filter_jit(
            lambda p: adapt_recording(
                p, static, loss_fn, task, finish_points, steps=(finish_steps,), optimizer=finisher
            )
        )
        t0 = time.perf_counter()
        lowered = cast(Any, finish).lower(params).compile()
        compile_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        trace = jax.block_until_ready(lowered(params))
        seconds += time.perf_counter() - t0
        params = jax.tree.map(lambda leaf: leaf[0], trace.params)
        done += finish_steps
        model = eqx.combine(params, static)
        log["steps"].append(done)
        log["seconds"].append(seconds)
        log["loss"].append(float(trace.losses[0]))
        log["weights"].append(tuple(float(w) for w in np.asarray(lam)))
        log["evaluation"].append(float("nan") if evaluate is None else float(evaluate(model)))
        if progress is not None:
            progress(done, float(trace.losses[0]))
    return (
        eqx.combine(params, static),
        lam,
        TrainLog(**{k: tuple(v) for k, v in log.items()}, compile_seconds=compile_seconds),
    )
