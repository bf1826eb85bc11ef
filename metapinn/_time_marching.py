r"""Time-marching: one long time interval solved as a sequence of short windows, each by
its own network, each window's initial data the previous window's solution at its end
(Wight and Zhao 2020, "Solving Allen–Cahn and Cahn–Hilliard equations using the adaptive
physics informed neural networks"; Wang, Sankaran, Perdikaris 2022, "Respecting
causality", §4; Krishnapriyan et al. 2021's "sequence-to-sequence" learning).

A window $[t_k, t_{k+1}]$ is posed to its network in local time
$\tau = (t - t_k)/\Delta_k \in [0, 1]$ ([`metapinn.training.TimeWindow`][]): a solution
that travels or oscillates $W$ times as fast over the whole interval is, to each of $W$
windows, as slow as over one, so a network's spectral bias in $t$ costs $W$ times less.
The price: $W$ trainings, and the error of each window's end carried into the next.
"""

import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PyTree

from ._balance import AbstractBalance
from ._causal import CausalWeights
from ._custom_types import Errors, Points, Values
from ._pde._base import AbstractPDE
from ._pinn import AbstractPINN, Derivatives, Needs, check_needs
from ._sampling import CollocationBatch
from ._train_pinn import TrainLog, train_pinn


def _in_physical_time(derivs: Derivatives, length: float) -> Derivatives:
    """The derivatives in $t$ of a network of local time $\\tau = (t - t_k)/\\Delta$:
    $u_t = u_\\tau/\\Delta$, $u_{tt} = u_{\\tau\\tau}/\\Delta^2$."""
    return Derivatives(
        u=derivs.u,
        u_x=derivs.u_x,
        u_t=None if derivs.u_t is None else derivs.u_t / length,
        u_xx=derivs.u_xx,
        u_tt=None if derivs.u_tt is None else derivs.u_tt / length**2,
    )


class TimeWindow(AbstractPDE):
    r"""The window $[t_k, t_k + \Delta]$ of a family's problem, in local time
    $\tau = (t - t_k)/\Delta \in [0, 1]$: a PDE in its own right, so every loss, sampler
    and trainer takes it as it takes the family.

    Its residual is the family's with the time derivatives of the window's network
    rescaled ($u_t = u_\tau/\Delta$, $u_{tt} = u_{\tau\tau}/\Delta^2$), times
    $\Delta^p$ for a family of order $p$ in time (so the window of convection at speed
    $\beta$ poses the residual of speed $\beta\Delta$ on unit time, and the loss
    weights mean what they mean over the whole interval); its boundary
    error the family's at the physical times. Its initial data: the family's initial
    condition for the first window; for a later one, the previous window's network at
    its end ($\tau = 1$): the value and every derivative the family's initial error
    reads (the wave's velocity $u_t$), so that the initial error is
    $[u - u_{\text{prev}},\ \Delta(u_t - u_{t,\text{prev}}), \dots]$ at $\tau = 0$:
    a time derivative's error in local units ($\Delta^k$ for the $k$-th), as the
    window's residual is.

    **Fields:** `pde` (the family), `previous` (the previous window's network, or
    `None` for the first window), `start` ($t_k$), `length` ($\Delta$), and
    `previous_length` (the previous window's $\Delta$; static floats).
    """

    pde: AbstractPDE
    previous: AbstractPINN | None
    start: float = eqx.field(static=True)
    length: float = eqx.field(static=True)
    previous_length: float = eqx.field(static=True)
    x_min: float = eqx.field(static=True)
    x_max: float = eqx.field(static=True)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def __init__(
        self,
        pde: AbstractPDE,
        start: float,
        length: float,
        previous: AbstractPINN | None = None,
        previous_length: float | None = None,
    ):
        """**Arguments:** the family `pde`; the window's `start` time and `length`
        (> 0); the `previous` window's network and its `previous_length` (default: the
        same length), or `None` for the first window.

        **Raises:** `ValueError` for a length that is not finite and > 0, or a window
        outside the family's time interval."""
        for name, value in (("length", length), ("previous_length", previous_length)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"a time window's {name} must be finite and > 0, got {value!r}")
        tol = 1e-9 * (pde.t_max - pde.t_min)
        if start < pde.t_min - tol or start + length > pde.t_max + tol:
            raise ValueError(
                f"the time window [{start}, {start + length}] is outside the family's "
                f"interval [{pde.t_min}, {pde.t_max}]"
            )
        self.pde = pde
        self.previous = previous
        self.start = float(start)
        self.length = float(length)
        self.previous_length = float(length if previous_length is None else previous_length)
        self.x_min, self.x_max = pde.x_min, pde.x_max

    @property
    def jet_needs(self) -> tuple[Needs, Needs, Needs]:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.pde.jet_needs

    @property
    def periodic(self) -> bool:  # pyright: ignore[reportIncompatibleVariableOverride]
        return self.pde.periodic

    def check_task(self, task: PyTree, out: PyTree) -> PyTree:
        return self.pde.check_task(task, out)

    def physical_time(self, tau: Array) -> Array:
        """$t = t_k + \\tau\\Delta$."""
        return self.start + tau * self.length

    @property
    def time_order(self) -> int:
        """The order of the family's residual in time: 2 if it reads `u_tt`, else 1."""
        return 2 if "u_tt" in check_needs(self.pde.jet_needs[0]) else 1

    def residual(self, derivs: Derivatives, task: PyTree) -> Values:
        physical = self.pde.residual(_in_physical_time(derivs, self.length), task)
        return self.length**self.time_order * physical

    def initial_condition(self, x: Float[Array, " n"]) -> Values:
        if self.previous is None:
            return self.pde.initial_condition(x)
        return self.previous(jnp.stack([x, jnp.ones_like(x)], axis=1))

    def initial_error(self, derivs: Derivatives, points: Points, task: PyTree) -> Errors:
        here = _in_physical_time(derivs, self.length)
        if self.previous is None:
            return self._in_local_units(self.pde.initial_error(here, points, task))
        needs = check_needs(self.pde.jet_needs[1])
        at_end = points.at[:, 1].set(1.0)
        there = _in_physical_time(self.previous.derivatives(at_end, needs), self.previous_length)
        return self._in_local_units(
            jnp.concatenate([getattr(here, n) - getattr(there, n) for n in ("u", *needs)])
        )

    def _in_local_units(self, errors: Errors) -> Errors:
        r"""The initial errors of the time derivatives (a family's blocks after the
        value's, in the order of `jet_needs[1]`) times $\Delta^k$ for the $k$-th
        derivative: the errors of the local-time problem, so that a window weighs
        value and velocity as the whole interval does at $\Delta = 1$. Errors not
        in equal blocks are left as they are."""
        needs = check_needs(self.pde.jet_needs[1])
        if not needs or errors.shape[0] % (1 + len(needs)):
            return errors
        blocks = jnp.split(errors, 1 + len(needs))
        orders = [0] + [name.count("t") for name in needs]
        return jnp.concatenate([self.length**k * b for k, b in zip(orders, blocks, strict=True)])

    def boundary_error(self, derivs: Derivatives, points: Points, task: PyTree) -> Errors:
        physical = points.at[:, 1].set(self.physical_time(points[:, 1]))
        return self.pde.boundary_error(_in_physical_time(derivs, self.length), physical, task)

    def boundary_condition(self, t: Float[Array, " n"], x: Float[Array, " n"]) -> Values:
        return self.pde.boundary_condition(self.physical_time(t), x)


class MarchedPINN(AbstractPINN):
    r"""The solution of a time-marched training: window $k$'s network on
    $[t_k, t_{k+1}]$, read in its local time $\tau = (t - t_k)/(t_{k+1} - t_k)$ (a point
    on an edge belongs to the later window; the last window includes its end).

    Its derivatives come from the generic forward path; each network is evaluated at
    every point and the right one selected, so a call costs all windows'.

    **Fields:** `windows` (the networks, in time order), `edges` ($t_0 < \dots < t_W$,
    static floats).
    """

    windows: tuple[AbstractPINN, ...]
    edges: tuple[float, ...] = eqx.field(static=True)

    def __check_init__(self):
        if len(self.edges) != len(self.windows) + 1 or not all(
            a < b for a, b in zip(self.edges[:-1], self.edges[1:], strict=True)
        ):
            raise ValueError(
                f"a marched PINN needs len(windows) + 1 increasing edges; got "
                f"{len(self.windows)} windows and edges {self.edges}"
            )

    def __call__(self, points: Points) -> Values:
        x, t = points[:, 0], points[:, 1]
        values = []
        for net, lo, hi in zip(self.windows, self.edges[:-1], self.edges[1:], strict=True):
            tau = (t - lo) / (hi - lo)
            values.append(net(jnp.stack([x, tau], axis=1)))
        index = jnp.searchsorted(jnp.asarray(self.edges[1:-1], t.dtype), t, side="right")
        return jnp.take_along_axis(jnp.stack(values, axis=1), index[:, None], axis=1)[:, 0]


def window_edges(t_min: float, t_max: float, windows: int) -> tuple[float, ...]:
    """`windows` equal windows of `[t_min, t_max]`: their `windows + 1` edges.

    **Raises:** `ValueError` for `windows` not an integer >= 1."""
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ValueError(f"time windows must be an integer >= 1, got {windows!r}")
    return tuple(float(v) for v in np.linspace(t_min, t_max, windows + 1))


def train_marching(
    model: AbstractPINN,
    pde: AbstractPDE,
    task: PyTree,
    points: Callable[[jax.Array, AbstractPDE], CollocationBatch],
    *,
    windows: int,
    steps: int,
    optimizer: optax.GradientTransformation,
    key: jax.Array,
    weights: tuple[float, float, float] = (1.0, 1.0, 1.0),
    causal: CausalWeights | None = None,
    balance: AbstractBalance | None = None,
    chunk: int = 500,
    warm_start: bool = False,
    evaluate: Callable[[Any], float] | None = None,
    progress: Callable[[int, float], object] | None = None,
    finisher: Any = None,
    finish_steps: int = 0,
    finish_points: Callable[[jax.Array, AbstractPDE], CollocationBatch] | None = None,
) -> tuple[MarchedPINN, list[TrainLog]]:
    r"""Train `model`'s architecture on `task` window by window
    ([`metapinn.training.train_pinn`][] on each [`metapinn.training.TimeWindow`][]):
    `windows` equal windows of the family's time interval, `steps` steps each.

    **Arguments:** as [`metapinn.training.train_pinn`][], and

    - `points`: `points(key, window) -> batch`, the sampler of a window (e.g.
      `partial(sample_collocation, n_interior=...)`), drawn afresh every step.
    - `windows`: the number of windows (1: plain training, in local time).
    - `steps`: the steps of each window.
    - `warm_start`: start each window's network from the previous window's trained one
      instead of from `model` (default `False`: measured on convection at β = 10 in two
      windows of 2000 Adam + 20 Levenberg–Marquardt steps, the second window read
      rel-L2 1.0e-2 warm-started and 1.2e-3 from `model`).
    - `evaluate`: `evaluate(marched) -> float`, called after each chunk on the
      [`metapinn.training.MarchedPINN`][] of the windows trained so far and the
      current one (a window not yet reached is the current network, unused).
    - `progress`: `progress(steps_done, loss)`, counting every window's steps.
    - `finisher`, `finish_steps`: a second-order adapter's steps after each window's
      Adam steps (see [`metapinn.training.train_pinn`][]), on one draw of
      `finish_points(key, window)` (default: of `points`).

    **Returns:** `(marched, logs)`: the [`metapinn.training.MarchedPINN`][] and one
    [`metapinn.training.TrainLog`][] per window (its `steps` and `seconds` counted
    from the window's start).
    """
    edges = window_edges(pde.t_min, pde.t_max, windows)
    trained: list[AbstractPINN] = []
    logs: list[TrainLog] = []
    net = model
    for k in range(windows):
        window = TimeWindow(
            pde, edges[k], edges[k + 1] - edges[k], trained[-1] if trained else None
        )
        done_before = k * (steps + (finish_steps if finisher is not None else 0))

        def marched_now(m, k=k):
            rest = [m] * (windows - k)
            return MarchedPINN(tuple(trained) + tuple(rest), edges)

        net, _, log = train_pinn(
            net if (warm_start and trained) else model,
            window,
            task,
            lambda key, window=window: points(key, window),
            steps=steps,
            optimizer=optimizer,
            key=jax.random.fold_in(key, k),
            weights=weights,
            causal=causal,
            balance=balance,
            chunk=chunk,
            evaluate=None if evaluate is None else (lambda m: evaluate(marched_now(m))),
            progress=None
            if progress is None
            else (lambda n, loss, d=done_before: progress(d + n, loss)),
            finisher=finisher,
            finish_steps=finish_steps,
            finish_points=None
            if finish_points is None
            else finish_points(jax.random.fold_in(key, windows + k), window),
        )
        trained.append(net)
        logs.append(log)
    return MarchedPINN(tuple(trained), edges), logs
