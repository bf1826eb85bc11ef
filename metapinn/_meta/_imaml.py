"""Implicit MAML: the proximal inner problem and its implicit meta-gradient by CG."""

import functools
import math
import operator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, PyTree

from .._custom_types import Params, Scalar, Static
from .._loss import AbstractLoss
from ._adapters import _check_positive
from ._base import AbstractMetaLearner, LossFn, MetaAux, _is_none, _value_and_grads
from ._gauss_newton import conjugate_gradient


def _tree_dot(x: PyTree, y: PyTree) -> Scalar:
    leaves = [jnp.vdot(a, b) for a, b in zip(jtu.tree_leaves(x), jtu.tree_leaves(y), strict=True)]
    return functools.reduce(operator.add, leaves) if leaves else jnp.zeros(())


class ProximalLoss(AbstractLoss):
    r"""A loss plus a proximal term around an anchor:
    $\mathcal{L}(\phi) + \tfrac{\lambda}{2} \lVert \phi - \theta \rVert^2$.

    $\phi$ are the leaves of the model where `anchor` has arrays (the anchor is the
    array half of `eqx.partition(model, ...)`, e.g. the initialisation $\theta$).
    Its gradient is the wrapped loss's own `value_and_grad` when that is an
    [`metapinn.AbstractLoss`][] (for [`metapinn.PINNLoss`][], the hand-written
    adjoint), otherwise reverse-mode AD, plus $\lambda(\phi - \theta)$. The anchor is
    an ordinary array field, so it may be differentiated (as in a test of MAML on the
    proximal problem); [`metapinn.IMAML`][] passes it stopped.

    **Fields:**

    - `loss`: the wrapped `loss_fn(model, task, batch) -> scalar`.
    - `anchor`: $\theta$, a pytree of the model's structure with arrays where the
      proximal term applies and `None` elsewhere.
    - `prox_lambda`: $\lambda > 0$ (static; no default).

    **Raises:** `ValueError` on construction unless `prox_lambda` is finite and > 0, or
    if `anchor` has no array leaves (the proximal term would be over nothing).
    """

    loss: LossFn
    anchor: Params
    prox_lambda: float = eqx.field(static=True)

    def __check_init__(self):
        _check_positive("prox_lambda", self.prox_lambda)
        leaves = jtu.tree_leaves(self.anchor)
        if not any(eqx.is_array(leaf) for leaf in leaves):
            kinds = sorted({type(leaf).__name__ for leaf in leaves})
            raise ValueError(
                "ProximalLoss needs an anchor with at least one array leaf (e.g. the "
                "array half of eqx.partition(model, eqx.is_array)); got an anchor of type "
                f"{type(self.anchor).__name__} with {len(leaves)} leaves "
                f"{'(' + ', '.join(kinds) + ') ' if kinds else ''}and no array"
            )

    def _sq_distance(self, model: Any) -> Scalar:
        sq = jtu.tree_map(
            lambda a, m: None if a is None else jnp.sum((m - a) ** 2),
            self.anchor,
            model,
            is_leaf=_is_none,
        )
        leaves = jtu.tree_leaves(sq)
        return functools.reduce(operator.add, leaves)

    def __call__(self, model: Any, task: PyTree, batch: PyTree) -> Scalar:
        loss = self.loss(model, task, batch)
        return loss + 0.5 * self.prox_lambda * self._sq_distance(model)

    def value_and_grad(self, model: Any, task: PyTree, batch: PyTree) -> tuple[Scalar, Any]:
        if isinstance(self.loss, AbstractLoss):
            loss, grads = self.loss.value_and_grad(model, task, batch)
        else:
            loss, grads = eqx.filter_value_and_grad(lambda m: self.loss(m, task, batch))(model)
        lam = self.prox_lambda

        def add_prox(a, g, m):
            if a is None:
                return g
            pull = lam * (m - a)
            return pull if g is None else g + pull

        grads = jtu.tree_map(add_prox, self.anchor, grads, model, is_leaf=_is_none)
        return loss + 0.5 * lam * self._sq_distance(model), grads

    def residuals(self, model: Any, task: PyTree, batch: PyTree) -> Array:
        r"""The wrapped loss's residual vector (it must have one) followed by
        $\sqrt{\lambda/2}\,(\phi - \theta)$, flattened: its squared norm is this loss."""
        if not isinstance(self.loss, AbstractLoss):
            raise TypeError(
                "ProximalLoss has a residual vector only around a loss that has one; "
                f"got {type(self.loss).__name__}"
            )
        pulls = jtu.tree_map(
            lambda a, m: None if a is None else jnp.ravel(m - a),
            self.anchor,
            model,
            is_leaf=_is_none,
        )
        scale = math.sqrt(0.5 * self.prox_lambda)
        pull = jnp.concatenate(jtu.tree_leaves(pulls))
        own = self.loss.residuals(model, task, batch)
        return jnp.concatenate([own, (scale * pull).astype(own.dtype)])

    def check_task(self, task: PyTree, out: PyTree) -> PyTree:
        if isinstance(self.loss, AbstractLoss):
            return self.loss.check_task(task, out)
        return out


class IMAML(AbstractMetaLearner):
    r"""Implicit MAML (Rajeswaran, Finn, Kakade & Levine 2019, NeurIPS, "Meta-learning
    with implicit gradients").

    The inner problem is proximal,

    $$\phi^\star(\theta) = \operatorname*{arg\,min}_\phi\ \mathcal{L}_\text{support}(\phi)
    + \tfrac{\lambda}{2} \lVert \phi - \theta \rVert^2,$$

    approximated by the shared loop [`metapinn.adapt`][] ($K$ steps of
    `inner_optimizer` on a [`metapinn.ProximalLoss`][], $\phi_0 = \theta$). At a
    stationary point, the implicit function theorem gives
    $d\phi^\star / d\theta = (I + H/\lambda)^{-1}$ with
    $H = \nabla^2 \mathcal{L}_\text{support}(\phi^\star)$ (the Hessian of the
    *unregularised* support loss), so the meta-gradient is

    $$g = \Big(I + \tfrac{1}{\lambda} H\Big)^{-1} \nabla \mathcal{L}_\text{query}(\phi^\star),$$

    independent of the path the inner optimiser took. It is computed by conjugate
    gradients ([`metapinn.conjugate_gradient`][], at most `cg_steps` steps, started from
    $\nabla \mathcal{L}_\text{query}(\phi^\star)$, its $\lambda \to \infty$ limit) on
    Hessian-vector products: forward mode over the loss's own gradient (Pearlmutter
    1994). A solve costs `cg_steps + 1` products, each a few gradients' work.

    **Memory.** The inner loop runs with $\theta$ and every inner gradient stopped
    (`jax.lax.stop_gradient`), so reverse mode keeps nothing of it: the meta-step's
    memory does not grow with $K$. Second-order [`metapinn.MAML`][] stores
    $\phi_k$ for every step (with its default `inner_vjp="hvp"` only that: one copy
    of the parameters per step and task), and both peak at about one batched
    Hessian-vector product, so iMAML saves memory only once $K$ is large. The price
    is that $g$ is exact only when the inner loop has converged; with $K$ steps it is
    the implicit gradient at $\phi_K$.

    **Indefinite Hessians.** A PINN's $H$ need not be positive semi-definite, so
    $I + H/\lambda$ may be indefinite where $\lambda < -\lambda_\min(H)$. The solve
    still runs truncated CG, as in the paper: at most `cg_steps` steps, whatever it
    reached is used. On an indefinite operator CG's iterates are not guaranteed to
    improve; at a search direction of no positive curvature CG stops with the iterate
    it has, and a non-finite solution falls back to
    $\nabla \mathcal{L}_\text{query}(\phi^\star)$, the first-order iMAML gradient.
    `damping` $\delta \ge 0$ replaces $H$ by $H + \delta I$ in the solve (not in the
    inner problem); $\delta > -\lambda_\min(H) - \lambda$ makes
    the operator positive definite. (On the tests' small Burgers PINN, $\lambda = 1$
    gives an indefinite operator and $\lambda = 10$ a definite one.)

    **Fields:** (besides those of [`metapinn.AbstractMetaLearner`][], and after them;
    all static)

    - `prox_lambda`: $\lambda > 0$, the proximal strength (default 1.0).
    - `cg_steps`: the most CG steps, $\ge 1$ (default 5).
    - `cg_rtol`, `cg_atol`: CG's tolerances, $\ge 0$: it stops early once the 2-norm
      of its residual is at most `cg_atol` + `cg_rtol` times that of the right-hand
      side (defaults 1e-6 and 1e-10).
    - `damping`: $\delta \ge 0$ added to the Hessian in the solve (default 0).

    `inner_vjp` has no effect: nothing differentiates through the inner loop.
    Adapting only a subset of the leaves (`adapt_spec`, ANIL) is not supported: the
    frozen leaves would need the mixed second derivative of the support loss.

    **Raises:** `ValueError` naming the value for $\lambda \le 0$ or non-finite,
    `cg_steps < 1`, negative or non-finite tolerances or damping, or an `adapt_spec`;
    otherwise as [`metapinn.AbstractMetaLearner`][], on construction.
    """

    prox_lambda: float = eqx.field(static=True, default=1.0)
    cg_steps: int = eqx.field(static=True, default=5)
    cg_rtol: float = eqx.field(static=True, default=1e-6)
    cg_atol: float = eqx.field(static=True, default=1e-10)
    damping: float = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        _check_positive("prox_lambda", self.prox_lambda)
        if (
            isinstance(self.cg_steps, bool)
            or not isinstance(self.cg_steps, int)
            or self.cg_steps < 1
        ):
            raise ValueError(f"cg_steps must be an integer >= 1, got {self.cg_steps!r}")
        _check_positive("cg_rtol", self.cg_rtol, allow_zero=True)
        _check_positive("cg_atol", self.cg_atol, allow_zero=True)
        _check_positive("damping", self.damping, allow_zero=True)
        if self.adapt_spec is not None:
            raise ValueError(
                "IMAML does not support adapt_spec (adapting a subset of the leaves, as "
                f"in ANIL); pass adapt_spec=None, got {self.adapt_spec!r}"
            )

    def implicit_gradient(
        self,
        adapted: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query_grads: Params,
    ) -> Params:
        r"""$(I + (H + \delta I)/\lambda)^{-1}$ `query_grads` by truncated CG, with
        $H$ the Hessian of `loss_fn` on `support` at `adapted` (no gradient flows
        through the result)."""
        adapted = jax.lax.stop_gradient(adapted)
        query_grads = jax.lax.stop_gradient(query_grads)
        frozen = jtu.tree_map(lambda _: None, adapted)

        def grads_of(p: Params) -> Params:
            return _value_and_grads(loss_fn, p, frozen, static, task, support)[1][0]

        lam, delta = self.prox_lambda, self.damping

        def matvec(v: Params) -> Params:
            # The gradient is recomputed in each product, not linearised once with its
            # residuals kept. The barrier stops XLA hoisting that loop-invariant primal
            # out of CG's loop, which would keep all of it alive (measured: twice the
            # memory of one product).
            point, v = jax.lax.optimization_barrier((adapted, v))
            _, hvp = jax.jvp(grads_of, (point,), (v,))
            return jtu.tree_map(lambda x, h: x + (h + delta * x) / lam, v, hvp)

        # Our CG, not lineax's: inside `jax.shard_map` (a meta-step split over devices)
        # lineax's closure-converted operator sees its argument with the manual mesh's
        # sharding and its example without, and refuses to run (JAX 0.10, lineax 0.1).
        solution = conjugate_gradient(
            matvec, query_grads, query_grads, steps=self.cg_steps, rtol=self.cg_rtol,
            atol=self.cg_atol,
        )  # fmt: skip
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jtu.tree_leaves(solution)]))
        return jtu.tree_map(lambda s, b: jnp.where(finite, s, b), solution, query_grads)

    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        """**Returns:** `(objective, aux)`: the objective's value is the query loss at
        $\\phi_K$ and its gradient in `params` is the implicit meta-gradient $g$;
        `aux.support_losses[k]` is the proximal objective before inner step `k` (at
        `k = 0` the support loss itself)."""
        theta = jax.lax.stop_gradient(params)
        proximal = ProximalLoss(loss_fn, theta, self.prox_lambda)
        adapted, support_losses = self.adapt(
            theta, static, proximal, task, support, stop_inner_gradients=True
        )
        adapted = jax.lax.stop_gradient(adapted)
        frozen = jtu.tree_map(lambda _: None, adapted)
        query_loss, (query_grads, _) = _value_and_grads(
            loss_fn, adapted, frozen, static, task, query
        )
        grads = self.implicit_gradient(adapted, static, loss_fn, task, support, query_grads)
        # Value: the query loss (plus an exact 0); gradient in `params`: `grads`.
        displacement = jtu.tree_map(lambda p, t: p - t, params, theta)
        objective = jax.lax.stop_gradient(query_loss) + _tree_dot(displacement, grads)
        return objective, MetaAux(jax.lax.stop_gradient(query_loss), support_losses)
