"""The experiment beyond W1, at tiny sizes: re-sampled points, the conditioned PINN,
the transfer baseline, warm starts, ANIL, the warm-up schedule, the named workloads
and their configuration errors."""

import json
import os

import equinox as eqx
import jax
import numpy as np
import pytest

import metapinn as mp
from metapinn._checkpoint import read_checkpoint_meta
from metapinn._cli import main
from metapinn._experiment import format_summary, workload
from metapinn._experiment._folder import RunFolder
from metapinn._experiment._methods import adapt_spec
from metapinn._experiment._problem import initialisation, nearest_training_tasks
from metapinn._experiment._summary import in_range
from metapinn._experiment._training import training_order

from .helpers import tree_allclose


TINY_W3 = {
    "name": "tinyw3",
    "width": 8,
    "depth": 2,
    "n_interior": 16,
    "n_initial": 8,
    "n_boundary": 4,
    "resample": True,
    "train_params": [0.02, 0.03, 0.04],
    "test_params": [0.04, 0.05],
    "methods": ["multitask", "reptile", "metasgd", "cond-multitask", "cond-reptile", "transfer"],
    "overrides": [
        "reptile.init=multitask",
        "reptile.adapt=last-layer",
        "reptile.meta_steps=3",
        "cond-reptile.init=cond-multitask",
        "cond-reptile.inner_optimizer=adam",
        "transfer.meta_steps=4",
        "metasgd.meta_steps=2",
        "cond-multitask.outer_schedule=cosine",
    ],
    "inner_steps": 2,
    "meta_steps": 5,
    "tasks_per_step": 2,
    "tasks_at_once": 1,
    "seeds": [0, 1],
    "checkpoint_every": 2,
    "eval_steps": [0, 2, 5],
    "eval_warmup": 3,
    "budget": 2,
    "eps": [0.95, 0.5],
}


pytestmark = pytest.mark.usefixtures("reference_cache")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "w3"
    config = mp.experiment.ExperimentConfig.from_dict(TINY_W3)
    results = mp.experiment.reproduce(config, out, progress=False, log=lambda _: None)
    return config, out, results


@pytest.mark.e2e
def test_every_initialisation_is_evaluated(tiny_run):
    config, out, results = tiny_run
    # Every method, then the extra row of Meta-SGD's learned inner rule.
    assert results["inits"] == ["random", *TINY_W3["methods"], "metasgd+rule"]
    rel = np.asarray(results["per_run"]["rel_l2"], dtype=float)
    assert rel.shape == (8, 2, 2, 3)
    assert np.all(np.isfinite(rel))
    labels = {r["method"] for r in results["table"]}
    assert {"Conditioned PINN", "Transfer (nearest task)", "Conditioned + Reptile"} <= labels
    assert "Meta-SGD, its learned rule" in labels
    # At k = 0 the learned rule's row is Meta-SGD's own initialisation, unadapted.
    np.testing.assert_allclose(rel[-1, :, :, 0], rel[3, :, :, 0], rtol=1e-6)
    # Its curve differs from the common schedule's (another optimiser).
    assert not np.allclose(rel[-1, :, :, 1:], rel[3, :, :, 1:])
    # The schedule is a warm-up, so the plain-Adam comparison is there too.
    assert set(results["plain_adam"]["rel_l2"]) == set(results["inits"]) - {"metasgd+rule"}
    # One transfer PINN per training task nearest a held-out one (0.04 and 0.05 -> 0.04).
    assert nearest_training_tasks(config) == (2, 2)
    assert sorted(p.name for p in (out / "train" / "transfer" / "seed0").iterdir()) == ["task2"]
    assert "adaptation_step_seconds" in results["timing"]
    assert (out / "results.md").exists() and (out / "plots" / "few_shot.png").exists()
    # nu = 0.05 lies outside the training range [0.02, 0.04]: the summaries average
    # the in-range task only, and the out-of-range one is reported on its own.
    assert results["test_tasks"] == ["nu=0.04", "nu=0.05"]
    assert results["in_range"] == [True, False]
    np.testing.assert_allclose(results["curves"]["random"][0]["rel_l2"]["mean"],
                               rel[0, :, 0, 0].mean())  # fmt: skip
    outside = results["out_of_range"]
    assert outside["tasks"] == ["nu=0.05"] and outside["steps"] == [0, 2, 5]
    row = next(r for r in outside["rows"] if r["init"] == "reptile")
    np.testing.assert_allclose(row["rel_l2"]["5"]["mean"], rel[2, :, 1, -1].mean())
    assert "Outside the training range (extrapolation): nu=0.05" in (out / "results.md").read_text()


@pytest.mark.e2e
def test_evaluate_returns_arrays_and_writes_nothing(tiny_run):
    config, out, results = tiny_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    evaluation = mp.experiment.evaluate(config, out, log=lambda _: None)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before
    assert evaluation.rows == tuple(results["inits"])
    rel = evaluation.measures["rel_l2"]
    assert rel.shape == (8, 2, 2, 3) and evaluation.valid.all()
    # The same numbers as the written results (a recomputation, to float32 rounding).
    np.testing.assert_allclose(rel, np.asarray(results["per_run"]["rel_l2"]), rtol=1e-5)
    summary = evaluation.summary()
    assert set(summary) == set(results)
    for init, curve in results["curves"].items():
        mine = [c["rel_l2"]["mean"] for c in summary["curves"][init]]
        np.testing.assert_allclose(mine, [c["rel_l2"]["mean"] for c in curve], rtol=1e-5)


@pytest.mark.e2e
def test_warm_start_begins_at_the_source_and_anil_adapts_the_last_layer(tiny_run):
    config, out, _ = tiny_run
    assert training_order(config).index("multitask") < training_order(config).index("reptile")
    params, _, _ = initialisation(config, 0)
    source = RunFolder(out).load_trained(config, "multitask", 0, params)
    trained = RunFolder(out).load_trained(config, "reptile", 0, params)
    # Reptile trained for 3 outer Adam steps at 1e-3 from multi-task's result: every
    # entry within about 3e-3 of it (an Adam step can exceed its rate a little when the
    # gradient's size varies), and far from the random initialisation.
    for a, b, r in zip(
        jax.tree_util.tree_leaves(trained),
        jax.tree_util.tree_leaves(source),
        jax.tree_util.tree_leaves(params),
        strict=True,
    ):
        assert float(np.max(np.abs(a - b))) <= 3.3e-3
        assert not np.allclose(b, r)
    learner = config.method("reptile").meta_learner(params)
    spec = jax.tree_util.tree_leaves(learner.adapt_spec)
    assert spec == [False] * (len(spec) - 1) + [True]
    # Reptile's meta-gradient θ - φ_K is zero on frozen leaves: they did not move.
    for a, b in zip(trained.layers[:-1], source.layers[:-1], strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.e2e
def test_warm_start_from_another_run_folder(tiny_run, tmp_path):
    config, out, _ = tiny_run
    single = config.replace(
        methods=["fomaml"], seeds=[0], overrides=[f"fomaml.init={out}:multitask"], meta_steps=2
    )
    mp.experiment.train_runs(single, tmp_path, progress=False, log=lambda _: None)
    params, _, _ = initialisation(config, 0)
    source = RunFolder(out).load_trained(config, "multitask", 0, params)
    first = json.loads((tmp_path / "train/fomaml/seed0/metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0
    # A 2-step run from the source stays within about 2 Adam steps of it.
    trained = RunFolder(tmp_path).load_trained(single, "fomaml", 0, params)
    assert tree_allclose(trained, source, rtol=0, atol=2.2e-3)
    # ... and 5 multi-task Adam steps (about 5e-3 on some entry) from the random one.
    assert not tree_allclose(trained, params, rtol=0, atol=3.5e-3)


@pytest.mark.e2e
def test_a_decayed_run_cannot_be_resumed_longer(tiny_run, tmp_path):
    import shutil

    config, out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    longer = config.replace(overrides=[*config.overrides, "cond-multitask.meta_steps=9"])
    stored = (copy / "config.json").read_text()
    with pytest.raises(mp.experiment.ConfigError, match="outer_schedule_steps"):
        mp.experiment.train_runs(longer, copy, resume=True, progress=False, log=lambda _: None)
    assert (copy / "config.json").read_text() == stored  # refused before writing
    cond, _, _ = initialisation(config, 0, conditioned=True)
    constant = config.replace(
        overrides=[*config.overrides, "cond-multitask.outer_schedule=constant"]
    )
    with pytest.raises(mp.experiment.ConfigError, match="outer_schedule"):
        RunFolder(out).load_trained(constant, "cond-multitask", 0, cond)
    # Its trained initialisation loads with the optimiser that wrote it.
    trained = RunFolder(out).load_trained(config, "cond-multitask", 0, cond)
    assert not tree_allclose(trained, cond)


@pytest.mark.e2e
def test_a_resumed_run_may_add_seeds_but_not_change_the_network(tiny_run, tmp_path):
    import shutil

    config, out, _ = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy)
    checkpoint = copy / "train/reptile/seed0/checkpoint.npz"
    before = checkpoint.read_bytes()
    with pytest.raises(mp.experiment.ConfigError, match=r"width \(stored 8, given 9\)"):
        mp.experiment.train_runs(config.replace(width=9), copy, resume=True, progress=False)
    logged = []
    mp.experiment.train_runs(config.replace(seeds=[0, 1, 2]), copy, resume=True, progress=False,
                  log=logged.append)  # fmt: skip
    assert checkpoint.read_bytes() == before  # finished runs are only loaded
    assert logged and all("seed 2" in line for line in logged)
    assert (copy / "train/reptile/seed2/checkpoint.npz").exists()


@pytest.mark.e2e
def test_warm_start_from_the_folder_of_a_decayed_run(tiny_run, tmp_path):
    config, out, _ = tiny_run
    source_folder = out / "train/cond-multitask/seed0"
    single = config.replace(
        methods=["cond-fomaml"], seeds=[0], meta_steps=1,
        overrides=[f"cond-fomaml.init={source_folder}"],
    )  # fmt: skip
    mp.experiment.train_runs(single, tmp_path, progress=False, log=lambda _: None)
    cond, _, _ = initialisation(config, 0, conditioned=True)
    source = RunFolder(out).load_trained(config, "cond-multitask", 0, cond)
    trained = RunFolder(tmp_path).load_trained(single, "cond-fomaml", 0, cond)
    assert tree_allclose(trained, source, rtol=0, atol=1.1e-3)  # one Adam step from it
    assert not tree_allclose(trained, cond, rtol=0, atol=2e-3)  # 5 steps from random


def test_warm_starts_train_after_their_source_and_anil_adapts_the_last_layer():
    """(Trained, in the end-to-end tests above.)"""
    config = mp.experiment.ExperimentConfig.from_dict(TINY_W3)
    order = training_order(config)
    assert order.index("multitask") < order.index("reptile")
    assert order.index("cond-multitask") < order.index("cond-reptile")
    params, _, _ = initialisation(config, 0)
    spec = jax.tree_util.tree_leaves(config.method("reptile").meta_learner(params).adapt_spec)
    assert spec == [False] * (len(spec) - 1) + [True]
    assert config.method("multitask").meta_learner(params).adapt_spec is None


def test_a_run_folder_is_checked_before_anything_is_written(tmp_path):
    """A new run needs a new folder; a resumed one its own settings, but it may add
    seeds and methods or change the evaluation. (Resumed for real, in the end-to-end
    tests above.)"""
    from metapinn._checkpoint import write_json

    def check_run_folder(config, path, resume):
        RunFolder(path).check(config, resume)

    config = mp.experiment.ExperimentConfig.from_dict(TINY_W3)
    check_run_folder(config, tmp_path / "new", resume=False)
    check_run_folder(config, tmp_path, resume=False)  # empty
    # A run killed while it wrote its config.json leaves the temporary file behind.
    (tmp_path / ".config.json.5f3a.tmp").write_text("{")
    check_run_folder(config, tmp_path, resume=False)
    (tmp_path / ".config.json.5f3a.tmp").unlink()
    write_json(tmp_path / "config.json", config.to_dict())
    with pytest.raises(FileExistsError, match="already holds a run: continue it with --resume"):
        check_run_folder(config, tmp_path, resume=False)
    with pytest.raises(mp.experiment.ConfigError, match=r"width \(stored 8, given 9\)"):
        check_run_folder(config.replace(width=9), tmp_path, resume=True)
    more = config.replace(seeds=[0, 1, 2], methods=[*config.methods, "maml"], budget=5)
    check_run_folder(more, tmp_path, resume=True)
    assert os.listdir(tmp_path) == ["config.json"]


def test_train_defaults_to_w1_and_its_flags_beat_a_workloads_method_settings(tmp_path):
    from metapinn._cli import _config_for_run, build_parser

    def config_of(*argv):
        args = build_parser().parse_args(["train", *argv])
        return _config_for_run(args, {"methods": (args.method or "maml",), "seeds": (0,)})

    assert config_of() == mp.experiment.ExperimentConfig(methods=("maml",), seeds=(0,))
    w3 = config_of("--workload", "W3", "--method", "reptile", "--init", f"{tmp_path}:multitask")
    assert w3.method_settings("reptile")["init"] == f"{tmp_path}:multitask"
    assert w3.method_settings("reptile")["meta_steps"] == 60  # the preset's other settings stay
    with pytest.raises(mp.experiment.ConfigError, match="'multitask' is not one of the methods"):
        config_of("--workload", "W3", "--method", "reptile")


def _first_steps(opt, n: int = 6) -> list[float]:
    """The first `n` step lengths of `opt` under a constant unit gradient."""
    params = {"w": np.zeros(3, np.float32)}
    state = opt.init(params)
    steps = []
    for _ in range(n):
        with jax.numpy_dtype_promotion("standard"):  # optax's schedules mix Python floats
            updates, state = opt.update({"w": np.ones(3, np.float32)}, state, params)
        steps.append(float(-updates["w"][0]))
    return steps


def test_warmup_schedule_rises_linearly():
    from metapinn._experiment._methods import warmup_adam

    steps = _first_steps(warmup_adam(0.01, 4))
    # Adam's first normalised steps are ±1 times the rate: 0.0025, 0.005, ..., 0.01.
    np.testing.assert_allclose(steps, [0.0025, 0.005, 0.0075, 0.01, 0.01, 0.01], rtol=1e-5)
    assert warmup_adam(0.01, 0) is warmup_adam(0.01, 0)


def test_cosine_outer_schedule_decays_to_a_hundredth():
    from metapinn._experiment._methods import cosine_adam

    steps = _first_steps(cosine_adam(0.01, 4))
    k = np.minimum(np.arange(6), 4)
    expected = 0.01 * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * k / 4)))
    np.testing.assert_allclose(steps, expected, rtol=1e-5)
    config = mp.experiment.ExperimentConfig.from_dict(TINY_W3)
    assert config.method("cond-multitask").outer_optimizer() is cosine_adam(config.outer_lr, 5)
    # The decay is over the run's length: a checkpoint records it, so that resuming
    # with more meta-steps is refused rather than silently changing the schedule.
    settings = config.method("cond-multitask").run_settings(config, 0)
    assert (settings["outer_schedule"], settings["outer_schedule_steps"]) == ("cosine", 5)
    assert "outer_schedule" not in config.method("multitask").run_settings(config, 0)


def test_named_workloads():
    w3 = workload("W3")
    assert (w3.width, w3.depth, w3.n_interior, w3.n_initial, w3.n_boundary) == (
        64,
        4,
        2000,
        250,
        125,
    )
    assert w3.resample and w3.train_params == mp.experiment.ExperimentConfig().train_params
    pinn = mp.MLPPINN(w3.width, w3.depth, key=jax.random.key(0))
    n = sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(pinn, eqx.is_inexact_array)))
    assert n == 12_737
    assert workload("W1") == mp.experiment.ExperimentConfig()
    with pytest.raises(mp.experiment.ConfigError, match="unknown workload 'W9'"):
        workload("W9")


def test_workload_a_takes_each_familys_recipe_network():
    a = workload("A")
    burgers = mp.experiment.recipe("burgers")
    assert a.name == "A-burgers" and a.family == "burgers"
    assert (a.network, a.width, a.depth, a.fourier_features, a.rwf, a.causal_chunks) == (
        burgers.network, burgers.width, burgers.depth, burgers.fourier_features,
        burgers.rwf, burgers.causal_chunks,
    )  # fmt: skip
    assert a.train_params == workload("W3").train_params
    assert a.method("cond-multitask").meta_steps == 4000
    # Reptile over Gauss-Newton, warm-started from the conditioned pre-training.
    reptile = a.method("cond-reptile")
    assert (reptile.init, reptile.inner_optimizer, reptile.inner_steps) == (
        "cond-multitask", "gauss-newton", 3,
    )  # fmt: skip
    convection = workload("A", family="convection")
    assert convection.name == "A-convection" and convection.periodic_embedding
    assert convection.loss_weights == mp.experiment.recipe("convection").weights
    # The standard held-out values, then one below and one above the training values,
    # reported apart as extrapolation; a family of drawn functions keeps its draws.
    w3 = workload("W3", family="convection")
    assert convection.test_params == (*w3.test_params, 0.6667, 60.0)  # 4 digits
    assert convection.train_params == w3.train_params
    assert in_range(convection).tolist() == [True] * 4 + [False] * 2
    assert a.test_params[-2:] == (0.003333, 0.06886) and len(a.test_params) == 6
    f6 = workload("A", family="burgers-random-ic")
    assert f6.test_params == () and f6.n_test == workload("W3", family="burgers-random-ic").n_test


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"overrides": ["reptile.inner_stepz=3"]}, "unknown key 'inner_stepz'"),
        ({"overrides": ["reptile-inner_steps=3"]}, "METHOD.KEY=VALUE"),
        ({"overrides": ["reptile.inner_steps=three"]}, "inner_steps takes a int"),
        ({"overrides": ["nope.inner_steps=3"]}, "unknown method 'nope'"),
        ({"overrides": ["reptile.inner_steps=-3"]}, "reptile's inner_steps=-3"),
        ({"adapt": "first-layer"}, "adapt='first-layer'"),
        ({"overrides": ["reptile.outer_schedule=linear"]}, "reptile's outer_schedule='linear'"),
        ({"tasks_at_once": 4}, "tasks_at_once=4"),
        ({"tasks_at_once": -1}, "tasks_at_once=-1"),
        ({"overrides": ["reptile.init=reptile"]}, "cannot start from itself"),
        ({"overrides": ["reptile.init=maml"]}, "'maml' is not one of the methods"),
        ({"overrides": ["reptile.init=multitask", "multitask.init=reptile"]}, "each other"),
        ({"overrides": ["cond-reptile.init=multitask"]}, "different networks"),
        ({"methods": ["reptile", "cond-magic"]}, "methods='cond-magic'"),
        ({"loss_weights": [1.0, -2.0, 1.0]}, "loss_weights=.* initial loss weight .* got -2.0"),
    ],
)
def test_bad_method_settings_are_named(changes, message):
    base = {**TINY_W3, "methods": ["multitask", "reptile", "cond-reptile"], "overrides": []}
    with pytest.raises(mp.experiment.ConfigError, match=message.replace("(", r"\(")):
        mp.experiment.ExperimentConfig.from_dict({**base, **changes})


def test_bad_init_folder_is_named(tmp_path):
    config = mp.experiment.ExperimentConfig.from_dict(
        {**TINY_W3, "methods": ["fomaml"], "overrides": [f"fomaml.init={tmp_path}"]}
    )
    with pytest.raises(mp.experiment.ConfigError, match="neither a method of this run"):
        mp.experiment.train_runs(config, tmp_path / "run", progress=False, log=lambda _: None)


def test_adapt_spec_names():
    params, _, _ = initialisation(mp.experiment.ExperimentConfig.from_dict(TINY_W3), 0)
    assert adapt_spec(params, "all") is None
    with pytest.raises(ValueError, match="adapt='middle'"):
        adapt_spec(params, "middle")


def test_the_default_workload_is_w3_and_w1_is_one_flag_away():
    from metapinn._cli import _config_for_run, build_parser

    def config_of(*argv):
        return _config_for_run(build_parser().parse_args(["reproduce", *argv]), {})

    assert mp.experiment.DEFAULT_WORKLOAD == "W3"
    assert config_of() == workload("W3")
    assert config_of("--workload", "W1") == mp.experiment.ExperimentConfig()
    assert config_of("--workload", "W1", "--seeds", "4") == mp.experiment.ExperimentConfig(
        seeds=(4,)
    )
    # A family named without a workload runs workload A on it; W1-W3 stay a flag away.
    assert config_of("--family", "heat") == workload("A", "heat")
    assert config_of("--family", "heat").name == "A-heat"
    assert config_of("--family", "burgers") == workload("A")
    assert config_of("--family", "heat", "--workload", "W3") == workload("W3", "heat")
    ablate = build_parser().parse_args(["ablate", "--family", "heat"])
    assert ablate.family_workload is None  # the other commands keep their default


def test_workload_flag_and_its_conflicts(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--workload", "W7"])
    assert "invalid choice: 'W7'" in capsys.readouterr().err
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY_W3))
    with pytest.raises(SystemExit):
        main(["reproduce", "--workload", "W3", "--config", str(config), "--out", str(tmp_path)])
    assert "drop --workload" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_diverged_warm_start_source_stops_only_its_dependents(tmp_path):
    """Multi-task training meets nu = 3e38 and overflows; Reptile, warm-started from
    it, is reported as not trained; the conditioned PINN still trains."""
    config = mp.experiment.ExperimentConfig.from_dict(
        {
            **TINY_W3,
            "train_params": [0.02, 0.03, 3e38],
            "seeds": [0],
            "methods": ["multitask", "reptile", "cond-multitask"],
            "overrides": ["reptile.init=multitask"],
        }
    )
    results = mp.experiment.reproduce(
        config, tmp_path, progress=False, log=lambda _: None, plots=False
    )
    diverged = {d["method"]: d for d in results["diverged"]}
    assert set(diverged) >= {"multitask", "reptile"}
    assert diverged["reptile"]["source"] == "multitask"
    assert "warm-start source multitask diverged" in format_summary(results)
    rel = np.asarray(results["per_run"]["rel_l2"], dtype=float)
    assert np.isnan(rel[1]).all() and np.isnan(rel[2]).all()
    assert np.isfinite(rel[0]).all()


def test_loss_weights_reach_every_methods_loss():
    from metapinn._experiment._problem import build_problem

    config = mp.experiment.ExperimentConfig.from_dict({**TINY_W3, "loss_weights": [1, 100, 2]})
    assert config.loss_weights == (1.0, 100.0, 2.0)
    problem = build_problem(config)
    assert problem.loss().weights == (1.0, 100.0, 2.0)
    assert problem.loss(conditioned=True).loss.weights == (1.0, 100.0, 2.0)
    assert build_problem(config.replace(loss_weights=(1, 1, 1))).loss().weights is None
    from metapinn._experiment._report import _weights_text

    assert _weights_text(config.to_dict()).endswith("terms by 1, 100, 2.")
    unit = config.replace(loss_weights=(1, 1, 1)).to_dict()
    assert _weights_text({}) == _weights_text(unit) == ""


def test_the_curriculum_trains_its_chain_each_run_from_the_one_before(tmp_path, monkeypatch):
    from metapinn._experiment import _training
    from metapinn._experiment._evaluation import _initialisations

    # Burgers: smaller nu is harder. Held-out 0.025 starts from 0.03, 0.045 (easier than
    # every training task) from the easiest, 0.04: the chain 0.04 -> 0.03.
    config = mp.experiment.ExperimentConfig.from_dict({
        **{k: TINY_W3[k] for k in ("width", "depth", "n_interior", "n_initial", "n_boundary",
                                   "train_params", "checkpoint_every")},
        "test_params": [0.025, 0.045], "methods": ["curriculum", "transfer"], "seeds": [0],
        "meta_steps": 3, "tasks_per_step": 1,
    })  # fmt: skip
    spec = config.method("curriculum")
    assert spec.run_tasks(config) == (2, 1) and spec.source_tasks(config) == (1, 2)
    starts = {}
    real = _training.meta_train

    def recording(*args, run_dir, **kwargs):
        starts[run_dir.relative_to(tmp_path).as_posix()] = args[1]
        return real(*args, run_dir=run_dir, **kwargs)

    monkeypatch.setattr(_training, "meta_train", recording)
    mp.experiment.train_runs(config, tmp_path, progress=False, log=lambda _: None)
    folder = RunFolder(tmp_path)
    random, _, _ = initialisation(config, 0)
    trained = {t: folder.load_trained(config, "curriculum", 0, random, t) for t in (1, 2)}
    assert tree_allclose(starts["train/curriculum/seed0/task2"], random)
    assert tree_allclose(starts["train/curriculum/seed0/task1"], trained[2])
    # Its first run is transfer's run of that task (the same start, key and steps); the
    # next one is not (transfer starts every task afresh).
    transfer = {t: folder.load_trained(config, "transfer", 0, random, t) for t in (1, 2)}
    assert tree_allclose(transfer[2], trained[2])
    assert not tree_allclose(transfer[1], trained[1])
    # A run's stored settings name the run it started from: a resume checks them.
    meta = read_checkpoint_meta(tmp_path / "train/curriculum/seed0/task1/checkpoint.npz")
    assert meta["config"]["start_task"] == 2 and meta["config"]["task"] == 1
    # The evaluation starts each held-out task from its source task's run.
    found, _ = _initialisations(config, folder, ("random", "curriculum"))
    (stacked,) = found["curriculum"]
    assert tree_allclose(jax.tree_util.tree_map(lambda a: a[0], stacked), trained[1])
    assert tree_allclose(jax.tree_util.tree_map(lambda a: a[1], stacked), trained[2])


def test_a_diverged_curriculum_task_leaves_the_rest_of_its_chain_untrained(tmp_path, monkeypatch):
    from metapinn._experiment import _training

    config = mp.experiment.ExperimentConfig.from_dict({
        **{k: TINY_W3[k] for k in ("width", "depth", "n_interior", "n_initial", "n_boundary",
                                   "train_params", "checkpoint_every")},
        "test_params": [0.025, 0.015], "methods": ["curriculum"], "seeds": [0],
        "meta_steps": 2, "tasks_per_step": 1,
    })  # fmt: skip
    assert config.method("curriculum").run_tasks(config) == (2, 1, 0)
    real = _training.meta_train

    def diverging(*args, run_dir, **kwargs):
        if run_dir.name == "task2":  # the first, easiest task
            raise mp.NonFiniteLossError("boom", step=1, tasks=["nu=0.04"], checkpoint_step=None)
        return real(*args, run_dir=run_dir, **kwargs)

    monkeypatch.setattr(_training, "meta_train", diverging)
    results = mp.experiment.train_runs(
        config, tmp_path, progress=False, log=lambda _: None, keep_going=True
    )
    assert all(results[f"curriculum:{t}", 0] is None for t in (2, 1, 0))
    later = json.loads((tmp_path / "train/curriculum/seed0/task1/diverged.json").read_text())
    assert "the curriculum's task 2 diverged" in later["message"]
    assert RunFolder(tmp_path).diverged(config, "curriculum", 0) is not None


def test_workload_a_names_an_unknown_family():
    with pytest.raises(mp.experiment.ConfigError, match="family='poisson'"):
        workload("A", family="poisson")
