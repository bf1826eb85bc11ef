"""A family written in the user's own code, used by name (`MODULE:ATTR`) from the
library and the command line; and `Family`'s checks on construction."""

import json
import sys

import pytest

import metapinn as mp
from metapinn._cli import main


pytestmark = pytest.mark.usefixtures("reference_cache")

MODULE = """
import metapinn as mp

MY_HEAT = mp.Family(
    name="my-heat", design="user", pde=mp.Heat, task=mp.HeatTask, parameter="kappa",
    train_range=(0.02, 0.2), truth="exact sine series",
    train_values=(0.02, 0.03, 0.05, 0.08, 0.12, 0.2),
    test_values=(0.04, 0.1),
    describes="the diffusivity kappa",
)
NOT_A_FAMILY = 3
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_families.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    sys.modules.pop("my_families", None)


def test_a_family_by_file_path_and_by_module_name(user_module):
    by_path = mp.family(str(user_module / "my_families.py") + ":MY_HEAT")
    by_module = mp.family("my_families:MY_HEAT")
    assert by_path.name == by_module.name == "my-heat"
    assert by_module.test_values == (0.04, 0.1)


@pytest.mark.parametrize(
    "name, match",
    [
        ("my_families:NOPE", "has no attribute 'NOPE'"),
        ("my_families:NOT_A_FAMILY", "is a int, not a metapinn.Family"),
        ("missing.py:X", "no file missing.py"),
        ("no_such_module:X", "importing no_such_module failed"),
        ("navier-stokes", "unknown family 'navier-stokes'"),
    ],
)
def test_a_bad_family_name_is_named(user_module, name, match):
    with pytest.raises(ValueError, match=match):
        mp.family(name)


def test_a_config_takes_a_user_family_and_names_the_run_after_it(user_module):
    config = mp.experiment.workload("W1", family="my_families.py:MY_HEAT")
    assert config.name == "W1-my-heat"
    assert config.train_params == (0.02, 0.03, 0.05, 0.08, 0.12, 0.2)
    with pytest.raises(mp.experiment.ConfigError, match="no attribute 'NOPE'"):
        mp.experiment.workload("W1", family="my_families.py:NOPE")


def test_families_lists_a_user_family(user_module, capsys):
    assert main(["families", "--family", "my_families.py:MY_HEAT"]) == 0
    out = capsys.readouterr().out
    assert "| my-heat | user | Heat | the diffusivity kappa | [0.02, 0.2] |" in out


def test_solve_runs_a_user_family_from_the_command_line(user_module):
    out = user_module / "solved"
    argv = ["solve", "--family", "my_families.py:MY_HEAT", "--task", "0.1", "--steps", "2",
            "--optimizer", "lbfgs", "--out", str(out), "--no-progress",
            "--no-plots"]  # fmt: skip
    assert main(argv) == 0
    result = json.loads((out / "solve.json").read_text())
    assert result["task_label"] == "kappa=0.1"
    assert result["curve"]["loss"][-1] <= result["curve"]["loss"][0]


@pytest.mark.e2e  # about a minute: W1's pipeline at smoke size
def test_reproduce_quick_runs_a_user_family(user_module):
    out = user_module / "run"
    argv = ["reproduce", "--quick", "--workload", "W1", "--family", "my_families.py:MY_HEAT",
            "--out", str(out), "--no-progress", "--no-plots"]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    # The results name the family by its own name; the settings keep where it is.
    assert results["family"] == "my-heat"
    assert results["config"]["family"] == "my_families.py:MY_HEAT"


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"parameter": "kapa"}, "parameter='kapa'.*fields \\['kappa'\\]"),
        ({"train_range": (0.5, 0.1)}, "train_range"),
        ({"train_values": ()}, "train_values"),
        ({"name": ""}, "name"),
    ],
)
def test_family_checks_its_fields(changes, match):
    fields = dict(
        name="x", design="user", pde=mp.Heat, task=mp.HeatTask, parameter="kappa",
        train_range=(0.02, 0.2), truth="exact", train_values=(0.02, 0.2), test_values=(0.1,),
    )  # fmt: skip
    with pytest.raises(ValueError, match=match):
        mp.Family(**{**fields, **changes})


def test_family_fields_are_given_by_keyword():
    with pytest.raises(TypeError, match="positional"):
        mp.Family("x", "user", mp.Heat, mp.HeatTask, "kappa", (0.02, 0.2), "exact")  # type: ignore[misc]


FUTURE_MODULE = """
from __future__ import annotations

import equinox as eqx
import jax

import metapinn as mp


class SlowHeatTask(eqx.Module):
    kappa: jax.Array


SLOW = mp.Family(
    name="slow-heat", design="user", pde=mp.Heat, task=SlowHeatTask, parameter="kappa",
    train_range=(0.01, 0.1), truth="exact",
    train_values=(0.01, 0.1), test_values=(0.05,),
)
"""


def test_a_file_with_its_own_task_class_imports(tmp_path):
    # A module defining a dataclass (an equinox module) must be in sys.modules while it
    # runs, or `from __future__ import annotations` makes dataclasses fail on it.
    (tmp_path / "slow.py").write_text(FUTURE_MODULE)
    fam = mp.family(f"{tmp_path / 'slow.py'}:SLOW")
    assert fam.name == "slow-heat" and fam.task.__name__ == "SlowHeatTask"
    assert mp.family(f"{tmp_path}/./slow.py:SLOW") is fam  # one import per file
