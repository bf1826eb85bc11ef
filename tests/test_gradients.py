"""The hand-written adjoint of the network's jet and the Hessian-vector-product
derivative of the inner loop, against JAX's own reverse mode, in float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import metapinn as mp

from .helpers import small_problem, tree_allclose


def _random_like(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jr.split(key, len(leaves))
    return treedef.unflatten(
        [jr.normal(k, jnp.shape(x), jnp.result_type(x)) for k, x in zip(keys, leaves, strict=True)]
    )


def _with_random_biases(key, pinn):
    """`pinn` with random (not zero) biases, the last column of each layer."""
    biases = _random_like(key, pinn.biases)
    layers = tuple(layer.at[:, -1].set(b) for layer, b in zip(pinn.layers, biases, strict=True))
    return eqx.tree_at(lambda m: m.layers, pinn, layers)


LAYOUTS = {
    "burgers": (("u_x", "u_t", "u_xx"), (), ()),
    "wave": (("u_xx", "u_tt"), ("u_t",), ()),
    "periodic": (("u_t", "u_xx"), (), ("u_x",)),
    "everything": (("u_x", "u_t", "u_xx", "u_tt"), ("u_xx",), ("u_t", "u_tt")),
}
"""Which derivatives each set of points (interior, initial, boundary) carries: Burgers',
the wave equation's (with a velocity initial condition), Allen-Cahn's periodic one, and
every stream everywhere."""


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("activation", [jnp.tanh, jax.nn.softplus, jnp.sin])
@pytest.mark.parametrize("depth", [1, 3])
def test_jet_pullback_matches_reverse_mode(getkey, activation, depth, layout):
    pinn = mp.MLPPINN(width=6, depth=depth, activation=activation, key=getkey())
    pinn = _with_random_biases(getkey(), pinn)
    sets = tuple(jr.uniform(getkey(), (n, 2), minval=-1.0, maxval=1.0) for n in (7, 5, 3))
    needs = LAYOUTS[layout]

    jet, pullback = pinn.jet_vjp(sets, needs)
    assert tree_allclose(jet, pinn.jet(sets, needs), rtol=1e-13, atol=1e-13)
    # The reference: AbstractPINN's default, reverse mode through `jet`.
    ref_jet, ref_pullback = mp.AbstractPINN.jet_vjp(pinn, sets, needs)
    assert tree_allclose(jet, ref_jet, rtol=1e-13, atol=1e-13)
    cotangent = _random_like(getkey(), jet)
    assert tree_allclose(pullback(cotangent), ref_pullback(cotangent), rtol=1e-10, atol=1e-12)


def test_jet_with_no_edge_points(getkey):
    pinn = mp.MLPPINN(width=5, key=getkey())
    interior = jr.uniform(getkey(), (4, 2))
    (derivs, edge), pullback = pinn.jet_vjp((interior, interior[:0]), (("u_xx",), ("u_t",)))
    assert edge.u.shape == edge.u_t.shape == (0,)
    grads = pullback((_random_like(getkey(), derivs), edge))
    assert all(jnp.all(jnp.isfinite(g)) for g in jax.tree_util.tree_leaves(grads))


def test_pinn_loss_and_grad_matches_autodiff(getkey):
    params, static, loss_fn, batch = small_problem(getkey())
    pinn = eqx.combine(params, static)
    pinn = _with_random_biases(getkey(), pinn)
    task = mp.BurgersTask(0.013)
    loss, grads = mp.pinn_loss_and_grad(pinn, loss_fn.pde, task, batch)
    ref_loss, ref_grads = eqx.filter_value_and_grad(mp.pinn_loss)(pinn, loss_fn.pde, task, batch)
    assert loss == pytest.approx(float(ref_loss), rel=1e-13)
    assert tree_allclose(grads, ref_grads, rtol=1e-10, atol=1e-13)
    assert tree_allclose(loss_fn.value_and_grad(pinn, task, batch), (loss, grads))


def test_weighted_loss_and_grad_match_its_terms_and_autodiff(getkey):
    params, static, loss_fn, batch = small_problem(getkey())
    pinn = _with_random_biases(getkey(), eqx.combine(params, static))
    task, weights = mp.BurgersTask(0.013), (0.5, 100.0, 3.0)
    terms = mp.loss_terms(pinn, loss_fn.pde, task, batch)
    expected = 0.5 * terms.residual + 100.0 * terms.initial + 3.0 * terms.boundary
    weighted = mp.PINNLoss(loss_fn.pde, weights=weights)
    loss, grads = weighted.value_and_grad(pinn, task, batch)
    assert loss == pytest.approx(float(expected), rel=1e-13)
    assert weighted(pinn, task, batch) == pytest.approx(float(expected), rel=1e-13)
    ref_grads = eqx.filter_grad(lambda m: mp.loss_terms(m, loss_fn.pde, task, batch).weighted(
        weights))(pinn)  # fmt: skip
    assert tree_allclose(grads, ref_grads, rtol=1e-10, atol=1e-13)
    # Unit weights are the plain loss, and are stored as None (one compiled program).
    assert mp.PINNLoss(loss_fn.pde, weights=(1, 1, 1)).weights is None
    plain = mp.pinn_loss(pinn, loss_fn.pde, task, batch)
    assert mp.pinn_loss(pinn, loss_fn.pde, task, batch, (1, 1, 1)) == plain


@pytest.mark.parametrize(
    "weights, match",
    [
        ((1.0, -1.0, 1.0), "initial loss weight .* got -1.0"),
        ((1.0, 1.0, float("nan")), "boundary loss weight .* got nan"),
        ((0.0, 1.0, 1.0), "residual loss weight must be > 0"),
        ((1.0, 1.0), r"three numbers .* got \(1.0, 1.0\)"),
        ("heavy", "three numbers .* got 'heavy'"),
    ],
)
def test_bad_loss_weights_are_named(weights, match):
    with pytest.raises(ValueError, match=match):
        mp.PINNLoss(mp.Burgers(), weights=weights)


class _PlainLoss(eqx.Module):
    """The Burgers loss as a plain callable, without a gradient of its own."""

    pde: mp.Burgers

    def __call__(self, model, task, batch):
        return mp.pinn_loss(model, self.pde, task, batch)


def _anil_spec(params):
    """Adapt only the output layer (ANIL)."""
    spec = jax.tree_util.tree_map(lambda _: False, params)
    return eqx.tree_at(lambda p: p.layers[-1], spec, replace=True)


@pytest.mark.parametrize(
    "loss, adapt, inner",
    [
        ("pinn", "all", "sgd"),
        ("pinn", "anil", "adam"),
        ("plain", "all", "adam"),
        ("plain", "anil", "sgd"),
    ],
)
def test_hvp_inner_vjp_matches_autodiff(getkey, loss, adapt, inner):
    params, static, loss_fn, support = small_problem(getkey(), width=6)
    if loss == "plain":
        loss_fn = _PlainLoss(loss_fn.pde)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 20, 6, 3)
    optimizer = 0.02 if inner == "sgd" else optax.adam(1e-2, eps_root=1e-12)
    spec = None if adapt == "all" else _anil_spec(params)
    task = mp.BurgersTask(0.02)
    grads = {}
    for inner_vjp in ("hvp", "autodiff"):
        learner = mp.MAML(
            inner_steps=3, inner_optimizer=optimizer, adapt_spec=spec, inner_vjp=inner_vjp
        )
        grads[inner_vjp], _ = jax.jit(learner.meta_gradient, static_argnums=(1, 2))(
            params, static, loss_fn, task, support, query
        )
    assert tree_allclose(grads["hvp"], grads["autodiff"], rtol=1e-9, atol=1e-13)


def test_hvp_inner_vjp_differentiates_losses_and_task_parameters(getkey):
    """Cotangents on the inner losses and derivatives in the viscosity take the
    backward pass's other branches; they must agree with JAX's reverse mode too."""
    params, static, loss_fn, support = small_problem(getkey(), width=6)

    def objective(params, nu, inner_vjp):
        adapted, losses = mp.adapt(
            params,
            static,
            loss_fn,
            mp.BurgersTask(nu),
            support,
            steps=3,
            optimizer=0.02,
            inner_vjp=inner_vjp,
        )
        final = mp.pinn_loss(eqx.combine(adapted, static), loss_fn.pde, mp.BurgersTask(nu), support)
        return final + 0.3 * jnp.sum(losses)

    grad = jax.jit(jax.grad(objective, argnums=(0, 1)), static_argnums=2)
    by_hvp, by_autodiff = grad(params, 0.02, "hvp"), grad(params, 0.02, "autodiff")
    assert tree_allclose(by_hvp, by_autodiff, rtol=1e-9, atol=1e-13)
    assert by_hvp[1] != 0


def test_unknown_inner_vjp_is_rejected():
    # Our ValueError names the value; the jaxtyping hook of the test run may fire first.
    with pytest.raises((ValueError, TypeError), match="reverse"):
        mp.MAML(inner_vjp="reverse")


def test_bad_viscosity_under_jit_is_caught_by_adapt_and_meta_step(getkey):
    params, static, loss_fn, support = small_problem(getkey(), width=4)

    @jax.jit
    def adapted_losses(nu):
        return mp.adapt(
            params, static, loss_fn, mp.BurgersTask(nu), support, steps=2, optimizer=0.01
        )[1]

    assert jnp.all(jnp.isfinite(adapted_losses(jnp.asarray(0.01))))
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        adapted_losses(jnp.asarray(-0.01)).block_until_ready()

    optimizer = optax.adam(1e-3)
    learner = mp.MAML(inner_steps=2)

    @jax.jit
    def step(nus):
        tasks = mp.BurgersTask(nus)
        return mp.meta_step(
            learner, params, static, optimizer.init(params), optimizer, loss_fn, tasks, support
        )[2].meta_loss

    assert jnp.isfinite(step(jnp.asarray([0.01, 0.02])))
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        step(jnp.asarray([0.01, jnp.nan])).block_until_ready()

    # Also when only the new parameters are used (no diagnostics kept alive).
    @jax.jit
    def new_params(nus):
        tasks = mp.BurgersTask(nus)
        return mp.meta_step(
            learner, params, static, optimizer.init(params), optimizer, loss_fn, tasks, support
        )[0].layers[0]

    assert jnp.all(jnp.isfinite(new_params(jnp.asarray([0.01, 0.02]))))
    with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
        new_params(jnp.asarray([-0.01, 0.02])).block_until_ready()
