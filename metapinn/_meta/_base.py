"""The shared inner loop (one `lax.scan`) and the abstract meta-learner."""

import abc
import math
from typing import Any, Literal, cast

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import optax
from jaxtyping import Array, Float, PyTree

from .._checks import checked
from .._custom_types import FilterSpec, Params, Scalar, Static
from .._loss import AbstractLoss
from ._adapters import AbstractAdapter, Optax, as_adapter
from ._gradients import (
    LossFn as LossFn,
    _inner_value_and_grad,
    _is_none as _is_none,
    _value_and_grads as _value_and_grads,
    as_optimizer as as_optimizer,
    loss_and_grads as loss_and_grads,
    loss_with_gradient as loss_with_gradient,
    optimizer_update as optimizer_update,
)


InnerVJP = Literal["hvp", "autodiff"]
_INNER_VJPS = ("hvp", "autodiff")


def _check_inner_vjp(inner_vjp: str) -> None:
    if inner_vjp not in _INNER_VJPS:
        raise ValueError(f"inner_vjp must be one of {_INNER_VJPS}, got {inner_vjp!r}")


InnerRemat = Literal["sqrt", "binomial"] | int | None
"""How the inner loop is checkpointed for reverse mode (see [`metapinn.adapt`][])."""


def _check_remat(remat: Any) -> None:
    if remat is None or remat in ("sqrt", "binomial"):
        return
    if isinstance(remat, bool) or not isinstance(remat, int) or remat < 1:
        raise ValueError(
            f"inner_remat must be None, 'sqrt', 'binomial' or a segment length >= 1, got {remat!r}"
        )


def remat_scan(body, init, steps: int, *, remat: InnerRemat = None, unroll: int | bool = 1):
    r"""`jax.lax.scan(body, init, length=steps)`, checkpointed for reverse mode.

    Reverse mode through a scan stores every step's residuals: memory grows like
    $K$. With `remat`:

    - `"sqrt"`: segments of $M = \lceil\sqrt K\,\rceil$ steps (and one shorter tail),
      each under `jax.checkpoint`: the outer scan stores one carry per segment and the
      backward pass reruns one segment at a time, so about $K/M + M \approx 2\sqrt K$
      steps' worth of memory, for one extra forward pass of the loop (Griewank &
      Walther 2008, ch. 12; Chen et al. 2016).
    - an int `M`: segments of `M` steps, as above.
    - `"binomial"`: `equinox.internal.scan(kind="checkpointed")`, the online binomial
      (treeverse) schedule of Stumm & Walther (2010), with $O(\sqrt K)$ checkpoints;
      it supports reverse mode only.

    Every choice gives the same values and derivatives as the plain scan (to
    rounding). `unroll` applies to the plain scan and within segments.

    **Arguments:**

    - `body`: `body(carry, None) -> (carry, y)`, as for `jax.lax.scan` without `xs`.
    - `init`: the initial carry.
    - `steps`: $K$, the number of steps (static).
    - `remat`: `None` (default: the plain scan), `"sqrt"`, a segment length `M >= 1`,
      or `"binomial"` (keyword only). For `steps <= 1` the plain scan is used whatever
      `remat` is.
    - `unroll`: passed to `jax.lax.scan` (keyword only; default 1); unused by
      `"binomial"`.

    **Returns:** `(carry, ys)` as `jax.lax.scan` gives them: the final carry and each
    step's `y` stacked along a leading axis of length `steps`.

    **Raises:** `ValueError` naming `remat` if it is none of the above.
    """
    _check_remat(remat)
    if remat is None or steps <= 1:
        return jax.lax.scan(body, init, length=steps, unroll=unroll)
    if remat == "binomial":
        return eqxi.scan(body, init, None, length=steps, kind="checkpointed", checkpoints=None)
    segment = math.isqrt(steps - 1) + 1 if remat == "sqrt" else min(remat, steps)
    count, tail = divmod(steps, segment)

    def run(length):
        @jax.checkpoint
        def segment_of(carry):
            return jax.lax.scan(body, carry, length=length, unroll=unroll)

        return segment_of

    carry, out = jax.lax.scan(lambda c, _: run(segment)(c), init, length=count)
    out = jtu.tree_map(lambda y: y.reshape((count * segment,) + y.shape[2:]), out)
    if tail:
        carry, rest = run(tail)(carry)
        out = jtu.tree_map(lambda a, b: jnp.concatenate([a, b]), out, rest)
    return carry, out


def _check_steps(steps: int) -> None:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"the number of inner steps must be an integer >= 0, got {steps!r}")


def _adapt_with(
    adapter: AbstractAdapter,
    adapting: Params,
    frozen: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    batch: PyTree,
    steps: int,
    *,
    stop_inner_gradients: bool,
    return_trajectory: bool,
    unroll: int | bool,
    remat: InnerRemat,
):
    r"""The loop of [`metapinn.adapt`][] for any adapter: `steps` of `adapter.step` in
    one scan. **Returns:** the adapted half and the scan's outputs.

    The frozen leaves join the static half, so the adapter sees only what adapts. With
    `stop_inner_gradients`, each step's change is stopped, $\phi_{k+1} = \phi_k +
    \operatorname{sg}(\phi_{k+1} - \phi_k)$, so $d\phi_K/d\theta = I$."""
    rest = eqx.combine(frozen, static)

    def body(carry, _):
        p, state = carry
        new, state, loss = adapter.step(p, state, rest, loss_fn, task, batch)
        if stop_inner_gradients:
            new = jtu.tree_map(lambda a, b: b + jax.lax.stop_gradient(a - b), new, p)
            state = jax.lax.stop_gradient(state)
        return (new, state), ((loss, new) if return_trajectory else loss)

    init = (adapting, adapter.init(adapting, rest, loss_fn, task, batch))
    (adapted, _), out = remat_scan(body, init, steps, remat=remat, unroll=unroll)
    return adapted, out


def adapt(
    params: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    batch: PyTree,
    *,
    steps: int,
    optimizer: AbstractAdapter | optax.GradientTransformation | float,
    adapt_spec: FilterSpec | None = None,
    stop_inner_gradients: bool = False,
    return_trajectory: bool = False,
    unroll: int | bool = 1,
    inner_vjp: InnerVJP = "hvp",
    remat: InnerRemat = None,
) -> tuple[Params, Float[Array, " steps"]] | tuple[Params, Float[Array, " steps"], Params]:
    r"""Adapt `params` to one task: `steps` optimiser steps on `loss_fn`, as one `lax.scan`.

    With SGD at rate $\alpha$ this is $\phi_{k+1} = \phi_k - \alpha \nabla
    \mathcal{L}(\phi_k)$, $\phi_0 = \theta$; any optax transformation (Adam included)
    may replace SGD. The loop is differentiable, so second-order MAML is `jax.grad`
    through it.

    **Arguments:**

    - `params`, `static`: the two halves of `eqx.partition(model, ...)`.
    - `loss_fn`: `loss_fn(model, task, batch) -> scalar`.
    - `task`, `batch`: one task (e.g. a [`metapinn.BurgersTask`][]) and its points.
    - `steps`: number of inner steps `K >= 0` (static).
    - `optimizer`: the adapter: an `optax.GradientTransformation`, or a float (SGD at
      that rate), or any [`metapinn.AbstractAdapter`][] ([`metapinn.LBFGS`][],
      [`metapinn.GaussNewton`][]). To differentiate through Adam, give it
      `eps_root > 0` (e.g. `1e-16`): `sqrt(v)` has an infinite derivative where a
      gradient entry is exactly zero. `inner_vjp` applies to optax transformations
      only; through another adapter reverse mode is JAX's own.
    - `adapt_spec`: a pytree of bools with the structure of `params` marking the
      leaves that adapt (e.g. only the last layer, as in ANIL); `None` adapts all.
    - `stop_inner_gradients`: wrap each inner gradient in `stop_gradient`, so that
      $d\phi_K/d\theta = I$ (first-order MAML).
    - `return_trajectory`: also return the parameters after every step.
    - `unroll`: passed to `lax.scan` (static); `True` unrolls the whole loop, which
      compiles more slowly and lets XLA count every step's FLOPs.
    - `inner_vjp`: how reverse mode goes back through each inner gradient (static).
      `"hvp"` (default): a Hessian-vector product by forward mode over the gradient,
      recomputed from that step's parameters, so the scan stores only $\phi_k$ per
      step; the loop then supports reverse mode only. `"autodiff"`: JAX's own
      reverse-over-reverse, which stores every intermediate of every inner gradient
      but also allows forward mode (`jax.jvp`, `jax.hessian`) through the loop.
      Both give the same derivatives.
    - `remat`: checkpoint the loop for reverse mode, so that second order at a long
      inner length $K$ stores $O(\sqrt K)$ steps instead of $K$ (static): `None`
      (default, the plain scan), `"sqrt"`, a segment length, or `"binomial"` (see
      [`metapinn.remat_scan`][]). Same values and derivatives; about one more forward
      pass of the loop in reverse mode.

    **Returns:** `(params_K, losses)` where `losses[k]` is the loss at $\phi_k$ before
    step `k`; with `return_trajectory`, also the stacked $\phi_1, \dots, \phi_K$.

    The gradient of `loss_fn` is its own `value_and_grad` when it is an
    [`metapinn.AbstractLoss`][] (for [`metapinn.PINNLoss`][], the network's hand-written
    adjoint), otherwise reverse-mode AD.

    **Raises:** `ValueError` for `steps` not an integer >= 0, an unknown `inner_vjp`
    or a bad `remat`; `TypeError` for an `optimizer` that is neither an optax
    transformation nor a number. For an [`metapinn.AbstractLoss`][], its `check_task`
    on the losses (e.g. via `eqx.error_if` for an invalid task).
    """
    _check_steps(steps)
    _check_inner_vjp(inner_vjp)
    _check_remat(remat)
    adapter = as_adapter(optimizer)
    if adapt_spec is None:
        adapting, frozen = params, jax.tree_util.tree_map(lambda _: None, params)
    else:
        adapting, frozen = eqx.partition(params, adapt_spec)
    if isinstance(adapter, Optax):
        adapted, out = _adapt_with_optax(
            adapter.optimizer, adapting, frozen, static, loss_fn, task, batch, steps,
            stop_inner_gradients=stop_inner_gradients, return_trajectory=return_trajectory,
            unroll=unroll, inner_vjp=inner_vjp, remat=remat,
        )  # fmt: skip
    else:
        adapted, out = _adapt_with(
            adapter, adapting, frozen, static, loss_fn, task, batch, steps,
            stop_inner_gradients=stop_inner_gradients, return_trajectory=return_trajectory,
            unroll=unroll, remat=remat,
        )  # fmt: skip
    adapted = eqx.combine(adapted, frozen)
    losses, trajectory = out if return_trajectory else (out, None)
    if isinstance(loss_fn, AbstractLoss):
        # The task is validated once, on the returned losses, outside the loop.
        losses = checked(loss_fn, task, losses)
    if return_trajectory:
        frozen_steps = jax.tree_util.tree_map(
            lambda x: jnp.broadcast_to(x, (steps,) + jnp.shape(x)), frozen
        )
        return adapted, cast(Array, losses), eqx.combine(trajectory, frozen_steps)
    return adapted, cast(Array, losses)


def _adapt_with_optax(
    optimizer: optax.GradientTransformation,
    adapting: Params,
    frozen: Params,
    static: Static,
    loss_fn: LossFn,
    task: PyTree,
    batch: PyTree,
    steps: int,
    *,
    stop_inner_gradients: bool,
    return_trajectory: bool,
    unroll: int | bool,
    inner_vjp: InnerVJP,
    remat: InnerRemat,
):
    """The loop of [`metapinn.adapt`][] for an optax transformation, whose reverse mode
    goes back through each inner gradient by `inner_vjp`. **Returns:** the adapted half
    and the scan's outputs."""

    def value_and_grad(p):
        if inner_vjp == "hvp" and not stop_inner_gradients:
            return _inner_value_and_grad((p, frozen, loss_fn, task, batch), static)
        loss, (grads, _) = _value_and_grads(loss_fn, p, frozen, static, task, batch)
        return loss, (jax.lax.stop_gradient(grads) if stop_inner_gradients else grads)

    def body(carry, _):
        p, opt_state = carry
        loss, grads = value_and_grad(p)
        updates, opt_state = optimizer_update(optimizer, grads, opt_state, p)
        if stop_inner_gradients:
            # Optimisers whose update reads the parameters (weight decay, lookahead)
            # would otherwise keep a path from θ through the update.
            updates = jax.lax.stop_gradient(updates)
        p = optax.apply_updates(p, updates)
        return (p, opt_state), ((loss, p) if return_trajectory else loss)

    init = (adapting, optimizer.init(adapting))
    (adapted, _), out = remat_scan(body, init, steps, remat=remat, unroll=unroll)
    return adapted, out


class MetaAux(eqx.Module):
    """What one task's meta-objective reports besides its value.

    **Fields:** `query_loss` and `support_losses`, documented below.
    """

    query_loss: Scalar
    """The query loss at the adapted parameters $\\phi_K$."""
    support_losses: Float[Array, " K"]
    """The support loss before each inner step."""


def tree_sq_norm(tree: PyTree) -> Scalar:
    return jnp.asarray(sum(jnp.sum(leaf**2) for leaf in jax.tree_util.tree_leaves(tree)))


class AbstractMetaLearner(eqx.Module):
    r"""A gradient-based meta-learner over the shared inner loop [`metapinn.adapt`][].

    Every learner defines a per-task meta-objective whose gradient with respect to
    the initialisation $\theta$ is its meta-gradient; the variants differ only in
    where `jax.lax.stop_gradient` sits in the same scanned loop.

    **Fields:** (shared by every final learner; the constructor's arguments, in this
    order)

    - `inner_steps`: $K \ge 0$ (static; default 5).
    - `inner_optimizer`: the inner loop's adapter: an optax transformation, a float
      SGD rate, or a [`metapinn.AbstractAdapter`][] such as [`metapinn.GaussNewton`][]
      (static; default 0.01).
    - `adapt_spec`: which leaves adapt (a pytree of bools), `None` for all (default).
    - `inner_unroll`: `lax.scan` unrolling of the inner loop (static; default 1).
    - `inner_vjp`: `"hvp"` or `"autodiff"`, how second-order MAML differentiates
      through each inner gradient (static; default `"hvp"`; see [`metapinn.adapt`][]).
    - `inner_remat`: checkpointing of the inner loop for reverse mode: `None`
      (default), `"sqrt"`, a segment length or `"binomial"` (static; see
      [`metapinn.adapt`][]).

    **Raises:** on construction, `ValueError` for `inner_steps` not an integer >= 0,
    an unknown `inner_vjp` or a bad `inner_remat`; `TypeError` for an
    `inner_optimizer` that is neither an adapter, an optax transformation nor a number.
    """

    inner_steps: int = eqx.field(static=True, default=5)
    inner_optimizer: AbstractAdapter | optax.GradientTransformation | float = eqx.field(
        static=True, default=0.01
    )
    adapt_spec: FilterSpec | None = None
    inner_unroll: int | bool = eqx.field(static=True, default=1)
    inner_vjp: InnerVJP = eqx.field(static=True, default="hvp")
    inner_remat: InnerRemat = eqx.field(static=True, default=None)

    def __check_init__(self):
        _check_steps(self.inner_steps)
        as_adapter(self.inner_optimizer)
        _check_inner_vjp(self.inner_vjp)
        _check_remat(self.inner_remat)

    def adapt(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        batch: PyTree,
        *,
        stop_inner_gradients: bool = False,
    ) -> tuple[Params, Float[Array, " K"]]:
        """[`metapinn.adapt`][] with this learner's inner settings."""
        return adapt(  # pyright: ignore[reportReturnType]  (a pair without a trajectory)
            params,
            static,
            loss_fn,
            task,
            batch,
            steps=self.inner_steps,
            optimizer=self.inner_optimizer,
            adapt_spec=self.adapt_spec,
            stop_inner_gradients=stop_inner_gradients,
            unroll=self.inner_unroll,
            inner_vjp=self.inner_vjp,
            remat=self.inner_remat,
        )

    def init_meta_params(self, params: Params) -> PyTree:
        """The trainable meta-parameters that start from a network's `params`, which the
        outer optimiser updates and [`metapinn.meta_step`][] passes to `meta_loss`.

        A learner that learns only an initialisation returns `params` itself (this
        default); a learner with a learned inner rule (e.g. [`metapinn.MetaSGD`][])
        returns `params` together with its rates."""
        return params

    def initialisation(self, meta_params: PyTree) -> Params:
        """The network initialisation inside `meta_params` (the inverse of
        `init_meta_params` on the network's part); this default is the identity."""
        return meta_params

    def at_step(self, step: int, steps: int) -> "AbstractMetaLearner":
        """The learner to use at outer step `step` (from 0) of a run of `steps`.

        [`metapinn.meta_train`][] calls it before every step, so a learner with a
        schedule (e.g. MAML++'s annealed multi-step loss weights) returns a copy with
        that step's settings. Array fields change without recompiling the meta-step;
        static fields (e.g. the derivative order) recompile it once per distinct value.
        This default returns the learner unchanged."""
        del step, steps
        return self

    @abc.abstractmethod
    def meta_loss(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Scalar, MetaAux]:
        """The per-task meta-objective, whose gradient in `params` is the meta-gradient.

        **Returns:** `(objective, aux)`.
        """

    def meta_gradient(
        self,
        params: Params,
        static: Static,
        loss_fn: LossFn,
        task: PyTree,
        support: PyTree,
        query: PyTree,
    ) -> tuple[Params, MetaAux]:
        """**Returns:** `(meta_gradient, aux)` for one task."""
        grad_fn = jax.grad(self.meta_loss, has_aux=True)
        return grad_fn(params, static, loss_fn, task, support, query)
