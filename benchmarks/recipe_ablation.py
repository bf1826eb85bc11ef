"""The ablation of a family's recipe: `metapinn solve` from scratch on one task with the
recipe's parts added one at a time, each row with every part of the rows above it.

Rows: plain (an MLP on (x, t): no embedding, no factorisation, fixed weights with the
boundary term on, no causal weighting, no marching, no finisher) / + Fourier features /
+ periodic embedding (the boundary term then off: zero by construction) / + random
weight factorisation / + causal weighting / + gradient-norm balancing / + time-marching /
+ the Levenberg–Marquardt finisher (the full recipe). A row before marching takes the
recipe's Adam steps of every window in one run (the same Adam budget), with the decay
stretched to match; the recipe's loss weights otherwise stay. Per row: rel-L2 against the
reference on the 256 × 101 grid, training seconds (compilation apart), steps. A part the
recipe does not use (e.g. a periodic embedding for a family that is not periodic) makes
no row. Writes `benchmarks/results/ablation_<family>.json` after every row; `--resume`
keeps the rows an interrupted run of the same command already wrote.

    python benchmarks/recipe_ablation.py FAMILY --task VALUE [--out PATH] [--resume]

e.g. `python benchmarks/recipe_ablation.py convection --task 40` and
`python benchmarks/recipe_ablation.py allen-cahn --task 1e-4`: the issue's ablation
beside Wang et al. (2023)'s.
"""

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time

import jax

import metapinn as mp


def ablation_rows(full: mp.experiment.Recipe) -> list[tuple[str, mp.experiment.Recipe]]:
    """The cumulative rows: (label, recipe), plain first, the full recipe last."""
    adam_steps = full.windows * full.steps
    plain = dataclasses.replace(
        full, fourier_features=0, periodic_embedding=False, rwf=(), causal_chunks=0,
        balance_every=0, windows=1, finish_steps=0, steps=adam_steps,
        decay_steps=full.decay_steps * full.windows,
        weights=(full.weights[0], full.weights[1], 1.0),
    )  # fmt: skip
    parts = [
        ("+ Fourier features", {"fourier_features": full.fourier_features}),
        (
            "+ periodic embedding",
            {"periodic_embedding": full.periodic_embedding, "weights": full.weights},
        ),
        ("+ random weight factorisation", {"rwf": full.rwf}),
        ("+ causal weighting", {"causal_chunks": full.causal_chunks}),
        ("+ grad-norm balancing", {"balance_every": full.balance_every}),
        (
            "+ time-marching",
            {"windows": full.windows, "steps": full.steps, "decay_steps": full.decay_steps},
        ),
        ("+ Levenberg–Marquardt finisher", {"finish_steps": full.finish_steps}),
    ]
    rows = [("plain", plain)]
    for label, change in parts:
        if all(getattr(rows[-1][1], k) == v for k, v in change.items()):
            continue  # a part the recipe does not use
        rows.append((label, dataclasses.replace(rows[-1][1], **change)))
    assert rows[-1][1] == full, "the last row must be the recipe itself"
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("family")
    parser.add_argument("--task", required=True)
    parser.add_argument("--out", default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    mp.experiment.configure_cpu()
    jax.config.update("jax_enable_x64", True)  # the references (training stays float32)
    full = mp.experiment.recipe(args.family)
    command = f"python benchmarks/recipe_ablation.py {args.family} --task {args.task}"
    path = args.out or f"benchmarks/results/ablation_{args.family}.json"
    out_rows: list[dict] = []
    if args.resume and os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        if previous["command"] != command:
            raise SystemExit(f"--resume: {path} holds {previous['command']!r}, not {command!r}")
        out_rows = previous["rows"]
    start = time.perf_counter()
    for label, variant in ablation_rows(full):
        done = [r for r in out_rows if r["row"] == label]
        if done and done[0]["recipe"] == json.loads(json.dumps(dataclasses.asdict(variant))):
            continue  # (compared as JSON holds it: tuples are lists there)
        out_rows = [r for r in out_rows if r["row"] != label]
        with tempfile.TemporaryDirectory() as folder:
            r = mp.experiment.solve(args.family, args.task, folder, plot=False, with_recipe=variant)
        out_rows.append(
            {
                "row": label,
                "rel_l2": r["rel_l2"],
                "seconds": r["seconds"],
                "steps": variant.total_steps,
                "recipe": dataclasses.asdict(variant),
            }
        )
        order = [label for label, _ in ablation_rows(full)]
        out_rows.sort(key=lambda row: order.index(row["row"]) if row["row"] in order else -1)
        print(f"{label}: rel-L2 {r['rel_l2']:.3g}, {r['seconds']:.0f} s", flush=True)
        result = {
            "command": command,
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
            "jax": jax.__version__,
            "family": args.family,
            "task": args.task,
            "wall_seconds_this_run": time.perf_counter() - start,
            "rows": out_rows,
        }
        with open(path + ".tmp", "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
        os.replace(path + ".tmp", path)  # a finished row is never lost
    print(f"written: {path}")


if __name__ == "__main__":
    main()
