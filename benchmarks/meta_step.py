"""Speed of one meta-step on workload W1 or W3 (docs/design.md §3), by the speed protocol (§4).

For each case (W1, the default: second-order MAML, first-order MAML, Reptile,
multi-task pre-training and a 100-step Adam adaptation; W3: those and Reptile with a
K = 10 Adam inner loop, Meta-SGD, iMAML and the conditioned PINN's multi-task step;
see `CASES`) this measures: the *cold* compile time, i.e. the first
`.lower()` (JAX tracing and lowering) plus `.compile()` (XLA) of the step in a fresh
process, before anything else is traced, repeated in `--compile-runs` fresh processes
(median, min and max reported, with the median split into its JAX and XLA parts); the
median and min–max of >= 20 steps (each ended with `block_until_ready`); the analytic
float32 FLOPs of a step and XLA's own count of the compiled program; the achieved
rate; the ratio of the measured time to the *floor* (analytic FLOPs ÷ the best rate of
a 2048³ float32 matmul measured in the same run); and the peak resident memory of the
process that ran the case (each case runs in its own subprocesses, so memory and
compile caches don't leak between cases).

Each case runs with the XLA:CPU flags of `metapinn.experiment.configure_cpu` (fast compiles;
`--plain-xla` leaves them out). With `--devices N`, the meta-learner cases also run
with the task axis sharded over N host devices, one per core (docs/design.md §7). With
`--tasks-at-once vmap 1`, each meta-learner case runs once vmapped over its tasks and
once mapped over them one at a time (`meta_step(..., tasks_at_once=1)`), as separate
rows; by default a case runs as the main job runs it (vmapped, except the
conditioned PINN's multi-task step, one task at a time).

W3 uses one fixed draw of support points and one of query points for every timed
step (the main job re-samples both every step, in a separate small jitted call).

Run from the repository root:

    python benchmarks/meta_step.py [--workload W1|W3] [--cases ...] [--steps 30]
        [--compile-runs 5] [--devices 1 2] [--tasks-at-once vmap 1 ...]
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


W1_CASES = ("maml", "fomaml", "reptile", "multitask", "adapt100")
W3_CASES = (
    "maml",
    "fomaml",
    "reptile",
    "reptile-adam10",
    "multitask",
    "metasgd",
    "imaml",
    "cond-multitask",
    "adapt100",
)
CASES = tuple(dict.fromkeys(W1_CASES + W3_CASES))
DEFAULT_CASES = {"W1": W1_CASES, "W3": W3_CASES}


@dataclasses.dataclass(frozen=True)
class Workload:
    """The network and point counts of a workload (docs/design.md §3)."""

    width: int
    depth: int
    n_interior: int
    n_initial: int
    n_boundary: int  # per boundary (x = -1 and x = 1)


WORKLOADS = {
    # W1: 2 -> 32 -> 32 -> 1 (1,185 parameters), 200 / 50 / 20 per boundary.
    "W1": Workload(32, 2, 200, 50, 20),
    # W3: 2 -> 64 -> 64 -> 64 -> 64 -> 1 (12,737 parameters), 2000 / 250 / 125 per boundary.
    "W3": Workload(64, 4, 2000, 250, 125),
}
# Shared by W1 and W3: 6 tasks (the training viscosities), K = 5 SGD steps at 0.01,
# outer Adam at 1e-3.
TASKS, INNER_STEPS, INNER_LR, OUTER_LR = 6, 5, 0.01, 1e-3
ADAPT_STEPS = 100
# Reptile as the W3 experiment trains it: K = 10 Adam steps at 1e-3.
REPTILE_ADAM_STEPS, REPTILE_ADAM_LR = 10, 1e-3
# iMAML's default CG settings (checked against `metapinn.IMAML` in `run_case`).
IMAML_CG_STEPS = 5


# How each case maps over its tasks by default, as the main job runs it (`None`:
# vmapped): the conditioned network's jet differs per task, so one at a time.
def main_job_tasks_at_once(case: str, workload: str) -> int | None:
    """How the main job maps a case's tasks (`metapinn.experiment.Method.tasks_at_once`):
    plain multi-task vmapped (its jet is shared), the conditioned one a task at a time,
    and the learners with an inner loop as the workload's `tasks_at_once` (W3: 1)."""
    from metapinn._experiment import workload as named_workload

    if case == "multitask":
        return None
    if case == "cond-multitask":
        return 1
    return named_workload(workload).tasks_at_once or None


def gradient_flops(workload: str = "W1") -> float:
    """Matmul FLOPs of one gradient of the PINN loss of `workload` (docs/design.md §4).

    One loss evaluation pushes the value through the network at all
    `n_int + n_ic + n_bc` points and three more streams (`u_x, u_t, u_xx`) at the
    interior points: `F = 2 · Σ fan_in·fan_out · (4 n_int + n_ic + 2 n_bc)`, with
    `Σ fan_in·fan_out = 2w + (D - 1)w² + w` for D hidden layers of width w. A gradient
    costs `3F` (forward + two matmuls back per layer). W1: F = 1.99 MFLOP, gradient
    5.98 MFLOP. W3: Σ = 12,480 and 8,500 columns, so F = 0.212 GFLOP (the jet forward)
    and the gradient 0.637 GFLOP (docs/design.md §4: about 0.64 = 0.21 + 0.42).
    """
    w = WORKLOADS[workload]
    fan = 2 * w.width + (w.depth - 1) * w.width * w.width + w.width
    f = 2 * fan * (4 * w.n_interior + w.n_initial + 2 * w.n_boundary)
    return 3 * f


def analytic_flops(case: str, workload: str = "W1") -> float:
    """Matmul FLOPs of one step of `case` on `workload`, counted as docs/design.md §4
    prescribes, in gradients `G` of the PINN loss (`gradient_flops`); elementwise
    work (optimiser updates, activations, the rates of Meta-SGD) is left out.

    Per task, with K inner steps:

    - `maml` (second order, SGD): K inner gradients + the query gradient, and
      differentiating back through each inner gradient step is a Hessian-vector
      product, ≈ 2G (forward mode over the gradient): `(K + 1)G + 2KG = (3K + 1)G`.
    - `metasgd`: as `maml` (the learned rates add only elementwise products).
    - `fomaml`: `(K + 1)G`, nothing differentiated back through the loop.
    - `reptile`, `reptile-adam10`: `KG` (K = 5 SGD, K = 10 Adam); the query loss,
      evaluated at φ_K for monitoring only, is a forward pass (G/3) not counted.
    - `imaml`: K proximal inner gradients + the query gradient + the CG solve's
      Hessian-vector products, at most `cg_steps + 1` (the initial residual and one
      per step) of ≈ 2G each: `(K + 1)G + 2(cg_steps + 1)G`.
    - `multitask`, `cond-multitask`: `G` (the conditioned network's condition only
      shifts the first layer's bias, W flops). With shared points plain multi-task
      computes the network's jet once for all tasks, so `6G` overstates its floor.

    and `adapt100` is `100G` (one task). The meta-learner cases are × 6 tasks.
    """
    grad = gradient_flops(workload)
    k = INNER_STEPS
    per_task = {
        "maml": (3 * k + 1) * grad,
        "metasgd": (3 * k + 1) * grad,
        "fomaml": (k + 1) * grad,
        "reptile": k * grad,
        "reptile-adam10": REPTILE_ADAM_STEPS * grad,
        "imaml": (k + 1) * grad + 2 * (IMAML_CG_STEPS + 1) * grad,
        "multitask": grad,
        "cond-multitask": grad,
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


def _learner(case: str):
    """The meta-learner of `case`, with the settings the main job trains it with."""
    import optax

    import metapinn as mp

    if case in ("multitask", "cond-multitask"):
        # The conditioned network's jet differs per task: the loss's own gradient.
        return mp.MultiTask(own_gradient=case == "cond-multitask")
    if case == "reptile-adam10":
        # As the W3 experiment's `reptile.inner_optimizer=adam` (eps_root as there).
        inner = optax.adam(REPTILE_ADAM_LR, eps_root=1e-16)
        return mp.Reptile(inner_steps=REPTILE_ADAM_STEPS, inner_optimizer=inner)
    learner = mp.make_learner(case, inner_steps=INNER_STEPS, inner_optimizer=INNER_LR)
    if case == "imaml" and learner.cg_steps != IMAML_CG_STEPS:
        raise AssertionError(f"analytic_flops assumes cg_steps={IMAML_CG_STEPS}")
    return learner


def case_label(case: str, devices: int = 1, tasks_at_once: int | None = None) -> str:
    """`maml`, `maml/2dev`, `cond-multitask/map1` (`lax.map` over groups of 1 task)."""
    label = case if devices == 1 else f"{case}/{devices}dev"
    return label if tasks_at_once is None else f"{label}/map{tasks_at_once}"


def run_case(
    case: str,
    steps: int,
    devices: int = 1,
    compile_only: bool = False,
    workload: str = "W1",
    tasks_at_once: int | None = None,
) -> dict:
    """Compile and time one case of `workload` in this process; with `devices > 1`,
    the task axis of the meta-step is sharded over that many (host) devices, and with
    an integer `tasks_at_once` the tasks (of each device) are mapped over in groups of
    that size (`meta_step(..., tasks_at_once=...)`). The first thing traced is the
    timed step, so its compile time is a cold one; `compile_only` stops there."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import optax

    import metapinn as mp

    w = WORKLOADS[workload]
    pde = mp.Burgers()
    loss_fn = mp.PINNLoss(pde)
    if case == "cond-multitask":
        net = mp.ConditionedPINN(1, w.width, w.depth, dtype=jnp.float32, key=jr.key(0))
        loss_fn = mp.ConditionedLoss(loss_fn, mp.LogScaledFeature(0.005, 0.05))
    else:
        net = mp.MLPPINN(w.width, w.depth, dtype=jnp.float32, key=jr.key(0))
    params, static = eqx.partition(net, eqx.is_inexact_array)
    batch = mp.sample_collocation(jr.key(1), pde, w.n_interior, w.n_initial, w.n_boundary)
    # W1 reuses the support points as the query points (as its main job does); W3
    # draws the query points independently, once (the main job re-samples both).
    query = None
    if workload != "W1":
        query = mp.sample_collocation(jr.key(2), pde, w.n_interior, w.n_initial, w.n_boundary)
    nus = jnp.linspace(0.005, 0.05, 12, dtype=jnp.float32)
    xla_note = None

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
        learner = _learner(case)
        optimizer = optax.adam(OUTER_LR)
        tasks = mp.BurgersTask(nus[::2])
        # Meta-SGD trains its rates with the initialisation: a `MetaParams`.
        meta_params = learner.init_meta_params(params)

        # Tasks and points are arguments, not closed-over constants: a constant loses
        # its sharding, and with it the split of the task axis over devices.
        mesh = mp.task_mesh(devices) if devices > 1 else None
        if TASKS % devices:
            raise ValueError(f"{TASKS} tasks do not split over {devices} devices")

        def make(learner, at_once):
            def step(p, state, tasks, batch, query):
                return mp.meta_step(
                    learner,
                    p,
                    static,
                    state,
                    optimizer,
                    loss_fn,
                    tasks,
                    batch,
                    query,
                    mesh=mesh,
                    tasks_at_once=at_once,
                )

            return eqx.filter_jit(step)

        step_fn = make(learner, tasks_at_once)
        args = (meta_params, optimizer.init(meta_params))
        if devices > 1:
            # The task axis split over the devices by `meta_step(..., mesh=...)`
            # (docs/design.md §7); the inputs are placed so, everything else replicated.
            from jax.sharding import NamedSharding, PartitionSpec

            tasks = jax.device_put(tasks, NamedSharding(mesh, PartitionSpec("tasks")))
            replicated = NamedSharding(mesh, PartitionSpec())
            batch, query = jax.device_put((batch, query), replicated)
            args = jax.device_put(args, replicated)
        args = (*args, tasks, batch, query)
        # XLA counts a loop body once, so count FLOPs on a fully unrolled copy. Unroll
        # by the step count, not `True`: True == 1 and hash(True) == hash(1), so a
        # learner with `inner_unroll=True` shares JIT cache entries with the default
        # `inner_unroll=1`, and the timed step below would run the unrolled program.
        unrolled = dataclasses.replace(learner, inner_unroll=max(learner.inner_steps, 2))
        # `lax.map` over groups of tasks is a loop too, which cannot be unrolled from
        # here: count a batch of one group per device (one trip) and scale by the
        # number of groups (the outer update, elementwise, is scaled with it).
        per_device = TASKS // devices
        group = per_device if tasks_at_once is None else min(tasks_at_once, per_device)
        groups = per_device // group
        if case == "imaml":
            xla_note = (
                "CG is a lax.while_loop, counted once: at most "
                f"{IMAML_CG_STEPS - 1} of its {IMAML_CG_STEPS + 1} Hessian-vector "
                "products are missing from the XLA count"
            )

        def count_flops():
            count_args = list(args)
            if groups > 1:
                count_args[2] = jax.tree_util.tree_map(lambda x: x[: group * devices], tasks)
            count_fn = make(unrolled, tasks_at_once)
            return _xla_flops(count_fn.lower(*count_args).compile().compiled) * groups

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
        "case": case_label(case, devices, tasks_at_once),
        "workload": workload,
        "devices": devices,
        "tasks_at_once": tasks_at_once,
        **timing,
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "max_ms": 1e3 * max(times),
        "steps_timed": steps,
        "analytic_mflop": analytic_flops(case, workload) / 1e6,
        "xla_mflop": xla / 1e6,
        "xla_note": xla_note,
        "peak_rss_mib": rss_kib / 1024,
    }


def _child(command: list[str], env: dict) -> dict:
    """Run one case in a fresh process; its JSON result."""
    proc = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"benchmark command {command[2:]} failed (exit {proc.returncode})")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(rows: list[dict], ceiling: float, workload: str, steps: int) -> str:
    width = max([16] + [len(r["case"]) for r in rows])
    head = (
        f"{'case':<{width}} {'compile s':>9} {'min–max s':>11} {'JAX+XLA s':>10} "
        f"{'median ms':>10} {'min–max ms':>15} "
        f"{'analytic MF':>11} {'XLA MF':>8} {'GFLOP/s':>8} {'floor ms':>8} "
        f"{'×floor':>7} {'RSS MiB':>8}"
    )
    lines = [f"workload {workload}", head, "-" * len(head)]
    notes = []
    for r in rows:
        mark = ""
        if r.get("xla_note"):
            notes.append(f"* {r['case']}: {r['xla_note']}")
            mark = "*"
        lines.append(
            f"{r['case']:<{width}} {r['compile_s']:>9.2f} "
            f"{r['compile_min_s']:>5.2f}–{r['compile_max_s']:<5.2f} "
            f"{r['trace_lower_s']:>4.2f}+{r['xla_compile_s']:<5.2f} {r['median_ms']:>10.2f} "
            f"{r['min_ms']:>7.2f}–{r['max_ms']:<7.2f} {r['analytic_mflop']:>11.1f} "
            f"{r['xla_mflop']:>7.1f}{mark or ' '} {r['achieved_gflops']:>8.1f} "
            f"{r['floor_ms']:>8.2f} {r['times_floor']:>7.1f} {r['peak_rss_mib']:>8.0f}"
        )
    lines.append(f"ceiling: 2048³ float32 matmul at {ceiling / 1e9:.1f} GFLOP/s (same run)")
    lines.append(
        "compile: cold, median over fresh processes (min–max); JAX+XLA: the median's "
        "tracing+lowering and XLA compile parts"
    )
    lines.append(
        "/Ndev: task axis sharded over N host devices; /mapN: tasks mapped in groups of N "
        "(meta_step(..., tasks_at_once=N)), else vmapped"
    )
    lines += notes
    if steps < 20:
        lines.append(f"only {steps} timed steps: a smoke test, not the speed protocol (>= 20)")
    return "\n".join(lines)


def _tasks_at_once(value: str) -> int | None:
    """`--tasks-at-once` values: `vmap` (None) or a positive integer."""
    if value == "vmap":
        return None
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected 'vmap' or a positive integer, got {value!r}")
    return number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="W1",
        help="the network and points (docs/design.md §3); W1 by default",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=30,
        help="timed steps per case (>= 20 by the protocol; fewer only for a smoke test)",
    )
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        help=f"default: W1 {' '.join(W1_CASES)}; W3 {' '.join(W3_CASES)}",
    )
    parser.add_argument(
        "--out",
        help="where to write the JSON results (default benchmarks/results/meta_step.json "
        "for W1, meta_step_w3.json for W3)",
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
        "--tasks-at-once",
        type=_tasks_at_once,
        nargs="+",
        metavar="{vmap,N}",
        help="how the meta-learner cases map over their tasks, each value its own rows: "
        "vmap, or N for meta_step(..., tasks_at_once=N), groups of N one after another; "
        "e.g. --tasks-at-once vmap 1. Default: as the main job (W1: vmap; W3: 1, except "
        "plain multitask, vmapped)",
    )
    parser.add_argument(
        "--plain-xla",
        action="store_true",
        help="leave out the fast-compile XLA:CPU flags of metapinn.experiment.configure_cpu",
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
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.compile_runs < 1:
        parser.error(f"--compile-runs must be >= 1, got {args.compile_runs}")

    if args.only:  # child process: one case, JSON on stdout
        at_once = args.tasks_at_once[0] if args.tasks_at_once else None
        row = run_case(
            args.only, args.steps, args.devices[0], args.compile_only, args.workload, at_once
        )
        print(json.dumps(row))
        return 0

    if args.steps < 20:
        print(
            f"warning: {args.steps} timed steps is below the speed protocol's 20; "
            "use it for smoke tests only",
            file=sys.stderr,
        )
    cases = args.cases or list(DEFAULT_CASES[args.workload])
    out = args.out or os.path.join(
        "benchmarks",
        "results",
        "meta_step.json" if args.workload == "W1" else f"meta_step_{args.workload.lower()}.json",
    )
    for n in args.devices:
        if n < 1 or TASKS % n:
            parser.error(f"--devices: {TASKS} tasks do not split evenly over {n} devices")

    def modes(case: str, n: int) -> list[int | None]:
        if case == "adapt100":
            return [None]
        if args.tasks_at_once is None:
            return [main_job_tasks_at_once(case, args.workload)]
        for at in args.tasks_at_once:
            if at is not None and (TASKS // n) % min(at, TASKS // n):
                parser.error(
                    f"--tasks-at-once {at}: {TASKS // n} tasks per device do not split "
                    f"into groups of {at}"
                )
        return list(dict.fromkeys(args.tasks_at_once))

    from metapinn.experiment import cpu_xla_flags

    ceiling = matmul_ceiling()
    rows = []
    runs = [(case, 1) for case in cases if 1 in args.devices]
    runs += [(case, n) for n in args.devices if n > 1 for case in cases if case != "adapt100"]
    runs = [(case, n, at) for case, n in runs for at in modes(case, n)]
    for case, n, at in runs:
        env = dict(os.environ)
        flags = env.get("XLA_FLAGS", "")
        if args.plain_xla:
            if n > 1:
                flags = f"{flags} --xla_force_host_platform_device_count={n}".strip()
        else:
            flags = cpu_xla_flags(flags, host_devices=n if n > 1 else None)
        env["XLA_FLAGS"] = flags
        command = [sys.executable, __file__, "--only", case, "--steps", str(args.steps)]
        command += ["--devices", str(n), "--workload", args.workload]
        command += ["--tasks-at-once", "vmap" if at is None else str(at)]
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

    print(_table(rows, ceiling, args.workload, args.steps))
    import jax

    w = WORKLOADS[args.workload]
    result = {
        "workload": args.workload,
        "network": {"width": w.width, "depth": w.depth},
        "points": {
            "interior": w.n_interior,
            "initial": w.n_initial,
            "per_boundary": w.n_boundary,
            "query": "the support points" if args.workload == "W1" else "one independent draw",
        },
        "tasks": TASKS,
        "gradient_mflop": gradient_flops(args.workload) / 1e6,
        "steps_below_protocol": args.steps < 20,
        "ceiling_gflops": ceiling / 1e9,
        "device": str(jax.devices()[0]),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "jax": jax.__version__,
        "xla_flags_plain": args.plain_xla,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, indent=2)
    os.replace(tmp, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
