r"""Input embeddings of the point $(x, t)$: the exact periodic embedding of $x$ and random
Fourier features."""

import math

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray

from .._custom_types import Points


def _check_positive(name: str, value: object, allow_none: bool = True) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be finite and > 0, got {value!r}")
    return float(value)


def _circle(angle: Array) -> Array:
    return jnp.concatenate([jnp.cos(angle), jnp.sin(angle)], 1)


class Embedding(eqx.Module):
    r"""The features $\gamma(x, t)$ a network reads instead of the raw point.

    In two stages. First the coordinates: $x$ itself, or, for a domain periodic in $x$
    with period $L$, the exact periodic embedding $(\cos\omega x, \sin\omega x)$,
    $\omega = 2\pi/L$, which makes every function of the features (the whole network,
    and each of its $x$-derivatives) periodic to the last bit, so such a network needs
    no periodic boundary loss (Dong and Ni 2021; Wang et al. 2023, "An expert's guide
    to training PINNs", §4); then $t$ itself, or $(\cos\omega_t t, \sin\omega_t t)$
    with a trainable $\omega_t$. Call that vector $z$ (2 to 4 entries). Second, if
    asked, random Fourier features (Tancik et al. 2020; Wang, Wang and Perdikaris
    2021, "On the eigenvector bias of Fourier feature networks")

    $$\gamma(z) = \big[\cos(zB),\ \sin(zB)\big],\qquad B_{ij}\sim\mathcal N(0,\sigma^2),$$

    with $B$ trainable; else $\gamma(z) = z$.

    **Fields:** `fourier` ($B$, shape `(len(z), m)`, or `None`), `time_frequency`
    ($\omega_t$, or `None`), `x_frequency` ($\omega$, static, or `None`).
    """

    fourier: Float[Array, "d m"] | None
    time_frequency: Float[Array, ""] | None
    x_frequency: float | None = eqx.field(static=True)

    def __init__(
        self,
        period: float | None = None,
        fourier_features: int = 0,
        fourier_scale: float = 1.0,
        time_period: float | None = None,
        dtype: DTypeLike | None = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `period`: $L$, the period of the domain in $x$, for the exact periodic
          embedding; `None` (default) reads $x$ as it is.
        - `fourier_features`: the number of Fourier features, $2m$ (even); 0 (default)
          for none.
        - `fourier_scale`: $\\sigma$, the standard deviation of $B$'s entries (default 1).
        - `time_period`: the initial $2\\pi/\\omega_t$ of a trainable periodic embedding
          of $t$; `None` (default) reads $t$ as it is.
        - `dtype`: parameter dtype; defaults to JAX's default float.
        - `key`: a PRNG key for $B$ (keyword only).

        **Raises:** `ValueError` naming a bad value: a period that is not finite and
        > 0, an odd or negative `fourier_features`, a `fourier_scale` that is not
        finite and > 0.
        """
        period = _check_positive("period", period)
        time_period = _check_positive("time_period", time_period)
        scale = _check_positive("fourier_scale", fourier_scale, allow_none=False)
        if (
            isinstance(fourier_features, bool)
            or not isinstance(fourier_features, int)
            or fourier_features < 0
            or fourier_features % 2
        ):
            raise ValueError(
                f"fourier_features must be an even integer >= 0 (cos and sin of each "
                f"frequency), got {fourier_features!r}"
            )
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        self.x_frequency = None if period is None else 2 * math.pi / period
        self.time_frequency = (
            None if time_period is None else jnp.asarray(2 * math.pi / time_period, dtype)
        )
        d = (1 if period is None else 2) + (1 if time_period is None else 2)
        if fourier_features:
            assert scale is not None
            self.fourier = scale * jr.normal(key, (d, fourier_features // 2), dtype)
        else:
            self.fourier = None

    @property
    def coordinates(self) -> int:
        """The length of $z$, the coordinates before the Fourier features."""
        return (1 if self.x_frequency is None else 2) + (1 if self.time_frequency is None else 2)

    @property
    def n_features(self) -> int:
        """The length of $\\gamma(x, t)$."""
        return self.coordinates if self.fourier is None else 2 * self.fourier.shape[1]

    def coordinates_at(self, points: Points) -> Float[Array, "n d"]:
        """**Returns:** $z$, the coordinates before the Fourier features, at each of the
        `(n, 2)` points, shape `(n, coordinates)`."""
        x, t = points[:, 0:1], points[:, 1:2]
        if self.x_frequency is not None:
            x = _circle(self.x_frequency * x)
        if self.time_frequency is not None:
            t = _circle(self.time_frequency * t)
        return jnp.concatenate([x, t], 1)

    def __call__(self, points: Points) -> Float[Array, "n features"]:
        """**Returns:** $\\gamma$ at each of the `(n, 2)` points, shape `(n, n_features)`."""
        z = self.coordinates_at(points)
        if self.fourier is None:
            return z
        zb = z @ self.fourier
        return jnp.concatenate([jnp.cos(zb), jnp.sin(zb)], 1)
