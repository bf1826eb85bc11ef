"""A disk cache of the families' reference solutions, one `.npz` file per task.

Burgers keeps its own cache ([`metapinn.cached_burgers_reference`][], keyed by the
viscosity and its solver's settings); every other family's reference is cached here,
keyed by the family, its PDE's settings, the task's values and the grid.
"""

import hashlib
import json
import os
import pathlib
import warnings
from typing import Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from .._checkpoint import _temporary_beside
from ._base import AbstractPDE


CODE_VERSION = 1
"""Bump when a family's reference solver changes its numbers: the key includes it, so
stale files are then ignored. A solver may also carry its own `REFERENCE_VERSION`
class attribute, which the key includes too."""


# The files: where they live, their keys' digests, atomic reads and writes.


def _default_cache_dir() -> pathlib.Path:
    env = os.environ.get("METAPINN_CACHE")
    if env:
        return pathlib.Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = pathlib.Path(xdg).expanduser() if xdg else pathlib.Path.home() / ".cache"
    return base / "metapinn"


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array, dtype=np.float64).tobytes()).hexdigest()


def _load(path: pathlib.Path, key: str, shape: tuple[int, int]) -> np.ndarray | None:
    """A cached solution, or `None` if it is missing, unreadable (truncated, damaged,
    not an `.npz`: whatever reading it raises) or does not match: it is then computed
    again and the file replaced."""
    try:
        # The file is opened here so that it is closed even when it is no `.npz`.
        with open(path, "rb") as file, np.load(file, allow_pickle=False) as data:
            if str(data["key"]) != key:
                return None
            u = np.array(data["u"], dtype=np.float64)
    except FileNotFoundError:
        return None
    except Exception:  # a damaged file is a cache miss, whatever numpy or zipfile raise
        return None
    return u if u.shape == shape and np.all(np.isfinite(u)) else None


def _save(path: pathlib.Path, key: str, u: np.ndarray) -> None:
    """Write atomically: a temporary file in the same folder (with the mode a plain
    `open` gives, 0o666 less the umask, so a shared cache is readable by others), then
    `os.replace`. A cache that cannot be written (a full disk, a read-only folder) is a
    warning naming the file, never a lost result: the solution is returned all the
    same."""
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = _temporary_beside(path)
        with os.fdopen(fd, "wb") as file:
            np.savez(file, u=u, key=np.array(key))
        os.replace(temporary, path)
    except OSError as error:
        if temporary is not None:
            pathlib.Path(temporary).unlink(missing_ok=True)
        warnings.warn(
            f"the reference cache {path} cannot be written ({error}); the reference is "
            "used without it",
            RuntimeWarning,
            stacklevel=3,
        )
    except BaseException:
        if temporary is not None:
            pathlib.Path(temporary).unlink(missing_ok=True)
        raise


def _task_key(pde: AbstractPDE, task: PyTree, x: np.ndarray, t: np.ndarray) -> str:
    leaves = [np.asarray(leaf, dtype=np.float64) for leaf in jax.tree_util.tree_leaves(task)]
    return json.dumps(
        {
            "code_version": CODE_VERSION,
            "family": type(pde).__name__,
            "solver_version": getattr(pde, "REFERENCE_VERSION", 0),
            "pde": repr(pde),
            "task": [[list(a.shape), _digest(a)] for a in leaves],
            "x": [int(x.shape[0]), _digest(x)],
            "t": [int(t.shape[0]), _digest(t)],
        },
        sort_keys=True,
    )


def cached_family_reference(
    pde: AbstractPDE,
    tasks: PyTree,
    x: Any,
    t: Any,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> np.ndarray:
    """`pde.reference_solution` of each task of the batch `tasks` on the grid `x × t`,
    read from the disk cache where it is there and written to it where it was not.

    A file's name is a hash of its key (the family, `repr(pde)`, the task's values,
    the grid and the code versions); the key is stored inside the file and checked on
    load, so a mismatched or unreadable file is recomputed. Files are written
    atomically.

    **Arguments:**

    - `pde`: the family.
    - `tasks`: a batch of its tasks (every leaf with the same leading axis `B`), with
      concrete values; the reference is computed from them in float64.
    - `x`, `t`: the 1-D grid (concrete).
    - `cache_dir`: as for [`metapinn.cached_burgers_reference`][].

    **Returns:** a float64 NumPy array of shape `(B, len(t), len(x))`.

    **Raises:** `ValueError` if the task leaves do not share one leading axis; what
    the family's `reference_solution` raises (e.g. `RuntimeError` without
    `jax_enable_x64`, for a task not in the cache).
    """
    directory = _default_cache_dir() if cache_dir is None else pathlib.Path(cache_dir)
    x = np.asarray(x, dtype=np.float64)
    t = np.asarray(t, dtype=np.float64)
    leaves = jax.tree_util.tree_leaves(tasks)
    sizes = {np.shape(leaf)[0] if np.ndim(leaf) else None for leaf in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"tasks must be a batch with one leading axis; got sizes {sizes}")
    (size,) = cast(set[int], sizes)
    out = []
    for i in range(size):
        task = jax.tree_util.tree_map(lambda a, i=i: np.asarray(a, dtype=np.float64)[i], tasks)
        key = _task_key(pde, task, x, t)
        path = directory / f"{type(pde).__name__.lower()}-reference-{_hash(key)}.npz"
        u = _load(path, key, (t.shape[0], x.shape[0]))
        if u is None:
            task64 = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=jnp.float64), task)
            u = pde.reference_solution(task64, jnp.asarray(x), jnp.asarray(t))
            u = np.asarray(u, dtype=np.float64)
            _save(path, key, u)
        out.append(u)
    return np.stack(out) if out else np.zeros((0, t.shape[0], x.shape[0]))


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]
