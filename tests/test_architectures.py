"""The accurate-PINN networks: derivatives against nested reverse mode, the periodic
embedding, weight factorisation, PirateNet's start, conditioning, errors."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest
from jax.test_util import check_grads

import metapinn as mp
from metapinn._forward_jet import check_forward_mode, forward_derivatives

from .helpers import tree_allclose


ALL_STREAMS = ("u_x", "u_t", "u_xx", "u_tt")


def _nested_grad(net, points):
    """Every stream at every point by nested `jax.grad` of the scalar `u(x, t)`."""

    def u(x, t):
        return net(jnp.stack([x, t])[None])[0]

    x, t = points[:, 0], points[:, 1]
    return {
        "u": jax.vmap(u)(x, t),
        "u_x": jax.vmap(jax.grad(u, 0))(x, t),
        "u_t": jax.vmap(jax.grad(u, 1))(x, t),
        "u_xx": jax.vmap(jax.grad(jax.grad(u, 0), 0))(x, t),
        "u_tt": jax.vmap(jax.grad(jax.grad(u, 1), 1))(x, t),
    }


def _with_alphas(net):
    """A PirateNet with non-zero skip weights (every block in play)."""
    if not isinstance(net, mp.nn.PirateNet):
        return net
    alphas = [jnp.asarray(0.3 + 0.2 * i) for i in range(len(net.blocks))]
    return eqx.tree_at(lambda n: [b.alpha for b in n.blocks], net, alphas)


NETWORKS = {
    "mlp-fourier-periodic-rwf": lambda p, mode, key: mp.nn.EmbeddedMLP(
        p, 12, 2, period=2.0, fourier_features=8, rwf=(1.0, 0.1), forward_mode=mode, key=key
    ),
    "mlp-time-period": lambda p, mode, key: mp.nn.EmbeddedMLP(
        p, 12, 2, time_period=3.0, forward_mode=mode, key=key
    ),
    "modified-mlp": lambda p, mode, key: mp.nn.ModifiedMLP(
        p, 12, 2, fourier_features=8, fourier_scale=2.0, forward_mode=mode, key=key
    ),
    "pirate": lambda p, mode, key: _with_alphas(
        mp.nn.PirateNet(p, 12, 2, period=2.0, rwf=(1.0, 0.1), forward_mode=mode, key=key)
    ),
}


@pytest.mark.parametrize(
    ("name", "n_conditions", "mode"),
    [(name, p, "jvp") for name in NETWORKS for p in (0, 2)]
    + [("pirate", 2, "taylor")]
    + [
        (name, p, "hand")
        for name in ("mlp-fourier-periodic-rwf", "mlp-time-period")
        for p in (0, 2)
    ],
)
def test_derivatives_match_nested_grad(getkey, name, n_conditions, mode):
    net = NETWORKS[name](n_conditions, mode, getkey())
    points = jr.uniform(getkey(), (9, 2), minval=-1.0, maxval=1.0)
    if n_conditions:
        net = net.bind(jnp.array([0.4, -0.8]))
    derivs = eqx.filter_jit(net.derivatives)(points, ALL_STREAMS)
    expected = eqx.filter_jit(_nested_grad)(net, points)
    for field, value in expected.items():
        assert jnp.allclose(getattr(derivs, field), value, rtol=1e-10, atol=1e-12), field


def test_jet_holds_only_what_each_set_needs(getkey):
    net = NETWORKS["modified-mlp"](0, "jvp", getkey())
    a, b = jr.uniform(getkey(), (5, 2)), jr.uniform(getkey(), (3, 2))
    jet_a, jet_b = net.jet((a, b), (("u_t", "u_xx"), ()))
    assert jet_a.u_x is not None and jet_a.u_t is not None and jet_a.u_tt is None
    assert jet_b.u_x is None and jnp.allclose(jet_b.u, net(b))


@pytest.mark.parametrize("make", [mp.MLPPINN, lambda **kw: mp.ConditionedPINN(2, **kw)])
def test_generic_path_equals_the_hand_jet(getkey, make):
    net = make(width=10, depth=3, key=getkey())
    if isinstance(net, mp.ConditionedPINN):
        net = net.bind(jnp.array([0.2, 0.5]))
    points = jr.uniform(getkey(), (11, 2))
    for mode in ("jvp", "taylor"):
        generic = forward_derivatives(net, points, ALL_STREAMS, mode)
        assert tree_allclose(generic, net.derivatives(points, ALL_STREAMS), rtol=1e-11)


EMBEDDED_MLPS = {
    "raw": {},
    "fourier": {"fourier_features": 8, "fourier_scale": 2.0},
    "periodic-fourier-rwf": {"period": 2.0, "fourier_features": 8, "rwf": (1.0, 0.1)},
    "periodic-time-rwf": {"period": 2.0, "time_period": 3.0, "rwf": (1.0, 0.1)},
    "periodic-time-fourier": {"period": 2.0, "time_period": 3.0, "fourier_features": 6},
}


@pytest.mark.parametrize("options", list(EMBEDDED_MLPS))
def test_hand_jet_and_adjoint_equal_the_generic_path(getkey, options):
    key = getkey()
    generic = mp.nn.EmbeddedMLP(0, 10, 3, key=key, **EMBEDDED_MLPS[options])
    hand = mp.nn.EmbeddedMLP(0, 10, 3, forward_mode="hand", key=key, **EMBEDDED_MLPS[options])
    sets = tuple(jr.uniform(getkey(), (n, 2), minval=-1.0, maxval=1.0) for n in (7, 4, 3))
    needs = (ALL_STREAMS, (), ("u_t",))
    expected, expected_pullback = generic.jet_vjp(sets, needs)
    cotangent = jax.tree.map(lambda a: jr.normal(getkey(), a.shape, a.dtype), expected)

    @eqx.filter_jit
    def jet_and_grads(net):
        jet, pullback = net.jet_vjp(sets, needs)
        return jet, pullback(cotangent)

    jet, grads = jet_and_grads(hand)
    assert tree_allclose(jet, expected, rtol=1e-12, atol=1e-13)
    assert tree_allclose(hand.jet(sets, needs), expected, rtol=1e-12, atol=1e-13)
    assert tree_allclose(  # leaf by leaf (the static forward_mode differs)
        jax.tree.leaves(grads),
        jax.tree.leaves(expected_pullback(cotangent)),
        rtol=1e-10,
        atol=1e-13,
    )


def test_hand_loss_gradient_against_finite_differences(getkey):
    net = mp.nn.EmbeddedMLP(
        0, 6, 2, period=2.0, fourier_features=4, rwf=(1.0, 0.1), forward_mode="hand",
        key=getkey(),
    )  # fmt: skip
    pde, task = mp.Burgers(), mp.BurgersTask(jnp.asarray(0.02))
    batch = mp.sample_collocation(getkey(), pde, 10, 4, 4)
    params, static = eqx.partition(net, eqx.is_inexact_array)
    _, grads = eqx.filter_jit(mp.pinn_loss_and_grad)(net, pde, task, batch)
    direction = jax.tree.map(lambda a: jr.normal(getkey(), a.shape, a.dtype), params)

    def loss(step):
        moved = jax.tree.map(lambda p, d: p + step * d, params, direction)
        return mp.pinn_loss(eqx.combine(moved, static), pde, task, batch)

    eps = 1e-6
    slope = (loss(eps) - loss(-eps)) / (2 * eps)
    inner = sum(
        jnp.vdot(g, d)
        for g, d in zip(jax.tree.leaves(grads), jax.tree.leaves(direction), strict=True)
    )
    assert jnp.allclose(inner, slope, rtol=1e-6)


def test_a_users_network_needs_only_call(getkey):
    class Sines(mp.AbstractPINN):
        a: jax.Array

        def __call__(self, points):
            return jnp.sin(self.a * points[:, 0]) * jnp.exp(-points[:, 1])

    net, points = Sines(jnp.asarray(1.7)), jr.uniform(getkey(), (6, 2))
    d = net.derivatives(points, ALL_STREAMS)
    x, t = points[:, 0], points[:, 1]
    assert jnp.allclose(d.u_xx, -(1.7**2) * jnp.sin(1.7 * x) * jnp.exp(-t), rtol=1e-12)
    assert jnp.allclose(d.u_tt, d.u, rtol=1e-12)


@pytest.mark.parametrize("name", ["mlp-fourier-periodic-rwf", "pirate"])
def test_periodic_embedding_is_exactly_periodic(getkey, name):
    net = NETWORKS[name](0, "jvp", getkey())
    points = jr.uniform(getkey(), (8, 2), minval=-1.0, maxval=1.0)
    shifted = points.at[:, 0].add(2.0)  # the period
    here, there = net.derivatives(points, ALL_STREAMS), net.derivatives(shifted, ALL_STREAMS)
    for field in ("u", *ALL_STREAMS):
        assert jnp.allclose(getattr(here, field), getattr(there, field), rtol=1e-9, atol=1e-11)
    # and not periodic in x at another period
    other = net(points.at[:, 0].add(1.0))
    assert not jnp.allclose(other, here.u, atol=1e-6)


def test_periodic_network_needs_no_boundary_loss(getkey):
    pde = mp.AllenCahn()
    net = mp.nn.EmbeddedMLP(0, 8, 2, period=pde.x_max - pde.x_min, key=getkey())
    batch = mp.sample_collocation(getkey(), pde, 16, 8, 8)
    terms = mp.loss_terms(net, pde, mp.AllenCahnTask(jnp.asarray(1e-3)), batch)
    assert terms.boundary < 1e-28 and terms.residual > 0


def test_rwf_equals_the_dense_layer_it_factorises(getkey):
    key = getkey()
    plain = mp.nn.Dense(5, 4, key=key)
    factorised = mp.nn.Dense(5, 4, (1.0, 0.1), key=key)
    assert factorised.log_scale is not None
    assert not jnp.allclose(factorised.weight, plain.weight)
    assert jnp.allclose(factorised.effective_weight, plain.weight, rtol=1e-14)
    h = jr.normal(getkey(), (3, 5))
    assert jnp.allclose(factorised(h), plain(h), rtol=1e-13)
    # s ~ N(mu, sigma): mean near mu over a wide layer
    wide = mp.nn.Dense(2, 4000, (1.0, 0.1), key=getkey())
    assert abs(float(jnp.mean(wide.log_scale)) - 1.0) < 0.01
    assert abs(float(jnp.std(wide.log_scale)) - 0.1) < 0.01


def test_pirate_net_starts_linear_in_its_embedding(getkey):
    net = mp.nn.PirateNet(0, 16, 3, key=getkey())
    points = jr.uniform(getkey(), (10, 2))
    phi = net.embedding(points)
    expected = phi @ net.output.weight[0] + net.output.bias[0]
    assert jnp.allclose(net(points), expected, rtol=1e-12)
    assert phi.shape == (10, 16)


def test_fit_output_layer_fits_the_initial_condition(getkey):
    net = mp.nn.PirateNet(0, 32, 2, fourier_scale=2.0, rwf=(1.0, 0.1), key=getkey())
    x = jnp.linspace(-1.0, 1.0, 64)
    points = jnp.stack([x, jnp.zeros_like(x)], 1)
    target = -jnp.sin(math.pi * x)
    fitted = mp.nn.fit_output_layer(net, points, target)
    before = jnp.sqrt(jnp.mean((net(points) - target) ** 2))
    after = jnp.sqrt(jnp.mean((fitted(points) - target) ** 2))
    assert after < 1e-3 * before
    # the least-squares optimum: the residual is orthogonal to the features
    design = jnp.concatenate([net.embedding(points), jnp.ones((64, 1))], 1)
    assert jnp.allclose(design.T @ (fitted(points) - target), 0.0, atol=1e-9)


@pytest.mark.parametrize(
    ("name", "mode"), [(name, "jvp") for name in NETWORKS] + [("mlp-fourier-periodic-rwf", "hand")]
)
def test_conditioned_call_and_loss_gradient(getkey, name, mode):
    net = NETWORKS[name](1, mode, getkey())
    pde = mp.Burgers()
    loss = mp.ConditionedLoss(mp.PINNLoss(pde), mp.LogScaledFeature(0.005, 0.05))
    task = mp.BurgersTask(jnp.asarray(0.01))
    batch = mp.sample_collocation(getkey(), pde, 12, 6, 4)
    points = batch.interior
    c = mp.LogScaledFeature(0.005, 0.05)(task)
    assert jnp.allclose(net(points, c), net.bind(c)(points), rtol=1e-14)
    value, grads = eqx.filter_jit(loss.value_and_grad)(net, task, batch)
    reference_value, reference = eqx.filter_jit(
        eqx.filter_value_and_grad(lambda m: mp.pinn_loss(m.bind(c), pde, task, batch))
    )(net)
    assert jnp.allclose(value, reference_value, rtol=1e-13)
    assert tree_allclose(grads, reference, rtol=1e-10, atol=1e-14)


def test_loss_gradient_against_finite_differences(getkey):
    net = mp.nn.ModifiedMLP(0, 6, 1, fourier_features=4, rwf=(1.0, 0.1), key=getkey())
    pde = mp.Burgers()
    batch = mp.sample_collocation(getkey(), pde, 10, 4, 4)
    task = mp.BurgersTask(jnp.asarray(0.02))
    params, static = eqx.partition(net, eqx.is_inexact_array)

    @jax.jit
    def loss(p):
        return mp.pinn_loss(eqx.combine(p, static), pde, task, batch)

    check_grads(loss, (params,), order=1, modes=("rev",), eps=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda k: mp.nn.EmbeddedMLP(0, 0, 2, key=k), "width"),
        (lambda k: mp.nn.EmbeddedMLP(-1, 4, 2, key=k), "n_conditions"),
        (lambda k: mp.nn.EmbeddedMLP(0, 4, 2, fourier_features=3, key=k), "fourier_features"),
        (lambda k: mp.nn.EmbeddedMLP(0, 4, 2, fourier_scale=0.0, key=k), "fourier_scale"),
        (lambda k: mp.nn.EmbeddedMLP(0, 4, 2, period=-2.0, key=k), "period"),
        (lambda k: mp.nn.ModifiedMLP(0, 4, 2, rwf=(1.0, -0.1), key=k), "rwf"),
        (lambda k: check_forward_mode("reverse"), "forward mode"),
        (lambda k: mp.nn.PirateNet(0, 7, 2, key=k), "even"),
        (lambda k: mp.nn.PirateNet(0, 8, 0, key=k), "blocks"),
    ],
)
def test_bad_settings_are_named(getkey, make, match):
    with pytest.raises(ValueError, match=match):
        make(getkey())


def test_conditions_are_checked(getkey):
    net = mp.nn.EmbeddedMLP(2, 4, 1, key=getkey())
    points = jnp.zeros((3, 2))
    with pytest.raises(ValueError, match="condition vector of length 2"):
        net(points)
    with pytest.raises(ValueError, match="condition vector of length 2"):
        net.derivatives(points)
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        net.bind(jnp.zeros(3))
    plain = mp.nn.EmbeddedMLP(0, 4, 1, key=getkey())
    with pytest.raises(ValueError, match="takes no condition"):
        plain(points, jnp.zeros(1))
    with pytest.raises(ValueError, match="bind a condition|condition vector"):
        mp.nn.fit_output_layer(net, points, jnp.zeros(3))


# --- the networks from an experiment's config ---------------------------------------


@pytest.mark.parametrize(
    ("settings", "kind"),
    [
        ({}, mp.MLPPINN),
        ({"network": "embedded-mlp", "fourier_features": 6}, mp.nn.EmbeddedMLP),
        ({"network": "modified-mlp", "rwf": (1.0, 0.1)}, mp.nn.ModifiedMLP),
        ({"network": "pirate-net", "periodic_embedding": True}, mp.nn.PirateNet),
    ],
)
def test_config_builds_its_network(settings, kind):
    from metapinn._experiment._problem import initialisation

    config = mp.experiment.ExperimentConfig(
        family="convection", width=8, depth=1, dtype="float64", **settings
    )
    params, static, _ = initialisation(config, 0)
    net = eqx.combine(params, static)
    assert isinstance(net, kind)
    if settings.get("periodic_embedding"):
        assert net.embedding.x_frequency == pytest.approx(1.0)  # period 2 pi
    conditioned = eqx.combine(*initialisation(config, 0, conditioned=True)[:2])
    expected = mp.ConditionedPINN if kind is mp.MLPPINN else kind
    assert isinstance(conditioned, expected) and conditioned.n_conditions == 1
    settings_stored = config.method("multitask").run_settings(config, 0)
    assert ("network" in settings_stored) == (kind is not mp.MLPPINN)


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"network": "resnet"}, "network='resnet'"),
        ({"rwf": (1.0, 0.1)}, "network=mlp takes no embedding"),
        ({"network": "embedded-mlp", "fourier_features": 5}, "fourier_features=5"),
        ({"network": "embedded-mlp", "fourier_scale": -1.0}, "fourier_scale=-1.0"),
        ({"network": "embedded-mlp", "rwf": (1.0,)}, "rwf="),
        ({"network": "embedded-mlp", "periodic_embedding": True, "family": "heat"}, "heat"),
        ({"network": "pirate-net", "width": 9}, "width=9"),
        ({"network": "pirate-net", "width": 8, "fourier_features": 4}, "fourier_features=4"),
    ],
)
def test_bad_network_settings_are_named(settings, match):
    with pytest.raises(mp.experiment.ConfigError, match=match):
        mp.experiment.ExperimentConfig(**settings)
