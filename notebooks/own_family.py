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
# # Your own PDE family: from one class to a few-shot table against the truth
#
# Every layer of metapinn above the PDE (the loss, the inner loop, the learners, the
# meta-step, the experiment pipeline) takes the family as an argument. A new family is
# one class; nothing in the library changes. This notebook writes one that metapinn
# does not ship, drift–diffusion on a periodic domain,
#
# $$u_t + a\,u_x = \kappa\,u_{xx},\qquad x \in [-1, 1),\ t \in [0, 1],\qquad
# u(x, 0) = \sin \pi x,$$
#
# with a fixed diffusivity $\kappa = 0.02$, a family over the drift speed $a$. Its
# exact solution is a travelling, decaying wave,
# $u = e^{-\kappa \pi^2 t} \sin\big(\pi (x - a t)\big)$. Then it:
#
# 1. checks the family against that exact solution (the residual, initial and
#    periodic boundary errors vanish to rounding);
# 2. checks that the network's forward-propagated derivatives are the ones the family
#    asks for (against nested `jax.grad`);
# 3. registers the family and runs the main experiment on it: multi-task
#    pre-training, Reptile and the conditioned PINN beside random init, judged by the
#    relative L2 error against the exact solution.
#
# Set `METAPINN_QUICK=1` for a smoke run of a few minutes (its numbers mean nothing);
# without it, step 3 trains one seed of workload W3's budgets for three methods
# (several minutes on 2 CPU cores).

# %%
# %matplotlib inline
import os
import pathlib
import tempfile

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float

import metapinn as mp


jax.config.update("jax_enable_x64", True)  # the checks run in float64
QUICK = os.environ.get("METAPINN_QUICK", "") not in ("", "0")

# %% [markdown]
# ## 1. The family
#
# A family states its domain, which derivatives of the network each set of points
# needs (`jet_needs`: interior, initial line, boundary), the residual and the
# conditions, and the values a task may take (`check_task`, under JIT). The task is a
# pytree of the PDE's parameters: here one speed $a$, a scalar or a batch.
#
# The domain is periodic, so the boundary points come in pairs $(-1, t)$, $(1, t)$
# and the default boundary error is the jump between them, in $u$ and in each
# derivative `jet_needs[2]` names: $u$ and $u_x$ for a second-order equation.
#
# `reference_solution` is what results are judged against. A family with no closed
# form would integrate the PDE there (the built-in ones use diffrax); this one has an
# exact solution, evaluated in float64.

# %%
KAPPA = 0.02


class DriftTask(eqx.Module):
    """One member of the family: the drift speed `a` (a scalar, or a batch `(B,)`)."""

    a: Float[Array, "..."]

    def __init__(self, a):
        a = jnp.asarray(a)
        self.a = a if jnp.issubdtype(a.dtype, jnp.floating) else a.astype(float)


class DriftDiffusion(mp.AbstractPDE):
    """`u_t + a u_x = KAPPA u_xx` on the periodic [-1, 1) x [0, 1], `u(x, 0) = sin(pi x)`."""

    jet_needs = (("u_x", "u_t", "u_xx"), (), ("u_x",))
    periodic = True
    x_min: float = eqx.field(static=True, default=-1.0)
    x_max: float = eqx.field(static=True, default=1.0)
    t_min: float = eqx.field(static=True, default=0.0)
    t_max: float = eqx.field(static=True, default=1.0)

    def check_task(self, task, out):
        return eqx.error_if(out, ~jnp.isfinite(task.a), "drift-diffusion speed a must be finite")

    def residual(self, derivs, task):
        u_x, u_t, u_xx = derivs.require("u_x", "u_t", "u_xx")
        return u_t + task.a * u_x - KAPPA * u_xx

    def initial_condition(self, x):
        return jnp.sin(jnp.pi * x)

    def exact_solution(self, task, x, t):
        x, t = jnp.asarray(x), jnp.asarray(t) - self.t_min
        a = self.check_task(task, jnp.asarray(task.a))
        decay = jnp.exp(-KAPPA * jnp.pi**2 * t)
        return decay[:, None] * jnp.sin(jnp.pi * (x[None, :] - a * t[:, None]))

    def reference_solution(self, task, x, t):
        as64 = lambda v: jnp.asarray(v, jnp.float64)
        return self.exact_solution(DriftTask(as64(task.a)), as64(x), as64(t))


pde = DriftDiffusion()

# %% [markdown]
# ## 2. Checks that can fail
#
# First the family against its exact solution: the solution's derivatives by
# automatic differentiation at random collocation points (float64), then the
# residual, the initial error and the periodic boundary error, each of which must be
# zero to rounding.


# %%
def exact_derivatives(task, points):
    """The exact solution and its derivatives at `points`, by nested `jax.grad`."""

    def u(x, t):
        return jnp.exp(-KAPPA * jnp.pi**2 * t) * jnp.sin(jnp.pi * (x - task.a * t))

    x, t = points[:, 0], points[:, 1]
    d = lambda f, i: jax.vmap(jax.grad(f, i))
    return mp.Derivatives(
        u=jax.vmap(u)(x, t), u_x=d(u, 0)(x, t), u_t=d(u, 1)(x, t),
        u_xx=jax.vmap(jax.grad(jax.grad(u, 0), 0))(x, t),
    )  # fmt: skip


batch = mp.sample_collocation(jr.key(0), pde, 500, 100, 50)
for a in (0.5, 1.7, 4.0):
    task = DriftTask(jnp.asarray(a))
    interior = exact_derivatives(task, batch.interior)
    errors = {
        "residual": pde.residual(interior, task),
        "initial": pde.initial_error(exact_derivatives(task, batch.initial), batch.initial, task),
        "boundary": pde.boundary_error(
            exact_derivatives(task, batch.boundary), batch.boundary, task
        ),
    }
    worst = {k: float(jnp.max(jnp.abs(v))) for k, v in errors.items()}
    print(f"a = {a}: max |error| " + ", ".join(f"{k} {v:.1e}" for k, v in worst.items()))
    assert max(worst.values()) < 1e-12, worst

# %% [markdown]
# Then the network: the jet the loss uses propagates exactly the derivatives
# `jet_needs` names, forward through the layers. Against nested `jax.grad` of the
# same network, in float64:

# %%
net = mp.MLPPINN(width=16, depth=2, dtype=jnp.float64, key=jr.key(1))
points = batch.interior[:50]
jet = net.derivatives(points, pde.jet_needs[0])
scalar = lambda x, t: net(jnp.stack([x, t])[None])[0]
by_autodiff = {
    "u_x": jax.vmap(jax.grad(scalar, 0)),
    "u_t": jax.vmap(jax.grad(scalar, 1)),
    "u_xx": jax.vmap(jax.grad(jax.grad(scalar, 0), 0)),
}
for name, f in by_autodiff.items():
    difference = float(jnp.max(jnp.abs(getattr(jet, name) - f(points[:, 0], points[:, 1]))))
    print(f"{name}: max |jet - nested grad| = {difference:.1e}")
    assert difference < 1e-10
print("u_tt, which nothing here needs, is not computed:", jet.u_tt is None)

# %% [markdown]
# The truth the results are judged against, on the standard 256 × 101 evaluation grid:

# %%
x, t = pde.standard_grid()  # float64, with x64 on
u_exact = pde.exact_solution(DriftTask(jnp.asarray(1.7)), x, t)
print("exact field:", u_exact.shape, "max |u| =", float(jnp.max(jnp.abs(u_exact))))

# %% [markdown]
# ## 3. Describe it, and run the main experiment
#
# A `metapinn.Family` tells the experiment what it needs: the PDE, its task type, the
# field a task varies, the standard training and held-out values, and what the truth
# is. A family is named as `MODULE:ATTR` wherever one is asked for: in a module or a
# `.py` file of your own (`metapinn reproduce --workload W3 --family
# my_families.py:DRIFT`), or, as here, in this notebook's own namespace, `__main__`.
# Nothing is registered globally. The speeds: 11 values spaced geometrically over
# $[0.5, 4]$, the even ones for training and four of the others held out.

# %%
speeds = [float(f"{v:.4g}") for v in np.geomspace(0.5, 4.0, 11)]
DRIFT = mp.Family(
    name="drift-diffusion", design="own", pde=DriftDiffusion, task=DriftTask, parameter="a",
    train_range=(0.5, 4.0), truth="exact solution exp(-kappa pi^2 t) sin(pi (x - a t))",
    train_values=tuple(speeds[::2]), test_values=tuple(speeds[i] for i in (1, 3, 7, 9)),
    describes="the drift speed a",
)  # fmt: skip
print(mp.family("__main__:DRIFT").describes)

# %% [markdown]
# Workload W3's network (4 × 64 tanh), points (2000 interior, re-drawn every
# meta-step) and budgets, on the new family, for three methods beside random init:
# multi-task pre-training, Reptile warm-started from it, and the PINN that takes the
# speed as an input (the conditioned PINN, the first alternative a PINN user would
# try). Every initialisation is then adapted on the held-out speeds with the same
# optimiser, and measured against the exact solution.

# %%
config = mp.experiment.workload(
    "W3", family="__main__:DRIFT", methods=("multitask", "reptile", "cond-multitask")
)
if QUICK:  # the whole pipeline at smoke size: compilation dominates
    config = mp.experiment.quick(config).replace(
        width=16, depth=2, n_interior=200, n_initial=50, n_boundary=25, seeds=(0,)
    )
out_dir = pathlib.Path(tempfile.mkdtemp(prefix="drift-diffusion-"))
results = mp.experiment.reproduce(config, out_dir, progress=False, log=lambda line: None)

# %%
steps = results["steps"]
print(f"rel-L2 against the exact solution, mean over the held-out speeds {results['test_tasks']}")
print(f"{'initialisation':<28}" + "".join(f"{'k=' + str(k):>9}" for k in steps))
for init in results["inits"]:
    row = [entry["rel_l2"]["mean"] for entry in results["curves"][init]]  # None: diverged
    cells = "".join(f"{'n/a':>9}" if v is None else f"{v:>9.3g}" for v in row)
    print(f"{results['labels'][init]:<28}" + cells)

# %% [markdown]
# The run folder holds what `metapinn reproduce --workload W3 --family NAME` writes for
# a built-in family: `results.md` with the verdicts, `results.json`, checkpoints and
# the plots.
# The few-shot curves:

# %%
from IPython.display import Image, display  # noqa: E402


display(Image(filename=str(out_dir / "plots" / "few_shot.png")))
print("\n".join(results["verdict"]))

# %% [markdown]
# To run the family from the command line, put the two classes and `DRIFT` in one
# module, say `my_families.py`, and name it there: `metapinn reproduce --workload W3 --family
# my_families.py:DRIFT` (or `metapinn solve`, `metapinn families --family ...`). The
# built-in families in `metapinn/_pde/` (`_heat.py` is the shortest) are the models,
# with a diffrax reference verified against the exact solution and a disk cache.
