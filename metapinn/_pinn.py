"""Physics-informed networks `(x, t) -> u` with forward-mode spatial/temporal derivatives."""

import abc
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from ._custom_types import Points, PointSet, Values


STREAMS = ("u_x", "u_t", "u_xx", "u_tt")
"""The derivatives a jet can carry besides the value `u`, in their order in the jet."""
_FIRST_ORDER = {"u_xx": "u_x", "u_tt": "u_t"}
"""A second derivative's jet needs its first derivative at the same points."""

Needs = tuple[str, ...]
"""Which of `STREAMS` one set of points needs, e.g. `("u_x", "u_t", "u_xx")` (Burgers'
interior) or `()` (values only)."""
BURGERS_NEEDS: Needs = ("u_x", "u_t", "u_xx")
"""What a second-order PDE in x with a first derivative in t needs in its interior."""


def check_needs(needs: Any, name: str = "needs") -> Needs:
    """The closed, ordered form of `needs`: every name one of `STREAMS`, a second
    derivative's first derivative added (`u_xx` brings `u_x`), in `STREAMS` order.

    **Arguments:**

    - `needs`: a tuple or list of names from `STREAMS`, e.g. `("u_t", "u_xx")`.
    - `name`: what to call `needs` in an error message (default `"needs"`).

    **Returns:** a tuple of names, e.g. `("u_x", "u_t", "u_xx")` for `("u_t", "u_xx")`.

    **Raises:** `ValueError` (at trace time) if `needs` is a string or not a tuple or
    list, or names an unknown derivative.
    """
    if isinstance(needs, str) or not isinstance(needs, (tuple, list)):
        raise ValueError(f"{name} must be a tuple of derivative names, got {needs!r}")
    unknown = [n for n in needs if n not in STREAMS]
    if unknown:
        raise ValueError(f"{name} names unknown derivative(s) {unknown}; choose from {STREAMS}")
    wanted = set(needs) | {_FIRST_ORDER[n] for n in needs if n in _FIRST_ORDER}
    return tuple(n for n in STREAMS if n in wanted)


class Derivatives(eqx.Module):
    """The network and the derivatives a PDE needs, at each of `n` points.

    Each field present has shape `(n,)`; a derivative that was not asked for is `None`
    (see [`metapinn.AbstractPINN.jet`][]).

    **Fields:**

    - `u`: the network's value $u$.
    - `u_x`, `u_t`: the first derivatives $u_x$, $u_t$ (default `None`).
    - `u_xx`, `u_tt`: the second derivatives $u_{xx}$, $u_{tt}$ (default `None`).

    The constructor checks nothing; [`metapinn.Derivatives.require`][] raises for a
    missing field.
    """

    u: Values
    u_x: Values | None = None
    u_t: Values | None = None
    u_xx: Values | None = None
    u_tt: Values | None = None

    def require(self, *names: str) -> tuple[Values, ...]:
        """The fields `names` (e.g. `u_t, u_xx = derivs.require("u_t", "u_xx")`).

        **Raises:** `ValueError`, naming the field, for one the jet did not compute
        (a family's `jet_needs` must list every derivative its residual or conditions
        read), or for a name that is not a field.
        """
        fields = []
        for name in names:
            if name not in ("u", *STREAMS):
                raise ValueError(
                    f"{name!r} is not a field of Derivatives; choose from {('u', *STREAMS)}"
                )
            value = getattr(self, name)
            if value is None:
                raise ValueError(
                    f"the derivative {name!r} was not computed: list it in the family's "
                    "jet_needs for these points"
                )
            fields.append(value)
        return tuple(fields)


JetPullback = Callable[[tuple[Derivatives, ...]], Any]
"""Maps a cotangent of the jet (one `Derivatives` per set of points) to a cotangent of
the network."""


def check_points(points: Points, name: str = "points") -> None:
    """Raise `ValueError` at trace time unless `points` has shape `(n, 2)`."""
    shape = jnp.shape(points)
    if len(shape) != 2 or shape[1] != 2:
        raise ValueError(
            f"{name} must have shape (n, 2) with columns (x, t); got shape {shape}. "
            "For a batch of point sets, use jax.vmap."
        )


def _check_sets(point_sets: Sequence[PointSet], needs: Sequence[Needs]) -> tuple[Needs, ...]:
    if not point_sets:
        raise ValueError("a jet needs at least one set of points")
    if len(point_sets) != len(needs):
        raise ValueError(
            f"a jet takes one needs tuple per set of points; got {len(point_sets)} sets "
            f"and {len(needs)} needs"
        )
    for i, points in enumerate(point_sets):
        check_points(points, f"point set {i}")
    return tuple(check_needs(n, f"needs of point set {i}") for i, n in enumerate(needs))


class AbstractPINN(eqx.Module):
    """A network `u(x, t)` that can also return its derivatives in `x` and `t`."""

    @abc.abstractmethod
    def __call__(self, points: Points) -> Values:
        """**Returns:** `u` at each of the `(n, 2)` points."""

    def derivatives(self, points: Points, needs: Needs = BURGERS_NEEDS) -> Derivatives:
        """**Returns:** `u` and the derivatives named in `needs` (closed as
        [`metapinn.check_needs`][] does; default `u_x, u_t, u_xx`) at each of the `(n, 2)`
        points.

        This default needs nothing but `__call__`: it propagates the derivatives forward
        through the network by nested `jax.jvp` ([`metapinn.nn.forward_derivatives`][]), so a
        user's own Equinox network is a PINN as soon as it maps `(n, 2)` points to `(n,)`
        values point by point. A network may supply a faster jet (e.g.
        [`metapinn.MLPPINN`][], by hand).
        """
        from ._forward_jet import forward_derivatives  # it imports this module

        return forward_derivatives(self, points, needs)

    def jet(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[Derivatives, ...]:
        """What a physics-informed loss needs, in one call: for each set of `(n_i, 2)`
        points (e.g. interior, initial, boundary), the value and the derivatives its
        entry of `needs` names (e.g. `("u_x", "u_t", "u_xx")`, or `()` for values only).

        **Returns:** one [`metapinn.Derivatives`][] per set, holding the closed needs
        (`u_xx` brings `u_x`) and `None` for the rest.

        **Raises:** `ValueError` at trace time for points not `(n, 2)`, an unknown
        derivative, or a number of needs other than the number of sets.
        """
        needs = _check_sets(point_sets, needs)
        return tuple(self.derivatives(p, n) for p, n in zip(point_sets, needs, strict=True))

    def jet_vjp(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[tuple[Derivatives, ...], JetPullback]:
        """[`metapinn.AbstractPINN.jet`][] and its pullback, as `jax.vjp` gives them.

        **Returns:** `(jet, pullback)`, where `pullback` maps a cotangent of the jet
        (of its structure) to the cotangent of the network: a pytree of its structure
        with arrays at its floating-point leaves and `None` elsewhere. This default
        differentiates `jet` by reverse mode; a subclass may supply a faster adjoint.
        """
        out, pullback = eqx.filter_vjp(lambda pinn: pinn.jet(point_sets, needs), self)
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

    jet_in: Array | None  # the layer's input jet (None for the first layer)
    slopes: tuple[Array, ...]  # the activation's derivatives (up to the jet's order + 1)
    z_streams: dict[str, Array]  # each stream's z_d (first layer: the W_x, W_t columns)


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
        layout = _Layout(tuple(p.shape[0] for p in point_sets), needs)
        out, _ = self._forward(point_sets, layout, order=2)
        return _split(out, self.layers[-1][0, -1], layout)

    def jet_vjp(
        self, point_sets: Sequence[PointSet], needs: Sequence[Needs]
    ) -> tuple[tuple[Derivatives, ...], JetPullback]:
        needs = _check_sets(point_sets, needs)
        layout = _Layout(tuple(p.shape[0] for p in point_sets), needs)
        out, (jet, layers, x, t) = self._forward(point_sets, layout, order=3)

        def pullback(cotangent: tuple[Derivatives, ...]) -> "MLPPINN":
            out_bar = _gather(layout, cotangent)
            grads: list[Array | None] = [None] * len(self.layers)
            grads[-1] = _with_bias(jet @ out_bar, out_bar[: layout.values])[None]
            jet_bar = self.layers[-1][0, :-1, None] * out_bar[None]
            for index in range(len(layers) - 1, -1, -1):
                layer = layers[index]
                z_bar, streams_bar = _activation_pullback(layout, layer, jet_bar, index == 0)
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
                    grads[index] = _with_bias(z_bar_jet @ layer.jet_in.T, z_bar)
                    # The barrier keeps W.T a materialised row-major operand: XLA:CPU
                    # hands `W.T @ A` to its fast matmul kernels only in that form (a
                    # transposed-operand dot falls back to a slow loop).
                    w_t = jax.lax.optimization_barrier(self.layers[index][:, :-1].T)
                    jet_bar = w_t @ z_bar_jet
            return eqx.tree_at(lambda pinn: pinn.layers, self, tuple(grads))

        return _split(out, self.layers[-1][0, -1], layout), pullback

    def _forward(self, point_sets: Sequence[PointSet], layout: "_Layout", order: int):
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
        jet = _next_jet(layout, sigma, z_streams, first=True)
        layers = [_HiddenLayer(None, sigma[1:], z_streams)]
        for layer in self.layers[1:-1]:
            z_jet = layer[:, :-1] @ jet
            z = z_jet[:, : layout.values] + layer[:, -1:]
            z_streams = {s: layout.stream_columns(z_jet, s) for s in layout.streams}
            sigma = activation_derivatives(self.activation, z, order)
            layers.append(_HiddenLayer(jet, sigma[1:], z_streams))
            jet = _next_jet(layout, sigma, z_streams, first=False)
        return (self.layers[-1][:, :-1] @ jet)[0], (jet, layers, x, t)


class _Layout:
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


def _concatenate(pieces: list[Array]) -> Array:
    return pieces[0] if len(pieces) == 1 else jnp.concatenate(pieces, -1)


def _next_jet(layout: _Layout, sigma: tuple[Array, ...], z_streams: dict, first: bool) -> Array:
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
        columns.append(_concatenate(pieces))
    return jnp.concatenate(columns, 1)


def _with_bias(weights_bar: Array, z_bar: Array) -> Array:
    """A layer's cotangent `[W̄ | b̄]`: the bias's is the sum of `z̄` over the value
    columns (the bias does not reach the derivative streams)."""
    return jnp.concatenate([weights_bar, jnp.sum(z_bar, -1, keepdims=True)], -1)


def _split(out: Array, bias: Array, layout: _Layout) -> tuple[Derivatives, ...]:
    """The output row as one `Derivatives` per set of points."""
    u = out[: layout.values] + bias
    return tuple(
        Derivatives(
            u=layout.value(u, i),
            **{s: layout.part(layout.stream_columns(out, s), s, i) for s in needs},
        )
        for i, needs in enumerate(layout.needs)
    )


def _gather(layout: _Layout, cotangent: Sequence[Derivatives]) -> Array:
    """The inverse of `_split` for a cotangent: one row over the jet's columns (a
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


_SECOND_ORDER = {first: second for second, first in _FIRST_ORDER.items()}


def _activation_pullback(
    layout: _Layout, layer: _HiddenLayer, jet_bar: Array, first: bool
) -> tuple[Array, dict[str, Array]]:
    r"""Cotangents of a layer's pre-activation `z` and of its streams from those of its
    output jet (the adjoint of `_next_jet`), set by set: with $h_d = \sigma' z_d$ and
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
            if _SECOND_ORDER.get(s) in needs:
                piece = piece + 2 * s2_i * z_part(s, i) * h[_SECOND_ORDER[s]]
            stream_pieces[s].append(piece)
        z_bar_sets.append(z_bar_i)
    streams_bar = {s: _concatenate(pieces) for s, pieces in stream_pieces.items()}
    return _concatenate(z_bar_sets), streams_bar
