"""The report of an experiment: the tables (Markdown), the definitions beside them and
the printed summary, from the numbers of `_summary`."""

from typing import Any

import numpy as np

from ._config import ExperimentConfig, fields_with_role
from ._methods import cg_steps_of, label
from ._scratch import against_scratch
from ._summary import _mean_std, _stat, amortisation, training_per_seed
from ._workloads import QUICK_SUFFIX


QUICK_NOTE = "a smoke test, not meaningful numbers"


def is_quick(config: dict[str, Any]) -> bool:
    """Whether a run's settings (`config.json`, or a results file's `"config"`) are a
    quick run's (its name ends in `QUICK_SUFFIX`)."""
    return str(config.get("name", "")).endswith(QUICK_SUFFIX)


def out_of_range_table(results: dict[str, Any]) -> str:
    """The out-of-range table (Markdown), or "" when every held-out task is in range."""
    out = results.get("out_of_range")
    if not out:
        return ""
    rows = [
        [results["labels"][r["init"]]] + [_fmt(r["rel_l2"][str(k)]) for k in out["steps"]]
        for r in out["rows"]
    ]
    return _md_table(["Initialisation"] + [f"rel-L2, k = {k}" for k in out["steps"]], rows)


def out_of_range_adapter_table(results: dict[str, Any]) -> str:
    """Every (initialisation, adapter) pair on each held-out task outside the training
    range (Markdown; "" when every task is in range or the run has no adapters): the
    rel-L2 after each of the adapter's step counts, mean ± spread over the valid seeds.
    Per task, not averaged: extrapolating to either side differs too much to share a
    mean."""
    adapters = results.get("adapters")
    inside = np.asarray(results.get("in_range", []), dtype=bool)
    if not adapters or inside.all():
        return ""
    tasks = [(n, name) for n, name in enumerate(results["test_tasks"]) if not inside[n]]
    steps = sorted({k for data in adapters.values() for k in data["steps"]})
    rows = []
    for adapter, data in adapters.items():
        rel = np.asarray(data["per_run_rel_l2"], dtype=np.float64)  # (row, seed, task, k)
        for i, row in enumerate(data["rows"]):
            for n, name in tasks:
                values = rel[i, :, n]  # (seed, k)
                values = values[np.isfinite(values).all(axis=1)]
                cells = []
                for k in steps:
                    if k not in data["steps"] or not len(values):
                        cells.append("")
                        continue
                    mean, std = _mean_std(values[:, [data["steps"].index(k)]])
                    cells.append(_fmt(_stat(mean[0], std[0])))
                label = f"{results['labels'][row['init']]} · {adapter_short(adapter)}"
                rows.append([label, name, *cells])
    return _md_table(["Initialisation · adapter", "task", *(f"k = {k}" for k in steps)], rows)


ADAPTER_SHORT = {"adam": "Adam", "gauss-newton": "Gauss–Newton", "lbfgs": "L-BFGS"}
"""The evaluation adapters' short names, for table rows and legends."""


def task_names(results: dict[str, Any]) -> list[str]:
    """The held-out tasks' labels of a results file (older ones: the viscosities)."""
    if "test_tasks" in results:
        return list(results["test_tasks"])
    return [f"nu={nu:.4g}" for nu in results["test_nus"]]


def plain_adam_table(results: dict[str, Any]) -> str:
    """The plain-Adam comparison (Markdown), or "" if the run's schedule is plain Adam."""
    plain = results.get("plain_adam")
    if not plain:
        return ""
    kb = results["config"]["budget"]
    rows = []
    for init in results["inits"]:
        if init not in plain["rel_l2"]:
            continue  # a learned rule's row: its initialisation is its method's
        scheduled = next(e for e in results["curves"][init] if e["steps"] == kb)["rel_l2"]
        rows.append([results["labels"][init], _fmt(scheduled), _fmt(plain["rel_l2"][init])])
    header = ["Initialisation", f"rel-L2, {kb} steps, this run's schedule",
              f"rel-L2, {kb} steps, plain Adam at {plain['lr']:g}"]  # fmt: skip
    return _md_table(header, rows)


def _fmt(stat: dict[str, float | None]) -> str:
    if stat["mean"] is None:
        return "non-finite"
    if stat["std"] is None:
        return f"{stat['mean']:.3g}"
    return f"{stat['mean']:.3g} ± {stat['std']:.2g}"


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _speedup_text(s: dict[str, Any]) -> str:
    if s["relation"] == "=":
        return f"{s['value']:.3g}×"
    if s["relation"] == ">":
        return f"> {s['value']:.3g}×"
    return s["relation"]


def results_table(results: dict[str, Any]) -> str:
    """The main table (Markdown): method, steps, loss, residual, relative L2 error."""
    total = len(results["seeds"])
    rows = []
    for r in results["table"]:
        name = r["method"]
        if r.get("seeds", total) < total:
            name += f" ({r['seeds']}/{total} seeds: see diverged)"
        rows.append(
            [name, str(r["steps"]), _fmt(r["loss"]), _fmt(r["rms_residual"]), _fmt(r["rel_l2"])]
        )
    header = ["Method", "Steps", "PINN loss", "PDE residual (RMS)", "rel-L2 vs reference"]
    return _md_table(header, rows)


def error_at_table(results: dict[str, Any]) -> str:
    """rel-L2 of every initialisation with no adaptation, after the budget and after the
    longest adaptation (Markdown)."""
    steps = results["steps"]
    picks = [k for k in dict.fromkeys((steps[0], results["config"]["budget"], steps[-1]))]
    rows = []
    for init in results["inits"]:
        curve = {e["steps"]: e for e in results["curves"][init]}
        rows.append([results["labels"][init]] + [_fmt(curve[k]["rel_l2"]) for k in picks])
    return _md_table(["Initialisation"] + [f"rel-L2, k = {k}" for k in picks], rows)


def adapter_tables(results: dict[str, Any]) -> list[str]:
    """One table per adapter of every (initialisation, adapter) pair, at steps and
    seconds (Markdown lines; none for results without them)."""
    adapters = results.get("adapters") or {}
    lines = []
    for name, a in adapters.items():
        eps = [e["eps"] for e in a["rows"][0]["seconds_to_eps"]] if a["rows"] else []
        header = ["Initialisation"] + [f"k = {k}" for k in a["steps"]]
        header += [f"seconds to rel-L2 ≤ {e:g}" for e in eps]
        body = []
        for r in a["rows"]:
            cells = [results["labels"].get(r["init"], r["init"])]
            for e in r["rel_l2"]:
                cell = _fmt({"mean": e["mean"], "std": e["std"]})
                if e["seconds"] is not None and e["steps"]:
                    cell += f" ({e['seconds']:.3g} s)"
                cells.append(cell + (" ▲" if e["worse"] else ""))
            for t in r["seconds_to_eps"]:
                if t["max"] is not None:
                    cells.append(f"{t['max']:.3g} s (mean {t['mean']:.3g})")
                else:
                    cells.append(f"{t['reached']}/{t['runs']} reach it")
            body.append(cells)
        how = (
            "each held-out task adapted and timed alone, compilation excluded"
            if a["timed"]
            else "seconds: steps × the measured seconds of one step of the row's network"
        )
        flagged = [results["labels"].get(r["init"], r["init"]) for r in a["rows"]
                   if r["worse_than_start"]]  # fmt: skip
        lines += [
            f"### {adapter_title(name)}",
            "",
            f"rel-L2 after k steps, mean ± spread over seeds (mean seconds of adaptation; {how}). "
            "▲: worse than before any step. Seconds to a target: the slowest (seed, task) "
            "run's, with the mean, when every run reaches it within the steps read."
            + (
                f" **Worse at the end than at the start:** {', '.join(flagged)}." if flagged else ""
            ),
            "",
            _md_table(header, body),
            "",
        ]
    return lines


ADAPTER_TITLES = {
    "adam": "Adam (the common schedule)",
    "gauss-newton": "Gauss–Newton (Levenberg–Marquardt, matrix-free CG)",
    "lbfgs": "L-BFGS (zoom line search)",
}


def adapter_title(name: str) -> str:
    """An evaluation adapter's section title; a Gauss–Newton variant's names its CG
    iterations a step."""
    cg = cg_steps_of(name)
    if cg is not None:
        return f"Gauss–Newton (Levenberg–Marquardt, matrix-free CG, at most {cg} iterations a step)"
    return ADAPTER_TITLES.get(name, name)


def adapter_short(name: str) -> str:
    """An evaluation adapter's short name, for table rows and legends."""
    cg = cg_steps_of(name)
    return f"Gauss–Newton, {cg} CG" if cg is not None else ADAPTER_SHORT.get(name, name)


def _target(eps: float) -> str:
    """A target error as a column names it (not "ε": a family's parameter may be ε)."""
    return f"rel-L2 ≤ {eps:g}"


def amortisation_table(results: dict[str, Any]) -> str:
    """The amortisation rows as Markdown: tasks after which training has paid off."""
    rows = amortisation(results)
    if not rows:
        return ""
    eps = list(dict.fromkeys(r["eps"] for r in rows))
    inits = list(dict.fromkeys(r["init"] for r in rows))
    cell = {(r["init"], r["eps"]): r for r in rows}
    body = []
    for init in inits:
        line = [results["labels"][init], f"{cell[init, eps[0]]['training_seconds']:.0f} s"]
        for e in eps:
            r = cell[init, e]
            if r["tasks"] is None:
                line.append("never" if r["steps"] is None else "no saving")
            else:
                line.append(("< " if r["relation"] == "<" else "") + f"{r['tasks']:.3g}")
        body.append(line)
    header = ["Initialisation", "training per seed"]
    header += [f"tasks to pay off, {_target(e)}" for e in eps]
    return _md_table(header, body)


def _source_name(source: Any) -> str:
    return source["file"] if isinstance(source, dict) else str(source)


def _cores_note(sources: list[Any]) -> str:
    """Where a scratch file says on how many cores its solves ran: a sentence saying
    so (the adapters were timed on this run's machine, every core free to them)."""
    notes = [
        f"`{s['file']}` timed its solves on {s['cores']} core(s)"
        for s in sources
        if isinstance(s, dict) and s.get("cores") is not None
    ]
    if not notes:
        return ""
    return (
        " " + "; ".join(notes) + ", while the adapters ran with every core of this run's "
        "machine free to them: on fewer cores the solves from scratch are slower, so the "
        "savings are larger and the tasks to pay off fewer than on equal hardware."
    )


def scratch_table(results: dict[str, Any]) -> str:
    """Each trained initialisation with its fastest adapter against solving the
    in-range held-out tasks from scratch (`results["scratch"]`), as Markdown: seconds
    to each target, the tasks after which training has paid off, and both errors at
    the adaptation's wall-clock; "" without scratch solves."""
    rows = against_scratch(results, training_per_seed(results))
    if not rows:
        return ""

    def seconds(v: float | None) -> str:
        return "never" if v is None else f"{v:.3g} s"

    def cell(r: dict[str, Any]) -> str:
        scratch = seconds(r["scratch_seconds"])
        if r["scratch_before"] is not None and r["scratch_before"] < r["scratch_seconds"]:
            scratch = f"{r['scratch_before']:.3g}–{scratch}"
        if r["adapter"] is None:
            return f"no adapter takes every run there (from scratch: {scratch})"
        text = f"{adapter_short(r['adapter'])} {seconds(r['adapt_seconds'])} vs {scratch}"
        if r["per_task"]:
            return f"{text} (trained per held-out task)"
        if r["tasks"] is not None:
            most = r["tasks_at_most"]
            if most is None:
                return f"{text}: pays off after {r['tasks']:.3g} tasks or more"
            if f"{most:.3g}" == f"{r['tasks']:.3g}":
                return f"{text}: pays off after {r['tasks']:.3g} tasks"
            return f"{text}: pays off after {r['tasks']:.3g}–{most:.3g} tasks"
        if r["scratch_seconds"] is None:
            return f"{text}: from scratch never gets there within its steps"
        return f"{text}: no saving"

    inits = list(dict.fromkeys(r["init"] for r in rows))
    targets = list(dict.fromkeys(r["eps"] for r in rows))
    by = {(r["init"], r["eps"]): r for r in rows}
    body = []
    for init in inits:
        first = by[init, targets[0]]
        then = (
            f"{adapter_short(first['closest_adapter'])}: {first['adapted_rel_l2']:.2g} after "
            f"{first['adapt_total_seconds']:.3g} s; from scratch "
            f"{first['scratch_then']['rel_l2']:.2g} after {first['scratch_then']['seconds']:.3g} s"
        )
        body.append([results["labels"][init], f"{first['training_seconds']:.0f} s",
                     *[cell(by[init, e]) for e in targets], then])  # fmt: skip
    header = ["Initialisation", "training per seed"]
    header += [f"{_target(e)}: fastest adapter vs from scratch (mean seconds)" for e in targets]
    header += ["lowest rel-L2 at the last step read; from scratch once as long spent"]
    return _md_table(header, body)


def steps_to_eps_table(results: dict[str, Any]) -> str:
    """Steps to each target error, and the speed-up over random init (Markdown)."""
    inits, eps = results["inits"], results["config"]["eps"]
    cell = {(r["init"], r["eps"]): r for r in results["steps_to_eps"]}
    rows = []
    for init in inits:
        row = [results["labels"][init]]
        for e in eps:
            r = cell[init, e]
            k = f"> {results['steps'][-1]}" if r["steps"] is None else str(r["steps"])
            row.append(k if init == "random" else f"{k} ({_speedup_text(r['speedup'])})")
        rows.append(row)
    return _md_table(["Initialisation"] + [_target(e) for e in eps], rows)


def _weights_text(c: dict[str, Any]) -> str:
    """The loss weights, when they are not all 1 (configs written before the setting
    existed have none)."""
    weights = tuple(c.get("loss_weights", (1.0, 1.0, 1.0)))
    if weights == (1.0, 1.0, 1.0):
        return ""
    return (
        " Every loss weights its residual, initial and boundary terms by "
        + ", ".join(f"{w:g}" for w in weights)
        + "."
    )


def to_markdown(results: dict[str, Any]) -> str:
    """`results.md`: every table of a run, with the definitions."""
    c = results["config"]
    n_seeds, steps, labels = len(results["seeds"]), results["steps"], results["labels"]
    tasks = task_names(results)
    inside = results.get("in_range", [True] * len(tasks))
    shown = ", ".join(t for t, i in zip(tasks, inside, strict=True) if i)
    n_train = len(c.get("train_params") or c.get("train_nus") or ()) or c.get("n_train_tasks")
    family = results.get("family") or c.get("family", "burgers")
    quick_run = f" (quick run: {QUICK_NOTE})" if is_quick(c) else ""
    out = [
        f"# metapinn results: {c['name']}{quick_run}",
        "",
        f"{len(c['methods'])} methods meta-trained for {c['meta_steps']} outer steps "
        f"(K = {c['inner_steps']} inner {c['inner_optimizer']} steps at {c['inner_lr']:g}; "
        f"outer Adam at {c['outer_lr']:g}"
        f"{', cosine-decayed' if c.get('outer_schedule') == 'cosine' else ''}; "
        f"{c['tasks_per_step']} of "
        f"{n_train} training tasks of the {family} family per step), from the random "
        f"initialisation of each seed ({', '.join(map(str, results['seeds']))}), unless "
        "a method's own settings below say otherwise. Each initialisation is then "
        f"adapted with {schedule_text(c)} on the held-out tasks {shown}, on "
        f"the same {c['n_interior']}/{c['n_initial']}/{c['n_boundary']}-per-side "
        "collocation points (one fixed draw). Meta-training points: "
        + ("re-sampled every meta-step." if c.get("resample") else "that same fixed draw.")
        + _weights_text(c),
        "",
        *_method_lines(results),
        f"Values: mean ± sample standard deviation over {n_seeds} seed(s) of the average "
        "over those held-out tasks. *PINN loss*: the training objective on the "
        "collocation points. *PDE residual*: RMS of the PDE residual on the "
        "256 × 101 reference grid. *rel-L2*: ‖u_PINN − u_ref‖₂ / ‖u_ref‖₂ on that grid, "
        "against the reference solution.",
        "",
        f"## Results after {c['budget']} adaptation steps",
        "",
        results_table(results),
        "",
        *_out_of_range_lines(results),
        "## Verdict (relative L2 error, means over seeds)",
        "",
        *[f"- {line}" for line in results["verdict"]],
        "",
        *_diverged_lines(results),
        "## rel-L2 before adaptation, at the budget and at the longest adaptation",
        "",
        error_at_table(results),
        "",
        "## Steps to a target rel-L2 (speed-up over random init)",
        "",
        "The fewest recorded steps k whose seed-and-task-averaged rel-L2 is ≤ the target "
        f"(k is read only at {steps}); speed-up = random init's steps ÷ the method's.",
        "",
        steps_to_eps_table(results),
        "",
    ]
    tables = adapter_tables(results)
    if tables:
        out += ["## Every initialisation with every adapter, at steps and seconds", "", *tables]
    table = plain_adam_table(results)
    if table:
        out += [
            "## The same budget with plain Adam (the W1 adaptation)",
            "",
            f"{schedule_text(c)} is this run's schedule; plain Adam at 1e-3 from a fresh "
            "state, for comparability with W1, overshoots from a good start.",
            "",
            table,
            "",
        ]
    table = scratch_table(results)
    if table:
        sources = ", ".join(f"`{_source_name(n)}`" for n in results["scratch"]["sources"])
        out += [
            "## Against solving each task from scratch",
            "",
            "Each trained initialisation with the adapter that takes all its (seed, task) "
            "runs to the target soonest on average, against `metapinn solve` from scratch (the "
            f"family's recipe) on the same in-range held-out tasks ({sources}). A scratch "
            "curve is recorded every so many steps, so its seconds to a target are a range: "
            "from the record before the first at or below it to that record (means over the "
            "tasks). Tasks to pay off: training time per seed (any warm-start source's "
            "included) ÷ the mean seconds saved per task, over that range. The last column "
            "sets the adapter with the lowest error after its last step read against the "
            "scratch solves at their first record once they have spent at least as long "
            "(means over tasks and seeds). Compilation is excluded from both clocks."
            f"{_cores_note(results['scratch']['sources'])}",
            "",
            table,
            "",
        ]
    table = amortisation_table(results)
    if table:
        seconds = results["timing"]["adaptation_step_seconds"]
        out += [
            "## Amortisation",
            "",
            "After how many new tasks a trained initialisation has paid for its training "
            "in wall-clock: training time per seed (compilation and any warm-start "
            "source's training included) ÷ the adaptation time it saves per task, to each "
            f"target rel-L2, against random init (one adaptation step: {1e3 * seconds:.3g} ms, "
            "measured in this run). '<': random init never got there, so the saving is "
            "larger than counted.",
            "",
            table,
            "",
        ]
    for name, title in (("rel_l2", "rel-L2 vs reference"), ("loss", "PINN loss"),
                        ("rms_residual", "PDE residual (RMS)")):  # fmt: skip
        rows = [
            [labels[i]] + [_fmt(e[name]) for e in results["curves"][i]] for i in results["inits"]
        ]
        out += [f"## Few-shot curve: {title} after k steps", "",
                _md_table(["Initialisation"] + [f"k={k}" for k in steps], rows), ""]  # fmt: skip
    rows = [
        [f"{labels[r['init']]} + {r['steps']}"] + [_fmt(s) for s in r["rel_l2"]]
        for r in (results["per_task"] if "per_task" in results else results["per_viscosity"])
    ]
    out += [
        "## rel-L2 per held-out task",
        "",
        _md_table(["Initialisation"] + tasks, rows),
        "",
    ]
    timing = results.get("timing")
    if timing:
        train = ", ".join(
            f"{labels.get(m, m)} {s:.1f} s" for m, s in timing["training_seconds"].items()
        )
        out += [
            "## Cost",
            "",
            f"Meta-training wall time (all seeds, compilation included): {train}. "
            f"Evaluation: {timing['evaluation_seconds']:.1f} s.",
            "",
        ]
    return "\n".join(out)


def schedule_text(c: dict[str, Any]) -> str:
    """The adaptation schedule in words."""
    if c.get("eval_warmup", 0) > 1:
        return (
            f"Adam at {c['eval_lr']:g} after a {c['eval_warmup']}-step linear warm-up from a "
            "fresh state"
        )
    return f"Adam at {c['eval_lr']:g} from a fresh state"


def _method_lines(results: dict[str, Any]) -> list[str]:
    """One line per method whose settings differ from the run-wide ones."""
    config = ExperimentConfig.from_dict(results["config"])
    base = {k: getattr(config, k) for k in fields_with_role("method")}
    lines = []
    for m in config.methods:
        own = config.method_settings(m)
        diff = {k: v for k, v in own.items() if base.get(k) != v and k != "inner_steps"}
        if own["inner_steps"] != base["inner_steps"] and config.method(m).kind.inner_loop:
            diff["inner_steps"] = own["inner_steps"]
        if diff:
            text = ", ".join(f"{k} = {v}" for k, v in diff.items())
            lines.append(f"- {label(m)}: {text}.")
    return ["Methods' own settings:", "", *lines, ""] if lines else []


def _out_of_range_lines(results: dict[str, Any]) -> list[str]:
    table = out_of_range_table(results)
    if not table:
        return []
    tasks = ", ".join(results["out_of_range"]["tasks"])
    lines = [
        f"## Outside the training range (extrapolation): {tasks}",
        "",
        "Not in the averages above: the mean over seeds of the mean over these tasks.",
        "",
        table,
        "",
    ]
    per_adapter = out_of_range_adapter_table(results)
    if per_adapter:
        lines += [
            "Every adapter on each of these tasks: rel-L2 after k steps, mean ± spread over seeds.",
            "",
            per_adapter,
            "",
        ]
    return lines


def _diverged_lines(results: dict[str, Any]) -> list[str]:
    if not results.get("diverged"):
        return []
    lines = ["## Diverged meta-training runs", ""]
    for d in results["diverged"]:
        if d.get("source"):
            what = f"not trained, as its warm-start source {d['source']} diverged"
        else:
            what = (
                f"non-finite loss at meta-step {d['step']} (tasks: "
                f"{'; '.join(d['tasks']) or 'the update'})"
            )
        lines.append(
            f"- {results['labels'][d['method']]}, seed {d['seed']}: {what}; left out of that "
            "method's statistics."
        )
    return [*lines, ""]


def format_summary(results: dict[str, Any]) -> str:
    """What `metapinn reproduce` prints: the main table, steps to a target rel-L2, every
    (initialisation, adapter) pair where the run has adapters, the verdict."""
    c = results["config"]
    quick_run = f"Quick run ({QUICK_NOTE}). " if is_quick(c) else ""
    return "\n".join(
        [
            f"{quick_run}Few-shot results on "
            f"{sum(results.get('in_range', [1] * len(task_names(results))))} "
            f"held-out tasks of the {c.get('family', 'burgers')} family "
            f"({len(results['seeds'])} seeds, mean ± std):",
            "",
            results_table(results),
            "",
            error_at_table(results),
            "",
            "Steps to a target rel-L2 (speed-up over random init):",
            "",
            steps_to_eps_table(results),
            "",
            *(
                ["Tasks after which training has paid off:", "", t, ""]
                if (t := amortisation_table(results))
                else []
            ),
            *(
                ["Against solving each task from scratch:", "", t, ""]
                if (t := scratch_table(results))
                else []
            ),
            *_out_of_range_lines(results),
            *(
                ["Every initialisation with every adapter, at steps and seconds:", "", *t]
                if (t := adapter_tables(results))
                else []
            ),
            f"Verdict at {c['budget']} steps (rel-L2):",
            *[f"- {line}" for line in results["verdict"]],
            "",
            *_diverged_lines(results),
        ]
    ).rstrip()
