"""Memory and time of a meta-step against the inner length K, with and without a
checkpointed inner loop (`inner_remat`), on workload W3 (docs/design.md §3, §4 memory).

For each method (second-order MAML, first-order MAML, Reptile, iMAML), each K and each
remat setting, in a fresh process: XLA's `memory_analysis()` of the compiled meta-step
(temporary, argument and output bytes: deterministic), the compile time, the median
(and min-max) time of a few steps (one at K >= 1000, `--long-steps`), the time per
inner step, and the peak resident memory of that process. The inner loop is Adam at
1e-3 (`eps_root = 1e-16`, as the main job's MAML), 6 tasks one at a time
(`tasks_at_once = 1`, as the main job runs W3), one fixed draw of support and of query
points.

Goal (issue: memory-bounded second order): MAML at K = 1000 with `inner_remat` in at
most 2x the temporary memory of K = 10, and time per inner step within 1.5x of the
unchecked loop.

    python benchmarks/inner_length.py [--methods maml fomaml reptile imaml]
        [--ks 10 100 1000] [--remat none sqrt] [--workload W3] [--steps 3] [--long-steps 1]
        [--out benchmarks/results/inner_length.json]
"""

import argparse
import json
import os
import pathlib
import resource
import statistics
import subprocess
import sys
import time


WORKLOADS = {"W1": (32, 2, 200, 50, 20), "W3": (64, 4, 2000, 250, 125)}
"""Width, depth, interior, initial and per-boundary points."""


def run_case(method: str, k: int, remat: str, workload: str, steps: int) -> dict:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    import metapinn as mp

    mp.experiment.configure_cpu()
    width, depth, n_i, n_0, n_b = WORKLOADS[workload]
    pde = mp.Burgers()
    loss_fn = mp.PINNLoss(pde)
    net = mp.MLPPINN(width, depth, dtype=jnp.float32, key=jr.key(0))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    support = mp.sample_collocation(jr.key(1), pde, n_i, n_0, n_b)
    query = mp.sample_collocation(jr.key(2), pde, n_i, n_0, n_b)
    tasks = mp.BurgersTask(jnp.linspace(0.005, 0.05, 12, dtype=jnp.float32)[::2])
    inner = optax.adam(1e-3, eps_root=1e-16)
    learner = mp.make_learner(
        method, inner_steps=k, inner_optimizer=inner,
        inner_remat=None if remat == "none" else remat,
    )  # fmt: skip
    outer = optax.adam(1e-3)

    @eqx.filter_jit
    def step(p, state, tasks, support, query):
        return mp.meta_step(learner, p, static, state, outer, loss_fn, tasks, support, query,
                            tasks_at_once=1)  # fmt: skip

    args = (params, outer.init(params), tasks, support, query)
    t0 = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    memory = compiled.compiled.memory_analysis()
    # The compiled executable itself is timed: no second compilation, and its first
    # call costs what the others do (at K = 1000 a MAML step runs for minutes).
    times = []
    out = None
    for _ in range(steps):
        if out is not None:
            args = (out[0], out[1], *args[2:])
        t0 = time.perf_counter()
        out = compiled(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "method": method,
        "inner_steps": k,
        "remat": remat,
        "workload": workload,
        "compile_s": round(compile_s, 2),
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "steps_timed": steps,
        "ms_per_inner_step": 1e3 * median / (k * 6),
        "temp_mib": memory.temp_size_in_bytes / 2**20,
        "argument_mib": memory.argument_size_in_bytes / 2**20,
        "output_mib": memory.output_size_in_bytes / 2**20,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["maml", "fomaml", "reptile", "imaml"])
    parser.add_argument("--ks", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--remat", nargs="+", default=["none", "sqrt"])
    parser.add_argument("--workload", default="W3", choices=sorted(WORKLOADS))
    parser.add_argument("--steps", type=int, default=3, help="timed meta-steps per case")
    parser.add_argument(
        "--long-steps",
        type=int,
        default=1,
        help="timed meta-steps per case at K >= 1000 (a MAML step there takes minutes)",
    )
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path(__file__).parent / "results" / "inner_length.json",
    )
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)  # fmt: skip
    args = parser.parse_args()
    if args.child:
        method, k, remat = args.child
        print(json.dumps(run_case(method, int(k), remat, args.workload, args.steps)))
        return
    rows = []
    for method in args.methods:
        for k in args.ks:
            for remat in args.remat:
                steps = args.long_steps if k >= 1000 else args.steps
                command = [sys.executable, __file__, "--workload", args.workload, "--steps",
                           str(steps), "--child", method, str(k), remat]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True, env=os.environ)
                if done.returncode:
                    sys.stderr.write(done.stderr)
                    raise SystemExit(f"{method} K={k} remat={remat} failed")
                row = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(
                    f"| {method} | {k} | {remat} | {row['temp_mib']:.0f} | "
                    f"{row['peak_rss_mib']:.0f} | {row['median_s']:.2f} | "
                    f"{row['ms_per_inner_step']:.2f} | {row['compile_s']:.0f} |",
                    flush=True,
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    import platform

    import jax

    command = " ".join(["python benchmarks/inner_length.py", *sys.argv[1:]])
    device = {
        "device": str(jax.devices()[0].device_kind),
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
    }
    args.out.write_text(json.dumps({"command": command, **device, "rows": rows},
                                   indent=1) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
