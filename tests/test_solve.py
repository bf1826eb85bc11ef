"""`metapinn solve`: one family member from a trained initialisation (or from scratch),
timed, against the reference; and its one-line errors."""

import dataclasses
import json
import re

import numpy as np
import pytest

import metapinn as mp
from metapinn._cli import main

from .helpers import TINY_RUN


TINY = {
    **TINY_RUN,
    "methods": ["multitask", "cond-multitask"],
    "seeds": [0],
    "checkpoint_every": 3,
}


pytestmark = pytest.mark.usefixtures("reference_cache")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "tiny.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path_factory.mktemp("runs") / "tiny"
    argv = ["reproduce", "--config", str(config), "--out", str(out), "--no-progress"]
    assert main([*argv, "--no-plots"]) == 0
    return out


@pytest.mark.e2e  # trains a tiny run first (about 10 s)
@pytest.mark.parametrize(
    "method, optimizer",
    [("cond-multitask", "adam"), ("cond-multitask", "gauss-newton"), ("multitask", "lbfgs")],
)
def test_solve_from_a_run_starts_where_the_evaluation_does(tiny_run, tmp_path, method, optimizer):
    out = tmp_path / "solve"
    init = f"{tiny_run}:{method}"
    argv = ["solve", "--family", "burgers", "--task", "0.05", "--init", init, "--optimizer",
            optimizer, "--steps", "3", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "solve.json").read_text())
    for key in ("family", "task", "optimizer", "steps", "seconds", "rel_l2"):
        assert key in result
    assert (result["family"], result["task"], result["steps"]) == ("burgers", 0.05, 3)
    curve = result["curve"]
    assert curve["steps"] == [0, 1, 2, 3]
    assert result["rel_l2"] == curve["rel_l2"][-1]
    assert all(b >= a for a, b in zip(curve["seconds"], curve["seconds"][1:], strict=False))
    if optimizer != "adam":  # a rejected LM step, a Wolfe line search: never up
        loss = curve["loss"]
        assert all(b <= a * (1 + 1e-6) for a, b in zip(loss, loss[1:], strict=False))
    # The evaluation's errors for the same initialisation and task: at k = 0, and with
    # the same adaptation (the run's Adam schedule, all of a conditioned network's
    # parameters adapted) at every step it recorded.
    results = json.loads((tiny_run / "results.json").read_text())
    rel = np.asarray(results["per_run"]["rel_l2"])[results["inits"].index(method), 0, 1]
    for k in results["steps"] if optimizer == "adam" else [0]:
        if k <= 3:
            np.testing.assert_allclose(
                curve["rel_l2"][k], rel[results["steps"].index(k)], rtol=1e-4
            )
    assert (out / "solve.png").exists()


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--family", "navier-stokes", "--task", "1"], "unknown family 'navier-stokes'"),
        (["--family", "heat", "--task", "fast"], "--task 'fast'"),
        (["--family", "heat", "--task", "-0.1"], "-0.1"),
        (["--family", "heat", "--task", "nan"], "--task 'nan'"),
        (["--family", "burgers-random-ic", "--task", "99"], "--task '99'.*index"),
        (["--family", "heat", "--task", "0.1", "--steps", "-2"], "--steps.*-2"),
        (["--family", "heat", "--task", "0.1", "--init", "nocolon"], "RUN:METHOD"),
    ],
)
def test_bad_input_is_one_named_error(tmp_path, capsys, argv, match):
    with pytest.raises(SystemExit) as exit_info:
        main(["solve", *argv, "--out", str(tmp_path / "x"), "--no-progress"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(match, err), err


@pytest.mark.e2e
def test_an_init_of_another_family_or_method_is_named(tiny_run, tmp_path, capsys):
    for init, match in [
        (f"{tiny_run}:multitask", "trained on the family 'burgers', not 'heat'"),
        (f"{tiny_run}:maml", "no method 'maml'"),
        (f"{tmp_path}:multitask", "is not a metapinn run folder"),
    ]:
        family = "heat" if "family" in match else "burgers"
        with pytest.raises(SystemExit) as exit_info:
            main(["solve", "--family", family, "--task", "0.05", "--init", init, "--out",
                  str(tmp_path / "x"), "--no-progress"])  # fmt: skip
        assert exit_info.value.code == 2
        assert match in capsys.readouterr().err


def test_solve_from_scratch_writes_its_record(tmp_path):
    out = tmp_path / "scratch"
    argv = ["solve", "--family", "heat", "--task", "0.05", "--steps", "2", "--out", str(out),
            "--no-progress", "--no-plots"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "solve.json").read_text())
    assert result["init"] == "random (from scratch)"
    assert (result["optimizer"], result["steps"], result["task"]) == ("adam", 2, 0.05)
    assert result["curve"]["steps"] == [0, 2]  # the recipe's training: one record a chunk
    recipe = dataclasses.asdict(mp.experiment.recipe("heat"))
    assert result["recipe"] == json.loads(json.dumps(recipe))
    assert 0 < result["rel_l2"] < 10
    assert not (out / "solve.png").exists()


def test_solve_from_scratch_marches_in_time_and_finishes(tmp_path, monkeypatch):
    from metapinn._experiment import _recipes

    small = dataclasses.replace(
        _recipes.RECIPES["convection"], windows=2, steps=2, finish_steps=1, finish_cg_steps=3,
        width=8, depth=2, fourier_features=8, n_interior=32, n_initial=8, n_boundary=4,
        balance_every=0, causal_chunks=4,
    )  # fmt: skip
    monkeypatch.setitem(_recipes.RECIPES, "convection", small)
    out = tmp_path / "marched"
    argv = ["solve", "--family", "convection", "--task", "5", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    result = json.loads((out / "solve.json").read_text())
    # Each window: its Adam chunk, then its finisher; the curve runs on across windows.
    assert result["curve"]["steps"] == [0, 2, 3, 5, 6]
    assert sorted(result["curve"]["seconds"]) == result["curve"]["seconds"]
    assert len(result["final_weights"]) == 2 and 0 < result["rel_l2"] < 10
    assert (out / "solve.png").exists()


def test_every_family_has_a_valid_recipe(capsys):
    from metapinn._pde._registry import FAMILIES

    for name in FAMILIES:
        rec = mp.experiment.recipe(name)
        config = rec.config(name)  # checked: the network fits the family
        assert config.network == rec.network and config.causal_chunks == rec.causal_chunks
        if config.periodic_embedding:  # the boundary term is zero by construction: off
            assert rec.weights[2] == 0.0
        assert rec.chosen  # how it was chosen is recorded
    assert main(["families", "--recipes"]) == 0
    table = capsys.readouterr().out
    assert all(f"| {name} |" in table for name in FAMILIES)
    assert main(["families", "--recipes", "--family", "heat"]) == 0
    assert capsys.readouterr().out.count("\n") == 3
