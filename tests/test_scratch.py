"""Solving the held-out tasks from scratch, set against each trained initialisation:
the solves read and matched to the run's tasks, the fastest adapter, the tasks after
which training pays off, the table and the figure; on synthetic numbers known in
advance."""

import json

import numpy as np
import pytest

import metapinn.experiment as me
from metapinn._experiment._adapter_evaluation import AdapterMeasures
from metapinn._experiment._report import scratch_table, to_markdown
from metapinn._experiment._scratch import (
    against_scratch,
    first_record_after,
    read_scratch,
    seconds_to,
)
from metapinn._experiment._summary import adapter_summary, summarise, training_per_seed

from .test_report import CURVES, INITS, _config, _per_run


SOLVE_CURVE = {"steps": [0, 1000, 2000], "seconds": [0.0, 10.0, 20.0], "rel_l2": [1.0, 0.05, 0.005]}


def _solve_json(tmp_path, name, task, family="burgers", curve=SOLVE_CURVE):
    path = tmp_path / name
    path.write_text(json.dumps({"family": family, "task": task, "curve": curve}))
    return path


def test_solves_are_matched_to_the_runs_held_out_tasks(tmp_path):
    config = _config(eps_seconds=[0.05, 0.01])  # held out: nu = 0.03, 0.04
    one = _solve_json(tmp_path, "a.json", 0.04)
    many = tmp_path / "b.json"  # as benchmarks/solve_family.py writes, without a family
    many.write_text(json.dumps({"tasks": [{"task": 0.03, "curve": SOLVE_CURVE}]}))
    solved = read_scratch([one, many], config)
    assert solved["sources"] == ["a.json", "b.json"]
    assert [t["index"] for t in solved["tasks"]] == [0, 1]  # the run's order
    assert solved["tasks"][0]["task_label"] == "nu=0.03"
    assert solved["tasks"][1]["seconds"] == [0.0, 10.0, 20.0]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _solve_json(p, "x.json", 0.07), "task 0.07 is not one of the run's held-out"),
        (lambda p: _solve_json(p, "x.json", 0.03, family="heat"), "family 'heat', not"),
        (lambda p: (p / "x.json").write_text("{oops") and p / "x.json", "cannot read it as JSON"),
        (lambda p: (p / "x.json").write_text("[1]") and p / "x.json", "not a solve.json"),
    ],
)
def test_a_bad_scratch_file_is_a_one_line_error_naming_it(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(me.ConfigError, match=message) as error:
        read_scratch([path], _config())
    assert "x.json" in str(error.value) and "\n" not in str(error.value)


def test_one_task_solved_twice_is_refused(tmp_path):
    paths = [_solve_json(tmp_path, f"{i}.json", 0.03) for i in range(2)]
    with pytest.raises(me.ConfigError, match="nu=0.03 is given twice"):
        read_scratch(paths, _config())


def test_a_drawn_family_matches_solves_by_task_index(tmp_path):
    config = me.workload("W3", "burgers-random-ic")
    path = _solve_json(tmp_path, "r.json", 2, family="burgers-random-ic")
    assert read_scratch([path], config)["tasks"][0]["index"] == 2
    bad = _solve_json(tmp_path, "s.json", config.n_test, family="burgers-random-ic")
    with pytest.raises(me.ConfigError, match="is not one of"):
        read_scratch([bad], config)


def test_seconds_to_a_target_and_the_first_record_after_a_time():
    assert seconds_to([0.0, 10.0, 20.0], [1.0, 0.05, 0.005], 0.05) == 10.0
    assert seconds_to([0.0, 10.0, 20.0], [1.0, 0.05, 0.005], 1e-4) is None
    curve = ([0.0, 10.0, 20.0], [1.0, 0.05, 0.005])
    assert first_record_after(*curve, 15.0) == (20.0, 0.005)
    assert first_record_after(*curve, 10.0) == (10.0, 0.05)
    assert first_record_after(*curve, 25.0) == (20.0, 0.005)  # the last record


def _results_with_adapters(tmp_path):
    """MAML reaches 0.05 with L-BFGS after 0.5 s (Gauss-Newton: 1 s) and 0.01 only
    with Gauss-Newton, after 3 s; multi-task reaches 0.05 with Gauss-Newton after 3 s
    and never 0.01. Scratch: 10 s to 0.05, 20 s to 0.01."""
    config = _config(eps_seconds=[0.05, 0.01], overrides=["maml.init=multitask"])
    results = summarise(config, INITS, _per_run(CURVES))
    shape = (3, 3, 2, 3)  # (init, seed, task, k) at k = 0, 1, 3

    def measures(name, curves, seconds):
        rel = np.broadcast_to(np.asarray(curves)[:, None, None, :], shape).copy()
        sec = np.broadcast_to(np.asarray(seconds, float), shape).copy()
        return AdapterMeasures(name, INITS, (0, 1, 3), rel, sec, rel, True)

    gn = measures("gauss-newton", [[1, 0.9, 0.8], [0.6, 0.04, 0.01], [0.7, 0.2, 0.04]], [0, 1, 3])
    lbfgs = measures("lbfgs", [[1, 0.9, 0.8], [0.6, 0.03, 0.02], [0.7, 0.5, 0.3]], [0, 0.5, 1.5])
    results["adapters"] = adapter_summary(config, [gn, lbfgs], np.ones((3, 3), bool))
    # Training of all three seeds: MAML 30 s, warm-started from multi-task's 60 s.
    results["timing"] = {
        "training_seconds": {"maml": 30.0, "multitask": 60.0},
        "evaluation_seconds": 5.0,
    }
    paths = [_solve_json(tmp_path, f"{v}.json", v) for v in (0.03, 0.04)]
    results["scratch"] = read_scratch(paths, config)
    return json.loads(json.dumps(results))  # as read back from results.json


def test_each_initialisation_against_scratch_with_its_fastest_adapter(tmp_path):
    results = _results_with_adapters(tmp_path)
    per_seed = training_per_seed(results)
    assert per_seed == {"maml": pytest.approx(30.0), "multitask": pytest.approx(20.0)}
    rows = {(r["init"], r["eps"]): r for r in against_scratch(results, per_seed)}
    maml = rows["maml", 0.05]
    assert maml["adapter"] == "lbfgs" and maml["adapt_seconds"] == pytest.approx(0.5)
    assert maml["scratch_seconds"] == pytest.approx(10.0)
    assert maml["tasks"] == pytest.approx(30.0 / (10.0 - 0.5))
    # Gauss-Newton's last read (0.01 after 3 s); scratch once as long spent: 0.05 at 10 s.
    assert (maml["adapted_rel_l2"], maml["adapt_total_seconds"]) == pytest.approx((0.01, 3.0))
    assert maml["scratch_then"] == pytest.approx({"seconds": 10.0, "rel_l2": 0.05})
    assert rows["maml", 0.01]["adapter"] == "gauss-newton"
    assert rows["maml", 0.01]["tasks"] == pytest.approx(30.0 / (20.0 - 3.0))
    assert rows["multitask", 0.05]["tasks"] == pytest.approx(20.0 / (10.0 - 3.0))
    assert rows["multitask", 0.01]["adapter"] is None  # no adapter gets it there
    table = scratch_table(results)
    # The lowest error at the last step read: MAML's Gauss-Newton, 0.01 after 3 s.
    assert maml["closest_adapter"] == "gauss-newton"
    assert (
        "| MAML | 30 s | L-BFGS 0.5 s vs 10 s: pays off after 3.16 tasks | Gauss–Newton 3 s vs "
        "20 s: pays off after 1.76 tasks | Gauss–Newton: 0.01 after 3 s; from scratch 0.05 "
        "after 10 s |" in table
    )
    assert "no adapter takes every run there (from scratch: 20 s) |" in table
    assert "## Against solving each task from scratch" in to_markdown(results)
    assert "`0.03.json`, `0.04.json`" in to_markdown(results)


def test_no_scratch_solves_no_table(tmp_path):
    results = _results_with_adapters(tmp_path)
    del results["scratch"]
    assert against_scratch(results, training_per_seed(results)) == []
    assert scratch_table(results) == ""
    assert "from scratch" not in to_markdown(results)


def test_the_wall_clock_figure_draws_the_solves_from_scratch(tmp_path):
    results = _results_with_adapters(tmp_path)
    (ax,) = me.wall_clock_figure(results).get_axes()
    lines = {line.get_label(): line for line in ax.get_lines()}
    scratch = lines["From scratch · the family's recipe"]
    np.testing.assert_allclose(scratch.get_xdata(), [0.0, 10.0, 20.0])
    np.testing.assert_allclose(scratch.get_ydata(), [1.0, 0.05, 0.005])


def test_evaluate_refuses_a_bad_scratch_file_before_any_work(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()  # nothing trained: the scratch file is refused first
    bad = _solve_json(tmp_path, "bad.json", 0.5)
    with pytest.raises(me.ConfigError, match="bad.json: task 0.5"):
        me.evaluate_runs(_config(), folder, scratch=[bad], log=lambda _: None)
    assert not any(folder.iterdir())  # no lock file, no results


def test_the_evaluate_command_takes_scratch_files(tmp_path, capsys):
    from metapinn._cli import main

    (tmp_path / "config.json").write_text(json.dumps(_config().to_dict()))
    bad = _solve_json(tmp_path, "bad.json", 0.5)
    with pytest.raises(SystemExit) as stop:
        main(["evaluate", str(tmp_path), "--scratch", str(bad)])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "metapinn evaluate: error:" in err and "bad.json: task 0.5" in err
