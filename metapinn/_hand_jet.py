r"""The hand-written jet of a tanh multilayer perceptron and its adjoint: the pieces
[`metapinn.MLPPINN`][] and the `"hand"` mode of [`metapinn.nn.EmbeddedMLP`][] are built
from.

A jet is held *feature-major*, `(width, columns)`: the columns carry the value at every
set of points, then each derivative stream at the sets that need it (`Layout`), so a
dense layer is one matrix product over every stream. Through $h = \sigma(z)$,

$$h_d = \sigma'(z) z_d,\qquad h_{dd} = \sigma'(z) z_{dd} + \sigma''(z) z_d^2$$

for $d \in \{x, t\}$ (`next_jet`), and the pullback is the adjoint of that recurrence
(`activation_pullback`).
"""

from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array

from ._pinn import _FIRST_ORDER, STREAMS, Derivatives, Needs


def nested_activation_derivatives(
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
        return nested_activation_derivatives(activation, z, order)
    h = jnp.tanh(z)
    s = 1 - h * h
    d = -2 * h * s
    return (h, s, d, -2 * s * (1 - 3 * h * h))[: order + 1]


class HiddenLayer(eqx.Module):
    """What the pullback of one hidden layer keeps from the forward pass."""

    jet_in: Array | None  # the layer's input jet (None for the first layer)
    slopes: tuple[Array, ...]  # the activation's derivatives (up to the jet's order + 1)
    z_streams: dict[str, Array]  # each stream's z_d (first layer: the W_x, W_t columns)


class Layout:
    """Where each set of points sits in the columns of a jet (static, at trace time).

    The columns hold the values at every set's points (sets in order), then, for each
    stream of `STREAMS` that some set needs, that stream at the points of the sets that
    need it (in order)."""

    def __init__(self, sizes: tuple[int, ...], needs: tuple[Needs, ...]):
        self.sizes, self.needs = sizes, needs
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        self.value_starts = tuple(starts[:-1])
        self.values = starts[-1]
        self.streams = tuple(s for s in STREAMS if any(s in n for n in needs))
        self.stream_sets: dict[str, tuple[int, ...]] = {}
        self.offsets: dict[tuple[str, int], int] = {}  # (stream, set) -> offset in stream
        self.starts: dict[str, int] = {}  # stream -> its first column in the jet
        self.widths: dict[str, int] = {}
        column = self.values
        for stream in self.streams:
            sets = tuple(i for i, n in enumerate(needs) if stream in n)
            self.stream_sets[stream], self.starts[stream] = sets, column
            width = 0
            for i in sets:
                self.offsets[stream, i] = width
                width += sizes[i]
            self.widths[stream] = width
            column += width
        self.columns = column

    def value(self, a: Array, i: int) -> Array:
        """Set `i`'s columns of an array over the value columns (last axis)."""
        lo = self.value_starts[i]
        return a[..., lo : lo + self.sizes[i]]

    def stream_columns(self, a: Array, stream: str) -> Array:
        """A stream's columns of an array over the whole jet (last axis)."""
        lo = self.starts[stream]
        return a[..., lo : lo + self.widths[stream]]

    def part(self, a: Array, stream: str, i: int) -> Array:
        """Set `i`'s columns of an array over one stream's columns (last axis)."""
        lo = self.offsets[stream, i]
        return a[..., lo : lo + self.sizes[i]]


def concatenate(pieces: list[Array]) -> Array:
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, -1)


def next_jet(layout: Layout, sigma: tuple[Array, ...], z_streams: dict, first: bool) -> Array:
    r"""A hidden layer's output jet from its activation slopes and pre-activation
    streams: $h_d = \sigma' z_d$ for a first derivative and
    $h_{dd} = \sigma' z_{dd} + \sigma'' z_d^2$ for a second ($z_{dd} = 0$ in the first
    layer, whose `z_streams` are the columns `W_x`, `W_t` shared by every point)."""
    s1, s2 = sigma[1], sigma[2]

    def z_part(stream, i):
        return z_streams[stream] if first else layout.part(z_streams[stream], stream, i)

    columns = [sigma[0]]
    for stream in layout.streams:
        pieces = []
        for i in layout.stream_sets[stream]:
            s1_i = layout.value(s1, i)
            if stream not in _FIRST_ORDER:
                pieces.append(s1_i * z_part(stream, i))
                continue
            z_d = z_part(_FIRST_ORDER[stream], i)
            curvature = layout.value(s2, i) * z_d * z_d
            pieces.append(curvature if first else s1_i * z_part(stream, i) + curvature)
        columns.append(concatenate(pieces))
    return jnp.concatenate(columns, 1)


def with_bias(weights_bar: Array, z_bar: Array) -> Array:
    """A layer's cotangent `[W̄ | b̄]`: the bias's is the sum of `z̄` over the value
    columns (the bias does not reach the derivative streams)."""
    return jnp.concatenate([weights_bar, jnp.sum(z_bar, -1, keepdims=True)], -1)


def split_jet(out: Array, bias: Array, layout: Layout) -> tuple[Derivatives, ...]:
    """The output row as one `Derivatives` per set of points."""
    u = out[: layout.values] + bias
    return tuple(
        Derivatives(
            u=layout.value(u, i),
            **{s: layout.part(layout.stream_columns(out, s), s, i) for s in needs},
        )
        for i, needs in enumerate(layout.needs)
    )


def gather_cotangent(layout: Layout, cotangent: Sequence[Derivatives]) -> Array:
    """The inverse of `split_jet` for a cotangent: one row over the jet's columns (a
    missing field, a symbolic zero, as zeros)."""
    if len(cotangent) != len(layout.sizes):
        raise ValueError(
            f"the jet's cotangent has {len(cotangent)} sets of points; the jet has "
            f"{len(layout.sizes)}"
        )

    def field(i, name):
        value = getattr(cotangent[i], name)
        if value is None:
            return jnp.zeros((layout.sizes[i],), cotangent[i].u.dtype)
        return value

    rows = [field(i, "u") for i in range(len(layout.sizes))]
    for stream in layout.streams:
        rows.extend(field(i, stream) for i in layout.stream_sets[stream])
    return jnp.concatenate(rows)


SECOND_ORDER = {first: second for second, first in _FIRST_ORDER.items()}


def activation_pullback(
    layout: Layout, layer: HiddenLayer, jet_bar: Array, first: bool
) -> tuple[Array, dict[str, Array]]:
    r"""Cotangents of a layer's pre-activation `z` and of its streams from those of its
    output jet (the adjoint of `next_jet`), set by set: with $h_d = \sigma' z_d$ and
    $h_{dd} = \sigma' z_{dd} + \sigma'' z_d^2$,

    $$\bar z = \sigma'\bar h + \sigma''\textstyle\sum_s \bar h_s z_s
    + \sigma^{(3)} \sum_{dd} \bar h_{dd} z_d^2,\qquad
    \bar z_d = \sigma'\bar h_d + 2\sigma'' z_d \bar h_{dd},\quad
    \bar z_{dd} = \sigma'\bar h_{dd},$$

    the sums over the streams the set carries ($z_{dd} = 0$ in the first layer). For
    Burgers' interior (`u_x, u_t, u_xx`):
    $\bar z = \sigma'\bar h + \sigma''(\bar h_x z_x + \bar h_t z_t + \bar h_{xx} z_{xx})
    + \sigma^{(3)} \bar h_{xx} z_x^2$.

    **Returns:** `(z_bar, streams_bar)`, `streams_bar` mapping each stream to its
    cotangent over that stream's columns.
    """
    s1, s2, s3 = layer.slopes
    h_bar = jet_bar[:, : layout.values]
    hs_bar = {s: layout.stream_columns(jet_bar, s) for s in layout.streams}

    def z_part(stream, i):
        z = layer.z_streams[stream]
        return z if first else layout.part(z, stream, i)

    z_bar_sets = []
    stream_pieces: dict[str, list[Array]] = {s: [] for s in layout.streams}
    values_only = []  # a run of consecutive sets that carry values only: one slice
    for i, needs in enumerate(layout.needs):
        if not needs:
            values_only.append(i)
            if i + 1 < len(layout.needs) and not layout.needs[i + 1]:
                continue
            lo = layout.value_starts[values_only[0]]
            hi = layout.value_starts[i] + layout.sizes[i]
            z_bar_sets.append(s1[:, lo:hi] * h_bar[:, lo:hi])
            values_only = []
            continue
        s1_i = layout.value(s1, i)
        z_bar_i = s1_i * layout.value(h_bar, i)
        s2_i, s3_i = layout.value(s2, i), layout.value(s3, i)
        h = {s: layout.part(hs_bar[s], s, i) for s in needs}
        terms = [h[s] * z_part(s, i) for s in needs if not (first and s in _FIRST_ORDER)]
        slope_bar = terms[0]
        for term in terms[1:]:
            slope_bar = slope_bar + term
        z_bar_i = z_bar_i + s2_i * slope_bar
        for s in needs:
            if s in _FIRST_ORDER:
                z_d = z_part(_FIRST_ORDER[s], i)
                z_bar_i = z_bar_i + s3_i * h[s] * z_d * z_d
        for s in needs:
            piece = s1_i * h[s]
            if SECOND_ORDER.get(s) in needs:
                piece = piece + 2 * s2_i * z_part(s, i) * h[SECOND_ORDER[s]]
            stream_pieces[s].append(piece)
        z_bar_sets.append(z_bar_i)
    streams_bar = {s: concatenate(pieces) for s, pieces in stream_pieces.items()}
    return concatenate(z_bar_sets), streams_bar


def stack_forward(
    weights: Sequence[Array],
    biases: Sequence[Array],
    jet: Array,
    layout: Layout,
    activation: Callable[[Array], Array],
    order: int,
) -> tuple[Array, list[HiddenLayer]]:
    r"""Hidden layers $h_k = \sigma(W_k h_{k-1} + b_k)$ over an input jet `jet`, shape
    `(fan_in, layout.columns)`: each layer one product `W @ jet`, the bias added to the
    value columns only.

    **Returns:** the last hidden jet and, per layer, what `stack_pullback` needs
    (`order = 3` keeps the activation's third derivative for it; 2 suffices for the
    jet alone).
    """
    saved = []
    for w, b in zip(weights, biases, strict=True):
        z_jet = w @ jet
        z = z_jet[:, : layout.values] + b[:, None]
        z_streams = {s: layout.stream_columns(z_jet, s) for s in layout.streams}
        sigma = activation_derivatives(activation, z, order)
        saved.append(HiddenLayer(jet, sigma[1:], z_streams))
        jet = next_jet(layout, sigma, z_streams, first=False)
    return jet, saved


def stack_pullback(
    weights: Sequence[Array], saved: Sequence[HiddenLayer], jet_bar: Array, layout: Layout
) -> tuple[list[Array], list[Array], Array]:
    """The adjoint of `stack_forward`: from the cotangent of the last hidden jet, the
    cotangents of every weight and bias and of the input jet (two products per layer).
    """
    w_bars: list[Array] = []
    b_bars: list[Array] = []
    for index in range(len(weights) - 1, -1, -1):
        layer = saved[index]
        z_bar, streams_bar = activation_pullback(layout, layer, jet_bar, first=False)
        z_bar_jet = jnp.concatenate([z_bar, *(streams_bar[s] for s in layout.streams)], 1)
        assert layer.jet_in is not None
        w_bars.append(z_bar_jet @ layer.jet_in.T)
        b_bars.append(jnp.sum(z_bar, 1))
        # As in MLPPINN: W.T materialised row-major keeps XLA:CPU on its fast kernels.
        w_t = jax.lax.optimization_barrier(weights[index].T)
        jet_bar = w_t @ z_bar_jet
    return w_bars[::-1], b_bars[::-1], jet_bar
