"""Every (initialisation, adapter) pair at steps and seconds: the config's adapters
(inner loop and evaluation), the summary on synthetic numbers (worse-than-start flags,
seconds to a target), and a tiny run evaluated with Gauss–Newton and L-BFGS against
its own Adam evaluation."""

import shutil
import threading
import time

import jax
import numpy as np
import pytest

import metapinn as mp
import metapinn.experiment as me
from metapinn._experiment._adapter_evaluation import (
    AdapterMeasures,
    adam_measures,
    evaluation_adapter,
    spread_over_devices,
    timing_devices,
)
from metapinn._experiment._report import adapter_short, adapter_tables, adapter_title
from metapinn._experiment._summary import adapter_summary

from .helpers import TINY_RUN


def _config(**changes):
    return me.ExperimentConfig.from_dict({**TINY_RUN, **changes})


# ------------------------------------------------------------------ the settings


def test_inner_adapters_from_the_config():
    config = _config(
        methods=["multitask", "reptile", "maml", "imaml"],
        overrides=[
            "reptile.inner_optimizer=gauss-newton",
            "reptile.inner_damping=0.5",
            "reptile.inner_cg_steps=7",
            "imaml.inner_optimizer=lbfgs",
        ],
        inner_optimizer="adam",
    )
    inner = config.method("reptile").inner_adapter()
    # A fixed number of CG iterations: reverse mode goes through it.
    assert inner == mp.GaussNewton(damping=0.5, cg_steps=7, cg_rtol=0.0)
    assert inner.reverse_differentiable
    assert isinstance(config.method("imaml").inner_adapter(), mp.LBFGS)
    assert config.method("reptile").meta_learner().inner_optimizer == inner
    # The damping and CG settings belong to a Gauss-Newton run's checkpoint only, so
    # that every earlier run's stored settings stay what they were.
    assert config.method("reptile").run_settings(config, 0)["inner_damping"] == 0.5
    assert "inner_damping" not in config.method("maml").run_settings(config, 0)
    assert "inner_cg_steps" not in config.method("multitask").run_settings(config, 0)


@pytest.mark.parametrize(
    "changes, key",
    [
        ({"inner_optimizer": "newton"}, "inner_optimizer='newton'"),
        ({"methods": ["maml"], "inner_optimizer": "lbfgs"}, "inner_optimizer='lbfgs'"),
        ({"overrides": ["reptile.inner_damping=-1"], "methods": ["reptile"]}, "inner_damping"),
        ({"inner_cg_steps": 0}, "inner_cg_steps=0"),
        ({"eval_adapters": ["adam"]}, "eval_adapters='adam'"),
        ({"eval_adapters": ["lbfgs", "lbfgs"]}, "eval_adapters"),
        ({"eval_adapters": ["gauss-newton-cg0"]}, "eval_adapters='gauss-newton-cg0'"),
        ({"eval_adapters": ["gauss-newton-cgx"]}, "eval_adapters='gauss-newton-cgx'"),
        ({"eval_adapter_steps": [0, 3, 1]}, "eval_adapter_steps"),
        ({"eval_adapter_steps": []}, "eval_adapter_steps"),
        ({"eval_damping": 0.0}, "eval_damping=0.0"),
        ({"eval_cg_steps": 0}, "eval_cg_steps=0"),
        ({"eval_preconditioner": "ilu"}, "eval_preconditioner='ilu'"),
        ({"eps_seconds": [0.01, -1]}, "eps_seconds=-1"),
    ],
)
def test_bad_adapter_settings_are_named(changes, key):
    with pytest.raises(me.ConfigError, match=key.replace("[", r"\[")):
        _config(**changes)


def test_maml_through_lbfgs_is_refused_with_the_reason():
    with pytest.raises(me.ConfigError, match="reverse mode"):
        _config(methods=["maml"], inner_optimizer="lbfgs")


def test_evaluation_adapters():
    config = _config(eval_adapters=["gauss-newton", "lbfgs"], eval_damping=0.1, eval_cg_steps=9)
    assert evaluation_adapter("gauss-newton", config) == mp.GaussNewton(damping=0.1, cg_steps=9)
    jacobi = config.replace(eval_preconditioner="jacobi")
    assert evaluation_adapter("gauss-newton", jacobi) == mp.GaussNewton(
        damping=0.1, cg_steps=9, preconditioner="jacobi"
    )
    assert isinstance(evaluation_adapter("lbfgs", config), mp.LBFGS)
    with pytest.raises(ValueError, match="'sgd'"):
        evaluation_adapter("sgd", config)
    # A Gauss-Newton variant fixes its CG iterations a step; the rest is the run's.
    few = config.replace(eval_adapters=("gauss-newton", "gauss-newton-cg10"))
    assert evaluation_adapter("gauss-newton-cg10", few) == mp.GaussNewton(damping=0.1, cg_steps=10)
    assert adapter_title("gauss-newton-cg10").endswith("at most 10 iterations a step)")
    assert adapter_title("gauss-newton") == "Gauss–Newton (Levenberg–Marquardt, matrix-free CG)"
    assert adapter_short("gauss-newton-cg10") == "Gauss–Newton, 10 CG"


# -------------------------------------------------------- the summary, synthetic


def _measures(rel, seconds, rows=("random", "maml"), steps=(0, 1, 3)):
    rel = np.asarray(rel, dtype=np.float64)
    return AdapterMeasures(
        "gauss-newton", rows, steps, rel, np.asarray(seconds, np.float64), rel, True, 1.5
    )


def test_adapter_summary_flags_and_seconds_to_target():
    # Two rows, two seeds, two held-out tasks (both in range), three step counts.
    rel = np.empty((2, 2, 2, 3))
    rel[0] = [[[0.1, 0.05, 0.2], [0.1, 0.02, 0.005]], [[0.1, 0.05, 0.3], [0.1, 0.02, 0.005]]]
    rel[1, 0] = [[0.02, 0.008, 0.002], [0.02, 0.009, 0.004]]
    rel[1, 1] = [[0.02, 0.005, 0.0005], [0.02, 0.01, 0.002]]
    seconds = np.broadcast_to(np.array([0.0, 0.5, 1.5]), rel.shape).copy()
    seconds[1, 1, 1] = [0.0, 0.7, 2.0]
    config = _config(
        methods=["maml"], seeds=[0, 1], test_params=[0.03, 0.04], eps_seconds=[0.01, 0.003]
    )
    valid = np.ones((2, 2), dtype=bool)
    out = adapter_summary(config, [_measures(rel, seconds)], valid)["gauss-newton"]
    random, maml = out["rows"]
    # random: mean over tasks per seed (0.1025, 0.1525) at the end vs 0.1 at the start.
    assert random["worse_than_start"] and random["tasks_worse"] == 2 and random["tasks"] == 4
    assert [e["worse"] for e in random["rel_l2"]] == [False, False, True]
    assert random["rel_l2"][2]["mean"] == pytest.approx((0.1025 + 0.1525) / 2)
    assert random["rel_l2"][2]["std"] == pytest.approx(np.std([0.1025, 0.1525], ddof=1))
    assert random["seconds_to_eps"][0] == {
        "eps": 0.01, "reached": 2, "runs": 4, "max": None, "mean": None
    }  # fmt: skip
    assert not maml["worse_than_start"] and maml["tasks_worse"] == 0
    # maml reaches 0.01 at step 1 in every run but seed 1, task 1 (0.01 <= 0.01: also).
    first = maml["seconds_to_eps"][0]
    assert first["reached"] == 4 and first["max"] == pytest.approx(0.7)
    assert first["mean"] == pytest.approx((0.5 + 0.5 + 0.5 + 0.7) / 4)
    # 0.003: seed 0 task 0 at step 3 (1.5 s), task 1 never (0.004): not every run.
    second = maml["seconds_to_eps"][1]
    assert second["reached"] == 3 and second["max"] is None
    assert out["timed"] and out["compile_seconds"] == 1.5
    # A diverged seed is left out of the row's statistics.
    valid[1, 1] = False
    out = adapter_summary(config, [_measures(rel, seconds)], valid)["gauss-newton"]
    assert out["rows"][1]["seeds"] == 1 and out["rows"][1]["rel_l2"][1]["std"] == 0.0
    assert out["rows"][1]["rel_l2"][1]["mean"] == pytest.approx((0.008 + 0.009) / 2)


def test_adam_seconds_are_steps_times_the_step_of_its_network():
    rel = np.full((2, 1, 1, 3), 0.5)
    rel[1, 0, 0, 2] = np.nan  # a diverged row's values stay NaN
    m = adam_measures(["random", "cond-maml"], (0, 10, 100), {"rel_l2": rel, "loss": rel},
                      [0.01, 0.03])  # fmt: skip
    assert not m.timed
    np.testing.assert_allclose(m.seconds[0, 0, 0], [0.0, 0.1, 1.0])
    np.testing.assert_allclose(m.seconds[1, 0, 0, :2], [0.0, 0.3])
    assert np.isnan(m.seconds[1, 0, 0, 2])


def test_adapter_tables_mark_what_ends_worse():
    rel = np.array([[[[0.1, 0.2]]], [[[0.1, 0.05]]]])
    config = _config(methods=["maml"], seeds=[0], test_params=[0.04], eps_seconds=[0.06])
    m = AdapterMeasures("lbfgs", ("random", "maml"), (0, 10), rel, np.array(
        [[[[0.0, 2.0]]], [[[0.0, 1.0]]]]), rel, True)  # fmt: skip
    results = {
        "adapters": adapter_summary(config, [m], np.ones((2, 1), bool)),
        "labels": {"random": "Random init", "maml": "MAML"},
    }
    text = "\n".join(adapter_tables(results))
    assert "### L-BFGS" in text
    assert "| Random init | 0.1 ± 0 | 0.2 ± 0 (2 s) ▲ | 0/1 reach it |" in text
    assert "| MAML | 0.1 ± 0 | 0.05 ± 0 (1 s) | 1 s (mean 1) |" in text
    assert "**Worse at the end than at the start:** Random init." in text


# ------------------------------------------------------------- a tiny run, whole


@pytest.mark.e2e  # trains a tiny run (about 15 s), then times every pair
def test_a_run_evaluated_with_every_adapter(tmp_path):
    jax.config.update("jax_enable_x64", True)
    config = _config(
        methods=["multitask", "cond-multitask", "reptile"],
        seeds=[0],
        overrides=[
            "reptile.inner_optimizer=gauss-newton",
            "reptile.inner_steps=2",
            "reptile.inner_cg_steps=4",
        ],  # fmt: skip
        eval_adapters=["gauss-newton", "lbfgs"],
        eval_adapter_steps=[0, 1, 3],
        eval_cg_steps=10,
    )
    me.train_runs(config, tmp_path / "run", log=lambda _: None)
    evaluation = me.evaluate(config, tmp_path / "run", log=lambda _: None)
    adam, gn, lbfgs = (evaluation.adapters[a] for a in ("adam", "gauss-newton", "lbfgs"))
    assert gn.rows == lbfgs.rows == ("random", "multitask", "cond-multitask", "reptile")
    # Before any step every adapter measures the same field: the Adam evaluation's.
    np.testing.assert_allclose(gn.rel_l2[..., 0], adam.rel_l2[:4, ..., 0], rtol=1e-6)
    np.testing.assert_allclose(lbfgs.rel_l2[..., 0], adam.rel_l2[:4, ..., 0], rtol=1e-6)
    # Levenberg-Marquardt never raises the loss; its steps take time.
    assert np.all(np.diff(gn.loss, axis=-1) <= 1e-12 * gn.loss[..., :1])
    assert np.all(np.diff(gn.seconds, axis=-1) > 0)
    results = evaluation.summary()
    assert list(results["adapters"]) == ["adam", "gauss-newton", "lbfgs"]
    assert results["adapters"]["adam"]["steps"] == list(config.eval_steps)
    assert "### Gauss–Newton" in me.to_markdown(results)
    # Over two host devices: the same numbers (the Adam schedule split between them).
    spread = me.evaluate(config, tmp_path / "run", log=lambda _: None, mesh=mp.task_mesh(2))
    for name, one in evaluation.adapters.items():
        two = spread.adapters[name]
        np.testing.assert_allclose(two.rel_l2, one.rel_l2, rtol=1e-6)  # float32
        np.testing.assert_allclose(two.loss, one.loss, rtol=1e-6)
    np.testing.assert_allclose(spread.measures["rel_l2"], evaluation.measures["rel_l2"], rtol=1e-6)
    # Written out, the run's plots include the error against wall-clock.
    me.evaluate_runs(config, tmp_path / "run", log=lambda _: None)
    assert (tmp_path / "run" / "plots" / "wall_clock.png").stat().st_size > 0
    # Without eval_adapters the results are what they were: no adapter tables.
    shutil.rmtree(tmp_path / "run" / "plots", ignore_errors=True)
    plain = me.evaluate(config.replace(eval_adapters=[]), tmp_path / "run", log=lambda _: None)
    assert "adapters" not in plain.summary()


def test_timed_adaptations_are_spread_only_over_accelerators():
    # Host CPU devices share the cores one adaptation already keeps busy: one at a
    # time on the default device, whatever the mesh.
    assert timing_devices(None) == [None]
    assert timing_devices(mp.task_mesh(2)) == [None]


def test_spread_over_devices_keeps_the_order_and_one_job_per_device():
    devices = jax.devices()[:2]
    busy: set = set()
    guard = threading.Lock()
    clashes = []

    def work(job, device):
        with guard:
            clashes.append(device in busy)
            busy.add(device)
        time.sleep(0.01)
        with guard:
            busy.discard(device)
        return job * 10, device

    out = spread_over_devices(list(range(8)), devices, work)
    assert [r for r, _ in out] == [j * 10 for j in range(8)]
    assert {d for _, d in out} <= set(devices)
    assert not any(clashes)
    assert spread_over_devices([1, 2], [None], work) == [(10, None), (20, None)]
