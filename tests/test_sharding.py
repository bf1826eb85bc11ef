"""The task batch split over devices (two host CPU devices, see conftest.py)."""

import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import metapinn as mp

from .helpers import small_learners, small_problem, tree_allclose


def _tasks(n):
    return mp.BurgersTask(jnp.linspace(0.01, 0.05, n))


@pytest.mark.parametrize("learner", small_learners(), ids=lambda x: type(x).__name__)
def test_sharded_meta_step_equals_the_unsharded_one(getkey, learner):
    assert len(jax.devices()) >= 2
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    tasks = _tasks(4)
    optimizer = optax.adam(1e-2)
    state = optimizer.init(params)
    args = (learner, params, static, state, optimizer, loss_fn, tasks, support, query)
    expected = mp.meta_step(*args)
    sharded = mp.meta_step(*args, mesh=mp.task_mesh(2))
    assert tree_allclose(sharded, expected, rtol=1e-10, atol=1e-13)
    # The per-task diagnostics come back in task order.
    assert sharded[2].query_loss.shape == (4,)


@pytest.mark.parametrize(
    "learner",
    [
        mp.IMAML(inner_steps=2, inner_optimizer=0.01, prox_lambda=10.0, cg_steps=3),
        mp.IMAML(inner_steps=2, inner_optimizer=mp.GaussNewton(cg_steps=3), prox_lambda=10.0),
        mp.Reptile(inner_steps=2, inner_optimizer=mp.GaussNewton(cg_steps=3, cg_rtol=0.0)),
    ],
    ids=["imaml", "imaml-gauss-newton", "reptile-gauss-newton"],
)
def test_sharded_second_order_and_implicit_meta_steps_equal_the_unsharded_ones(getkey, learner):
    # iMAML's implicit solve (CG) and Gauss-Newton's inner CG inside `jax.shard_map`:
    # lineax's CG refused to run there, so every split iMAML run failed.
    params, static, loss_fn, support = small_problem(getkey())
    query = mp.sample_collocation(getkey(), mp.Burgers(), 24, 8, 4)
    optimizer = optax.adam(1e-2)
    args = (learner, params, static, optimizer.init(params), optimizer, loss_fn, _tasks(4),
            support, query)  # fmt: skip
    expected = mp.meta_step(*args)
    sharded = mp.meta_step(*args, mesh=mp.task_mesh(2))
    assert tree_allclose(sharded, expected, rtol=1e-9, atol=1e-12)


def test_sharded_meta_step_with_per_task_points(getkey):
    params, static, loss_fn, _ = small_problem(getkey())
    keys = jr.split(getkey(), 4)
    support = jax.vmap(lambda k: mp.sample_collocation(k, mp.Burgers(), 16, 4, 2))(keys)
    optimizer = optax.sgd(0.1)
    args = (
        mp.MAML(inner_steps=1),
        params,
        static,
        optimizer.init(params),
        optimizer,
        loss_fn,
        _tasks(4),
        support,
    )
    assert tree_allclose(
        mp.meta_step(*args, mesh=mp.task_mesh(2)), mp.meta_step(*args), rtol=1e-10, atol=1e-13
    )


def test_uneven_task_split_is_rejected(getkey):
    params, static, loss_fn, support = small_problem(getkey())
    optimizer = optax.sgd(0.1)
    with pytest.raises(ValueError, match="task batch of 3 does not split evenly over the mesh's 2"):
        mp.meta_step(
            mp.MAML(inner_steps=1),
            params,
            static,
            optimizer.init(params),
            optimizer,
            loss_fn,
            _tasks(3),
            support,
            mesh=mp.task_mesh(2),
        )


@pytest.mark.parametrize("devices", [0, 99, 1.5])
def test_task_mesh_rejects_bad_device_counts(devices):
    # A float may be caught first by the test run's jaxtyping hook; both name it.
    with pytest.raises((ValueError, TypeError), match=f"{devices}"):
        mp.task_mesh(devices)


def test_sharded_meta_step_catches_a_bad_viscosity(getkey):
    params, static, loss_fn, support = small_problem(getkey(), width=4)
    optimizer = optax.sgd(0.1)
    learner = mp.MAML(inner_steps=1)
    mesh = mp.task_mesh(2)

    def step(nus):
        return mp.meta_step(
            learner,
            params,
            static,
            optimizer.init(params),
            optimizer,
            loss_fn,
            mp.BurgersTask(nus),
            support,
            mesh=mesh,
        )

    # Whichever output is used, every device stops with the check's message (none is
    # left waiting in a collective), and the next call runs normally.
    for output in (lambda out: out[2].meta_loss, lambda out: out[0].layers[0]):
        run = jax.jit(lambda nus, output=output: output(step(nus)))
        assert jnp.all(jnp.isfinite(run(jnp.asarray([0.01, 0.02]))))
        with pytest.raises((ValueError, RuntimeError), match="nu must be finite and > 0"):
            run(jnp.asarray([0.01, -0.02])).block_until_ready()
        assert jnp.all(jnp.isfinite(run(jnp.asarray([0.03, 0.02]))))


@pytest.mark.parametrize(("n_inits", "at_once"), [(3, 1), (2, 2), (3, None)])
def test_few_shot_spread_over_devices_equals_one_device(getkey, n_inits, at_once):
    params, static, loss_fn, batch = small_problem(getkey())
    inits = jax.tree.map(lambda p: jnp.stack([p * (1 + 0.1 * i) for i in range(n_inits)]), params)
    tasks = _tasks(3)  # 3 inits x 3 tasks = 9 adaptations: one device gets a filler
    kwargs = dict(steps=(0, 2, 5), optimizer=optax.adam(1e-2), at_once=at_once)
    expected = mp.few_shot(inits, static, loss_fn, tasks, batch, **kwargs)
    spread = mp.few_shot(inits, static, loss_fn, tasks, batch, mesh=mp.task_mesh(2), **kwargs)
    assert spread.losses.shape == (n_inits, 3, 3)
    assert tree_allclose(spread, expected, rtol=1e-12, atol=1e-14)
