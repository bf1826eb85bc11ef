"""The results of an ablation grid: one row per cell (its error against the reference
at the few-shot budget, steps to each target, meta-step time and memory), as JSON,
Markdown and CSV, and the plots against the grid's numeric axis."""

import csv
import io
import pathlib
import statistics
from typing import Any

import numpy as np

from .._checkpoint import atomic_write, write_json, write_text
from ._ablation_grid import METHOD_KEY, AblationGrid, Cell
from ._methods import label as method_label
from ._report import _fmt, _md_table


def step_seconds(clock: list[float]) -> list[float]:
    """The wall time of each meta-step from a run's clock, the `seconds` of each line
    of its metrics file: the differences between successive readings. The first step
    of each (resumed) segment, which compiles, is left out: a segment starts where
    the clock goes back."""
    out = []
    previous = None
    for seconds in clock:
        if previous is not None and seconds >= previous:
            out.append(seconds - previous)
        previous = seconds
    return out


def cell_row_of(
    cell: Cell,
    results: dict[str, Any],
    *,
    times: list[float],
    memory: dict[str, int] | None,
) -> dict[str, Any]:
    """One cell's row: its values; the rel-L2 error (mean ± std over seeds of the mean
    over the in-range held-out tasks) at k = 0, at the budget and at the last step;
    steps to each target; the median meta-step time; XLA's memory of its meta-step;
    random init's rel-L2 at the budget, from the same evaluation; and, for each
    evaluation adapter, its rel-L2 after its last step with that step's mean seconds
    and whether it ended worse than it started.

    **Arguments:** the cell; its results (as [`metapinn.experiment.reproduce`][] returns them);
    `times`, the wall time of each of its meta-steps; `memory`, XLA's memory analysis
    of its meta-step (`None` where the backend gives none)."""
    config = cell.config
    curves = results["curves"]
    method = cell.method
    steps = results["steps"]
    budget = config.budget

    def rel(init: str, k: int) -> dict[str, float | None]:
        return curves[init][steps.index(k)]["rel_l2"]

    return {
        "cell": cell.name,
        **cell.values,
        "label": method_label(method),
        "seeds": results["seeds_used"][method],
        "rel_l2": {str(k): rel(method, k) for k in sorted({steps[0], budget, steps[-1]})},
        "random_rel_l2": {str(k): rel("random", k) for k in sorted({budget, steps[-1]})},
        "steps_to_eps": {
            str(r["eps"]): r["steps"] for r in results["steps_to_eps"] if r["init"] == method
        },
        "meta_step_seconds": statistics.median(times) if times else None,
        "training_seconds": results["timing"]["training_seconds"].get(method),
        "temp_mib": None if memory is None else memory["temp_bytes"] / 2**20,
        "argument_mib": None if memory is None else memory["argument_bytes"] / 2**20,
        "inner_steps": config.method_settings(method)["inner_steps"],
        "inner_remat": config.method_settings(method)["inner_remat"],
        "meta_steps": config.method_settings(method)["meta_steps"],
        "adapters": {
            name: _last_step(a, method)
            for name, a in (results.get("adapters") or {}).items()
            if name != "adam"  # the Adam columns are the cell's others
        },
    }


def _last_step(adapter: dict[str, Any], method: str) -> dict[str, Any]:
    """An adapter's reading of `method` after its last step."""
    (row,) = [r for r in adapter["rows"] if r["init"] == method]
    last = row["rel_l2"][-1]
    return {
        "steps": last["steps"],
        "rel_l2": {"mean": last["mean"], "std": last["std"]},
        "seconds": last["seconds"],
        "worse_than_start": row["worse_than_start"],
    }


def _columns(grid: AblationGrid, rows: list[dict[str, Any]]) -> list[str]:
    keys = [k for k, _ in grid.axes]
    return keys + [k for k in ("inner_steps", "meta_steps") if k not in keys]


def ablation_table(results: dict[str, Any]) -> str:
    """The Markdown table of the cells."""
    rows = results["rows"]
    keys = results["columns"]
    budget = str(results["budget"])
    ks = list(rows[0]["rel_l2"]) if rows else []
    eps = list(rows[0]["steps_to_eps"]) if rows else []
    adapters = {n: a["steps"] for n, a in (rows[0].get("adapters") or {}).items()} if rows else {}
    header = [*keys, *[f"rel-L2, k = {k}" for k in ks], *[f"steps to {e}" for e in eps],
              *[f"rel-L2, {k} {n} steps (s)" for n, k in adapters.items()],
              "meta-step (s)", "XLA temp (MiB)", "seeds"]  # fmt: skip
    body = []
    for r in rows:
        line = [method_label(r[k]) if k == METHOD_KEY else str(r[k]) for k in keys]
        line += [("**" + _fmt(r["rel_l2"][k]) + "**") if k == budget else _fmt(r["rel_l2"][k])
                 for k in ks]  # fmt: skip
        line += ["—" if r["steps_to_eps"][e] is None else str(r["steps_to_eps"][e]) for e in eps]
        for name in adapters:
            a = (r.get("adapters") or {}).get(name)
            if a is None:  # a cell evaluated without it
                line.append("—")
                continue
            seconds = "" if a["seconds"] is None else f" ({a['seconds']:.3g} s)"
            line.append(_fmt(a["rel_l2"]) + seconds + (" ▲" if a["worse_than_start"] else ""))
        t = r["meta_step_seconds"]
        m = r["temp_mib"]
        line += [
            "—" if t is None else f"{t:.3g}",
            "—" if m is None else f"{m:.1f}",
            str(r["seeds"]),
        ]
        body.append(line)
    return _md_table(header, body)


def to_markdown(results: dict[str, Any]) -> str:
    base = results["base"]
    rows = results["rows"]
    lines = [
        f"# Ablation on {base['name']} ({base['family']})",
        "",
        f"Command: `{results['command']}`" if results.get("command") else "",
        "",
        (
            f"{len(rows)} cells"
            if len(rows) == results.get("cells", len(rows))
            else f"{len(rows)} of the grid's {results['cells']} cells (the others not finished)"
        )
        + f" over {', '.join(results['varied']) or 'nothing'}; "
        f"{len(base['seeds'])} seeds ({', '.join(map(str, base['seeds']))}). Each cell is a "
        "run folder trained and evaluated by `metapinn reproduce`'s pipeline: rel-L2 against "
        "the reference, mean ± std over seeds of the mean over the in-range held-out tasks, "
        f"after k steps of the common adaptation (budget k = {results['budget']}, in bold). "
        "Meta-step: median wall time of a step (compilation left out); XLA temp: the "
        "temporary bytes of the compiled meta-step (`memory_analysis`).",
        "",
        ablation_table(results),
        "",
    ]
    if rows:
        random = rows[0]["random_rel_l2"]
        lines.append(
            "Random init, same evaluation: "
            + "; ".join(f"k = {k}: {_fmt(v)}" for k, v in random.items())
            + "."
        )
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"


def to_csv(results: dict[str, Any]) -> str:
    """One line per cell; each error as a mean and a std column."""
    rows = results["rows"]
    keys = results["columns"]
    ks = list(rows[0]["rel_l2"]) if rows else []
    eps = list(rows[0]["steps_to_eps"]) if rows else []
    header = ["cell", *keys]
    for k in ks:
        header += [f"rel_l2_k{k}_mean", f"rel_l2_k{k}_std"]
    header += [f"steps_to_{e}" for e in eps]
    adapters = list(rows[0].get("adapters") or {}) if rows else []
    for name in adapters:
        header += [f"{name}_rel_l2_mean", f"{name}_rel_l2_std", f"{name}_seconds", f"{name}_steps"]
    header += ["meta_step_seconds", "training_seconds", "temp_mib", "argument_mib", "seeds"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for r in rows:
        line = [r["cell"], *[r[k] for k in keys]]
        for k in ks:
            line += [r["rel_l2"][k]["mean"], r["rel_l2"][k]["std"]]
        line += [r["steps_to_eps"][e] for e in eps]
        for name in adapters:
            a = (r.get("adapters") or {}).get(name)
            line += [None] * 4 if a is None else [
                a["rel_l2"]["mean"], a["rel_l2"]["std"], a["seconds"], a["steps"]]  # fmt: skip
        line += [r["meta_step_seconds"], r["training_seconds"], r["temp_mib"], r["argument_mib"],
                 r["seeds"]]  # fmt: skip
        writer.writerow(["" if v is None else v for v in line])
    return buffer.getvalue()


def _numeric_axis(grid: AblationGrid) -> str | None:
    """The axis the plots put on x: the first varied one with numbers (inner_steps
    if it is varied)."""
    varied = [k for k, v in grid.axes if len(v) > 1 and k != METHOD_KEY]
    numeric = [k for k in varied if all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                        for v in dict(grid.axes)[k])]  # fmt: skip
    if "inner_steps" in numeric:
        return "inner_steps"
    return numeric[0] if numeric else None


def write_ablation(
    grid: AblationGrid,
    cells: list[Cell],
    rows: list[dict[str, Any]],
    out_dir: pathlib.Path,
    *,
    plots: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Write `ablation.json`, `ablation.md`, `ablation.csv` and `plots/ablation.png`.

    **Returns:** the results (as in `ablation.json`)."""
    results = {
        "cells": len(cells),
        "base": grid.base.to_dict(),
        "vary": {k: list(v) for k, v in grid.axes},
        "varied": list(grid.varied),
        "columns": _columns(grid, rows),
        "budget": grid.base.budget,
        "command": command,
        "rows": rows,
    }
    write_json(out_dir / "ablation.json", results)
    write_text(out_dir / "ablation.md", to_markdown(results))
    write_text(out_dir / "ablation.csv", to_csv(results))
    x_key = _numeric_axis(grid)
    if plots and x_key is not None and rows:
        from .._plots import plot_ablation

        lines: dict[str, list[dict[str, Any]]] = {}
        others = [k for k, v in grid.axes if k != x_key and len(v) > 1]
        for r in rows:
            name = ", ".join(
                method_label(r[k]) if k == METHOD_KEY else f"{k}={r[k]}" for k in others
            )
            lines.setdefault(name or method_label(r[METHOD_KEY]), []).append(r)
        series = {
            label: {
                "x": np.array([r[x_key] for r in group], dtype=np.float64),
                "rel_l2": np.array(
                    [_nan(r["rel_l2"][str(grid.base.budget)]["mean"]) for r in group]
                ),
                "rel_l2_std": np.array(
                    [_nan(r["rel_l2"][str(grid.base.budget)]["std"]) for r in group]
                ),
                "seconds": np.array([_nan(r["meta_step_seconds"]) for r in group]),
                "temp_mib": np.array([_nan(r["temp_mib"]) for r in group]),
            }
            for label, group in lines.items()
        }
        random = _nan(rows[0]["random_rel_l2"][str(grid.base.budget)]["mean"])
        fig = plot_ablation(series, x_key, grid.base.budget, random)
        plot_dir = out_dir / "plots"
        plot_dir.mkdir(exist_ok=True)
        atomic_write(
            plot_dir / "ablation.png", lambda f: fig.savefig(f, format="png", dpi=110), True
        )
    return results


def _nan(v: float | None) -> float:
    return np.nan if v is None else float(v)


def format_ablation(results: dict[str, Any]) -> str:
    """The printed summary: the table and random init's error."""
    return to_markdown(results).split("\n", 2)[2].strip()
