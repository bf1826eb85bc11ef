"""What second-order MAML through Gauss–Newton steps costs, beside first-order MAML,
Reptile and iMAML over the same inner adapter, on the W3 network.

One task's meta-gradient (Burgers nu = 0.0173, W3 points for support and query, the W3
PINN in float32 from the random initialisation of seed 0) for each learner with K
Levenberg–Marquardt inner steps of `GaussNewton(cg_steps=c, cg_rtol=0)` (a fixed-length
CG, so that reverse mode can go through it): cold compile time, median and min–max
seconds of `--repeats` runs, and XLA's memory analysis (temporaries + arguments +
outputs) of the compiled program.

    python benchmarks/second_order_gauss_newton.py [--inner-steps 1 2] [--cg-steps 10]
        [--repeats 5] [--out benchmarks/results/second_order_gauss_newton.json]
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

import metapinn as mp


def measure(learner, params, static, loss, task, support, query, repeats: int) -> dict:
    def gradient(p):
        return learner.meta_gradient(p, static, loss, task, support, query)[0]

    t0 = time.perf_counter()
    compiled = jax.jit(gradient).lower(params).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.memory_analysis()
    jax.block_until_ready(compiled(params))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - t0)
    total = (
        memory.temp_size_in_bytes + memory.argument_size_in_bytes + memory.output_size_in_bytes
        if memory is not None
        else float("nan")
    )
    return {"compile_s": compile_s, "median_s": statistics.median(times), "min_s": min(times),
            "max_s": max(times), "xla_bytes": total}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--cg-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/second_order_gauss_newton.json")
    args = parser.parse_args()

    pde = mp.Burgers()
    k_net, k_sup, k_query = jr.split(jr.key(0), 3)
    pinn = mp.MLPPINN(width=64, depth=4, dtype=jnp.float32, key=k_net)
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    support = mp.sample_collocation(k_sup, pde, 2000, 250, 125, dtype=jnp.float32)
    query = mp.sample_collocation(k_query, pde, 2000, 250, 125, dtype=jnp.float32)
    task = mp.BurgersTask(jnp.asarray(0.0173, jnp.float32))
    loss = mp.PINNLoss(pde)
    inner = mp.GaussNewton(damping=1e-2, cg_steps=args.cg_steps, cg_rtol=0.0)
    rows = []
    print("| learner | K | compile s | median s (min–max) | XLA MiB |")
    print("|---|---|---|---|---|")
    for k in args.inner_steps:
        learners = {
            "maml (second order)": mp.MAML(inner_steps=k, inner_optimizer=inner),
            "fomaml": mp.FOMAML(inner_steps=k, inner_optimizer=inner),
            "reptile": mp.Reptile(inner_steps=k, inner_optimizer=inner),
            "imaml": mp.IMAML(inner_steps=k, inner_optimizer=inner),
        }
        for name, learner in learners.items():
            row = {"learner": name, "inner_steps": k,
                   **measure(learner, params, static, loss, task, support, query,
                             args.repeats)}  # fmt: skip
            rows.append(row)
            print(
                f"| {name} | {k} | {row['compile_s']:.1f} | {row['median_s']:.2f} "
                f"({row['min_s']:.2f}–{row['max_s']:.2f}) | {row['xla_bytes'] / 2**20:.0f} |",
                flush=True,
            )
    machine = platform.processor() or platform.machine()
    result = {"cg_steps": args.cg_steps, "rows": rows, "jax": jax.__version__, "machine": machine}
    with open(args.out, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main()
