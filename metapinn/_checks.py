"""Task validation under JIT, and a way to hold it back where it would deadlock.

The PDE families validate their task parameters under JIT with `eqx.error_if`
(e.g. a Burgers viscosity must be finite and positive). Inside `jax.shard_map`, a
device whose share of the tasks is bad would raise on its own while the others wait
in the next collective for it, forever; there the checks are held back while the
per-device program is traced, and the caller checks the whole batch outside.
"""

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

from jaxtyping import PyTree


_SUSPENDED = contextvars.ContextVar("metapinn_task_checks_suspended", default=False)


@contextlib.contextmanager
def task_checks_suspended() -> Iterator[None]:
    """While tracing inside this block, `checked` returns its value unchecked."""
    token = _SUSPENDED.set(True)
    try:
        yield
    finally:
        _SUSPENDED.reset(token)


def checked(checker: Any, task: PyTree, out: PyTree) -> PyTree:
    """`checker.check_task(task, out)` (a PDE family or a loss), unless suspended."""
    return out if _SUSPENDED.get() else checker.check_task(task, out)
