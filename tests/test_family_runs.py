"""`metapinn reproduce --quick --family X` for every family: the whole pipeline on each
family's own tasks, reference and conditioned network (at a tiny size: compilation
dominates), and the family settings of the configuration."""

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


@pytest.mark.parametrize("family", [f for f in mp.FAMILIES if f != "burgers"])
def test_reproduce_quick_runs_every_family(family, tmp_path, capsys):
    """(Burgers' `reproduce` runs in tests/test_cli.py, at the same size.)"""
    out = tmp_path / family
    assert main(["reproduce", "--quick", "--family", family, "--out", str(out), *TINY_FLAGS]) == 0
    printed = capsys.readouterr().out
    assert f"held-out tasks of the {family} family" in printed
    results = json.loads((out / "results.json").read_text())
    fam = mp.FAMILIES[family]
    config = mp.ExperimentConfig.from_dict(results["config"])
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


@pytest.mark.parametrize("family", list(mp.FAMILIES))
def test_reference_fields_are_the_familys_own(family):
    """The evaluation's truth is each held-out task's reference on the family's grid:
    its first time row is the task's initial condition."""
    config = mp.workload("W1", family=family)
    x, t, points, u = mp.reference_fields(config)
    pde = mp.FAMILIES[family].pde()
    assert (x[0], x[-1], t[0], t[-1]) == (pde.x_min, pde.x_max, pde.t_min, pde.t_max)
    assert u.shape == (config.n_test, 101, 256)
    np.testing.assert_array_equal(points.reshape(101, 256, 2)[3, 5], [x[5], t[3]])
    _, tasks = experiment_tasks(config, "float64")
    for b in range(config.n_test):
        if mp.FAMILIES[family].scalar:
            u0 = pde.initial_condition(jnp.asarray(x))
        else:  # the task's own initial condition
            u0 = jax.tree_util.tree_map(lambda a, b=b: a[b], tasks).initial_condition(
                jnp.asarray(x)
            )
        np.testing.assert_allclose(u[b, 0], np.asarray(u0), atol=1e-6)


def test_family_settings_are_checked():
    with pytest.raises(mp.ConfigError, match="family='poisson'"):
        mp.ExperimentConfig(family="poisson")
    with pytest.raises(mp.ConfigError, match="every kappa must be finite and > 0"):
        mp.ExperimentConfig(family="heat", train_params=(0.1, -1.0), tasks_per_step=1)
    with pytest.raises(mp.ConfigError, match="burgers-random-ic's tasks are drawn"):
        mp.ExperimentConfig(family="burgers-random-ic", test_params=(0.1,))
    with pytest.raises(mp.ConfigError, match="n_train_tasks=5 is invalid: heat's tasks"):
        mp.ExperimentConfig(family="heat", n_train_tasks=5)
    with pytest.raises(mp.ConfigError, match="workload W2 is defined on"):
        mp.workload("W2", family="wave")
    with pytest.raises(mp.ConfigError, match="tasks_per_step=6 is invalid"):
        mp.ExperimentConfig(family="heat", train_params=(0.1, 0.2))
    # A change of family takes the new family's standard tasks unless it names them.
    heat = mp.workload("W3").replace(family="heat")
    assert heat.train_params == mp.FAMILIES["heat"].train_values
    assert mp.workload("W3", family="heat").name == "W3-heat"
    # Configs written before the families (train_nus, test_nus) still load as Burgers.
    old = mp.ExperimentConfig.from_dict({"train_nus": [0.01, 0.02], "test_nus": [0.015],
                                         "tasks_per_step": 2})  # fmt: skip
    assert (old.family, old.train_params, old.test_params) == ("burgers", (0.01, 0.02), (0.015,))
    with pytest.raises(mp.ConfigError, match="name the same setting"):
        mp.ExperimentConfig.from_dict({"train_nus": [0.01], "train_params": [0.01]})


def test_w2_reports_its_out_of_range_viscosities_separately():
    from metapinn._experiment._report import in_range

    w2 = mp.workload("W2")
    assert (min(w2.train_params), max(w2.train_params)) == pytest.approx((0.001, 0.1))
    assert in_range(w2).tolist() == [True] * 6 + [False, False]
    ratios = np.diff(np.log(w2.train_params))
    np.testing.assert_allclose(ratios, ratios[0])  # log-uniform: evenly spaced in log nu


def test_drawn_tasks_do_not_depend_on_x64():
    """F6's tasks are drawn in float32, so a run's tasks (and its reference cache keys)
    are the same with and without jax_enable_x64 (this process has it on)."""
    config = mp.workload("W3", family="burgers-random-ic")
    train, test = experiment_tasks(config, "float32")
    assert train.coefficients.shape == (48, 8) and test.coefficients.shape == (4, 8)
    assert not np.allclose(train.coefficients[:4], test.coefficients)
    peak = np.abs(np.sin(np.pi * np.outer(np.linspace(-1, 1, 2049), np.arange(1, 9)))
                  @ np.asarray(train.coefficients).T).max()  # fmt: skip
    assert peak <= 1 + 1e-6
    script = (
        "import json, numpy as np, metapinn as mp\n"
        "from metapinn._experiment._problem import experiment_tasks\n"
        "_, test = experiment_tasks(mp.workload('W3', family='burgers-random-ic'), 'float32')\n"
        "print(json.dumps(np.asarray(test.coefficients).tolist()))"
    )
    env = {**os.environ, "JAX_ENABLE_X64": "0", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    without = np.asarray(json.loads(done.stdout.splitlines()[-1]))
    np.testing.assert_allclose(without, np.asarray(test.coefficients), rtol=1e-6, atol=1e-7)


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
    key = str(np.load(files[1])["key"])
    np.savez(files[1], u=np.full((101, 256), 7.0), key=np.array(key))
    files[0].write_bytes(b"not an npz file")
    again = mp.cached_family_reference(pde, tasks, x, t, cache_dir=tmp_path)
    assert np.all(again[1] == 7.0) and np.all(again[0] == u[0])
    assert np.load(files[0])["u"].shape == (101, 256)


def test_a_drawn_task_is_described_by_its_values():
    """The message of a diverged run names its tasks: a vector parameter too."""
    from metapinn._run import describe_task

    tasks = mp.RandomICTask(jnp.asarray([[0.5, -0.25], [0.1, 0.2]]), jnp.asarray([0.01, 0.02]))
    assert describe_task(tasks, 1) == "coefficients=[0.1, 0.2], nu=0.02"
    assert describe_task(mp.BurgersTask(jnp.asarray([0.0091])), 0) == "nu=0.0091"
