"""The parameter-conditioned PINN u(x, t, c): its forward pass and jet against plain
JAX, its loss's hand-assembled gradient against reverse mode, and its use in the
inner loop and the meta-step, in float64."""

import math
import re
import types

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import metapinn as mp

from .helpers import tree_allclose


NU_LOW, NU_HIGH = 0.005, 0.05


def _randomised(key, model):
    """`model` with random biases and larger random condition weights, so that every
    column of the first layer matters."""
    keys = jr.split(key, len(model.layers))
    layers = tuple(
        layer + 0.3 * jr.normal(k, layer.shape, layer.dtype)
        for k, layer in zip(keys, model.layers, strict=True)
    )
    return eqx.tree_at(lambda m: m.layers, model, layers)


def _dense(model, points, condition):
    """The same network written as a plain MLP on the concatenated inputs [x, t, c]."""
    c = jnp.broadcast_to(condition[None], (points.shape[0], condition.shape[0]))
    h = jnp.concatenate([points, c], 1)
    for layer in model.layers[:-1]:
        h = model.activation(h @ layer[:, :-1].T + layer[:, -1][None])
    last = model.layers[-1]
    return (h @ last[:, :-1].T)[:, 0] + last[0, -1]


def _problem(key, *, width=6, depth=2, n_conditions=1):
    k_net, k_rand, k_pts = jr.split(key, 3)
    model = mp.ConditionedPINN(n_conditions, width=width, depth=depth, key=k_net)
    model = _randomised(k_rand, model)
    pde = mp.Burgers()
    batch = mp.sample_collocation(k_pts, pde, 16, 6, 3)
    loss_fn = mp.ConditionedLoss(mp.PINNLoss(pde), mp.LogScaledFeature(NU_LOW, NU_HIGH))
    return model, loss_fn, batch


@pytest.mark.parametrize("n_conditions", [1, 3])
def test_forward_is_an_mlp_on_concatenated_inputs(getkey, n_conditions):
    model = mp.ConditionedPINN(n_conditions, width=5, depth=2, key=getkey())
    assert model.layers[0].shape == (5, 2 + n_conditions + 1)
    assert all(jnp.all(layer[:, -1] == 0) for layer in model.layers)
    model = _randomised(getkey(), model)
    points = jr.uniform(getkey(), (7, 2), minval=-1.0, maxval=1.0)
    condition = jr.normal(getkey(), (n_conditions,))
    expected = _dense(model, points, condition)
    assert jnp.allclose(model(points, condition), expected, rtol=1e-12, atol=1e-12)
    assert jnp.allclose(model.bind(condition)(points), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("activation", [jnp.tanh, jnp.sin])
def test_bound_jet_matches_nested_autodiff(getkey, activation):
    model = mp.ConditionedPINN(2, width=6, depth=2, activation=activation, key=getkey())
    model = _randomised(getkey(), model)
    points = jr.uniform(getkey(), (9, 2), minval=-1.0, maxval=1.0)
    condition = jr.normal(getkey(), (2,))
    x, t = points[:, 0], points[:, 1]

    def u(x, t, c):
        return _dense(model, jnp.stack([x, t])[None], c)[0]

    d = model.bind(condition).derivatives(points)
    at = (x, t, condition)
    vmap = lambda f: jax.jit(jax.vmap(f, in_axes=(0, 0, None)))
    assert jnp.allclose(d.u, vmap(u)(*at), rtol=1e-12, atol=1e-12)
    assert jnp.allclose(d.u_x, vmap(jax.grad(u, 0))(*at), rtol=1e-10, atol=1e-12)
    assert jnp.allclose(d.u_t, vmap(jax.grad(u, 1))(*at), rtol=1e-10, atol=1e-12)
    assert jnp.allclose(d.u_xx, vmap(jax.grad(jax.grad(u, 0), 0))(*at), rtol=1e-10, atol=1e-12)


def test_glorot_over_the_full_fan_in(getkey):
    model = mp.ConditionedPINN(3, width=64, depth=1, key=getkey())
    # Var(W) = 2 / (fan_in + fan_out) = 2 / (5 + 64) over all 320 first-layer weights.
    assert jnp.std(model.layers[0][:, :-1]) == pytest.approx((2 / 69) ** 0.5, rel=0.15)
    assert (model.n_conditions, model.width, model.depth) == (3, 64, 1)


def test_condition_takes_the_parameter_dtype(getkey):
    model = mp.ConditionedPINN(1, width=4, depth=1, dtype=jnp.float32, key=getkey())
    u = model(jnp.zeros((3, 2), jnp.float32), jnp.array([0.5]))
    assert u.dtype == jnp.float32


def test_loss_value_and_grad_matches_reverse_mode(getkey):
    model, loss_fn, batch = _problem(getkey())
    task = mp.BurgersTask(0.013)
    loss, grads = jax.jit(loss_fn.value_and_grad)(model, task, batch)
    ref_loss, ref_grads = eqx.filter_jit(eqx.filter_value_and_grad(loss_fn))(model, task, batch)
    assert loss == pytest.approx(float(ref_loss), rel=1e-13)
    assert tree_allclose(grads, ref_grads, rtol=1e-10, atol=1e-10)
    assert jnp.any(grads.layers[0][:, 2] != 0)  # W_c gets a gradient
    bound = loss_fn.bind(model, task)
    assert loss == pytest.approx(float(mp.pinn_loss(bound, mp.Burgers(), task, batch)), rel=1e-13)


def test_bind_pullback_matches_autodiff_and_allows_none(getkey):
    model = _randomised(getkey(), mp.ConditionedPINN(2, width=4, depth=1, key=getkey()))
    condition = jr.normal(getkey(), (2,))
    pinn, pullback = model.bind_vjp(condition)
    cotangent = eqx.tree_at(
        lambda p: p.layers, pinn, tuple(jr.normal(getkey(), x.shape) for x in pinn.layers)
    )
    _, ref_pullback = eqx.filter_vjp(lambda m: m.bind(condition), model)
    assert tree_allclose(pullback(cotangent), ref_pullback(cotangent)[0], rtol=1e-13)
    partial = pullback(eqx.tree_at(lambda p: p.layers, cotangent, (None, cotangent.layers[1])))
    assert partial.layers[0] is None


def test_maml_hvp_matches_autodiff(getkey):
    model, loss_fn, support = _problem(getkey(), width=5)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 12, 5, 3)
    task = mp.BurgersTask(0.02)
    grads = {}
    for inner_vjp in ("hvp", "autodiff"):
        learner = mp.MAML(inner_steps=2, inner_optimizer=0.02, inner_vjp=inner_vjp)
        grads[inner_vjp], _ = jax.jit(learner.meta_gradient, static_argnums=(1, 2))(
            params, static, loss_fn, task, support, query
        )
    assert tree_allclose(grads["hvp"], grads["autodiff"], rtol=1e-9, atol=1e-13)
    assert jnp.any(grads["hvp"].layers[0][:, 2] != 0)


@pytest.mark.parametrize("learner", [mp.MultiTask(), mp.MAML(inner_steps=2)], ids=repr)
def test_meta_step_trains_the_condition_weights(getkey, learner):
    model, loss_fn, support = _problem(getkey(), width=5)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = optax.adam(1e-2)
    tasks = mp.BurgersTask(jnp.array([0.005, 0.015, 0.05]))
    new_params, _, info = mp.meta_step(
        learner, params, static, optimizer.init(params), optimizer, loss_fn, tasks, support
    )
    assert info.query_loss.shape == (3,)
    assert jnp.all(jnp.isfinite(info.query_loss))
    assert jnp.all(new_params.layers[0][:, 2] != params.layers[0][:, 2])
    # Each task's query loss is that of the network bound to its own features.
    if isinstance(learner, mp.MultiTask):
        for b, nu in enumerate(tasks.nu):
            task = mp.BurgersTask(nu)
            assert info.query_loss[b] == pytest.approx(float(loss_fn(model, task, support)))


def test_adapt_lowers_the_loss(getkey):
    model, loss_fn, batch = _problem(getkey(), width=5)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    task = mp.BurgersTask(0.01)
    adapted, losses = mp.adapt(params, static, loss_fn, task, batch, steps=5, optimizer=0.01)
    assert losses.shape == (5,)
    assert loss_fn(eqx.combine(adapted, static), task, batch) < losses[0]
    assert jnp.all(adapted.layers[0][:, 2] != params.layers[0][:, 2])


def test_bad_viscosity_is_caught_through_the_wrapped_loss(getkey):
    model, loss_fn, batch = _problem(getkey(), width=4)
    params, static = eqx.partition(model, eqx.is_inexact_array)

    @jax.jit
    def losses(nu):
        task = mp.BurgersTask(nu)
        return mp.adapt(params, static, loss_fn, task, batch, steps=1, optimizer=0.01)[1]

    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        losses(jnp.asarray(-0.01)).block_until_ready()


def test_log_scaled_feature():
    feature = mp.LogScaledFeature(NU_LOW, NU_HIGH)
    for nu, c in ((NU_LOW, -1.0), (NU_HIGH, 1.0), (math.sqrt(NU_LOW * NU_HIGH), 0.0)):
        value = feature(mp.BurgersTask(nu))
        assert value.shape == (1,)
        assert float(value[0]) == pytest.approx(c, abs=1e-12)
    assert jax.vmap(feature)(mp.BurgersTask(jnp.array([NU_LOW, NU_HIGH]))).shape == (2, 1)


def test_scaled_feature_is_floating_for_an_integer_field():
    """An integer field is divided in the default float dtype (the scale was cast to
    the field's integer dtype, 0.5 to 0); a float field keeps its own dtype."""
    feature = mp.ScaledFeature((0.5, 2.0), "a")
    value = feature(types.SimpleNamespace(a=jnp.array([1, 4])))
    assert value.dtype == jnp.zeros(()).dtype and value.tolist() == [2.0, 2.0]
    value = feature(types.SimpleNamespace(a=jnp.array([1.0, 4.0], dtype=jnp.float32)))
    assert value.dtype == jnp.float32 and value.tolist() == [2.0, 2.0]


@pytest.mark.parametrize(
    "low, high, match",
    [
        (0.0, 1.0, "low must be finite and > 0, got 0.0"),
        (-0.1, 1.0, "low must be finite and > 0, got -0.1"),
        (0.1, math.inf, "high must be finite and > 0, got inf"),
        (0.1, 0.1, "high must be > low, got low=0.1, high=0.1"),
        (0.5, 0.1, "high must be > low, got low=0.5, high=0.1"),
    ],
)
def test_bad_feature_range_is_rejected(low, high, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mp.LogScaledFeature(low, high)


def test_task_without_the_field_is_rejected():
    feature = mp.LogScaledFeature(NU_LOW, NU_HIGH, field="kappa")
    with pytest.raises(ValueError, match="'kappa', which BurgersTask does not have"):
        feature(mp.BurgersTask(0.01))
    with pytest.raises(ValueError, match=r"got shape \(2,\)"):
        mp.LogScaledFeature(NU_LOW, NU_HIGH)(mp.BurgersTask(jnp.array([0.01, 0.02])))


@pytest.mark.parametrize("n_conditions", [0, -1, True])
def test_bad_n_conditions_is_rejected(getkey, n_conditions):
    match = f"n_conditions must be a positive integer, got {n_conditions}"
    with pytest.raises(ValueError, match=match):
        mp.ConditionedPINN(n_conditions, key=getkey())


@pytest.mark.parametrize("shape", [(), (3,), (2, 1)])
def test_wrong_condition_shape_is_rejected(getkey, shape):
    model = mp.ConditionedPINN(2, width=4, depth=1, key=getkey())
    points = jnp.zeros((3, 2))
    match = r"condition must have shape \(2,\).*got shape " + re.escape(str(shape))
    with pytest.raises(ValueError, match=match):
        model(points, jnp.zeros(shape))
    with pytest.raises(ValueError, match=match):
        eqx.filter_jit(model.bind)(jnp.zeros(shape))
