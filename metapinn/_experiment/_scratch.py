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


SCRATCH_ROW, SCRATCH_ADAPTER = "scratch", "recipe"
"""The from-scratch solves' curve in the error-against-wall-clock figure."""


def read_scratch(paths: Sequence[str | os.PathLike], config: ExperimentConfig) -> dict[str, Any]:
    """The from-scratch solves in `paths`, one entry per held-out task of `config` they
    cover, in the run's task order.

    **Arguments:** `paths`, JSON files each either `metapinn solve`'s `solve.json`
    (one task) or a file with a `tasks` list of such rows (as
    `benchmarks/solve_family.py` writes); `config`, the run's settings.

    **Returns:** `{"sources": [file names], "tasks": [{"index", "task_label",
    "steps", "seconds", "rel_l2"}]}` (each curve from step 0; `index` the held-out
    task's position in the run).

    **Raises:** [`metapinn.experiment.ConfigError`][], naming the file and the value,
    for a file that is not such JSON, a solve of another family, a task that is not
    one of the run's held-out tasks, or one task given twice.
    """
    fam = get_family(config.family)
    values = list(config.test_params or fam.test_values) if fam.scalar else []
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
        if data.get("family", config.family) not in (config.family, fam.name):
            raise ConfigError(
                f"--scratch {name}: a solve of family {data['family']!r}, not the run's "
                f"{config.family!r}"
            )
        rows = data["tasks"] if "tasks" in data else [data]
        for row in rows:
            if not isinstance(row, dict) or "curve" not in row or "task" not in row:
                raise ConfigError(f"--scratch {name}: a row without a task and its curve")
            index = _held_out_index(row["task"], values, config.n_test)
            if index is None:
                raise ConfigError(
                    f"--scratch {name}: task {row.get('task_label', row['task'])!r} is not "
                    f"one of the run's held-out tasks {config.held_out_labels()}"
                )
            if index in found:
                raise ConfigError(
                    f"--scratch {name}: held-out task {config.held_out_labels()[index]} is "
                    "given twice"
                )
            curve = row["curve"]
            found[index] = {
                "index": index,
                "task_label": config.held_out_labels()[index],
                **{k: [float(v) for v in curve[k]] for k in ("seconds", "rel_l2")},
                "steps": [int(v) for v in curve["steps"]],
            }
        sources.append(os.path.basename(name))
    return {"sources": sources, "tasks": [found[i] for i in sorted(found)]}


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
    training_seconds, tasks, closest_adapter, adapted_rel_l2, adapt_total_seconds,
    scratch_then}`: the adapter (of those read) whose runs all reach `eps` soonest on
    average (`None` if no adapter takes every run there); the mean seconds to `eps`
    of it and of the scratch solves (`None`: not every solve gets there); `tasks`,
    the new tasks after which training has paid off (`None` where nothing is saved
    or either never gets there); the adapter with the lowest mean rel-L2 after its
    last step read, that error and its mean seconds by then; and `scratch_then`,
    `{seconds, rel_l2}`: the scratch solves' mean rel-L2 at their first record once
    they have spent as long, and that record's mean seconds. `[]` without scratch
    solves of the in-range held-out tasks.
    """
    scratch = results.get("scratch") or {}
    inside = np.asarray(results.get("in_range") or [True] * len(results["test_tasks"]), bool)
    tasks = [t for t in scratch.get("tasks", []) if inside[t["index"]]]
    if not tasks or "adapters" not in results:
        return []
    columns = [t["index"] for t in tasks]
    eps_list = results["config"].get("eps_seconds") or [1e-2, 3e-3, 1e-3]
    rows = []
    for init in results["inits"][1:]:
        if init not in training_per_seed:
            continue
        runs = _runs_of(results["adapters"], init, columns)
        if not runs:
            continue
        # The adapter with the lowest mean error after its last step read, and where
        # the scratch solves were once they had spent as long.
        closest = min(runs, key=lambda a: float(runs[a][0][..., -1].mean()))
        final = float(runs[closest][0][..., -1].mean())
        total = float(runs[closest][1][..., -1].mean())
        later = np.asarray([first_record_after(t["seconds"], t["rel_l2"], total) for t in tasks])
        then = {"seconds": float(later[:, 0].mean()), "rel_l2": float(later[:, 1].mean())}
        for eps in eps_list:
            times = [seconds_to(t["seconds"], t["rel_l2"], eps) for t in tasks]
            reached = [s for s in times if s is not None]
            scratch_mean = float(np.mean(reached)) if len(reached) == len(times) else None
            fastest, adapt_mean = None, None
            for adapter, (rel, sec) in runs.items():
                hit = rel <= eps
                if not hit.any(axis=-1).all():
                    continue  # not every (seed, task) run gets there
                first = np.argmax(hit, axis=-1)[..., None]
                mean = float(np.take_along_axis(sec, first, axis=-1).mean())
                if adapt_mean is None or mean < adapt_mean:
                    fastest, adapt_mean = adapter, mean
            saved = None
            if adapt_mean is not None and scratch_mean is not None:
                saved = scratch_mean - adapt_mean
            rows.append({
                "init": init, "eps": eps, "adapter": fastest, "adapt_seconds": adapt_mean,
                "scratch_seconds": scratch_mean, "training_seconds": training_per_seed[init],
                "tasks": training_per_seed[init] / saved if saved and saved > 0 else None,
                "closest_adapter": closest, "adapted_rel_l2": final,
                "adapt_total_seconds": total, "scratch_then": then,
            })  # fmt: skip
    return rows


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
        ok = np.isfinite(rel).all(axis=(1, 2))  # the seeds that trained
        if ok.any():
            out[adapter] = (rel[ok], sec[ok])
    return out
