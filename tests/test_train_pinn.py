"""Single-task training from scratch: gradient-norm and NTK balancing against hand
computations, the schedule, the trainer against a Python loop."""

import dataclasses
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import metapinn as mp
from metapinn._balance import term_gradient_norms, term_ntk_traces

from .helpers import tree_allclose


def _problem(getkey, period=None):
    pde = mp.Burgers() if period is None else mp.Convection()
    net = mp.nn.EmbeddedMLP(0, 8, 2, period=period, key=getkey())
    batch = mp.sample_collocation(getkey(), pde, 24, 8, 6)
    task = (
        mp.BurgersTask(jnp.asarray(0.02)) if period is None else mp.ConvectionTask(jnp.asarray(5.0))
    )
    return pde, net, batch, task


def test_term_gradient_norms_by_hand(getkey):
    pde, net, batch, task = _problem(getkey)
    norms = term_gradient_norms(net, pde, task, batch)
    for i, name in enumerate(("residual", "initial", "boundary")):
        g = eqx.filter_grad(lambda m, n=name: getattr(mp.loss_terms(m, pde, task, batch), n))(net)
        flat = jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(g)])
        assert float(norms[i]) == pytest.approx(float(jnp.linalg.norm(flat)), rel=1e-12)


def test_grad_norm_weights_by_hand():
    balance = mp.training.GradNormBalance(every=10, momentum=0.9)
    norms = jnp.array([4.0, 1.0, 0.5])
    target = np.array([5.5 / 4.0, 5.5, 11.0])
    assert np.allclose(balance.target(norms), target, rtol=1e-14)
    old = jnp.array([1.0, 2.0, 3.0])
    assert np.allclose(balance.update(old, norms), 0.9 * np.array([1, 2, 3]) + 0.1 * target)


def test_a_vanishing_term_keeps_its_weight(getkey):
    pde, net, batch, task = _problem(getkey, period=2 * np.pi)
    norms = term_gradient_norms(net, pde, task, batch)
    assert float(norms[2]) < 1e-10 * float(norms[0])  # exactly periodic: no boundary pull
    new = mp.training.GradNormBalance(momentum=0.0).update(jnp.array([1.0, 1.0, 7.0]), norms)
    assert float(new[2]) == 7.0
    assert float(new[0]) == pytest.approx(float((norms[0] + norms[1]) / norms[0]), rel=1e-12)


@pytest.mark.parametrize("period", [None, 2 * np.pi])
def test_ntk_traces_by_hand(getkey, period):
    pde, net, batch, task = _problem(getkey, period=period)
    causal = mp.training.CausalWeights(1.0, 4)
    traces = term_ntk_traces(net, pde, task, batch, causal, chunk=5)
    jac = eqx.filter_jacrev(lambda m: mp.pinn_residuals(m, pde, task, batch, causal=causal))(net)
    rows = sum(jnp.sum(leaf.reshape(leaf.shape[0], -1) ** 2, 1) for leaf in jax.tree.leaves(jac))
    n_int, n_ic = batch.interior.shape[0], batch.initial.shape[0]
    expected = [rows[:n_int].sum(), rows[n_int : n_int + n_ic].sum(), rows[n_int + n_ic :].sum()]
    assert np.allclose(traces, expected, rtol=1e-12, atol=1e-25)
    if period is not None:  # exactly periodic: the boundary's kernel vanishes
        assert float(traces[2]) < 1e-20 * float(traces[0])


def test_ntk_balance_takes_the_first_points_and_pairs(getkey):
    pde, net, batch, task = _problem(getkey, period=2 * np.pi)
    balance = mp.training.NTKBalance(points=(10, 3, 4))
    b, half = batch.boundary, batch.boundary.shape[0] // 2
    pairs = jnp.concatenate([b[:2], b[half : half + 2]])
    first = mp.CollocationBatch(batch.interior[:10], batch.initial[:3], pairs)
    assert np.allclose(
        balance.statistic(net, pde, task, batch), term_ntk_traces(net, pde, task, first), rtol=1e-14
    )
    new = balance.update(jnp.array([1.0, 1.0, 0.0]), balance.statistic(net, pde, task, batch))
    s = term_ntk_traces(net, pde, task, first)
    assert float(new[2]) == 0.0  # off stays off
    assert float(new[0]) == pytest.approx(0.9 + 0.1 * float((s[0] + s[1]) / s[0]), rel=1e-12)


def test_schedule_warms_up_then_decays():
    schedule = mp.training.warmup_exponential_decay(1e-3, 10, 0.5, 100)
    assert float(schedule(0)) == 0.0
    assert float(schedule(5)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(110)) == pytest.approx(5e-4)
    assert float(schedule(210)) == pytest.approx(2.5e-4)
    with pytest.raises(ValueError, match="decay_rate"):
        mp.training.warmup_exponential_decay(1e-3, 10, 1.5, 100)


def test_trainer_equals_a_python_loop(getkey):
    pde, net, batch, task = _problem(getkey)
    optimizer = optax.adam(1e-2)
    trained, weights, log = mp.training.train_pinn(
        net, pde, task, batch, steps=7, optimizer=optimizer, key=getkey(),
        weights=(1.0, 2.0, 1.0), chunk=3,
    )  # fmt: skip
    assert log.steps == (3, 6, 7) and np.allclose(weights, [1.0, 2.0, 1.0])
    params, static = eqx.partition(net, eqx.is_inexact_array)
    state = optimizer.init(params)
    loss = mp.PINNLoss(pde, weights=(1.0, 2.0, 1.0))
    for _ in range(7):
        g = eqx.filter_grad(lambda p: loss(eqx.combine(p, static), task, batch))(params)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int
            updates, state = optimizer.update(g, state, params)
        params = optax.apply_updates(params, updates)
    assert tree_allclose(eqx.filter(trained, eqx.is_inexact_array), params, rtol=1e-9)


@pytest.mark.parametrize("kind", ["grad-norm", "ntk"])
def test_trainer_resamples_balances_and_lowers_the_loss(getkey, kind):
    pde, net, _, task = _problem(getkey)
    sampler = functools.partial(
        mp.sample_collocation, pde=pde, n_interior=32, n_initial=16, n_boundary=8
    )
    calls = []
    trained, weights, log = mp.training.train_pinn(
        net, pde, task, lambda k: sampler(k), steps=60,
        optimizer=optax.adam(mp.training.warmup_exponential_decay(1e-2, 5, 0.9, 50)), key=getkey(),
        balance=mp.training.GradNormBalance(every=20) if kind == "grad-norm"
        else mp.training.NTKBalance(every=20, points=(16, 8, 4)),
        evaluate=lambda m: calls.append(m) or 0.5,
    )  # fmt: skip
    assert log.steps == (20, 40, 60) and len(calls) == 3 and log.evaluation == (0.5,) * 3
    assert not np.allclose(weights, 1.0)  # balanced
    fixed = sampler(jr.key(3))
    before = mp.pinn_loss(net, pde, task, fixed)
    after = mp.pinn_loss(trained, pde, task, fixed)
    assert after < 0.7 * before


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"steps": -1}, "steps"), ({"chunk": 0}, "chunk")],
)
def test_bad_arguments_are_named(getkey, kwargs, match):
    pde, net, batch, task = _problem(getkey)
    settings = {"steps": 2, "optimizer": optax.adam(1e-3), "key": getkey(), **kwargs}
    with pytest.raises(ValueError, match=match):
        mp.training.train_pinn(net, pde, task, batch, **settings)
    with pytest.raises(ValueError, match="momentum"):
        mp.training.GradNormBalance(momentum=1.0)
    with pytest.raises(ValueError, match="points"):
        mp.training.NTKBalance(points=(16, 0, 4))
    with pytest.raises(ValueError, match="balance_by"):
        _ = dataclasses.replace(mp.experiment.recipe("heat"), balance_by="gradnorm").balance
