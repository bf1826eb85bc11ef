"""The physics-informed loss: PDE residual + initial condition + boundary condition."""

import abc
import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PyTree

from ._causal import CausalWeights, check_causal
from ._checks import checked
from ._custom_types import PointSet, Scalar
from ._pde._base import AbstractPDE
from ._pinn import AbstractPINN, Derivatives, check_points
from ._sampling import CollocationBatch


class LossTerms(eqx.Module):
    r"""The three mean-squared parts of the physics-informed loss.

    **Fields:**

    - `residual`: $\mathcal{L}_r$, the mean square of the PDE residual.
    - `initial`: $\mathcal{L}_0$, the mean square of the initial-condition error.
    - `boundary`: $\mathcal{L}_b$, the mean square of the boundary-condition error.

    `total` is their sum, the loss [`metapinn.pinn_loss`][] returns.
    """

    residual: Scalar
    initial: Scalar
    boundary: Scalar

    @property
    def total(self) -> Scalar:
        return self.residual + self.initial + self.boundary

    def weighted(self, weights: "LossWeights") -> Scalar:
        r"""$\lambda_r \mathcal{L}_r + \lambda_0 \mathcal{L}_0 + \lambda_b \mathcal{L}_b$
        with the weights of `weights`, a [`metapinn.LossWeights`][] (`None`: all 1, the
        plain `total`)."""
        if weights is None:
            return self.total
        w_r, w_0, w_b = weights
        return w_r * self.residual + w_0 * self.initial + w_b * self.boundary


LossWeights = tuple[float, float, float] | None
r"""The weights $(\lambda_r, \lambda_0, \lambda_b)$ of the residual, initial and boundary
terms, as Python floats (static under JIT); `None` for all 1."""


def check_weights(weights: Any) -> LossWeights:
    """`weights` as a [`metapinn.LossWeights`][]: `None`, or three finite floats >= 0 of
    which the residual's is > 0.

    **Raises:** `ValueError` naming the bad value.
    """
    if weights is None:
        return None
    try:
        values = tuple(float(w) for w in weights)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3:
        raise ValueError(
            f"loss weights must be three numbers (residual, initial, boundary); got {weights!r}"
        )
    for name, value in zip(("residual", "initial", "boundary"), values, strict=True):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"the {name} loss weight must be finite and >= 0; got {value!r}")
    if values[0] == 0:
        raise ValueError("the residual loss weight must be > 0; got 0.0")
    return None if values == (1.0, 1.0, 1.0) else values


def _point_sets(batch: CollocationBatch) -> tuple[PointSet, PointSet, PointSet]:
    if batch.task_batch_size is not None:
        raise ValueError(
            "the PINN loss takes one task's points, shape (n, 2); got a batch with a task "
            f"axis of size {batch.task_batch_size}: use jax.vmap over tasks"
        )
    check_points(batch.interior, "interior")
    return batch.interior, batch.initial, batch.boundary


def _errors(
    jet: tuple[Derivatives, ...],  # interior, initial, boundary
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
) -> tuple[Array, Array, Array]:
    """The pointwise residual, initial-condition and boundary-condition errors."""
    interior, initial, boundary = jet
    return (
        pde.residual(interior, task),
        pde.initial_error(initial, batch.initial, task),
        pde.boundary_error(boundary, batch.boundary, task),
    )


def _terms(
    jet: tuple[Derivatives, ...],
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    causal: CausalWeights | None = None,
) -> LossTerms:
    residual, ic_error, bc_error = _errors(jet, pde, task, batch)
    if causal is None:
        residual_term = jnp.mean(residual**2)
    else:
        residual_term = causal.term(residual, batch.interior[:, 1], pde.t_min, pde.t_max)
    return LossTerms(
        residual=residual_term,
        initial=jnp.mean(ic_error**2),
        boundary=jnp.mean(bc_error**2),
    )


def _residual_vector(
    jet: tuple[Derivatives, ...],
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    weights: LossWeights,
    causal: CausalWeights | None = None,
) -> Float[Array, " m"]:
    r"""The errors scaled by $\sqrt{\lambda_j / n_j}$ (the residual's, with causal
    weights, by $\sqrt{\lambda_r s_j}$, see [`metapinn.training.CausalWeights.point_scales`][])
    and concatenated, so that their sum of squares is the weighted loss."""
    errors = _errors(jet, pde, task, batch)
    scales = (1.0, 1.0, 1.0) if weights is None else weights
    vector = [
        jnp.sqrt(jnp.asarray(w / e.shape[0], dtype=e.dtype)) * e
        for w, e in zip(scales, errors, strict=True)
    ]
    if causal is not None:
        residual = errors[0]
        s = causal.point_scales(residual, batch.interior[:, 1], pde.t_min, pde.t_max)
        vector[0] = jnp.sqrt(jnp.asarray(scales[0], dtype=residual.dtype) * s) * residual
    return jnp.concatenate(vector)


def loss_terms(
    pinn: AbstractPINN,
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    causal: CausalWeights | None = None,
) -> LossTerms:
    r"""The parts of the PINN loss of Raissi et al. (2019), each a mean of squares:

    $$\mathcal{L}_r = \overline{r(x_i, t_i)^2},\quad
    \mathcal{L}_0 = \overline{(u(x_j, 0) - u_0(x_j))^2},\quad
    \mathcal{L}_b = \overline{(u(x_k, t_k) - g(x_k, t_k))^2}.$$

    **Arguments:**

    - `pinn`: an [`metapinn.AbstractPINN`][].
    - `pde`: an [`metapinn.AbstractPDE`][]; its `jet_needs` say which derivatives are
      computed at each set of points.
    - `task`: one task of it (`vmap` for several).
    - `batch`: an unbatched [`metapinn.CollocationBatch`][], each set `(n, 2)`.
    - `causal`: a [`metapinn.training.CausalWeights`][] for the causally weighted residual term
      (default `None`: the plain mean square).

    **Returns:** a [`metapinn.LossTerms`][] of scalars.

    **Raises:** `ValueError` at trace time if the batch has a task axis, or from the
    family's terms (e.g. an odd number of boundary points for a periodic family, or
    a derivative the residual reads that `jet_needs` does not list); via
    `eqx.error_if`, for a task that fails `pde.check_task`.
    """
    jet = pinn.jet(_point_sets(batch), pde.jet_needs)
    return checked(pde, task, _terms(jet, pde, task, batch, check_causal(causal)))


def pinn_loss(
    pinn: AbstractPINN,
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    weights: Any = None,
    causal: CausalWeights | None = None,
) -> Scalar:
    """The physics-informed loss, `residual + initial + boundary` (see
    [`metapinn.loss_terms`][]), each term optionally weighted.

    **Arguments:** `pinn`, `pde`, `task`, `batch`, `causal`: as for
    [`metapinn.loss_terms`][]; `weights`, a [`metapinn.LossWeights`][] (default `None`:
    all 1).

    **Returns:** a scalar, [`metapinn.LossTerms`][]`.weighted(weights)`.

    **Raises:** as [`metapinn.loss_terms`][], and `ValueError` for bad `weights`.
    """
    weights = check_weights(weights)
    return loss_terms(pinn, pde, task, batch, causal).weighted(weights)


def pinn_residuals(
    pinn: AbstractPINN,
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    weights: Any = None,
    causal: CausalWeights | None = None,
) -> Float[Array, " m"]:
    r"""The PINN loss as a sum of squares: the vector $r$ with
    $\lVert r\rVert^2 =$ [`metapinn.pinn_loss`][] (weights included),

    $$r = \Big[\sqrt{\lambda_r/n_r}\, r(x_i, t_i);\;
    \sqrt{\lambda_0/n_0}\, (u(x_j, 0) - u_0(x_j));\;
    \sqrt{\lambda_b/n_b}\, e_b(x_k, t_k)\Big],$$

    the residual vector Gauss–Newton and Levenberg–Marquardt work on (see
    [`metapinn.GaussNewton`][]). Its length $m$ is the number of interior points plus
    the initial family's and the boundary family's error counts.

    **Arguments:** as for [`metapinn.pinn_loss`][].

    **Returns:** the vector $r$, shape `(m,)`.

    **Raises:** as [`metapinn.loss_terms`][], and `ValueError` for bad `weights`.
    """
    weights = check_weights(weights)
    jet = pinn.jet(_point_sets(batch), pde.jet_needs)
    vector = _residual_vector(jet, pde, task, batch, weights, check_causal(causal))
    return checked(pde, task, vector)


@eqx.filter_jit
def pinn_loss_and_grad(
    pinn: AbstractPINN,
    pde: AbstractPDE,
    task: PyTree,
    batch: CollocationBatch,
    weights: Any = None,
    causal: CausalWeights | None = None,
) -> tuple[Scalar, Any]:
    """[`metapinn.pinn_loss`][] (with its optional `weights` and `causal`) and its gradient with
    respect to the network.

    The network's part of the chain rule is its own pullback,
    [`metapinn.AbstractPINN.jet_vjp`][] (written by hand for [`metapinn.MLPPINN`][]);
    the PDE's part, a few elementwise operations on `u, u_x, u_t, u_xx`, is left to
    reverse-mode AD.

    It is one `eqx.filter_jit` (inlined into any enclosing JIT), so the several
    transformations a meta-step applies to it each start from one traced program.
    The task is not validated here (this is the inner loop's hot path): callers check
    it once with `pde.check_task`, as [`metapinn.adapt`][] and
    [`metapinn.meta_step`][] do.

    **Arguments:** `pinn`, `pde`, `task`, `batch`: as for [`metapinn.loss_terms`][];
    `weights` as for [`metapinn.pinn_loss`][].

    **Returns:** `(loss, grads)`, with `grads` of the network's pytree structure
    (arrays at its floating-point leaves, `None` elsewhere).

    **Raises:** `ValueError` at trace time, as [`metapinn.loss_terms`][] and for bad
    `weights`; unlike it, no check of the task.
    """
    weights = check_weights(weights)
    causal = check_causal(causal)
    jet, pullback = pinn.jet_vjp(_point_sets(batch), pde.jet_needs)
    loss, terms_vjp = jax.vjp(
        lambda jet: _terms(jet, pde, task, batch, causal).weighted(weights), jet
    )
    return loss, pullback(terms_vjp(jnp.ones_like(loss))[0])


class AbstractLoss(eqx.Module):
    """A loss `loss_fn(model, task, batch) -> scalar` that may also supply its gradient.

    [`metapinn.adapt`][] and the meta-learners take any callable as a loss; one that is
    an `AbstractLoss` has its `value_and_grad` used for every inner gradient.
    """

    @abc.abstractmethod
    def __call__(self, model: Any, task: PyTree, batch: PyTree) -> Scalar:
        """**Returns:** the loss of `model` on one task's `batch`."""

    def value_and_grad(self, model: Any, task: PyTree, batch: PyTree) -> tuple[Scalar, Any]:
        """**Returns:** `(loss, grads)`, `grads` of `model`'s pytree structure with
        arrays at its floating-point leaves (`None` elsewhere). This default is
        `equinox.filter_value_and_grad`."""
        return eqx.filter_value_and_grad(lambda m: self(m, task, batch))(model)

    def residuals(self, model: Any, task: PyTree, batch: PyTree) -> Float[Array, " m"]:
        r"""The loss as a sum of squares, $\mathcal{L} = \lVert r\rVert^2$: the residual
        vector that Gauss–Newton-type adapters ([`metapinn.GaussNewton`][]) linearise.
        A least-squares loss (e.g. [`metapinn.PINNLoss`][]) defines it.

        **Raises:** `TypeError` (this default) for a loss that is not a sum of squares.
        """
        del model, task, batch
        raise TypeError(
            f"{type(self).__name__} does not expose its residual vector (`residuals`), "
            "so it cannot be minimised by Gauss-Newton; use a least-squares loss such as "
            "PINNLoss, or a first-order or L-BFGS adapter"
        )

    def check_task(self, task: PyTree, out: PyTree) -> PyTree:
        """Return `out`, failing under JIT if `task` is invalid (see
        [`metapinn.AbstractPDE.check_task`][]); `adapt` and `meta_step` call it once,
        outside their loops. The default accepts every task."""
        del task
        return out


class PINNLoss(AbstractLoss):
    """`pinn_loss` with the PDE (and the terms' weights) bound: the
    `loss_fn(model, task, batch)` that the meta-learners and [`metapinn.adapt`][] take.
    Its gradient is [`metapinn.pinn_loss_and_grad`][], and its `check_task` is the
    PDE's.

    **Fields:**

    - `pde`, the [`metapinn.AbstractPDE`][], e.g. `PINNLoss(Burgers())`;
    - `weights`, a [`metapinn.LossWeights`][] (default `None`: all 1), e.g.
      `PINNLoss(AllenCahn(), weights=(1.0, 100.0, 1.0))` to weight the initial
      condition 100 times (static: a new value recompiles);
    - `causal`, a [`metapinn.training.CausalWeights`][] (default `None`), e.g.
      `PINNLoss(AllenCahn(), causal=CausalWeights(tol=1.0))`.

    **Raises:** `ValueError` on construction for bad `weights`; a call raises as
    [`metapinn.pinn_loss`][].
    """

    pde: AbstractPDE
    weights: LossWeights = eqx.field(static=True, default=None, converter=check_weights)
    causal: CausalWeights | None = eqx.field(default=None, converter=check_causal)

    def __call__(self, model: AbstractPINN, task: PyTree, batch: CollocationBatch) -> Scalar:
        return pinn_loss(model, self.pde, task, batch, self.weights, self.causal)

    def value_and_grad(
        self, model: AbstractPINN, task: PyTree, batch: CollocationBatch
    ) -> tuple[Scalar, Any]:
        return pinn_loss_and_grad(model, self.pde, task, batch, self.weights, self.causal)

    def residuals(
        self, model: AbstractPINN, task: PyTree, batch: CollocationBatch
    ) -> Float[Array, " m"]:
        return pinn_residuals(model, self.pde, task, batch, self.weights, self.causal)

    def check_task(self, task: PyTree, out: PyTree) -> PyTree:
        return self.pde.check_task(task, out)
