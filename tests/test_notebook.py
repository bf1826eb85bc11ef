"""The tutorial notebooks run at quick size, and each `.ipynb` matches its `.py` source."""

import math
import pathlib
import runpy

import pytest


NOTEBOOKS = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ("tutorial", "own_family", "few_shot_w3")


@pytest.fixture
def quick_env(tmp_path, monkeypatch):
    monkeypatch.setenv("METAPINN_QUICK", "1")
    monkeypatch.setenv("METAPINN_CACHE", str(tmp_path / "reference-cache"))
    return tmp_path


@pytest.mark.slow  # 13-18 s: the default run stays under 10 minutes on 2 cores
def test_tutorial_runs_at_quick_size(quick_env):
    namespace = runpy.run_path(str(NOTEBOOKS / "tutorial.py"), run_name="__main__")
    assert namespace["QUICK"]
    rel_l2 = namespace["rel_l2"]
    assert rel_l2.shape == (5, 1, 2, 3)  # init, seed, held-out nu, k
    assert (rel_l2 > 0).all() and (rel_l2 < 10).all()


@pytest.mark.slow  # about 2 minutes: the main experiment on a family of its own
def test_own_family_notebook_runs_at_quick_size(quick_env):
    import metapinn as mp

    # The notebook names its family from its own namespace, registering nothing.
    before = dict(mp.FAMILIES)
    namespace = runpy.run_path(str(NOTEBOOKS / "own_family.py"), run_name="__main__")
    assert mp.FAMILIES == before
    assert namespace["QUICK"]
    results = namespace["results"]
    assert results["family"] == "drift-diffusion"
    assert results["inits"] == ["random", "multitask", "reptile", "cond-multitask"]
    for init in results["inits"]:
        rel = [entry["rel_l2"]["mean"] for entry in results["curves"][init]]
        assert all(math.isfinite(v) and 0 < v < 10 for v in rel), (init, rel)


@pytest.mark.slow  # about 3 minutes: the main job at smoke size
def test_few_shot_w3_notebook_runs_at_quick_size(quick_env):
    namespace = runpy.run_path(str(NOTEBOOKS / "few_shot_w3.py"), run_name="__main__")
    assert namespace["QUICK"]
    results = namespace["results"]
    assert results["inits"][0] == "random" and "cond-multitask" in results["inits"]
    assert "transfer" in results["inits"] and len(results["test_tasks"]) == 2
    for init in results["inits"]:
        rel = [namespace["rel_l2"](init, k) for k in results["steps"]]
        assert all(math.isfinite(v) and 0 < v < 10 for v in rel), (init, rel)


@pytest.mark.parametrize("name", NAMES)
def test_ipynb_is_the_py_source(name):
    """The committed `.ipynb` is `jupytext --to ipynb notebooks/NAME.py`, unexecuted."""
    jupytext = pytest.importorskip("jupytext")
    source = jupytext.read(NOTEBOOKS / f"{name}.py")
    paired = jupytext.read(NOTEBOOKS / f"{name}.ipynb")
    cells = lambda nb: [(c.cell_type, c.source) for c in nb.cells]
    assert cells(paired) == cells(source)
    assert all(not c.get("outputs") for c in paired.cells if c.cell_type == "code")


@pytest.mark.slow
def test_ipynb_executes_in_a_kernel(quick_env):
    nbclient = pytest.importorskip("nbclient")
    jupytext = pytest.importorskip("jupytext")
    notebook = jupytext.read(NOTEBOOKS / "tutorial.ipynb")
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": quick_env}}
    )
    client.execute()
    images = [
        output
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(images) >= 4  # meta-training, few-shot, per-viscosity, fields
