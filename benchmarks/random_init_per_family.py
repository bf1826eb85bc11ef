"""How far a random initialisation gets on each family's standard workload: the check
that a family's workload is not already solved from scratch within the few-shot budget
(issue: "a random init does not already solve it in 100 steps").

For each family, the workload (W3 by default) on that family: the random
initialisation of seed 0 adapted to every held-out task with the workload's own
schedule, on its fixed collocation points, by the main job's own evaluation code;
rel-L2 against the family's reference on the standard grid after k steps.

    python benchmarks/random_init_per_family.py [--workload W3] [--families heat wave]
        [--steps 0 100 1000] [--out benchmarks/results/random_init_per_family.json]
"""

import argparse
import json
import os
import pathlib
import time

import jax


jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import metapinn as mp  # noqa: E402
from metapinn._experiment._evaluation import _adapt_all, _measure, reference_fields  # noqa: E402
from metapinn._experiment._problem import (  # noqa: E402
    build_problem,
    eval_optimizer,
    initialisation,
)


def measure(family: str, workload: str, steps: tuple[int, ...]) -> dict:
    config = mp.experiment.workload(workload, family=family, seeds=[0], methods=["multitask"])
    t0 = time.perf_counter()
    x, t, grid, u_ref = reference_fields(config)
    reference_seconds = time.perf_counter() - t0
    problem = build_problem(config)
    params, static, _ = initialisation(config, 0)
    _, cond_static, _ = initialisation(config, 0, conditioned=True)
    t0 = time.perf_counter()
    adapted, _ = _adapt_all(
        config, problem, ("random",), {"random": [params]}, (static, cond_static), steps,
        eval_optimizer(config),
    )  # fmt: skip
    adapt_seconds = time.perf_counter() - t0
    grid = np.asarray(grid).reshape(len(t), len(x), 2)
    rel = _measure(config, problem, static, adapted, grid, u_ref)["rel_l2"][0, 0]  # (N, K)
    return {
        "family": family,
        "workload": config.name,
        "tasks": config.held_out_labels(),
        "steps": list(steps),
        "rel_l2": rel.tolist(),
        "mean_rel_l2": rel.mean(axis=0).tolist(),
        "reference_seconds": round(reference_seconds, 2),
        "adaptation_seconds": round(adapt_seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="W3")
    parser.add_argument("--families", nargs="+", default=list(mp.FAMILIES))
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 100, 1000])
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path(__file__).parent / "results"
        / "random_init_per_family.json",
    )  # fmt: skip
    args = parser.parse_args()
    rows = []
    for family in args.families:
        row = measure(family, args.workload, tuple(args.steps))
        rows.append(row)
        cells = " | ".join(f"{v:.3g}" for v in row["mean_rel_l2"])
        print(f"| {family} | {cells} |  ({row['adaptation_seconds']:.0f} s)", flush=True)
    print()
    print("| family | " + " | ".join(f"k = {k}" for k in args.steps) + " |")
    print("|---|" + "---|" * len(args.steps))
    for row in rows:
        print(f"| {row['family']} | " + " | ".join(f"{v:.3g}" for v in row["mean_rel_l2"]) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "command": "python benchmarks/random_init_per_family.py",
                "backend": jax.default_backend(),
                "cpus": os.cpu_count(),
                "rows": rows,
            },
            indent=1,
        )  # fmt: skip
        + "\n"
    )


if __name__ == "__main__":
    main()
