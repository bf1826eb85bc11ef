"""Speed of one meta-step on workload W1 (DESIGN.md §3), by the speed protocol (§4).

For second-order MAML, first-order MAML, Reptile, multi-task pre-training and a
100-step Adam adaptation this measures: the *cold* compile time, i.e. the first
`.lower()` (JAX tracing and lowering) plus `.compile()` (XLA) of the step in a fresh
process, before anything else is traced, repeated in `--compile-runs` fresh processes
(median, min and max reported, with the median split into its JAX and XLA parts); the
median and min–max of >= 20 steps (each ended with `block_until_ready`); the analytic
float32 FLOPs of a step and XLA's own count of the compiled program; the achieved
rate; the ratio of the measured time to the *floor* (analytic FLOPs ÷ the best rate of
a 2048³ float32 matmul measured in the same run); and the peak resident memory of the
process that ran the case (each case runs in its own subprocesses, so memory and
compile caches don't leak between cases).

Each case runs with the XLA:CPU flags of `metapinn.configure_cpu` (fast compiles;
`--plain-xla` leaves them out). With `--devices N`, the meta-learner cases also run
with the task axis sharded over N host devices, one per core (DESIGN.md §7).

Run from the repository root:

    python benchmarks/meta_step.py [--steps 30] [--compile-runs 5] [--devices 1 2]
        [--plain-xla] [--out FILE.json]
"""

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time


CASES = ("maml", "fomaml", "reptile", "multitask", "adapt100")

# W1 (DESIGN.md §3).
WIDTH, DEPTH = 32, 2
N_INTERIOR, N_INITIAL, N_BOUNDARY = 200, 50, 20
TASKS, INNER_STEPS, INNER_LR, OUTER_LR = 6, 5, 0.01, 1e-3
ADAPT_STEPS = 100


def analytic_flops(case: str) -> float:
    """Matmul FLOPs of one step of `case` on W1, counted as DESIGN.md §4 prescribes.

    One loss evaluation pushes the value through the network at all
    `n_int + n_ic + n_bc` points and three more streams (`u_x, u_t, u_xx`) at the
    interior points: `F = 2 · Σ fan_in·fan_out · (4 n_int + n_ic + 2 n_bc)`. A
    gradient costs `3F` (forward + two matmuls back per layer); differentiating
    back through one inner gradient step of second-order MAML costs `6F` more.
    """
    fan = 2 * WIDTH + (DEPTH - 1) * WIDTH * WIDTH + WIDTH
    f = 2 * fan * (4 * N_INTERIOR + N_INITIAL + 2 * N_BOUNDARY)
    grad = 3 * f
    per_task = {
        "maml": (INNER_STEPS + 1) * grad + INNER_STEPS * 2 * grad,
        "fomaml": (INNER_STEPS + 1) * grad,
        "reptile": INNER_STEPS * grad,
        "multitask": grad,
    }
    if case == "adapt100":
        return ADAPT_STEPS * grad
    return TASKS * per_task[case]


def matmul_ceiling(n: int = 2048, repeats: int = 10) -> float:
    """Best float32 FLOP/s of an `n³` matmul through `jax.numpy` on this machine."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def _xla_flops(compiled) -> float:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):
        cost = cost[0]
    return float(cost.get("flops", float("nan"))) if cost else float("nan")


def run_case(case: str, steps: int, devices: int = 1, compile_only: bool = False) -> dict:
    """Compile and time one case in this process; with `devices > 1`, the task axis
    of the meta-step is sharded over that many (host) devices. The first thing traced
    is the timed step, so its compile time is a cold one; `compile_only` stops there."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    import metapinn as mp

    pinn = mp.MLPPINN(WIDTH, DEPTH, dtype=jnp.float32, key=jr.key(0))
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    pde = mp.Burgers()
    loss_fn = mp.PINNLoss(pde)
    batch = mp.sample_collocation(jr.key(1), pde, N_INTERIOR, N_INITIAL, N_BOUNDARY)
    nus = jnp.linspace(0.005, 0.05, 12, dtype=jnp.float32)

    if case == "adapt100":
        optimizer = optax.adam(OUTER_LR)
        task = mp.BurgersTask(nus[1])

        def make(steps_in_program, unroll=1):
            @eqx.filter_jit
            def run(p, task, batch):
                return mp.adapt(
                    p,
                    static,
                    loss_fn,
                    task,
                    batch,
                    steps=steps_in_program,
                    optimizer=optimizer,
                    unroll=unroll,
                )[0]

            return run, (params, task, batch)

        step_fn, args = make(ADAPT_STEPS)

        def count_flops():
            # XLA counts a loop body once: count one unrolled step and scale.
            one_fn, _ = make(1)
            return _xla_flops(one_fn.lower(*args).compile().compiled) * ADAPT_STEPS

        advance = lambda out, args: (out, *args[1:])  # noqa: E731
    else:
        if case == "multitask":
            learner = mp.MultiTask()
        else:
            learner = mp.make_learner(case, inner_steps=INNER_STEPS, inner_optimizer=INNER_LR)
        optimizer = optax.adam(OUTER_LR)
        tasks = mp.BurgersTask(nus[::2])

        # Tasks and points are arguments, not closed-over constants: a constant loses
        # its sharding, and with it the split of the task axis over devices.
        mesh = mp.task_mesh(devices) if devices > 1 else None

        def step_fn(p, state, tasks, batch):
            return mp.meta_step(
                learner, p, static, state, optimizer, loss_fn, tasks, batch, mesh=mesh
            )

        step_fn = eqx.filter_jit(step_fn)
        args = (params, optimizer.init(params))
        if devices > 1:
            # The task axis split over the devices by `meta_step(..., mesh=...)`
            # (DESIGN.md §7); the inputs are placed so, everything else replicated.
            from jax.sharding import NamedSharding, PartitionSpec

            if TASKS % devices:
                raise ValueError(f"{TASKS} tasks do not split over {devices} devices")
            tasks = jax.device_put(tasks, NamedSharding(mesh, PartitionSpec("tasks")))
            replicated = NamedSharding(mesh, PartitionSpec())
            batch = jax.device_put(batch, replicated)
            args = jax.device_put(args, replicated)
        args = (*args, tasks, batch)
        # XLA counts a loop body once, so count FLOPs on a fully unrolled copy. Unroll
        # by the step count, not `True`: True == 1 and hash(True) == hash(1), so a
        # learner with `inner_unroll=True` shares JIT cache entries with the default
        # `inner_unroll=1`, and the timed step below would run the unrolled program.
        unrolled = dataclasses.replace(learner, inner_unroll=max(learner.inner_steps, 2))

        def count_flops():
            @eqx.filter_jit
            def count_fn(p, state, tasks, batch):
                return mp.meta_step(
                    unrolled, p, static, state, optimizer, loss_fn, tasks, batch, mesh=mesh
                )

            return _xla_flops(count_fn.lower(*args).compile().compiled)

        advance = lambda out, args: (out[0], out[1], *args[2:])  # noqa: E731

    jax.block_until_ready(args)
    t0 = time.perf_counter()
    lowered = step_fn.lower(*args)
    t1 = time.perf_counter()
    lowered.compile()
    t2 = time.perf_counter()
    timing = {"compile_s": t2 - t0, "trace_lower_s": t1 - t0, "xla_compile_s": t2 - t1}
    if compile_only:
        return timing
    xla = count_flops()
    # Steps are timed through the jitted function, the way a training loop calls it
    # (its first call compiles again, untimed; calling the `Compiled` object instead
    # goes through a slower Python dispatch path).
    out = step_fn(*args)
    jax.block_until_ready(out)
    args = advance(out, args)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        out = step_fn(*args)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
        args = advance(out, args)
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "case": case if devices == 1 else f"{case}/{devices}dev",
        "devices": devices,
        **timing,
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "max_ms": 1e3 * max(times),
        "steps_timed": steps,
        "analytic_mflop": analytic_flops(case) / 1e6,
        "xla_mflop": xla / 1e6,
        "peak_rss_mib": rss_kib / 1024,
    }


def _child(command: list[str], env: dict) -> dict:
    """Run one case in a fresh process; its JSON result."""
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark command {command[2:]} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict], ceiling: float) -> str:
    head = (
        f"{'case':<16} {'compile s':>9} {'min–max s':>11} {'JAX+XLA s':>10} "
        f"{'median ms':>10} {'min–max ms':>15} "
        f"{'analytic MF':>11} {'XLA MF':>8} {'GFLOP/s':>8} {'floor ms':>8} "
        f"{'×floor':>7} {'RSS MiB':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['case']:<16} {r['compile_s']:>9.2f} "
            f"{r['compile_min_s']:>5.2f}–{r['compile_max_s']:<5.2f} "
            f"{r['trace_lower_s']:>4.2f}+{r['xla_compile_s']:<5.2f} {r['median_ms']:>10.2f} "
            f"{r['min_ms']:>7.2f}–{r['max_ms']:<7.2f} {r['analytic_mflop']:>11.1f} "
            f"{r['xla_mflop']:>8.1f} {r['achieved_gflops']:>8.1f} {r['floor_ms']:>8.2f} "
            f"{r['times_floor']:>7.1f} {r['peak_rss_mib']:>8.0f}"
        )
    lines.append(f"ceiling: 2048³ float32 matmul at {ceiling / 1e9:.1f} GFLOP/s (same run)")
    lines.append(
        "compile: cold, median over fresh processes (min–max); JAX+XLA: the median's "
        "tracing+lowering and XLA compile parts"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed steps per case (>= 20)")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument(
        "--out",
        default=os.path.join("benchmarks", "results", "meta_step.json"),
        help="where to write the JSON results",
    )
    parser.add_argument(
        "--devices",
        type=int,
        nargs="+",
        default=[1],
        help="host device counts to run the meta-learner cases on (task axis sharded), "
        "e.g. --devices 1 2",
    )
    parser.add_argument(
        "--plain-xla",
        action="store_true",
        help="leave out the fast-compile XLA:CPU flags of metapinn.configure_cpu",
    )
    parser.add_argument(
        "--compile-runs",
        type=int,
        default=5,
        help="fresh processes that time each case's cold compile (>= 1; the median is "
        "reported, as compile times on a shared machine are noisy)",
    )
    parser.add_argument("--only", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--compile-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.steps < 20:
        parser.error(f"--steps must be >= 20 by the speed protocol, got {args.steps}")
    if args.compile_runs < 1:
        parser.error(f"--compile-runs must be >= 1, got {args.compile_runs}")

    if args.only:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args.only, args.steps, args.devices[0], args.compile_only)))
        return 0

    from metapinn import cpu_xla_flags

    ceiling = matmul_ceiling()
    rows = []
    runs = [(case, 1) for case in args.cases if 1 in args.devices]
    runs += [(case, n) for n in args.devices if n > 1 for case in args.cases if case != "adapt100"]
    for case, n in runs:
        env = dict(os.environ)
        flags = env.get("XLA_FLAGS", "")
        if args.plain_xla:
            if n > 1:
                flags = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        else:
            flags = cpu_xla_flags(flags, host_devices=n if n > 1 else None)
        env["XLA_FLAGS"] = flags
        command = [sys.executable, __file__, "--only", case, "--steps", str(args.steps)]
        command += ["--devices", str(n)]
        row = _child(command, env)
        compiles = [row] + [
            _child([*command, "--compile-only"], env) for _ in range(args.compile_runs - 1)
        ]
        median = sorted(compiles, key=lambda c: c["compile_s"])[(len(compiles) - 1) // 2]
        row.update(
            compile_s=median["compile_s"],
            trace_lower_s=median["trace_lower_s"],
            xla_compile_s=median["xla_compile_s"],
            compile_min_s=min(c["compile_s"] for c in compiles),
            compile_max_s=max(c["compile_s"] for c in compiles),
            compile_runs=[c["compile_s"] for c in compiles],
        )
        floor_s = row["analytic_mflop"] * 1e6 / ceiling
        row["floor_ms"] = 1e3 * floor_s
        row["times_floor"] = row["median_ms"] / row["floor_ms"]
        row["achieved_gflops"] = row["analytic_mflop"] / row["median_ms"]
        rows.append(row)
        print(
            f"  {row['case']}: {row['median_ms']:.2f} ms, compile {row['compile_s']:.2f} s",
            file=sys.stderr,
        )

    print(_table(rows, ceiling))
    import jax

    result = {
        "workload": "W1",
        "ceiling_gflops": ceiling / 1e9,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "xla_flags_plain": args.plain_xla,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    tmp = args.out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
