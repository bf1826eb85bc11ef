"""Implicit MAML: closed forms, agreement with MAML, the PINN meta-step, memory in K."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import metapinn as mp

from .helpers import Quadratic, flat, small_problem, tree_allclose


NU = 0.02


def test_a_cg_breakdown_falls_back_to_the_first_order_gradient(getkey):
    """With H = -λ (one dimension) the operator I + H/λ is exactly zero: CG meets a
    direction of zero curvature at once and stops at its start, ∇L_q(φ_K): the
    meta-gradient falls back to the first-order one."""
    lam = 2.0
    a, d, theta = (jr.normal(getkey(), (1,)) for _ in range(3))
    learner = mp.IMAML(inner_steps=3, inner_optimizer=0.1, prox_lambda=lam, cg_steps=2)
    params, static = eqx.partition({"theta": theta}, eqx.is_array)
    support, query = Quadratic(a, -lam * jnp.eye(1)), Quadratic(d, jnp.eye(1))
    grad, _ = learner.meta_gradient(params, static, _vector_loss, None, support, query)
    proximal = mp.ProximalLoss(_vector_loss, params, lam)
    adapted, _ = learner.adapt(params, static, proximal, None, support)
    assert jnp.allclose(grad["theta"], adapted["theta"] - d, rtol=1e-12)


class _Convex(eqx.Module):
    """½(θ-c)ᵀA(θ-c) + Σ log cosh θ: strongly convex (A SPD), not quadratic; its
    Hessian lies between A and A + I."""

    center: jax.Array
    matrix: jax.Array

    def __call__(self, theta):
        r = theta - self.center
        return 0.5 * r @ self.matrix @ r + jnp.sum(jnp.logaddexp(theta, -theta) - math.log(2.0))


class _Anchored(eqx.Module):
    """A support set whose loss carries the proximal term around a differentiable anchor."""

    inner: eqx.Module
    anchor: jax.Array
    lam: float = eqx.field(static=True)

    def __call__(self, theta):
        return self.inner(theta) + 0.5 * self.lam * jnp.sum((theta - self.anchor) ** 2)


def _vector_loss(model, task, batch):
    del task
    return batch(model["theta"])


def _spd(key, n):
    m = jr.normal(key, (n, n))
    return m @ m.T / n + jnp.eye(n)


@pytest.mark.parametrize("damping", [0.0, 0.5])
def test_meta_gradient_on_a_quadratic_has_the_closed_form(getkey, damping):
    """Support ½(φ-a)ᵀA(φ-a), query ½‖φ-d‖²: φ* = (A + λI)⁻¹(Aa + λθ) and
    g = (I + (A + δI)/λ)⁻¹(φ* - d), δ the damping (0: the exact implicit gradient)."""
    n, lam = 5, 2.0
    A = _spd(getkey(), n)
    a, d, theta = (jr.normal(getkey(), (n,)) for _ in range(3))
    eigs = jnp.linalg.eigvalsh(A)
    alpha = 1.0 / float(eigs[-1] + lam)
    # SGD on the proximal objective contracts by ρ per step; ρ^K ≈ 1e-16 or below.
    rho = 1.0 - float(eigs[0] + lam) * alpha
    steps = math.ceil(-37.0 / math.log(rho))
    learner = mp.IMAML(
        inner_steps=steps,
        inner_optimizer=alpha,
        prox_lambda=lam,
        cg_steps=3 * n,
        cg_rtol=1e-13,
        cg_atol=1e-15,
        damping=damping,
    )
    params, static = eqx.partition({"theta": theta}, eqx.is_array)
    support, query = Quadratic(a, A), Quadratic(d, jnp.eye(n))
    grad, aux = learner.meta_gradient(params, static, _vector_loss, None, support, query)

    eye = jnp.eye(n)
    phi = jnp.linalg.solve(A + lam * eye, A @ a + lam * theta)
    expected = jnp.linalg.solve(eye + (A + damping * eye) / lam, phi - d)
    assert jnp.allclose(grad["theta"], expected, rtol=1e-8, atol=1e-12)
    assert jnp.allclose(aux.query_loss, 0.5 * jnp.sum((phi - d) ** 2), rtol=1e-10)
    assert aux.support_losses.shape == (steps,)


def test_maml_on_the_proximal_problem_converges_to_the_implicit_gradient(getkey):
    """Second-order MAML (SGD, K steps) on L_s(φ) + λ/2‖φ - θ‖², with θ entering the
    proximal term differentiably, has gradient (dφ_K/dθ)ᵀ ∇L_q(φ_K). On a strongly
    convex problem φ_K → φ* and dφ_K/dθ → (I + H/λ)⁻¹ at the linear rate ρ of the
    inner loop, so the two meta-gradients differ by O(K ρ^K); K is chosen so that
    this is below 1e-12, and the check allows 1e-9 for rounding over the loop."""
    n, lam = 4, 1.0
    A, B = _spd(getkey(), n), _spd(getkey(), n)
    a, d, theta = (jr.normal(getkey(), (n,)) for _ in range(3))
    eigs = jnp.linalg.eigvalsh(A)
    # The proximal Hessian lies in [λ_min(A) + λ, λ_max(A) + 1 + λ].
    smooth, strong = float(eigs[-1]) + 1.0 + lam, float(eigs[0]) + lam
    alpha = 1.0 / smooth
    rho = 1.0 - strong * alpha
    steps = 100
    assert steps * rho**steps < 1e-12

    params, static = eqx.partition({"theta": theta}, eqx.is_array)
    support, query = _Convex(a, A), _Convex(d, B)
    imaml = mp.IMAML(
        inner_steps=steps,
        inner_optimizer=alpha,
        prox_lambda=lam,
        cg_steps=4 * n,
        cg_rtol=1e-13,
        cg_atol=1e-15,
    )
    implicit, _ = imaml.meta_gradient(params, static, _vector_loss, None, support, query)

    maml = mp.MAML(inner_steps=steps, inner_optimizer=alpha)

    def maml_objective(th):
        anchored = _Anchored(support, th, lam)
        return maml.meta_loss({"theta": th}, static, _vector_loss, None, anchored, query)[0]

    unrolled = jax.grad(maml_objective)(theta)
    assert jnp.allclose(implicit["theta"], unrolled, rtol=1e-9, atol=1e-12)
    # Not trivially so: the first-order gradient ∇L_q(φ_K) is far from both.
    proximal = mp.ProximalLoss(_vector_loss, params, lam)
    adapted, _ = imaml.adapt(params, static, proximal, None, support)
    first_order = jax.grad(query)(adapted["theta"])
    assert not jnp.allclose(first_order, unrolled, rtol=1e-2)


def test_proximal_loss_gradient_matches_autodiff(getkey):
    """The proximal loss uses the PINN loss's hand-written gradient plus λ(φ - θ)."""
    params, static, loss_fn, batch = small_problem(getkey())
    anchor = jax.tree_util.tree_map(lambda x: x + 0.1 * jnp.ones_like(x), params)
    proximal = mp.ProximalLoss(loss_fn, anchor, 3.0)
    task = mp.BurgersTask(NU)
    model = eqx.combine(params, static)

    @eqx.filter_jit
    def both(model):
        value, grads = proximal.value_and_grad(model, task, batch)
        reference = eqx.filter_value_and_grad(lambda m: proximal(m, task, batch))(model)
        return value, grads, reference, loss_fn(model, task, batch)

    value, grads, (ref_value, ref_grads), plain = both(model)
    assert jnp.allclose(value, ref_value, rtol=1e-12)
    assert tree_allclose(grads, ref_grads)
    leaves = zip(*map(jax.tree_util.tree_leaves, (params, anchor)), strict=True)
    sq = sum(jnp.sum((p - q) ** 2) for p, q in leaves)
    assert jnp.allclose(value, plain + 1.5 * sq, rtol=1e-12)


def test_meta_step_on_the_pinn_problem(getkey):
    """One meta-step over two tasks (vmapped CG): finite, structure and dtype kept; with
    outer SGD at rate 1 the step is minus the task mean of the per-task gradients."""
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    tasks = mp.BurgersTask(jnp.array([0.01, 0.03]))
    learner = mp.IMAML(inner_steps=4, inner_optimizer=0.01, prox_lambda=2.0, cg_steps=4)
    opt = optax.sgd(1.0)
    new_params, _, info = mp.meta_step(
        learner, params, static, opt.init(params), opt, loss_fn, tasks, support, query
    )
    assert jax.tree_util.tree_structure(new_params) == jax.tree_util.tree_structure(params)
    leaves = jax.tree_util.tree_leaves(new_params)
    assert all(x.dtype == jnp.float64 for x in leaves)
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in leaves)
    assert info.support_losses.shape == (2, 4)
    assert jnp.allclose(info.meta_loss, jnp.mean(info.query_loss), rtol=1e-12)

    per_task = eqx.filter_jit(learner.meta_gradient)
    grads = [
        per_task(params, static, loss_fn, mp.BurgersTask(nu), support, query)[0]
        for nu in (0.01, 0.03)
    ]
    step = jax.tree_util.tree_map(lambda p, q: p - q, new_params, params)
    mean = jax.tree_util.tree_map(lambda g0, g1: -(g0 + g1) / 2, *grads)
    assert tree_allclose(step, mean, rtol=1e-7, atol=1e-10)


def test_large_lambda_tends_to_the_query_gradient_at_theta(getkey):
    """As λ → ∞, φ* = θ - ∇L_s(θ)/λ + O(λ⁻²) and (I + H/λ)⁻¹ = I - H/λ + O(λ⁻²), so
    g = ∇L_q(θ) + c/λ + O(λ⁻²): the relative error is small and falls tenfold when λ
    grows tenfold (0.1 up to an O(1/λ) correction; measured c ≈ 40 here)."""
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    task = mp.BurgersTask(NU)
    plain = flat(jax.grad(lambda p: loss_fn(eqx.combine(p, static), task, query))(params))

    def relative_error(lam):
        # SGD at rate 1/(2λ) halves the distance to φ* each step (λ dominates H).
        learner = mp.IMAML(inner_steps=10, inner_optimizer=0.5 / lam, prox_lambda=lam, cg_steps=4)
        grad, _ = eqx.filter_jit(learner.meta_gradient)(
            params, static, loss_fn, task, support, query
        )
        assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(grad))
        return float(jnp.linalg.norm(flat(grad) - plain) / jnp.linalg.norm(plain))

    coarse, fine = relative_error(1e4), relative_error(1e5)
    assert fine < 1e-3
    assert 0.08 < fine / coarse < 0.12, (coarse, fine)


def _temp_bytes(learner, params, static, loss_fn, tasks, support, query) -> int:
    opt = optax.sgd(1.0)
    args = (learner, params, static, opt.init(params), opt, loss_fn, tasks, support, query)
    compiled = mp.meta_step.lower(*args).compile().compiled
    return compiled.memory_analysis().temp_size_in_bytes


def test_memory_does_not_grow_with_inner_steps(getkey):
    """XLA's temporary bytes of the compiled meta-step: equal for K = 10 and K = 100
    (the inner loop keeps nothing for reverse mode), while second-order MAML's grow
    (it stores φ_k per step)."""
    params, static, loss_fn, support = small_problem(getkey(), width=4)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    tasks = mp.BurgersTask(jnp.array([0.01, 0.03]))
    problem = (params, static, loss_fn, tasks, support, query)
    imaml = [_temp_bytes(mp.IMAML(inner_steps=k, cg_steps=3), *problem) for k in (10, 100)]
    maml = [_temp_bytes(mp.MAML(inner_steps=k), *problem) for k in (10, 100)]
    # The support losses are a (tasks, K) output: allow those bytes, nothing else.
    print(f"temporary bytes at K = 10, 100: IMAML {imaml}, MAML {maml}")
    assert abs(imaml[1] - imaml[0]) <= 0.02 * imaml[0], imaml
    assert maml[1] > 1.5 * maml[0], maml


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"prox_lambda": 0.0}, "prox_lambda .* got 0.0"),
        ({"prox_lambda": -1.0}, "prox_lambda .* got -1.0"),
        ({"prox_lambda": float("nan")}, "prox_lambda .* got nan"),
        ({"prox_lambda": float("inf")}, "prox_lambda .* got inf"),
        ({"cg_steps": 0}, "cg_steps .* got 0"),
        ({"cg_rtol": -1e-3}, "cg_rtol .* got -0.001"),
        ({"damping": float("nan")}, "damping .* got nan"),
        ({"inner_steps": -1}, "inner steps .* got -1"),
    ],
)
def test_bad_settings_are_rejected(settings, match):
    with pytest.raises(ValueError, match=match):
        mp.IMAML(**settings)


def test_adapt_spec_is_rejected(getkey):
    params, _, _, _ = small_problem(getkey())
    spec = jax.tree_util.tree_map(lambda _: True, params)
    with pytest.raises(ValueError, match="adapt_spec"):
        mp.IMAML(adapt_spec=spec)
    with pytest.raises(ValueError, match="prox_lambda .* got 0.0"):
        mp.ProximalLoss(_vector_loss, params, 0.0)


def test_an_anchor_without_arrays_is_rejected(getkey):
    """The proximal term is over the anchor's arrays: none is a clear error on
    construction (it was a TypeError from summing no terms, when called)."""
    params, _, _, _ = small_problem(getkey())
    nothing = jax.tree_util.tree_map(lambda _: None, params)
    for anchor, kind in ((None, "NoneType"), ({}, "dict"), (nothing, "MLPPINN")):
        with pytest.raises(ValueError, match=f"array leaf .* type {kind} with 0 leaves and no"):
            mp.ProximalLoss(_vector_loss, anchor, 1.0)
    with pytest.raises(ValueError, match=r"type dict with 1 leaves \(float\) and no array"):
        mp.ProximalLoss(_vector_loss, {"theta": 1.0}, 1.0)
