"""The disk cache of the Burgers references ([`metapinn.cached_burgers_reference`][]):
one `.npz` file per viscosity, keyed by every setting that changes its numbers."""

import hashlib
import json
import os
import pathlib
from typing import cast

import numpy as np
from jaxtyping import ArrayLike, Real

from .._reference_cache import _default_cache_dir, _digest, _load, _save
from ._equation import Burgers
from ._exact import _concrete
from ._reference import (
    _METHOD,
    CODE_VERSION,
    _check_grid_values,
    _check_viscosities,
    burgers_grid_size,
    burgers_reference_solution,
)


def _cache_key(
    nu: float,
    x: np.ndarray,
    t: np.ndarray,
    *,
    grid_size: int,
    rtol: float,
    atol: float,
    t_final: float,
) -> str:
    """A JSON string of every setting that changes the numbers of one solution.

    `max_steps` is left out: a solve either succeeds with the same numbers or fails.
    """
    return json.dumps(
        {
            "code_version": CODE_VERSION,
            "method": _METHOD,
            "nu": float(nu).hex(),
            "x": [int(x.shape[0]), _digest(x)],
            "t": [int(t.shape[0]), _digest(t)],
            "grid_size": int(grid_size),
            "rtol": float(rtol).hex(),
            "atol": float(atol).hex(),
            "t_final": float(t_final).hex(),
        },
        sort_keys=True,
    )


def _cache_path(directory: pathlib.Path, key: str) -> pathlib.Path:
    name = hashlib.sha256(key.encode()).hexdigest()[:32]
    return directory / f"burgers-reference-{name}.npz"


def cached_burgers_reference(
    nu: Real[ArrayLike, "..."] | float,
    x: Real[ArrayLike, "..."] | None = None,
    t: Real[ArrayLike, "..."] | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    grid_size: int | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    t_final: float = 1.0,
) -> np.ndarray:
    """[`metapinn.burgers_reference_solution`][] with a cache on disk, one `.npz` file per
    viscosity, so repeated runs do not recompute.

    A file's name is a hash of every setting that changes the numbers: `nu`, the `x`
    and `t` arrays, the grid size, the tolerances, `t_final` and the code version
    (`metapinn._pde._burgers._reference.CODE_VERSION`); the full key is stored inside the file and
    checked on load, and an unreadable or mismatched file is recomputed. Files are
    written atomically (a temporary file, then `os.replace`), so concurrent runs and
    interruptions never leave a torn file.

    **Arguments:**

    - `nu`, `x`, `t`, `grid_size`, `rtol`, `atol`, `max_steps`, `t_final`: as for
      [`metapinn.burgers_reference_solution`][]; `nu` must be concrete (not traced). Leave
      `x` and `t` out for the standard grid: that hits the same cache entries with
      or without `jax_enable_x64` (a float32 copy of the grid would not).
    - `cache_dir`: the folder for the files; default: the environment variable
      `METAPINN_CACHE` if set, else `$XDG_CACHE_HOME/metapinn`, else
      `~/.cache/metapinn`.

    **Returns:** a float64 NumPy array of shape `(len(t), len(x))`, or
    `(B, len(t), len(x))` for a 1-D `nu`. (A NumPy array, so that cached solutions
    can be loaded in a process without `jax_enable_x64`.)

    **Raises:** as [`metapinn.burgers_reference_solution`][], and `ValueError` for a traced
    `nu`, `x` or `t`.
    """
    directory = _default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
    values = {}
    standard_x, standard_t = Burgers().standard_axes()
    for name, value, default in (("nu", nu, None), ("x", x, standard_x), ("t", t, standard_t)):
        value = default if value is None else _concrete(value)
        if value is None:
            raise ValueError(f"cached_burgers_reference needs a concrete {name}, not a tracer")
        values[name] = np.asarray(value, dtype=np.float64)
    nus, x_values, t_values = values["nu"], values["x"], values["t"]
    if nus.ndim > 1:
        raise ValueError(f"nu must be a scalar or 1-D; got shape {nus.shape}")
    for name, grid in (("x", x_values), ("t", t_values)):
        if grid.ndim != 1 or grid.shape[0] == 0:
            raise ValueError(f"{name} must be a non-empty 1-D array; got shape {grid.shape}")
    _check_grid_values("x", x_values, -1.0, 1.0)
    _check_grid_values("t", t_values, 0.0, float(t_final))
    _check_viscosities(nus)

    flat = nus.reshape(-1)
    shape = (t_values.shape[0], x_values.shape[0])
    sizes = [burgers_grid_size(v) if grid_size is None else grid_size for v in flat]
    keys = [
        _cache_key(v, x_values, t_values, grid_size=s, rtol=rtol, atol=atol, t_final=t_final)
        for v, s in zip(flat, sizes, strict=True)
    ]
    paths = [_cache_path(directory, key) for key in keys]
    u = [_load(path, key, shape) for path, key in zip(paths, keys, strict=True)]
    missing = [i for i, found in enumerate(u) if found is None]
    if missing:
        # One call per grid size keeps the batch vmapped (and matches the sizes above).
        for size in sorted({sizes[i] for i in missing}):
            index = [i for i in missing if sizes[i] == size]
            computed = np.asarray(
                burgers_reference_solution(
                    flat[index],
                    x_values,
                    t_values,
                    grid_size=size,
                    rtol=rtol,
                    atol=atol,
                    max_steps=max_steps,
                    t_final=t_final,
                )
            )
            for row, i in enumerate(index):
                u[i] = computed[row]
                _save(paths[i], keys[i], computed[row])
    done = cast(list[np.ndarray], u)  # every entry is filled above
    if nus.ndim == 0:
        return done[0]
    return np.stack(done) if done else np.zeros((0, *shape), np.float64)
