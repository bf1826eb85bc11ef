r"""A dense layer, optionally with random weight factorisation."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jax.typing import DTypeLike
from jaxtyping import Array, Float, PRNGKeyArray


RWF = tuple[float, float] | None
r"""Random weight factorisation's $(\mu, \sigma)$, or `None` for a plain dense layer."""


def check_rwf(rwf: object) -> RWF:
    r"""`rwf` as an [`RWF`][metapinn.nn.RWF]: `None`, or two finite floats $(\mu, \sigma)$
    with $\sigma \ge 0$. **Raises:** `ValueError` naming the bad value."""
    if rwf is None:
        return None
    try:
        mu, sigma = (float(v) for v in rwf)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"rwf must be None or two numbers (mu, sigma), got {rwf!r}") from None
    if not (math.isfinite(mu) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"rwf (mu, sigma) must be finite with sigma >= 0, got {rwf!r}")
    return mu, sigma


class Dense(eqx.Module):
    r"""$h \mapsto h W^\top + b$, the weight $W$ Glorot-normal and the bias zero at
    initialisation; with random weight factorisation (Wang, Wang, Perdikaris 2022,
    "Random weight factorization improves the training of continuous neural
    representations") the weight is stored as

    $$W = \operatorname{diag}(e^{s})\,V,\qquad s \sim \mathcal N(\mu, \sigma^2),\quad
    V = \operatorname{diag}(e^{-s})\,W_0,$$

    the same function at initialisation as the dense layer of $W_0$, trained in the
    coordinates $(s, V)$ (each output neuron gets its own trainable scale).

    **Fields:** `weight` ($V$, or $W$ without factorisation), `bias`, `log_scale`
    ($s$, or `None`).
    """

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]
    log_scale: Float[Array, " out"] | None

    def __init__(
        self,
        fan_in: int,
        fan_out: int,
        rwf: RWF = None,
        dtype: DTypeLike | None = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:** `fan_in`, `fan_out` (the layer's input and output widths); `rwf`,
        $(\\mu, \\sigma)$ of the factorisation or `None` (default, a plain layer); `dtype`
        (default: JAX's default float); `key` (keyword only)."""
        dtype = jnp.zeros(()).dtype if dtype is None else jnp.dtype(dtype)
        w_key, s_key = jr.split(key)
        glorot = jax.nn.initializers.glorot_normal(in_axis=1, out_axis=0)
        w = glorot(w_key, (fan_out, fan_in), dtype)
        self.bias = jnp.zeros((fan_out,), dtype)
        rwf = check_rwf(rwf)
        if rwf is None:
            self.weight, self.log_scale = w, None
        else:
            mu, sigma = rwf
            s = mu + sigma * jr.normal(s_key, (fan_out,), dtype)
            self.weight, self.log_scale = w * jnp.exp(-s)[:, None], s

    @property
    def effective_weight(self) -> Float[Array, "out in"]:
        """$W$, the weight the layer applies ($e^{s} V$ with factorisation)."""
        if self.log_scale is None:
            return self.weight
        return jnp.exp(self.log_scale)[:, None] * self.weight

    def __call__(self, h: Float[Array, "n in"]) -> Float[Array, "n out"]:
        return h @ self.effective_weight.T + self.bias[None, :]

    def fold_inputs(self, kept: int, inputs: Float[Array, " k"]) -> "Dense":
        r"""The layer with its last inputs fixed to `inputs`: the first `kept` columns
        stay, and $W_{:, \text{kept}:}\,c$ moves into the bias (with factorisation,
        $e^{s} \odot (V_{:, \text{kept}:}\,c)$, and $s$ stays)."""
        shift = self.weight[:, kept:] @ inputs
        if self.log_scale is not None:
            shift = jnp.exp(self.log_scale) * shift
        return eqx.tree_at(
            lambda d: (d.weight, d.bias), self, (self.weight[:, :kept], self.bias + shift)
        )
