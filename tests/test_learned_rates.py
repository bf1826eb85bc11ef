"""Meta-SGD and MAML++: learned inner rates over the shared loop, in float64."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import metapinn as mp

from .helpers import small_problem, tree_allclose
from .test_meta import _central_difference_check


NU = 0.02
ALPHA = 0.05
K = 3


def _problem(getkey):
    # One hidden layer (two parameter arrays): compiling dominates these tests' time.
    params, static, loss_fn, support = small_problem(getkey(), depth=1)
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    return params, static, loss_fn, support, query


def _anil_spec(params):
    spec = jax.tree_util.tree_map(lambda _: False, params)
    return eqx.tree_at(lambda s: s.layers[-1], spec, True)


def _jitted_meta_gradient(learner):
    return eqx.filter_jit(learner.meta_gradient)


def _random_rates(key, meta_params, scale=0.3):
    """The rates times 1 + scale·N(0, 1): distinct per entry, still near the start."""
    leaves, treedef = jax.tree_util.tree_flatten(meta_params.rates)
    keys = jr.split(key, len(leaves))
    rates = treedef.unflatten(
        [
            r * (1 + scale * jr.normal(k, r.shape, r.dtype))
            for k, r in zip(keys, leaves, strict=True)
        ]
    )
    return mp.MetaParams(meta_params.params, rates)


def _loss_gradient(loss_fn, static, task, query):
    return jax.jit(jax.grad(lambda p: loss_fn(eqx.combine(p, static), task, query)))


# Reductions to MAML.


@pytest.mark.parametrize(
    "inner_vjp, anil",
    [("hvp", False), ("autodiff", False), ("hvp", True)],
    ids=["hvp", "autodiff", "hvp-anil"],
)
def test_metasgd_with_constant_rates_is_maml(getkey, inner_vjp, anil):
    params, static, loss_fn, support, query = _problem(getkey)
    spec = _anil_spec(params) if anil else None
    task = mp.BurgersTask(NU)
    maml = mp.MAML(inner_steps=K, inner_optimizer=ALPHA, adapt_spec=spec, inner_vjp=inner_vjp)
    expected, maml_aux = _jitted_meta_gradient(maml)(params, static, loss_fn, task, support, query)
    learner = mp.MetaSGD(inner_steps=K, inner_optimizer=ALPHA, adapt_spec=spec, inner_vjp=inner_vjp)
    meta_params = learner.init_meta_params(params)
    if anil:  # rates only where the parameters adapt
        assert all(r is None for r in meta_params.rates.layers[:-1])
    grads, aux = _jitted_meta_gradient(learner)(meta_params, static, loss_fn, task, support, query)
    assert tree_allclose(grads.params, expected, rtol=1e-10, atol=0)
    assert tree_allclose(aux, maml_aux, rtol=1e-12, atol=0)
    assert learner.initialisation(meta_params) is params


@pytest.mark.parametrize("multi_step_loss", [True, False])
def test_mamlpp_with_all_weight_on_the_final_step_is_maml(getkey, multi_step_loss):
    params, static, loss_fn, support, query = _problem(getkey)
    task = mp.BurgersTask(NU)
    maml = mp.MAML(inner_steps=K, inner_optimizer=ALPHA)
    expected, _ = _jitted_meta_gradient(maml)(params, static, loss_fn, task, support, query)
    learner = mp.MAMLPlusPlus(
        inner_steps=K,
        inner_optimizer=ALPHA,
        msl_weights=jnp.array([0.0, 0.0, 1.0]),
        multi_step_loss=multi_step_loss,
    )
    meta_params = learner.init_meta_params(params)
    assert all(r.shape == (K,) for r in jax.tree_util.tree_leaves(meta_params.rates))
    grads, _ = _jitted_meta_gradient(learner)(meta_params, static, loss_fn, task, support, query)
    assert tree_allclose(grads.params, expected, rtol=1e-10, atol=0)


def test_learned_optimizers_run_the_learned_rule(getkey):
    params, static, loss_fn, support, _ = _problem(getkey)
    task = mp.BurgersTask(NU)
    sgd, _ = mp.adapt(params, static, loss_fn, task, support, steps=K, optimizer=ALPHA)
    for learner in (mp.MetaSGD(inner_optimizer=ALPHA), mp.MAMLPlusPlus(inner_optimizer=ALPHA)):
        rule = learner.learned_optimizer(learner.init_meta_params(params))
        adapted, _ = mp.adapt(params, static, loss_fn, task, support, steps=K, optimizer=rule)
        assert tree_allclose(adapted, sgd, rtol=1e-12, atol=0)


# Meta-gradients in θ and the rates.


def _learners(inner_vjp="hvp"):
    return [
        mp.MetaSGD(inner_steps=K, inner_optimizer=ALPHA, inner_vjp=inner_vjp),
        mp.MAMLPlusPlus(
            inner_steps=K,
            inner_optimizer=ALPHA,
            inner_vjp=inner_vjp,
            msl_weights=jnp.array([0.2, 0.3, 0.5]),
        ),
    ]


@pytest.mark.parametrize("index", [0, 1], ids=["MetaSGD", "MAMLPlusPlus"])
def test_meta_gradients_match_finite_differences(getkey, index):
    params, static, loss_fn, support, query = _problem(getkey)
    task = mp.BurgersTask(NU)
    learner = _learners()[index]
    meta_params = _random_rates(getkey(), learner.init_meta_params(params))

    def meta_loss(m):
        return learner.meta_loss(m, static, loss_fn, task, support, query)[0]

    _central_difference_check(meta_loss, meta_params, getkey())


@pytest.mark.parametrize("index", [0, 1], ids=["MetaSGD", "MAMLPlusPlus"])
def test_hvp_equals_autodiff(getkey, index):
    params, static, loss_fn, support, query = _problem(getkey)
    task = mp.BurgersTask(NU)
    hvp, autodiff = _learners("hvp")[index], _learners("autodiff")[index]
    meta_params = _random_rates(getkey(), hvp.init_meta_params(params))
    args = (meta_params, static, loss_fn, task, support, query)
    grads, _ = _jitted_meta_gradient(hvp)(*args)
    expected, _ = _jitted_meta_gradient(autodiff)(*args)
    assert tree_allclose(grads, expected, rtol=1e-10, atol=1e-14)
    assert all(jnp.any(r != 0) for r in jax.tree_util.tree_leaves(grads.rates))


def test_metasgd_first_order_is_fomaml_and_still_learns_the_rates(getkey):
    params, static, loss_fn, support, query = _problem(getkey)
    task = mp.BurgersTask(NU)
    fomaml = mp.FOMAML(inner_steps=K, inner_optimizer=ALPHA)
    expected, _ = _jitted_meta_gradient(fomaml)(params, static, loss_fn, task, support, query)
    learner = mp.MetaSGD(inner_steps=K, inner_optimizer=ALPHA, first_order=True)
    meta_params = learner.init_meta_params(params)
    grads, _ = _jitted_meta_gradient(learner)(meta_params, static, loss_fn, task, support, query)
    assert tree_allclose(grads.params, expected, rtol=1e-10, atol=0)
    # dφ_K/dα = −Σ_k g_k (elementwise), so the rates' gradient is −Σ_k g_k ⊙ ∇L_query(φ_K).
    _, _, trajectory = mp.adapt(
        params, static, loss_fn, task, support, steps=K, optimizer=ALPHA, return_trajectory=True
    )
    support_grad = _loss_gradient(loss_fn, static, task, support)
    phis = [params] + [jax.tree_util.tree_map(lambda x, k=k: x[k], trajectory) for k in range(K)]
    total = jax.tree_util.tree_map(lambda *g: sum(g), *[support_grad(p) for p in phis[:-1]])
    rates_grad = jax.tree_util.tree_map(lambda s, q: -s * q, total, expected)
    assert tree_allclose(grads.rates, rates_grad, rtol=1e-10, atol=1e-14)


def test_mamlpp_first_order_is_the_weighted_query_gradients(getkey):
    """First order: the θ-gradient is Σ_j w_j ∇L_query(φ_j), and the rate of leaf ℓ at
    step k gets −Σ_{j>k} w_j ⟨g_k^ℓ, ∇^ℓ L_query(φ_j)⟩ (the paper's first order)."""
    params, static, loss_fn, support, query = _problem(getkey)
    task = mp.BurgersTask(NU)
    weights = jnp.array([0.2, 0.3, 0.5])
    learner = mp.MAMLPlusPlus(
        inner_steps=K, inner_optimizer=ALPHA, msl_weights=weights, first_order=True
    )
    meta_params = _random_rates(getkey(), learner.init_meta_params(params))
    grads, aux = _jitted_meta_gradient(learner)(meta_params, static, loss_fn, task, support, query)
    rule = learner.learned_optimizer(meta_params)
    _, _, trajectory = mp.adapt(
        params, static, loss_fn, task, support, steps=K, optimizer=rule, return_trajectory=True
    )
    phis = [params] + [jax.tree_util.tree_map(lambda x, k=k: x[k], trajectory) for k in range(K)]
    query_grad = _loss_gradient(loss_fn, static, task, query)
    support_grad = _loss_gradient(loss_fn, static, task, support)
    q = [query_grad(p) for p in phis[1:]]  # q[j-1] at φ_j
    g = [support_grad(p) for p in phis[:-1]]  # g[k] at φ_k
    expected = jax.tree_util.tree_map(
        lambda *qs: sum(w * x for w, x in zip(weights, qs, strict=True)), *q
    )
    assert tree_allclose(grads.params, expected, rtol=1e-10, atol=0)
    for leaf in range(len(params.layers)):
        for k in range(K):
            later = sum(weights[j - 1] * q[j - 1].layers[leaf] for j in range(k + 1, K + 1))
            rate_grad = -jnp.vdot(g[k].layers[leaf], later)
            assert jnp.allclose(grads.rates.layers[leaf][k], rate_grad, rtol=1e-10, atol=0)
    query_loss = loss_fn(eqx.combine(phis[-1], static), task, query)
    assert jnp.allclose(aux.query_loss, query_loss, rtol=1e-12)


# The outer loop.


def _counting(loss_fn, traces):
    class CountingLoss(eqx.Module):
        inner: mp.PINNLoss

        def __call__(self, model, task, batch):
            traces.append(None)
            return self.inner(model, task, batch)

    return CountingLoss(loss_fn)


@pytest.mark.parametrize("index", [0, 1], ids=["MetaSGD", "MAMLPlusPlus"])
def test_meta_step_trains_the_rates_and_compiles_once(getkey, index):
    params, static, loss_fn, support, query = _problem(getkey)
    f32 = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree)
    params, support, query = f32(params), f32(support), f32(query)
    # Under annealing (msl over the whole run) the weights change every step, first
    # order all along: one compile.
    learner = mp.MetaSGD(inner_steps=2, inner_optimizer=0.01) if index == 0 else None
    if learner is None:
        learner = mp.MAMLPlusPlus(inner_steps=2, msl_fraction=1.0, first_order_fraction=1.0)
    meta_params = learner.init_meta_params(params)
    opt = optax.adam(1e-3)
    state = opt.init(meta_params)
    traces = []
    counting = _counting(loss_fn, traces)
    first = None
    for step in range(4):
        tasks = mp.BurgersTask(jnp.array([0.01, 0.03], jnp.float32) + 0.001 * step)
        scheduled = learner.at_step(step, 4)
        new, state, info = mp.meta_step(
            scheduled, meta_params, static, state, opt, counting, tasks, support, query
        )
        if step == 0:
            first = len(traces)
            assert jax.tree_util.tree_structure(new) == jax.tree_util.tree_structure(meta_params)
            assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(new))
            assert info.support_losses.shape == (2, 2)
            old_rates = jax.tree_util.tree_leaves(meta_params.rates)
            new_rates = jax.tree_util.tree_leaves(new.rates)
            assert all(jnp.all(a != b) for a, b in zip(old_rates, new_rates, strict=True))
        meta_params = new
    assert first > 0 and len(traces) == first
    if index == 1:
        assert scheduled.first_order and scheduled.multi_step_loss


def test_meta_step_averages_the_tasks(getkey):
    """The task axis broadcasts over the whole `MetaParams` (and its transpose sums the
    tasks' meta-gradients in θ and the rates alike)."""
    params, static, loss_fn, support, query = _problem(getkey)
    learner = _learners()[1]
    meta_params = learner.init_meta_params(params)
    nus = jnp.array([0.01, 0.04])
    opt = optax.sgd(1.0)
    new, _, _ = mp.meta_step(
        learner,
        meta_params,
        static,
        opt.init(meta_params),
        opt,
        loss_fn,
        mp.BurgersTask(nus),
        support,
        query,
    )
    grad_fn = _jitted_meta_gradient(learner)
    per_task = [
        grad_fn(meta_params, static, loss_fn, mp.BurgersTask(nu), support, query)[0] for nu in nus
    ]
    mean = jax.tree_util.tree_map(lambda *g: sum(g) / len(g), *per_task)
    step = jax.tree_util.tree_map(jnp.subtract, meta_params, new)
    assert tree_allclose(step, mean, rtol=1e-10, atol=1e-14)


# The MAML++ schedule.


def test_mamlpp_schedule():
    learner = mp.MAMLPlusPlus(
        inner_steps=4, msl_fraction=0.5, first_order_fraction=0.3, msl_floor=0.1
    )
    steps = 100
    schedule = [learner.at_step(step, steps) for step in range(steps + 5)]
    weights = jnp.stack([s.msl_weights for s in schedule])
    assert jnp.allclose(jnp.sum(weights, axis=1), 1, rtol=0, atol=1e-14)
    assert jnp.allclose(weights[0], 0.25)
    assert jnp.all(jnp.diff(weights[:, :-1], axis=0) <= 0)  # non-final: non-increasing
    assert jnp.all(jnp.diff(weights[:, -1]) >= 0)  # final: non-decreasing
    assert jnp.allclose(weights[49, :-1], 0.1 / 4)  # the floor, as a multiple of 1/K
    assert jnp.all(weights[50:, :-1] == 0) and jnp.all(weights[50:, -1] == 1)
    assert [s.multi_step_loss for s in schedule] == [s < 50 for s in range(steps + 5)]
    assert [s.first_order for s in schedule] == [s < 30 for s in range(steps + 5)]
    # The scheduled weights trace like the learner's own: no recompile between them.
    avals = {jax.typeof(s.msl_weights) for s in [learner, *schedule]}
    assert len(avals) == 1 and not learner.msl_weights.weak_type
    # The schedule's other settings are kept.
    assert schedule[7].msl_fraction == 0.5 and schedule[7].inner_steps == 4
    assert jnp.allclose(learner.at_step(0, 1).msl_weights, jnp.array([0.0, 0.0, 0.0, 1.0]))
    # MetaSGD has no schedule.
    meta_sgd = mp.MetaSGD()
    assert meta_sgd.at_step(3, 10) is meta_sgd


# Bad settings.


@pytest.mark.parametrize("rate", [-0.1, 0.0, math.nan, math.inf])
@pytest.mark.parametrize("cls", [mp.MetaSGD, mp.MAMLPlusPlus])
def test_bad_initial_rates_are_rejected(cls, rate):
    with pytest.raises(ValueError, match=f"got {rate!r}"):
        cls(inner_optimizer=rate)


@pytest.mark.parametrize("cls", [mp.MetaSGD, mp.MAMLPlusPlus])
def test_an_optax_transformation_is_not_an_initial_rate(cls):
    with pytest.raises(ValueError, match="initial inner rate.*GradientTransformation"):
        cls(inner_optimizer=optax.sgd(0.1))


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"inner_steps": 0}, "inner_steps >= 1, got 0"),
        ({"msl_fraction": 1.5}, "msl_fraction must be a number in \\[0, 1\\], got 1.5"),
        ({"first_order_fraction": -0.1}, "first_order_fraction .* got -0.1"),
        ({"msl_floor": math.nan}, "msl_floor .* got nan"),
        ({"inner_steps": 2, "msl_weights": jnp.ones(3) / 3}, "shape \\(inner_steps,\\) = \\(2,\\)"),
    ],
)
def test_bad_schedules_are_rejected(settings, message):
    with pytest.raises(ValueError, match=message):
        mp.MAMLPlusPlus(**settings)


def test_bad_schedule_steps_are_rejected():
    learner = mp.MAMLPlusPlus()
    with pytest.raises(ValueError, match="step must be an integer >= 0, got -1"):
        learner.at_step(-1, 10)
    with pytest.raises(ValueError, match="steps must be an integer >= 1, got 0"):
        learner.at_step(0, 0)
