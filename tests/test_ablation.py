"""`metapinn ablate`: grids are checked before anything trains; a tiny grid runs end to
end, is resumed after a kill and reuses its finished cells; the per-method
`inner_remat` setting changes how a meta-gradient is computed, not its value."""

import json

import numpy as np
import pytest

import metapinn as mp
from metapinn._cli import main
from metapinn._experiment._ablation_grid import parse_vary
from metapinn._experiment._ablation_report import to_csv


TINY = {
    "width": 8, "depth": 1, "n_interior": 24, "n_initial": 8, "n_boundary": 4,
    "meta_steps": 4, "checkpoint_every": 2, "seeds": [0], "eval_steps": [0, 3, 6],
    "budget": 3, "eps": [0.9, 0.5],
    # MAML starts from multi-task pre-training, as in W3: a source shared by the cells.
    "overrides": ["maml.init=multitask", "multitask.meta_steps=3", "multitask.outer_lr=0.01"],
}  # fmt: skip


def tiny_grid(**vary):
    return mp.experiment.make_grid({"workload": "W1", "settings": TINY}, vary=list(vary.items()))


# ---------------------------------------------------------------------------------------
# Grids and their errors (no training).


def test_grid_cells_take_their_values_and_share_one_source(tmp_path):
    grid = mp.experiment.make_grid(
        {"workload": "W3", "vary": {"method": ["maml", "reptile"], "inner_steps": [1, 20]}}
    )
    cells = grid.cells(tmp_path)
    assert [c.name for c in cells] == [
        "maml_inner_steps=1", "maml_inner_steps=20", "reptile_inner_steps=1",
        "reptile_inner_steps=20",
    ]  # fmt: skip
    for cell in cells:
        (method,) = cell.config.methods
        settings = cell.config.method_settings(method)
        assert settings["inner_steps"] == cell.values["inner_steps"]
        # W3's own settings of the method stay: Adam inner loops at 1e-3, its budget.
        assert settings["inner_optimizer"] == "adam" and settings["inner_lr"] == 1e-3
        assert settings["meta_steps"] == {"maml": 25, "reptile": 60}[method]
        # It starts from the one multi-task pre-training of the grid.
        assert cell.source.methods == ("multitask",)
        assert settings["init"] == f"{cell.source_dir}:multitask"
        assert cell.source.method_settings("multitask")["meta_steps"] == 2000
    assert len({c.source_dir for c in cells}) == 1
    # A run-wide axis changes the network, so each value has its own source.
    wide = mp.experiment.make_grid(
        {"workload": "W3"}, vary=[("method", ["maml"]), ("width", [32, 64])]
    )
    assert len({c.source_dir for c in wide.cells(tmp_path)}) == 2


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"vary": {"inner_stepz": [1, 2], "method": ["maml"]}}, "unknown grid key 'inner_stepz'"),
        ({"vary": {"method": ["maml"], "inner_steps": []}}, "'inner_steps' has no values"),
        ({"vary": {"method": ["maml"], "inner_steps": [5, 5]}}, "lists a value twice"),
        ({"vary": {"method": ["maml"], "inner_steps": 5}}, "give a list of values"),
        ({"vary": {"method": ["maml"], "inner_lr": ["fast"]}}, "expected a number"),
        ({"vary": {"inner_steps": [1, 2]}}, "needs the 'method'"),
        ({"vary": {"method": ["mamll"]}}, "grid cell mamll: unknown method 'mamll'"),
        # iMAML adapts every parameter: not with ANIL's last-layer inner loop.
        ({"vary": {"method": ["imaml"], "adapt": ["all", "last-layer"]}},
         "grid cell imaml_adapt=last-layer: .*iMAML adapts every parameter"),
        ({"vary": {"method": ["multitask"], "inner_steps": [1, 2]}},
         "grid cell multitask_inner_steps=1: .*multitask has no inner loop"),
        ({"vary": {"method": ["maml"], "inner_remat": ["sqrt", "log"]}},
         "inner_remat='log' is invalid"),
        ({"vary": {"method": ["maml"], "inner_steps": [-1]}}, "inner_steps=-1 is invalid"),
        ({"settings": {"methods": ["maml"]}, "vary": {"method": ["maml"]}}, "vary method"),
        ({"settings": {"widht": 3}, "vary": {"method": ["maml"]}}, "unknown config key"),
        ({"workload": "W9", "vary": {"method": ["maml"]}}, "unknown workload 'W9'"),
        # Warm starts are checked as in one run: the same network, no transfer.
        ({"workload": "W3", "vary": {"method": ["cond-maml"], "init": ["multitask"]}},
         "grid cell cond-maml_init=multitask: .*train different networks"),
        ({"workload": "W3", "vary": {"method": ["maml"], "init": ["transfer"]}},
         "grid cell maml_init=transfer: .*transfer"),
    ],
)  # fmt: skip
def test_a_bad_grid_is_refused_before_anything_is_written(tmp_path, data, match):
    out = tmp_path / "grid"
    with pytest.raises(mp.experiment.GridError, match=match):
        mp.experiment.run_ablation(mp.experiment.make_grid(data), out)
    assert not out.exists()


def test_vary_flags_and_grid_files(tmp_path, monkeypatch):
    assert parse_vary("inner_steps=1,5,20") == ("inner_steps", [1, 5, 20])
    assert parse_vary("inner-lr=1e-3, 0.01") == ("inner_lr", [1e-3, 0.01])
    assert parse_vary("resample=on,off") == ("resample", [True, False])
    for item, match in [
        ("inner_steps", "write KEY=V1,V2"),
        ("inner_steps=", "give one or more values"),
        ("inner_steps=1,,2", "give one or more values"),
        ("inner_steps=1,two", "inner_steps takes a int, got 'two'"),
        ("colour=red", "unknown grid key 'colour'"),
    ]:
        with pytest.raises(mp.experiment.GridError, match=match):
            parse_vary(item)
    toml = tmp_path / "grid.toml"
    toml.write_text(
        'workload = "W1"\nfamily = "heat"\n[settings]\nseeds = [0, 1]\n'
        '[vary]\nmethod = ["maml", "fomaml"]\ninner_steps = [1, 5]\n'
    )
    grid = mp.experiment.make_grid(
        mp.experiment.read_grid_file(toml), vary=[parse_vary("inner_steps=2,3,4")]
    )
    assert grid.base.family == "heat" and grid.base.seeds == (0, 1)
    assert dict(grid.axes) == {"method": ("maml", "fomaml"), "inner_steps": (2, 3, 4)}
    assert len(grid.cells(tmp_path)) == 6
    # Flags win over the file: the family, then the settings after --quick.
    data = mp.experiment.read_grid_file(toml)
    data["settings"]["family"] = "wave"
    grid = mp.experiment.make_grid(data, family="convection", settings={"seeds": [3]}, quick=True)
    assert (grid.base.family, grid.base.name, grid.base.seeds) == (
        "convection",
        "W1-convection-quick",  # a quick grid is named so, as a quick run is
        (3,),
    )
    assert grid.base.meta_steps == 20  # --quick's, after the file's settings
    assert mp.experiment.make_grid(data).base.family == "wave"
    with pytest.raises(mp.experiment.GridError, match="--vary method is given twice"):
        mp.experiment.make_grid(data, vary=[("method", ["maml"]), ("method", ["reptile"])])
    # A cell's sources are named by absolute paths, wherever the grid is run from.
    w3 = mp.experiment.make_grid({"workload": "W3", "vary": {"method": ["maml"]}})
    monkeypatch.chdir(tmp_path)
    assert w3.cells("g")[0].config == w3.cells(tmp_path / "g")[0].config
    bad = tmp_path / "bad.json"
    bad.write_text('{"vary": {"method": ["maml"]}, "colour": 1}')
    with pytest.raises(mp.experiment.GridError, match=r"unknown key\(s\) \['colour'\]"):
        mp.experiment.read_grid_file(bad)
    bad.write_text("{not json")
    with pytest.raises(mp.experiment.GridError, match="does not parse"):
        mp.experiment.read_grid_file(bad)
    with pytest.raises(mp.experiment.GridError, match="does not exist"):
        mp.experiment.read_grid_file(tmp_path / "missing.json")


def test_cli_refuses_a_bad_grid_with_exit_2(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["ablate", "--vary", "method=maml", "--vary", "inner_stepz=1", "--out",
              str(tmp_path / "g")])  # fmt: skip
    assert exit_info.value.code == 2
    assert "unknown grid key 'inner_stepz'" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()


# ---------------------------------------------------------------------------------------
# The `inner_remat` setting.


def test_inner_remat_setting_reaches_the_learner_and_is_resumable():
    plain = mp.experiment.workload("W3")
    config = plain.replace(
        overrides=[*plain.overrides, "maml.inner_remat=sqrt", "reptile.inner_remat=7"]
    )
    assert config.method("maml").meta_learner().inner_remat == "sqrt"
    assert config.method("reptile").meta_learner().inner_remat == 7
    assert config.method("fomaml").meta_learner().inner_remat is None
    # It changes how the meta-gradient is computed, not what: not a training setting,
    # so a run resumes under another value.
    assert config.method("maml").run_settings(config, 0) == plain.method("maml").run_settings(
        plain, 0
    )
    with pytest.raises(mp.experiment.ConfigError, match="inner_remat='sometimes' is invalid"):
        mp.experiment.workload("W1", inner_remat="sometimes")
    with pytest.raises(mp.experiment.ConfigError, match="maml's inner_remat='0' is invalid"):
        mp.experiment.workload("W1", overrides=["maml.inner_remat=0"])
    with pytest.raises(mp.experiment.ConfigError, match="multitask has no inner loop"):
        mp.experiment.workload("W1", overrides=["multitask.inner_remat=sqrt"])


# ---------------------------------------------------------------------------------------
# A tiny grid, end to end.


@pytest.mark.e2e
def test_tiny_grid_runs_resumes_after_a_kill_and_reuses_finished_cells(tmp_path, capsys):
    """Two cells of second-order MAML, with and without a checkpointed inner loop,
    from one shared multi-task source: killed in the first cell, resumed, then run
    once more (every cell reused). The two cells reduce to the same computation, so
    their errors agree to rounding."""
    grid = tiny_grid(method=["maml"], inner_steps=[3], inner_remat=["none", "2"])
    out = tmp_path / "grid"
    quiet = {"progress": False, "plots": False, "log": lambda _: None}
    cells = grid.cells(out)
    source = cells[0].source_dir / "train" / "multitask" / "seed0"
    first = cells[0].folder / "train" / "maml" / "seed0"
    # Killed after 2 meta-steps of the first run that trains: the source's.
    with pytest.raises(mp.RunInterrupted):
        mp.experiment.run_ablation(grid, out, stop_after=2, **quiet)
    assert (source / "checkpoint.npz").exists() and not cells[0].folder.exists()
    with pytest.raises(FileExistsError, match="resume"):
        mp.experiment.run_ablation(grid, out, **quiet)
    other = mp.experiment.make_grid({"workload": "W1", "settings": {**TINY, "width": 9}},
                         vary=list(dict(grid.axes).items()))  # fmt: skip
    with pytest.raises(mp.experiment.GridError, match=r"another base: width \(stored 8, given 9\)"):
        mp.experiment.run_ablation(other, out, resume=True, **quiet)
    # Resumed: the source finishes, then the first cell is killed in its turn.
    with pytest.raises(mp.RunInterrupted):
        mp.experiment.run_ablation(grid, out, resume=True, stop_after=2, **quiet)
    assert (first / "checkpoint.npz").exists() and not (out / "ablation.json").exists()

    lines = []
    results = mp.experiment.run_ablation(grid, out, resume=True, progress=False, plots=False,
                              log=lines.append)  # fmt: skip
    # Each killed run continued from its checkpoint (at step 2), not from scratch.
    for folder, steps in ((source, 3), (first, 4)):
        rows = [json.loads(r) for r in (folder / "metrics.jsonl").read_text().splitlines()]
        assert [r["step"] for r in rows] == list(range(steps))
    assert any("MAML, seed 0: 2 meta-steps" in line for line in lines)
    assert len(list((out / "sources").iterdir())) == 1

    (a, b) = results["rows"]
    assert (a["inner_remat"], b["inner_remat"]) == ("none", "2")
    for k in ("0", "3", "6"):
        np.testing.assert_allclose(a["rel_l2"][k]["mean"], b["rel_l2"][k]["mean"], rtol=1e-4)
    for row, cell in zip(results["rows"], cells, strict=True):
        own = json.loads((cell.folder / "results.json").read_text())
        (entry,) = [r for r in own["table"] if r["init"] == "maml"]
        assert row["rel_l2"]["3"] == entry["rel_l2"]
        assert row["temp_mib"] > 0 and row["meta_step_seconds"] > 0 and row["seeds"] == 1
    assert to_csv(results).count("\n") == 3
    assert (out / "ablation.csv").read_text() == to_csv(results)
    assert "| MAML | 3 | none |" in (out / "ablation.md").read_text()

    # Once more, from the command line with the grid stored in the folder: every cell
    # is reused, nothing trained or evaluated again.
    stamp = [(c.folder / "results.json").stat().st_mtime_ns for c in cells]
    csv_text = (out / "ablation.csv").read_text()
    capsys.readouterr()
    assert main(["ablate", "--out", str(out), "--resume", "--no-progress", "--no-plots"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("finished before, reused") == 2
    assert "| MAML | 3 | none |" in printed and "| MAML | 3 | 2 |" in printed
    assert [(c.folder / "results.json").stat().st_mtime_ns for c in cells] == stamp
    assert (out / "ablation.csv").read_text() == csv_text


def test_ablation_plot_draws_every_line():
    x = np.array([1.0, 5.0, 20.0])
    series = {
        name: {"x": x, "rel_l2": 0.1 / x, "rel_l2_std": 0.01 / x, "seconds": x, "temp_mib": x}
        for name in ("MAML", "Reptile")
    }
    fig = mp.experiment.plot_ablation(series, "inner_steps", 100, random=0.5)
    axes = fig.get_axes()
    assert len(axes) == 3
    assert [len(ax.get_lines()) for ax in axes] == [3, 2, 2]
