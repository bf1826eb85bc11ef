"""Single-task accuracy from scratch: `metapinn solve` with the family's recipe (no
`--init`) on each of the family's held-out tasks, float32, on this machine.

For each task: rel-L2 against the reference on the 256 × 101 grid at the end and along
the way (every chunk of the recipe's steps), the steps (every window's Adam and
finisher steps), the training seconds
(compilation and the error's measurement apart) and the compile seconds. Writes
`benchmarks/results/solve_<family>.json`.

    python benchmarks/solve_family.py FAMILY [--steps N] [--tasks VALUE ...]
        [--out benchmarks/results/solve_FAMILY.json]

`--tasks` replaces the held-out tasks (e.g. a training-range end such as
`--tasks 40` for convection); `--steps` overrides the recipe's.
"""

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time

import jax

import metapinn as mp
from metapinn._pde._registry import family as get_family


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--tasks", nargs="+", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument(
        "--append", action="store_true",
        help="add these tasks to the rows already in --out (same recipe), replacing a "
        "task measured again: one table measured in several runs, e.g. one per core",
    )  # fmt: skip
    args = parser.parse_args()
    mp.experiment.configure_cpu()
    jax.config.update("jax_enable_x64", True)  # the references (training stays float32)
    fam = get_family(args.family)
    if args.tasks is not None:
        tasks = args.tasks
    elif fam.scalar:
        tasks = [repr(v) for v in fam.test_values]
    else:
        tasks = [str(i) for i in range(fam.n_test)]
    rows = []
    start = time.perf_counter()
    for task in tasks:
        with tempfile.TemporaryDirectory() as folder:
            r = mp.experiment.solve(args.family, task, folder, steps=args.steps, plot=False)
        rows.append(
            {
                "task": r["task"],
                "task_label": r["task_label"],
                "held_out": (not fam.scalar) or float(r["task"]) in fam.test_values,
                "rel_l2": r["rel_l2"],
                "steps": r["curve"]["steps"][-1],
                "seconds": r["seconds"],
                "compile_seconds": r["compile_seconds"],
                "final_weights": r["final_weights"],
                "curve": {k: r["curve"][k] for k in ("steps", "seconds", "rel_l2")},
            }
        )
        print(
            f"{args.family} {r['task_label']}: rel-L2 {r['rel_l2']:.3g} after {r['steps']} "
            f"steps, {r['seconds']:.0f} s (compile {r['compile_seconds']:.1f} s)",
            flush=True,
        )
    path = args.out or f"benchmarks/results/solve_{args.family}.json"
    recipe = dataclasses.asdict(mp.experiment.recipe(args.family))
    commands, wall_before = [], 0.0
    if args.append and os.path.exists(path):
        with open(path) as f:
            before = json.load(f)
        if json.loads(json.dumps(recipe)) != before["recipe"]:
            raise SystemExit(f"--append: {path} was measured with another recipe")
        ours = {r["task"] for r in rows}
        rows = [r for r in before["tasks"] if r["task"] not in ours] + rows
        commands = before["command"] if isinstance(before["command"], list) else [before["command"]]
        wall_before = before["wall_seconds"]
    held_out = [r["rel_l2"] for r in rows if r["held_out"]]
    mean = sum(held_out) / len(held_out) if held_out else float("nan")
    print(f"mean rel-L2 {mean:.3g} over {len(held_out)} held-out tasks")
    command = "python benchmarks/solve_family.py " + " ".join(
        [args.family]
        + ([f"--steps {args.steps}"] if args.steps is not None else [])
        + (["--tasks", *args.tasks] if args.tasks is not None else [])
        + (["--append"] if args.append else [])
    )
    out = {
        "family": args.family,
        "command": [*commands, command] if commands else command,
        "machine": {
            "cpu_count": os.cpu_count(),
            "cores_used": len(os.sched_getaffinity(0)),  # e.g. under taskset -c 1
            "platform": platform.platform(),
        },
        "jax": jax.__version__,
        "recipe": recipe,
        "mean_rel_l2": mean,  # over the held-out tasks only
        "wall_seconds": wall_before + time.perf_counter() - start,
        "tasks": rows,
    }
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
