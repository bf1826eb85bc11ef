"""Type aliases shared across metapinn (jaxtyping shapes are checked in the tests)."""

from typing import Any

from jaxtyping import Array, ArrayLike, Bool, Float, PyTree


Points = Float[Array, "n 2"]
"""Collocation points; column 0 is `x`, column 1 is `t`."""
PointSet = Float[Array, "_ 2"]
"""One of several sets of points, each of its own size (e.g. interior, initial, boundary)."""
Values = Float[Array, " n"]
"""One value per point."""
Errors = Float[Array, " m"]
"""Errors of a condition at some points, as many as the condition has (e.g. two per
initial point for a displacement and a velocity)."""
Scalar = Float[Array, ""]
ScalarLike = Float[ArrayLike, ""] | float
Params = PyTree[Float[ArrayLike, "..."]]
"""The trainable (array) half of a partitioned model."""
Static = PyTree[Any]
"""The non-trainable half of a partitioned model."""
FilterSpec = PyTree[bool | Bool[Array, ""]]

__all__ = [
    "Errors",
    "Points",
    "PointSet",
    "Values",
    "Scalar",
    "ScalarLike",
    "Params",
    "Static",
    "FilterSpec",
]
