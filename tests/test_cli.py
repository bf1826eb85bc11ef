"""The `metapinn` command end to end, at tiny sizes: reproduce, train, evaluate, show,
resume, a non-finite stop, and configuration errors."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

import metapinn as mp
from metapinn._cli import main

from .helpers import TINY_RUN


TINY = {**TINY_RUN, "inner_steps": 2, "seeds": [0, 1], "checkpoint_every": 2}
METHODS = ["maml", "fomaml", "reptile", "multitask"]
PLOTS = ["few_shot.png", "fields.png", "meta_training.png", "per_task.png"]


pytestmark = pytest.mark.usefixtures("reference_cache")


@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, config_file):
    """One uninterrupted tiny `reproduce`, shared by the tests that inspect it."""
    out = tmp_path_factory.mktemp("runs") / "whole"
    rc = main(["reproduce", "--config", str(config_file), "--out", str(out), "--no-progress"])
    assert rc == 0
    return out


def _without_timing(path):
    results = json.loads(path.read_text())
    del results["timing"]
    return results


@pytest.mark.e2e
def test_reproduce_writes_everything(tiny_run, capsys):
    out = tiny_run
    assert json.loads((out / "config.json").read_text()) == {
        **mp.experiment.ExperimentConfig().to_dict(),
        **TINY,
    }
    for method in METHODS:
        for seed in (0, 1):
            folder = out / "train" / method / f"seed{seed}"
            assert (folder / "checkpoint.npz").exists()
            lines = (folder / "metrics.jsonl").read_text().splitlines()
            assert [json.loads(r)["step"] for r in lines] == list(range(TINY["meta_steps"]))
    assert sorted(os.listdir(out / "plots")) == PLOTS
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    # Every file the run wrote has the mode `open` gives (0o666 less the umask).
    umask = os.umask(0o022)
    os.umask(umask)
    modes = {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes == {0o666 & ~umask}

    results = json.loads((out / "results.json").read_text())
    assert results["inits"] == ["random", *METHODS]
    assert np.asarray(results["per_run"]["rel_l2"]).shape == (5, 2, 2, 3)  # init seed nu k
    assert np.all(np.isfinite(results["per_run"]["rel_l2"]))
    rows = [(r["init"], r["steps"]) for r in results["table"]]
    assert rows == [(m, 2) for m in METHODS] + [("random", 2), ("random", 5)]
    for row in results["table"]:
        assert {"loss", "rms_residual", "rel_l2"} <= set(row)
    # At k = 0 the adaptation has not moved: every seed's random init has the same
    # error, independent of how the table was built.
    rel = np.asarray(results["per_run"]["rel_l2"])
    assert results["curves"]["random"][0]["rel_l2"]["mean"] == pytest.approx(rel[0, :, :, 0].mean())
    markdown = (out / "results.md").read_text()
    assert "rel-L2 vs reference" in markdown and "Steps to a target rel-L2" in markdown

    assert main(["show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert shown == markdown
    assert "| MAML | 2 |" in shown


@pytest.mark.e2e
def test_evaluate_with_other_settings(tiny_run, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(tiny_run, run)
    assert main(["evaluate", str(run), "--eval-steps", "0", "3", "--budget", "3",
                 "--no-plots"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "| Random init | 3 |" in printed
    results = json.loads((run / "results.json").read_text())
    assert results["steps"] == [0, 3]
    # Spread over the two host devices: the same table, to float32 rounding.
    assert main(["evaluate", str(run), "--eval-steps", "0", "3", "--budget", "3",
                 "--no-plots", "--devices", "2"]) == 0  # fmt: skip
    spread = json.loads((run / "results.json").read_text())
    for measure in ("rel_l2", "loss"):
        one, two = results["per_run"][measure], spread["per_run"][measure]
        assert np.allclose(np.array(two, float), np.array(one, float), rtol=1e-6, equal_nan=True)
    # Settings of the training cannot be changed at evaluation.
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", str(run), "--inner-lr", "0.1"])
    assert exit_info.value.code == 2
    assert "--inner-lr" in capsys.readouterr().err


@pytest.mark.e2e
def test_resume_after_interruption_is_identical(tiny_run, config_file, tmp_path, capsys):
    out = tmp_path / "interrupted"
    args = ["reproduce", "--config", str(config_file), "--out", str(out), "--no-progress",
            "--no-plots"]  # fmt: skip
    assert main([*args, "--stop-after", "3"]) == 3
    assert "--resume" in capsys.readouterr().err
    assert not (out / "results.json").exists()
    # Starting again without --resume would mix two runs: refused.
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["show", str(out)]) == 0
    assert "maml seed 0: 2/6 meta-steps checkpointed" in capsys.readouterr().out

    assert main(["reproduce", "--resume", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    assert _without_timing(out / "results.json") == _without_timing(tiny_run / "results.json")
    for method in METHODS:
        for seed in (0, 1):
            a = np.load(tiny_run / "train" / method / f"seed{seed}" / "checkpoint.npz")
            b = np.load(out / "train" / method / f"seed{seed}" / "checkpoint.npz")
            assert a.files == b.files
            for name in a.files:
                np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.e2e
def test_train_one_method_then_evaluate(tmp_path, config_file, capsys):
    out = tmp_path / "one"
    argv = ["train", "--config", str(config_file), "--method", "reptile", "--seed", "1",
            "--inner-optimizer", "adam", "--inner-lr", "0.003", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    stored = json.loads((out / "config.json").read_text())
    assert stored["methods"] == ["reptile"] and stored["seeds"] == [1]
    assert stored["inner_optimizer"] == "adam"
    assert "metapinn evaluate" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--no-plots"]) == 0
    assert "| Reptile | 2 |" in capsys.readouterr().out


def test_non_finite_loss_stops_cleanly(tmp_path, config_file, capsys):
    out = tmp_path / "diverges"
    argv = ["train", "--config", str(config_file), "--method", "multitask",
            "--train-params", "3e38", "0.02", "0.03", "--tasks-per-step", "1",
            "--checkpoint-every", "1", "--meta-steps", "40", "--out", str(out)]  # fmt: skip
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "non-finite loss at meta-step" in err and "nu=3e+38" in err
    step = int(err.split("non-finite loss at meta-step ")[1].split()[0])
    assert step > 0  # with seed 0's key, the first steps draw finite viscosities
    assert f"after {step} meta-steps" in err
    ckpt = out / "train" / "multitask" / "seed0" / "checkpoint.npz"
    with np.load(ckpt) as data:
        assert json.loads(str(data["__meta__"]))["step"] == step
        assert all(np.all(np.isfinite(data[k])) for k in data.files if k != "__meta__")


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--method", "mamll"], "methods='mamll'"),
        (["reproduce", "--methods", "maml", "magic"], "methods='magic'"),
        (["reproduce", "--methods", "all", "maml"], "'all' stands alone"),
        (["reproduce", "--inner-steps", "-1"], "inner_steps=-1"),
        (["reproduce", "--train-params", "0.01", "-0.02"], "train_params=-0.02"),
        (["reproduce", "--train-nus", "0.01", "-0.02"], "train_params=-0.02"),  # its old name
        (["reproduce", "--test-params", "0"], "test_params=0.0"),
        (["reproduce", "--meta-steps", "-5"], "meta_steps=-5"),
        (["reproduce", "--eval-steps", "0", "100", "10"], "strictly increasing"),
        (["reproduce", "--budget", "7"], "budget=7"),
        (["reproduce", "--inner-lr", "0"], "inner_lr=0.0"),
        (["reproduce", "--tasks-per-step", "9"], "tasks_per_step=9"),
        (["train", "--inner-optimizer", "rmsprop"], "inner_optimizer='rmsprop'"),
        (["reproduce", "--dtype", "float16"], "dtype='float16'"),
        (["reproduce", "--resume"], "--resume needs --out"),
    ],
)
def test_bad_values_are_named(argv, message, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--out", str(tmp_path / "x")] if "--resume" not in argv else argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_out_is_a_new_folder_or_a_run_and_resume_needs_a_run(tmp_path, config_file, capsys):
    """`--out` at a folder that holds other files (no config.json), with or without
    `--resume`, and `--resume` of a missing or empty folder: one line naming the
    folder, exit status 2, nothing written, nothing trained."""
    stray = tmp_path / "notes"
    stray.mkdir()
    (stray / "todo.txt").write_text("mine")
    missing, empty = tmp_path / "missing", tmp_path / "empty"
    empty.mkdir()
    tiny = ["--config", str(config_file), "--no-progress"]
    cases = [
        (["reproduce", *tiny, "--out", str(stray)], stray, "not empty and holds no run"),
        (["train", *tiny, "--out", str(stray)], stray, "not empty and holds no run"),
        (["reproduce", "--resume", "--out", str(stray)], stray, "holds no run"),
        (["train", "--resume", "--out", str(stray)], stray, "holds no run"),
        (["reproduce", "--resume", "--out", str(missing)], missing, "no such folder"),
        (["train", *tiny, "--resume", "--out", str(missing)], missing, "no such folder"),
        (["reproduce", "--resume", "--out", str(empty)], empty, "holds no run"),
        (["ablate", "--vary", "method=maml", "--out", str(stray)], stray, "holds no grid"),
        (["ablate", "--resume", "--out", str(missing)], missing, "no such folder"),
        (["ablate", "--resume", "--out", str(stray)], stray, "holds no grid"),
    ]
    for argv, folder, message in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{folder}" in err and message in err, (argv, err)
    assert os.listdir(stray) == ["todo.txt"] and os.listdir(empty) == []
    assert not missing.exists()
    # The library refuses the same folders.
    config = mp.experiment.ExperimentConfig.from_dict(TINY)
    with pytest.raises(FileExistsError, match=f"{stray} is not empty"):
        mp.experiment.train_runs(config, stray, progress=False, log=lambda _: None)
    with pytest.raises(FileNotFoundError, match=f"cannot resume {missing}: no such folder"):
        mp.experiment.reproduce(config, missing, resume=True, progress=False, log=lambda _: None)


def test_bad_config_files(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"meta_step": 10}))
    with pytest.raises(SystemExit):
        main(["reproduce", "--config", str(bad)])
    assert "unknown config key(s) 'meta_step'" in capsys.readouterr().err
    bad.write_text("{not json")
    with pytest.raises(SystemExit):
        main(["reproduce", "--config", str(bad)])
    assert "not valid JSON" in capsys.readouterr().err
    bad.write_text(json.dumps({"seeds": "0"}))
    with pytest.raises(SystemExit):
        main(["reproduce", "--config", str(bad)])
    assert "seeds='0'" in capsys.readouterr().err


def test_config_round_trip_and_errors():
    config = mp.experiment.ExperimentConfig.from_dict({"meta_steps": 7, "seeds": [3]})
    assert config.seeds == (3,)
    assert (
        mp.experiment.ExperimentConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    )
    with pytest.raises(mp.experiment.ConfigError, match="inner_steps=-2"):
        mp.experiment.ExperimentConfig(inner_steps=-2)
    with pytest.raises(mp.experiment.ConfigError, match="expected an integer"):
        mp.experiment.ExperimentConfig.from_dict({"meta_steps": 1.5})
    with pytest.raises(mp.experiment.ConfigError, match="expected an integer"):
        mp.experiment.ExperimentConfig.from_dict({"width": True})


def test_families_are_listed(capsys):
    from metapinn._pde._registry import FAMILIES

    assert main(["families"]) == 0
    out = capsys.readouterr().out
    # The label column cites the page that defines F1-F6 (docs/design.md §2).
    assert "| family | docs/design.md | PDE |" in out
    for family in FAMILIES.values():
        assert f"| {family.name} | {family.design} | {family.pde.__name__} |" in out
        # Each entry names its PDE's own task: a task at the middle of the range has
        # the parameter, and the PDE accepts it.
        if family.train_range is not None:
            low, high = family.train_range
            task = family.task((low * high) ** 0.5)
            assert float(getattr(task, family.parameter)) == pytest.approx((low * high) ** 0.5)
            family.pde().check_task(task, np.zeros(()))
    assert {f.design for f in FAMILIES.values()} == {"F1", "F2", "F3", "F4", "F5", "F6"}


def test_all_methods_are_one_flag_away():
    """`--methods all` runs every method; on W3 each learner has a warm start (its
    network's multi-task run) and a budget, so none trains 1000 steps from random."""
    from metapinn._cli import _config_for_run, build_parser
    from metapinn._experiment._methods import METHOD_NAMES

    args = build_parser().parse_args(["reproduce", "--methods", "all"])
    config = _config_for_run(args, {})
    assert config.name == "W3" and config.methods == METHOD_NAMES
    assert {"maml", "mamlpp", "imaml", "cond-metasgd", "transfer"} <= set(config.methods)
    for method in config.methods:
        s = config.method_settings(method)
        pretraining = method in ("multitask", "cond-multitask", "transfer", "curriculum")
        if not pretraining:
            home = "cond-multitask" if method.startswith("cond-") else "multitask"
            assert s["init"] == home and s["meta_steps"] <= 100, (method, s)
    assert mp.experiment.workload("W1", methods=["all"]).methods == METHOD_NAMES
    # The curriculum needs an ordered family: on drawn functions "all" leaves it out.
    f6 = mp.experiment.workload("W3", family="burgers-random-ic", methods=["all"])
    assert f6.methods == tuple(m for m in METHOD_NAMES if m != "curriculum")
    assert config.method("curriculum").outer_lr == config.method("transfer").outer_lr


def test_help_gives_every_option_a_default(capsys):
    for command in ("reproduce", "train", "evaluate", "show", "ablate"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        options = [line for line in text.splitlines() if line.strip().startswith("--")]
        assert options or command == "show"
        for line in options:
            if line.strip().startswith(("--help", "--version")):
                continue
            # The help text of an option may wrap onto the next lines.
            block = text[text.index(line) :].split("\n  -")[0]
            assert "default" in block, line


@pytest.mark.slow
def test_resume_after_a_real_kill(tmp_path, config_file):
    """Kill a `metapinn train` process once it has written a checkpoint; resume it;
    the final checkpoint equals that of an uninterrupted run."""
    env = {**os.environ, "METAPINN_CACHE": str(tmp_path / "cache")}
    common = ["train", "--config", str(config_file), "--method", "fomaml",
              "--meta-steps", "400", "--checkpoint-every", "25", "--no-progress"]  # fmt: skip
    command = [sys.executable, "-m", "metapinn._cli"]
    subprocess.run([*command, *common, "--out", str(tmp_path / "a")], env=env, check=True)
    killed = tmp_path / "b"
    process = subprocess.Popen([*command, *common, "--out", str(killed)], env=env)
    ckpt = killed / "train" / "fomaml" / "seed0" / "checkpoint.npz"
    deadline = time.monotonic() + 120
    while not ckpt.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    process.kill()
    process.wait()
    with np.load(ckpt) as data:
        assert json.loads(str(data["__meta__"]))["step"] < 400
    subprocess.run([*command, *common, "--out", str(killed), "--resume"], env=env, check=True)
    a = np.load(tmp_path / "a" / "train" / "fomaml" / "seed0" / "checkpoint.npz")
    b = np.load(ckpt)
    for name in a.files:
        np.testing.assert_array_equal(a[name], b[name])


@pytest.mark.e2e
def test_reproduce_reports_diverged_runs_and_goes_on(tmp_path, config_file, capsys):
    """A meta-training whose loss overflows (nu = 3e38 is drawn at some step) stops
    with its checkpoint kept, is reported, and the rest of the experiment goes on."""
    config = {**TINY, "train_params": [0.02, 0.03, 3e38]}
    path = tmp_path / "diverging.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "run"
    argv = ["reproduce", "--config", str(path), "--out", str(out), "--no-progress", "--no-plots"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    diverged = {(d["method"], d["seed"]) for d in results["diverged"]}
    assert diverged  # at least one run met the huge viscosity
    for method, seed in diverged:
        marker = json.loads((out / "train" / method / f"seed{seed}" / "diverged.json").read_text())
        assert "nu=3e+38" in marker["message"]
    assert "DIVERGED" in printed and "Diverged meta-training runs" in printed
    assert results["seeds_used"]["random"] == 2
    for method in METHODS:
        assert results["seeds_used"][method] == 2 - sum(m == method for m, _ in diverged)
    # Resuming recomputes nothing new: the same runs diverge at the same steps.
    assert main(["reproduce", "--resume", "--out", str(out), "--no-progress", "--no-plots"]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["diverged"] == results["diverged"]
