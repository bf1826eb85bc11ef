"""The run's held-out tasks solved from scratch, and what meta-training saves against it.

A trained initialisation is worth its training only against the best way to solve a
new task without it: `metapinn solve` from scratch, the family's accurate recipe
(`metapinn families --recipes`). Its timed error curves (one `solve.json` per task, or
the file `benchmarks/solve_family.py` writes for every held-out task) are read here,
matched to the run's held-out tasks, and set against each initialisation with its
fastest adapter: the seconds each needs to a target error, and after how many new
tasks the training has paid for itself in wall-clock,

$$ n = \\frac{T_\\text{train}}
         {\\bar t_\\text{scratch}(\\varepsilon) - \\bar t_\\text{adapt}(\\varepsilon)}, $$

with $T_\\text{train}$ the initialisation's training seconds per seed (its warm-start
source's included) and $\\bar t$ the mean over the in-range held-out tasks (and seeds)
of the seconds to rel-L2 $\\le \\varepsilon$. Both clocks exclude compilation; a
scratch curve is recorded every so many steps, so its seconds to a target are those
of the first record at or below it (an overestimate by at most one record's spacing).
"""

import json
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._pde._registry import family as get_family
from ._config import ConfigError, ExperimentConfig
from ._methods import RULE_SUFFIX


SCRATCH_ROW, SCRATCH_ADAPTER = "scratch", "recipe"
"""The from-scratch solves' curve in the error-against-wall-clock figure."""


FROM_SCRATCH = "random (from scratch)"
"""What `metapinn solve` records as the `init` of a solve from scratch."""


def read_scratch(
    paths: str | os.PathLike | Sequence[str | os.PathLike], config: ExperimentConfig
) -> dict[str, Any]:
    """The from-scratch solves in `paths`, one entry per held-out task of `config` they
    cover, in the run's task order.

    **Arguments:** `paths`, one or more JSON files, each either `metapinn solve`'s
    `solve.json` (one task, which must be one of the run's held-out tasks) or a file
    with a `tasks` list of such rows (as `benchmarks/solve_family.py` writes; rows of
    other tasks, e.g. training values solved for the recipe, are passed over, but at
    least one must match); `config`, the run's settings.

    **Returns:** `{"sources": [{"file", "cores"}], "tasks": [{"index", "task_label",
    "steps", "seconds", "rel_l2"}]}`: each file's name and the CPU cores its solves
    ran on (`None` where it does not say), and each curve from step 0 (`index`, the
    held-out task's position in the run).

    **Raises:** [`metapinn.experiment.ConfigError`][], naming the file and the value,
    for a file that is not such JSON, a solve of another family or not from scratch,
    a curve that is not three equally long lists of numbers, a task that is not one
    of the run's held-out tasks, one task given twice, or held-out functions of a
    drawn family other than its standard draws (which `metapinn solve` solves).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    fam = get_family(config.family)
    if not fam.scalar:
        standard = (0, (0, fam.n_train), (0, fam.n_test))
        if (config.tasks_seed, config.n_train_tasks in standard[1],
                config.n_test_tasks in standard[2]) != (0, True, True):  # fmt: skip
            raise ConfigError(
                f"--scratch: this run's {fam.name} tasks are not the family's standard "
                "draws (tasks_seed 0, the standard numbers), which metapinn solve solves"
            )
    values = list(config.test_params or fam.test_values) if fam.scalar else []
    labels = config.held_out_labels()
    found: dict[int, dict[str, Any]] = {}
    sources = []
    for path in paths:
        name = os.fspath(path)
        try:
            with open(name) as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"--scratch {name}: cannot read it as JSON ({e})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--scratch {name}: not a solve.json nor a file of solves")
        if "family" in data and _family_name(data["family"]) != fam.name:
            raise ConfigError(
                f"--scratch {name}: a solve of family {data['family']!r}, not the run's "
                f"{config.family!r}"
            )
        many = "tasks" in data
        rows = data["tasks"] if many else [data]
        if not isinstance(rows, list):
            raise ConfigError(f"--scratch {name}: 'tasks' is not a list of solves")
        matched = 0
        for row in rows:
            if not isinstance(row, dict) or "task" not in row:
                raise ConfigError(f"--scratch {name}: a row without a task")
            if row.get("init", FROM_SCRATCH) != FROM_SCRATCH:
                raise ConfigError(
                    f"--scratch {name}: task {row['task']!r} was adapted from "
                    f"{row['init']!r}, not solved from scratch"
                )
            index = _held_out_index(row["task"], values, config.n_test)
            if index is None:
                if many:
                    continue  # e.g. a training value solved to choose the recipe
                raise ConfigError(
                    f"--scratch {name}: task {row.get('task_label', row['task'])!r} is not "
                    f"one of the run's held-out tasks {labels}"
                )
            if index in found:
                raise ConfigError(f"--scratch {name}: held-out task {labels[index]} is given twice")
            where = f"--scratch {name}, {labels[index]}"
            found[index] = {"index": index, "task_label": labels[index],
                            **_curve(row.get("curve"), where)}  # fmt: skip
            matched += 1
        if not matched:
            raise ConfigError(
                f"--scratch {name}: none of its tasks is one of the run's held-out tasks {labels}"
            )
        machine = data.get("machine")
        cores = machine.get("cores_used") if isinstance(machine, dict) else None
        sources.append({"file": os.path.basename(name), "cores": cores})
    return {"sources": sources, "tasks": [found[i] for i in sorted(found)]}


def _family_name(name: Any) -> Any:
    """A family's own name for `name` (a built-in name or `MODULE:ATTR`), or `name`
    itself where it names none."""
    try:
        return get_family(name).name
    except (ValueError, TypeError):
        return name


def _curve(curve: Any, where: str) -> dict[str, list]:
    """A solve's timed curve, checked: `steps`, `seconds` and `rel_l2`, equally long
    non-empty lists of finite numbers (`rel_l2` may hold a non-finite value where
    the solve diverged)."""
    if not isinstance(curve, dict):
        raise ConfigError(f"{where}: no curve (steps, seconds, rel_l2)")
    out = {}
    for key in ("steps", "seconds", "rel_l2"):
        values = curve.get(key)
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{where}: curve.{key} is not a non-empty list")
        try:
            out[key] = [int(v) if key == "steps" else float(v) for v in values]
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: curve.{key} holds a value that is not a number") from None
    if len({len(v) for v in out.values()}) != 1:
        raise ConfigError(f"{where}: curve.steps, .seconds and .rel_l2 differ in length")
    if not all(math.isfinite(v) for v in out["seconds"]):
        raise ConfigError(f"{where}: curve.seconds holds a value that is not finite")
    return out


def _held_out_index(task: Any, values: list[float], n_test: int) -> int | None:
    """The position of `task` among the held-out `values` (relative tolerance 1e-6),
    or for a family of drawn functions (`values` empty) the index itself."""
    try:
        value = float(task)
    except (TypeError, ValueError):
        return None
    if not values:
        return int(value) if value.is_integer() and 0 <= value < n_test else None
    for i, v in enumerate(values):
        if math.isclose(value, v, rel_tol=1e-6):
            return i
    return None


def seconds_to(seconds: Sequence[float], rel_l2: Sequence[float], eps: float) -> float | None:
    """The seconds at the first record with rel-L2 ≤ `eps`, or `None`."""
    for s, e in zip(seconds, rel_l2, strict=True):
        if e <= eps:
            return float(s)
    return None


def seconds_before(seconds: Sequence[float], rel_l2: Sequence[float], eps: float) -> float | None:
    """The seconds at the record before the first with rel-L2 ≤ `eps` (the solve got
    there after this and by `seconds_to`), or `None` if none gets there."""
    for i, e in enumerate(rel_l2):
        if e <= eps:
            return float(seconds[max(i - 1, 0)])
    return None


def first_record_after(
    seconds: Sequence[float], rel_l2: Sequence[float], at: float
) -> tuple[float, float]:
    """`(seconds, rel_l2)` of the first record at or after `at` seconds (the last
    record if none is): how far a solve had got once it had spent that much time,
    to the resolution of its records."""
    for s, e in zip(seconds, rel_l2, strict=True):
        if s >= at:
            return float(s), float(e)
    return float(seconds[-1]), float(rel_l2[-1])


def against_scratch(results: dict[str, Any], training_per_seed: dict[str, float]) -> list[dict]:
    """Each trained initialisation with its fastest adapter against solving the same
    in-range held-out tasks from scratch (`results["scratch"]`), per target of
    `eps_seconds`.

    **Arguments:** `results`, a run's results with `adapters` and `scratch`;
    `training_per_seed`, each initialisation's training seconds per seed (its
    warm-start source's included).

    **Returns:** rows `{init, eps, adapter, adapt_seconds, scratch_seconds,
    scratch_before, training_seconds, per_task, tasks, tasks_at_most,
    closest_adapter, adapted_rel_l2, adapt_total_seconds, scratch_then}`:

    - `adapter`: of those read, the one whose (seed, task) runs all reach `eps`
      soonest on average (`None` if none takes every run there), and
      `adapt_seconds`, that mean;
    - `scratch_seconds`: the mean over the solves from scratch of the seconds at
      their first record at or below `eps`, and `scratch_before` at the record
      before it (the solves got there in between; `None`: not every solve gets
      there);
    - `tasks`: the new tasks after which training has paid off, training seconds
      per seed ÷ (`scratch_seconds` − `adapt_seconds`), and `tasks_at_most` the same
      with `scratch_before` (`None` where nothing is saved): the range the records
      allow. `None` too for a row trained once per held-out task (`per_task`:
      transfer, curriculum), whose training is not shared by new tasks;
    - `closest_adapter`: the adapter with the lowest mean rel-L2 after its last step
      read, that error (`adapted_rel_l2`) and its mean seconds by then; and
      `scratch_then`, `{seconds, rel_l2}`: the scratch solves' mean rel-L2 at their
      first record once they have spent at least as long, and that record's mean
      seconds.

    `[]` without scratch solves of the in-range held-out tasks or without adapters.
    """
    scratch = results.get("scratch") or {}
    inside = np.asarray(results.get("in_range") or [True] * len(results["test_tasks"]), bool)
    tasks = [t for t in scratch.get("tasks", []) if inside[t["index"]]]
    if not tasks or "adapters" not in results:
        return []
    columns = [t["index"] for t in tasks]
    config = ExperimentConfig.from_dict(results["config"])
    rows = []
    for init in results["inits"][1:]:
        if init not in training_per_seed:
            continue
        runs = _runs_of(results["adapters"], init, columns)
        if not runs:
            continue
        per_task = config.method(init.removesuffix(RULE_SUFFIX)).transfer  # or curriculum
        training = training_per_seed[init]
        # The adapter with the lowest mean error after its last step read, and where
        # the scratch solves were once they had spent at least as long.
        closest = min(runs, key=lambda a: float(np.nanmean(runs[a][0][..., -1])))
        final = float(np.nanmean(runs[closest][0][..., -1]))
        total = float(np.nanmean(runs[closest][1][..., -1]))
        later = np.asarray([first_record_after(t["seconds"], t["rel_l2"], total) for t in tasks])
        then = {"seconds": float(later[:, 0].mean()), "rel_l2": float(later[:, 1].mean())}
        for eps in config.eps_seconds:
            at = [seconds_to(t["seconds"], t["rel_l2"], eps) for t in tasks]
            before = [seconds_before(t["seconds"], t["rel_l2"], eps) for t in tasks]
            every = all(s is not None for s in at)
            scratch_at = float(np.mean([s for s in at if s is not None])) if every else None
            scratch_before = float(np.mean([s for s in before if s is not None])) if every else None
            fastest, adapt_mean = None, None
            for adapter, (rel, sec) in runs.items():
                hit = rel <= eps  # False where a run diverged (NaN)
                if not hit.any(axis=-1).all():
                    continue  # not every (seed, task) run gets there
                first = np.argmax(hit, axis=-1)[..., None]
                mean = float(np.take_along_axis(sec, first, axis=-1).mean())
                if adapt_mean is None or mean < adapt_mean:
                    fastest, adapt_mean = adapter, mean

            rows.append({
                "init": init, "eps": eps, "adapter": fastest, "adapt_seconds": adapt_mean,
                "scratch_seconds": scratch_at, "scratch_before": scratch_before,
                "training_seconds": training, "per_task": bool(per_task),
                "tasks": _payoff(training, adapt_mean, scratch_at, per_task),
                "tasks_at_most": _payoff(training, adapt_mean, scratch_before, per_task),
                "closest_adapter": closest, "adapted_rel_l2": final,
                "adapt_total_seconds": total, "scratch_then": then,
            })  # fmt: skip
    return rows


def _payoff(
    training: float, adapt: float | None, scratch: float | None, per_task: bool
) -> float | None:
    """New tasks after which `training` seconds pay off when each saves `scratch` −
    `adapt` seconds (`None` where either is unknown, nothing is saved, or the
    training is per task)."""
    if per_task or adapt is None or scratch is None or not scratch > adapt:
        return None
    return training / (scratch - adapt)


def _runs_of(
    adapters: dict[str, Any], init: str, columns: list[int]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{adapter: (rel_l2, seconds)}`, each `(seed, task, k)` over the seeds that
    trained and the held-out tasks `columns`, for every adapter that adapted `init`."""
    out = {}
    for adapter, data in adapters.items():
        names = [r["init"] for r in data["rows"]]
        if init not in names:
            continue
        i = names.index(init)
        rel = np.asarray(data["per_run_rel_l2"][i], dtype=np.float64)[:, columns]
        sec = np.asarray(data["per_run_seconds"][i], dtype=np.float64)[:, columns]
        # The seeds that trained (an untrained one is NaN throughout); a diverged
        # adaptation's NaN stays, and never counts as reaching a target.
        ok = ~np.isnan(rel).all(axis=(1, 2))
        if ok.any():
            out[adapter] = (rel[ok], sec[ok])
    return out
