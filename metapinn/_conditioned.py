"""The parameter-conditioned PINN `u(x, t, c)`: the task's features as extra inputs."""

import functools
import math
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from ._architectures import AbstractEmbeddedPINN
from ._architectures._networks import check_condition
from ._custom_types import Points, Scalar, Values
from ._loss import AbstractLoss
from ._mlp import MLPPINN, glorot_layers
from ._pinn import AbstractPINN


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


@functools.cache
def _skeleton(depth: int, activation: Callable[[Array], Array]) -> MLPPINN:
    """An [`metapinn.MLPPINN`][] of `depth` whose array leaves are only shapes: the
    structure `bind` fills with a condition's layers (nothing is computed)."""
    return eqx.filter_eval_shape(
        lambda: MLPPINN(width=1, depth=depth, activation=activation, key=jr.key(0))
    )


class ConditionedPINN(eqx.Module):
    r"""A multilayer perceptron $u_\theta(x, t, c)$ whose inputs are the point $(x, t)$
    and a task's condition vector $c \in \mathbb{R}^P$ (e.g. a normalised $\log\nu$,
    see [`metapinn.LogScaledFeature`][]): the parameter-conditioned PINN, the baseline
    that learns one network for the whole family.

    Layers are stored as in [`metapinn.MLPPINN`][], one array `[W | b]` each, the first
    of shape `(width, 2 + P + 1)` with `W = [W_x W_t | W_c]`; Glorot-normal weights
    over the full fan-in $2 + P$, zero biases.

    The condition is constant in $x$ and $t$, so it only shifts the first layer's bias:

    $$z = W_x x + W_t t + (W_c c + b),\qquad z_x = W_x,\quad z_t = W_t,\quad z_{xx} = 0.$$

    [`metapinn.ConditionedPINN.bind`][] therefore returns a plain two-input
    `MLPPINN` for one condition, and its hand-written jet and adjoint apply unchanged;
    [`metapinn.ConditionedPINN.bind_vjp`][] pulls that network's cotangent back to this
    one ($\bar W_c = \bar b' c^\top$, $\bar b = \bar b'$, the other columns and layers
    unchanged).
    """

    layers: tuple[Float[Array, "out in_plus_1"], ...]
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        n_conditions: int,
        width: int = 64,
        depth: int = 4,
        activation: Callable[[Array], Array] = jnp.tanh,
        dtype: DTypeLike | None = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `n_conditions`: $P$, the length of the condition vector.
        - `width`: neurons per hidden layer (W3: 64).
        - `depth`: number of hidden layers (W3: 4).
        - `activation`: elementwise, three times differentiable (default `tanh`).
        - `dtype`: parameter dtype; defaults to JAX's default float.
        - `key`: a PRNG key for the Glorot-normal weights (keyword only).

        **Raises:** `ValueError` for `n_conditions < 1`, `width < 1` or `depth < 1`.
        """
        _check_positive_int("n_conditions", n_conditions)
        _check_positive_int("width", width)
        _check_positive_int("depth", depth)
        self.layers = glorot_layers([2 + n_conditions] + [width] * depth + [1], dtype, key)
        self.activation = activation

    @property
    def n_conditions(self) -> int:
        """$P$, the length of the condition vector."""
        return self.layers[0].shape[1] - 3

    @property
    def width(self) -> int:
        return self.layers[0].shape[0]

    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    def _condition(self, condition: ArrayLike) -> Array:
        return check_condition(condition, self.n_conditions, self.layers[0].dtype)

    def bind(self, condition: ArrayLike) -> MLPPINN:
        """The network for one condition, as a plain two-input PINN.

        **Arguments:** `condition`, the vector $c$ of shape `(n_conditions,)`; it is cast
        to the parameters' dtype.

        **Returns:** an [`metapinn.MLPPINN`][] whose first layer is
        `[W_x W_t | W_c c + b]` and whose other layers are this network's; it is a
        differentiable function of this network (and of `condition`).

        **Raises:** `ValueError` at trace time if `condition` is not `(n_conditions,)`.
        """
        c = self._condition(condition)
        first = self.layers[0]
        bias = first[:, 2:-1] @ c + first[:, -1]
        layers = (jnp.concatenate([first[:, :2], bias[:, None]], 1), *self.layers[1:])
        return eqx.tree_at(lambda pinn: pinn.layers, _skeleton(self.depth, self.activation), layers)

    def bind_vjp(
        self, condition: ArrayLike
    ) -> tuple[MLPPINN, Callable[[PyTree], "ConditionedPINN"]]:
        r"""[`metapinn.ConditionedPINN.bind`][] and its pullback with respect to this
        network, written by hand.

        **Returns:** `(pinn, pullback)`; `pullback` maps a cotangent of `pinn` (an
        `MLPPINN`-structured pytree, arrays at `layers`, `None` allowed) to this
        network's: the first layer's $\bar z$-bias column $\bar b'$ gives
        $\bar W_c = \bar b' c^\top$ and $\bar b = \bar b'$; the $W_x, W_t$ columns and the
        other layers pass through. The condition's own cotangent is not returned;
        differentiating in it (e.g. in a task parameter) still works, by JAX's AD through
        `pullback`, which is ordinary JAX code.
        """
        c = self._condition(condition)

        def pullback(pinn_bar: PyTree) -> "ConditionedPINN":
            first_bar, *rest = pinn_bar.layers
            if first_bar is not None:
                b_bar = first_bar[:, 2:3]
                first_bar = jnp.concatenate([first_bar[:, :2], b_bar * c[None], b_bar], 1)
            return eqx.tree_at(lambda m: m.layers, self, (first_bar, *rest))

        return self.bind(c), pullback

    def __call__(self, points: Points, condition: ArrayLike) -> Values:
        """**Returns:** `u` at each of the `(n, 2)` points for one `condition`,
        `bind(condition)(points)`."""
        return self.bind(condition)(points)


ConditionedNetwork = ConditionedPINN | AbstractEmbeddedPINN
"""A network that takes a task's condition vector: the MLP
[`metapinn.ConditionedPINN`][] (hand-written jet), or any
[`metapinn.nn.AbstractEmbeddedPINN`][] built with `n_conditions > 0`."""


class ConditionedLoss(AbstractLoss):
    r"""A loss of a [`metapinn.ConditionedPINN`][]: the wrapped loss of the network
    bound to the task's own features,

    $$\mathcal{L}_c(\theta; \text{task}) = \mathcal{L}\big(u_\theta(\cdot, \cdot,
    f(\text{task})); \text{task}\big).$$

    Its gradient is the wrapped loss's own `value_and_grad` on the bound network (for
    a [`metapinn.PINNLoss`][], the hand-written adjoint of the jet), pulled back
    through the binding ([`metapinn.ConditionedPINN.bind_vjp`][]); it is an ordinary
    JAX function, so forward mode over it gives the Hessian-vector products of
    second-order MAML. It works wherever a loss does: [`metapinn.adapt`][], and
    [`metapinn.meta_step`][] with any learner; with [`metapinn.MultiTask`][] that is
    the usual training of a conditioned PINN on the training tasks, and with
    [`metapinn.MAML`][] or [`metapinn.Reptile`][] a meta-learned initialisation of it.
    """

    loss: AbstractLoss
    features: Callable[[PyTree], Float[Array, " P"]]

    def __init__(self, loss: AbstractLoss, features: Callable[[PyTree], Float[Array, " P"]]):
        """**Arguments:**

        - `loss`: the loss of a two-input PINN, e.g. `PINNLoss(Burgers())`.
        - `features`: `features(task) -> (P,)`, the condition vector of one task, e.g.
          [`metapinn.LogScaledFeature`][]; an `eqx.Module` or any (hashable) callable.
        """
        self.loss = loss
        self.features = features

    def bind(self, model: ConditionedNetwork, task: PyTree) -> AbstractPINN:
        """**Returns:** the two-input network this loss evaluates for `task`,
        `model.bind(features(task))` (e.g. for zero-shot evaluation).

        **Raises:** what `features` raises (e.g. `ValueError` for a task without its
        field), and `ValueError` at trace time if the features are not of shape
        `(model.n_conditions,)`.
        """
        return model.bind(self.features(task))

    def __call__(self, model: ConditionedNetwork, task: PyTree, batch: PyTree) -> Scalar:
        return self.loss(self.bind(model, task), task, batch)

    def value_and_grad(
        self, model: ConditionedNetwork, task: PyTree, batch: PyTree
    ) -> tuple[Scalar, Any]:
        pinn, pullback = model.bind_vjp(self.features(task))
        loss, grads = self.loss.value_and_grad(pinn, task, batch)
        return loss, pullback(grads)

    def residuals(self, model: ConditionedNetwork, task: PyTree, batch: PyTree) -> Array:
        """The wrapped loss's residual vector for the bound network."""
        return self.loss.residuals(self.bind(model, task), task, batch)

    def check_task(self, task: PyTree, out: PyTree) -> PyTree:
        return self.loss.check_task(task, out)


class LogScaledFeature(eqx.Module):
    r"""A task parameter $p$ on a log scale, mapped so that `[low, high]` is $[-1, 1]$:

    $$c = 2\,\frac{\log p - \log p_\text{low}}{\log p_\text{high} - \log p_\text{low}} - 1.$$

    Called on one task, it returns `c` of shape `(1,)`: the condition of a
    [`metapinn.ConditionedPINN`][] with `n_conditions=1`. Values outside the range map
    outside $[-1, 1]$ (extrapolation).
    """

    low: float = eqx.field(static=True)
    high: float = eqx.field(static=True)
    field: str = eqx.field(static=True)

    def __init__(self, low: float, high: float, field: str = "nu"):
        """**Arguments:**

        - `low`, `high`: the training range of the parameter, `0 < low < high`.
        - `field`: the task's attribute holding the parameter (default `"nu"`, the
          viscosity of a [`metapinn.BurgersTask`][]).

        **Raises:** `ValueError` unless `low` and `high` are finite with
        `0 < low < high`, or if `field` is not a non-empty string.
        """
        for name, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a real number, got {value!r}")
            if not math.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be finite and > 0, got {value!r}")
        if not high > low:
            raise ValueError(f"high must be > low, got low={low!r}, high={high!r}")
        if not isinstance(field, str) or not field:
            raise ValueError(f"field must be a non-empty string, got {field!r}")
        self.low = float(low)
        self.high = float(high)
        self.field = field

    def __call__(self, task: PyTree) -> Float[Array, " 1"]:
        """**Returns:** `c` of shape `(1,)`, in the dtype of the task's parameter.

        **Raises:** `ValueError` at trace time if `task` has no attribute `field`, or if
        that attribute is not a scalar (for a batch of tasks, use `jax.vmap`).
        """
        try:
            value = getattr(task, self.field)
        except AttributeError:
            raise ValueError(
                f"LogScaledFeature reads the task's field {self.field!r}, which "
                f"{type(task).__name__} does not have"
            ) from None
        value = jnp.asarray(value)
        if value.shape != ():
            raise ValueError(
                f"LogScaledFeature takes one task, whose {self.field!r} is a scalar; got "
                f"shape {value.shape} (for a batch of tasks, use jax.vmap)"
            )
        if not jnp.issubdtype(value.dtype, jnp.floating):
            value = value.astype(jnp.zeros(()).dtype)
        log_low, log_high = math.log(self.low), math.log(self.high)
        scale = 2 / (log_high - log_low)
        return (scale * (jnp.log(value) - log_low) - 1)[None]


class ScaledFeature(eqx.Module):
    r"""A vector task parameter $a$ (e.g. the sine coefficients of a
    [`metapinn.RandomICTask`][]'s initial condition) divided elementwise by a scale
    $s$, so that each input of the conditioned network is of order one:
    $c = a / s$. For the random initial conditions of docs/design.md F6, $a_k \sim
    \mathcal{N}(0, 1/k^2)$ before the bound on $\max|u_0|$, so $s_k = 1/k$.

    Called on one task, it returns `c` of shape `(P,)`, `P = len(scale)`: the
    condition of a [`metapinn.ConditionedPINN`][] with `n_conditions=P`.
    """

    scale: tuple[float, ...] = eqx.field(static=True)
    field: str = eqx.field(static=True)

    def __init__(self, scale, field: str = "coefficients"):
        """**Arguments:**

        - `scale`: the positive scale of each entry (a sequence of floats).
        - `field`: the task's attribute holding the vector parameter.

        **Raises:** `ValueError` unless every scale is finite and > 0 and `field` is a
        non-empty string.
        """
        values = tuple(float(s) for s in np.asarray(scale, dtype=float).reshape(-1))
        if not values or not all(math.isfinite(s) and s > 0 for s in values):
            raise ValueError(f"scale must be finite values > 0, got {list(values)!r}")
        if not isinstance(field, str) or not field:
            raise ValueError(f"field must be a non-empty string, got {field!r}")
        self.scale = values
        self.field = field

    def __call__(self, task: PyTree) -> Float[Array, " P"]:
        """**Returns:** `c` of shape `(P,)`, floating: in the dtype of the task's
        parameter if that is floating, else (e.g. integer coefficients) in the default
        float dtype.

        **Raises:** `ValueError` at trace time if `task` has no attribute `field`, or if
        it is not a vector of `P` entries (for a batch of tasks, use `jax.vmap`).
        """
        try:
            value = jnp.asarray(getattr(task, self.field))
        except AttributeError:
            raise ValueError(
                f"ScaledFeature reads the task's field {self.field!r}, which "
                f"{type(task).__name__} does not have"
            ) from None
        if value.shape != (len(self.scale),):
            raise ValueError(
                f"ScaledFeature takes one task, whose {self.field!r} has shape "
                f"({len(self.scale)},); got {value.shape} (for a batch of tasks, use jax.vmap)"
            )
        if not jnp.issubdtype(value.dtype, jnp.floating):
            value = value.astype(jnp.zeros(()).dtype)
        return value / jnp.asarray(self.scale, dtype=value.dtype)
