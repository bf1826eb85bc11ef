"""Atomic files: checkpoints (one `.npz` each), JSON and text.

Every write goes to a temporary file in the destination folder, is flushed to disk,
and is then renamed over the destination with `os.replace`, which is atomic on POSIX
and Windows. A reader therefore sees either the old file or the new one, never half
of one, whatever moment the writer is killed at.
"""

import contextlib
import json
import os
import pathlib
import tempfile
from collections.abc import Callable, Iterator
from typing import IO, Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree


_META_KEY = "__meta__"


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike, mode: str) -> Iterator[IO[Any]]:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], None], binary=False):
    """Call `write(f)` on a temporary file, then rename it to `path` atomically."""
    with _atomic_open(path, "wb" if binary else "w") as f:
        write(f)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` atomically."""
    atomic_write(path, lambda f: f.write(text))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON to `path` atomically (no NaN/Infinity literals)."""
    text = json.dumps(obj, indent=2, allow_nan=False) + "\n"
    write_text(path, text)


def save_checkpoint(path: str | os.PathLike, tree: PyTree, meta: dict[str, Any]) -> None:
    """Save the array leaves of `tree` and a JSON-able `meta` dict to one `.npz` file.

    The file is written atomically, so an interrupted save leaves the previous
    checkpoint intact. Leaves are stored bit for bit (no dtype conversion); typed PRNG
    keys must be converted with `jax.random.key_data` first.

    **Arguments:**

    - `path`: destination, conventionally `checkpoint.npz`.
    - `tree`: a pytree of arrays (parameters, optimiser state, key data, ...).
    - `meta`: plain data (step, config, ...), stored as JSON.
    """
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays[_META_KEY] = np.asarray(json.dumps(meta, allow_nan=False))
    atomic_write(path, lambda f: np.savez(f, **arrays), binary=True)


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The `meta` dict of a checkpoint written by [`metapinn.save_checkpoint`][],
    without reading its arrays. **Raises:** `FileNotFoundError` if there is none."""
    with np.load(pathlib.Path(path), allow_pickle=False) as data:
        return json.loads(str(data[_META_KEY]))


def load_checkpoint(path: str | os.PathLike, like: PyTree) -> tuple[PyTree, dict[str, Any]]:
    """Load a checkpoint written by [`metapinn.save_checkpoint`][].

    **Arguments:**

    - `path`: the `.npz` file.
    - `like`: a pytree with the structure, shapes and dtypes of the saved one (e.g.
      freshly initialised parameters and optimiser state); its leaves are replaced.

    **Returns:** `(tree, meta)`.

    **Raises:** `FileNotFoundError` if there is no checkpoint; `ValueError` naming the
    first leaf whose count, shape or dtype differs from `like`.
    """
    path = pathlib.Path(path)
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data[_META_KEY]))
        names = sorted(k for k in data.files if k != _META_KEY)
        saved = [data[k] for k in names]
    template, treedef = jax.tree_util.tree_flatten(like)
    if len(saved) != len(template):
        raise ValueError(
            f"checkpoint {path} holds {len(saved)} arrays but the model and optimiser "
            f"state expect {len(template)}; was it written with a different configuration?"
        )
    for i, (new, old) in enumerate(zip(saved, template, strict=True)):
        old_shape, old_dtype = np.shape(old), np.asarray(old).dtype
        if new.shape != old_shape or new.dtype != old_dtype:
            raise ValueError(
                f"checkpoint {path}: array {i} has shape {new.shape} and dtype {new.dtype}, "
                f"expected {old_shape} and {old_dtype}"
            )
    leaves = [jnp.asarray(a) for a in saved]
    return jax.tree_util.tree_unflatten(treedef, leaves), meta
