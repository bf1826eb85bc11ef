"""Physics-informed networks `(x, t) -> u` with forward-mode spatial/temporal derivatives."""

import abc
from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax.numpy as jnp

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
