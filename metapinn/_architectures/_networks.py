r"""The networks of the accurate-PINN toolkit: an MLP, the modified MLP and PirateNet, each
over an [`metapinn.nn.Embedding`][] of the point, each usable as the plain PINN $u(x, t)$
and as the parameter-conditioned one $u(x, t, c)$, with derivatives by the generic
forward-mode path ([`metapinn.nn.forward_derivatives`][])."""

import abc
import math
from collections.abc import Callable, Sequence
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray, PyTree

from .._custom_types import Points, PointSet, Values
from .._forward_jet import ForwardMode, check_forward_mode, forward_derivatives
from .._pinn import BURGERS_NEEDS, AbstractPINN, Derivatives, JetPullback, Needs, check_points
from ._dense import RWF, Dense, check_rwf
from ._embedding import Embedding
from ._hand_mlp import hand_jet, hand_jet_vjp


def _check_count(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_condition(condition: ArrayLike, n_conditions: int, dtype) -> Array:
    """`condition` as an array of the parameters' `dtype` (an input, like the points).

    **Raises:** `ValueError` at trace time unless its shape is `(n_conditions,)`."""
    shape = jnp.shape(condition)
    if shape != (n_conditions,):
        raise ValueError(
            f"condition must have shape ({n_conditions},), one value per condition input of "
            f"the network; got shape {shape}. For several conditions, use jax.vmap."
        )
    return jnp.asarray(condition).astype(dtype)


class AbstractEmbeddedPINN(AbstractPINN):
    r"""A network $u(x, t[, c]) = \text{head}\big(\text{body}([\gamma(x, t), c])\big)$:
    an [`metapinn.nn.Embedding`][] $\gamma$ of the point, the task's condition vector $c$
    (length $P \ge 0$) appended to it, a body of hidden layers and a linear output.

    The condition enters only the layers that read the body's input
    (`input_layers`), linearly, so binding one condition
    ([`metapinn.nn.AbstractEmbeddedPINN.bind`][]) folds $W_c c$ into their biases and
    leaves a plain network of the same class with $P = 0$: the conditioned network's
    loss is the plain network's loss after that fold, as for
    [`metapinn.ConditionedPINN`][], and [`metapinn.ConditionedLoss`][] takes either.
    Derivatives come from [`metapinn.nn.forward_derivatives`][] (mode `forward_mode`).
    """

    embedding: eqx.AbstractVar[Embedding]
    output: eqx.AbstractVar[Dense]
    activation: eqx.AbstractVar[Callable[[Array], Array]]
    forward_mode: eqx.AbstractVar[Any]

    @abc.abstractmethod
    def input_layers(self) -> tuple[Dense, ...]:
        """The dense layers that read the body's input `[γ(x, t), c]` (nodes of this
        network: `eqx.tree_at` replaces them when a condition is bound)."""

    @abc.abstractmethod
    def hidden_state(self, features: Float[Array, "n f"]) -> Float[Array, "n w"]:
        """The last hidden layer's output at the features `γ(x, t)` of a network with
        no condition left (`n_conditions == 0`)."""

    @property
    def n_conditions(self) -> int:
        """$P$, the length of the condition vector (0 for a plain network)."""
        return self.input_layers()[0].weight.shape[1] - self.embedding.n_features

    def bind(self, condition: ArrayLike) -> "AbstractEmbeddedPINN":
        """The plain network ($P = 0$) for one condition: `condition`, shape
        `(n_conditions,)` and cast to the parameters' dtype, folded into the biases of
        the input layers. A differentiable function of this network.

        **Raises:** `ValueError` at trace time for a condition of another shape.
        """
        c = check_condition(condition, self.n_conditions, self.output.weight.dtype)
        kept = self.embedding.n_features
        folded = tuple(layer.fold_inputs(kept, c) for layer in self.input_layers())
        return eqx.tree_at(lambda net: net.input_layers(), self, folded)

    def bind_vjp(self, condition: ArrayLike) -> tuple["AbstractEmbeddedPINN", Callable]:
        """`bind` and its pullback to this network (reverse-mode AD of the fold)."""
        bound, pullback = eqx.filter_vjp(lambda net: net.bind(condition), self)
        return bound, lambda cotangent: pullback(cotangent)[0]

    def _plain(self) -> None:
        if self.n_conditions:
            raise ValueError(
                f"this network takes a condition vector of length {self.n_conditions}: call "
                "it with one, or bind one first (net.bind(condition), or ConditionedLoss)"
            )

    def __call__(self, points: Points, condition: ArrayLike | None = None) -> Values:
        """**Returns:** `u` at each of the `(n, 2)` points (for a conditioned network,
        for the given `condition`, shape `(n_conditions,)`).

        **Raises:** `ValueError` at trace time for points not `(n, 2)`, or a condition
        missing, superfluous or of the wrong shape.
        """
        check_points(points)
        if condition is not None:
            if not self.n_conditions:
                raise ValueError("this network takes no condition (n_conditions = 0)")
            return self.bind(condition)(points)
        self._plain()
        return self.output(self.hidden_state(self.embedding(points)))[:, 0]

    def derivatives(self, points: Points, needs: Needs = BURGERS_NEEDS) -> Derivatives:
        self._plain()
        if self.forward_mode == "hand":
            check_points(points)
            return self.jet((points,), (needs,))[0]
        return forward_derivatives(self, points, needs, self.forward_mode)


def _hidden_sizes(width: int, depth: int) -> None:
    _check_count("width", width)
    _check_count("depth", depth)


def _common(
    n_conditions: Any, period, fourier_features, fourier_scale, time_period, rwf, forward_mode,
    dtype, key,
) -> tuple[Embedding, int, RWF, Any]:  # fmt: skip
    n_conditions = _check_count("n_conditions", n_conditions, minimum=0)
    embedding = Embedding(period, fourier_features, fourier_scale, time_period, dtype, key=key)
    if forward_mode != "hand":  # EmbeddedMLP checks its own
        forward_mode = check_forward_mode(forward_mode)
    return embedding, n_conditions, check_rwf(rwf), forward_mode


MLPMode = Literal["jvp", "taylor", "hand"]
"""How [`metapinn.nn.EmbeddedMLP`][] takes its derivatives: a generic forward mode
([`metapinn.nn.ForwardMode`][]) or `"hand"`, its hand-written jet and adjoint."""


def _dense_stack(sizes: list[int], rwf: RWF, dtype, keys) -> tuple[Dense, ...]:
    """Dense layers `sizes[0] -> sizes[1] -> ...`, one key each."""
    pairs = zip(sizes[:-1], sizes[1:], keys, strict=True)
    return tuple(Dense(a, b, rwf, dtype, key=k) for a, b, k in pairs)


class EmbeddedMLP(AbstractEmbeddedPINN):
    r"""A multilayer perceptron over an embedding: $h_0 = [\gamma(x, t), c]$,
    $h_{k} = \sigma(W_k h_{k-1} + b_k)$ for $k = 1..D$, $u = w^\top h_D + b$. With no
    embedding options it is the plain MLP PINN (differentiated by the generic path
    rather than [`metapinn.MLPPINN`][]'s hand-written jet); with Fourier features it is
    the Fourier-feature network of Wang, Wang and Perdikaris (2021).

    With `forward_mode="hand"` its jet and the jet's adjoint are written by hand, as
    [`metapinn.MLPPINN`][]'s (the Fourier features and hidden layers and their adjoints
    by hand, only the 2–4 coordinates by forward mode and their adjoint by AD; see
    `benchmarks/networks.py` for what it saves): the same function and derivatives to
    rounding, a different order of floating-point operations.

    **Fields:** `embedding`, `hidden` (the $D$ hidden layers), `output`, and the static
    `activation` and `forward_mode`.
    """

    embedding: Embedding
    hidden: tuple[Dense, ...]
    output: Dense
    activation: Callable[[Array], Array] = eqx.field(static=True)
    forward_mode: MLPMode = eqx.field(static=True)

    def __init__(
        self,
        n_conditions: int = 0,
        width: int = 64,
        depth: int = 4,
        *,
        period: float | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        time_period: float | None = None,
        rwf: RWF = None,
        activation: Callable[[Array], Array] = jnp.tanh,
        forward_mode: MLPMode = "jvp",
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `n_conditions`: $P$, the length of the condition vector (0, the default: a
          plain PINN).
        - `width`, `depth`: neurons per hidden layer and number of hidden layers.
        - `period`, `fourier_features`, `fourier_scale`, `time_period`: the
          [`metapinn.nn.Embedding`][]'s.
        - `rwf`: $(\\mu, \\sigma)$ of random weight factorisation for every dense layer
          (e.g. `(1.0, 0.1)`), or `None` (default) for plain layers.
        - `activation`: elementwise and twice differentiable (default `tanh`; three
          times for `"hand"`, whose adjoint needs $\\sigma^{(3)}$).
        - `forward_mode`: `"jvp"` or `"taylor"` (see [`metapinn.nn.forward_derivatives`][]),
          or `"hand"`: the hand-written jet and adjoint.
        - `dtype`: parameter dtype; `key`: a PRNG key (keyword only).

        **Raises:** `ValueError` naming a bad value.
        """
        if forward_mode not in ("jvp", "taylor", "hand"):
            raise ValueError(
                f"forward_mode must be 'jvp', 'taylor' or 'hand', got {forward_mode!r}"
            )
        _hidden_sizes(width, depth)
        e_key, *keys = jr.split(key, depth + 2)
        self.embedding, n_conditions, rwf, self.forward_mode = _common(
            n_conditions, period, fourier_features, fourier_scale, time_period, rwf,
            forward_mode, dtype, e_key,
        )  # fmt: skip
        sizes = [self.embedding.n_features + n_conditions] + [width] * depth
        self.hidden = _dense_stack(sizes, rwf, dtype, keys[:-1])
        self.output = Dense(width, 1, rwf, dtype, key=keys[-1])
        self.activation = activation

    def input_layers(self) -> tuple[Dense, ...]:
        return (self.hidden[0],)

    def hidden_state(self, features: Float[Array, "n f"]) -> Float[Array, "n w"]:
        h = features
        for layer in self.hidden:
            h = self.activation(layer(h))
        return h

    def jet(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[Derivatives, ...]:
        if self.forward_mode != "hand":
            return super().jet(point_sets, needs)
        self._plain()
        return hand_jet(self, point_sets, needs)

    def jet_vjp(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[tuple[Derivatives, ...], JetPullback]:
        if self.forward_mode != "hand":
            return super().jet_vjp(point_sets, needs)
        self._plain()
        return hand_jet_vjp(self, point_sets, needs)


class ModifiedMLP(AbstractEmbeddedPINN):
    r"""The modified MLP of Wang, Teng and Perdikaris (2021, "Understanding and mitigating
    gradient flow pathologies in PINNs"): two gates of the input,
    $U = \sigma(W_U h_0 + b_U)$, $V = \sigma(W_V h_0 + b_V)$ with
    $h_0 = [\gamma(x, t), c]$, and for $k = 1..D$

    $$z_k = \sigma(W_k h_{k-1} + b_k),\qquad h_k = z_k \odot U + (1 - z_k) \odot V,$$

    then $u = w^\top h_D + b$: every layer re-reads the input through the gates.

    **Fields:** `embedding`, `gate_u`, `gate_v`, `hidden`, `output`, and the static
    `activation` and `forward_mode`.
    """

    embedding: Embedding
    gate_u: Dense
    gate_v: Dense
    hidden: tuple[Dense, ...]
    output: Dense
    activation: Callable[[Array], Array] = eqx.field(static=True)
    forward_mode: ForwardMode = eqx.field(static=True)

    def __init__(
        self,
        n_conditions: int = 0,
        width: int = 64,
        depth: int = 4,
        *,
        period: float | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        time_period: float | None = None,
        rwf: RWF = None,
        activation: Callable[[Array], Array] = jnp.tanh,
        forward_mode: ForwardMode = "jvp",
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:** as for [`metapinn.nn.EmbeddedMLP`][].

        **Raises:** `ValueError` naming a bad value.
        """
        _hidden_sizes(width, depth)
        e_key, u_key, v_key, *keys = jr.split(key, depth + 4)
        self.embedding, n_conditions, rwf, self.forward_mode = _common(
            n_conditions, period, fourier_features, fourier_scale, time_period, rwf,
            forward_mode, dtype, e_key,
        )  # fmt: skip
        fan_in = self.embedding.n_features + n_conditions
        self.gate_u = Dense(fan_in, width, rwf, dtype, key=u_key)
        self.gate_v = Dense(fan_in, width, rwf, dtype, key=v_key)
        sizes = [fan_in] + [width] * depth
        self.hidden = _dense_stack(sizes, rwf, dtype, keys[:-1])
        self.output = Dense(width, 1, rwf, dtype, key=keys[-1])
        self.activation = activation

    def input_layers(self) -> tuple[Dense, ...]:
        return (self.gate_u, self.gate_v, self.hidden[0])

    def hidden_state(self, features: Float[Array, "n f"]) -> Float[Array, "n w"]:
        u = self.activation(self.gate_u(features))
        v = self.activation(self.gate_v(features))
        d = u - v  # z ⊙ U + (1 - z) ⊙ V = V + z ⊙ (U - V)
        h = features
        for layer in self.hidden:
            z = self.activation(layer(h))
            h = v + z * d
        return h


class PirateBlock(eqx.Module):
    r"""One adaptive residual block of [`metapinn.nn.PirateNet`][]: three dense layers, the
    first two gated by $U, V$, and the trainable skip weight $\alpha$ (0 at
    initialisation)."""

    first: Dense
    second: Dense
    third: Dense
    alpha: Float[Array, ""]


class PirateNet(AbstractEmbeddedPINN):
    r"""PirateNet (Wang, Sankaran, Wang and Perdikaris 2024, "PirateNets:
    physics-informed deep learning with residual adaptive networks"). The embedding
    $\Phi = \gamma(x, t)$ is Fourier features of width $W$ (the hidden width); the gates
    $U = \sigma(W_U [\Phi, c] + b_U)$, $V = \sigma(W_V [\Phi, c] + b_V)$; from
    $x_0 = \Phi$, each block $l$ computes

    $$f = \sigma(W_1 x + b_1),\ z_1 = f\odot U + (1 - f)\odot V,\quad
    g = \sigma(W_2 z_1 + b_2),\ z_2 = g\odot U + (1 - g)\odot V,$$
    $$h = \sigma(W_3 z_2 + b_3),\qquad x_{l} = \alpha_l h + (1 - \alpha_l)\, x_{l-1},$$

    and $u = w^\top x_L + b$. Every $\alpha_l = 0$ at initialisation, so the network
    starts as a linear function of its embedding, $u = w^\top\Phi + b$, whose output
    layer [`metapinn.nn.fit_output_layer`][] can fit to the initial condition by least
    squares (the paper's physics-informed initialisation); training then lets depth in
    block by block. A condition $c$ enters through the gates only, so at $\alpha = 0$
    the conditioned network does not yet depend on it.

    **Fields:** `embedding`, `gate_u`, `gate_v`, `blocks`, `output`, and the static
    `activation` and `forward_mode`.
    """

    embedding: Embedding
    gate_u: Dense
    gate_v: Dense
    blocks: tuple[PirateBlock, ...]
    output: Dense
    activation: Callable[[Array], Array] = eqx.field(static=True)
    forward_mode: ForwardMode = eqx.field(static=True)

    def __init__(
        self,
        n_conditions: int = 0,
        width: int = 64,
        blocks: int = 2,
        *,
        period: float | None = None,
        fourier_scale: float = 1.0,
        time_period: float | None = None,
        rwf: RWF = None,
        activation: Callable[[Array], Array] = jnp.tanh,
        forward_mode: ForwardMode = "jvp",
        dtype: DTypeLike | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `n_conditions`: $P$ (default 0, a plain PINN).
        - `width`: $W$, the hidden width and the number of Fourier features (even).
        - `blocks`: $L$, the number of residual blocks (three dense layers each).
        - `period`, `fourier_scale`, `time_period`, `rwf`, `activation`,
          `forward_mode`, `dtype`, `key`: as for [`metapinn.nn.EmbeddedMLP`][].

        **Raises:** `ValueError` naming a bad value (e.g. an odd width).
        """
        _check_count("width", width, minimum=2)
        if width % 2:
            raise ValueError(f"PirateNet's width must be even (its Fourier features), got {width}")
        _check_count("blocks", blocks)
        e_key, u_key, v_key, o_key, *keys = jr.split(key, 3 * blocks + 4)
        self.embedding, n_conditions, rwf, self.forward_mode = _common(
            n_conditions, period, width, fourier_scale, time_period, rwf, forward_mode, dtype,
            e_key,
        )  # fmt: skip
        dtype = self.embedding.fourier.dtype  # type: ignore[union-attr]
        self.gate_u = Dense(width + n_conditions, width, rwf, dtype, key=u_key)
        self.gate_v = Dense(width + n_conditions, width, rwf, dtype, key=v_key)
        self.blocks = tuple(
            PirateBlock(
                *(Dense(width, width, rwf, dtype, key=k) for k in keys[3 * i : 3 * i + 3]),
                alpha=jnp.zeros((), dtype),
            )
            for i in range(blocks)
        )
        self.output = Dense(width, 1, rwf, dtype, key=o_key)
        self.activation = activation

    def input_layers(self) -> tuple[Dense, ...]:
        return (self.gate_u, self.gate_v)

    def hidden_state(self, features: Float[Array, "n f"]) -> Float[Array, "n w"]:
        act = self.activation
        u, v = act(self.gate_u(features)), act(self.gate_v(features))
        d = u - v  # z ⊙ U + (1 - z) ⊙ V = V + z ⊙ (U - V)
        x = features
        for block in self.blocks:
            f = act(block.first(x))
            g = act(block.second(v + f * d))
            h = act(block.third(v + g * d))
            x = block.alpha * h + (1 - block.alpha) * x
        return x


def fit_output_layer(
    pinn: AbstractEmbeddedPINN, points: Points, values: Float[ArrayLike, " n"]
) -> AbstractEmbeddedPINN:
    r"""The network with its output layer $(w, b)$ replaced by the least-squares fit
    $\min_{w, b} \lVert H w + b - v\rVert^2$ of `values` $v$ at `points`, $H$ the last
    hidden state there; the rest unchanged. For a [`metapinn.nn.PirateNet`][] at
    initialisation ($\alpha = 0$, $H = \Phi$) on initial points and the initial
    condition, this is PirateNet's physics-informed initialisation: the network starts
    as the best fit of the initial condition in its embedding. (With weight
    factorisation, $V = e^{-s} w$ keeps $s$.)

    **Raises:** `ValueError` for a conditioned network (bind a condition first) or
    points and values of different lengths.
    """
    pinn._plain()
    check_points(points)
    values = jnp.asarray(values)
    if values.shape != (points.shape[0],):
        raise ValueError(
            f"values must have shape ({points.shape[0]},), one per point; got {values.shape}"
        )
    h = pinn.hidden_state(pinn.embedding(points))
    design = jnp.concatenate([h, jnp.ones_like(h[:, :1])], 1)
    solution = jnp.linalg.lstsq(design, values.astype(h.dtype))[0]
    w, b = solution[:-1][None, :], solution[-1:]
    if pinn.output.log_scale is not None:
        w = jnp.exp(-pinn.output.log_scale)[:, None] * w
    return eqx.tree_at(lambda net: (net.output.weight, net.output.bias), pinn, (w, b))


def network_parameter_count(pinn: PyTree) -> int:
    """The number of trainable (floating-point array) entries of a network, or of its
    shapes (`eqx.filter_eval_shape` of its constructor: nothing allocated)."""

    def floating(leaf) -> bool:
        dtype = getattr(leaf, "dtype", None)
        return dtype is not None and jnp.issubdtype(dtype, jnp.inexact)

    return int(sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(pinn) if floating(leaf)))


__all__ = [
    "AbstractEmbeddedPINN",
    "EmbeddedMLP",
    "ModifiedMLP",
    "PirateBlock",
    "PirateNet",
    "fit_output_layer",
    "network_parameter_count",
]
