r"""The hand-written jet and adjoint of [`metapinn.nn.EmbeddedMLP`][] (its forward mode
`"hand"`), built from the pieces of [`metapinn.MLPPINN`][]'s.

Three stages, each differentiated the cheapest way:

1. The coordinates $z(x, t)$ (2 to 4 of them: $x$ or $(\cos\omega x, \sin\omega x)$,
   then $t$ or $(\cos\omega_t t, \sin\omega_t t)$) and their derivative streams, by
   forward mode (`jax.jvp`, nested for a second derivative) — a few numbers a point.
2. The Fourier features $\gamma = [\cos a, \sin a]$, $a = B^\top z$, by the chain rule
   a hidden layer uses: $\gamma_d = \sigma'(a) a_d$, $\gamma_{dd} = \sigma'(a) a_{dd} +
   \sigma''(a) a_d^2$ with $\sigma \in \{\cos, \sin\}$, so $\cos a$ and $\sin a$ are
   evaluated once, at the values, and every stream reuses them. Their adjoint is a
   hidden layer's too (`activation_pullback`, the third derivatives $\sin$ and
   $-\cos$), and $\bar B = z\,\bar a^\top$; the coordinates' adjoint (only a
   trainable $\omega_t$ has one) is left to reverse-mode AD.
3. The hidden layers and the output, each one product over every stream, and their
   adjoint by hand (`stack_forward`, `stack_pullback`): the part that holds the matrix
   products, where reverse-mode AD of the forward jet was measured slower. The
   weights are materialised first ($W = e^{s} V$ with random weight factorisation), and
   their cotangents pulled back through that by AD.
"""

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import PointSet
from .._hand_jet import (
    HiddenLayer,
    Layout,
    activation_pullback,
    gather_cotangent,
    next_jet,
    split_jet,
    stack_forward,
    stack_pullback,
)
from .._pinn import _FIRST_ORDER, Derivatives, JetPullback, Needs, _check_sets
from ._embedding import Embedding


if TYPE_CHECKING:
    from ._networks import EmbeddedMLP


_DIRECTION = {"u_x": 0, "u_t": 1, "u_xx": 0, "u_tt": 1}
"""The input column (0: x, 1: t) a stream differentiates along."""


def _coordinate_jet(coordinates, point_sets: Sequence[PointSet], layout: Layout) -> Array:
    """`z` and its streams, feature-major `(d, layout.columns)`, by forward mode."""
    columns = [coordinates(jnp.concatenate(list(point_sets))).T]
    for stream in layout.streams:
        points = jnp.concatenate([point_sets[i] for i in layout.stream_sets[stream]])
        direction = jnp.zeros_like(points).at[:, _DIRECTION[stream]].set(1)

        def along(p, direction=direction):
            return jax.jvp(coordinates, (p,), (direction,))[1]

        if stream in _FIRST_ORDER:
            columns.append(jax.jvp(along, (points,), (direction,))[1].T)
        else:
            columns.append(along(points).T)
    return jnp.concatenate(columns, 1)


def _fourier_slopes(a: Array) -> tuple[tuple[Array, ...], tuple[Array, ...]]:
    """cos and sin at `a` and their first three derivatives."""
    cos_a, sin_a = jnp.cos(a), jnp.sin(a)
    return (cos_a, -sin_a, -cos_a, sin_a), (sin_a, cos_a, -sin_a, -cos_a)


def feature_jet(embedding: Embedding, point_sets: Sequence[PointSet], layout: Layout) -> Array:
    """The embedding's jet, feature-major: shape `(n_features, layout.columns)`, the
    value of $\\gamma$ at every point, then each stream at the sets that need it."""
    return feature_jet_vjp(embedding, point_sets, layout)[0]


def feature_jet_vjp(
    embedding: Embedding, point_sets: Sequence[PointSet], layout: Layout
) -> tuple[Array, Callable[[Array], Any]]:
    """`feature_jet` and its pullback to the embedding: a cotangent of the jet to one
    of the embedding's structure."""
    z_jet, coordinates_pullback = jax.vjp(
        lambda e: _coordinate_jet(e.coordinates_at, point_sets, layout), embedding
    )
    b = embedding.fourier
    if b is None:
        return z_jet, lambda features_bar: coordinates_pullback(features_bar)[0]
    a_jet = b.T @ z_jet
    a_streams = {s: layout.stream_columns(a_jet, s) for s in layout.streams}
    slopes = _fourier_slopes(a_jet[:, : layout.values])
    features = jnp.concatenate(
        [next_jet(layout, sigma, a_streams, first=False) for sigma in slopes], 0
    )

    def pullback(features_bar: Array) -> Any:
        m = b.shape[1]
        a_bar_jet = None
        for sigma, bar in zip(slopes, (features_bar[:m], features_bar[m:]), strict=True):
            layer = HiddenLayer(None, sigma[1:], a_streams)  # slopes from sigma' on
            z_bar, streams_bar = activation_pullback(layout, layer, bar, first=False)
            piece = jnp.concatenate([z_bar, *(streams_bar[s] for s in layout.streams)], 1)
            a_bar_jet = piece if a_bar_jet is None else a_bar_jet + piece
        assert a_bar_jet is not None
        embedding_bar = coordinates_pullback(b @ a_bar_jet)[0]
        return eqx.tree_at(lambda e: e.fourier, embedding_bar, z_jet @ a_bar_jet.T)

    return features, pullback


def _layers(net: "EmbeddedMLP") -> tuple[tuple[Array, ...], tuple[Array, ...], Array, Array]:
    """The weights the network applies (factorisation multiplied out) and its biases."""
    return (
        tuple(layer.effective_weight for layer in net.hidden),
        tuple(layer.bias for layer in net.hidden),
        net.output.effective_weight,
        net.output.bias,
    )


def _layout(point_sets: Sequence[PointSet], needs: Sequence[Needs]) -> Layout:
    closed = _check_sets(point_sets, needs)
    return Layout(tuple(p.shape[0] for p in point_sets), closed)


def hand_jet(
    net: "EmbeddedMLP", point_sets: Sequence[PointSet], needs: Sequence[Needs]
) -> tuple[Derivatives, ...]:
    """[`metapinn.AbstractPINN.jet`][] of a plain `EmbeddedMLP`, by hand."""
    layout = _layout(point_sets, needs)
    weights, biases, w_out, b_out = _layers(net)
    features = feature_jet(net.embedding, point_sets, layout)
    jet, _ = stack_forward(weights, biases, features, layout, net.activation, order=2)
    return split_jet((w_out @ jet)[0], b_out[0], layout)


def hand_jet_vjp(
    net: "EmbeddedMLP", point_sets: Sequence[PointSet], needs: Sequence[Needs]
) -> tuple[tuple[Derivatives, ...], JetPullback]:
    """[`metapinn.AbstractPINN.jet_vjp`][] of a plain `EmbeddedMLP`, the hidden layers'
    adjoint by hand."""
    layout = _layout(point_sets, needs)
    (weights, biases, w_out, b_out), layers_pullback = eqx.filter_vjp(_layers, net)
    features, features_pullback = feature_jet_vjp(net.embedding, point_sets, layout)
    jet, saved = stack_forward(weights, biases, features, layout, net.activation, order=3)
    out = (w_out @ jet)[0]

    def pullback(cotangent: tuple[Derivatives, ...]) -> Any:
        out_bar = gather_cotangent(layout, cotangent)
        w_out_bar = (jet @ out_bar)[None]
        b_out_bar = jnp.sum(out_bar[: layout.values])[None]
        jet_bar = w_out[0, :, None] * out_bar[None]
        w_bars, b_bars, features_bar = stack_pullback(weights, saved, jet_bar, layout)
        net_bar = layers_pullback((tuple(w_bars), tuple(b_bars), w_out_bar, b_out_bar))[0]
        embedding_bar = features_pullback(features_bar)
        return eqx.tree_at(lambda n: n.embedding, net_bar, embedding_bar)

    return split_jet(out, b_out[0], layout), pullback
