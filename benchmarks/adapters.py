"""Few-shot adaptation by each adapter from a trained initialisation, timed.

For every held-out task of a finished run's family, the initialisation of one of its
methods (a conditioned one is bound to the task first) is adapted by each adapter
given, one compiled step at a time, so that the wall-clock at every step is what a
user waits for (compile time apart). The relative L2 error against the family's
reference is read at the recorded step counts.

    python benchmarks/adapters.py RUN [--method cond-multitask] [--seed 0] \
        [--adapters adam lbfgs gn] [--out benchmarks/results/adapters_w3.json]

Adapters (names on the command line):

- `adam`: the run's common adaptation schedule (Adam at `eval_lr` after
  `eval_warmup` warm-up steps), read at 0, 10, 100, 1000 steps;
- `lbfgs`: `metapinn.LBFGS()`, read at 0, 10, 30, 100 steps;
- `gn`: `metapinn.GaussNewton(...)` with `--cg-steps` and `--damping`, read at 0, 1,
  3, 10, 30 steps.
"""

import argparse
import json
import pathlib
import platform

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import metapinn as mp  # noqa: E402
from metapinn._experiment._evaluation import reference_fields  # noqa: E402
from metapinn._experiment._folder import RunFolder  # noqa: E402
from metapinn._experiment._problem import (  # noqa: E402
    build_problem,
    eval_optimizer,
    initialisation,
)
from metapinn._pde._registry import family  # noqa: E402


def adapters(args, config) -> dict:
    """Each adapter by name, with the step counts to record on the way (every step of
    a second-order adapter, where seconds-to-target is read)."""
    gn = {}
    for c in args.cg_steps:
        for d in args.damping:
            gn[f"gn-c{c}-d{d:g}"] = (
                mp.GaussNewton(damping=d, cg_steps=c),
                tuple(range(args.gn_steps + 1)),
            )
    return {
        "adam": (mp.Optax(eval_optimizer(config)), mp.training.record_steps(1000)),
        "lbfgs": (mp.LBFGS(), mp.training.record_steps(100, every_until=30)),
        **gn,
    }


def run_one(adapter, record, params, static, loss, task, batch, grid, u_ref, eps):
    """The timed adaptation's record as plain data."""
    _, trace = mp.training.timed_adaptation(
        params, static, loss, task, batch, adapter=adapter, steps=record, points=grid,
        u_ref=u_ref,
    )  # fmt: skip
    return {
        "steps": list(trace.steps),
        "seconds": list(trace.seconds),
        "rel_l2": list(trace.rel_l2),
        "compile_s": trace.compile_seconds,
        "seconds_to": {str(e): trace.seconds_to(e) for e in eps},
        "steps_to": {str(e): trace.steps_to(e) for e in eps},
    }


def _at(out: dict, k: int) -> float:
    return out["rel_l2"][out["steps"].index(k)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run", help="a finished run folder (metapinn train/reproduce)")
    parser.add_argument("--method", default="cond-multitask")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--adapters", nargs="+", default=["adam", "lbfgs", "gn"],
        help="adam, lbfgs, gn (every --cg-steps x --damping), or one gn-cC-dD",
    )  # fmt: skip
    parser.add_argument("--cg-steps", type=int, nargs="+", default=[50])
    parser.add_argument("--damping", type=float, nargs="+", default=[1e-3])
    parser.add_argument("--gn-steps", type=int, default=30, help="Gauss-Newton steps")
    parser.add_argument("--tasks", type=int, nargs="*", help="task indices (default: all)")
    parser.add_argument(
        "--on", choices=("test", "train"), default="test",
        help="adapt to the held-out tasks (default) or to the training tasks (for tuning)",
    )  # fmt: skip
    parser.add_argument("--out", help="JSON file of the results")
    args = parser.parse_args()

    run = pathlib.Path(args.run)
    config = mp.experiment.load_config(run / "config.json")
    problem = build_problem(config)
    conditioned = config.method(args.method).conditioned
    like, static, _ = initialisation(config, args.seed, conditioned)
    params = RunFolder(run).load_trained(config, args.method, args.seed, like)
    loss = problem.loss(conditioned)
    if args.on == "test":
        _, _, points, u_refs = reference_fields(config)
        task_batch = problem.test_tasks
    else:
        fam = family(config.family)
        x, t, points, _ = reference_fields(config)
        u_refs = np.asarray(fam.reference(problem.train_tasks, x, t))
        task_batch = problem.train_tasks
    dtype = jnp.dtype(config.dtype)
    grid = jnp.asarray(points, dtype)
    eps = (1e-2, 3e-3, 1e-3)
    chosen = adapters(args, config)
    n_tasks = jax.tree_util.tree_leaves(task_batch)[0].shape[0]
    tasks = args.tasks if args.tasks else list(range(n_tasks))
    results = {"run": run.name, "method": args.method, "seed": args.seed, "on": args.on,
               "tasks": tasks, "by_adapter": {},
               "machine": platform.processor() or platform.machine(),
               "devices": str(jax.devices())}  # fmt: skip
    names = [n for a in args.adapters for n in (sorted(k for k in chosen if k.startswith("gn-"))
                                             if a == "gn" else [a])]  # fmt: skip
    for name in names:
        adapter, record = chosen[name]
        report = [k for k in (0, 1, 3, 10, 30, 100, 1000) if k in record]
        per_task = []
        for n in tasks:
            task = jax.tree_util.tree_map(lambda x, n=n: x[n], task_batch)
            p, s, task_loss = params, static, loss
            if conditioned:
                bound = loss.bind(eqx.combine(params, static), task)
                p, s = eqx.partition(bound, eqx.is_inexact_array)
                task_loss = loss.loss
            u_ref = jnp.asarray(u_refs[n].reshape(-1), jnp.float64)
            out = run_one(adapter, record, p, s, task_loss, task, problem.points, grid,
                          u_ref, eps)  # fmt: skip
            per_task.append(out)
            print(name, n, {k: f"{_at(out, k):.3g}" for k in report},
                  {k: f"{out['seconds'][out['steps'].index(k)]:.2f}s" for k in report},
                  "s-to", out["seconds_to"], flush=True)  # fmt: skip
        mean = {k: float(np.mean([_at(t, k) for t in per_task])) for k in report}
        results["by_adapter"][name] = {"adapter": repr(adapter), "per_task": per_task,
                                       "mean_rel_l2": mean}  # fmt: skip
        print(name, "mean", {k: f"{v:.3g}" for k, v in mean.items()}, flush=True)
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
