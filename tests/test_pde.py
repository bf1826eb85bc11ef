import functools

import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import metapinn as mp


class _Exact(mp.AbstractPINN):
    """A stand-in 'network' returning a closed-form field, for loss checks."""

    def __call__(self, points):
        x, t = points[:, 0], points[:, 1]
        return -jnp.sin(jnp.pi * x) * jnp.exp(-t)

    def derivatives(self, points, needs=mp.BURGERS_NEEDS):
        del needs  # it always gives u_x, u_t, u_xx
        x, t = points[:, 0], points[:, 1]
        s, c, e = jnp.sin(jnp.pi * x), jnp.cos(jnp.pi * x), jnp.exp(-t)
        return mp.Derivatives(u=-s * e, u_x=-jnp.pi * c * e, u_t=s * e, u_xx=jnp.pi**2 * s * e)


def test_sampling_is_a_pure_function_of_the_key(getkey):
    key = getkey()
    pde = mp.Burgers()
    a = mp.sample_collocation(key, pde, 200, 50, 20)
    b = mp.sample_collocation(key, pde, 200, 50, 20)
    assert jnp.array_equal(a.interior, b.interior)
    assert a.interior.shape == (200, 2)
    assert a.initial.shape == (50, 2)
    assert a.boundary.shape == (40, 2)
    assert jnp.all(a.initial[:, 1] == 0)
    assert jnp.all(jnp.abs(a.boundary[:, 0]) == 1)
    assert jnp.all((a.interior[:, 0] >= -1) & (a.interior[:, 0] <= 1))
    assert jnp.all((a.interior[:, 1] >= 0) & (a.interior[:, 1] <= 1))
    c = mp.sample_collocation(getkey(), pde, 200, 50, 20)
    assert not jnp.array_equal(a.interior, c.interior)


def test_loss_terms_by_hand(getkey):
    """For u = -sin(pi x) e^{-t}: IC and BC errors vanish; the residual is explicit."""
    pde = mp.Burgers()
    batch = mp.sample_collocation(getkey(), pde, 30, 10, 5)
    nu = 0.02
    terms = mp.loss_terms(_Exact(), pde, mp.BurgersTask(nu), batch)
    x, t = batch.interior[:, 0], batch.interior[:, 1]
    s, c, e = jnp.sin(jnp.pi * x), jnp.cos(jnp.pi * x), jnp.exp(-t)
    r = s * e + (s * e) * (jnp.pi * c * e) - nu * jnp.pi**2 * s * e
    assert terms.residual == pytest.approx(float(jnp.mean(r**2)), rel=1e-12)
    assert terms.initial == pytest.approx(0.0, abs=1e-28)
    assert terms.boundary == pytest.approx(0.0, abs=1e-28)
    total = mp.pinn_loss(_Exact(), pde, mp.BurgersTask(nu), batch)
    assert total == pytest.approx(float(terms.total), rel=1e-14)


@pytest.mark.parametrize("nu", [0.0, -0.01, float("nan"), float("inf")])
def test_bad_viscosity_is_rejected(nu):
    with pytest.raises(ValueError, match=f"nu must be finite and > 0, got .*{nu}"):
        mp.BurgersTask(nu)


def test_bad_viscosity_under_jit_is_caught(getkey):
    pde = mp.Burgers()
    batch = mp.sample_collocation(getkey(), pde, 8, 4, 2)
    pinn = mp.MLPPINN(width=4, key=getkey())

    @jax.jit
    def loss(nu):
        return mp.pinn_loss(pinn, pde, mp.BurgersTask(nu), batch)

    assert jnp.isfinite(loss(jnp.asarray(0.01)))
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        loss(jnp.asarray(-0.01)).block_until_ready()


def test_bad_collocation_is_rejected(getkey):
    with pytest.raises((ValueError, TypeError), match=r"interior.*5, ?3"):
        mp.CollocationBatch(jnp.zeros((5, 3)), jnp.zeros((2, 2)), jnp.zeros((2, 2)))
    with pytest.raises(ValueError, match="n_interior must be a positive integer, got 0"):
        mp.sample_collocation(getkey(), mp.Burgers(), 0, 5, 5)
    # Per-task point sets must share their task axis. (The tests' jaxtyping hook
    # refuses them at the constructor already; the module's own check is for users
    # without it, so it is called directly here.)
    fields = {"interior": jnp.zeros((3, 5, 2)), "initial": jnp.zeros((2, 4, 2)),
              "boundary": jnp.zeros((3, 2, 2))}  # fmt: skip
    with pytest.raises((ValueError, TypeError)):
        mp.CollocationBatch(**fields)
    batch = object.__new__(mp.CollocationBatch)
    for name, value in fields.items():
        object.__setattr__(batch, name, value)
    with pytest.raises(ValueError, match=r"share the task axis B; got \(3, 5, 2\), \(2, 4, 2\)"):
        batch.__check_init__()


@pytest.mark.parametrize("periodic", [False, True])
def test_points_are_drawn_in_the_training_dtype(periodic):
    """With float64 enabled (as in every test), float32 points are drawn as float32
    numbers (no float64 operation in the program), not drawn in float64 and rounded."""
    pde = mp.AllenCahn() if periodic else mp.Burgers()
    draw = functools.partial(mp.sample_collocation, pde=pde, n_interior=16, n_initial=8,
                             n_boundary=4, dtype="float32")  # fmt: skip
    key = jr.key(3)
    program = str(jax.make_jaxpr(draw)(key))
    batch = draw(key)
    wide = mp.sample_collocation(key, pde, 16, 8, 4)
    assert "f64" not in program
    for name in ("interior", "initial", "boundary"):
        points = getattr(batch, name)
        assert points.dtype == jnp.float32, name
        assert getattr(wide, name).dtype == jnp.float64, name
        assert bool(jnp.all((points[:, 0] >= pde.x_min) & (points[:, 0] <= pde.x_max)))
        assert bool(jnp.all((points[:, 1] >= pde.t_min) & (points[:, 1] <= pde.t_max)))
    with pytest.raises(ValueError, match="floating-point dtype, got int32"):
        mp.sample_collocation(key, pde, 4, 4, 2, dtype="int32")
