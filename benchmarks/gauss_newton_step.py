"""Speed of one Gauss–Newton (Levenberg–Marquardt) adaptation step on the W3 network,
against its floor (docs/design.md §4), beside one Adam step and one L-BFGS step.

The step is `metapinn.GaussNewton(cg_steps=c, cg_rtol=0)` (all `c` CG iterations run)
on the W3 PINN (2 → 64 → 64 → 64 → 64 → 1, float32) and the W3 points (2000 interior,
250 initial, 125 per boundary) of Burgers at nu = 0.0173, from the random
initialisation of seed 0. Analytic matmul FLOPs, with F = 0.212 GFLOP the network's jet
forward at every point (`meta_step.gradient_flops` / 3):

- one gradient (Adam's step): 3F;
- a Gauss–Newton step: the linearisation F, the gradient J^T r 2F, CG's initial
  residual 4F and 4F per iteration (a product J v, 2F, and its transpose, 2F), the
  predicted decrease J δ 2F and the trial residual F: (10 + 4c) F;
- an L-BFGS step: one gradient and the line search's evaluations (not counted: their
  number varies; the table gives its time only);
- a Jacobi-preconditioned step (`preconditioner="jacobi"`): the same plus the
  diagonal's `s` probes, one transpose product (2F) each: (10 + 4c + 2s) F.

The task batch: the same step vmapped over `--batch` held-out viscosities (each task
its own parameters and state; the W3 held-out nu), against the floor of that many
steps, to say what vmapping the tasks of an evaluation or a meta-step buys.

For each case: the cold compile (`.lower().compile()`), then the median and min–max of
`--steps` steps (each ended with `block_until_ready`), the ratio of the median to the
floor (analytic FLOPs ÷ a same-run 2048³ float32 matmul rate), and XLA's FLOP count.

    python benchmarks/gauss_newton_step.py [--cg-steps 10 20 50] [--steps 20]
        [--batch 4] [--jacobi-samples 16] [--out benchmarks/results/gauss_newton_step.json]
"""

import argparse
import json
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from meta_step import _xla_flops, gradient_flops, matmul_ceiling

import metapinn as mp


def time_case(adapter, params, static, loss, task, batch, steps: int, vmapped=False) -> dict:
    """One step of `adapter`, or with `vmapped` one step of every task of `task` (a
    batch) at once, from its own copy of `params`."""
    if vmapped:
        n = jax.tree_util.tree_leaves(task)[0].shape[0]
        params = jax.tree_util.tree_map(lambda a: jnp.stack([a] * n), params)
        state = jax.vmap(lambda p, t: adapter.init(p, static, loss, t, batch))(params, task)

        def step(p, s):
            def one(p, s, t):
                return adapter.step(p, s, static, loss, t, batch)[:2]

            return jax.vmap(one)(p, s, task)
    else:
        state = adapter.init(params, static, loss, task, batch)

        def step(p, s):
            return adapter.step(p, s, static, loss, task, batch)[:2]

    t0 = time.perf_counter()
    compiled = jax.jit(step).lower(params, state).compile()
    compile_s = time.perf_counter() - t0
    p, s = jax.block_until_ready(compiled(params, state))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        p, s = jax.block_until_ready(compiled(p, s))
        times.append(time.perf_counter() - t0)
    return {
        "compile_s": compile_s,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "xla_flops": _xla_flops(compiled),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cg-steps", type=int, nargs="+", default=[10, 20, 50])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=4, help="tasks vmapped (0: none)")
    parser.add_argument(
        "--jacobi-samples", type=int, default=16, help="probes of the Jacobi rows (0: none)"
    )
    parser.add_argument("--out", default="benchmarks/results/gauss_newton_step.json")
    args = parser.parse_args()

    pde = mp.Burgers()
    k_net, k_pts = jr.split(jr.key(0))
    pinn = mp.MLPPINN(width=64, depth=4, dtype=jnp.float32, key=k_net)
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    batch = mp.sample_collocation(k_pts, pde, 2000, 250, 125, dtype=jnp.float32)
    task = mp.BurgersTask(jnp.asarray(0.0173, jnp.float32))
    loss = mp.PINNLoss(pde)
    f = gradient_flops("W3") / 3
    ceiling = matmul_ceiling()
    nus = jnp.asarray((0.0091, 0.0173, 0.0255, 0.0337)[: args.batch], jnp.float32)
    cases = {"adam": (mp.Optax(optax.adam(1e-3)), 3 * f, False),
             "lbfgs": (mp.LBFGS(), float("nan"), False)}  # fmt: skip
    for c in args.cg_steps:
        gn = mp.GaussNewton(cg_steps=c, cg_rtol=0.0)
        cases[f"gauss-newton c={c}"] = (gn, (10 + 4 * c) * f, False)
        if args.batch > 1:
            name = f"gauss-newton c={c}, {len(nus)} tasks vmapped"
            cases[name] = (gn, len(nus) * (10 + 4 * c) * f, True)
        if args.jacobi_samples:
            s = args.jacobi_samples
            jacobi = mp.GaussNewton(
                cg_steps=c, cg_rtol=0.0, preconditioner="jacobi", jacobi_samples=s
            )
            cases[f"gauss-newton c={c}, jacobi s={s}"] = (jacobi, (10 + 4 * c + 2 * s) * f, False)
    rows = []
    print(f"ceiling: 2048³ float32 matmul at {ceiling / 1e9:.1f} GFLOP/s (same run)")
    print("| case | compile s | median ms (min–max) | analytic GFLOP | XLA GFLOP | × floor |")
    print("|---|---|---|---|---|---|")
    for name, (adapter, flops, vmapped) in cases.items():
        tasks = mp.BurgersTask(nus) if vmapped else task
        timed = time_case(adapter, params, static, loss, tasks, batch, args.steps, vmapped)
        row = {"case": name, "analytic_flops": flops, **timed}
        row["floor_ratio"] = row["median_s"] / (flops / ceiling)
        rows.append(row)
        print(
            f"| {name} | {row['compile_s']:.1f} | {1e3 * row['median_s']:.1f} "
            f"({1e3 * row['min_s']:.1f}–{1e3 * row['max_s']:.1f}) | {flops / 1e9:.2f} | "
            f"{row['xla_flops'] / 1e9:.2f} | {row['floor_ratio']:.2f} |",
            flush=True,
        )
    result = {
        "ceiling_flops_per_s": ceiling,
        "steps": args.steps,
        "machine": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "rows": rows,
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
