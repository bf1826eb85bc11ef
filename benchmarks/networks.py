"""Speed of one PINN loss and gradient for each network of the accurate-PINN toolkit,
against its floor, and the generic forward-mode derivative path against the
hand-written jet.

The loss is Burgers' (`PINNLoss(Burgers())`, nu = 0.0173) on the W3 points (2000
interior, 250 initial, 125 per boundary), float32, one task. Cases (each its own
compiled `value_and_grad`, the loss's own gradient as `adapt` calls it):

- `mlp-hand`: `MLPPINN(64, 4)`, the hand-written jet and adjoint (W3's network);
- `mlp-generic`: `EmbeddedMLP(0, 64, 4)`, the same function (a tanh MLP of the raw
  point) through the generic path, in each forward mode (`jvp`: nested `jax.jvp`;
  `taylor`: `jax.experimental.jet`) — what the generic path costs against the hand jet;
- `mlp-fourier-rwf`: `EmbeddedMLP` with 64 Fourier features (sigma 1) and weight
  factorisation (1, 0.1) — the recipes' network;
- `modified-mlp`: `ModifiedMLP(0, 64, 4)` with 64 Fourier features;
- `pirate-net`: `PirateNet(0, 64, 2)` (two blocks of three layers);
- `…/hand`: the `EmbeddedMLP` cases with `forward_mode="hand"`, the hand-written jet
  and adjoint (`mlp-generic/hand` is then the function of `mlp-hand` by the same
  method, its first layer a full product rather than two columns).

The floor: analytic matmul FLOPs ÷ a same-run 2048³ float32 matmul rate. The jet
forward of a network is `F = 2 · Σ_layers fan_in·fan_out · (4 n_int + n_ic + 2 n_bc)`
(each dense layer applied to the value and to the three derivative streams `u_x, u_t,
u_xx` at the interior points, values only elsewhere: the least any jet computes) and a
gradient is `G = 3F`, as in `meta_step.py`. Nested `jvp` recomputes more than that
(the first derivative twice), so its ratio shows its overhead too.

    python benchmarks/networks.py [--steps 30] [--out benchmarks/results/networks.json]
"""

import argparse
import json
import platform
import statistics
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from meta_step import _xla_flops, matmul_ceiling

import metapinn as mp


N_INT, N_IC, N_BC = 2000, 250, 125


def networks(mode: str) -> dict[str, eqx.Module]:
    """The cases of one derivative mode (`"hand"`: the networks that have a hand jet)."""
    key = jr.key(0)
    fourier = dict(fourier_features=64, fourier_scale=1.0)
    nets = {
        "mlp-generic": lambda: mp.nn.EmbeddedMLP(0, 64, 4, forward_mode=mode, key=key),
        "mlp-fourier-rwf": lambda: mp.nn.EmbeddedMLP(
            0, 64, 4, rwf=(1.0, 0.1), forward_mode=mode, key=key, **fourier
        ),
        "modified-mlp": lambda: mp.nn.ModifiedMLP(0, 64, 4, forward_mode=mode, key=key, **fourier),
        "pirate-net": lambda: mp.nn.PirateNet(0, 64, 2, forward_mode=mode, key=key),
    }
    if mode == "hand":
        nets = {name: make for name, make in nets.items() if name.startswith("mlp-")}
    return {f"{name}/{mode}": make() for name, make in nets.items()}


def dense_sizes(net) -> int:
    """Σ fan_in · fan_out over the network's matmuls (dense layers, and the Fourier
    projection), from its arrays."""
    if isinstance(net, mp.MLPPINN):
        return sum(w.shape[0] * w.shape[1] for w in net.weights)
    total = 0
    for leaf in jax.tree_util.tree_leaves(net, is_leaf=lambda x: isinstance(x, mp.nn.Dense)):
        if isinstance(leaf, mp.nn.Dense):
            total += leaf.weight.shape[0] * leaf.weight.shape[1]
    if net.embedding.fourier is not None:
        total += net.embedding.fourier.size
    return total


def time_case(net, loss, task, batch, steps: int) -> dict:
    params, static = eqx.partition(net, eqx.is_inexact_array)
    step = jax.jit(lambda p: loss.value_and_grad(eqx.combine(p, static), task, batch))
    t0 = time.perf_counter()
    compiled = step.lower(params).compile()
    compile_s = time.perf_counter() - t0
    jax.block_until_ready(compiled(params))
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - t0)
    columns = 4 * N_INT + N_IC + 2 * N_BC
    forward = 2 * dense_sizes(net) * columns
    return {
        "compile_s": compile_s,
        "median_ms": 1e3 * statistics.median(times),
        "min_ms": 1e3 * min(times),
        "max_ms": 1e3 * max(times),
        "analytic_mflop": 3 * forward / 1e6,
        "xla_mflop": _xla_flops(compiled) / 1e6,
        "parameters": int(
            sum(x.size for x in jax.tree_util.tree_leaves(eqx.filter(net, eqx.is_inexact_array)))
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", default="benchmarks/results/networks.json")
    args = parser.parse_args()
    mp.experiment.configure_cpu()
    pde = mp.Burgers()
    task = mp.BurgersTask(jnp.float32(0.0173))
    batch = mp.sample_collocation(jr.key(1), pde, N_INT, N_IC, N_BC, "float32")
    loss = mp.PINNLoss(pde)
    ceiling = matmul_ceiling()
    cases = {"mlp-hand": mp.MLPPINN(64, 4, key=jr.key(0))}
    for mode in ("jvp", "taylor", "hand"):
        cases.update(networks(mode))
    rows = {}
    for name, net in cases.items():
        row = time_case(net, loss, task, batch, args.steps)
        row["floor_ms"] = 1e3 * row["analytic_mflop"] * 1e6 / ceiling
        row["times_floor"] = row["median_ms"] / row["floor_ms"]
        rows[name] = row
    hand = rows["mlp-hand"]["median_ms"]
    print(f"ceiling: 2048³ float32 matmul at {ceiling / 1e9:.1f} GFLOP/s (same run)")
    print(
        f"{'case':<24} {'params':>7} {'compile s':>9} {'median ms':>9} {'min–max ms':>15} "
        f"{'analytic MF':>11} {'XLA MF':>8} {'×floor':>7} {'×hand':>6}"
    )
    for name, r in rows.items():
        print(
            f"{name:<24} {r['parameters']:>7} {r['compile_s']:>9.2f} {r['median_ms']:>9.2f} "
            f"{r['min_ms']:>7.2f}–{r['max_ms']:<7.2f} {r['analytic_mflop']:>11.1f} "
            f"{r['xla_mflop']:>8.1f} {r['times_floor']:>7.2f} {r['median_ms'] / hand:>6.2f}"
        )
    out = {
        "command": "python benchmarks/networks.py",
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform()},
        "jax": jax.__version__,
        "ceiling_gflops": ceiling / 1e9,
        "steps": args.steps,
        "cases": rows,
    }
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
