"""Accuracy and speed of the Burgers reference solver (`metapinn.burgers_reference_solution`).

For each viscosity this measures, on the standard 256 × 101 grid (docs/design.md §5): the
relative L2 error against the exact Cole–Hopf solution, the compile time of the
solve (`.lower(...).compile()`), the median and min–max run time over `--repeats`
calls (each ended with `block_until_ready`), the integrator's step count (accepted and
rejected) and the grid size `M` chosen by `metapinn.burgers_grid_size`.

Run from the repository root:

    python benchmarks/reference_solver.py [--repeats 5] [--out PATH]

It prints a table and writes the same numbers as JSON (by default next to this file,
as `reference_solver.json`).
"""

import argparse
import json
import math
import os
import pathlib
import platform
import statistics
import time

import jax


jax.config.update("jax_enable_x64", True)

import diffrax  # noqa: E402
import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import metapinn as mp  # noqa: E402
import metapinn._pde._burgers._reference as reference  # noqa: E402
from metapinn._metrics import relative_l2_error  # noqa: E402
from metapinn._pde._burgers._exact import cole_hopf_solution  # noqa: E402
from metapinn._pde._burgers._reference import (  # noqa: E402
    SpectralBurgersSolver,
    burgers_grid_size,
)


VISCOSITIES = (0.001, 0.002, 0.005, 0.01 / math.pi, 0.01, 0.02, 0.05, 0.1)


@eqx.filter_jit
def _solve(solver, nu, x, t):
    return solver.solve(nu, x, t)


def measure(nu: float, repeats: int) -> dict:
    """Error, compile time, run times and step count of one reference solve."""
    x, t = mp.Burgers().standard_grid()
    solver = SpectralBurgersSolver(burgers_grid_size(nu))
    nu_array = jnp.asarray(nu, dtype=jnp.float64)
    start = time.perf_counter()
    compiled = _solve.lower(solver, nu_array, x, t).compile()
    compile_s = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sol = compiled(solver, nu_array, x, t)
        jax.block_until_ready(sol.u)
        times.append(time.perf_counter() - start)
    exact = cole_hopf_solution(x[None, :], t[:, None], nu)
    return {
        "nu": nu,
        "grid_size": solver.grid_size,
        "modes": solver.num_modes,
        "rel_l2_vs_cole_hopf": float(relative_l2_error(sol.u, exact)),
        "compile_s": compile_s,
        "run_median_s": statistics.median(times),
        "run_min_s": min(times),
        "run_max_s": max(times),
        "num_steps": int(sol.num_steps),
        "num_accepted_steps": int(sol.num_accepted_steps),
    }


def _table(rows: list[dict]) -> str:
    header = (
        f"{'nu':>9} {'M':>5} {'K':>5} {'rel-L2 vs C-H':>14} {'compile s':>9} "
        f"{'run s (median)':>14} {'min-max s':>13} {'steps':>6} {'accepted':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{r['nu']:>9.6f} {r['grid_size']:>5d} {r['modes']:>5d} "
            f"{r['rel_l2_vs_cole_hopf']:>14.2e} {r['compile_s']:>9.2f} "
            f"{r['run_median_s']:>14.3f} {r['run_min_s']:>6.3f}-{r['run_max_s']:<6.3f} "
            f"{r['num_steps']:>6d} {r['num_accepted_steps']:>8d}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per viscosity")
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parent / "results" / "reference_solver.json",
        help="where to write the JSON results",
    )
    parser.add_argument(
        "--nu", type=float, nargs="+", default=list(VISCOSITIES), help="viscosities to run"
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")

    rows = []
    for nu in args.nu:
        rows.append(measure(nu, args.repeats))
        print(f"done nu={nu:.6g}", flush=True)
    x, t = mp.Burgers().standard_grid()
    solver = SpectralBurgersSolver(32)
    results = {
        "benchmark": "reference_solver",
        "grid": {"nx": int(x.shape[0]), "nt": int(t.shape[0])},
        "solver": {
            "method": reference._METHOD,
            "rtol": solver.rtol,
            "atol": solver.atol,
        },
        "machine": {
            "machine": platform.machine(),
            "device": str(jax.devices()[0].device_kind),
            "cpu_count": os.cpu_count(),
            "load_average_1min_at_end": os.getloadavg()[0],
        },
        "versions": {"jax": jax.__version__, "diffrax": diffrax.__version__},
        "repeats": args.repeats,
        "rows": rows,
    }
    print(_table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()
