# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Few-shot solving on W3: every method beside its baselines
#
# Workload W3 is the accurate Burgers workload: a 4 × 64 tanh network (12,737
# parameters) on 2000 interior, 250 initial and 2 × 125 boundary points, re-drawn at
# every meta-step, so that the network *can* represent the solution and an
# initialisation has something to win. This notebook runs the main job on it (what
# `metapinn reproduce` runs without arguments) and reads its results:
#
# - the learners: multi-task pre-training, Reptile, second-order MAML and Meta-SGD
#   (the last three warm-started from the pre-training);
# - the baselines a PINN user would try first: random initialisation given ten times
#   the steps, the PINN that takes the viscosity as an input (the *conditioned
#   PINN*), and transfer from the nearest training viscosity;
# - the same learners on the conditioned network (here its Reptile initialisation).
#
# Every initialisation is adapted with the same optimiser on the held-out
# viscosities, and every number is the relative L2 error against the spectral
# reference solution, not the PINN loss.
#
# Without `METAPINN_QUICK=1` this is one seed of W3, about 25 minutes on 2 CPU cores;
# with it, a smoke run of a few minutes whose numbers mean nothing. The spread over
# three seeds is `metapinn reproduce --seeds 0 1 2`.

# %%
# %matplotlib inline
import os
import pathlib
import tempfile

import jax
import matplotlib.pyplot as plt

import metapinn as mp


# The reference solver works in float64 (the PINNs train in the config's float32).
jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("METAPINN_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. The configuration
#
# `mp.experiment.workload("W3")` is an `ExperimentConfig`: the network, the points, the
# viscosities, the methods and each method's own budget (its `overrides`).

# %%
config = mp.experiment.workload("W3")
if QUICK:  # the whole pipeline at smoke size: compilation dominates
    config = mp.experiment.quick(config).replace(
        width=16, depth=2, n_interior=200, n_initial=50, n_boundary=25, seeds=(0,),
        test_params=config.test_params[:2],
    )  # fmt: skip
print("network:", f"{config.depth} hidden layers of {config.width}, tanh,", config.dtype)
print("points:", config.n_interior, config.n_initial, config.n_boundary, "re-sampled:",
      config.resample)  # fmt: skip
print("training viscosities:", config.train_params)
print("held-out viscosities:", config.test_params)
print("methods:", ", ".join(config.methods))
print("their own settings:")
for method in config.methods:
    own = [o.split(".", 1)[1] for o in config.overrides if o.split(".")[0] == method]
    print(f"  {method}: {', '.join(own)}")

# %% [markdown]
# ## 2. The run
#
# `mp.experiment.reproduce` trains every method (checkpointed: an interrupted call continues with
# `resume=True`), computes the reference solutions, adapts every initialisation on
# every held-out viscosity, and writes `results.md`, `results.json` and the plots
# into the run folder.

# %%
out_dir = pathlib.Path(tempfile.mkdtemp(prefix="w3-"))
results = mp.experiment.reproduce(config, out_dir, progress=False, log=lambda line: None)
labels, steps, budget = results["labels"], results["steps"], config.budget
print("run folder:", out_dir)
print("training seconds:", results["timing"]["training_seconds"])

# %% [markdown]
# ## 3. Every initialisation, before and after adaptation
#
# The relative L2 error, mean over the held-out viscosities, after `k` adaptation
# steps (k = 0 is the initialisation itself: only the conditioned PINN can be
# accurate there, since it is the only network told the viscosity).


# %%
def rel_l2(init: str, k: int) -> float:
    """The mean over held-out viscosities (NaN if every seed of `init` diverged)."""
    mean = next(e for e in results["curves"][init] if e["steps"] == k)["rel_l2"]["mean"]
    return float("nan") if mean is None else mean


shown = list(dict.fromkeys((0, budget, steps[-1])))
print(f"{'initialisation':<30}" + "".join(f"{'k=' + str(k):>10}" for k in shown))
for init in results["inits"]:
    print(f"{labels[init]:<30}" + "".join(f"{rel_l2(init, k):>10.3g}" for k in shown))

# %%
fig, ax = plt.subplots(figsize=(7, 4.5))
for init in results["inits"]:
    curve = [rel_l2(init, k) for k in steps]
    style = "--" if init == "random" else "-"
    ax.plot(steps, curve, style, marker="o", ms=3, label=labels[init])
ax.axvline(budget, color="grey", lw=0.8)
ax.set_xscale("symlog", linthresh=10)
ax.set(yscale="log", xlabel="adaptation steps k", ylabel="rel-L2 vs reference",
       title="Few-shot adaptation on held-out viscosities")  # fmt: skip
ax.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 4. Steps to a target error
#
# How many adaptation steps each initialisation needs to reach a relative L2 error
# ε (mean over the held-out viscosities, at the recorded step counts), and the
# speed-up over random initialisation where both reach it.

# %%
for eps in config.eps:
    row = [e for e in results["steps_to_eps"] if e["eps"] == eps]
    cells = []
    for e in row:
        reached = "-" if e["steps"] is None else str(e["steps"])
        speedup = e.get("speedup", {}).get("value")
        relation = e.get("speedup", {}).get("relation")
        at_least = "> " if relation == ">" else ""  # random init never reached it
        faster = f" ({at_least}{speedup:.3g}x faster)" if speedup else ""
        cells.append(f"{labels[e['init']]}: {reached}{faster}")
    print(f"eps = {eps:g}: " + "; ".join(cells))

# %% [markdown]
# ## 5. Gauss–Newton and L-BFGS, in steps and in seconds
#
# Adam is one adapter among three. W3 also adapts every initialisation by
# Levenberg–Marquardt on the PINN's residual vector (`mp.GaussNewton`) and by L-BFGS
# (`mp.LBFGS`), each held-out viscosity alone and timed: the error after k steps with
# the mean seconds it took, and a ▲ where an adapter has made the error worse than the
# initialisation it started from.


# %%
def cell(e: dict) -> str:
    if e["mean"] is None:
        return "non-finite"
    seconds = f" ({e['seconds']:.2g} s)" if e["steps"] else ""
    return f"{e['mean']:.3g}{seconds}{' ▲' if e['worse'] else ''}"


for name, adapter in results["adapters"].items():
    print(f"{name}: " + ", ".join(f"k={k}" for k in adapter["steps"]))
    for row in adapter["rows"]:
        print(f"  {labels[row['init']]:<28}" + "; ".join(cell(e) for e in row["rel_l2"]))

# %% [markdown]
# ## 6. The verdict, and the fields
#
# The run's own comparisons of each learner with each baseline at the budget (with
# one seed, none is judged against a spread):

# %%
print("\n".join(results["verdict"]))

# %% [markdown]
# The reference and each PINN after the budget, for one held-out viscosity, as the
# run drew them:

# %%
from IPython.display import Image, display  # noqa: E402


display(Image(filename=str(out_dir / "plots" / "fields.png")))
