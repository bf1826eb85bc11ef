"""The physics-informed loss: PDE residual + initial condition + boundary condition."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import PyTree

from ._custom_types import Scalar
from ._pde._base import AbstractPDE
from ._pinn import AbstractPINN, check_points
from ._sampling import CollocationBatch


class LossTerms(eqx.Module):
    """The three mean-squared parts of the physics-informed loss."""

    residual: Scalar
    initial: Scalar
    boundary: Scalar

    @property
    def total(self) -> Scalar:
        return self.residual + self.initial + self.boundary


def loss_terms(
    pinn: AbstractPINN, pde: AbstractPDE, task: PyTree, batch: CollocationBatch
) -> LossTerms:
    r"""The parts of the PINN loss of Raissi et al. (2019), each a mean of squares:

    $$\mathcal{L}_r = \overline{r(x_i, t_i)^2},\quad
    \mathcal{L}_0 = \overline{(u(x_j, 0) - u_0(x_j))^2},\quad
    \mathcal{L}_b = \overline{(u(x_k, t_k) - g(x_k, t_k))^2}.$$

    **Arguments:** a PINN, a PDE family, one task of it, and an unbatched
    [`metapinn.CollocationBatch`][] (`vmap` for several tasks).

    **Returns:** a [`metapinn.LossTerms`][].

    **Raises:** `ValueError` if the batch has a task axis.
    """
    if batch.task_batch_size is not None:
        raise ValueError(
            "loss_terms takes one task's points, shape (n, 2); got a batch with a task "
            f"axis of size {batch.task_batch_size}: use jax.vmap over tasks"
        )
    check_points(batch.interior, "interior")
    residual = pde.residual(pinn.derivatives(batch.interior), task)
    # One forward pass for the initial and boundary points together.
    edge = jnp.concatenate([batch.initial, batch.boundary], axis=0)
    u_edge = pinn(edge)
    m = batch.initial.shape[0]
    ic_error = u_edge[:m] - pde.initial_condition(batch.initial[:, 0])
    bc_error = u_edge[m:] - pde.boundary_condition(batch.boundary[:, 1], batch.boundary[:, 0])
    return LossTerms(
        residual=jnp.mean(residual**2),
        initial=jnp.mean(ic_error**2),
        boundary=jnp.mean(bc_error**2),
    )


def pinn_loss(
    pinn: AbstractPINN, pde: AbstractPDE, task: PyTree, batch: CollocationBatch
) -> Scalar:
    """The physics-informed loss, `residual + initial + boundary` (see
    [`metapinn.loss_terms`][]). **Returns:** a scalar."""
    return loss_terms(pinn, pde, task, batch).total


class PINNLoss(eqx.Module):
    """`pinn_loss` with the PDE bound: the `loss_fn(model, task, batch)` that the
    meta-learners and [`metapinn.adapt`][] take."""

    pde: AbstractPDE

    def __call__(self, pinn: AbstractPINN, task: PyTree, batch: CollocationBatch) -> Scalar:
        return pinn_loss(pinn, self.pde, task, batch)
