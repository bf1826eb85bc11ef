r"""The generic forward-mode derivative path: the value of any pointwise network and its
derivatives in `x` and `t`, with no hand-written jet.

A network `u(points) -> values` whose value at a point depends on that point alone has,
for the tangent $e_x = (1, 0)$ at every point, the directional derivative
$\partial_{e_x} u = u_x$ at every point in one forward-mode pass over the whole batch
(and likewise $e_t$ for $u_t$); a second pass along the same direction gives $u_{xx}$.
Two ways to take that second pass are offered:

- `"jvp"`: nested `jax.jvp`, $(u, u_x), (u_x, u_{xx}) = \text{jvp}(\text{jvp}(u, e_x), e_x)$;
- `"taylor"`: `jax.experimental.jet`, the order-2 Taylor series of $u$ along $e_x$ in one
  pass (Bettencourt, Johnson and Duvenaud 2019, "Taylor-mode automatic
  differentiation"), which carries three streams where nested `jvp` carries four.

Both are ordinary JAX code, so reverse mode over them gives the loss gradient (and
forward over that, Hessian-vector products). `benchmarks/networks.py` measures them
against each other and against the hand-written jet of [`metapinn.MLPPINN`][].
"""

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp
from jax.experimental import jet as _jet

from ._custom_types import Points, Values
from ._pinn import Derivatives, Needs, check_needs, check_points


ForwardMode = Literal["jvp", "taylor"]
FORWARD_MODES: tuple[ForwardMode, ...] = ("jvp", "taylor")


def check_forward_mode(mode: object) -> ForwardMode:
    """`mode` if it is one of `FORWARD_MODES`. **Raises:** `ValueError` naming it."""
    if mode not in FORWARD_MODES:
        raise ValueError(f"forward mode must be one of {FORWARD_MODES}, got {mode!r}")
    return mode  # type: ignore[return-value]


def _along(
    fn: Callable[[Points], Values], points: Points, column: int, second: bool, mode: ForwardMode
) -> tuple[Values, Values, Values | None]:
    """`(u, u_d, u_dd or None)` along the input column `column` (0: x, 1: t)."""
    direction = jnp.zeros_like(points).at[:, column].set(1)
    if not second:
        u, u_d = jax.jvp(fn, (points,), (direction,))
        return u, u_d, None
    if mode == "taylor":
        u, (u_d, u_dd) = _jet.jet(fn, (points,), ((direction, jnp.zeros_like(points)),))
        return u, u_d, u_dd

    def first(p):
        return jax.jvp(fn, (p,), (direction,))

    (u, u_d), (_, u_dd) = jax.jvp(first, (points,), (direction,))
    return u, u_d, u_dd


def forward_derivatives(
    fn: Callable[[Points], Values],
    points: Points,
    needs: Needs,
    mode: ForwardMode = "jvp",
) -> Derivatives:
    """The value of `fn` and the derivatives `needs` names, by forward mode.

    **Arguments:**

    - `fn`: `fn(points) -> values`, `(n, 2) -> (n,)`, pointwise: the value at a point
      depends on that point alone (true of any network applied row by row; a layer
      that mixes points, e.g. batch normalisation, breaks it).
    - `points`: `(n, 2)`, columns `(x, t)`.
    - `needs`: names from [`metapinn.STREAMS`][] (closed as [`metapinn.check_needs`][]
      does).
    - `mode`: `"jvp"` (nested `jax.jvp`, the default) or `"taylor"`
      (`jax.experimental.jet`).

    **Returns:** a [`metapinn.Derivatives`][] with `u` and the closed needs.

    **Raises:** `ValueError` at trace time for points not `(n, 2)`, an unknown
    derivative or an unknown mode.
    """
    check_points(points)
    needs = check_needs(needs)
    mode = check_forward_mode(mode)
    fields: dict[str, Values] = {}
    u = None
    for column, first, second in ((0, "u_x", "u_xx"), (1, "u_t", "u_tt")):
        if first in needs:
            u, fields[first], dd = _along(fn, points, column, second in needs, mode)
            if dd is not None:
                fields[second] = dd
    if u is None:
        u = fn(points)
    return Derivatives(u=u, **fields)
