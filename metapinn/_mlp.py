"""The tanh multilayer perceptron PINN with a hand-written jet and adjoint."""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Points, PointSet, Values
from ._hand_jet import (
    HiddenLayer,
    Layout,
    activation_derivatives,
    activation_pullback,
    gather_cotangent,
    next_jet,
    split_jet,
    with_bias,
)
from ._pinn import (
    BURGERS_NEEDS,
    AbstractPINN,
    Derivatives,
    JetPullback,
    Needs,
    _check_sets,
    check_points,
)


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


class MLPPINN(AbstractPINN):
    r"""A multilayer perceptron $u_\theta(x, t)$ with Glorot-normal weights, zero biases.

    Each layer is *one* array `[W | b]` of shape `(fan_out, fan_in + 1)`, the bias as
    its last column, so a network of depth $D$ has $D + 1$ parameter arrays: every
    per-array cost of a meta-step (optimiser updates, loop carries, the stored inner
    steps) scales with that count. `weights` and `biases` are views of `layers`.

    Derivatives are propagated forward through the layers by hand (truncated Taylor
    jets in $x$ and in $t$): for a hidden pre-activation $z$ and $h = \sigma(z)$,

    $$h_x = \sigma'(z) z_x,\quad h_t = \sigma'(z) z_t,\quad
    h_{xx} = \sigma'(z) z_{xx} + \sigma''(z) z_x^2,\quad
    h_{tt} = \sigma'(z) z_{tt} + \sigma''(z) z_t^2.$$

    Activations are held *feature-major*, `(width, columns)`, and the columns of one
    array carry every stream: the value at every set of points, then each derivative
    stream at the sets that need it (for Burgers' loss: `h_x`, `h_t` and `h_xx` at the
    interior points only, values only at the initial and boundary points), so each
    layer is *one* matrix product `W @ jet`; the bias is added to the value columns
    only (it does not reach the derivative streams). [`metapinn.AbstractPINN.jet_vjp`][]
    pulls a cotangent back through the same jet by hand (the adjoint of the recurrence
    above: one product per layer for the weights' cotangent, one for the layer
    input's). A loss gradient so costs
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

    def derivatives(self, points: Points, needs: Needs = BURGERS_NEEDS) -> Derivatives:
        check_points(points)
        return self.jet((points,), (needs,))[0]

    def jet(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[Derivatives, ...]:
        needs = _check_sets(point_sets, needs)
        layout = Layout(tuple(p.shape[0] for p in point_sets), needs)
        out, _ = self._forward(point_sets, layout, order=2)
        return split_jet(out, self.layers[-1][0, -1], layout)

    def jet_vjp(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[tuple[Derivatives, ...], JetPullback]:
        needs = _check_sets(point_sets, needs)
        layout = Layout(tuple(p.shape[0] for p in point_sets), needs)
        out, (jet, layers, x, t) = self._forward(point_sets, layout, order=3)

        def pullback(cotangent: tuple[Derivatives, ...]) -> "MLPPINN":
            out_bar = gather_cotangent(layout, cotangent)
            grads: list[Array | None] = [None] * len(self.layers)
            grads[-1] = with_bias(jet @ out_bar, out_bar[: layout.values])[None]
            jet_bar = self.layers[-1][0, :-1, None] * out_bar[None]
            for index in range(len(layers) - 1, -1, -1):
                layer = layers[index]
                z_bar, streams_bar = activation_pullback(layout, layer, jet_bar, index == 0)
                if index == 0:
                    # z = W[:, 0] x + W[:, 1] t + b, with z_x = W[:, 0], z_t = W[:, 1].
                    w_x_bar, w_t_bar = z_bar @ x, z_bar @ t
                    if "u_x" in streams_bar:
                        w_x_bar = w_x_bar + jnp.sum(streams_bar["u_x"], 1)
                    if "u_t" in streams_bar:
                        w_t_bar = w_t_bar + jnp.sum(streams_bar["u_t"], 1)
                    grads[0] = jnp.stack([w_x_bar, w_t_bar, jnp.sum(z_bar, 1)], 1)
                else:
                    z_bar_jet = jnp.concatenate(
                        [z_bar, *(streams_bar[s] for s in layout.streams)], 1
                    )
                    assert layer.jet_in is not None  # only the first layer has none
                    grads[index] = with_bias(z_bar_jet @ layer.jet_in.T, z_bar)
                    # The barrier keeps W.T a materialised row-major operand: XLA:CPU
                    # hands `W.T @ A` to its fast matmul kernels only in that form (a
                    # transposed-operand dot falls back to a slow loop).
                    w_t = jax.lax.optimization_barrier(self.layers[index][:, :-1].T)
                    jet_bar = w_t @ z_bar_jet
            return eqx.tree_at(lambda pinn: pinn.layers, self, tuple(grads))

        return split_jet(out, self.layers[-1][0, -1], layout), pullback

    def _forward(self, point_sets: Sequence[PointSet], layout: "Layout", order: int):
        """The jet, feature-major; columns as in the class docstring. Returns the output
        row (before the output bias) and what the pullback needs: the last hidden jet; per
        hidden layer, its input, activation slopes and pre-activation streams; and the
        columns' `x` and `t`.
        """
        x = jnp.concatenate([p[:, 0] for p in point_sets])
        t = jnp.concatenate([p[:, 1] for p in point_sets])
        first = self.layers[0]
        # The first layer is affine in (x, t): z_x and z_t are columns, z_xx = z_tt = 0.
        z_streams = {"u_x": first[:, 0:1], "u_t": first[:, 1:2]}
        z = z_streams["u_x"] * x[None] + z_streams["u_t"] * t[None] + first[:, 2:3]
        sigma = activation_derivatives(self.activation, z, order)
        jet = next_jet(layout, sigma, z_streams, first=True)
        layers = [HiddenLayer(None, sigma[1:], z_streams)]
        for layer in self.layers[1:-1]:
            z_jet = layer[:, :-1] @ jet
            z = z_jet[:, : layout.values] + layer[:, -1:]
            z_streams = {s: layout.stream_columns(z_jet, s) for s in layout.streams}
            sigma = activation_derivatives(self.activation, z, order)
            layers.append(HiddenLayer(jet, sigma[1:], z_streams))
            jet = next_jet(layout, sigma, z_streams, first=False)
        return (self.layers[-1][:, :-1] @ jet)[0], (jet, layers, x, t)
