"""Physics-informed networks `(x, t) -> u` with forward-mode spatial/temporal derivatives."""

import abc
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Points, Values


class Derivatives(eqx.Module):
    """The network and the derivatives a second-order PDE in `(x, t)` needs, per point.

    Each field has shape `(n,)`.
    """

    u: Values
    u_x: Values
    u_t: Values
    u_xx: Values


EdgePoints = Float[Array, "m 2"]
"""Initial and boundary points, where only the value is needed."""
EdgeValues = Float[Array, " m"]

JetPullback = Callable[[tuple[Derivatives, EdgeValues]], Any]
"""Maps a cotangent of `(derivatives, edge values)` to a cotangent of the network."""


def check_points(points: Points, name: str = "points") -> None:
    """Raise `ValueError` at trace time unless `points` has shape `(n, 2)`."""
    shape = jnp.shape(points)
    if len(shape) != 2 or shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n, 2) with columns (x, t); got shape {shape}. "
            "For a batch of point sets, use jax.vmap."
        )


class AbstractPINN(eqx.Module):
    """A network `u(x, t)` that can also return `u_x`, `u_t` and `u_xx` at points."""

    @abc.abstractmethod
    def __call__(self, points: Points) -> Values:
        """**Returns:** `u` at each of the `(n, 2)` points."""

    @abc.abstractmethod
    def derivatives(self, points: Points) -> Derivatives:
        """**Returns:** `u, u_x, u_t, u_xx` at each of the `(n, 2)` points."""

    def jet(self, interior: Points, edge: EdgePoints) -> tuple[Derivatives, EdgeValues]:
        """What a physics-informed loss needs, in one call: the derivatives at the
        `interior` points and the values at the `edge` (initial and boundary) points.

        **Returns:** `(derivatives, values)`.
        """
        return self.derivatives(interior), self(edge)

    def jet_vjp(
        self, interior: Points, edge: EdgePoints
    ) -> tuple[tuple[Derivatives, EdgeValues], JetPullback]:
        """[`metapinn.AbstractPINN.jet`][] and its pullback, as `jax.vjp` gives them.

        **Returns:** `((derivatives, values), pullback)`, where `pullback` maps a
        cotangent `(derivatives_bar, values_bar)` to the cotangent of the network: a
        pytree of its structure with arrays at its floating-point leaves and `None`
        elsewhere. This default differentiates `jet` by reverse mode; a subclass may
        supply a faster adjoint.
        """
        out, pullback = eqx.filter_vjp(lambda pinn: pinn.jet(interior, edge), self)
        return out, lambda cotangent: pullback(cotangent)[0]


def _nested_derivatives(
    activation: Callable[[Array], Array], z: Array, order: int
) -> tuple[Array, ...]:
    """`(σ(z), σ'(z), …, σ^(order)(z))` for an elementwise `σ`, by nested forward mode."""
    ones = jnp.ones_like(z)

    def derivatives_up_to(k, w):
        if k == 0:
            return (activation(w),)
        primals, tangents = jax.jvp(lambda v: derivatives_up_to(k - 1, v), (w,), (ones,))
        return primals + tangents[-1:]

    return derivatives_up_to(order, z)


def activation_derivatives(
    activation: Callable[[Array], Array], z: Array, order: int
) -> tuple[Array, ...]:
    r"""`(σ(z), σ'(z), …, σ^{(order)}(z))` for `order <= 3`.

    `tanh` uses the closed forms $\sigma' = 1 - \sigma^2$, $\sigma'' = -2\sigma\sigma'$
    and $\sigma^{(3)} = -2\sigma'(1 - 3\sigma^2)$ (one transcendental per entry); any
    other activation is differentiated by nested `jax.jvp`.
    """
    if activation is not jnp.tanh:
        return _nested_derivatives(activation, z, order)
    h = jnp.tanh(z)
    s = 1 - h * h
    d = -2 * h * s
    return (h, s, d, -2 * s * (1 - 3 * h * h))[: order + 1]


def glorot_layers(
    sizes: list[int], dtype: DTypeLike | None, key: PRNGKeyArray
) -> tuple[Array, ...]:
    """Layers `[W | b]` for the layer sizes `sizes` (inputs first): Glorot-normal
    weights over each layer's fan-in and fan-out, zero biases, in `dtype` (JAX's
    default float if `None`)."""
    dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
    keys = jr.split(key, len(sizes) - 1)
    glorot = jax.nn.initializers.glorot_normal(in_axis=1, out_axis=0)
    return tuple(
        jnp.concatenate([glorot(k, (fan_out, fan_in), dtype), jnp.zeros((fan_out, 1), dtype)], 1)
        for k, fan_in, fan_out in zip(keys, sizes[:-1], sizes[1:], strict=True)
    )


class _HiddenLayer(eqx.Module):
    """What the pullback of one hidden layer keeps from the forward pass."""

    jet_in: Array | None  # the layer's input streams (None for the first layer)
    slopes: tuple[Array, ...]  # σ', σ'', σ''' at every column
    z_x: Array
    z_t: Array
    z_xx: Array | None  # None for the first layer, where it is zero


class MLPPINN(AbstractPINN):
    r"""A multilayer perceptron $u_\theta(x, t)$ with Glorot-normal weights, zero biases.

    Each layer is *one* array `[W | b]` of shape `(fan_out, fan_in + 1)`, the bias as
    its last column, so a network of depth $D$ has $D + 1$ parameter arrays: every
    per-array cost of a meta-step (optimiser updates, loop carries, the stored inner
    steps) scales with that count. `weights` and `biases` are views of `layers`.

    Derivatives are propagated forward through the layers by hand (a truncated Taylor
    jet in $x$ plus the tangent in $t$): for a hidden pre-activation $z$ and
    $h = \sigma(z)$,

    $$h_x = \sigma'(z) z_x,\quad h_t = \sigma'(z) z_t,\quad
    h_{xx} = \sigma'(z) z_{xx} + \sigma''(z) z_x^2.$$

    Activations are held *feature-major*, `(width, columns)`, and the columns of one
    array carry every stream: the value at the interior and edge points, then `h_x`,
    `h_t` and `h_xx` at the interior points, so each layer is *one* matrix product
    `W @ jet`; the bias is added to the value columns only (it does not reach the
    derivative streams). [`metapinn.MLPPINN.jet_vjp`][] pulls a cotangent back through
    the same jet by hand (the adjoint of the recurrence above: one product per layer
    for the weights' cotangent, one for the layer input's). A loss gradient so costs
    three matrix products per layer and a few elementwise passes, and it stays an
    ordinary JAX function: forward mode through it gives Hessian-vector products.

    (Folding the bias into the product, through a constant row of ones under the value
    columns, was tried: the odd contraction length of 33 made the W1 MAML step about
    40 % slower on XLA:CPU.)
    """

    layers: tuple[Float[Array, "out in_plus_1"], ...]
    activation: Callable[[Array], Array] = eqx.field(static=True)

    def __init__(
        self,
        width: int = 32,
        depth: int = 2,
        activation: Callable[[Array], Array] = jnp.tanh,
        dtype: DTypeLike | None = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `width`: neurons per hidden layer (W1: 32).
        - `depth`: number of hidden layers (W1: 2).
        - `activation`: elementwise, three times differentiable (default `tanh`).
        - `dtype`: parameter dtype; defaults to JAX's default float.
        - `key`: a PRNG key for the Glorot-normal weights (keyword only).

        **Raises:** `ValueError` for `width < 1` or `depth < 1`.
        """
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ValueError(f"width must be a positive integer, got {width!r}")
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be a positive integer, got {depth!r}")
        self.layers = glorot_layers([2] + [width] * depth + [1], dtype, key)
        self.activation = activation

    @property
    def weights(self) -> tuple[Float[Array, "out in"], ...]:
        """Each layer's weight matrix `W`, a view of `layers`."""
        return tuple(layer[:, :-1] for layer in self.layers)

    @property
    def biases(self) -> tuple[Float[Array, " out"], ...]:
        """Each layer's bias `b`, a view of `layers`."""
        return tuple(layer[:, -1] for layer in self.layers)

    @property
    def width(self) -> int:
        return self.layers[0].shape[0]

    @property
    def depth(self) -> int:
        return len(self.layers) - 1

    def __call__(self, points: Points) -> Values:
        check_points(points)
        h = points
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = self.activation(h @ w.T + b[None])
        return (h @ self.weights[-1].T)[:, 0] + self.biases[-1][0]

    def derivatives(self, points: Points) -> Derivatives:
        check_points(points)
        derivs, _ = self.jet(points, points[:0])
        return derivs

    def jet(self, interior: Points, edge: EdgePoints) -> tuple[Derivatives, EdgeValues]:
        check_points(interior, "interior")
        check_points(edge, "edge")
        out, _ = self._forward(interior, edge, order=2)
        return _split(out, self.layers[-1][0, -1], interior.shape[0], edge.shape[0])

    def jet_vjp(
        self, interior: Points, edge: EdgePoints
    ) -> tuple[tuple[Derivatives, EdgeValues], JetPullback]:
        check_points(interior, "interior")
        check_points(edge, "edge")
        n, m = interior.shape[0], edge.shape[0]
        out, (jet, layers, x, t) = self._forward(interior, edge, order=3)

        def pullback(cotangent: tuple[Derivatives, EdgeValues]) -> "MLPPINN":
            d_bar, edge_bar = cotangent
            out_bar = jnp.concatenate([d_bar.u, edge_bar, d_bar.u_x, d_bar.u_t, d_bar.u_xx])
            grads = [None] * len(self.layers)
            grads[-1] = _with_bias(jet @ out_bar, out_bar[: n + m])[None]
            jet_bar = self.layers[-1][0, :-1, None] * out_bar[None]
            for index in range(len(layers) - 1, -1, -1):
                layer = layers[index]
                z_bar, z_x_bar, z_t_bar, z_xx_bar = _activation_pullback(layer, jet_bar, n)
                if index == 0:
                    # z = W[:, 0] x + W[:, 1] t + b, with z_x = W[:, 0], z_t = W[:, 1].
                    grads[0] = jnp.stack(
                        [
                            z_bar @ x + jnp.sum(z_x_bar, 1),
                            z_bar @ t + jnp.sum(z_t_bar, 1),
                            jnp.sum(z_bar, 1),
                        ],
                        1,
                    )
                else:
                    z_bar_jet = jnp.concatenate([z_bar, z_x_bar, z_t_bar, z_xx_bar], 1)
                    grads[index] = _with_bias(z_bar_jet @ layer.jet_in.T, z_bar)
                    # The barrier keeps W.T a materialised row-major operand: XLA:CPU
                    # hands `W.T @ A` to its fast matmul kernels only in that form (a
                    # transposed-operand dot falls back to a slow loop).
                    w_t = jax.lax.optimization_barrier(self.layers[index][:, :-1].T)
                    jet_bar = w_t @ z_bar_jet
            return eqx.tree_at(lambda pinn: pinn.layers, self, tuple(grads))

        return _split(out, self.layers[-1][0, -1], n, m), pullback

    def _forward(self, interior: Points, edge: EdgePoints, order: int):
        """The jet, feature-major; columns as in the class docstring. Returns the output
        row (before the output bias) and what the pullback needs: the last hidden jet; per
        hidden layer, its input, activation slopes and pre-activation streams; and the
        columns' `x` and `t`.
        """
        n = interior.shape[0]
        x, t = _columns(interior, edge)
        columns = x.shape[0]
        first = self.layers[0]
        z_x, z_t = first[:, 0:1], first[:, 1:2]
        # The first layer is affine in (x, t): z_x and z_t are columns, z_xx = 0.
        z = z_x * x[None] + z_t * t[None] + first[:, 2:3]
        sigma = activation_derivatives(self.activation, z, order)
        s1, s2 = sigma[1][:, :n], sigma[2][:, :n]
        jet = jnp.concatenate([sigma[0], s1 * z_x, s1 * z_t, s2 * z_x * z_x], 1)
        layers = [_HiddenLayer(None, sigma[1:], z_x, z_t, None)]
        for layer in self.layers[1:-1]:
            z_jet = layer[:, :-1] @ jet
            z = z_jet[:, :columns] + layer[:, -1:]
            z_x = z_jet[:, columns : columns + n]
            z_t = z_jet[:, columns + n : columns + 2 * n]
            z_xx = z_jet[:, columns + 2 * n :]
            sigma = activation_derivatives(self.activation, z, order)
            s1, s2 = sigma[1][:, :n], sigma[2][:, :n]
            layers.append(_HiddenLayer(jet, sigma[1:], z_x, z_t, z_xx))
            jet = jnp.concatenate([sigma[0], s1 * z_x, s1 * z_t, s1 * z_xx + s2 * z_x * z_x], 1)
        return (self.layers[-1][:, :-1] @ jet)[0], (jet, layers, x, t)


def _with_bias(weights_bar: Array, z_bar: Array) -> Array:
    """A layer's cotangent `[W̄ | b̄]`: the bias's is the sum of `z̄` over the value
    columns (the bias does not reach the derivative streams)."""
    return jnp.concatenate([weights_bar, jnp.sum(z_bar, -1, keepdims=True)], -1)


def _split(out: Array, bias: Array, n: int, m: int) -> tuple[Derivatives, EdgeValues]:
    u = out[: n + m] + bias
    derivs = Derivatives(
        u=u[:n],
        u_x=out[n + m : 2 * n + m],
        u_t=out[2 * n + m : 3 * n + m],
        u_xx=out[3 * n + m :],
    )
    return derivs, u[n:]


def _columns(interior: Points, edge: EdgePoints) -> tuple[Array, Array]:
    """`x` and `t` of the interior points followed by the edge points."""
    return (
        jnp.concatenate([interior[:, 0], edge[:, 0]]),
        jnp.concatenate([interior[:, 1], edge[:, 1]]),
    )


def _activation_pullback(
    layer: _HiddenLayer, jet_bar: Array, n: int
) -> tuple[Array, Array, Array, Array]:
    r"""Cotangents of `z, z_x, z_t, z_xx` from those of `h, h_x, h_t, h_xx` (the adjoint
    of the jet recurrence; the edge columns carry only `h`):

    $$\bar z = \sigma'\bar h + \sigma''(\bar h_x z_x + \bar h_t z_t + \bar h_{xx} z_{xx})
    + \sigma^{(3)} \bar h_{xx} z_x^2,\qquad
    \bar z_x = \sigma'\bar h_x + 2\sigma'' z_x \bar h_{xx},\quad
    \bar z_t = \sigma'\bar h_t,\quad \bar z_{xx} = \sigma'\bar h_{xx}.$$
    """
    s1, s2, s3 = layer.slopes
    columns = s1.shape[1]
    h_bar = jet_bar[:, :columns]
    h_x_bar = jet_bar[:, columns : columns + n]
    h_t_bar = jet_bar[:, columns + n : columns + 2 * n]
    h_xx_bar = jet_bar[:, columns + 2 * n :]
    s1_in, s2_in, s3_in = s1[:, :n], s2[:, :n], s3[:, :n]
    z_x, z_t, z_xx = layer.z_x, layer.z_t, layer.z_xx
    slope_bar = h_x_bar * z_x + h_t_bar * z_t
    if z_xx is not None:
        slope_bar = slope_bar + h_xx_bar * z_xx
    z_bar_interior = s1_in * h_bar[:, :n] + s2_in * slope_bar + s3_in * h_xx_bar * z_x * z_x
    z_bar = jnp.concatenate([z_bar_interior, s1[:, n:] * h_bar[:, n:]], 1)
    z_x_bar = s1_in * h_x_bar + 2 * s2_in * z_x * h_xx_bar
    return z_bar, z_x_bar, s1_in * h_t_bar, s1_in * h_xx_bar
