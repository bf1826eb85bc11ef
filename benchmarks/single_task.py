"""Not a timing: how far a single-task PINN trained from the random initialisation
gets on held-out tasks of a family, with given loss weights (and optionally causal
weighting of the residual in time), as rel-L2 against the reference every 250 steps.

The check behind a family's workload: if a PINN trained on one task for many times
the few-shot budget does not get accurate, no initialisation will within it. The
network, the points (re-sampled every step) and the tasks are the family's W3 ones;
Adam with a cosine decay from `--lr` to 1 % of it over `--steps`.

    python benchmarks/single_task.py allen-cahn --steps 3000 --weights 1 100 1 --tasks 0 3
    python benchmarks/single_task.py allen-cahn --steps 4000 --weights 1 100 1 --tasks 3 \
        --causal 10

`--causal TOL` replaces the mean squared residual by Wang, Sankaran & Perdikaris'
(2022, arXiv:2203.07404) causal form over 32 time slabs: slab i's mean squared residual
weighted by `exp(-TOL * (sum of the earlier slabs' losses))`, the weights not
differentiated. It prints one line per task.
"""

import argparse
import time

import jax


jax.config.update("jax_enable_x64", True)

import equinox as eqx  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import metapinn as mp  # noqa: E402
from metapinn._experiment._evaluation import reference_fields  # noqa: E402
from metapinn._experiment._problem import experiment_tasks  # noqa: E402


SLABS = 32
CHUNK = 250


class CausalLoss(mp.AbstractLoss):
    """The PINN loss with the residual weighted causally in time (see the module)."""

    pde: mp.AbstractPDE
    tolerance: float
    weights: tuple[float, float, float]

    def __call__(self, model, task, batch):
        pde, (w_r, w_0, w_b) = self.pde, self.weights
        jet = model.jet((batch.interior, batch.initial, batch.boundary), pde.jet_needs)
        r2 = pde.residual(jet[0], task) ** 2
        t = (batch.interior[:, 1] - pde.t_min) / (pde.t_max - pde.t_min)
        slab = jnp.clip((t * SLABS).astype(jnp.int32), 0, SLABS - 1)
        counts = jax.ops.segment_sum(jnp.ones_like(r2), slab, SLABS)
        per_slab = jax.ops.segment_sum(r2, slab, SLABS) / jnp.maximum(counts, 1)
        before = jnp.cumsum(per_slab) - per_slab
        causal = jax.lax.stop_gradient(jnp.exp(-self.tolerance * before))
        initial = jnp.mean(pde.initial_error(jet[1], batch.initial, task) ** 2)
        boundary = jnp.mean(pde.boundary_error(jet[2], batch.boundary, task) ** 2)
        return w_r * jnp.mean(causal * per_slab) + w_0 * initial + w_b * boundary


def train(config, pde, loss, task, grid, u_ref, steps: int, lr: float) -> list[str]:
    """Train the W3 network on one task; **Returns:** the loss and rel-L2 every
    `CHUNK` steps, as text."""
    pinn = mp.MLPPINN(config.width, config.depth, dtype=jnp.float32, key=jr.key(0))
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    opt = optax.adam(optax.cosine_decay_schedule(lr, steps, 0.01))

    @jax.jit
    def chunk(params, state, key):
        def step(carry, k):
            params, state = carry
            batch = mp.sample_collocation(k, pde, config.n_interior, config.n_initial,
                                          config.n_boundary, "float32")  # fmt: skip
            value, grads = eqx.filter_value_and_grad(
                lambda p: loss(eqx.combine(p, static), task, batch)
            )(params)
            updates, state = opt.update(grads, state, params)
            return (eqx.apply_updates(params, updates), state), value

        (params, state), values = jax.lax.scan(step, (params, state), jr.split(key, CHUNK))
        return params, state, values[-1]

    state, key, cells = opt.init(params), jr.key(1), []
    for done in range(CHUNK, steps + 1, CHUNK):
        key, sub = jr.split(key)
        params, state, value = chunk(params, state, sub)
        u = np.asarray(eqx.combine(params, static)(grid)).reshape(u_ref.shape)
        rel = np.linalg.norm(u - u_ref) / np.linalg.norm(u_ref)
        cells.append(f"{done}: loss {float(value):.3g}, rel-L2 {rel:.3g}")
    return cells


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("family")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--weights", type=float, nargs=3, default=(1.0, 1.0, 1.0))
    parser.add_argument("--tasks", type=int, nargs="+", default=[0, 3])
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--causal", type=float, default=None, metavar="TOL")
    args = parser.parse_args()
    config = mp.experiment.workload("W3", family=args.family, seeds=[0])
    _, _, grid, u_ref = reference_fields(config)
    pde = mp.family(args.family).pde()
    _, tests = experiment_tasks(config, "float32")
    labels = config.held_out_labels()
    if args.causal is None:
        loss = mp.PINNLoss(pde, weights=tuple(args.weights))
    else:
        loss = CausalLoss(pde, args.causal, tuple(args.weights))
    grid = jnp.asarray(grid, jnp.float32)
    for i in args.tasks:
        task = jax.tree_util.tree_map(lambda a, i=i: a[i], tests)
        start = time.perf_counter()
        cells = train(config, pde, loss, task, grid, u_ref[i], args.steps, args.lr)
        seconds = time.perf_counter() - start
        print(f"{args.family} {labels[i]} weights {tuple(args.weights)} causal {args.causal} "
              f"({seconds:.0f} s): " + "; ".join(cells), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
