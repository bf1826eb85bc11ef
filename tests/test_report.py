"""The report logic behind the headline claims, on small synthetic measurements: the
mean ± spread over seeds (diverged seeds left out), steps to a target error and the
speed-ups, the verdict, the amortisation, and the tables and titles they print. No
network is trained here: every number is known in advance."""

import json
import math

import numpy as np
import pytest

import metapinn as mp
from metapinn._experiment._ablation_grid import Cell
from metapinn._experiment._ablation_report import cell_row_of, step_seconds
from metapinn._experiment._report import (
    amortisation_table,
    format_summary,
    is_quick,
    results_table,
    steps_to_eps_table,
    to_markdown,
)
from metapinn._experiment._summary import (
    _mean_std,
    _speedup,
    _steps_to,
    adapter_summary,
    amortisation,
    compare_errors,
    in_range,
    payoff,
    plain_adam_summary,
    summarise,
)


STEPS = (0, 10, 100)
BUDGET = 10
SETTINGS = {
    "name": "synthetic",
    "methods": ["maml", "multitask"],
    "seeds": [0, 1, 2],
    "train_params": [0.02, 0.03, 0.05],
    "test_params": [0.03, 0.04],
    "tasks_per_step": 2,
    "eval_steps": list(STEPS),
    "budget": BUDGET,
    "eps": [0.5, 0.05],
    "overrides": ["maml.init=multitask"],
}
INITS = ("random", "maml", "multitask")


def _config(**changes):
    return mp.experiment.ExperimentConfig.from_dict({**SETTINGS, **changes})


def _per_run(curves: dict[str, list[list[float]]], n_tasks: int = 2) -> dict[str, np.ndarray]:
    """Measurements `(init, seed, task, k)` whose every held-out task has the given
    per-seed curve `curves[init][seed][k]` (so the task average is that curve)."""
    rel = np.array([curves[init] for init in INITS], dtype=float)  # (I, S, K)
    rel = np.repeat(rel[:, :, None, :], n_tasks, axis=2)
    return {"loss": rel / 10, "rms_residual": rel / 100, "rel_l2": rel, "max_abs": rel * 2}


# Per-seed rel-L2 curves at k = 0, 10, 100. At the budget (k = 10): random init
# 0.9 ± 0.1, MAML 0.3 ± 0.1 (far below random init), multi-task 0.35 ± 0.03 (within
# MAML's spread). After 100 steps random init reaches 0.1 ± 0, below MAML's 0.3.
CURVES = {
    "random": [[1.0, 0.8, 0.1], [1.0, 0.9, 0.1], [1.0, 1.0, 0.1]],
    "maml": [[0.6, 0.2, 0.04], [0.6, 0.3, 0.04], [0.6, 0.4, 0.04]],
    "multitask": [[0.7, 0.32, 0.2], [0.7, 0.35, 0.2], [0.7, 0.38, 0.2]],
}


def _results(config=None, curves=CURVES, **kwargs):
    config = _config() if config is None else config
    return summarise(config, INITS, _per_run(curves), **kwargs)


# ---------------------------------------------------------------------------------------
# The mean ± spread over seeds.


def test_mean_and_sample_std_over_seeds():
    a = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 30.0]])
    mean, std = _mean_std(a)
    np.testing.assert_allclose(mean, [7 / 3, 20.0])
    np.testing.assert_allclose(std, [np.std([1, 2, 4], ddof=1), 10.0])  # n - 1
    mean, std = _mean_std(a[:1])
    np.testing.assert_array_equal(mean, a[0])
    np.testing.assert_array_equal(std, [0.0, 0.0])  # one seed: no spread
    mean, std = _mean_std(a[:0])
    assert np.isnan(mean).all() and np.isnan(std).all()  # no seed: nothing known


def test_summary_is_the_mean_over_valid_seeds_of_the_task_average():
    per_run = _per_run(CURVES)
    # The tasks differ: the summary averages over them first.
    per_run["rel_l2"][:, :, 1] *= 3
    # MAML's seed 2 diverged in meta-training: its values are NaN and it is left out.
    valid = np.ones((3, 3), dtype=bool)
    valid[1, 2] = False
    for values in per_run.values():
        values[~valid] = np.nan
    results = summarise(_config(), INITS, per_run, valid=valid)
    curve = {e["steps"]: e["rel_l2"] for e in results["curves"]["maml"]}
    task_mean = (np.array(CURVES["maml"])[:2] * (1 + 3)) / 2  # (2 valid seeds, K)
    np.testing.assert_allclose(curve[BUDGET]["mean"], task_mean[:, 1].mean())
    np.testing.assert_allclose(curve[BUDGET]["std"], task_mean[:, 1].std(ddof=1))
    assert all(math.isfinite(e["rel_l2"]["mean"]) for e in results["curves"]["maml"])
    assert results["seeds_used"] == {"random": 3, "maml": 2, "multitask": 3}
    row = next(r for r in results["table"] if r["init"] == "maml")
    assert row["seeds"] == 2
    assert "MAML (2/3 seeds: see diverged)" in results_table(results)
    # The raw measurements keep the NaN as JSON null.
    assert results["per_run"]["rel_l2"][1][2][0] == [None] * 3
    json.dumps(results, allow_nan=False)  # what results.json holds


def test_a_method_with_no_valid_seed_is_non_finite_not_an_error():
    valid = np.ones((3, 3), dtype=bool)
    valid[1] = False
    results = _results(valid=valid)
    assert results["curves"]["maml"][1]["rel_l2"] == {"mean": None, "std": None}
    assert "| MAML (0/3 seeds: see diverged) | 10 | non-finite |" in results_table(results)
    assert any("not comparable (non-finite errors)" in line for line in results["verdict"])


def test_tasks_outside_the_training_range_are_reported_apart():
    config = _config(test_params=[0.03, 0.09])  # 0.09 > 0.05, the largest training value
    np.testing.assert_array_equal(in_range(config), [True, False])
    per_run = _per_run(CURVES)
    per_run["rel_l2"][:, :, 1] = 7.0
    results = summarise(config, INITS, per_run)
    assert results["curves"]["random"][0]["rel_l2"]["mean"] == pytest.approx(1.0)  # task 0
    out = results["out_of_range"]
    assert out["tasks"] == ["nu=0.09"] and out["steps"] == [0, 10, 100]
    assert all(r["rel_l2"][k]["mean"] == 7.0 for r in out["rows"] for k in ("0", "10", "100"))
    assert "Outside the training range (extrapolation): nu=0.09" in to_markdown(results)
    # A single training value: nothing to set the extrapolation apart from.
    assert in_range(_config(train_params=[0.02], tasks_per_step=1)).all()


def test_plain_adam_summary_averages_the_in_range_tasks_over_valid_seeds():
    config = _config(test_params=[0.03, 0.09])
    rel = np.array([[[0.5, 9.0], [0.7, 9.0], [np.nan, 9.0]]])  # (I=1, S=3, N=2)
    valid = np.array([[True, True, False]])
    summary = plain_adam_summary(config, ("random",), rel, valid, 1e-3)
    assert summary["steps"] == BUDGET and summary["lr"] == 1e-3
    assert summary["rel_l2"]["random"]["mean"] == pytest.approx(0.6)
    assert summary["rel_l2"]["random"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))


# ---------------------------------------------------------------------------------------
# Steps to a target error and the speed-ups.


def test_steps_to_a_target_is_the_first_recorded_step_at_or_below_it():
    curve = np.array([0.9, 0.5, 0.4, 0.45])
    steps = (0, 10, 100, 1000)
    assert _steps_to(curve, steps, 0.5) == 10  # equal to the target counts
    assert _steps_to(curve, steps, 0.42) == 100  # the first, not the last, below it
    assert _steps_to(curve, steps, 0.95) == 0
    assert _steps_to(curve, steps, 0.3) is None  # never reached
    assert _steps_to(np.array([np.nan, 0.2]), (0, 10), 0.5) == 10  # NaN never reaches


def test_speedup_is_random_inits_steps_over_the_methods():
    assert _speedup(100, 10, 1000) == {"value": 10.0, "relation": "="}
    assert _speedup(None, 10, 1000) == {"value": 100.0, "relation": ">"}  # a lower bound
    assert _speedup(100, None, 1000) == {"value": None, "relation": "not reached"}
    assert _speedup(100, 0, 1000) == {"value": None, "relation": "no steps needed"}
    assert _speedup(0, 0, 1000) == {"value": 1.0, "relation": "="}


def test_steps_to_each_target_read_from_the_mean_curves():
    results = _results()
    cell = {(r["init"], r["eps"]): r for r in results["steps_to_eps"]}
    assert cell["random", 0.5]["steps"] == 100 and "speedup" not in cell["random", 0.5]
    assert cell["random", 0.05]["steps"] is None
    assert cell["maml", 0.5] == {
        "eps": 0.5,
        "init": "maml",
        "steps": 10,
        "speedup": {"value": 10.0, "relation": "="},
    }
    assert cell["maml", 0.05]["steps"] == 100
    assert cell["maml", 0.05]["speedup"] == {"value": 1.0, "relation": ">"}
    assert cell["multitask", 0.05]["speedup"]["relation"] == "not reached"
    table = steps_to_eps_table(results)
    assert "| Random init | 100 | > 100 |" in table
    assert "| MAML | 10 (10×) | 100 (> 1×) |" in table
    assert "| Multi-task | 10 (10×) | > 100 (not reached) |" in table


# ---------------------------------------------------------------------------------------
# The verdict.


def test_beats_only_by_more_than_the_seed_spread():
    assert compare_errors(0.3, 0.1, 0.9, 0.1, "X") == "beats X (0.3 vs 0.9)"
    # Lower, but by less than the spreads together: not "beats".
    within = compare_errors(0.3, 0.1, 0.35, 0.03, "X")
    assert not within.startswith("beats") and "within the seed spread" in within
    assert within == "is lower than X but within the seed spread (0.3 vs 0.35)"
    level = compare_errors(0.5, 0.0, 0.5, 0.0, "X")
    assert level == "does not beat X (0.5 vs 0.5) (within the seed spread)"
    assert compare_errors(0.4, 0.01, 0.3, 0.01, "X") == "does not beat X (0.4 vs 0.3)"
    assert compare_errors(0.31, 0.01, 0.3, 0.01, "X").endswith("(within the seed spread)")
    assert compare_errors(math.nan, 0.0, 0.3, 0.0, "X") == "X: not comparable (non-finite errors)"


def test_verdict_lines():
    (line,) = _results()["verdict"]  # one line per meta-learner (baselines have none)
    parts = line.removesuffix(".").split("; ")
    assert parts == [
        "MAML + 10 steps does not beat random init + 100 steps (0.3 vs 0.1)",
        "is lower than multi-task + 10 but within the seed spread (0.3 vs 0.35)",
        "beats random init + 10 (0.3 vs 0.9)",
    ]
    # No line calls a result within the spread a win.
    assert not any(p.startswith("beats") and "within" in p for p in parts)


def test_verdict_of_a_run_with_only_baselines():
    # No meta-learner: each baseline is judged against random init (and the others).
    config = _config(methods=["multitask"], overrides=[])
    inits = ("random", "multitask")
    per_run = {k: v[[0, 2]] for k, v in _per_run(CURVES).items()}
    (line,) = summarise(config, inits, per_run)["verdict"]
    assert line == (
        "Multi-task + 10 steps does not beat random init + 100 steps "
        "(0.35 vs 0.1); beats random init + 10 (0.35 vs 0.9)."
    )


def test_verdict_of_one_seed_and_of_diverged_seeds():
    one = {k: [v[0]] for k, v in CURVES.items()}
    verdict = _results(_config(seeds=[0]), curves=one)["verdict"]
    assert verdict[0].startswith("One seed: no comparison below can be judged")
    # One seed has no spread: every lower error "beats".
    assert "beats multi-task + 10 (0.2 vs 0.32)" in verdict[1]
    valid = np.ones((3, 3), dtype=bool)
    valid[1, 0] = False
    (line,) = _results(valid=valid)["verdict"]
    assert line.endswith("[1 of 3 seeds diverged in meta-training]")


# ---------------------------------------------------------------------------------------
# Amortisation.


def test_payoff_is_training_seconds_over_seconds_saved_per_task():
    assert payoff(30.0, 10, 100, 1000, 0.01) == {
        "saved_seconds": pytest.approx(0.9),
        "tasks": pytest.approx(30 / 0.9),
        "relation": "=",
    }
    # Random init never gets there: the longest adaptation stands for it, a lower
    # bound on the saving, so the task count is an upper bound.
    bound = payoff(30.0, 10, None, 1000, 0.01)
    assert bound["tasks"] == pytest.approx(30 / 9.9) and bound["relation"] == "<"
    nothing = {"saved_seconds": None, "tasks": None, "relation": "="}
    assert payoff(30.0, None, 100, 1000, 0.01) == nothing  # never gets there itself
    assert payoff(30.0, 100, 100, 1000, 0.01) == nothing  # saves no step
    assert payoff(30.0, 200, 100, 1000, 0.01) == nothing  # needs more steps
    assert payoff(30.0, 10, 100, 1000, math.nan) == nothing


def test_amortisation_counts_training_per_seed_with_its_warm_start_source():
    results = _results()
    assert amortisation(results) == []  # no timing: nothing to say
    assert amortisation_table(results) == ""
    results["timing"] = {
        "adaptation_step_seconds": 0.01,
        "training_seconds": {"maml": 30.0, "multitask": 60.0},  # all 3 seeds
    }
    rows = {(r["init"], r["eps"]): r for r in amortisation(results)}
    # MAML starts from multi-task's result: 10 s + 20 s per seed.
    maml = rows["maml", 0.5]
    assert maml["training_seconds"] == 30.0 and (maml["steps"], maml["random_steps"]) == (10, 100)
    assert maml["saved_seconds"] == pytest.approx(0.9)
    assert maml["tasks"] == pytest.approx(30 / 0.9) and maml["relation"] == "="
    # Random init never gets to 0.05 within 100 steps; MAML needs all 100: no saving.
    assert rows["maml", 0.05]["tasks"] is None and rows["maml", 0.05]["steps"] == 100
    assert rows["multitask", 0.5]["tasks"] == pytest.approx(20 / 0.9)
    assert rows["multitask", 0.05]["steps"] is None
    table = amortisation_table(results)
    assert "| MAML | 30 s | 33.3 | no saving |" in table
    assert "| Multi-task | 20 s | 22.2 | never |" in table


# ---------------------------------------------------------------------------------------
# What is written and printed.


def test_results_md_and_the_printed_summary():
    results = _results()
    results["timing"] = {
        "adaptation_step_seconds": 0.01,
        "training_seconds": {"maml": 30.0, "multitask": 60.0},
        "evaluation_seconds": 5.0,
    }
    markdown = to_markdown(results)
    assert markdown.startswith("# metapinn results: synthetic\n")
    assert "- MAML + 10 steps does not beat random init + 100 steps" in markdown
    assert "| MAML | 10 | 0.03 ± 0.01 | 0.003 ± 0.001 | 0.3 ± 0.1 |" in markdown
    assert "## Amortisation" in markdown and "one adaptation step: 10 ms" in markdown
    assert "- MAML: init = multitask." in markdown  # its own settings
    printed = format_summary(results)
    assert printed.startswith("Few-shot results on 2 held-out tasks of the burgers family")
    assert "Verdict at 10 steps (rel-L2):" in printed
    assert "Quick run" not in printed and "quick run" not in markdown


def test_a_quick_run_says_so_in_its_titles():
    assert not is_quick(_config().to_dict())
    results = _results(_config(name="W3-quick"))
    assert is_quick(results["config"])
    title = to_markdown(results).splitlines()[0]
    assert title == "# metapinn results: W3-quick (quick run: a smoke test, not meaningful numbers)"
    printed = format_summary(results).splitlines()[0]
    assert printed.startswith("Quick run (a smoke test, not meaningful numbers). Few-shot")


def test_the_command_names_a_quick_run_so():
    from metapinn._cli import _config_for_run, build_parser

    def config_of(*argv):
        return _config_for_run(build_parser().parse_args(["reproduce", *argv]), {})

    assert config_of("--workload", "W1", "--quick").name == "W1-quick"
    assert config_of("--workload", "W1").name == "W1"
    assert config_of("--workload", "W1", "--quick", "--name", "mine").name == "mine-quick"
    assert config_of("--workload", "W1", "--quick", "--name", "mine-quick").name == "mine-quick"


def test_diverged_runs_are_listed():
    valid = np.ones((3, 3), dtype=bool)
    valid[1, 1] = False
    diverged = [
        {"method": "multitask", "seed": 1, "step": 4, "tasks": ["nu=3e+38"]},
        {"method": "maml", "seed": 1, "source": "multitask", "step": None, "tasks": []},
    ]
    results = _results(valid=valid, diverged=diverged)
    printed = format_summary(results)
    assert "- Multi-task, seed 1: non-finite loss at meta-step 4 (tasks: nu=3e+38)" in printed
    assert "- MAML, seed 1: not trained, as its warm-start source multitask diverged" in printed


# ---------------------------------------------------------------------------------------
# The ablation's rows.


def test_step_seconds_leave_out_the_first_step_of_each_segment():
    # A run stopped after 3 steps and resumed: its clock starts again.
    assert step_seconds([5.0, 5.5, 6.5, 4.0, 4.25]) == [0.5, 1.0, 0.25]
    assert step_seconds([3.0]) == [] and step_seconds([]) == []


def test_an_ablation_cell_row_from_its_results(tmp_path):
    config = _config(methods=["maml"], overrides=[])
    curves = {**CURVES, "multitask": CURVES["maml"]}
    results = summarise(config, INITS, _per_run(curves))
    results["timing"] = {"training_seconds": {"maml": 12.5}}
    cell = Cell("maml-k5", {"method": "maml", "inner_steps": 5}, config, tmp_path, None, None)
    row = cell_row_of(cell, results, times=[0.2, 0.4, 0.3], memory={
        "temp_bytes": 3 * 2**20, "argument_bytes": 2**19, "output_bytes": 0})  # fmt: skip
    assert row["cell"] == "maml-k5" and row["label"] == "MAML" and row["inner_steps"] == 5
    assert row["meta_step_seconds"] == pytest.approx(0.3)  # the median
    assert (row["temp_mib"], row["argument_mib"]) == (3.0, 0.5)
    assert row["rel_l2"]["10"]["mean"] == pytest.approx(0.3)
    assert set(row["rel_l2"]) == {"0", "10", "100"}
    assert row["random_rel_l2"]["10"]["mean"] == pytest.approx(0.9)
    assert row["steps_to_eps"] == {"0.5": 10, "0.05": 100}
    assert row["training_seconds"] == 12.5 and row["seeds"] == 3
    none = cell_row_of(cell, results, times=[], memory=None)
    assert none["meta_step_seconds"] is None and none["temp_mib"] is None


def test_an_ablation_row_reads_each_evaluation_adapter_after_its_last_step(tmp_path):
    from metapinn._experiment._ablation_report import ablation_table, to_csv
    from metapinn._experiment._adapter_evaluation import AdapterMeasures

    config = _config(methods=["maml"], overrides=[])
    curves = {**CURVES, "multitask": CURVES["maml"]}
    results = summarise(config, INITS, _per_run(curves))
    results["timing"] = {"training_seconds": {"maml": 1.0}}
    # Gauss-Newton from maml: 0.6 -> 0.01 in 3 steps (2 s); from random: worse.
    rel = np.array([[1.0, 1.2], [0.6, 0.01], [0.7, 0.1]])[:, None, None, :]
    rel = np.repeat(np.repeat(rel, 3, axis=1), 2, axis=2)
    seconds = np.broadcast_to(np.array([0.0, 2.0]), rel.shape)
    gn = AdapterMeasures("gauss-newton", INITS, (0, 3), rel, seconds, rel, True)
    results["adapters"] = adapter_summary(config, [gn], np.ones((3, 3), bool))
    cell = Cell("maml-k5", {"method": "maml", "inner_steps": 5}, config, tmp_path, None, None)
    row = cell_row_of(cell, results, times=[0.2], memory=None)
    assert row["adapters"]["gauss-newton"] == {
        "steps": 3, "rel_l2": {"mean": pytest.approx(0.01), "std": 0.0}, "seconds": 2.0,
        "worse_than_start": False,
    }  # fmt: skip
    table = ablation_table({"rows": [row], "columns": ["method"], "budget": BUDGET})
    assert "rel-L2, 3 gauss-newton steps (s)" in table and "0.01 ± 0 (2 s)" in table
    assert "gauss-newton_rel_l2_mean" in to_csv({"rows": [row], "columns": ["method"]})


def test_wall_clock_figure_draws_each_initialisation_and_adapter_from_the_results():
    from metapinn._experiment._adapter_evaluation import AdapterMeasures
    from metapinn.experiment import wall_clock_figure

    config = _config(methods=["maml"], overrides=[])
    results = summarise(config, INITS, _per_run(CURVES))
    # Per seed (3) and task (2): the tasks differ by a factor 3, seed 2 of MAML diverged.
    rel = np.array([[1.0, 0.5], [0.6, 0.01], [0.7, 0.1]])[:, None, None, :]
    rel = np.repeat(np.repeat(rel, 3, axis=1), 2, axis=2) * np.array([1.0, 3.0])[:, None]
    rel[1, 2] = np.nan
    seconds = np.broadcast_to(np.array([0.0, 2.0]), rel.shape) * np.array([1.0, 2.0])[:, None]
    gn = AdapterMeasures("gauss-newton", INITS, (0, 3), rel, seconds, rel, True)
    valid = np.ones((3, 3), bool)
    valid[1, 2] = False
    results["adapters"] = adapter_summary(config, [gn], valid)
    results = json.loads(json.dumps(results))  # as read back from results.json
    (ax,) = wall_clock_figure(results).get_axes()
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert sorted(lines) == [f"{m} · Gauss–Newton" for m in ("MAML", "Multi-task", "Random init")]
    maml = lines["MAML · Gauss–Newton"]
    np.testing.assert_allclose(maml.get_xdata(), [0.0, 3.0])  # tasks' mean seconds
    np.testing.assert_allclose(maml.get_ydata(), [0.6 * 2, 0.01 * 2])  # mean of 1x and 3x
    assert ax.get_xlim()[0] == 0.0 and ax.get_yscale() == "log"
    with pytest.raises(KeyError):
        wall_clock_figure({k: v for k, v in results.items() if k != "adapters"})


def test_every_adapter_is_reported_on_each_out_of_range_task():
    from metapinn._experiment._adapter_evaluation import AdapterMeasures
    from metapinn._experiment._report import out_of_range_adapter_table

    config = _config(test_params=[0.03, 0.08])  # 0.08: above the training values
    results = summarise(config, INITS, _per_run(CURVES))
    # Gauss-Newton at k = 0 and 3: in range 0.5 -> 0.1, outside 0.75 -> 0.5.
    rel = np.empty((3, 3, 2, 2))
    rel[:, :, 0] = [0.5, 0.1]
    rel[:, :, 1] = [0.75, 0.5]
    rel[1, 1, 1, 1], rel[1, 2, 1, 1] = 0.75, 0.25  # MAML's seeds: 0.5, 0.75, 0.25
    seconds = np.broadcast_to(np.array([0.0, 1.0]), rel.shape)
    gn = AdapterMeasures("gauss-newton", INITS, (0, 3), rel, seconds, rel, True)
    results["adapters"] = adapter_summary(config, [gn], np.ones((3, 3), bool))
    table = out_of_range_adapter_table(json.loads(json.dumps(results)))
    assert "| MAML · Gauss–Newton | nu=0.08 | 0.75 ± 0 | 0.5 ± 0.25 |" in table
    assert "nu=0.03" not in table  # in range: in the averages, not here
    assert "## Outside the training range" in to_markdown(results)
    assert "| Random init · Gauss–Newton | nu=0.08 |" in to_markdown(results)
    assert out_of_range_adapter_table(_results()) == ""  # every task in range
