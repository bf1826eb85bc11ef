"""Atomic files: checkpoints (one `.npz` each), JSON and text.

Every write goes to a temporary file in the destination folder, is flushed to disk,
and is then renamed over the destination with `os.replace`, which is atomic on POSIX
and Windows; the folder is then flushed too, so that the rename itself survives a
power loss. A reader therefore sees either the old file or the new one, never half of
one, whatever moment the writer is killed at. A file gets the mode a plain `open`
would give it (0o666 less the umask). A write that fails (a full disk, a read-only
folder) leaves the old file as it was, removes its temporary file, and raises
[`metapinn.RunFolderError`][] naming the file.

A checkpoint keeps its predecessor beside it (`checkpoint.prev.npz` for
`checkpoint.npz`), so a checkpoint damaged after it was written (a truncated copy, a
failing disk) costs at most the steps since the one before; it is read only when
asked for (see [`metapinn.load_checkpoint`][]).
"""

import contextlib
import errno
import json
import os
import pathlib
import secrets
import shutil
import zipfile
from collections.abc import Callable, Iterator
from typing import IO, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree


class RunFolderError(OSError):
    """A file of a run could not be written (the disk is full, the folder read-only,
    ...); the message names the file and the cause. The previous version of the file,
    if any, is intact."""


class CorruptCheckpointError(ValueError):
    """A checkpoint file cannot be read (truncated, damaged, not a checkpoint); the
    message names it, and the previous checkpoint if there is one."""


class CheckpointMismatchError(ValueError):
    """A checkpoint's arrays are not those it is read into (their number, a shape or a
    dtype): it was written for another network or configuration, or its headers are
    damaged. The message names the file and the first array that differs."""


def previous_checkpoint_path(path: str | os.PathLike) -> pathlib.Path:
    """Where the checkpoint before `path` is kept: `checkpoint.prev.npz` beside
    `checkpoint.npz`.

    **Arguments:** `path`, a checkpoint's path (it need not exist).

    **Returns:** a `pathlib.Path` in the same folder, `.prev` inserted before the
    suffix.
    """
    path = pathlib.Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def _fsync_folder(folder: pathlib.Path) -> None:
    """Flush a folder's entries (a rename) to disk, where the platform allows it."""
    if os.name != "posix":  # pragma: no cover - Windows has no folder fsync
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_error(path: pathlib.Path, error: OSError) -> RunFolderError:
    why = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is exhausted",
        errno.EROFS: "the folder is on a read-only file system",
        errno.EACCES: "no permission to write there",
        errno.EPERM: "no permission to write there",
    }.get(error.errno or 0, error.strerror or type(error).__name__)
    return RunFolderError(
        error.errno, f"cannot write {path}: {why} ({error}); nothing was half-written, and "
        "the previous version of the file, if any, is intact",
    )  # fmt: skip


_META_KEY = "__meta__"


_TEMPORARY_FLAGS = (
    os.O_RDWR
    | os.O_CREAT
    | os.O_EXCL
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_BINARY", 0)  # Windows: no newline translation
)


def is_temporary(path: str | os.PathLike) -> bool:
    """Whether `path` is named as the temporary file of an atomic write (one that a
    writer killed before its rename leaves behind)."""
    name = pathlib.Path(path).name
    return name.startswith(".") and name.endswith(".tmp")


def _temporary_beside(path: pathlib.Path) -> tuple[int, str]:
    """Create a new temporary file in `path`'s folder, as `tempfile.mkstemp` does but
    with the mode a plain `open` gives, 0o666 less the process's umask (`mkstemp`
    gives 0o600 whatever the umask: on a shared file system no one else could read a
    run's results). The kernel applies the umask, so it is never read or changed.

    **Returns:** the open file descriptor and the file's path."""
    for _ in range(100):
        name = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(name, _TEMPORARY_FLAGS, 0o666), str(name)
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, f"no free temporary file name beside {path}")


@contextlib.contextmanager
def _atomic_open(path: str | os.PathLike, mode: str) -> Iterator[IO[Any]]:
    path = pathlib.Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _temporary_beside(path)
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_folder(path.parent)
    except OSError as e:
        raise _write_error(path, e) from e
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], binary=False):
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


def save_checkpoint(
    path: str | os.PathLike, tree: PyTree, meta: dict[str, Any], *, keep_previous: bool = True
) -> None:
    """Save the array leaves of `tree` and a JSON-able `meta` dict to one `.npz` file.

    The file is written atomically, so an interrupted save leaves the previous
    checkpoint intact. Leaves are stored bit for bit (no dtype conversion); typed PRNG
    keys must be converted with `jax.random.key_data` first.

    **Arguments:**

    - `path`: destination, conventionally `checkpoint.npz`.
    - `tree`: a pytree of arrays (parameters, optimiser state, key data, ...).
    - `meta`: plain data (step, config, ...), stored as JSON.
    - `keep_previous`: keep the checkpoint `path` held before as
      [`metapinn.previous_checkpoint_path`][]`(path)` (a hard link where the file system has
      them, so `path` exists at every moment); keyword only, default `True`.

    **Returns:** `None`.

    **Raises:** [`metapinn.RunFolderError`][] if it (or the previous checkpoint)
    cannot be written; `ValueError` for a `meta` holding NaN or infinity, and
    `TypeError` for one that is not JSON-able (before anything is written).
    """
    path = pathlib.Path(path)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}
    arrays[_META_KEY] = np.asarray(json.dumps(meta, allow_nan=False))
    if keep_previous and path.exists():
        previous = previous_checkpoint_path(path)
        # A name of this writer's own (a temporary's, so a kill's leftover is known).
        link = previous.with_name(f".{previous.name}.{secrets.token_hex(6)}.tmp")
        try:
            try:
                os.link(path, link)
            except OSError:  # no hard links here: a copy
                shutil.copyfile(path, link)
            os.replace(link, previous)
        except OSError as e:
            with contextlib.suppress(OSError):
                os.unlink(link)
            raise _write_error(previous, e) from e
    atomic_write(path, lambda f: np.savez(f, **cast(dict[str, Any], arrays)), binary=True)


@contextlib.contextmanager
def _open_checkpoint(path: pathlib.Path) -> Iterator[Any]:
    """`np.load` of a checkpoint (the file closed afterwards, even when it is not a
    readable `.npz`), its damage turned into a clear error."""
    with open(path, "rb") as f:  # FileNotFoundError: no checkpoint
        try:
            data = np.load(f, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise _corrupt(path, e) from None
        with data:
            yield data


def _corrupt(path: pathlib.Path, error: BaseException) -> CorruptCheckpointError:
    previous = previous_checkpoint_path(path)
    hint = (
        f"; the checkpoint before it, {previous}, can be used instead: resume with "
        "previous=True (--previous-checkpoint), which costs the steps since that one"
        if previous.exists()
        else "; there is no earlier checkpoint: start the run again"
    )
    return CorruptCheckpointError(
        f"checkpoint {path} cannot be read, it is truncated or damaged "
        f"({type(error).__name__}: {error}){hint}"
    )


def read_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The `meta` dict of a checkpoint written by [`metapinn.save_checkpoint`][],
    without reading its arrays.

    **Raises:** `FileNotFoundError` if there is none; [`metapinn.CorruptCheckpointError`][]
    if it cannot be read."""
    path = pathlib.Path(path)
    with _open_checkpoint(path) as data:
        try:
            meta = json.loads(str(data[_META_KEY]))
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise _corrupt(path, e) from None
    return _checked_meta(path, meta)


def _checked_meta(path: pathlib.Path, meta: Any) -> dict[str, Any]:
    """A checkpoint's metadata: a JSON object whose `step`, where there is one, is an
    integer >= 0. **Raises:** [`metapinn.CorruptCheckpointError`][] otherwise."""
    step = meta.get("step", 0) if isinstance(meta, dict) else None
    if type(step) is not int or step < 0:
        raise _corrupt(path, ValueError(f"its metadata is not a checkpoint's: {meta!r:.80}"))
    return meta


def checkpoint_step(path: str | os.PathLike, meta: dict[str, Any]) -> int:
    """The meta-step a run's checkpoint was written at.

    **Raises:** [`metapinn.CorruptCheckpointError`][] if its metadata has none."""
    if type(meta.get("step")) is not int:
        raise _corrupt(pathlib.Path(path), ValueError("its metadata names no meta-step"))
    return meta["step"]


def _array_headers(data: Any, names: list[str]) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The shape and dtype of each array of an open `.npz`, from its `.npy` header
    alone: nothing is allocated for an array before its header is checked."""
    headers = []
    for name in names:
        with data.zip.open(name + ".npy") as member:
            version = np.lib.format.read_magic(member)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(member)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(member)
        headers.append((tuple(shape), np.dtype(dtype)))
    return headers


def load_checkpoint(
    path: str | os.PathLike, like: PyTree, *, previous: bool = False
) -> tuple[PyTree, dict[str, Any]]:
    """Load a checkpoint written by [`metapinn.save_checkpoint`][].

    **Arguments:**

    - `path`: the `.npz` file.
    - `like`: a pytree with the structure, shapes and dtypes of the saved one (e.g.
      freshly initialised parameters and optimiser state); its leaves are replaced.
    - `previous`: read the checkpoint kept before it instead
      ([`metapinn.previous_checkpoint_path`][]), e.g. when `path` is damaged.

    **Returns:** `(tree, meta)`.

    **Raises:** `FileNotFoundError` if there is no checkpoint;
    [`metapinn.CorruptCheckpointError`][] naming a file that cannot be read;
    `ValueError` (a `CheckpointMismatchError`) naming the first leaf whose count,
    shape or dtype differs from `like`, before any array is read.
    """
    path = pathlib.Path(path)
    if previous:
        path = previous_checkpoint_path(path)
        if not path.exists():
            raise FileNotFoundError(f"no previous checkpoint {path} to resume from")
    template, treedef = jax.tree_util.tree_flatten(like)
    with _open_checkpoint(path) as data:
        try:
            meta = _checked_meta(path, json.loads(str(data[_META_KEY])))
            names = sorted(k for k in data.files if k != _META_KEY)
            headers = _array_headers(data, names)
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise _corrupt(path, e) from None
        if len(headers) != len(template):
            raise CheckpointMismatchError(
                f"checkpoint {path} holds {len(headers)} arrays but the model and optimiser "
                f"state expect {len(template)}; was it written with a different configuration?"
            )
        _check_leaves(path, headers, template)  # before any array is read
        try:
            saved = [data[k] for k in names]
        except (KeyError, ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise _corrupt(path, e) from None
    _check_leaves(path, [(a.shape, a.dtype) for a in saved], template)
    leaves = [jnp.asarray(a) for a in saved]
    return jax.tree_util.tree_unflatten(treedef, leaves), meta


def _check_leaves(path: pathlib.Path, found: list[tuple[Any, Any]], template: list) -> None:
    """**Raises:** `CheckpointMismatchError` naming the first array whose shape or
    dtype is not its template leaf's."""
    for i, ((shape, dtype), old) in enumerate(zip(found, template, strict=True)):
        old_shape, old_dtype = np.shape(old), np.asarray(old).dtype
        if tuple(shape) != old_shape or dtype != old_dtype:
            raise CheckpointMismatchError(
                f"checkpoint {path}: array {i} has shape {tuple(shape)} and dtype {dtype}, "
                f"expected {old_shape} and {old_dtype}: it was written for another network "
                "or configuration, or is damaged"
            )
