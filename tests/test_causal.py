"""Causal weighting of the residual: the formula, its gradient, its residual vector, and
what it means inside an inner loop."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import metapinn as mp

from .helpers import tree_allclose


def test_term_and_weights_match_the_formula():
    causal = mp.training.CausalWeights(tol=2.0, chunks=3)
    # times in [0, 1]: chunks [0, 1/3), [1/3, 2/3), [2/3, 1]
    t = jnp.array([0.05, 0.2, 0.4, 0.5, 0.6, 0.9, 1.0])
    r = jnp.array([1.0, 3.0, 2.0, 0.5, 1.5, 4.0, 2.0])
    chunk_means = np.array([(1 + 9) / 2, (4 + 0.25 + 2.25) / 3, (16 + 4) / 2])
    weights = np.exp(-2.0 * np.array([0.0, chunk_means[0], chunk_means[0] + chunk_means[1]]))
    losses, counts, _ = causal.chunk_losses(r, t, 0.0, 1.0)
    assert np.allclose(losses, chunk_means, rtol=1e-14)
    assert np.array_equal(counts, [2, 3, 2])
    assert np.allclose(causal.weights(losses), weights, rtol=1e-14)
    expected = float(np.sum(weights * chunk_means) / 3)
    assert float(causal.term(r, t, 0.0, 1.0)) == pytest.approx(expected, rel=1e-14)
    scales = causal.point_scales(r, t, 0.0, 1.0)
    assert float(jnp.sum(scales * r**2)) == pytest.approx(expected, rel=1e-14)


def test_zero_tolerance_is_the_mean_of_chunk_means():
    t = jnp.linspace(0.0, 0.999, 40)  # 10 points in each of 4 chunks
    r = jr.normal(jr.key(0), (40,))
    term = mp.training.CausalWeights(tol=0.0, chunks=4).term(r, t, 0.0, 1.0)
    assert jnp.allclose(term, jnp.mean(r**2), rtol=1e-13)


def _problem(getkey):
    pde = mp.AllenCahn()
    net = mp.nn.EmbeddedMLP(0, 8, 2, period=2.0, key=getkey())
    batch = mp.sample_collocation(getkey(), pde, 40, 10, 8)
    return pde, net, batch, mp.AllenCahnTask(jnp.asarray(1e-3))


def test_gradient_holds_the_weights(getkey):
    pde, net, batch, task = _problem(getkey)
    causal = mp.training.CausalWeights(tol=5.0, chunks=4)
    loss = mp.PINNLoss(pde, causal=causal)
    value, grads = eqx.filter_jit(loss.value_and_grad)(net, task, batch)
    t = batch.interior[:, 1]
    residual = pde.residual(net.derivatives(batch.interior, pde.jet_needs[0]), task)
    w = causal.weights(causal.chunk_losses(residual, t, pde.t_min, pde.t_max)[0])
    assert jnp.min(w) < 0.99  # the weights do act

    def held(model):  # the same loss with the weights as constants
        terms = mp.loss_terms(model, pde, task, batch)
        r = pde.residual(model.derivatives(batch.interior, pde.jet_needs[0]), task)
        losses = causal.chunk_losses(r, t, pde.t_min, pde.t_max)[0]
        return jnp.sum(w * losses) / causal.chunks + terms.initial + terms.boundary

    expected_value, expected = eqx.filter_jit(eqx.filter_value_and_grad(held))(net)
    assert jnp.allclose(value, expected_value, rtol=1e-12)
    assert tree_allclose(grads, expected, rtol=1e-9, atol=1e-14)
    assert not tree_allclose(grads, eqx.filter_grad(mp.PINNLoss(pde))(net, task, batch))


def test_residual_vector_squares_to_the_loss(getkey):
    pde, net, batch, task = _problem(getkey)
    loss = mp.PINNLoss(pde, weights=(2.0, 10.0, 1.0), causal=mp.training.CausalWeights(3.0, 8))
    r = loss.residuals(net, task, batch)
    assert jnp.allclose(jnp.sum(r**2), loss(net, task, batch), rtol=1e-12)


def test_an_inner_loop_reweights_at_every_step(getkey):
    pde, net, batch, task = _problem(getkey)
    loss = mp.PINNLoss(pde, causal=mp.training.CausalWeights(tol=5.0, chunks=4))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    adapted, _ = mp.adapt(params, static, loss, task, batch, steps=3, optimizer=0.05)
    p = params
    for _ in range(3):  # the oracle: each step the causal loss at the current parameters
        g = eqx.filter_grad(lambda q: loss(eqx.combine(q, static), task, batch))(p)
        p = jax.tree_util.tree_map(lambda a, b: a - 0.05 * b, p, g)
    assert tree_allclose(adapted, p, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: mp.training.CausalWeights(tol=-1.0), "tol"),
        (lambda: mp.training.CausalWeights(tol=float("nan")), "tol"),
        (lambda: mp.training.CausalWeights(chunks=0), "chunks"),
    ],
)
def test_bad_settings_are_named(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_config_turns_it_on_for_every_method():
    from metapinn._experiment._problem import build_problem

    config = mp.experiment.ExperimentConfig(family="allen-cahn", causal_chunks=16, causal_tol=0.5)
    loss = build_problem(config).loss(conditioned=True)
    assert loss.loss.causal == mp.training.CausalWeights(0.5, 16)
    assert config.method("multitask").run_settings(config, 0)["causal_chunks"] == 16
    plain = mp.experiment.ExperimentConfig(family="allen-cahn")
    assert build_problem(plain).loss().causal is None
    assert "causal_chunks" not in plain.method("multitask").run_settings(plain, 0)
    with pytest.raises(mp.experiment.ConfigError, match="causal_tol=-1.0"):
        mp.experiment.ExperimentConfig(causal_tol=-1.0)
