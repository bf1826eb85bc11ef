import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import metapinn as mp


def _scalar_net(pinn):
    return lambda x, t: pinn(jnp.stack([x, t])[None])[0]


@pytest.mark.parametrize("activation", [jnp.tanh, jax.nn.softplus, jnp.sin])
@pytest.mark.parametrize("depth", [1, 3])
def test_forward_mode_derivatives_match_autodiff(getkey, activation, depth):
    pinn = mp.MLPPINN(width=7, depth=depth, activation=activation, key=getkey())
    points = jr.uniform(getkey(), (9, 2), minval=-1.0, maxval=1.0)
    x, t = points[:, 0], points[:, 1]
    f = _scalar_net(pinn)
    d = pinn.derivatives(points, ("u_x", "u_t", "u_xx", "u_tt"))
    assert jnp.allclose(d.u, jax.vmap(f)(x, t), rtol=1e-12, atol=1e-12)
    assert jnp.allclose(d.u_x, jax.vmap(jax.grad(f, 0))(x, t), rtol=1e-10, atol=1e-12)
    assert jnp.allclose(d.u_t, jax.vmap(jax.grad(f, 1))(x, t), rtol=1e-10, atol=1e-12)
    u_xx = jax.vmap(jax.grad(jax.grad(f, 0), 0))(x, t)
    assert jnp.allclose(d.u_xx, u_xx, rtol=1e-10, atol=1e-12)
    u_tt = jax.vmap(jax.grad(jax.grad(f, 1), 1))(x, t)
    assert jnp.allclose(d.u_tt, u_tt, rtol=1e-10, atol=1e-12)
    # The default is what Burgers needs; a set may ask for any part, in any order.
    assert mp.MLPPINN.derivatives(pinn, points).u_tt is None
    only = pinn.derivatives(points, ("u_tt",))
    assert only.u_x is None and only.u_xx is None
    assert jnp.allclose(only.u_tt, d.u_tt, rtol=1e-12, atol=1e-12)
    assert jnp.allclose(only.u_t, d.u_t, rtol=1e-12, atol=1e-12)


def test_each_point_set_gets_what_it_needs(getkey):
    pinn = mp.MLPPINN(width=5, depth=2, key=getkey())
    sets = tuple(jr.uniform(getkey(), (n, 2)) for n in (6, 4, 3))
    needs = (("u_xx",), (), ("u_t", "u_x"))
    jet = pinn.jet(sets, needs)
    assert [tuple(k for k in mp.STREAMS if getattr(d, k) is not None) for d in jet] == [
        ("u_x", "u_xx"),
        (),
        ("u_x", "u_t"),
    ]
    for points, d, need in zip(sets, jet, needs, strict=True):
        alone = pinn.derivatives(points, ("u_x", "u_t", "u_xx", "u_tt"))
        for name in ("u", *need):
            assert jnp.allclose(getattr(d, name), getattr(alone, name), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "needs, message",
    [
        ((("u_xxx",),), "unknown derivative"),
        (((), ()), "one needs tuple per set of points"),
    ],
)
def test_bad_needs_are_named(getkey, needs, message):
    pinn = mp.MLPPINN(width=4, key=getkey())
    with pytest.raises(ValueError, match=message):
        pinn.jet((jnp.zeros((3, 2)),), needs)


def test_require_returns_the_fields_and_names_a_missing_one(getkey):
    pinn = mp.MLPPINN(width=5, depth=2, key=getkey())
    points = jr.uniform(getkey(), (6, 2))
    d = pinn.derivatives(points, ("u_t",))
    u, u_t = d.require("u", "u_t")
    assert u is d.u and u_t is d.u_t
    with pytest.raises(ValueError, match="'u_xx' was not computed"):
        d.require("u_t", "u_xx")
    with pytest.raises(ValueError, match="'u_xt' is not a field"):
        d.require("u_xt")


def test_a_family_that_forgets_a_derivative_gets_a_clear_error(getkey):
    class Forgetful(mp.Heat):  # its residual reads u_xx, which it does not ask for
        jet_needs = (("u_t",), (), ())

    pde = Forgetful()
    batch = mp.sample_collocation(getkey(), pde, 8, 4, 2)
    pinn = mp.MLPPINN(width=4, key=getkey())
    with pytest.raises(ValueError, match="'u_xx' was not computed.*jet_needs"):
        mp.pinn_loss(pinn, pde, mp.HeatTask(jnp.asarray(0.1)), batch)


def test_needs_are_closed_and_checked():
    assert mp.check_needs(("u_tt", "u_xx")) == ("u_x", "u_t", "u_xx", "u_tt")
    assert mp.check_needs(()) == ()
    with pytest.raises(ValueError, match="must be a tuple of derivative names, got 'u_x'"):
        mp.check_needs("u_x")
    with pytest.raises(ValueError, match="at least one set of points"):
        mp.MLPPINN(width=3, key=jr.key(0)).jet((), ())


def test_w1_architecture(getkey):
    pinn = mp.MLPPINN(width=32, depth=2, key=getkey())
    params, _ = eqx.partition(pinn, eqx.is_inexact_array)
    assert sum(p.size for p in jax.tree_util.tree_leaves(params)) == 1185
    assert all(jnp.all(b == 0) for b in pinn.biases)
    # Glorot: Var(W) = 2 / (fan_in + fan_out); the 32x32 layer has 1024 samples.
    assert jnp.std(pinn.weights[1]) == pytest.approx((2 / 64) ** 0.5, rel=0.15)


def test_dtype_follows_request(getkey):
    pinn = mp.MLPPINN(dtype=jnp.float32, key=getkey())
    assert all(w.dtype == jnp.float32 for w in pinn.weights)
    d = pinn.derivatives(jnp.zeros((3, 2), jnp.float32))
    assert d.u_xx.dtype == jnp.float32


@pytest.mark.parametrize("shape", [(5,), (5, 3), (2, 5, 2)])
def test_wrong_point_shape_is_rejected(getkey, shape):
    pinn = mp.MLPPINN(width=4, key=getkey())
    # Our ValueError says "got shape (5, 3)"; under the test suite's jaxtyping hook the
    # annotation may fire first ("f64[5,3]"). Either way the bad shape is named.
    bad = ", ?".join(str(s) for s in shape)
    with pytest.raises((ValueError, TypeError), match=bad):
        pinn(jnp.zeros(shape))
    with pytest.raises((ValueError, TypeError), match=bad):
        pinn.derivatives(jnp.zeros(shape))


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"depth": -1}])
def test_bad_architecture_is_rejected(getkey, kwargs):
    name, value = next(iter(kwargs.items()))
    with pytest.raises(ValueError, match=f"{name} must be a positive integer, got {value}"):
        mp.MLPPINN(**kwargs, key=getkey())
