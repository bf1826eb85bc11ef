"""Choose the one adaptation schedule of a workload on its TRAINING tasks only.

Every trained initialisation of a finished run (except the transfer baseline, which
was trained on the training tasks themselves) is adapted to the run's *training*
viscosities with each candidate schedule (Adam at a rate, after a linear warm-up);
the schedule with the lowest rel-L2 after the budget, averaged over those
initialisations, seeds and viscosities, is the one to use for every method. The
held-out viscosities are never looked at.

Run from the repository root, on a finished run folder:

    python benchmarks/choose_schedule.py RUN [--candidates 1e-3:0 1e-3:20 3e-3:50 ...]
"""

import argparse
import json
import pathlib
import shutil
import sys
import tempfile


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=pathlib.Path, help="a finished run folder")
    parser.add_argument(
        "--candidates",
        nargs="+",
        default=["1e-3:0", "1e-3:20", "1e-3:50", "1e-3:100", "3e-4:0", "3e-4:20", "3e-3:50"],
        help="LR:WARMUP pairs (default: %(default)s)",
    )
    parser.add_argument("--steps", nargs="+", type=int, default=[0, 20, 50, 100, 200])
    parser.add_argument("--budget", type=int, default=100)
    args = parser.parse_args(argv)

    import metapinn as mp

    mp.experiment.configure_cpu()
    import jax

    jax.config.update("jax_enable_x64", True)
    import numpy as np

    from metapinn._experiment import ExperimentConfig, evaluate_runs

    config = ExperimentConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    if not config.train_params:
        raise SystemExit(
            f"{config.family}'s tasks are drawn: this script evaluates on the training "
            "values of a scalar family's parameter"
        )
    methods = [m for m in config.methods if m != "transfer"]
    base = config.replace(
        test_params=config.train_params, methods=methods, eval_steps=args.steps, budget=args.budget
    )
    rows = []
    for candidate in args.candidates:
        lr, warmup = candidate.split(":")
        changed = base.replace(eval_lr=float(lr), eval_warmup=int(warmup))
        with tempfile.TemporaryDirectory() as scratch:
            copy = pathlib.Path(scratch) / "run"
            shutil.copytree(args.run, copy)
            results = evaluate_runs(changed, copy, plots=False, log=lambda _: None)
        at = {
            i: next(e for e in results["curves"][i] if e["steps"] == args.budget)["rel_l2"]["mean"]
            for i in results["inits"]
        }
        score = float(np.mean([at[i] for i in methods]))
        rows.append((score, candidate, at))
        cells = ", ".join(f"{i} {v:.4g}" for i, v in at.items())
        print(f"{candidate}: mean over trained inits {score:.4g} ({cells})", flush=True)
    best = min(rows)
    print(f"chosen on the training tasks: {best[1]} (mean rel-L2 {best[0]:.4g} at k={args.budget})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
