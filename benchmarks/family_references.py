"""How accurate each family's reference solution is, on the held-out tasks of its
standard workload (W3 on the family; W2 for the wide Burgers range).

For every held-out task, on the standard 256 × 101 grid (docs/design.md §5), in float64:
the relative L2 distance between the reference solver and the exact solution (F1:
Cole–Hopf; F2 heat and F3 wave: their sine series; F4 convection: `u0(x − βt)`; F6:
Cole–Hopf by quadrature), and for Allen–Cahn (F5), which has no exact solution, the
distance to the same solver with twice the modes (its self-convergence). Also the
wall time of each solve, compile included (a fresh solve, not the disk cache).

    python benchmarks/family_references.py [--families heat wave] [--out PATH]

It prints a table and writes the same numbers as JSON (by default
`benchmarks/results/family_references.json`).
"""

import argparse
import json
import os
import pathlib
import platform
import time

import jax


jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import metapinn as mp  # noqa: E402
from metapinn._experiment._problem import experiment_tasks  # noqa: E402


WORKLOADS = {"burgers": "W2"}
"""The workload whose held-out tasks are checked, where it is not W3 on the family:
Burgers' widest range of viscosities is W2's."""


def _relative(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(np.asarray(b)))


def measure(name: str) -> dict:
    config = mp.experiment.workload(WORKLOADS.get(name, "W3"), family=name, seeds=[0])
    fam = mp.family(name)
    pde = fam.pde()
    x, t = (jnp.asarray(v, jnp.float64) for v in pde.standard_grid())
    _, tests = experiment_tasks(config, "float64")
    rows = []
    for i, label in enumerate(config.held_out_labels()):
        task = jax.tree_util.tree_map(lambda a, i=i: a[i], tests)
        start = time.perf_counter()
        reference = np.asarray(pde.reference_solution(task, x, t))
        seconds = time.perf_counter() - start
        if isinstance(pde, mp.AllenCahn):
            modes = pde.default_num_modes(float(task.epsilon))
            truth = pde.reference_solution(task, x, t, 2 * modes + 1)
            against = f"itself with {2 * modes + 1} modes (not {modes})"
        else:
            truth = pde.exact_solution(task, x, t)
            against = "exact"
        rows.append(
            {"task": label, "rel_l2": _relative(reference, truth), "against": against,
             "seconds": round(seconds, 2)}
        )  # fmt: skip
    return {"family": name, "design": fam.design, "workload": config.name, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", nargs="+", default=list(mp.FAMILIES))
    here = pathlib.Path(__file__).parent
    default_out = here / "results" / "family_references.json"
    parser.add_argument("--out", type=pathlib.Path, default=default_out)
    args = parser.parse_args()
    results = []
    print("| family | workload | held-out task | rel-L2 of the reference | against | solve (s) |")
    print("|---|---|---|---|---|---|")
    for name in args.families:
        result = measure(name)
        results.append(result)
        for row in result["rows"]:
            cells = [f"{name} ({result['design']})", result["workload"], row["task"],
                     f"{row['rel_l2']:.2e}", row["against"], str(row["seconds"])]  # fmt: skip
            print("| " + " | ".join(cells) + " |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    machine = {"machine": platform.machine(), "device": jax.devices()[0].platform,
               "cpu_count": os.cpu_count()}  # fmt: skip
    versions = {"jax": jax.__version__, "metapinn": mp.__version__}
    args.out.write_text(json.dumps(
        {"benchmark": "family_references", "machine": machine, "versions": versions,
         "families": results}, indent=2,
    ) + "\n")  # fmt: skip
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
