"""Meta-gradients of the shared inner loop, in float64."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import metapinn as mp

from .helpers import Quadratic, flat, small_learners, small_problem, tree_allclose


NU = 0.02


def _tasks_and_points(getkey, n_tasks=3):
    pde = mp.Burgers()
    support = mp.sample_collocation(getkey(), pde, 24, 8, 4)
    query = mp.sample_collocation(getkey(), pde, 24, 8, 4)
    tasks = mp.BurgersTask(jnp.linspace(0.01, 0.05, n_tasks))
    return tasks, support, query


def _central_difference_check(f, params, key, *, eps=1e-5, n_dirs=3, rtol=1e-6):
    """Compare grad(f)·v with a fourth-order central difference of f along random v."""
    f = jax.jit(f)
    grad = jax.jit(jax.grad(f))(params)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    for k in jr.split(key, n_dirs):
        ks = jr.split(k, len(leaves))
        v = treedef.unflatten(
            [jr.normal(kk, x.shape, x.dtype) for kk, x in zip(ks, leaves, strict=True)]
        )

        def along(h, v=v):
            return f(jax.tree_util.tree_map(lambda p, d: p + h * d, params, v))

        fd = (8 * (along(eps) - along(-eps)) - (along(2 * eps) - along(-2 * eps))) / (12 * eps)
        ad = jnp.vdot(flat(grad), flat(v))
        assert abs(fd - ad) <= rtol * abs(ad), (float(fd), float(ad))


@pytest.mark.parametrize(
    "inner",
    [0.01, optax.adam(1e-2, eps=1e-3, eps_root=1e-12)],
    ids=["sgd", "adam"],
)
def test_maml_meta_gradient_matches_finite_differences(getkey, inner):
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    learner = mp.MAML(inner_steps=3, inner_optimizer=inner)
    task = mp.BurgersTask(NU)

    def meta_loss(p):
        return learner.meta_loss(p, static, loss_fn, task, support, query)[0]

    _central_difference_check(meta_loss, params, getkey())


def test_maml_meta_gradient_on_a_quadratic_has_the_closed_form(getkey):
    """Support loss ½(θ-c)ᵀA(θ-c), query loss ½‖θ-d‖²: the exact MAML gradient is
    (I - αA)^K ∇L_query(θ_K)."""
    n, K, alpha = 5, 4, 0.1
    m = jr.normal(getkey(), (n, n))
    A = m @ m.T / n + jnp.eye(n)
    c, d, theta = jr.normal(getkey(), (n,)), jr.normal(getkey(), (n,)), jr.normal(getkey(), (n,))

    support, query = Quadratic(c, A), Quadratic(d, jnp.eye(n))

    def quad_loss(model, task, batch):
        del task
        return batch(model["theta"])

    params, static = eqx.partition({"theta": theta}, eqx.is_array)
    learner = mp.MAML(inner_steps=K, inner_optimizer=alpha)
    grad, _ = learner.meta_gradient(params, static, quad_loss, None, support, query)

    theta_k = theta
    for _ in range(K):
        theta_k = theta_k - alpha * A @ (theta_k - c)
    jac = jnp.linalg.matrix_power(jnp.eye(n) - alpha * A, K)
    expected = jac @ (theta_k - d)
    assert jnp.allclose(grad["theta"], expected, rtol=1e-10, atol=1e-12)


def test_with_no_inner_steps_all_gradients_are_the_plain_gradient(getkey):
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    task = mp.BurgersTask(NU)
    plain = jax.grad(lambda p: loss_fn(eqx.combine(p, static), task, query))(params)
    learners = (
        mp.MAML(inner_steps=0),
        mp.FOMAML(inner_steps=0),
        mp.MultiTask(),
        mp.MultiTask(own_gradient=True),
    )
    for learner in learners:
        grad, _ = learner.meta_gradient(params, static, loss_fn, task, support, query)
        assert tree_allclose(grad, plain)


def test_fomaml_is_the_query_gradient_at_the_adapted_parameters(getkey):
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    task = mp.BurgersTask(NU)
    learner = mp.FOMAML(inner_steps=4, inner_optimizer=0.05)
    adapted, _ = learner.adapt(params, static, loss_fn, task, support)
    expected = jax.grad(lambda p: loss_fn(eqx.combine(p, static), task, query))(adapted)
    grad, _ = learner.meta_gradient(params, static, loss_fn, task, support, query)
    assert tree_allclose(grad, expected)


@pytest.mark.parametrize("steps", [1, 4])
def test_reptile_is_the_step_towards_the_adapted_parameters(getkey, steps):
    params, static, loss_fn, support = small_problem(getkey())
    task = mp.BurgersTask(NU)
    alpha = 0.05
    learner = mp.Reptile(inner_steps=steps, inner_optimizer=alpha)
    grad, _ = learner.meta_gradient(params, static, loss_fn, task, support, support)
    adapted, _ = learner.adapt(params, static, loss_fn, task, support)
    expected = jax.tree_util.tree_map(jnp.subtract, params, adapted)
    assert tree_allclose(grad, expected)
    if steps == 1:
        g = jax.grad(lambda p: loss_fn(eqx.combine(p, static), task, support))(params)
        assert tree_allclose(grad, jax.tree_util.tree_map(lambda x: alpha * x, g))


@pytest.mark.parametrize(
    "make_inner", [lambda: optax.sgd(0.05), lambda: optax.adam(1e-2)], ids=["sgd", "adam"]
)
def test_scanned_adapt_equals_a_python_loop(getkey, make_inner):
    params, static, loss_fn, batch = small_problem(getkey())
    task = mp.BurgersTask(NU)
    K = 6
    opt = make_inner()
    adapted, losses, trajectory = mp.adapt(
        params, static, loss_fn, task, batch, steps=K, optimizer=opt, return_trajectory=True
    )
    p, state, oracle_losses = params, opt.init(params), []
    for k in range(K):
        loss, g = jax.value_and_grad(lambda q: loss_fn(eqx.combine(q, static), task, batch))(p)
        oracle_losses.append(loss)
        with jax.numpy_dtype_promotion("standard"):  # optax's Adam mixes float and int
            updates, state = opt.update(g, state, p)
        p = optax.apply_updates(p, updates)
        assert tree_allclose(jax.tree_util.tree_map(lambda x, k=k: x[k], trajectory), p)
    assert tree_allclose(adapted, p)
    assert jnp.allclose(losses, jnp.stack(oracle_losses), rtol=1e-10)
    assert oracle_losses[-1] < oracle_losses[0]


def test_fomaml_is_first_order_for_optimisers_that_read_the_parameters(getkey):
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    task = mp.BurgersTask(NU)
    learner = mp.FOMAML(inner_steps=2, inner_optimizer=optax.adamw(1e-2, weight_decay=0.5))
    adapted, _ = learner.adapt(params, static, loss_fn, task, support)
    expected = jax.grad(lambda p: loss_fn(eqx.combine(p, static), task, query))(adapted)
    grad, _ = eqx.filter_jit(learner.meta_gradient)(params, static, loss_fn, task, support, query)
    assert tree_allclose(grad, expected)


def test_adapt_spec_freezes_the_other_leaves(getkey):
    params, static, loss_fn, batch = small_problem(getkey())
    spec = jax.tree_util.tree_map(lambda _: False, params)
    spec = eqx.tree_at(lambda s: s.layers[-1], spec, True)
    adapted, _ = mp.adapt(
        params,
        static,
        loss_fn,
        mp.BurgersTask(NU),
        batch,
        steps=3,
        optimizer=0.1,
        adapt_spec=spec,
    )
    assert tree_allclose(adapted.weights[:-1], params.weights[:-1], rtol=0, atol=0)
    assert not jnp.allclose(adapted.weights[-1], params.weights[-1])
    # MAML through a last-layer-only loop still differentiates every leaf.
    learner = mp.MAML(inner_steps=2, inner_optimizer=0.1, adapt_spec=spec)
    grad, _ = learner.meta_gradient(params, static, loss_fn, mp.BurgersTask(NU), batch, batch)
    assert jnp.any(grad.weights[0] != 0)


@pytest.mark.parametrize("learner", small_learners(), ids=lambda x: type(x).__name__)
def test_meta_step_preserves_structure_and_dtype_and_averages_tasks(getkey, learner):
    params, static, loss_fn, _ = small_problem(getkey())
    params = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), params)
    tasks, support, query = _tasks_and_points(getkey)
    support = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), support)
    query = jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), query)
    tasks = mp.BurgersTask(tasks.nu.astype(jnp.float32))
    opt = optax.sgd(1.0)
    new_params, _, info = mp.meta_step(
        learner, params, static, opt.init(params), opt, loss_fn, tasks, support, query
    )
    assert jax.tree_util.tree_structure(new_params) == jax.tree_util.tree_structure(params)
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(new_params))
    assert info.query_loss.shape == (3,)
    assert info.support_losses.shape == (3, learner.inner_steps)
    # With outer SGD at rate 1 the step is minus the task-mean of per-task gradients.
    gradient = eqx.filter_jit(learner.meta_gradient)  # compiled once for the three tasks
    per_task = [
        gradient(params, static, loss_fn, mp.BurgersTask(tasks.nu[b]), support, query)[0]
        for b in range(3)
    ]
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / 3, *per_task)
    step = jax.tree_util.tree_map(jnp.subtract, params, new_params)
    assert tree_allclose(step, mean, rtol=1e-4, atol=1e-6)


def test_meta_step_with_per_task_points(getkey):
    params, static, loss_fn, _ = small_problem(getkey())
    pde = mp.Burgers()
    keys = jr.split(getkey(), 3)
    support = jax.vmap(lambda k: mp.sample_collocation(k, pde, 16, 4, 2))(keys)
    tasks = mp.BurgersTask(jnp.array([0.01, 0.02, 0.04]))
    opt = optax.adam(1e-3)
    learner = mp.MAML(inner_steps=1)
    _, _, info = mp.meta_step(
        learner, params, static, opt.init(params), opt, loss_fn, tasks, support
    )
    own = eqx.filter_jit(learner.meta_loss)(
        params,
        static,
        loss_fn,
        mp.BurgersTask(0.02),
        jax.tree_util.tree_map(lambda x: x[1], support),
        jax.tree_util.tree_map(lambda x: x[1], support),
    )[0]
    assert jnp.allclose(info.query_loss[1], own, rtol=1e-10)


def test_meta_step_compiles_once(getkey):
    params, static, loss_fn, support = small_problem(getkey())
    traces = []

    class CountingLoss(eqx.Module):
        inner: mp.PINNLoss

        def __call__(self, model, task, batch):
            traces.append(None)
            return self.inner(model, task, batch)

    counting = CountingLoss(loss_fn)
    learner = mp.MAML(inner_steps=2)
    opt = optax.adam(1e-3)
    state = opt.init(params)
    tasks = mp.BurgersTask(jnp.array([0.01, 0.03]))
    params, state, _ = mp.meta_step(learner, params, static, state, opt, counting, tasks, support)
    after_first = len(traces)
    assert after_first > 0
    for k in range(5):
        tasks = mp.BurgersTask(jnp.array([0.01, 0.03]) + 0.001 * k)
        params, state, _ = mp.meta_step(
            learner, params, static, state, opt, counting, tasks, support
        )
    assert len(traces) == after_first


def test_meta_step_rejects_mismatched_task_batches(getkey):
    params, static, loss_fn, _ = small_problem(getkey())
    pde = mp.Burgers()
    support = jax.vmap(lambda k: mp.sample_collocation(k, pde, 8, 4, 2))(jr.split(getkey(), 3))
    tasks = mp.BurgersTask(jnp.array([0.01, 0.02]))
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="support points are batched over 3 tasks .* has 2"):
        mp.meta_step(mp.MAML(), params, static, opt.init(params), opt, loss_fn, tasks, support)
    with pytest.raises(ValueError, match="leading task axis"):
        mp.meta_step(
            mp.MAML(),
            params,
            static,
            opt.init(params),
            opt,
            loss_fn,
            mp.BurgersTask(0.01),
            jax.tree_util.tree_map(lambda x: x[0], support),
        )


@pytest.mark.parametrize("steps", [-1, -7])
def test_bad_inner_steps_are_rejected(steps):
    with pytest.raises((ValueError, TypeError), match=f"got {steps}"):
        mp.MAML(inner_steps=steps)


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown meta-learning method 'mamal'"):
        mp.make_learner("mamal")
    with pytest.raises(ValueError, match="inner_steps must be 0, got 3"):
        mp.MultiTask(inner_steps=3)
    with pytest.raises(TypeError, match="inner_optimizer.*'adam'"):
        mp.FOMAML(inner_optimizer="adam")
    assert isinstance(mp.make_learner("reptile", inner_steps=3), mp.Reptile)


@pytest.mark.parametrize(
    "learner",
    [*small_learners(), mp.MultiTask(own_gradient=True)],
    ids=lambda x: type(x).__name__ + ("-own" if getattr(x, "own_gradient", False) else ""),
)
def test_tasks_in_groups_give_the_vmapped_step(getkey, learner):
    """`tasks_at_once` maps the tasks in groups, one after another: the same step."""
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    tasks = mp.BurgersTask(jnp.array([0.01, 0.02, 0.03, 0.04]))
    opt = optax.sgd(0.1)
    state = opt.init(params)
    steps = [
        mp.meta_step(
            learner, params, static, state, opt, loss_fn, tasks, support, query, tasks_at_once=n
        )  # fmt: skip
        for n in (None, 1, 2)  # all vmapped, one by one, two groups of two
    ]
    for other in steps[1:]:
        assert tree_allclose(other[0], steps[0][0], rtol=1e-10, atol=1e-12)
        assert tree_allclose(other[2], steps[0][2], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -1, True, 3])
def test_bad_task_groups_are_rejected(getkey, bad):
    params, static, loss_fn, support = small_problem(getkey())
    tasks = mp.BurgersTask(jnp.array([0.01, 0.02, 0.03, 0.04]))
    opt = optax.sgd(0.1)
    with pytest.raises(ValueError, match="tasks_at_once"):
        mp.meta_step(mp.Reptile(inner_steps=1), params, static, opt.init(params), opt, loss_fn,
                     tasks, support, tasks_at_once=bad)  # fmt: skip
