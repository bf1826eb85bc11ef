"""The numbers behind an experiment's report, from its measurements: the summaries over
seeds (mean ± sample standard deviation of the average over the in-range held-out
tasks), steps to each target and speed-ups, the out-of-range table, the plain-Adam
comparison, the verdicts (a comparison judged against the seed spread), and the
amortisation of meta-training. Pure NumPy on arrays and plain data; the Markdown is
`_report`'s."""

import math
from collections.abc import Sequence
from typing import Any, cast

import numpy as np

from ._config import ExperimentConfig
from ._methods import CONDITIONED_PREFIX, CURRICULUM, RANDOM, RULE_SUFFIX, TRANSFER, label


def _mean_std(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample standard deviation over axis 0 (NaN if it is empty)."""
    n = a.shape[0]
    if n == 0:
        nan = np.full(a.shape[1:], np.nan)
        return nan, nan
    return a.mean(axis=0), a.std(axis=0, ddof=1 if n > 1 else 0)


def _stat(mean: float | np.ndarray, std: float | np.ndarray) -> dict[str, float | None]:
    def clean(v):
        v = float(v)
        return v if math.isfinite(v) else None

    return {"mean": clean(mean), "std": clean(std)}


def _steps_to(curve: np.ndarray, steps: tuple[int, ...], eps: float) -> int | None:
    reached = np.flatnonzero(curve <= eps)
    return int(steps[reached[0]]) if reached.size else None


def _speedup(k_random: int | None, k_method: int | None, k_max: int) -> dict[str, Any]:
    """Steps random init needs ÷ steps the method needs, with what is known of it."""
    if k_method is None:
        return {"value": None, "relation": "not reached"}
    if k_method == 0:
        if k_random == 0:
            return {"value": 1.0, "relation": "="}
        return {"value": None, "relation": "no steps needed"}
    if k_random is None:
        return {"value": k_max / k_method, "relation": ">"}
    return {"value": k_random / k_method, "relation": "="}


def summarise(
    config: ExperimentConfig,
    inits: tuple[str, ...],
    per_run: dict[str, np.ndarray],
    *,
    valid: np.ndarray | None = None,
    diverged: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """Tables from the raw measurements.

    **Arguments:** the config, the initialisations (`"random"` first), arrays
    `(init, seed, held-out task, k)` named `loss`, `rms_residual`, `rel_l2`, `max_abs`;
    `valid`, `(init, seed)`, false where a meta-training diverged (those seeds are left
    out of that method's statistics), and the `diverged` runs' records.

    **Returns:** plain data: per-`k` curves, the results table, steps to each `eps`
    with speed-ups over random init, per-task errors, and the verdict; where some
    held-out values lie outside the training range, the same table over those
    (extrapolation), reported separately.

    Each summary statistic is the mean over seeds, ± the sample standard deviation
    over seeds, of the average over the held-out tasks in the training range.
    """
    steps = config.eval_steps
    n_i, n_s = len(inits), len(config.seeds)
    valid = np.ones((n_i, n_s), dtype=bool) if valid is None else np.asarray(valid, dtype=bool)
    inside = in_range(config)
    # (I, S, K): averaged over the held-out tasks in the training range.
    per_seed = {name: a[:, :, inside].mean(axis=2) for name, a in per_run.items()}
    stats = {  # name -> (mean, std), each (I, K), over the valid seeds of each init
        name: tuple(np.stack(z) for z in zip(*(_mean_std(a[i, valid[i]]) for i in range(n_i)),
                                              strict=True))
        for name, a in per_seed.items()
    }  # fmt: skip
    n_seeds = {init: int(valid[i].sum()) for i, init in enumerate(inits)}

    def entry(i: int, k_index: int) -> dict[str, Any]:
        return {
            name: _stat(stats[name][0][i, k_index], stats[name][1][i, k_index])
            for name in ("loss", "rms_residual", "rel_l2", "max_abs")
        }

    curves = {
        init: [{"steps": k, **entry(i, j)} for j, k in enumerate(steps)]
        for i, init in enumerate(inits)
    }
    kb = steps.index(config.budget)
    table = []
    for i, init in list(enumerate(inits))[1:] + [(0, "random")]:
        table.append({"init": init, "method": label(init), "steps": config.budget,
                      "seeds": n_seeds[init], **entry(i, kb)})  # fmt: skip
    if steps[-1] != config.budget:
        table.append({"init": "random", "method": label(RANDOM), "steps": steps[-1],
                      "seeds": n_seeds["random"], **entry(0, len(steps) - 1)})  # fmt: skip

    mean_curve = stats["rel_l2"][0]  # (I, K): over valid seeds and in-range tasks
    steps_to_eps = []
    for eps in config.eps:
        k_random = _steps_to(mean_curve[0], steps, eps)
        for i, init in enumerate(inits):
            k = _steps_to(mean_curve[i], steps, eps)
            row = {"eps": eps, "init": init, "steps": k}
            if init != "random":
                row["speedup"] = _speedup(k_random, k, steps[-1])
            steps_to_eps.append(row)

    rel = per_run["rel_l2"]  # (I, S, N, K)
    picks = [(i, kb) for i in range(n_i)]
    if steps[-1] != config.budget:
        picks.append((0, len(steps) - 1))
    per_task = [
        {
            "init": inits[i],
            "steps": steps[k],
            "rel_l2": [
                _stat(m, s) for m, s in zip(*_mean_std(rel[i, valid[i], :, k]), strict=True)
            ],
        }
        for i, k in picks
    ]
    return {
        "config": config.to_dict(),
        "inits": list(inits),
        "labels": {i: label(i) for i in inits},
        "steps": list(steps),
        "family": config.resolved_family.name,
        "test_params": list(config.test_params),
        "test_tasks": config.held_out_labels(),
        "in_range": inside.tolist(),
        "seeds": list(config.seeds),
        "table": table,
        "curves": curves,
        "steps_to_eps": steps_to_eps,
        "per_task": per_task,
        "out_of_range": _out_of_range(config, inits, per_run, valid, ~inside),
        "verdict": _verdict(config, inits, stats["rel_l2"], n_seeds, n_s),
        "seeds_used": n_seeds,
        "diverged": [
            {k: d.get(k) for k in ("method", "seed", "step", "tasks", "checkpoint_step", "source")}
            for d in diverged
        ],
        "per_run": {name: _json_array(a) for name, a in per_run.items()},
        "per_run_axes": ["init", "seed", "test_task", "steps"],
    }


def in_range(config: ExperimentConfig) -> np.ndarray:
    """Which held-out tasks lie in the training range (`(N,)` bools): a scalar value
    between the smallest and largest training values (with a relative tolerance of
    1e-9); every drawn function (drawn from the training distribution). If no
    held-out value is in that range (e.g. a single training value), every task
    counts as in range: there is nothing to set the extrapolation apart from."""
    if not config.test_params:
        return np.ones(config.n_test, dtype=bool)
    low, high = min(config.train_params), max(config.train_params)
    values = np.asarray(config.test_params)
    inside = (values >= low * (1 - 1e-9)) & (values <= high * (1 + 1e-9))
    return inside if inside.any() else np.ones_like(inside)


def _out_of_range(config, inits, per_run, valid, outside: np.ndarray) -> dict[str, Any] | None:
    """rel-L2 over the held-out tasks outside the training range, at the first step
    count, the budget and the longest adaptation: the mean over seeds, ± their
    spread, of the mean over those tasks; `None` if every task is in range."""
    if not outside.any():
        return None
    steps = config.eval_steps
    picks = list(dict.fromkeys((steps[0], config.budget, steps[-1])))
    rel = per_run["rel_l2"][:, :, outside]  # (I, S, M, K)
    rows = []
    for i, init in enumerate(inits):
        per_seed = rel[i, valid[i]].mean(axis=1)  # (S', K)
        mean, std = _mean_std(per_seed)
        rows.append({"init": init, "rel_l2": {
            str(k): _stat(mean[steps.index(k)], std[steps.index(k)]) for k in picks}})  # fmt: skip
    labels = [lab for lab, out in zip(config.held_out_labels(), outside, strict=True) if out]
    return {"tasks": labels, "steps": picks, "rows": rows}


def plain_adam_summary(
    config: ExperimentConfig, inits, rel: np.ndarray, valid: np.ndarray, lr: float
) -> dict[str, Any]:
    """rel-L2 after the budget with plain Adam at 1e-3 (the W1 adaptation), `rel`
    `(I, S, N)`: the mean over seeds, ± their spread, of the mean over the held-out
    tasks in the training range (as every other summary)."""
    per_seed = rel[:, :, in_range(config)].mean(axis=2)
    return {
        "steps": config.budget,
        "lr": lr,
        "rel_l2": {
            init: _stat(*(float(v[0]) for v in _mean_std(per_seed[i, valid[i]][:, None])))
            for i, init in enumerate(inits)
        },
    }


def _json_array(a: np.ndarray) -> list:
    """Nested lists with `None` for non-finite entries (JSON has no NaN)."""
    return np.where(np.isfinite(a), a, cast(Any, None)).tolist()


def compare_errors(a: float, sa: float, b: float, sb: float, what: str) -> str:
    """One comparison of the verdict: a method's error `a` (± its spread over seeds
    `sa`) against a baseline's `b` (± `sb`), in words.

    It "beats" the baseline only when its error is lower by more than the two spreads
    together (docs/design.md §5); lower but within them, it is not said to beat it.

    **Returns:** e.g. `"beats random init + 100 (0.3 vs 0.6)"`; `"does not beat ..."`,
    with `" (within the seed spread)"` when the errors are that close; `"is lower
    than ... but within the seed spread (...)"`; or "not comparable" where an error
    is not finite."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return f"{what}: not comparable (non-finite errors)"
    numbers = f"({a:.3g} vs {b:.3g})"
    close = abs(a - b) <= sa + sb
    if a < b:
        if close:
            return f"is lower than {what} but within the seed spread {numbers}"
        return f"beats {what} {numbers}"
    return f"does not beat {what} {numbers}" + (" (within the seed spread)" if close else "")


def _verdict(
    config: ExperimentConfig,
    inits,
    rel: tuple[np.ndarray, ...],
    n_seeds: dict[str, int],
    n_total: int,
) -> list[str]:
    """Plain sentences: does each meta-initialisation + budget steps beat random init +
    the longest adaptation, and multi-task + budget steps, in relative L2? A run with
    no meta-learned initialisation (only baselines, e.g. workload A's conditioned PINN)
    has one line per baseline instead, against random init and the other baselines.

    **Arguments:** the config, the initialisations (`"random"` first), the mean and
    the spread over seeds of the rel-L2 error, each `(init, k)`; the seeds each
    initialisation's statistics are over, and the run's number of seeds."""
    mean, std = rel
    steps = config.eval_steps
    kb = steps.index(config.budget)
    lines = []

    def versus(i, j, kj, what):
        a, sa, b, sb = (float(v) for v in (mean[i, kb], std[i, kb], mean[j, kj], std[j, kj]))
        return compare_errors(a, sa, b, sb, what)

    baselines = ("random", "multitask", CONDITIONED_PREFIX + "multitask", TRANSFER, CURRICULUM)
    if n_total == 1:
        lines.append(
            "One seed: no comparison below can be judged against a spread over seeds "
            "(run more, e.g. --seeds 0 1 2)."
        )
    judged = [init for init in inits if init not in baselines]
    if not judged:  # only baselines: each against random init and the others
        judged = [init for init in inits if init != "random"]
    for i, init in enumerate(inits):
        if init not in judged:
            continue
        parts = []
        if steps[-1] != config.budget:
            parts.append(versus(i, 0, len(steps) - 1, f"random init + {steps[-1]} steps"))
        if "multitask" in inits and init != "multitask":
            parts.append(versus(i, inits.index("multitask"), kb, f"multi-task + {config.budget}"))
        if CONDITIONED_PREFIX + "multitask" in inits and init != CONDITIONED_PREFIX + "multitask":
            j = inits.index(CONDITIONED_PREFIX + "multitask")
            if steps[0] == 0:
                parts.append(versus(i, j, 0, "the conditioned PINN zero-shot"))
            parts.append(versus(i, j, kb, f"the conditioned PINN + {config.budget}"))
        if TRANSFER in inits and init != TRANSFER:
            parts.append(versus(i, inits.index(TRANSFER), kb, f"transfer + {config.budget}"))
        if CURRICULUM in inits and init != CURRICULUM:
            parts.append(versus(i, inits.index(CURRICULUM), kb, f"curriculum + {config.budget}"))
        parts.append(versus(i, 0, kb, f"random init + {config.budget}"))
        note = ""
        if n_seeds[init] < n_total:
            note = f" [{n_total - n_seeds[init]} of {n_total} seeds diverged in meta-training]"
        lines.append(f"{label(init)} + {config.budget} steps " + "; ".join(parts) + "." + note)
    return lines


def training_per_seed(results: dict[str, Any]) -> dict[str, float]:
    """Each trained initialisation's training wall-clock per seed, its warm-start
    source's included (a learned rule's row: its method's); `{}` where the results
    hold no training times."""
    train = (results.get("timing") or {}).get("training_seconds") or {}
    if not train:
        return {}
    config = ExperimentConfig.from_dict(results["config"])
    n_seeds = len(results["seeds"])

    def per_seed(init: str) -> float:
        init = init.removesuffix(RULE_SUFFIX)
        own = train.get(init, 0.0) / n_seeds
        source = config.method_settings(init)["init"]
        return own + (per_seed(source) if source in train else 0.0)

    return {init: per_seed(init) for init in results["inits"][1:]}


def amortisation(results: dict[str, Any]) -> list[dict[str, Any]]:
    """After how many new tasks each trained initialisation has paid for its training
    in wall-clock: training seconds per seed (its warm-start source's included) ÷ the
    adaptation seconds it saves per task against random init, to each target rel-L2.

    **Returns:** rows `{init, eps, steps, random_steps, saved_seconds, training_seconds,
    tasks}`; `tasks` is `None` where nothing is saved (or the method never gets there),
    and an upper bound (`"relation": "<"`) where random init never gets there (it saves
    more than counted). One adaptation step costs the plain network's measured time
    for every row (the conditioned network's is within a few per cent: one more input
    column)."""
    timing = results.get("timing") or {}
    step_seconds = timing.get("adaptation_step_seconds")
    per_seed = training_per_seed(results)
    if not step_seconds or not per_seed:
        return []
    config = ExperimentConfig.from_dict(results["config"])
    k_max = results["steps"][-1]
    cell = {(r["init"], r["eps"]): r["steps"] for r in results["steps_to_eps"]}
    rows = []
    for eps in config.eps:
        k_random = cell["random", eps]
        for init in results["inits"][1:]:
            k = cell[init, eps]
            seconds = round(per_seed[init], 2)
            rows.append({"init": init, "eps": eps, "steps": k, "random_steps": k_random,
                         "training_seconds": seconds,
                         **payoff(seconds, k, k_random, k_max, step_seconds)})  # fmt: skip
    return rows


def payoff(
    training_seconds: float, k: int | None, k_random: int | None, k_max: int, step_seconds: float
) -> dict[str, Any]:
    """After how many new tasks a training of `training_seconds` has paid for itself,
    when the method needs `k` adaptation steps to a target and random init `k_random`
    (`None`: not within the longest adaptation, `k_max` steps), each step taking
    `step_seconds`.

    **Returns:** `{saved_seconds, tasks, relation}`: the seconds saved per task,
    `(k_random - k) * step_seconds`, and `tasks = training_seconds / saved_seconds`;
    both `None` where nothing is saved or the method never gets there (`k` is
    `None`). Where random init never gets there, `k_max` stands for its steps: the
    saving is then larger than counted and `tasks` an upper bound (`relation` `"<"`,
    else `"="`)."""
    if k is None:
        return {"saved_seconds": None, "tasks": None, "relation": "="}
    saved = ((k_max if k_random is None else k_random) - k) * step_seconds
    if not saved > 0:
        return {"saved_seconds": None, "tasks": None, "relation": "="}
    relation = "<" if k_random is None else "="
    return {"saved_seconds": saved, "tasks": training_seconds / saved, "relation": relation}


def adapter_summary(
    config: ExperimentConfig, adapters: Sequence[Any], valid: np.ndarray
) -> dict[str, Any]:
    """Every (initialisation, adapter) pair at steps and seconds.

    **Arguments:** the config; the adapters' measurements (each with `adapter`,
    `rows`, `steps`, `timed`, `compile_seconds` and arrays `rel_l2`, `seconds`
    `(row, seed, held-out task, step)`: `_adapter_evaluation.AdapterMeasures`); and
    `valid` `(row, seed)` over the rows of the first.

    **Returns:** `{adapter: {steps, timed, compile_seconds, rows, per_run_rel_l2,
    per_run_seconds}}`; each row `{init, seeds, rel_l2, worse_than_start,
    tasks_worse, tasks, seconds_to_eps}`:

    - `rel_l2`: per step count, the mean over seeds ± their spread of the average over
      the in-range held-out tasks, its `seconds` (the mean over seeds and those tasks)
      and `worse` (that mean above the one before any step);
    - `worse_than_start`: the mean after the last step above the start;
      `tasks_worse` of `tasks`: the (seed, task) runs that end above their start;
    - `seconds_to_eps`: per target of `eps_seconds`, how many (seed, task) runs reach
      it within the steps read (`reached` of `runs`), and the seconds the slowest
      (`max`) and the average (`mean`) of them take (`None` unless all reach it).
    """
    inside = in_range(config)
    out = {}
    for m in adapters:
        rows = []
        for i, row in enumerate(m.rows):
            ok = np.asarray(valid[i], dtype=bool)
            rel = np.asarray(m.rel_l2)[i, ok][:, inside]  # (S', N', K)
            sec = np.asarray(m.seconds)[i, ok][:, inside]
            mean, std = _mean_std(rel.mean(axis=1))
            mean_seconds = sec.mean(axis=(0, 1)) if ok.any() else np.full(len(m.steps), np.nan)
            curve = [
                {"steps": k, **_stat(mean[j], std[j]), "worse": bool(mean[j] > mean[0]),
                 "seconds": _stat(mean_seconds[j], 0.0)["mean"]}
                for j, k in enumerate(m.steps)
            ]  # fmt: skip
            to_eps = []
            for eps in config.eps_seconds:
                hit = rel <= eps
                reached = hit.any(axis=-1)
                first = np.argmax(hit, axis=-1)[..., None]
                seconds = np.take_along_axis(sec, first, axis=-1)[..., 0]
                every = bool(reached.size and reached.all())
                to_eps.append({
                    "eps": eps, "reached": int(reached.sum()), "runs": int(reached.size),
                    "max": float(seconds.max()) if every else None,
                    "mean": float(seconds.mean()) if every else None,
                })  # fmt: skip
            rows.append({
                "init": row, "seeds": int(ok.sum()), "rel_l2": curve,
                "worse_than_start": bool(mean[-1] > mean[0]),
                "tasks_worse": int((rel[..., -1] > rel[..., 0]).sum()),
                "tasks": int(rel[..., 0].size), "seconds_to_eps": to_eps,
            })  # fmt: skip
        out[m.adapter] = {
            "steps": list(m.steps),
            "timed": bool(m.timed),
            "compile_seconds": round(float(m.compile_seconds), 2),
            "rows": rows,
            "per_run_rel_l2": _json_array(np.asarray(m.rel_l2)),
            "per_run_seconds": _json_array(np.asarray(m.seconds)),
        }
    return out
