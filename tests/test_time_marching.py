"""Time-marching: a window in local time against the family's exact solution (residual,
hand-over of the value and the wave's velocity, boundary), one whole-interval window
against the family itself, the marched PINN's selection of windows, and a second-order
finisher after training."""

import functools

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import metapinn as mp
from metapinn._pde._wave import WAVE_MODES


class _ExactWave(mp.AbstractPINN):
    """The wave's modal solution in the local time of the window [start, start + length]."""

    c: float
    start: float
    length: float

    def __call__(self, points):
        x, tau = points[:, 0], points[:, 1]
        t = self.start + self.length * tau
        return sum(
            a * jnp.cos(self.c * n * jnp.pi * t) * jnp.sin(n * jnp.pi * x) for n, a in WAVE_MODES
        )


class _Constant(mp.AbstractPINN):
    value: float

    def __call__(self, points):
        return jnp.full(points.shape[0], self.value)


def test_a_window_of_the_exact_solution_has_no_error(getkey):
    pde, c = mp.Wave(), 1.3
    task = mp.WaveTask(jnp.asarray(c))
    first = mp.training.TimeWindow(pde, 0.0, 0.25)
    second = mp.training.TimeWindow(
        pde, 0.25, 0.5, previous=_ExactWave(c, 0.0, 0.25), previous_length=0.25
    )
    for window, net in ((first, _ExactWave(c, 0.0, 0.25)), (second, _ExactWave(c, 0.25, 0.5))):
        batch = mp.sample_collocation(getkey(), window, 64, 32, 16)
        terms = mp.loss_terms(net, window, task, batch)
        scale = mp.loss_terms(_Constant(0.3), window, task, batch)
        for name in ("residual", "initial", "boundary"):
            assert float(getattr(terms, name)) < 1e-20, name
        assert float(scale.initial) > 1e-2
    # Without the rescaling of time, the same network is no solution of the window.
    wrong = _ExactWave(c, 0.25, 1.0)
    batch = mp.sample_collocation(getkey(), second, 64, 32, 16)
    assert float(mp.loss_terms(wrong, second, task, batch).residual) > 1e-2
    # The hand-over carries the velocity: a previous window at rest is a wrong start.
    at_rest = mp.training.TimeWindow(
        pde, 0.25, 0.5, previous=_ExactWave(c, 0.0, 0.0), previous_length=0.25
    )
    assert float(mp.loss_terms(_ExactWave(c, 0.25, 0.5), at_rest, task, batch).initial) > 1e-2


def test_one_window_over_the_interval_is_the_family(getkey):
    pde = mp.Convection()
    net = mp.nn.EmbeddedMLP(0, 8, 2, period=2 * np.pi, key=getkey())
    task = mp.ConvectionTask(jnp.asarray(7.0))
    batch = mp.sample_collocation(getkey(), pde, 40, 16, 8)
    whole = mp.training.TimeWindow(pde, pde.t_min, pde.t_max - pde.t_min)
    causal = mp.training.CausalWeights(1.0, 4)
    windowed = mp.loss_terms(net, whole, task, batch, causal)
    family = mp.loss_terms(net, pde, task, batch, causal)
    for name in ("residual", "initial", "boundary"):
        a, b = float(getattr(windowed, name)), float(getattr(family, name))
        assert a == pytest.approx(b, rel=1e-13), name


def test_the_marched_pinn_reads_each_window_in_local_time():
    marched = mp.training.MarchedPINN(
        (_Constant(1.0), _Constant(2.0), _Constant(3.0)), (0.0, 0.2, 0.6, 1.0)
    )
    t = jnp.array([0.0, 0.19, 0.2, 0.5, 0.6, 1.0])
    values = marched(jnp.stack([jnp.zeros_like(t), t], axis=1))
    assert np.array_equal(values, [1.0, 1.0, 2.0, 2.0, 3.0, 3.0])
    exact = mp.training.MarchedPINN(
        (_ExactWave(1.0, 0.0, 0.5), _ExactWave(1.0, 0.5, 0.5)), (0.0, 0.5, 1.0)
    )
    points = jr.uniform(jr.key(0), (50, 2))
    assert np.allclose(exact(points), _ExactWave(1.0, 0.0, 1.0)(points), atol=1e-13)


def test_bad_windows_are_named():
    with pytest.raises(ValueError, match="edges"):
        mp.training.MarchedPINN((_Constant(1.0),), (0.0, 0.5, 1.0))
    with pytest.raises(ValueError, match="windows"):
        mp.training.window_edges(0.0, 1.0, 0)
    with pytest.raises(ValueError, match="length"):
        mp.training.TimeWindow(mp.Wave(), 0.0, 0.0)
    with pytest.raises(ValueError, match=r"outside the family's interval"):
        mp.training.TimeWindow(mp.Wave(), 0.75, 0.5)


def test_marching_trains_each_window_from_the_previous_end(getkey):
    pde = mp.Convection()
    net = mp.nn.EmbeddedMLP(0, 8, 2, period=2 * np.pi, key=getkey())
    task = mp.ConvectionTask(jnp.asarray(3.0))
    sampler = functools.partial(mp.sample_collocation, n_interior=32, n_initial=16, n_boundary=4)
    steps = []
    marched, logs = mp.training.train_marching(
        net, pde, task, lambda k, w: sampler(k, w), windows=2, steps=30, optimizer=optax.adam(1e-2),
        key=getkey(), weights=(1.0, 1.0, 0.0), chunk=10, progress=lambda n, _: steps.append(n),
    )  # fmt: skip
    assert marched.edges == (0.0, 0.5, 1.0) and len(logs) == 2
    assert steps == [10, 20, 30, 40, 50, 60]
    second = mp.training.TimeWindow(pde, 0.5, 0.5, previous=marched.windows[0])
    x = jnp.linspace(0.0, 2 * np.pi, 7)
    assert np.allclose(
        second.initial_condition(x), marched.windows[0](jnp.stack([x, jnp.ones_like(x)], 1))
    )
    for window, net_k in zip(
        (mp.training.TimeWindow(pde, 0.0, 0.5), second), marched.windows, strict=True
    ):
        batch = sampler(jr.key(5), window)
        assert float(mp.pinn_loss(net_k, window, task, batch)) < float(
            mp.pinn_loss(net, window, task, batch)
        )


def test_a_gauss_newton_finisher_lowers_the_trained_loss(getkey):
    pde = mp.Burgers()
    net = mp.nn.EmbeddedMLP(0, 8, 2, key=getkey())
    task = mp.BurgersTask(jnp.asarray(0.05))
    batch = mp.sample_collocation(getkey(), pde, 48, 16, 8)
    common = {"steps": 20, "optimizer": optax.adam(1e-2), "key": jr.key(1), "chunk": 10}
    adam, _, _ = mp.training.train_pinn(net, pde, task, batch, **common)
    finished, _, log = mp.training.train_pinn(
        net, pde, task, batch, finisher=mp.GaussNewton(cg_steps=40), finish_steps=10, **common
    )
    assert log.steps == (10, 20, 30)
    before = float(mp.pinn_loss(adam, pde, task, batch))
    after = float(mp.pinn_loss(finished, pde, task, batch))
    assert after < 0.5 * before and log.loss[-1] == pytest.approx(after, rel=1e-9)
    with pytest.raises(ValueError, match="finish_steps"):
        mp.training.train_pinn(net, pde, task, batch, finish_steps=-1, **common)
