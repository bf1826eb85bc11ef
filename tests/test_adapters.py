"""Adapters: optax, L-BFGS and Gauss–Newton / Levenberg–Marquardt steps, and the loss
as a residual vector."""

import logging

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import metapinn as mp

from .helpers import flat, small_problem, tree_allclose


class LinearResiduals(mp.AbstractLoss):
    """`‖A θ − b‖²`: a linear least-squares problem with residuals `A θ − b`."""

    matrix: jax.Array
    target: jax.Array

    def residuals(self, model, task, batch):
        del task, batch
        return self.matrix @ model - self.target

    def __call__(self, model, task, batch):
        r = self.residuals(model, task, batch)
        return jnp.sum(r * r)


@pytest.fixture
def linear(getkey):
    matrix = jr.normal(getkey(), (12, 5))
    target = jr.normal(getkey(), (12,))
    return LinearResiduals(matrix, target), jr.normal(getkey(), (5,))


@pytest.mark.parametrize("solver", ["cg", "dense", "jacobi"])
def test_gauss_newton_solves_linear_least_squares_in_one_step(linear, solver):
    loss, theta = linear
    preconditioner = "jacobi" if solver == "jacobi" else "none"
    solver = "cg" if solver == "jacobi" else solver
    adapter = mp.GaussNewton(
        damping=0.0, adaptive=False, solver=solver, cg_steps=20, cg_rtol=0.0,
        preconditioner=preconditioner,
    )  # fmt: skip
    adapted, losses = mp.adapt(theta, None, loss, None, None, steps=1, optimizer=adapter)
    normal = np.linalg.solve(
        np.asarray(loss.matrix.T @ loss.matrix), np.asarray(loss.matrix.T @ loss.target)
    )
    np.testing.assert_allclose(adapted, normal, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(losses[0], loss(theta, None, None), rtol=1e-12)


def test_levenberg_marquardt_on_linear_problem_converges(linear):
    loss, theta = linear
    adapted, losses = mp.adapt(
        theta, None, loss, None, None, steps=6, optimizer=mp.GaussNewton(damping=1.0)
    )
    best = np.linalg.lstsq(np.asarray(loss.matrix), np.asarray(loss.target), rcond=None)[0]
    np.testing.assert_allclose(adapted, best, rtol=1e-6, atol=1e-8)
    assert np.all(np.diff(np.asarray(losses)) <= 0)


def test_residual_norm_is_the_loss_for_weights(getkey):
    params, static, _, batch = small_problem(getkey())
    pinn = eqx.combine(params, static)
    task = mp.BurgersTask(jnp.asarray(0.02))
    for weights in (None, (2.0, 50.0, 0.5)):
        loss = mp.PINNLoss(mp.Burgers(), weights=weights)
        r = loss.residuals(pinn, task, batch)
        assert r.shape == (24 + 8 + 8,)
        np.testing.assert_allclose(jnp.sum(r**2), loss(pinn, task, batch), rtol=1e-12)


def test_residual_norm_is_the_loss_conditioned_and_proximal(getkey):
    net = mp.ConditionedPINN(1, width=8, depth=2, key=getkey())
    pde = mp.Burgers()
    batch = mp.sample_collocation(getkey(), pde, 16, 8, 4)
    task = mp.BurgersTask(jnp.asarray(0.02))
    loss = mp.ConditionedLoss(mp.PINNLoss(pde), mp.LogScaledFeature(0.005, 0.05))
    r = loss.residuals(net, task, batch)
    np.testing.assert_allclose(jnp.sum(r**2), loss(net, task, batch), rtol=1e-12)

    params, static = eqx.partition(net, eqx.is_inexact_array)
    anchor = jax.tree_util.tree_map(lambda x: x + 0.1, params)
    proximal = mp.ProximalLoss(loss, anchor, 3.0)
    r = proximal.residuals(net, task, batch)
    np.testing.assert_allclose(jnp.sum(r**2), proximal(net, task, batch), rtol=1e-12)


def test_loss_without_residuals_is_a_type_error(getkey):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    with pytest.raises(TypeError, match="residual vector"):
        mp.adapt(
            params,
            static,
            lambda m, t, b: loss(m, t, b),
            task,
            batch,
            steps=1,
            optimizer=mp.GaussNewton(),
        )


@pytest.mark.parametrize("solver", ["cg", "dense"])
def test_levenberg_marquardt_lowers_a_pinn_loss_monotonically(getkey, solver):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    adapter = mp.GaussNewton(damping=1e-2, solver=solver, cg_steps=30)
    adapted, losses = mp.adapt(params, static, loss, task, batch, steps=8, optimizer=adapter)
    final = loss(eqx.combine(adapted, static), task, batch)
    curve = np.append(np.asarray(losses), float(final))
    assert np.all(np.diff(curve) <= 0), curve
    assert curve[-1] < 0.2 * curve[0], curve


@pytest.fixture
def badly_scaled(getkey):
    """`(A, b)` with A = D (C + I) D, C a random Gram matrix and D spanning three
    decades: Jacobi preconditioning undoes D."""
    n = 40
    q = jr.normal(getkey(), (n, n))
    scale = jnp.diag(jnp.logspace(0.0, 3.0, n))
    return scale @ (q @ q.T / n + jnp.eye(n)) @ scale, jr.normal(getkey(), (n,))


def test_preconditioned_cg_needs_fewer_iterations_on_a_badly_scaled_system(badly_scaled):
    matrix, rhs = badly_scaled
    n = rhs.shape[0]

    def relative_residual(steps, preconditioner):
        x = mp.conjugate_gradient(
            lambda v: matrix @ v, rhs, jnp.zeros(n), steps=steps, preconditioner=preconditioner
        )
        return float(jnp.linalg.norm(matrix @ x - rhs) / jnp.linalg.norm(rhs))

    def jacobi(v):
        return v / jnp.diag(matrix)

    assert relative_residual(20, jacobi) < 1e-6
    assert relative_residual(20, None) > 1e-2
    assert relative_residual(n, jacobi) < 1e-10  # exact in n steps, up to rounding


def test_preconditioned_cg_stops_on_the_residual_norm(badly_scaled):
    matrix, rhs = badly_scaled
    n = rhs.shape[0]
    for rtol in (1e-3, 1e-8):
        x = mp.conjugate_gradient(
            lambda v: matrix @ v, rhs, jnp.zeros(n), steps=10 * n, rtol=rtol,
            preconditioner=lambda v: v / jnp.diag(matrix),
        )  # fmt: skip
        residual = float(jnp.linalg.norm(matrix @ x - rhs) / jnp.linalg.norm(rhs))
        assert rtol * 1e-4 < residual <= rtol, (rtol, residual)  # stopped, not run out


def test_jacobi_gauss_newton_with_a_zero_column_and_no_damping(getkey):
    # A parameter the residuals do not depend on: diag(J^T J) is 0 there, and at
    # damping 0 the preconditioner must not divide 0 by 0.
    matrix = jnp.concatenate([jr.normal(getkey(), (12, 4)), jnp.zeros((12, 1))], axis=1)
    loss = LinearResiduals(matrix, jr.normal(getkey(), (12,)))
    theta = jr.normal(getkey(), (5,))
    adapter = mp.GaussNewton(
        damping=0.0, adaptive=False, cg_steps=20, cg_rtol=0.0, preconditioner="jacobi"
    )
    adapted, _ = mp.adapt(theta, None, loss, None, None, steps=1, optimizer=adapter)
    best = np.linalg.lstsq(np.asarray(matrix[:, :4]), np.asarray(loss.target), rcond=None)[0]
    np.testing.assert_allclose(adapted[:4], best, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(adapted[4], theta[4], rtol=0, atol=1e-12)


def test_jacobi_probes_estimate_the_gauss_newton_diagonal(linear):
    loss, _ = linear
    adapter = mp.GaussNewton(preconditioner="jacobi", jacobi_samples=20_000)
    estimate = adapter._jacobi_diagonal(lambda u: loss.matrix.T @ u, loss.target)
    exact = jnp.sum(loss.matrix * loss.matrix, axis=0)
    np.testing.assert_allclose(estimate, exact, rtol=0.05)


def test_jacobi_preconditioned_levenberg_marquardt_lowers_a_pinn_loss(getkey):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    adapter = mp.GaussNewton(damping=1e-2, cg_steps=10, preconditioner="jacobi")
    adapted, losses = mp.adapt(params, static, loss, task, batch, steps=8, optimizer=adapter)
    final = loss(eqx.combine(adapted, static), task, batch)
    curve = np.append(np.asarray(losses), float(final))
    assert np.all(np.diff(curve) <= 0), curve
    assert curve[-1] < 0.2 * curve[0], curve


def test_gauss_newton_cg_equals_dense_when_cg_converges(getkey):
    params, static, loss, batch = small_problem(getkey(), width=4, depth=1)
    task = mp.BurgersTask(jnp.asarray(0.02))
    n = flat(params).shape[0]
    results = [
        mp.adapt(
            params,
            static,
            loss,
            task,
            batch,
            steps=2,
            optimizer=mp.GaussNewton(damping=1e-3, solver=s, cg_steps=4 * n, cg_rtol=1e-14),
        )[0]
        for s in ("cg", "dense")
    ]
    assert tree_allclose(results[0], results[1], rtol=1e-6, atol=1e-8)


def test_lbfgs_lowers_a_pinn_loss_and_compiles_once(getkey):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))

    @eqx.filter_jit
    @eqx.debug.assert_max_traces(max_traces=1)
    def run(params, task):
        return mp.adapt(params, static, loss, task, batch, steps=20, optimizer=mp.LBFGS())

    adapted, losses = run(params, task)
    adapted2, _ = run(params, mp.BurgersTask(jnp.asarray(0.03)))  # no retrace
    final = loss(eqx.combine(adapted, static), task, batch)
    assert float(final) < 0.1 * float(losses[0])
    assert np.all(np.diff(np.asarray(losses)) <= 1e-12)  # the line search never rises


def test_optax_adapter_equals_the_plain_optimizer(getkey):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    plain = mp.adapt(params, static, loss, task, batch, steps=5, optimizer=optax.adam(1e-2))
    wrapped = mp.adapt(
        params, static, loss, task, batch, steps=5, optimizer=mp.Optax(optax.adam(1e-2))
    )
    assert tree_allclose(plain, wrapped, rtol=0, atol=0)


def test_adapt_recording_with_gauss_newton_matches_adapt(getkey):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    adapter = mp.GaussNewton(damping=1e-2, cg_steps=10)
    trace = mp.adapt_recording(
        params, static, loss, task, batch, steps=(0, 1, 3), optimizer=adapter
    )
    adapted, losses = mp.adapt(params, static, loss, task, batch, steps=3, optimizer=adapter)
    last = jax.tree_util.tree_map(lambda x: x[-1], trace.params)
    assert tree_allclose(last, adapted, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(trace.curve[:3], losses, rtol=1e-10)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"damping": -1.0}, "damping"),
        ({"damping": 0.0}, "damping"),
        ({"solver": "qr"}, "solver"),
        ({"cg_steps": 0}, "cg_steps"),
        ({"cg_rtol": float("nan")}, "cg_rtol"),
        ({"preconditioner": "ilu"}, "preconditioner.*'ilu'"),
        ({"jacobi_samples": 0}, "jacobi_samples"),
    ],
)
def test_gauss_newton_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mp.GaussNewton(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"memory_size": 0}, "memory_size"), ({"learning_rate": -1.0}, "learning_rate")],
)
def test_lbfgs_bad_settings_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mp.LBFGS(**kwargs)


def test_a_bad_adapter_is_a_type_error(getkey):
    params, static, loss, batch = small_problem(getkey())
    with pytest.raises(TypeError, match="optimizer|adapter"):
        mp.adapt(params, static, loss, None, batch, steps=1, optimizer="adam")


def _direction(key, tree):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jr.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [jr.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
    )


def _along(tree, direction, eps):
    return jax.tree_util.tree_map(lambda x, d: x + eps * d, tree, direction)


def test_imaml_with_a_gauss_newton_inner_solve_against_finite_differences(getkey):
    params, static, loss, support = small_problem(getkey(), width=4, depth=1)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    task = mp.BurgersTask(jnp.asarray(0.05))
    inner = mp.GaussNewton(damping=1e-3, solver="dense")
    learner = mp.IMAML(
        inner_steps=40, inner_optimizer=inner, prox_lambda=10.0, cg_steps=100,
        cg_rtol=1e-14, cg_atol=0.0,
    )  # fmt: skip
    grads, _ = learner.meta_gradient(params, static, loss, task, support, query)

    def objective(theta):
        proximal = mp.ProximalLoss(loss, theta, 10.0)
        adapted, _ = mp.adapt(theta, static, proximal, task, support, steps=40, optimizer=inner)
        return loss(eqx.combine(adapted, static), task, query)

    v = _direction(getkey(), params)
    eps = 1e-4  # the inner solve is converged to ~1e-9: smaller steps see its noise
    fd = (objective(_along(params, v, eps)) - objective(_along(params, v, -eps))) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(flat(grads), flat(v)), fd, rtol=1e-5)


@pytest.mark.parametrize("preconditioner", ["none", "jacobi"])
def test_second_order_maml_through_gauss_newton_steps_against_finite_differences(
    getkey, preconditioner
):
    params, static, loss, support = small_problem(getkey(), width=4, depth=1)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    task = mp.BurgersTask(jnp.asarray(0.05))
    # Well damped: with lambda = 1e-2 the truncated CG amplifies rounding so much that
    # central differences stop converging below eps = 1e-4 (autodiff agrees with them
    # above it). Truncated CG's step depends on the preconditioner, so its derivative
    # must go through the Jacobi diagonal too.
    inner = mp.GaussNewton(
        damping=1.0, adaptive=False, cg_steps=8, cg_rtol=0.0, preconditioner=preconditioner
    )
    learner = mp.MAML(inner_steps=2, inner_optimizer=inner)
    grads, _ = learner.meta_gradient(params, static, loss, task, support, query)

    def objective(theta):
        return learner.meta_loss(theta, static, loss, task, support, query)[0]

    v = _direction(getkey(), params)
    eps = 1e-6
    fd = (objective(_along(params, v, eps)) - objective(_along(params, v, -eps))) / (2 * eps)
    np.testing.assert_allclose(jnp.vdot(flat(grads), flat(v)), fd, rtol=1e-5)


def test_reptile_over_gauss_newton_moves_towards_the_adapted_parameters(getkey):
    params, static, loss, support = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    # Fixed and strong damping, so that the traced and the eager loop agree to rounding
    # (adaptive, at lambda = 1e-2 from a random start, they differ by 5e-4: truncated CG
    # amplifies rounding, and an acceptance test near its threshold can flip).
    inner = mp.GaussNewton(damping=1.0, adaptive=False, cg_steps=10, cg_rtol=0.0)
    grads, _ = mp.Reptile(inner_steps=2, inner_optimizer=inner).meta_gradient(
        params, static, loss, task, support, support
    )
    adapted, _ = mp.adapt(params, static, loss, task, support, steps=2, optimizer=inner)
    expected = jax.tree_util.tree_map(jnp.subtract, params, adapted)
    assert tree_allclose(grads, expected, rtol=1e-8, atol=1e-10)


def test_timed_adaptation_compiles_its_loop_once(getkey, caplog):
    params, static, loss, batch = small_problem(getkey())
    task = mp.BurgersTask(jnp.asarray(0.02))
    points = mp.sample_collocation(getkey(), mp.Burgers(), 30, 1, 1).interior
    with caplog.at_level(logging.WARNING), jax.log_compiles():
        _, trace = mp.training.timed_adaptation(
            params, static, loss, task, batch, adapter=mp.LBFGS(), steps=(0, 1, 2, 5),
            points=points, u_ref=jnp.ones(30),
        )  # fmt: skip
    # optax's L-BFGS starts from weakly typed scalars: without care the first stretch
    # returns them strongly typed and the loop compiles again inside the clock.
    compiles = [r for r in caplog.records if "Compiling jit(_advance)" in r.getMessage()]
    assert len(compiles) == 1
    assert trace.steps == (0, 1, 2, 5) and trace.loss[-1] < trace.loss[0]


def test_maml_refuses_an_inner_adapter_reverse_mode_cannot_go_through():
    for adapter in (mp.GaussNewton(), mp.LBFGS()):
        with pytest.raises(ValueError, match="reverse mode cannot go through"):
            mp.MAML(inner_optimizer=adapter)
    mp.MAML(inner_optimizer=mp.GaussNewton(cg_rtol=0.0))
    mp.Reptile(inner_optimizer=mp.GaussNewton())  # first order: any adapter
