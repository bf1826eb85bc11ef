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
    seconds_before,
    seconds_to,
)
from metapinn._experiment._summary import adapter_summary, summarise, training_per_seed

from .test_report import CURVES, INITS, _config, _per_run


SOLVE_CURVE = {
    "steps": [0, 1000, 2000, 3000],
    "seconds": [0.0, 5.0, 10.0, 20.0],
    "rel_l2": [1.0, 0.2, 0.05, 0.005],
}


def _solve_json(tmp_path, name, task, family="burgers", curve=SOLVE_CURVE):
    path = tmp_path / name
    path.write_text(json.dumps({"family": family, "task": task, "curve": curve}))
    return path


def test_solves_are_matched_to_the_runs_held_out_tasks(tmp_path):
    config = _config(eps_seconds=[0.05, 0.01])  # held out: nu = 0.03, 0.04
    one = _solve_json(tmp_path, "a.json", 0.04)
    many = tmp_path / "b.json"  # as benchmarks/solve_family.py writes, without a family
    rows = [{"task": 0.03, "curve": SOLVE_CURVE}, {"task": 0.02, "curve": SOLVE_CURVE}]
    many.write_text(json.dumps({"tasks": rows, "machine": {"cores_used": 1}}))
    solved = read_scratch([one, many], config)
    assert solved["sources"] == [{"file": "a.json", "cores": None}, {"file": "b.json", "cores": 1}]
    # nu = 0.02 (a training value, solved for the recipe) is passed over.
    assert [t["index"] for t in solved["tasks"]] == [0, 1]  # the run's order
    assert solved["tasks"][0]["task_label"] == "nu=0.03"
    assert solved["tasks"][1]["seconds"] == [0.0, 5.0, 10.0, 20.0]
    assert read_scratch(one, config)["tasks"][0]["index"] == 1  # one path as it is


def _bad_curve(tmp_path, curve):
    return _solve_json(tmp_path, "x.json", 0.03, curve=curve)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _solve_json(p, "x.json", 0.07), "task 0.07 is not one of the run's held-out"),
        (lambda p: _solve_json(p, "x.json", 0.03, family="heat"), "family 'heat', not"),
        (lambda p: (p / "x.json").write_text("{oops") and p / "x.json", "cannot read it as JSON"),
        (lambda p: (p / "x.json").write_text("[1]") and p / "x.json", "not a solve.json"),
        (
            lambda p: (
                (p / "x.json").write_text(json.dumps({"tasks": [{"task": 0.07}]})) and p / "x.json"
            ),
            "none of its tasks is one of the run's",
        ),
        (
            lambda p: (
                (p / "x.json").write_text(
                    json.dumps({"task": 0.03, "init": "run:maml", "curve": SOLVE_CURVE})
                )
                and p / "x.json"
            ),
            "adapted from 'run:maml', not solved from scratch",
        ),
        (lambda p: _bad_curve(p, None), "nu=0.03: no curve"),
        (lambda p: _bad_curve(p, {**SOLVE_CURVE, "seconds": None}), "curve.seconds is not a"),
        (lambda p: _bad_curve(p, {**SOLVE_CURVE, "rel_l2": ["a"] * 4}), "curve.rel_l2 holds a"),
        (lambda p: _bad_curve(p, {**SOLVE_CURVE, "steps": [0]}), "differ in length"),
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
    # Other draws than the family's standard ones (which metapinn solve solves).
    with pytest.raises(me.ConfigError, match="not the family's standard draws"):
        read_scratch([path], config.replace(tasks_seed=3))


def test_seconds_to_a_target_the_record_before_and_the_first_record_after_a_time():
    curve = ([0.0, 10.0, 20.0], [1.0, 0.05, 0.005])
    assert seconds_to(*curve, 0.05) == 10.0
    assert seconds_before(*curve, 0.05) == 0.0 and seconds_before(*curve, 0.01) == 10.0
    assert seconds_to(*curve, 1e-4) is None and seconds_before(*curve, 1e-4) is None
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
    # Scratch gets to 0.05 between its records at 5 s and 10 s.
    assert (maml["scratch_before"], maml["scratch_seconds"]) == pytest.approx((5.0, 10.0))
    assert maml["tasks"] == pytest.approx(30.0 / (10.0 - 0.5))
    assert maml["tasks_at_most"] == pytest.approx(30.0 / (5.0 - 0.5))
    # Gauss-Newton's last read (0.01 after 3 s); scratch once as long spent: 0.2 at 5 s.
    assert maml["closest_adapter"] == "gauss-newton"
    assert (maml["adapted_rel_l2"], maml["adapt_total_seconds"]) == pytest.approx((0.01, 3.0))
    assert maml["scratch_then"] == pytest.approx({"seconds": 5.0, "rel_l2": 0.2})
    assert rows["maml", 0.01]["adapter"] == "gauss-newton"
    assert rows["maml", 0.01]["tasks"] == pytest.approx(30.0 / (20.0 - 3.0))
    assert rows["multitask", 0.05]["tasks"] == pytest.approx(20.0 / (10.0 - 3.0))
    assert rows["multitask", 0.01]["adapter"] is None  # no adapter gets it there
    table = scratch_table(results)
    assert (
        "| MAML | 30 s | L-BFGS 0.5 s vs 5–10 s: pays off after 3.16–6.67 tasks | Gauss–Newton "
        "3 s vs 10–20 s: pays off after 1.76–4.29 tasks | Gauss–Newton: 0.01 after 3 s; from "
        "scratch 0.2 after 5 s |" in table
    )
    assert "no adapter takes every run there (from scratch: 10–20 s) |" in table
    markdown = to_markdown(results)
    assert "## Against solving each task from scratch" in markdown
    assert "`0.03.json`, `0.04.json`" in markdown and "core(s)" not in markdown


def test_a_diverged_adaptation_never_counts_as_reaching_a_target(tmp_path):
    results = _results_with_adapters(tmp_path)
    lbfgs = results["adapters"]["lbfgs"]["per_run_rel_l2"]
    lbfgs[1][0][0] = [0.6, None, None]  # MAML, seed 0, nu = 0.03: diverged
    rows = {(r["init"], r["eps"]): r for r in against_scratch(results, training_per_seed(results))}
    assert rows["maml", 0.05]["adapter"] == "gauss-newton"  # L-BFGS no longer every run


def test_per_task_baselines_get_no_payoff(tmp_path):
    results = _results_with_adapters(tmp_path)
    results["config"]["methods"] = ["transfer", "multitask"]
    results["config"]["overrides"] = []
    results["inits"] = ["random", "transfer", "multitask"]
    for data in results["adapters"].values():
        data["rows"][1]["init"] = "transfer"
    results["labels"]["transfer"] = "Transfer"
    results["timing"]["training_seconds"] = {"transfer": 30.0, "multitask": 60.0}
    rows = against_scratch(results, training_per_seed(results))
    transfer = [r for r in rows if r["init"] == "transfer"]
    assert transfer and all(r["tasks"] is None and r["per_task"] for r in transfer)
    assert "(trained per held-out task)" in scratch_table(results)


def test_the_cores_of_the_solves_are_named(tmp_path):
    results = _results_with_adapters(tmp_path)
    results["scratch"]["sources"][0]["cores"] = 1
    assert "`0.03.json` timed its solves on 1 core(s)" in to_markdown(results)


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
    np.testing.assert_allclose(scratch.get_xdata(), SOLVE_CURVE["seconds"])
    np.testing.assert_allclose(scratch.get_ydata(), SOLVE_CURVE["rel_l2"])


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


def test_scratch_needs_timed_adapters(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    good = _solve_json(tmp_path, "good.json", 0.03)
    with pytest.raises(me.ConfigError, match="--scratch: .* has none"):
        me.evaluate_runs(_config(eval_adapters=[]), folder, scratch=[good], log=lambda _: None)


def test_the_report_is_rewritten_with_scratch_solves_adapting_nothing(tmp_path, capsys):
    from metapinn._cli import main

    results = _results_with_adapters(tmp_path)
    del results["scratch"]
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    written = me.rewrite_report(run, _solve_json(tmp_path, "s.json", 0.04), log=lambda _: None)
    assert [t["task_label"] for t in written["scratch"]["tasks"]] == ["nu=0.04"]
    assert json.loads((run / "results.json").read_text())["scratch"] == written["scratch"]
    assert "## Against solving each task from scratch" in (run / "results.md").read_text()
    assert (run / "plots" / "wall_clock.png").stat().st_size > 0
    # The same from the command line; evaluation settings with it are refused.
    assert main(["evaluate", str(run), "--report-only"]) == 0
    assert "Against solving each task from scratch" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["evaluate", str(run), "--report-only", "--eval-lr", "1e-3"])
    assert "--report-only adapts nothing, so --eval-lr" in capsys.readouterr().err


def test_a_new_evaluation_keeps_the_previous_solves_of_the_same_tasks(tmp_path):
    from metapinn._experiment._evaluation import _kept_scratch
    from metapinn._experiment._folder import RunFolder

    results = _results_with_adapters(tmp_path)
    run = tmp_path / "run"
    run.mkdir()
    (run / "results.json").write_text(json.dumps(results))
    said = []
    config = _config(eval_adapters=["gauss-newton"])
    assert _kept_scratch(RunFolder(run), config, said.append) == results["scratch"]
    other = config.replace(test_params=[0.035, 0.04])
    assert _kept_scratch(RunFolder(run), other, said.append) is None
    assert said[-1].startswith("dropping the solves from scratch")
