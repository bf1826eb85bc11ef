r"""Causal weighting of the PDE residual in time (Wang, Sankaran and Perdikaris 2022,
"Respecting causality is all you need for training physics-informed neural
networks")."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._custom_types import Scalar, Values


class CausalWeights(eqx.Module):
    r"""The residual term with causal weights: the interior points sorted by time into
    $M$ equal chunks of $[t_\text{min}, t_\text{max}]$, $\mathcal L_i$ the mean square
    of the residual in chunk $i$, and

    $$\mathcal L_r = \frac1M \sum_{i=1}^{M} w_i\,\mathcal L_i,\qquad
    w_i = \operatorname{sg}\Big[\exp\Big(-\epsilon \sum_{k<i} \mathcal L_k\Big)\Big],$$

    $\operatorname{sg}$ the stop-gradient: a chunk's residual counts only once every
    earlier chunk is solved (the first chunk's weight is 1), so the network cannot
    fit late times with a solution that is wrong early — the failure of plain PINNs
    on Allen–Cahn and fast convection. With $\epsilon = 0$ every weight is 1 and the
    term is the mean of the chunk means (the plain mean square when the chunks hold
    equally many points).

    The weights are constants of the parameters *at which the loss is evaluated*: its
    gradient is $\frac1M\sum_i w_i \nabla\mathcal L_i$ with $w$ held, and the residual
    vector Gauss–Newton linearises is $r_j \sqrt{w_{c(j)}/(M n_{c(j)})}$, whose squared
    norm is the term. Inside an inner loop (a [`metapinn.adapt`][] or any learner's)
    the weights are recomputed at every step from that step's parameters; a
    meta-gradient through the loop (second-order MAML) does not differentiate them.

    **Fields:** `tol` ($\epsilon$), `chunks` ($M$), both static.
    """

    tol: float = eqx.field(static=True)
    chunks: int = eqx.field(static=True)

    def __init__(self, tol: float = 1.0, chunks: int = 32):
        """**Arguments:** `tol`, the causality tolerance $\\epsilon \\ge 0$ (default 1);
        `chunks`, the number $M \\ge 1$ of time chunks (default 32).

        **Raises:** `ValueError` naming a bad value."""
        if (
            isinstance(tol, bool)
            or not isinstance(tol, (int, float))
            or not (math.isfinite(tol) and tol >= 0)
        ):
            raise ValueError(f"causal tol must be a finite number >= 0, got {tol!r}")
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks < 1:
            raise ValueError(f"causal chunks must be an integer >= 1, got {chunks!r}")
        self.tol = float(tol)
        self.chunks = chunks

    def chunk_index(self, t: Values, t_min: float, t_max: float) -> Array:
        """Each point's chunk, `0 .. chunks - 1` (a time outside the domain goes to the
        nearest end chunk)."""
        scaled = (t - t_min) * (self.chunks / (t_max - t_min))
        return jnp.clip(jnp.floor(scaled).astype(jnp.int32), 0, self.chunks - 1)

    def chunk_losses(
        self, residual: Values, t: Values, t_min: float, t_max: float
    ) -> tuple[Float[Array, " M"], Float[Array, " M"], Array]:
        """`(losses, counts, index)`: each chunk's mean square residual (0 for an empty
        chunk), its number of points, and each point's chunk."""
        index = self.chunk_index(t, t_min, t_max)
        sums = jax.ops.segment_sum(residual**2, index, num_segments=self.chunks)
        counts = jax.ops.segment_sum(jnp.ones_like(residual), index, num_segments=self.chunks)
        return sums / jnp.maximum(counts, 1), counts, index

    def weights(self, losses: Float[Array, " M"]) -> Float[Array, " M"]:
        r"""$w_i = \exp(-\epsilon\sum_{k<i}\mathcal L_k)$, gradient stopped."""
        before = jnp.cumsum(losses) - losses
        return jax.lax.stop_gradient(jnp.exp(-self.tol * before))

    def term(self, residual: Values, t: Values, t_min: float, t_max: float) -> Scalar:
        """$\\mathcal L_r$, the causally weighted residual term."""
        losses, _, _ = self.chunk_losses(residual, t, t_min, t_max)
        return jnp.sum(self.weights(losses) * losses) / self.chunks

    def point_scales(self, residual: Values, t: Values, t_min: float, t_max: float) -> Values:
        """Each point's $w_{c(j)}/(M n_{c(j)})$ (gradient stopped): the weighted sum of
        squares $\\sum_j s_j r_j^2$ is `term`."""
        losses, counts, index = self.chunk_losses(residual, t, t_min, t_max)
        per_chunk = self.weights(losses) / (self.chunks * jnp.maximum(counts, 1))
        return jax.lax.stop_gradient(per_chunk[index])


def check_causal(causal: Any) -> CausalWeights | None:
    """`causal` if it is `None` or a [`metapinn.training.CausalWeights`][]. **Raises:**
    `TypeError` naming it."""
    if causal is not None and not isinstance(causal, CausalWeights):
        raise TypeError(f"causal must be a CausalWeights or None, got {causal!r}")
    return causal
