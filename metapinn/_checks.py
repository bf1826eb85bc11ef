"""Task validation under JIT, and a way to hold it back where it would deadlock.

The PDE families validate their task parameters under JIT with `eqx.error_if`
(e.g. a Burgers viscosity must be finite and positive). Inside a meta-step they are
held back while the learner is traced and made once instead, on the step's gradient:
a check on a diagnostic the caller does not use is dropped by XLA, and inside
`jax.shard_map` a device whose share of the tasks is bad would raise on its own
while the others wait for it in the next collective, forever.
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
