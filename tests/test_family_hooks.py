"""A family written here, in a test module, with no change to the library: the wave
equation, whose loss needs `u_tt` in the interior and `u_t` on the initial line."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import metapinn as mp

from .helpers import tree_allclose


class WaveTask(eqx.Module):
    c: jax.Array


class Wave(mp.AbstractPDE):
    """`u_tt = c² u_xx` on [-1, 1] × [0, 1], `u(±1, t) = 0`, `u(x, 0) = sin πx`,
    `u_t(x, 0) = 0`; exact solution `sin(πx) cos(cπt)`."""

    jet_needs = (("u_xx", "u_tt"), ("u_t",), ())
    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def residual(self, derivs, task):
        return derivs.u_tt - task.c**2 * derivs.u_xx

    def initial_condition(self, x):
        return jnp.sin(jnp.pi * x)

    def initial_error(self, derivs, points, task):
        del task
        return jnp.concatenate([derivs.u - self.initial_condition(points[:, 0]), derivs.u_t])

    def boundary_condition(self, t, x):
        del x
        return jnp.zeros_like(t)


class ExactWave(mp.AbstractPINN):
    c: float

    def __call__(self, points):
        return self.derivatives(points, ()).u

    def derivatives(self, points, needs=mp.BURGERS_NEEDS):
        x, t = points[:, 0], points[:, 1]
        w = self.c * jnp.pi
        s, co = jnp.sin(jnp.pi * x), jnp.cos(jnp.pi * x)
        ct, st = jnp.cos(w * t), jnp.sin(w * t)
        everything = dict(
            u=s * ct,
            u_x=jnp.pi * co * ct,
            u_t=-w * s * st,
            u_xx=-(jnp.pi**2) * s * ct,
            u_tt=-(w**2) * s * ct,
        )
        wanted = {k: everything[k] for k in mp.check_needs(needs)}
        return mp.Derivatives(u=everything["u"], **wanted)


def test_the_exact_solution_has_zero_loss(getkey):
    pde = Wave()
    batch = mp.sample_collocation(getkey(), pde, 40, 10, 5)
    terms = mp.loss_terms(ExactWave(1.3), pde, WaveTask(jnp.asarray(1.3)), batch)
    assert terms.residual < 1e-26 and terms.initial < 1e-28 and terms.boundary < 1e-28
    # The wrong wave speed leaves a residual.
    assert mp.loss_terms(ExactWave(1.3), pde, WaveTask(jnp.asarray(0.9)), batch).residual > 1


def test_the_hand_written_gradient_of_a_new_family(getkey):
    pde = Wave()
    batch = mp.sample_collocation(getkey(), pde, 24, 8, 4)
    pinn = mp.MLPPINN(width=6, depth=2, key=getkey())
    layers = tuple(l.at[:, -1].set(jr.normal(getkey(), l[:, -1].shape)) for l in pinn.layers)
    pinn = eqx.tree_at(lambda m: m.layers, pinn, layers)
    task = WaveTask(jnp.asarray(0.8))
    loss, grads = mp.pinn_loss_and_grad(pinn, pde, task, batch)
    ref_loss, ref_grads = eqx.filter_value_and_grad(mp.pinn_loss)(pinn, pde, task, batch)
    assert loss == pytest.approx(float(ref_loss), rel=1e-13)
    assert tree_allclose(grads, ref_grads, rtol=1e-10, atol=1e-13)


def test_second_order_maml_on_a_new_family(getkey):
    """The meta-gradient through the inner loop (Hessian-vector products by forward
    mode over the hand-written adjoint) equals JAX's reverse-over-reverse."""
    pde = Wave()
    batch = mp.sample_collocation(getkey(), pde, 24, 8, 4)
    pinn = mp.MLPPINN(width=6, depth=2, key=getkey())
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    tasks = WaveTask(jnp.asarray([0.7, 1.4]))
    loss_fn = mp.PINNLoss(pde)

    def meta_grad(learner):
        def one(task):
            return learner.meta_gradient(params, static, loss_fn, task, batch, batch)[0]

        return jax.vmap(one)(tasks)

    hvp = meta_grad(mp.MAML(inner_steps=2, inner_optimizer=0.01))
    autodiff = meta_grad(mp.MAML(inner_steps=2, inner_optimizer=0.01, inner_vjp="autodiff"))
    assert tree_allclose(hvp, autodiff, rtol=1e-9, atol=1e-12)
    adapted, losses = mp.adapt(
        params, static, loss_fn, WaveTask(jnp.asarray(1.0)), batch, steps=30, optimizer=0.01
    )
    assert losses[-1] < losses[0]
