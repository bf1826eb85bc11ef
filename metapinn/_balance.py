r"""Loss-term weights balanced during single-task training: by the norms of the terms'
gradients, or by the traces of the terms' neural-tangent-kernel blocks.

Both set, every `every` steps, the target weights

$$\hat\lambda_j = \frac{\sum_k s_k}{s_j}$$

from a statistic $s_j$ of each term $j$ (residual, initial, boundary), and move the
weights towards it, $\lambda_j \leftarrow \alpha\lambda_j + (1 - \alpha)\hat\lambda_j$
(Wang, Wang, Perdikaris et al. 2023, "An expert's guide to training physics-informed
neural networks", §3.2). A term whose statistic vanishes (e.g. the periodic boundary
term of a network with an exact periodic embedding, zero up to rounding) keeps its
weight, and a term of weight 0 stays off.
"""

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._causal import CausalWeights
from ._loss import _errors, _point_sets, _residual_vector, loss_terms
from ._pde._base import AbstractPDE
from ._sampling import CollocationBatch


def terms_vector(model, pde, task, batch, causal) -> Float[Array, " 3"]:
    """The unweighted loss terms `(L_r, L_0, L_b)` as one vector."""
    terms = loss_terms(model, pde, task, batch, causal)
    return jnp.stack([terms.residual, terms.initial, terms.boundary])


def _check_every_and_momentum(every: Any, momentum: Any) -> None:
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"balance every must be an integer >= 1, got {every!r}")
    if (
        isinstance(momentum, bool)
        or not isinstance(momentum, (int, float))
        or not 0 <= momentum < 1
    ):
        raise ValueError(f"balance momentum must be in [0, 1), got {momentum!r}")


class AbstractBalance(eqx.Module):
    r"""A rule for balancing the loss terms: a statistic $s_j$ per term, and the update
    of the weights towards $\hat\lambda_j = \sum_k s_k / s_j$ (see the module).

    Balancing is a device of single-task training
    ([`metapinn.training.train_pinn`][]): the weights change between compiled chunks
    and are never differentiated. Inside a meta-learner's inner loop the loss weights
    are the loss's fixed `weights` (a [`metapinn.PINNLoss`][] field), e.g. a recipe's
    balanced final weights (`final_weights` in `solve.json`) passed as a workload's
    `loss_weights`.
    """

    every: eqx.AbstractVar[int]
    momentum: eqx.AbstractVar[float]

    @abc.abstractmethod
    def statistic(
        self,
        model: Any,
        pde: AbstractPDE,
        task: PyTree,
        batch: CollocationBatch,
        causal: CausalWeights | None = None,
    ) -> Float[Array, " 3"]:
        """$s_j$ for the residual, initial and boundary terms, from one draw of the
        points."""

    def target(
        self, statistic: Float[Array, " 3"], weights: Float[Array, " 3"] | None = None
    ) -> Float[Array, " 3"]:
        r"""$\hat\lambda$ from the statistic: `nan` for a term left out, one whose
        statistic vanishes (below 1e-6 of the largest, float32's rounding of a zero) or
        whose weight is 0."""
        active = statistic > 1e-6 * jnp.max(statistic)
        if weights is not None:
            active = active & (weights > 0)
        total = jnp.sum(jnp.where(active, statistic, 0.0))
        return jnp.where(active, total / jnp.where(active, statistic, 1.0), jnp.nan)

    def update(
        self, weights: Float[Array, " 3"], statistic: Float[Array, " 3"]
    ) -> Float[Array, " 3"]:
        """The weights after one update (a term left out keeps its weight: a term of
        weight 0 stays off)."""
        target = self.target(statistic, weights)
        new = self.momentum * weights + (1 - self.momentum) * target
        return jnp.where(jnp.isnan(target), weights, new)


class GradNormBalance(AbstractBalance):
    r"""Weights balanced by the norms of the terms' gradients,
    $s_j = \lVert\nabla_\theta\mathcal L_j\rVert$ (Wang et al. 2023, §3.2): every
    weighted term then pulls on the parameters with the same force. One reverse pass
    per term, on the training draw's points.

    **Fields:** `every` (steps between updates, static, default 1000), `momentum`
    ($\alpha$, static, default 0.9).
    """

    every: int = eqx.field(static=True, default=1000)
    momentum: float = eqx.field(static=True, default=0.9)

    def __check_init__(self):
        _check_every_and_momentum(self.every, self.momentum)

    def statistic(self, model, pde, task, batch, causal=None) -> Float[Array, " 3"]:
        return term_gradient_norms(model, pde, task, batch, causal)


class NTKBalance(AbstractBalance):
    r"""Weights balanced by the traces of the terms' neural-tangent-kernel blocks (Wang,
    Yu and Perdikaris 2022, "When and why PINNs fail to train: a neural tangent kernel
    perspective"; Wang et al. 2023, §3.2): with the loss a sum of squares
    $\mathcal L_j = \sum_{i \in j} r_i^2$ of the scaled errors of
    [`metapinn.pinn_residuals`][] ($r_i = e_i/\sqrt{n_j}$, or the causal scaling),

    $$s_j = \operatorname{tr} K_{jj} = \sum_{i \in j}
    \lVert\nabla_\theta r_i\rVert^2,$$

    the mean over the term's points of the kernel's diagonal $\lVert\nabla_\theta
    e_i\rVert^2$: how fast gradient flow moves that term's errors. The kernel's
    diagonal needs one reverse pass per error, so it is taken on the first `points`
    of each set of a fresh draw (the boundary's half from each side; for a periodic
    family, the first pairs), `chunk` reverse passes at a time: the draw is uniform,
    so these are a uniform sample of its points.

    **Fields:** `every`, `momentum` (as [`metapinn.training.GradNormBalance`][]),
    `points` (interior, initial and boundary points used, default `(256, 64, 32)`),
    `chunk` (reverse passes vectorised together, default 32); all static.
    """

    every: int = eqx.field(static=True, default=1000)
    momentum: float = eqx.field(static=True, default=0.9)
    points: tuple[int, int, int] = eqx.field(static=True, default=(256, 64, 32))
    chunk: int = eqx.field(static=True, default=32)

    def __check_init__(self):
        _check_every_and_momentum(self.every, self.momentum)
        points = self.points
        if (
            not isinstance(points, tuple)
            or len(points) != 3
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in points)
        ):
            raise ValueError(f"NTK balance points must be three integers >= 1, got {points!r}")
        if isinstance(self.chunk, bool) or not isinstance(self.chunk, int) or self.chunk < 1:
            raise ValueError(f"NTK balance chunk must be an integer >= 1, got {self.chunk!r}")

    def statistic(self, model, pde, task, batch, causal=None) -> Float[Array, " 3"]:
        return term_ntk_traces(model, pde, task, _first_points(batch, pde, self.points), causal,
                               self.chunk)  # fmt: skip


def _first_points(batch: CollocationBatch, pde: AbstractPDE, counts) -> CollocationBatch:
    """The first `counts` points of each set; the boundary's from each of its halves
    (`x_min`, then `x_max`: for a periodic family, the first pairs)."""
    del pde  # every family's boundary comes as two halves (CollocationBatch)
    n_int, n_ic, n_bc = counts
    boundary = batch.boundary
    half = boundary.shape[0] // 2
    k = min(max(n_bc // 2, 1), half)
    boundary = jnp.concatenate([boundary[:k], boundary[half : half + k]])
    return CollocationBatch(batch.interior[:n_int], batch.initial[:n_ic], boundary)


def term_gradient_norms(
    model: Any, pde: AbstractPDE, task: PyTree, batch: CollocationBatch, causal=None
) -> Float[Array, " 3"]:
    """The 2-norms of the gradients of the residual, initial and boundary terms with
    respect to the model's floating-point arrays (one reverse pass per term)."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    jac = jax.jacrev(lambda p: terms_vector(eqx.combine(p, static), pde, task, batch, causal))(
        params
    )
    squares = sum(
        jnp.sum(leaf**2, axis=tuple(range(1, leaf.ndim))) for leaf in jax.tree.leaves(jac)
    )
    return jnp.sqrt(squares)


def term_ntk_traces(
    model: Any,
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    causal: CausalWeights | None = None,
    chunk: int = 32,
) -> Float[Array, " 3"]:
    r"""$\operatorname{tr} K_{jj} = \sum_{i \in j}\lVert\nabla_\theta r_i\rVert^2$ for the
    residual, initial and boundary terms, $r$ the unweighted
    [`metapinn.pinn_residuals`][] on `batch`: one reverse pass per entry of $r$,
    `chunk` at a time."""
    params, static = eqx.partition(model, eqx.is_inexact_array)

    def vector(p):
        net = eqx.combine(p, static)
        jet = net.jet(_point_sets(batch), pde.jet_needs)
        return _residual_vector(jet, pde, task, batch, None, causal)

    sizes = [e.shape[0] for e in jax.eval_shape(
        lambda p: _errors(eqx.combine(p, static).jet(_point_sets(batch), pde.jet_needs),
                          pde, task, batch), params)]  # fmt: skip
    r, pullback = jax.vjp(vector, params)

    def row_square(i):
        (grad,) = pullback(jax.nn.one_hot(i, r.shape[0], dtype=r.dtype))
        return sum(jnp.sum(leaf**2) for leaf in jax.tree.leaves(grad))

    squares = jax.lax.map(row_square, jnp.arange(r.shape[0]), batch_size=chunk)
    edges = [0, sizes[0], sizes[0] + sizes[1], sum(sizes)]
    return jnp.stack([jnp.sum(squares[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)])
