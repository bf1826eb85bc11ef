"""The meta-training loop that lasts (checkpoints, resume, non-finite stop) and the
few-shot recording scan."""

import json
import os
import signal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import metapinn as mp

from .helpers import small_problem, tree_allclose


def _float32_problem(key):
    params, static, loss_fn, batch = small_problem(key, width=8, depth=1)
    to32 = lambda tree: jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), tree)
    return to32(params), static, loss_fn, to32(batch)


OUTER = optax.adam(1e-3)  # one object: meta_step compiles once for the whole module
FOMAML = mp.FOMAML(inner_steps=2, inner_optimizer=0.01)


def _train(params, static, loss_fn, batch, nus, **kwargs):
    tasks = mp.BurgersTask(jnp.asarray(nus, dtype=jnp.float32))
    settings = dict(steps=7, optimizer=OUTER, key=jr.key(3), tasks_per_step=2, progress=False)
    settings.update(kwargs)
    return mp.meta_train(FOMAML, params, static, loss_fn, tasks, batch, **settings)


def test_checkpoint_round_trip_is_bitwise(tmp_path, getkey):
    params, *_ = small_problem(getkey())
    state = {"params": params, "opt": OUTER.init(params), "key": jr.key_data(getkey())}
    mp.save_checkpoint(tmp_path / "c.npz", state, {"step": 3, "note": "x"})
    loaded, meta = mp.load_checkpoint(tmp_path / "c.npz", state)
    assert meta == {"step": 3, "note": "x"}
    assert tree_allclose(loaded, state, rtol=0, atol=0)
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]  # no temporary file left behind


def test_checkpoint_interrupted_write_keeps_old_file(tmp_path, getkey):
    params, *_ = small_problem(getkey())
    mp.save_checkpoint(tmp_path / "c.npz", params, {"step": 1})

    class Boom(Exception):
        pass

    class Exploding:  # a leaf that fails while numpy writes it
        def __array__(self, dtype=None, copy=None):
            raise Boom

    with pytest.raises(Boom):
        mp.save_checkpoint(tmp_path / "c.npz", [Exploding()], {"step": 2})
    _, meta = mp.load_checkpoint(tmp_path / "c.npz", params)
    assert meta["step"] == 1
    assert sorted(os.listdir(tmp_path)) == ["c.npz"]


def test_checkpoint_mismatch_is_a_clear_error(tmp_path, getkey):
    params, *_ = small_problem(getkey())
    mp.save_checkpoint(tmp_path / "c.npz", params, {"step": 1})
    wider, *_ = small_problem(getkey(), width=9)
    with pytest.raises(ValueError, match="shape"):
        mp.load_checkpoint(tmp_path / "c.npz", wider)


def test_resume_is_bitwise_identical(tmp_path, getkey):
    params, static, loss_fn, batch = _float32_problem(getkey())
    nus = [0.02, 0.03, 0.04]
    whole = _train(params, static, loss_fn, batch, nus, run_dir=tmp_path / "a", checkpoint_every=2)
    # Stopped after 3 steps with checkpoints every 2: the metrics file holds a line
    # past the last checkpoint, as after a real kill.
    with pytest.raises(mp.RunInterrupted):
        _train(
            params, static, loss_fn, batch, nus,
            run_dir=tmp_path / "b", checkpoint_every=2, stop_after=3,
        )  # fmt: skip
    lines = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3
    with pytest.raises(FileExistsError, match="resume"):
        _train(params, static, loss_fn, batch, nus, run_dir=tmp_path / "b", checkpoint_every=2)
    resumed = _train(
        params, static, loss_fn, batch, nus,
        run_dir=tmp_path / "b", checkpoint_every=2, resume=True,
    )  # fmt: skip
    assert resumed.start_step == 2
    assert tree_allclose(resumed.params, whole.params, rtol=0, atol=0)
    assert tree_allclose(resumed.opt_state, whole.opt_state, rtol=0, atol=0)
    np.testing.assert_array_equal(resumed.meta_loss, whole.meta_loss)
    np.testing.assert_array_equal(resumed.task_index, whole.task_index)

    def rows(name):
        text = (tmp_path / name / "metrics.jsonl").read_text()
        return [
            {k: v for k, v in json.loads(r).items() if k != "seconds"} for r in text.splitlines()
        ]

    assert rows("a") == rows("b")
    # The task sampling really samples (2 of 3 tasks), so the key was restored too.
    assert len({tuple(t) for t in whole.task_index}) > 1


def test_resume_rejects_other_settings(tmp_path, getkey):
    params, static, loss_fn, batch = _float32_problem(getkey())
    nus = [0.02, 0.03]
    _train(params, static, loss_fn, batch, nus, run_dir=tmp_path, steps=2, config={"lr": 1})
    with pytest.raises(ValueError, match="lr"):
        _train(
            params, static, loss_fn, batch, nus,
            run_dir=tmp_path, steps=2, config={"lr": 2}, resume=True,
        )  # fmt: skip


def test_non_finite_loss_stops_cleanly(tmp_path, getkey):
    params, static, loss_fn, batch = _float32_problem(getkey())
    # nu = 3e38 is a valid float32 viscosity whose loss overflows: one task of a
    # batch turns the meta-loss infinite on the step that first draws it.
    nus = [3e38, 0.02, 0.03]
    with pytest.raises(mp.NonFiniteLossError) as info:
        _train(
            params, static, loss_fn, batch, nus,
            run_dir=tmp_path, steps=40, checkpoint_every=1, tasks_per_step=1,
        )  # fmt: skip
    err = info.value
    assert err.step > 0  # the sampled tasks of the first steps are finite (key 3)
    assert f"meta-step {err.step}" in str(err)
    assert "nu=3e+38" in str(err) and err.tasks == ["nu=3e+38"]
    assert err.checkpoint_step == err.step
    assert f"; stopped: the last good checkpoint (after {err.step} meta-step" in str(err)
    # The last good checkpoint is intact and finite; the metrics stop before the bad step.
    saved, meta = mp.load_checkpoint(
        tmp_path / "checkpoint.npz",
        {"params": params, "opt_state": OUTER.init(params), "key": jr.key_data(jr.key(3))},
    )
    assert meta["step"] == err.step
    assert all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree_util.tree_leaves(saved))
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in lines] == list(range(err.step))


def test_stop_messages_read_as_one_sentence(tmp_path, getkey):
    """The note on the last good checkpoint continues a stop message after "; "."""
    params, static, loss_fn, batch = _float32_problem(getkey())
    nus = [0.02, 0.03, 0.04]
    run = dict(run_dir=tmp_path / "a", checkpoint_every=2)
    with pytest.raises(mp.RunInterrupted) as info:
        _train(params, static, loss_fn, batch, nus, stop_after=3, **run)
    assert str(info.value) == (
        "stopped after meta-step 2 as asked (stop_after=3); the last good checkpoint "
        f"(after 2 meta-steps) is {tmp_path / 'a' / 'checkpoint.npz'}"
    )
    with pytest.raises(mp.RunInterrupted) as info:
        _train(params, static, loss_fn, batch, nus, stop_after=1)
    assert str(info.value) == (
        "stopped after meta-step 0 as asked (stop_after=1); there is no run folder, so no "
        "checkpoint"
    )
    sent = []

    def sample(key):  # the fixed points, and a SIGTERM during meta-step 0
        if not sent:
            sent.append(True)
            os.kill(os.getpid(), signal.SIGTERM)
        return batch

    with pytest.raises(mp.RunInterrupted) as info:
        _train(params, static, loss_fn, None, nus, sample_points=sample, run_dir=tmp_path / "b")
    assert str(info.value) == (
        "stopped by SIGTERM after meta-step 0; the last good checkpoint (after 1 meta-step) "
        f"is {tmp_path / 'b' / 'checkpoint.npz'}"
    )


def test_adapt_recording_matches_adapt(getkey):
    params, static, loss_fn, batch = small_problem(getkey())
    task = mp.BurgersTask(0.03)
    opt = optax.adam(1e-2)
    steps = (0, 1, 4, 9)
    trace = eqx.filter_jit(mp.adapt_recording)(
        params, static, loss_fn, task, batch, steps=steps, optimizer=opt
    )
    final, losses, path = mp.adapt(
        params, static, loss_fn, task, batch, steps=9, optimizer=opt, return_trajectory=True
    )
    for j, k in enumerate(steps):
        want = params if k == 0 else jax.tree_util.tree_map(lambda x, k=k: x[k - 1], path)
        assert tree_allclose(jax.tree_util.tree_map(lambda x, j=j: x[j], trace.params), want)
    assert tree_allclose(trace.curve[:-1], losses)
    assert tree_allclose(trace.curve[-1], loss_fn(eqx.combine(final, static), task, batch))
    assert tree_allclose(trace.losses, trace.curve[jnp.asarray(steps)])


@pytest.mark.parametrize("per_task_inits", [False, True])
def test_few_shot_is_adapt_recording_for_every_pair(getkey, per_task_inits):
    params, static, loss_fn, batch = small_problem(getkey())
    nus = (0.02, 0.03, 0.05)
    tasks = mp.BurgersTask(jnp.asarray(nus))
    shape = (2, len(nus)) if per_task_inits else (2,)
    inits = jax.tree_util.tree_map(
        lambda x: (
            jnp.broadcast_to(x, shape + x.shape)
            + 0.1 * jr.normal(getkey(), shape + x.shape, x.dtype)
        ),
        params,
    )
    opt, steps = optax.adam(1e-2), (0, 2, 5)
    traces = {
        at_once: mp.few_shot(
            inits,
            static,
            loss_fn,
            tasks,
            batch,
            steps=steps,
            optimizer=opt,
            per_task_inits=per_task_inits,
            at_once=at_once,
        )  # fmt: skip
        for at_once in (None, 1, 4)
    }
    adapt_recording = eqx.filter_jit(mp.adapt_recording)  # compiled once for every pair
    for i in range(2):
        for n, nu in enumerate(nus):
            start = jax.tree_util.tree_map(
                lambda x, i=i, n=n: x[i, n] if per_task_inits else x[i], inits
            )
            want = adapt_recording(
                start, static, loss_fn, mp.BurgersTask(jnp.asarray(nu)), batch,
                steps=steps, optimizer=opt,
            )  # fmt: skip
            for trace in traces.values():
                got = jax.tree_util.tree_map(lambda x, i=i, n=n: x[i, n], trace)
                assert tree_allclose(got.params, want.params)
                assert tree_allclose(got.curve, want.curve)
    with pytest.raises(ValueError, match="at_once must be a positive integer"):
        mp.few_shot(inits, static, loss_fn, tasks, batch, steps=steps, optimizer=opt,
                    per_task_inits=per_task_inits, at_once=0)  # fmt: skip


def test_adapt_recording_rejects_bad_steps(getkey):
    params, static, loss_fn, batch = small_problem(getkey())
    for steps in ((), (5, 2), (-1, 3)):
        with pytest.raises(ValueError, match="step"):
            mp.adapt_recording(
                params, static, loss_fn, mp.BurgersTask(0.03), batch,
                steps=steps, optimizer=optax.sgd(0.1),
            )  # fmt: skip


def _sampler(n_interior=12):
    pde = mp.Burgers()

    def sample(key):
        batch = mp.sample_collocation(key, pde, n_interior, 6, 3)
        return jax.tree_util.tree_map(lambda x: x.astype(jnp.float32), batch)

    return sample


def test_resampled_points_resume_identically_and_change_every_step(tmp_path, getkey):
    params, static, loss_fn, _ = _float32_problem(getkey())
    nus = [0.02, 0.03, 0.04]
    sample = _sampler()
    kwargs = dict(sample_points=sample, checkpoint_every=2)
    whole = _train(params, static, loss_fn, None, nus, run_dir=tmp_path / "a", **kwargs)
    with pytest.raises(mp.RunInterrupted):
        _train(params, static, loss_fn, None, nus, run_dir=tmp_path / "b", stop_after=3, **kwargs)
    resumed = _train(params, static, loss_fn, None, nus, run_dir=tmp_path / "b", resume=True,
                     **kwargs)  # fmt: skip
    assert resumed.start_step == 2
    assert tree_allclose(resumed.params, whole.params, rtol=0, atol=0)
    np.testing.assert_array_equal(resumed.meta_loss, whole.meta_loss)
    # Fixed points give a different run: the points really are re-sampled.
    fixed = _train(params, static, loss_fn, sample(jr.key(0)), nus)
    assert not np.allclose(fixed.meta_loss[1:], whole.meta_loss[1:])


def test_resampled_support_and_query_are_independent_and_fresh():
    from metapinn._meta_train import _sample_step_points

    support0, query0 = _sample_step_points(_sampler(), jr.key(1), jnp.asarray(0))
    support1, _ = _sample_step_points(_sampler(), jr.key(1), jnp.asarray(1))
    again, _ = _sample_step_points(_sampler(), jr.key(1), jnp.asarray(0))
    assert not np.allclose(support0.interior, query0.interior)
    assert not np.allclose(support0.interior, support1.interior)
    np.testing.assert_array_equal(support0.interior, again.interior)


def test_points_and_sampler_are_exclusive(getkey):
    params, static, loss_fn, batch = _float32_problem(getkey())
    with pytest.raises(ValueError, match="not both"):
        _train(params, static, loss_fn, batch, [0.02, 0.03], sample_points=_sampler())
    with pytest.raises(ValueError, match="sample_points"):
        _train(params, static, loss_fn, None, [0.02, 0.03])
