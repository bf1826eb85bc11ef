"""`metapinn reproduce --quick --family X` for every family: the whole pipeline on each
family's own tasks, reference and conditioned network (at a tiny size: compilation
dominates), and the family settings of the configuration."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import metapinn as mp
from metapinn._cli import main
from metapinn._experiment._problem import experiment_tasks, nearest_training_tasks


TINY_FLAGS = [
    "--workload", "W1", "--width", "8", "--depth", "1", "--n-interior", "32",
    "--n-initial", "8", "--n-boundary", "4", "--meta-steps", "3", "--seeds", "0",
    "--eval-steps", "0", "5", "--budget", "5", "--methods", "reptile", "cond-multitask",
    "transfer", "--no-plots", "--no-progress",
]  # fmt: skip


@pytest.mark.e2e
@pytest.mark.parametrize("family", [f for f in mp.FAMILIES if f != "burgers"])
def test_reproduce_quick_runs_every_family(family, tmp_path, capsys):
    """(Burgers' `reproduce` runs in tests/test_cli.py, at the same size.)"""
    out = tmp_path / family
    assert main(["reproduce", "--quick", "--family", family, "--out", str(out), *TINY_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert f"held-out tasks of the {family} family" in printed
    # A quick run says so in its titles.
    assert "Quick run (a smoke test, not meaningful numbers). Few-shot results" in printed
    title = (out / "results.md").read_text().splitlines()[0]
    assert title.endswith("-quick (quick run: a smoke test, not meaningful numbers)")
    results = json.loads((out / "results.json").read_text())
    fam = mp.FAMILIES[family]
    config = mp.experiment.ExperimentConfig.from_dict(results["config"])
    assert results["family"] == config.family == family
    # The family's standard tasks, labelled by its own parameter.
    if fam.scalar:
        assert config.train_params == fam.train_values
        assert config.test_params == fam.test_values
        assert results["test_tasks"] == [f"{fam.parameter}={v:.4g}" for v in fam.test_values]
    else:
        assert (config.n_train, config.n_test) == (fam.n_train, fam.n_test)
        assert results["test_tasks"] == [f"u0 #{i}" for i in range(fam.n_test)]
    assert all(results["in_range"])
    rel = np.asarray(results["per_run"]["rel_l2"], dtype=float)
    assert rel.shape == (4, 1, config.n_test, 2) and np.all(np.isfinite(rel))
    # The transfer baseline trained on the training tasks nearest the held-out ones.
    trained = {p.name for p in (out / "train" / "transfer" / "seed0").iterdir()}
    assert trained == {f"task{i}" for i in nearest_training_tasks(config)}


@pytest.mark.parametrize(
    "family",
    # A family of scalar parameters and one of drawn functions in the default run;
    # the others' references are checked against their exact solutions there too
    # (tests/test_families.py).
    [f if f in ("burgers", "burgers-random-ic") else pytest.param(f, marks=pytest.mark.slow)
     for f in mp.FAMILIES],
)  # fmt: skip
def test_reference_fields_are_the_familys_own(family):
    """The evaluation's truth is each held-out task's own reference, in the order of
    the held-out tasks, on the family's standard grid: its first time row is the
    task's initial condition, and a later row is that task's reference solution."""
    config = mp.experiment.workload("W1", family=family)
    x, t, points, u = mp.experiment.reference_fields(config)
    fam = mp.FAMILIES[family]
    pde = fam.pde()
    assert (x[0], x[-1], t[0], t[-1]) == (pde.x_min, pde.x_max, pde.t_min, pde.t_max)
    assert u.shape == (config.n_test, 101, 256)
    np.testing.assert_array_equal(points.reshape(101, 256, 2)[3, 5], [x[5], t[3]])
    if fam.scalar:
        tasks = fam.tasks(config.test_params, dtype="float64")
    else:
        tasks = experiment_tasks(config, "float32")[1]
    for b in range(config.n_test):
        task = jax.tree_util.tree_map(lambda a, b=b: jnp.asarray(a[b], jnp.float64), tasks)
        u0 = task.initial_condition(jnp.asarray(x)) if not fam.scalar else None
        u0 = pde.initial_condition(jnp.asarray(x)) if u0 is None else u0
        np.testing.assert_allclose(u[b, 0], np.asarray(u0), atol=1e-6)
        late = pde.reference_solution(task, jnp.asarray(x[::16]), jnp.asarray(t[60:61]))
        np.testing.assert_allclose(u[b, 60, ::16], np.asarray(late)[0], atol=1e-7)


def test_nearest_training_task_breaks_ties_to_the_lower_index():
    heat = mp.FAMILIES["heat"]
    # 0.4 is the geometric midpoint of 0.2 and 0.8: a tie, to the first.
    assert heat.nearest(np.array([0.2, 0.8]), np.array([0.4, 0.5, 0.3])) == (0, 1, 0)
    config = mp.experiment.workload(
        "W1", train_params=(0.2, 0.8), test_params=(0.4,), tasks_per_step=1
    )
    assert nearest_training_tasks(config) == (0,)
    # A drawn function's nearest task is the nearest in L2 of its coefficients.
    f6 = mp.FAMILIES["burgers-random-ic"]
    train = np.array([[1.0, 0.0], [0.0, 0.3]])
    assert f6.nearest(train, np.array([[0.1, 0.0], [0.6, 0.0]])) == (1, 0)


def test_a_curriculum_goes_from_the_easiest_task_and_starts_each_from_the_next_easier():
    convection = mp.FAMILIES["convection"]  # larger beta is harder
    train = np.array([4.0, 1.0, 16.0, 2.0])
    chain, sources = convection.curriculum(train, np.array([3.0, 1.5, 0.5, 4.0]))
    # 3 -> 2 (index 3), 1.5 -> 1, 0.5 (easier than all) -> the easiest, 4 -> itself;
    # trained from 1 up to 4: 16 is needed by none.
    assert sources == (3, 1, 1, 0) and chain == (1, 3, 0)
    burgers = mp.FAMILIES["burgers"]  # smaller nu is harder: the curriculum goes down
    chain, sources = burgers.curriculum(np.array([0.01, 0.04, 0.02]), np.array([0.015, 0.05]))
    assert sources == (2, 1) and chain == (1, 2)
    with pytest.raises(ValueError, match="'burgers-random-ic' is not ordered"):
        mp.FAMILIES["burgers-random-ic"].curriculum(np.zeros((2, 8)), np.zeros((1, 8)))
    with pytest.raises(mp.experiment.ConfigError, match="curriculum needs a family ordered"):
        mp.experiment.ExperimentConfig(family="burgers-random-ic", methods=("curriculum",))
    with pytest.raises(ValueError, match="harder='up' is invalid"):
        dataclasses.replace(convection, harder="up")


def test_family_settings_are_checked():
    with pytest.raises(mp.experiment.ConfigError, match="family='poisson'"):
        mp.experiment.ExperimentConfig(family="poisson")
    with pytest.raises(mp.experiment.ConfigError, match="every kappa must be finite and > 0"):
        mp.experiment.ExperimentConfig(family="heat", train_params=(0.1, -1.0), tasks_per_step=1)
    with pytest.raises(mp.experiment.ConfigError, match="burgers-random-ic's tasks are drawn"):
        mp.experiment.ExperimentConfig(family="burgers-random-ic", test_params=(0.1,))
    with pytest.raises(mp.experiment.ConfigError, match="n_train_tasks=5 is invalid: heat's tasks"):
        mp.experiment.ExperimentConfig(family="heat", n_train_tasks=5)
    with pytest.raises(mp.experiment.ConfigError, match="workload W2 is defined on"):
        mp.experiment.workload("W2", family="wave")
    with pytest.raises(mp.experiment.ConfigError, match="tasks_per_step=6 is invalid"):
        mp.experiment.ExperimentConfig(family="heat", train_params=(0.1, 0.2))
    # A change of family takes the new family's standard tasks unless it names them.
    heat = mp.experiment.workload("W3").replace(family="heat")
    assert heat.train_params == mp.FAMILIES["heat"].train_values
    assert mp.experiment.workload("W3", family="heat").name == "W3-heat"
    # Configs written before the families (train_nus, test_nus) still load as Burgers.
    old = mp.experiment.ExperimentConfig.from_dict({"train_nus": [0.01, 0.02], "test_nus": [0.015],
                                         "tasks_per_step": 2})  # fmt: skip
    assert (old.family, old.train_params, old.test_params) == ("burgers", (0.01, 0.02), (0.015,))
    with pytest.raises(mp.experiment.ConfigError, match="name the same setting"):
        mp.experiment.ExperimentConfig.from_dict({"train_nus": [0.01], "train_params": [0.01]})


def test_w2_reports_its_out_of_range_viscosities_separately():
    from metapinn._experiment._summary import in_range

    w2 = mp.experiment.workload("W2")
    assert (min(w2.train_params), max(w2.train_params)) == pytest.approx((0.001, 0.1))
    assert in_range(w2).tolist() == [True] * 6 + [False, False]
    ratios = np.diff(np.log(w2.train_params))
    np.testing.assert_allclose(ratios, ratios[0])  # log-uniform: evenly spaced in log nu


@pytest.mark.slow  # a second Python process
def test_drawn_tasks_do_not_depend_on_x64():
    """F6's tasks are drawn in float32, so a run's tasks (and its reference cache keys)
    are the same with and without jax_enable_x64 (this process has it on)."""
    config = mp.experiment.workload("W3", family="burgers-random-ic")
    train, test = experiment_tasks(config, "float32")
    assert train.coefficients.shape == (48, 8) and test.coefficients.shape == (4, 8)
    assert not np.allclose(train.coefficients[:4], test.coefficients)
    peak = np.abs(np.sin(np.pi * np.outer(np.linspace(-1, 1, 2049), np.arange(1, 9)))
                  @ np.asarray(train.coefficients).T).max()  # fmt: skip
    assert peak <= 1 + 1e-6
    script = (
        "import json, numpy as np, metapinn as mp\n"
        "from metapinn._experiment._problem import experiment_tasks\n"
        "config = mp.experiment.workload('W3', family='burgers-random-ic')\n"
        "_, test = experiment_tasks(config, 'float32')\n"
        "print(json.dumps(np.asarray(test.coefficients).tolist()))"
    )
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    without = np.asarray(json.loads(done.stdout.splitlines()[-1]))
    np.testing.assert_array_equal(without, np.asarray(test.coefficients))


def test_family_reference_cache(tmp_path):
    pde, tasks = mp.Heat(), mp.HeatTask(jnp.asarray([0.1, 0.2]))
    x, t = (np.asarray(a) for a in pde.standard_grid())
    u = mp.cached_family_reference(pde, tasks, x, t, cache_dir=tmp_path)
    files = sorted(tmp_path.glob("heat-reference-*.npz"))
    assert len(files) == 2 and u.shape == (2, 101, 256)
    np.testing.assert_array_equal(
        u[1], pde.reference_solution(mp.HeatTask(0.2), jnp.asarray(x), jnp.asarray(t))
    )
    # A read comes from the files (planted values are returned as they are); a
    # corrupt file is recomputed, not loaded.
    # The file of each task, by the task's own key.
    by_task = {}
    for f in files:
        with np.load(f) as data:
            kappa = json.loads(str(data["key"]))["task"]
            by_task[0.2 if kappa == _task_key_of(0.2, pde, x, t) else 0.1] = f
    assert set(by_task) == {0.1, 0.2}
    key = str(np.load(by_task[0.2])["key"])
    np.savez(by_task[0.2], u=np.full((101, 256), 7.0), key=np.array(key))
    by_task[0.1].write_bytes(b"not an npz file")
    again = mp.cached_family_reference(pde, tasks, x, t, cache_dir=tmp_path)
    assert np.all(again[1] == 7.0) and np.all(again[0] == u[0])
    assert np.load(by_task[0.1])["u"].shape == (101, 256)


def test_a_drawn_task_is_described_by_its_values():
    """The message of a diverged run names its tasks: a vector parameter too."""
    from metapinn._meta_train import describe_task

    tasks = mp.RandomICTask(jnp.asarray([[0.5, -0.25], [0.1, 0.2]]), jnp.asarray([0.01, 0.02]))
    assert describe_task(tasks, 1) == "coefficients=[0.1, 0.2], nu=0.02"
    assert describe_task(mp.BurgersTask(jnp.asarray([0.0091])), 0) == "nu=0.0091"


def _task_key_of(kappa, pde, x, t):
    from metapinn._pde._reference_cache import _task_key

    task = mp.HeatTask(np.float64(kappa))
    return json.loads(_task_key(pde, task, x, t))["task"]


def test_every_summary_averages_the_in_range_tasks():
    from metapinn._experiment._summary import in_range, plain_adam_summary

    config = mp.experiment.ExperimentConfig(train_params=(0.02, 0.04), test_params=(0.03, 0.05),
                                 tasks_per_step=1)  # fmt: skip
    assert in_range(config).tolist() == [True, False]
    rel = np.array([[[0.1, 9.0], [0.3, 9.0]]])  # (init, seed, task): 9 is out of range
    summary = plain_adam_summary(config, ("random",), rel, np.ones((1, 2), bool), 1e-3)
    assert summary["rel_l2"]["random"]["mean"] == pytest.approx(0.2)
    # With no held-out value in the training range, every task counts (nothing to
    # set the extrapolation apart from), rather than an empty average.
    lone = mp.experiment.ExperimentConfig(
        train_params=(0.01,), test_params=(0.02, 0.03), tasks_per_step=1
    )
    assert in_range(lone).tolist() == [True, True]
