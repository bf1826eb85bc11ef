"""Shared helpers for the tests."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

import metapinn as mp


TINY_RUN = {
    "name": "tiny",
    "width": 8,
    "depth": 1,
    "n_interior": 16,
    "n_initial": 8,
    "n_boundary": 4,
    "train_params": [0.02, 0.03, 0.05],
    "test_params": [0.04, 0.05],  # one reference grid size: one solver compilation
    "meta_steps": 6,
    "tasks_per_step": 2,
    "eval_steps": [0, 2, 5],
    "budget": 2,
    "eps": [0.95, 0.5],
}
"""The settings of the end-to-end tests' tiny runs (each adds its methods, seeds, ...)."""


def tree_allclose(x, y, *, rtol=1e-8, atol=1e-10) -> bool:
    return bool(eqx.tree_equal(x, y, typematch=True, rtol=rtol, atol=atol))


def small_problem(key, *, width=8, depth=2, n_interior=24, n_initial=8, n_boundary=4):
    """A small float64 PINN, the Burgers loss, and one point set."""
    k_net, k_pts = jr.split(key)
    pinn = mp.MLPPINN(width=width, depth=depth, key=k_net)
    params, static = eqx.partition(pinn, eqx.is_inexact_array)
    pde = mp.Burgers()
    batch = mp.sample_collocation(k_pts, pde, n_interior, n_initial, n_boundary)
    return params, static, mp.PINNLoss(pde), batch


def flat(tree) -> jax.Array:
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree_util.tree_leaves(tree)])


def small_learners() -> list:
    """One of each meta-learner, with two inner SGD steps where there is a loop."""
    return [
        mp.MAML(inner_steps=2, inner_optimizer=0.01),
        mp.FOMAML(inner_steps=2, inner_optimizer=0.01),
        mp.Reptile(inner_steps=2, inner_optimizer=0.01),
        mp.MultiTask(),
    ]


class Quadratic(eqx.Module):
    """`½ (θ − center)ᵀ matrix (θ − center)`: a task whose loss has a known Hessian."""

    center: jax.Array
    matrix: jax.Array

    def __call__(self, theta):
        r = theta - self.center
        return 0.5 * r @ self.matrix @ r
