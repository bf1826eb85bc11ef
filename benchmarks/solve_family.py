"""Single-task accuracy from scratch: `metapinn solve` with the family's recipe (no
`--init`) on each of the family's held-out tasks, float32, on this machine.

For each task: rel-L2 against the reference on the 256 × 101 grid at the end and along
the way (every chunk of the recipe's steps), the steps, the training seconds
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
                "rel_l2": r["rel_l2"],
                "steps": r["steps"],
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
    mean = sum(r["rel_l2"] for r in rows) / len(rows)
    print(f"mean rel-L2 {mean:.3g} over {len(rows)} tasks")
    out = {
        "command": "python benchmarks/solve_family.py "
        + " ".join(
            [args.family]
            + ([f"--steps {args.steps}"] if args.steps is not None else [])
            + (["--tasks", *args.tasks] if args.tasks is not None else [])
        ),
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform()},
        "jax": jax.__version__,
        "recipe": dataclasses.asdict(mp.experiment.recipe(args.family)),
        "mean_rel_l2": mean,
        "wall_seconds": time.perf_counter() - start,
        "tasks": rows,
    }
    path = args.out or f"benchmarks/results/solve_{args.family}.json"
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"written: {path}")


if __name__ == "__main__":
    main()
