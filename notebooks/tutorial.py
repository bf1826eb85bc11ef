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
# # Meta-learned PINN initialisations for the Burgers family, measured against the truth
#
# A physics-informed neural network (PINN) for one member of a PDE family is usually
# trained from a random initialisation. Meta-learning looks for an initialisation
# from which a *new* member of the family is learnt in a few steps. This notebook
# walks through the experiment that `metapinn reproduce --workload W1` runs:
#
# 1. the Burgers family and the workload W1 (network, collocation points, viscosities);
# 2. meta-training of second-order MAML, first-order MAML, Reptile and multi-task
#    pre-training, all from the same random initialisation;
# 3. few-shot adaptation on held-out viscosities, from each initialisation and from
#    the random one;
# 4. the judgement: not only the PINN loss, which a network can lower without
#    solving the PDE, but the **relative L2 error against a reference solution** and
#    the PDE residual.
#
# Only the public `metapinn` API is used. Set the environment variable
# `METAPINN_QUICK=1` for a smoke run of a minute or two (the numbers are then
# meaningless); without it the notebook runs one seed of the full W1 experiment.
# The three-seed version, with mean ± spread, is `metapinn reproduce --workload W1`.

# %%
# %matplotlib inline
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import metapinn as mp


# The reference solver works in float64; the PINN itself is trained in float32,
# because every array below is created with an explicit dtype.
jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("METAPINN_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. The workload
#
# Burgers' equation $u_t + u u_x = \nu u_{xx}$ on $x \in [-1, 1]$, $t \in [0, 1]$,
# with $u(x, 0) = -\sin \pi x$ and $u(\pm 1, t) = 0$. The family is indexed by the
# viscosity $\nu$. `ExperimentConfig()` holds the settings of workload W1: a
# 2 → 32 → 32 → 1 tanh network, 200 interior, 50 initial and 2 × 20 boundary points
# drawn once, six training viscosities and four held-out ones.

# %%
config = mp.experiment.ExperimentConfig()
if QUICK:  # a smaller network too: compilation dominates a smoke run
    config = config.replace(
        width=8, depth=1, meta_steps=5, seeds=[0], test_params=list(config.test_params[2:]),
        eval_steps=[0, 10, 50], budget=10,
    )  # fmt: skip
else:
    config = config.replace(seeds=[0])
dtype = jnp.float32
seed = config.seeds[0]
print("training viscosities:", [round(nu, 4) for nu in config.train_params])
print("held-out viscosities:", [round(nu, 4) for nu in config.test_params])

pde = mp.Burgers()
loss_fn = mp.PINNLoss(pde)
points = mp.sample_collocation(
    jr.key(config.points_seed), pde, config.n_interior, config.n_initial, config.n_boundary
)
points = jax.tree_util.tree_map(lambda x: x.astype(dtype), points)
train_tasks = mp.BurgersTask(jnp.asarray(config.train_params, dtype=dtype))
test_tasks = mp.BurgersTask(jnp.asarray(config.test_params, dtype=dtype))

init_key, run_key = jr.split(jr.key(seed))
pinn = mp.MLPPINN(config.width, config.depth, dtype=dtype, key=init_key)
random_init, static = eqx.partition(pinn, eqx.is_inexact_array)
n_params = sum(x.size for x in jax.tree_util.tree_leaves(random_init))
print(f"PINN parameters: {n_params}")

# %% [markdown]
# ## 2. Meta-training
#
# Each learner is one inner loop (`K` SGD steps, a single `lax.scan`) with
# `stop_gradient` in a different place: MAML differentiates through the loop,
# first-order MAML does not, Reptile moves towards the adapted parameters, and the
# multi-task baseline has no inner loop at all. `meta_train` runs the outer loop
# with Adam; given a `run_dir` it would also write checkpoints and could resume.
# Every method starts from the same `random_init` and sees the same points and tasks.

# %%
outer = optax.adam(config.outer_lr)  # one object, so each method compiles once
learners = {
    "maml": mp.MAML(inner_steps=config.inner_steps, inner_optimizer=config.inner_lr),
    "fomaml": mp.FOMAML(inner_steps=config.inner_steps, inner_optimizer=config.inner_lr),
    "reptile": mp.Reptile(inner_steps=config.inner_steps, inner_optimizer=config.inner_lr),
    "multitask": mp.MultiTask(),
}
trained = {}
for name, learner in learners.items():
    trained[name] = mp.meta_train(
        learner, random_init, static, loss_fn, train_tasks, points,
        steps=config.meta_steps, optimizer=outer, key=run_key, description=name,
    )  # fmt: skip

labels = {"maml": "MAML", "fomaml": "First-order MAML", "reptile": "Reptile",
          "multitask": "Multi-task"}  # fmt: skip
curves = {name: r.query_loss.mean(axis=1)[None] for name, r in trained.items()}
mp.experiment.plot_meta_training(curves, labels)

# %% [markdown]
# ## 3. The truth: reference solutions
#
# A Fourier pseudo-spectral solver integrated with diffrax gives $u$ on the standard
# 256 × 101 grid to about $10^{-7}$ relative error; solutions are cached on disk.

# %%
x, t = mp.Burgers().standard_grid()
u_ref = mp.cached_burgers_reference(np.asarray(config.test_params), x, t)
grid = mp.grid_points(x, t, dtype=dtype)
print("reference fields:", u_ref.shape)

# %% [markdown]
# ## 4. Few-shot adaptation on held-out viscosities
#
# Every initialisation — the random one and the four meta-trained ones — is adapted
# with the same optimiser (Adam, learning rate `eval_lr`) on the same points, on each
# held-out viscosity. `few_shot` runs one scan of `max(eval_steps)` steps per
# (initialisation, viscosity) pair, vmapped over both, and keeps the parameters at
# each recorded step count; `field_metrics` then measures them on the grid.

# %%
names = ["random", *learners]
inits = [random_init] + [trained[name].params for name in learners]
stacked = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *inits)
trace = mp.few_shot(
    stacked, static, loss_fn, test_tasks, points,
    steps=config.eval_steps, optimizer=optax.adam(config.eval_lr),
)  # fmt: skip

n_init, n_nu, n_k = len(names), len(config.test_params), len(config.eval_steps)
flat = jax.tree_util.tree_map(lambda a: a.reshape((-1,) + a.shape[3:]), trace.params)
task_index = jnp.broadcast_to(jnp.arange(n_nu)[None, :, None], (n_init, n_nu, n_k)).reshape(-1)
metrics = mp.field_metrics(
    flat, static, pde, test_tasks, task_index, grid,
    jnp.asarray(u_ref.reshape(n_nu, -1)), grid[:: 4],
)  # fmt: skip
# (init, nu, k), with a seed axis of size 1 for the plotting helpers
rel_l2 = np.asarray(metrics.rel_l2).reshape(n_init, 1, n_nu, n_k)
loss = np.asarray(trace.losses, dtype=np.float64).reshape(n_init, 1, n_nu, n_k)
residual = np.asarray(metrics.rms_residual).reshape(n_init, 1, n_nu, n_k)

# %% [markdown]
# ## 5. Results
#
# The seed tutorial compared methods by PINN loss only. Here every row also has the
# RMS PDE residual (on every fourth grid point) and the error against the reference,
# averaged over the held-out viscosities.

# %%
kb, k_max = config.eval_steps.index(config.budget), config.eval_steps[-1]
rows = [(f"{labels[n]} + adapt", i, kb) for i, n in enumerate(names) if n != "random"]
rows += [("Random init", 0, kb), ("Random init", 0, n_k - 1)]
print(f"{'Method':<26}{'Steps':>6}{'Loss':>11}{'Residual':>11}{'rel-L2':>9}")
for label, i, k in rows:
    print(
        f"{label:<26}{config.eval_steps[k]:>6}{loss[i, 0, :, k].mean():>11.4f}"
        f"{residual[i, 0, :, k].mean():>11.4f}{rel_l2[i, 0, :, k].mean():>9.3f}"
    )
best = min(range(1, n_init), key=lambda i: rel_l2[i, 0, :, kb].mean())
print(
    f"\nBest meta-initialisation + {config.budget} steps ({labels[names[best]]}): rel-L2 "
    f"{rel_l2[best, 0, :, kb].mean():.3f}; random init + {k_max} steps: "
    f"{rel_l2[0, 0, :, -1].mean():.3f}"
)

# %%
display_labels = ["Random init"] + [labels[n] for n in learners]
mp.experiment.plot_few_shot(config.eval_steps, {"rel_l2": rel_l2, "loss": loss}, display_labels)

# %%
mp.experiment.plot_per_task(
    [f"nu={nu:.4g}" for nu in config.test_params], rel_l2, display_labels, config.eval_steps,
    config.budget,
)  # fmt: skip

# %% [markdown]
# Finally the fields themselves for the first held-out viscosity: the reference, and
# each PINN after the few-shot budget, with its error.

# %%
fields = {}
for i in range(n_init):
    p = jax.tree_util.tree_map(lambda a, i=i: a[i, 0, kb], trace.params)
    u = eqx.combine(p, static)(grid)
    fields[f"{display_labels[i]} + {config.budget}"] = np.asarray(u).reshape(len(t), len(x))
label = f"nu={config.test_params[0]:.4g}"
mp.experiment.plot_fields(np.asarray(x), np.asarray(t), u_ref[0], fields, label, seed=seed)

# %% [markdown]
# ## The whole experiment in one call
#
# `metapinn reproduce --workload W1` (or `mp.experiment.reproduce(mp.experiment.workload("W1"))`)
# runs all of the above for three seeds, with checkpoints, `--resume`, a results table with
# mean ± spread, "steps to ε" with speed-ups over random init, and these plots, all in
# one output folder. `metapinn reproduce` alone runs the accurate workload W3, where
# the network can represent the solution and the initialisations differ (see the
# results page of the documentation). `metapinn --help` lists the commands.
